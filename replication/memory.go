package replication

import (
	"context"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/prometheus/client_golang/prometheus"
)

// MemoryReplicator is the in-memory Replicator: the queue's Journal for a
// process that needs the ordered event stream and its sinks but no
// durability. Its log is a bounded run of the newest events (Retention) that
// ReadEvents serves and lagging sinks read from.
//
// Without synchronous sinks, Record commits inline (appending to the log is
// all there is to do) and returns an Ack that is already done, so the queue
// pays no hand-off. With synchronous sinks, a writer goroutine delivers each
// batch to them before completing its Acks.
//
// Create it with NewMemoryReplicator; it is safe for concurrent use. It is
// also a prometheus.Collector.
type MemoryReplicator struct {
	c *core
}

var (
	_ resourcelease.Replicator = (*MemoryReplicator)(nil)
	_ prometheus.Collector     = (*MemoryReplicator)(nil)
)

// NewMemoryReplicator returns a MemoryReplicator whose sequence starts at 1.
func NewMemoryReplicator(opts MemoryConfig) (*MemoryReplicator, error) {
	if opts.Retention < 0 {
		return nil, invalidArg("Retention must not be negative, got %d", opts.Retention)
	}
	c, err := newCommon(opts.MaxBatch, opts.SinkRetryMin, opts.SinkRetryMax, opts.Clock, opts.Logger, opts.MetricLabels)
	if err != nil {
		return nil, err
	}
	keep := opts.Retention
	if keep == 0 {
		keep = DefaultMemoryRetention
	}
	return &MemoryReplicator{c: newCore(c, nil, newEventLog(keep, 1), true, 0)}, nil
}

// Record implements resourcelease.Journal: it assigns the change's event the
// next sequence number. It never blocks.
func (m *MemoryReplicator) Record(c *resourcelease.Change) resourcelease.Ack { return m.c.Record(c) }

// RecordAll implements resourcelease.BatchJournal: the changes get
// consecutive sequence numbers and reach the synchronous sinks as one batch.
func (m *MemoryReplicator) RecordAll(cs []*resourcelease.Change) resourcelease.Ack {
	return m.c.RecordAll(cs)
}

// ReadEvents implements resourcelease.Replicator. Events older than the
// retention are gone: the result then starts at the oldest retained event.
// limit <= 0 means DefaultReadLimit; it is capped at MaxReadLimit.
func (m *MemoryReplicator) ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	return m.c.ReadEvents(ctx, after, limit)
}

// LastSequence implements resourcelease.Replicator.
func (m *MemoryReplicator) LastSequence() int64 { return m.c.lastSeq.Load() }

// AddSink implements resourcelease.Replicator. Names must be unique and
// non-empty.
func (m *MemoryReplicator) AddSink(name string, sink resourcelease.EventSink, opts resourcelease.SinkOptions) error {
	return m.c.AddSink(name, sink, opts)
}

// SinkStatus returns the delivery status of the sink registered under name.
func (m *MemoryReplicator) SinkStatus(name string) (SinkStatus, bool) { return m.c.SinkStatus(name) }

// SinkStatuses returns the status of every sink, in registration order.
func (m *MemoryReplicator) SinkStatuses() []SinkStatus { return m.c.SinkStatuses() }

// Close implements resourcelease.Replicator: it delivers what was recorded to
// the synchronous sinks (completing every Ack), lets the asynchronous sinks
// catch up unless they fail, and stops. Later Records fail with ErrClosed.
// Safe to call twice.
func (m *MemoryReplicator) Close() error { return m.c.Close() }

// Describe implements prometheus.Collector.
func (m *MemoryReplicator) Describe(ch chan<- *prometheus.Desc) { m.c.m.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *MemoryReplicator) Collect(ch chan<- prometheus.Metric) { m.c.m.Collect(ch) }
