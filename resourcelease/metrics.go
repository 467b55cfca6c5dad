package resourcelease

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names exported by a Dispatcher given a Registerer (the README lists them). The
// gauges are the queue's counts after its latest change; the counters count
// changes since the Dispatcher was created (a restart starts them at zero, as
// Prometheus counters expect).
const (
	// MetricPendingItems is a gauge: items waiting to be leased, ready or
	// delayed.
	MetricPendingItems = "resourcelease_pending_items"
	// MetricDelayedItems is a gauge: pending items not leasable before a
	// later time (a NotBefore, a requeue delay, a delayed release).
	MetricDelayedItems = "resourcelease_delayed_items"
	// MetricActiveLeases is a gauge: live leases.
	MetricActiveLeases = "resourcelease_active_leases"
	// MetricDeadLetters is a gauge: dead-lettered items kept for inspection.
	MetricDeadLetters = "resourcelease_dead_letters"
	// MetricEnqueued counts items enqueued (not duplicates, not restores).
	MetricEnqueued = "resourcelease_enqueued_total"
	// MetricLeased counts leases granted.
	MetricLeased = "resourcelease_leased_total"
	// MetricCompleted counts leases completed.
	MetricCompleted = "resourcelease_completed_total"
	// MetricFailed counts leases ended by a worker's fail call, whether the
	// item was requeued or dead-lettered.
	MetricFailed = "resourcelease_failed_total"
	// MetricRequeued counts leases a worker failed with requeue whose item went
	// back to pending for another attempt.
	MetricRequeued = "resourcelease_requeued_total"
	// MetricExpired counts leases that expired without a heartbeat, whether the
	// item was requeued or, out of attempts, dead-lettered.
	MetricExpired = "resourcelease_expired_total"
	// MetricDeadLettered counts items dead-lettered.
	MetricDeadLettered = "resourcelease_dead_lettered_total"
	// MetricReleased counts leases given back without counting their attempt
	// (release, and leases whose caller was gone before it got them).
	MetricReleased = "resourcelease_released_total"
	// MetricHeartbeats counts heartbeats that extended a live lease.
	MetricHeartbeats = "resourcelease_heartbeats_total"
	// MetricLeaseHold is a histogram of how long leases were held, from the
	// grant to the completion, failure or expiry that ended them.
	MetricLeaseHold = "resourcelease_lease_hold_seconds"
	// MetricLeaseWaiters is a gauge: lease calls with a wait (long-polls)
	// this dispatcher is serving now, parked until an item is ready or the
	// wait ends.
	MetricLeaseWaiters = "resourcelease_lease_waiters"
	// MetricDeadLettersPurged counts dead letters the queue purged by
	// itself, by reason: retention (older than DeadLetterRetention) or
	// max_dead_letters (the oldest beyond MaxDeadLetters).
	MetricDeadLettersPurged = "resourcelease_dead_letters_purged_total"
	// MetricPartitionReadyItems is a gauge of the ready items of the
	// partitions with the most of them (label partition; the top
	// BacklogMetricPartitions only, so the label's cardinality stays
	// bounded), read from the queue at each scrape.
	MetricPartitionReadyItems = "resourcelease_partition_ready_items"
	// MetricReadyPartitions is a gauge: partitions with a ready item, read
	// at each scrape.
	MetricReadyPartitions = "resourcelease_ready_partitions"
	// MetricOldestReadyAge is a gauge: seconds since the oldest ready item
	// (the lowest sequence id) became ready, 0 when none is; read at each
	// scrape. The one to alarm on when work piles up.
	MetricOldestReadyAge = "resourcelease_oldest_ready_item_age_seconds"

	// The gauges of a Dispatcher serving a DispatcherConfig.Store that is
	// an EventLog (several dispatchers on one database): the counts of the
	// whole mesh's queue, the same on every dispatcher, so a dashboard
	// takes their max rather than their sum. They replace MetricPendingItems,
	// MetricDelayedItems, MetricActiveLeases and MetricDeadLetters there;
	// the counters keep their names and count this dispatcher's own calls.
	MetricMeshPendingItems = "resourcelease_mesh_pending_items"
	MetricMeshDelayedItems = "resourcelease_mesh_delayed_items"
	MetricMeshActiveLeases = "resourcelease_mesh_active_leases"
	MetricMeshDeadLetters  = "resourcelease_mesh_dead_letters"
	// MetricMeshEvents counts the events of the mesh's log by type (label
	// type: Enqueue, LeaseGranted, Completed, ...), whichever dispatcher
	// made them, since this dispatcher started: B's count of Completed
	// includes A's completions.
	MetricMeshEvents = "resourcelease_mesh_events_total"
	// MetricMeshLogGaps counts the times a log reader of this dispatcher
	// (the tail behind peer health and the mesh metrics, or a LogSinks
	// feeder, label reader: tail or sink) found events missing: retention
	// trimmed them before it read them, so what they changed was never
	// seen. Raise the log's retention if it moves.
	MetricMeshLogGaps = "resourcelease_mesh_log_gaps_total"
)

// BacklogMetricPartitions is how many partitions MetricPartitionReadyItems
// reports: those with the most ready items.
const BacklogMetricPartitions = 10

// leaseHoldBuckets span a quick in-process job (5 ms) to a lease heartbeated
// for ten minutes.
var leaseHoldBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// queueMetrics are the Dispatcher's own metric families. Every method is
// called from the journal with the queue's lock held: each is a handful of
// atomic operations.
type queueMetrics struct {
	pending, delayed, active, dead prometheus.Gauge
	purged                         *prometheus.CounterVec

	enqueued, leased, completed, failed, requeued prometheus.Counter
	expired, deadLettered, heartbeats, released   prometheus.Counter

	hold    prometheus.Histogram
	waiters prometheus.Gauge
}

// newQueueMetrics returns the families; with mesh, the gauges have the
// MetricMesh* names.
func newQueueMetrics(mesh bool) *queueMetrics {
	gauge := func(name, help string) prometheus.Gauge {
		if mesh {
			name = strings.Replace(name, "resourcelease_", "resourcelease_mesh_", 1)
			help = "Mesh-wide: " + help
		}
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	return &queueMetrics{
		pending: gauge(MetricPendingItems, "Items waiting to be leased, ready or delayed."),
		delayed: gauge(MetricDelayedItems, "Pending items not leasable before a later time."),
		purged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDeadLettersPurged,
			Help: "Dead letters the queue purged by itself, by reason (retention, max_dead_letters).",
		}, []string{"reason"}),
		active:       gauge(MetricActiveLeases, "Live leases."),
		dead:         gauge(MetricDeadLetters, "Dead-lettered items kept for inspection."),
		enqueued:     counter(MetricEnqueued, "Items enqueued."),
		leased:       counter(MetricLeased, "Leases granted."),
		completed:    counter(MetricCompleted, "Leases completed."),
		failed:       counter(MetricFailed, "Leases ended by a worker's fail call (requeued or dead-lettered)."),
		requeued:     counter(MetricRequeued, "Leases failed with requeue whose item went back to pending."),
		expired:      counter(MetricExpired, "Leases that expired without a heartbeat (requeued or dead-lettered)."),
		released:     counter(MetricReleased, "Leases given back without counting their attempt."),
		deadLettered: counter(MetricDeadLettered, "Items dead-lettered."),
		heartbeats:   counter(MetricHeartbeats, "Heartbeats that extended a live lease."),
		waiters:      prometheus.NewGauge(prometheus.GaugeOpts{Name: MetricLeaseWaiters, Help: "Lease calls with a wait this dispatcher is serving now."}),
		hold: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    MetricLeaseHold,
			Help:    "Seconds from a lease's grant to the completion, failure or expiry that ended it.",
			Buckets: leaseHoldBuckets,
		}),
	}
}

// collectors returns every family, for registration.
func (m *queueMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		m.pending, m.delayed, m.active, m.dead, m.purged,
		m.enqueued, m.leased, m.completed, m.failed, m.requeued,
		m.expired, m.deadLettered, m.heartbeats, m.released, m.hold, m.waiters,
	}
}

// setCounts sets the gauges.
func (m *queueMetrics) setCounts(pending, delayed, active, dead int) {
	m.pending.Set(float64(pending))
	m.delayed.Set(float64(delayed))
	m.active.Set(float64(active))
	m.dead.Set(float64(dead))
}

// observe accounts for one change. leaseEnd says how a dead-lettered lease
// ended (the journal works it out); it is ignored for other kinds.
func (m *queueMetrics) observe(c *Change, leaseEnd leaseEnding) {
	m.setCounts(c.Pending, c.Delayed, c.Active, c.DeadLettered)
	m.count(c, leaseEnd)
}

// count is observe without the gauges.
func (m *queueMetrics) count(c *Change, leaseEnd leaseEnding) {
	switch c.Kind {
	case ChangeEnqueued:
		m.enqueued.Inc()
	case ChangeLeased:
		m.leased.Inc()
	case ChangeHeartbeat:
		m.heartbeats.Inc()
	case ChangeCompleted:
		m.completed.Inc()
		m.observeHold(c)
	case ChangeRequeued:
		m.failed.Inc()
		m.requeued.Inc()
		m.observeHold(c)
	case ChangeExpired:
		m.expired.Inc()
		m.observeHold(c)
	case ChangeReleased:
		m.released.Inc()
		m.observeHold(c)
	case ChangeDeadLetterPurged:
		m.purged.WithLabelValues(c.Metadata[MetaPurgeReason]).Inc()
	case ChangeDeadLettered:
		m.deadLettered.Inc()
		switch leaseEnd {
		case endedByFail:
			m.failed.Inc()
			m.observeHold(c)
		case endedByExpiry:
			m.expired.Inc()
			m.observeHold(c)
		}
	}
}

// backlogCollector reads the queue's backlog at each scrape: the ready
// items of the top partitions, how many partitions have ready items, and
// the age of the oldest ready item.
type backlogCollector struct {
	d                        *LocalDispatcher
	partition, parts, oldest *prometheus.Desc
}

func newBacklogCollector(d *LocalDispatcher) *backlogCollector {
	return &backlogCollector{
		d: d,
		partition: prometheus.NewDesc(MetricPartitionReadyItems,
			"Ready items of the partitions with the most of them (the top ten).", []string{"partition"}, nil),
		parts:  prometheus.NewDesc(MetricReadyPartitions, "Partitions with a ready item.", nil, nil),
		oldest: prometheus.NewDesc(MetricOldestReadyAge, "Seconds since the oldest ready item became ready (0: none is).", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (b *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- b.partition
	ch <- b.parts
	ch <- b.oldest
}

// Collect implements prometheus.Collector.
func (b *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var bl Backlog
	var err error
	switch q := b.d.q.(type) {
	case backlogReader:
		bl, err = q.Backlog(ctx, BacklogMetricPartitions)
	case OldestReadyReporter:
		bl.OldestReadySince, err = q.OldestReady(ctx)
	default:
		return
	}
	if err != nil {
		return
	}
	for _, p := range bl.Partitions {
		ch <- prometheus.MustNewConstMetric(b.partition, prometheus.GaugeValue, float64(p.Ready), p.PartitionKey)
	}
	ch <- prometheus.MustNewConstMetric(b.parts, prometheus.GaugeValue, float64(bl.PartitionCount))
	age := 0.0
	if !bl.OldestReadySince.IsZero() {
		age = max(b.d.clock.Now().Sub(bl.OldestReadySince).Seconds(), 0)
	}
	ch <- prometheus.MustNewConstMetric(b.oldest, prometheus.GaugeValue, age)
}

func (m *queueMetrics) observeHold(c *Change) {
	if c.LeasedAt.IsZero() {
		return
	}
	if d := c.At.Sub(c.LeasedAt); d >= 0 {
		m.hold.Observe(d.Seconds())
	}
}

// registration registers collectors with a Registerer and remembers which it
// registered, so that a failed constructor or Close can take them back.
type registration struct {
	reg  prometheus.Registerer
	done []prometheus.Collector
}

// register registers c. If c itself is already registered (a caller that
// registered its own tracker, say), that is fine and c is left for its owner
// to unregister. With shared set, so is an equal collector registered by
// someone else: a part whose Collector method builds a new collector per
// call (the caller registered one, the Dispatcher asks for another) is still
// the same part. Any other failure, such as a second Dispatcher's metrics on
// the same registry, is an error.
func (r *registration) register(what string, c prometheus.Collector, shared bool) error {
	err := r.reg.Register(c)
	if err == nil {
		r.done = append(r.done, c)
		return nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) && (shared || sameCollector(are.ExistingCollector, c)) {
		return nil
	}
	return fmt.Errorf("resourcelease: register %s metrics: %w", what, err)
}

// sameCollector reports whether a and b are the same collector. Comparing
// interfaces whose dynamic type is not comparable would panic, so such
// collectors are never the same.
func sameCollector(a, b prometheus.Collector) bool {
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	return ta == tb && ta != nil && ta.Comparable() && a == b
}

// unregisterAll unregisters, newest first, every collector register added.
func (r *registration) unregisterAll() {
	for i := len(r.done) - 1; i >= 0; i-- {
		r.reg.Unregister(r.done[i])
	}
	r.done = nil
}

// meshEventCounter counts the events of a Store's log by type
// (MetricMeshEvents). Event types are few and fixed, so the label's
// cardinality is bounded.
type meshEventCounter struct {
	vec *prometheus.CounterVec
	mu  sync.Mutex
	by  map[EventType]prometheus.Counter
}

func newMeshEventCounter() *meshEventCounter {
	return &meshEventCounter{
		vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricMeshEvents,
			Help: "Events of the mesh's log by type, whichever dispatcher made them, since this dispatcher started.",
		}, []string{"type"}),
		by: make(map[EventType]prometheus.Counter),
	}
}

func (m *meshEventCounter) inc(t EventType) {
	m.mu.Lock()
	c, ok := m.by[t]
	if !ok {
		c = m.vec.WithLabelValues(string(t))
		m.by[t] = c
	}
	m.mu.Unlock()
	c.Inc()
}

// Describe implements prometheus.Collector.
func (m *meshEventCounter) Describe(ch chan<- *prometheus.Desc) { m.vec.Describe(ch) }

// Collect implements prometheus.Collector.
func (m *meshEventCounter) Collect(ch chan<- prometheus.Metric) { m.vec.Collect(ch) }
