package resourcelease_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// sharedStore is a queue whose state several dispatchers share, the way a
// database is shared: an engine journaled to a memory replicator, whose log
// is the store's EventLog.
type sharedStore struct {
	*resourcelease.Engine
	repl   *replication.MemoryReplicator
	report atomic.Pointer[func([]*resourcelease.Change)]
}

// ReportCommits makes the store a CommitReporter. Every dispatcher on it
// asks; the last one to ask gets the changes, as if it made them all.
func (s *sharedStore) ReportCommits(f func([]*resourcelease.Change)) { s.report.Store(&f) }

// journal records to the replicator and reports the change.
func (s *sharedStore) journal() resourcelease.Journal {
	return resourcelease.JournalFunc(func(c *resourcelease.Change) resourcelease.Ack {
		ack := s.repl.Record(c)
		if f := s.report.Load(); f != nil {
			cc := *c
			(*f)([]*resourcelease.Change{&cc})
		}
		return ack
	})
}

func (s *sharedStore) ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	return s.repl.ReadEvents(ctx, after, limit)
}

func (s *sharedStore) LastSequence() int64 { return s.repl.LastSequence() }

func newSharedStore(t *testing.T) *sharedStore {
	t.Helper()
	repl, err := replication.NewMemoryReplicator(replication.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	s := &sharedStore{repl: repl}
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Journal: s.journal(), LeaseDuration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s.Engine = q
	t.Cleanup(func() {
		_ = q.Close()
		_ = repl.Close()
	})
	return s
}

// seqSink signals each event it is given, so a test waits for the tail to
// reach a sequence number without sleeping.
type seqSink struct {
	mu   sync.Mutex
	last int64
	ch   chan struct{}
}

func newSeqSink() *seqSink { return &seqSink{ch: make(chan struct{}, 1)} }

func (s *seqSink) ApplyEvent(_ context.Context, e resourcelease.Event) error {
	s.mu.Lock()
	s.last = e.SequenceNumber
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
	return nil
}

func (s *seqSink) waitFor(t *testing.T, seq int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		last := s.last
		s.mu.Unlock()
		if last >= seq {
			return
		}
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("the log tail reached %d, want %d", last, seq)
		}
	}
}

// meshNode is a dispatcher of the in-process mesh with its parts.
type meshNode struct {
	d       *resourcelease.LocalDispatcher
	tracker *peerhealth.Tracker
	reg     *prometheus.Registry
	sink    *seqSink
	bp      *recordingBackpressure
}

// recordingBackpressure is a BackpressureController that remembers the
// last count it observed.
type recordingBackpressure struct {
	mu      sync.Mutex
	pending int
}

func (b *recordingBackpressure) Observe(pending int, _ time.Time) {
	b.mu.Lock()
	b.pending = pending
	b.mu.Unlock()
}
func (b *recordingBackpressure) Admit(context.Context) error { return nil }
func (b *recordingBackpressure) Active() bool                { return false }
func (b *recordingBackpressure) last() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pending
}

func newMeshNode(t *testing.T, store resourcelease.Queue, clock ...resourcelease.Clock) *meshNode {
	t.Helper()
	var pc peerhealth.Config
	if len(clock) > 0 {
		pc.Clock = clock[0]
	}
	tr, err := peerhealth.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	n := &meshNode{tracker: tr, reg: prometheus.NewRegistry(), sink: newSeqSink(), bp: &recordingBackpressure{}}
	n.d, err = resourcelease.NewDispatcher(resourcelease.DispatcherConfig{
		Store: store, PeerHealth: tr, Backpressure: n.bp, Registerer: n.reg,
		LogSinks: []resourcelease.EventSink{n.sink}, LogPollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.d.Close() })
	return n
}

func TestStoreDispatcherConfig(t *testing.T) {
	store := newSharedStore(t)
	repl, _ := replication.NewMemoryReplicator(replication.MemoryConfig{})
	defer repl.Close()
	for _, tc := range []struct {
		name string
		cfg  resourcelease.DispatcherConfig
		want string
	}{
		{"queue settings with a store", resourcelease.DispatcherConfig{Store: store, Queue: resourcelease.QueueConfig{Capacity: 3}}, "Queue must be zero"},
		{"replicator with a store", resourcelease.DispatcherConfig{Store: store, Replicator: repl}, "Replicator and Deterministic"},
		{"negative poll", resourcelease.DispatcherConfig{Store: store, LogPollInterval: -time.Second}, "LogPollInterval"},
		{"sinks without a log", resourcelease.DispatcherConfig{Store: bareQueue{store}, LogSinks: []resourcelease.EventSink{newSeqSink()}}, "EventLog"},
		{"sinks without a store", resourcelease.DispatcherConfig{LogSinks: []resourcelease.EventSink{newSeqSink()}}, "only with Store"},
		{"breaker without health", resourcelease.DispatcherConfig{Store: store, RefuseUnhealthyPeers: true}, "PeerHealth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := resourcelease.NewDispatcher(tc.cfg)
			if err == nil {
				d.Close()
				t.Fatal("NewDispatcher accepted it")
			}
			if !errors.Is(err, resourcelease.ErrInvalidArgument) && resourcelease.AsError(err).Status != resourcelease.StatusInvalidArgument {
				t.Fatalf("err = %v, want invalid-argument", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// bareQueue hides every method of a queue but the Queue contract's.
type bareQueue struct{ resourcelease.Queue }

// TestStoreDispatcherMesh runs two dispatchers on one shared store: a
// worker leasing through A appears on B's peer health, B's backpressure
// and mesh gauges follow A's enqueues, and B's mesh event counter counts
// A's completions.
func TestStoreDispatcherMesh(t *testing.T) {
	ctx := context.Background()
	store := newSharedStore(t)
	a, b := newMeshNode(t, store), newMeshNode(t, store)

	for i := range 3 {
		if _, err := a.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ptr(item(fmt.Sprint(i)))}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := a.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "worker-1"})
	if err != nil || l == nil {
		t.Fatalf("lease = %v, %v", l, err)
	}
	if _, err := a.d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: l.OwnershipToken}); err != nil {
		t.Fatal(err)
	}
	b.sink.waitFor(t, store.LastSequence())
	snap, ok := b.tracker.Snapshot("worker-1")
	if !ok || !snap.IsHealthy || snap.ActiveAssignments != 1 {
		t.Fatalf("B's view of worker-1 = %+v (known %v), want healthy with one assignment", snap, ok)
	}
	// B's backpressure sees the mesh's load: 2 ready + 1 leased.
	if got := b.bp.last(); got != 3 {
		t.Fatalf("B's backpressure observed %d, want 3", got)
	}
	if got := testutil.ToFloat64(gaugeOf(t, b.reg, resourcelease.MetricMeshPendingItems)); got != 2 {
		t.Fatalf("B's %s = %v, want 2", resourcelease.MetricMeshPendingItems, got)
	}

	// A token issued through A is honoured by B.
	if err := b.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}); err != nil {
		t.Fatal(err)
	}
	a.sink.waitFor(t, store.LastSequence())
	b.sink.waitFor(t, store.LastSequence())
	if snap, _ := a.tracker.Snapshot("worker-1"); snap.ActiveAssignments != 0 {
		t.Fatalf("A still counts worker-1's lease after B completed it: %+v", snap)
	}
	for _, n := range []*meshNode{a, b} {
		if got := meshEvents(t, n.reg, "Completed"); got != 1 {
			t.Fatalf("mesh Completed count = %v, want 1 on each dispatcher", got)
		}
		if got := meshEvents(t, n.reg, "Enqueue"); got != 3 {
			t.Fatalf("mesh Enqueue count = %v, want 3 on each dispatcher", got)
		}
		if n, _ := testutil.GatherAndCount(n.reg, resourcelease.MetricPendingItems); n != 0 {
			t.Fatalf("a mesh dispatcher exports %s too", resourcelease.MetricPendingItems)
		}
	}
}

// TestStoreDispatcherExpiryIsADisconnect: an expiry seen in the log is a
// disconnect of the peer on every dispatcher; a fail is not.
func TestStoreDispatcherExpiryIsADisconnect(t *testing.T) {
	ctx := context.Background()
	repl, err := replication.NewMemoryReplicator(replication.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close()
	clock := leasetest.NewManualClock(time.Unix(1_700_000_000, 0))
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Journal: repl, LeaseDuration: time.Second, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	store := &sharedStore{Engine: q, repl: repl}
	b := newMeshNode(t, store, clock)
	for i := range 2 {
		if _, err := q.Enqueue(ctx, item(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	l1, _ := q.Lease(ctx, "silent", 0)
	l2, _ := q.Lease(ctx, "failing", 0)
	if err := q.Fail(ctx, l2.OwnershipToken, resourcelease.FailOptions{Reason: "no"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Second)
	q.Sweep()
	b.sink.waitFor(t, store.LastSequence())
	if s, _ := b.tracker.Snapshot("silent"); s.LastDisconnect == nil || s.LastDisconnect.Reason != resourcelease.DisconnectLeaseExpired {
		t.Fatalf("silent = %+v, want a lease_expired disconnect (token %v)", s, l1.OwnershipToken)
	}
	if s, _ := b.tracker.Snapshot("failing"); s.LastDisconnect != nil {
		t.Fatalf("failing = %+v, want no disconnect: a fail is a release", s)
	}
}

// TestStoreDispatcherOptional: operations the store lacks are
// unimplemented, not a panic; those it has are served.
func TestStoreDispatcherOptional(t *testing.T) {
	ctx := context.Background()
	store := newSharedStore(t)
	bare, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Store: bareQueue{store}})
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	for name, call := range map[string]func() error{
		"pause":  func() error { return bare.Pause(ctx) },
		"resume": func() error { return bare.Resume(ctx) },
		"listItems": func() error {
			_, err := bare.ListItems(ctx, &resourcelease.ListItemsRequest{State: "pending"})
			return err
		},
		"item":    func() error { _, err := bare.Item(ctx, 1); return err },
		"backlog": func() error { _, err := bare.Backlog(ctx, 3); return err },
	} {
		err := call()
		if e := resourcelease.AsError(err); err == nil || e.Status != resourcelease.StatusUnimplemented || e.Code != resourcelease.CodeNotSupported {
			t.Errorf("%s: err = %v, want unimplemented %s", name, err, resourcelease.CodeNotSupported)
		}
	}
	full := newMeshNode(t, store)
	if err := full.d.Pause(ctx); err != nil {
		t.Fatalf("pause on a store that has it: %v", err)
	}
	if st, _ := full.d.Stats(ctx, nil); !st.Paused {
		t.Fatal("paused store does not say so")
	}
	if bare.Queue() != nil || full.d.Store() != resourcelease.Queue(store) {
		t.Fatal("Queue() must be nil and Store() the store with a Store")
	}
}

func gaugeOf(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return gathered{reg, name}
}

// gathered is one metric family of a registry as a Collector, for
// testutil.ToFloat64.
type gathered struct {
	reg  *prometheus.Registry
	name string
}

func (g gathered) Describe(chan<- *prometheus.Desc) {}
func (g gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, _ := g.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != g.name || len(mf.GetMetric()) == 0 {
			continue
		}
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.GaugeValue, mf.GetMetric()[0].GetGauge().GetValue())
	}
}

func meshEvents(t *testing.T, reg *prometheus.Registry, typ string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != resourcelease.MetricMeshEvents {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "type" && lp.GetValue() == typ {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func ptr[T any](v T) *T { return &v }

// TestStoreDispatcherOwnCounters: a CommitReporter's commits feed the
// dispatcher's own counters, and a dead letter is classified from the
// changes themselves: a lease granted by A and failed without requeue
// through B counts as a fail (and a hold time) on B.
func TestStoreDispatcherOwnCounters(t *testing.T) {
	ctx := context.Background()
	store := newSharedStore(t)
	b := newMeshNode(t, store)
	toB := store.report.Load()
	a := newMeshNode(t, store) // the last to ask: it gets the reports
	if _, err := a.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ptr(item("x"))}); err != nil {
		t.Fatal(err)
	}
	l, err := a.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	if err != nil || l == nil {
		t.Fatal(l, err)
	}
	store.report.Store(toB) // B's fail is B's
	if err := b.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, Reason: "bad", DeadLetter: true}); err != nil {
		t.Fatal(err)
	}
	a.sink.waitFor(t, store.LastSequence())
	for name, want := range map[string]float64{resourcelease.MetricEnqueued: 1, resourcelease.MetricLeased: 1, resourcelease.MetricFailed: 0} {
		if got := counterValue(t, a.reg, name); got != want {
			t.Errorf("A's %s = %v, want %v", name, got, want)
		}
	}
	for name, want := range map[string]float64{resourcelease.MetricLeased: 0, resourcelease.MetricFailed: 1, resourcelease.MetricDeadLettered: 1, resourcelease.MetricExpired: 0} {
		if got := counterValue(t, b.reg, name); got != want {
			t.Errorf("B's %s = %v, want %v", name, got, want)
		}
	}
	if n := histogramCount(t, b.reg, resourcelease.MetricLeaseHold); n != 1 {
		t.Errorf("B observed %d hold times, want 1 (the lease A granted)", n)
	}
}

func histogramCount(t *testing.T, reg *prometheus.Registry, name string) uint64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
