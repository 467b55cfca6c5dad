package deterministic

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/resourcelease"
)

var _ resourcelease.EventSink = (*Coordinator)(nil)

// DefaultChangeID is the change id a Coordinator uses when Config.ChangeID is
// empty.
const DefaultChangeID = "resourcelease"

// Stage is the stage name a Coordinator's errors carry, as the replicator's
// errors name the sink that failed.
const Stage = "deterministic"

// Config configures [NewCoordinator].
type Config struct {
	// Store keeps one record per replication event. Required.
	Store resourcelease.StateStore
	// ChangeID namespaces the keys: event n is recorded under
	// <ChangeID>/seq/<n>. Coordinators of different queues sharing one store
	// need different ChangeIDs. It must not be blank or contain spaces
	// around it. Defaults to DefaultChangeID ("resourcelease").
	ChangeID string
}

// Coordinator is the [resourcelease.EventSink] that captures each
// replication event's effect exactly once: ApplyEvent records the event with
// TryAdd under <changeId>/seq/<sequenceNumber>, so replaying events that were
// already applied (after a redelivery, a failover or a restart with a durable
// store) records nothing new.
//
// Each record has Kind = the event type, Version = the sequence number,
// Payload = the event's JSON encoding and RecordedAt = the event's timestamp.
// The first delivery of a sequence number is the one kept; a later event with
// the same number is counted as a replay and not compared.
//
// Recorded and Replayed count what this Coordinator did since it was created;
// Collector exports the same counts to Prometheus. A Coordinator is safe for
// concurrent use, although a replicator delivers to a sink in order.
type Coordinator struct {
	store    resourcelease.StateStore
	changeID string
	recorded atomic.Int64
	replayed atomic.Int64
}

// NewCoordinator returns a Coordinator over cfg.Store. A nil Store or a
// ChangeID that is blank or has leading or trailing space is an
// invalid-argument error.
func NewCoordinator(cfg Config) (*Coordinator, error) {
	if cfg.Store == nil {
		return nil, invalidArgument("coordinator needs a Store")
	}
	if cfg.ChangeID == "" {
		cfg.ChangeID = DefaultChangeID
	}
	if strings.TrimSpace(cfg.ChangeID) != cfg.ChangeID || cfg.ChangeID == "" {
		return nil, invalidArgument("coordinator change id %q is blank or has surrounding space", cfg.ChangeID)
	}
	return &Coordinator{store: cfg.Store, changeID: cfg.ChangeID}, nil
}

// ChangeID returns the change id that prefixes the Coordinator's keys.
func (c *Coordinator) ChangeID() string { return c.changeID }

// Key returns the store key of the event with sequence number seq:
// <changeId>/seq/<seq>.
func (c *Coordinator) Key(seq int64) string {
	return c.changeID + "/seq/" + strconv.FormatInt(seq, 10)
}

// ApplyEvent records e under Key(e.SequenceNumber) unless a record is there
// already, and counts it as recorded or replayed.
//
// An event whose SequenceNumber is not positive, or that cannot be encoded
// as JSON, is an invalid-argument error. A store failure is an
// *resourcelease.Error with status unavailable and code
// error.resourcelease.deterministic_failed whose message and metadata
// ("stage", "sequenceNumber") name the stage and the sequence number, and
// which wraps the store's error; nothing is counted, and the replicator
// redelivers the event.
func (c *Coordinator) ApplyEvent(ctx context.Context, e resourcelease.Event) error {
	seq := e.SequenceNumber
	if seq <= 0 {
		return invalidArgument("event sequence number must be positive, got %d", seq)
	}
	payload, err := json.Marshal(e)
	if err != nil {
		return invalidArgument("event %d cannot be encoded: %v", seq, err)
	}
	rec := resourcelease.Record{
		Kind:       string(e.EventType),
		Version:    seq,
		Payload:    payload,
		RecordedAt: e.Timestamp,
	}
	added, err := c.store.TryAdd(ctx, c.Key(seq), rec)
	if err != nil {
		return &resourcelease.Error{
			Status:  resourcelease.StatusUnavailable,
			Code:    resourcelease.CodeDeterministicFailed,
			Message: fmt.Sprintf("deterministic: stage %s failed at sequence %d: %v", Stage, seq, err),
			Metadata: map[string]string{
				"stage":          Stage,
				"sequenceNumber": strconv.FormatInt(seq, 10),
			},
			Err: err,
		}
	}
	if added {
		c.recorded.Add(1)
	} else {
		c.replayed.Add(1)
	}
	return nil
}

// Effect returns the record of the event with sequence number seq and
// whether there is one.
func (c *Coordinator) Effect(ctx context.Context, seq int64) (resourcelease.Record, bool, error) {
	rec, ok, err := c.store.Get(ctx, c.Key(seq))
	if err != nil {
		return resourcelease.Record{}, false, storageError(ctx, fmt.Sprintf("coordinator: get sequence %d", seq), err)
	}
	return rec, ok, nil
}

// Recorded returns how many events ApplyEvent recorded (first deliveries).
func (c *Coordinator) Recorded() int64 { return c.recorded.Load() }

// Replayed returns how many events ApplyEvent found already recorded and
// skipped.
func (c *Coordinator) Replayed() int64 { return c.replayed.Load() }

// Collector returns a Prometheus collector of the Coordinator's counts:
// deterministic_effects_recorded_total and
// deterministic_effects_replayed_total, each with a constant label
// change_id, read at scrape time. Registering it is left to the caller; two
// Coordinators with different change ids can share a registry.
func (c *Coordinator) Collector() prometheus.Collector {
	labels := prometheus.Labels{"change_id": c.changeID}
	return &coordinatorCollector{
		c: c,
		recorded: prometheus.NewDesc("deterministic_effects_recorded_total",
			"Replication events whose effect the deterministic coordinator recorded.", nil, labels),
		replayed: prometheus.NewDesc("deterministic_effects_replayed_total",
			"Replication events the deterministic coordinator skipped because their effect was already recorded.", nil, labels),
	}
}

// coordinatorCollector reads the Coordinator's counters at scrape time; its
// descriptors are built once, in Collector.
type coordinatorCollector struct {
	c                  *Coordinator
	recorded, replayed *prometheus.Desc
}

func (cc *coordinatorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.recorded
	ch <- cc.replayed
}

func (cc *coordinatorCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(cc.recorded, prometheus.CounterValue, float64(cc.c.Recorded()))
	ch <- prometheus.MustNewConstMetric(cc.replayed, prometheus.CounterValue, float64(cc.c.Replayed()))
}
