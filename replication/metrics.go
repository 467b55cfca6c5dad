package replication

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/leasemesh/leasemesh/internal/sqlitewal"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a replicator's Prometheus metrics. They are built once per
// replicator and never registered globally: the replicator is a
// prometheus.Collector and the caller registers it where it wants.
type metrics struct {
	events       *prometheus.CounterVec
	lastSeq      prometheus.GaugeFunc
	failing      prometheus.GaugeFunc
	lag          *prometheus.HistogramVec
	batchSize    prometheus.Histogram
	sinkFailures *prometheus.CounterVec

	mu     sync.RWMutex
	byType map[resourcelease.EventType]prometheus.Counter
}

var knownEventTypes = []resourcelease.EventType{
	resourcelease.EventEnqueue, resourcelease.EventLeaseGranted, resourcelease.EventHeartbeat,
	resourcelease.EventCompleted, resourcelease.EventFailed, resourcelease.EventLeaseExpired,
	resourcelease.EventDeadLettered, resourcelease.EventLeaseReleased, resourcelease.EventDrainSnapshot,
	resourcelease.EventRestoreSnapshot, resourcelease.EventRedriven, resourcelease.EventPurged,
	resourcelease.EventDeadLetterPurged, // codes are positions: only ever append
}

func newMetrics(labels prometheus.Labels, lastSeq *atomic.Int64, failing func() bool) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "replication_events_total",
			Help:        "Replication events committed, by event type.",
			ConstLabels: labels,
		}, []string{"event_type"}),
		lastSeq: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "replication_last_sequence",
			Help:        "Sequence number of the newest committed replication event.",
			ConstLabels: labels,
		}, func() float64 { return float64(lastSeq.Load()) }),
		failing: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "replication_storage_failing",
			Help:        "1 while writes to the storage fail (changes are answered unavailable; the writer retries, or has given up until a restart), else 0.",
			ConstLabels: labels,
		}, func() float64 {
			if failing() {
				return 1
			}
			return 0
		}),
		lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "replication_sink_lag_seconds",
			Help:        "Time from an event's timestamp to a sink having applied it.",
			ConstLabels: labels,
			Buckets:     []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"sink"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "replication_commit_batch_size",
			Help:        "Changes committed per transaction (group commit).",
			ConstLabels: labels,
			Buckets:     prometheus.ExponentialBuckets(1, 2, 11),
		}),
		sinkFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "replication_sink_failures_total",
			Help:        "Failed sink deliveries (each is retried), by sink.",
			ConstLabels: labels,
		}, []string{"sink"}),
		byType: make(map[resourcelease.EventType]prometheus.Counter, len(knownEventTypes)),
	}
	for _, t := range knownEventTypes {
		m.byType[t] = m.events.WithLabelValues(string(t))
	}
	return m
}

// countEvent counts one committed event.
func (m *metrics) countEvent(t resourcelease.EventType) {
	m.mu.RLock()
	c, ok := m.byType[t]
	m.mu.RUnlock()
	if !ok {
		c = m.events.WithLabelValues(string(t))
		m.mu.Lock()
		m.byType[t] = c
		m.mu.Unlock()
	}
	c.Inc()
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	m.events.Describe(ch)
	m.lastSeq.Describe(ch)
	m.failing.Describe(ch)
	m.lag.Describe(ch)
	m.batchSize.Describe(ch)
	m.sinkFailures.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	m.events.Collect(ch)
	m.lastSeq.Collect(ch)
	m.failing.Collect(ch)
	m.lag.Collect(ch)
	m.batchSize.Collect(ch)
	m.sinkFailures.Collect(ch)
}

// walMetrics are a SQLiteReplicator's checkpoint metrics.
type walMetrics struct {
	checkpoints *prometheus.CounterVec
	pages       prometheus.Gauge
}

func newWALMetrics(labels prometheus.Labels) *walMetrics {
	return &walMetrics{
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name:        "replication_wal_checkpoints_total",
			Help:        "SQLite WAL checkpoints run by the replicator's checkpointer, by mode (passive, restart, truncate) and result (done, busy, error).",
			ConstLabels: labels,
		}, []string{"mode", "result"}),
		pages: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "replication_wal_pages",
			Help:        "Pages in the SQLite write-ahead log at the last checkpoint (0 after a reset).",
			ConstLabels: labels,
		}),
	}
}

// observe counts one checkpoint.
func (m *walMetrics) observe(r sqlitewal.Result) {
	result := "done"
	switch {
	case r.Err != nil:
		result = "error"
	case r.Busy:
		result = "busy"
	}
	m.checkpoints.WithLabelValues(strings.ToLower(string(r.Mode)), result).Inc()
	switch {
	case r.Err != nil || r.Log < 0:
	case r.Mode == sqlitewal.Passive:
		m.pages.Set(float64(r.Log))
	case !r.Busy:
		m.pages.Set(0)
	}
}

// Describe implements prometheus.Collector.
func (m *walMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.checkpoints.Describe(ch)
	m.pages.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *walMetrics) Collect(ch chan<- prometheus.Metric) {
	m.checkpoints.Collect(ch)
	m.pages.Collect(ch)
}
