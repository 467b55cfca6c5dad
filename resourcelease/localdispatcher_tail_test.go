package resourcelease_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// gappyStore is a sharedStore whose log can lose its oldest events, as
// retention trims them, and whose counts can change without an event, as a
// delayed item's promotion changes them.
type gappyStore struct {
	*sharedStore
	trimmed atomic.Int64                        // events up to this are gone
	stats   atomic.Pointer[resourcelease.Stats] // when set, Stats answers it
}

func (s *gappyStore) ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	return s.sharedStore.ReadEvents(ctx, max(after, s.trimmed.Load()), limit)
}

// bodyless makes a gappyStore a BodylessEventLog that counts its reads.
type bodyless struct {
	*gappyStore
	reads atomic.Int64
}

func (s *bodyless) ReadEventsWithoutBodies(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	s.reads.Add(1)
	evs, err := s.ReadEvents(ctx, after, limit)
	for i := range evs {
		if p := evs[i].Payload; p != nil {
			c := *p
			c.Body = nil
			evs[i].Payload = &c
		}
	}
	return evs, err
}

func (s *gappyStore) Stats(ctx context.Context) (resourcelease.Stats, error) {
	if st := s.stats.Load(); st != nil {
		return *st, nil
	}
	return s.sharedStore.Stats(ctx)
}

// recSink records the events it takes; it refuses each event fail times
// before it takes it, and blocks while hold is set.
type recSink struct {
	mu    sync.Mutex
	seqs  []int64
	fails map[int64]int
	fail  int
	hold  chan struct{}
	ch    chan struct{}
	last  int64 // LastApplied, for resumableSink
}

func newRecSink(fail int) *recSink {
	return &recSink{fail: fail, fails: map[int64]int{}, ch: make(chan struct{}, 1)}
}

func (s *recSink) ApplyEvent(ctx context.Context, e resourcelease.Event) error {
	if s.hold != nil {
		select {
		case <-s.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	if s.fails[e.SequenceNumber] < s.fail {
		s.fails[e.SequenceNumber]++
		s.mu.Unlock()
		return errors.New("sink down")
	}
	s.seqs = append(s.seqs, e.SequenceNumber)
	s.mu.Unlock()
	select {
	case s.ch <- struct{}{}:
	default:
	}
	return nil
}

func (s *recSink) got() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.seqs...)
}

func (s *recSink) waitLen(t *testing.T, n int) []int64 {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if g := s.got(); len(g) >= n {
			return g
		}
		select {
		case <-s.ch:
		case <-deadline:
			t.Fatalf("the sink got %v, want %d events", s.got(), n)
		}
	}
}

type resumableSink struct{ *recSink }

func (s resumableSink) LastApplied(context.Context) (int64, error) { return s.last, nil }

func storeDispatcher(t *testing.T, cfg resourcelease.DispatcherConfig) *resourcelease.LocalDispatcher {
	t.Helper()
	if cfg.LogPollInterval == 0 {
		cfg.LogPollInterval = 20 * time.Millisecond
	}
	d, err := resourcelease.NewDispatcher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

func enqueueN(t *testing.T, q resourcelease.Queue, n int) {
	t.Helper()
	for range n {
		if _, err := q.Enqueue(context.Background(), item("x")); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStoreDispatcherLogAfter: the log is read from LogAfter, so a caller
// that read it up to n misses nothing committed after n.
func TestStoreDispatcherLogAfter(t *testing.T) {
	for _, tc := range []struct {
		after int64
		want  []int64
	}{{-1, []int64{1, 2, 3, 4}}, {2, []int64{3, 4}}, {0, []int64{4}}} {
		store := newSharedStore(t)
		enqueueN(t, store, 3)
		s := newRecSink(0)
		storeDispatcher(t, resourcelease.DispatcherConfig{Store: store, LogSinks: []resourcelease.EventSink{s}, LogAfter: tc.after})
		enqueueN(t, store, 1)
		if got := s.waitLen(t, len(tc.want)); len(got) != len(tc.want) || got[0] != tc.want[0] {
			t.Fatalf("LogAfter %d: the sink got %v, want %v", tc.after, got, tc.want)
		}
	}
	if _, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Store: newSharedStore(t), LogAfter: -2}); err == nil {
		t.Fatal("LogAfter -2 accepted")
	}
}

// TestStoreDispatcherSinkDelivery: an event a sink refuses is retried until
// it takes it, in order; a sink that blocks holds up neither peer health
// nor another sink; a ResumableSink starts after its LastApplied.
func TestStoreDispatcherSinkDelivery(t *testing.T) {
	ctx := context.Background()
	store := newSharedStore(t)
	enqueueN(t, store, 2)
	flaky := newRecSink(2)
	stuck := newRecSink(0)
	stuck.hold = make(chan struct{})
	resumed := resumableSink{newRecSink(0)}
	resumed.last = 1
	n := newMeshNode(t, store) // for its tracker
	d := storeDispatcher(t, resourcelease.DispatcherConfig{
		Store: store, PeerHealth: n.tracker, LogSinks: []resourcelease.EventSink{stuck, flaky, resumed},
	})
	enqueueN(t, store, 1) // event 3
	l, err := d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	if err != nil || l == nil {
		t.Fatal(l, err)
	}
	if got := flaky.waitLen(t, 2); got[0] != 3 || got[1] != 4 {
		t.Fatalf("a sink that refused each event twice got %v, want [3 4]", got)
	}
	if got := resumed.waitLen(t, 3); got[0] != 2 || got[2] != 4 {
		t.Fatalf("a resumable sink at 1 got %v, want [2 3 4]", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := n.tracker.Snapshot("w"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a blocked sink held up peer health")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stuck.hold)
	if got := stuck.waitLen(t, 2); got[0] != 3 {
		t.Fatalf("the blocked sink got %v once released, want [3 4]", got)
	}
}

// TestStoreDispatcherLogGap: events trimmed before the tail read them are
// noticed: logged, counted, and the tail goes on after them.
func TestStoreDispatcherLogGap(t *testing.T) {
	store := &gappyStore{sharedStore: newSharedStore(t)}
	enqueueN(t, store, 1)
	reg := prometheus.NewRegistry()
	s := newRecSink(0)
	storeDispatcher(t, resourcelease.DispatcherConfig{Store: store, Registerer: reg, LogSinks: []resourcelease.EventSink{s}})
	store.trimmed.Store(3)
	enqueueN(t, store, 3) // events 2..4; 2 and 3 are trimmed at once
	if got := s.waitLen(t, 1); got[0] != 4 {
		t.Fatalf("the sink got %v, want [4]", got)
	}
	waitCounter(t, reg, resourcelease.MetricMeshLogGaps, map[string]string{"reader": "tail"}, 1)
	waitCounter(t, reg, resourcelease.MetricMeshLogGaps, map[string]string{"reader": "sink"}, 1)
}

// waitCounter waits until the counter name{labels} of reg is want.
func waitCounter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := 0.0
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				match := true
				for _, lp := range m.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						match = false
					}
				}
				if match {
					got = m.GetCounter().GetValue()
				}
			}
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStoreDispatcherCountsRefreshWhileQuiet: counts that change without
// an event (a delayed item's promotion) reach the mesh gauges and
// backpressure at the next poll.
func TestStoreDispatcherCountsRefreshWhileQuiet(t *testing.T) {
	store := &gappyStore{sharedStore: newSharedStore(t)}
	bp := &recordingBackpressure{}
	reg := prometheus.NewRegistry()
	storeDispatcher(t, resourcelease.DispatcherConfig{Store: store, Backpressure: bp, Registerer: reg})
	store.stats.Store(&resourcelease.Stats{PendingCount: 7, DelayedCount: 2, ActiveLeaseCount: 1})
	deadline := time.Now().Add(10 * time.Second)
	for bp.last() != 6 || testutil.ToFloat64(gaugeOf(t, reg, resourcelease.MetricMeshDelayedItems)) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("backpressure saw %d, want 6: the counts were not refreshed without an event", bp.last())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStoreDispatcherTailReadsNoBodies: the tail reads a BodylessEventLog
// without bodies; the sinks still get them.
func TestStoreDispatcherTailReadsNoBodies(t *testing.T) {
	store := &bodyless{gappyStore: &gappyStore{sharedStore: newSharedStore(t)}}
	s := newRecSink(0)
	var got atomic.Pointer[resourcelease.Event]
	sink := sinkFunc(func(e resourcelease.Event) { got.Store(&e) })
	storeDispatcher(t, resourcelease.DispatcherConfig{Store: store, LogSinks: []resourcelease.EventSink{s, sink}})
	enqueueN(t, store, 1)
	s.waitLen(t, 1)
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() == nil || store.reads.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the tail read without bodies %d times", store.reads.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if e := got.Load(); e.Payload == nil || len(e.Payload.Body) == 0 {
		t.Fatalf("a sink got %+v, want the body", e)
	}
}

type sinkFunc func(resourcelease.Event)

func (f sinkFunc) ApplyEvent(_ context.Context, e resourcelease.Event) error { f(e); return nil }

// TestLeaseWaitersGauge: a long-poll in progress shows in
// MetricLeaseWaiters, a signal a test (or an operator) can wait on.
func TestLeaseWaitersGauge(t *testing.T) {
	store := newSharedStore(t)
	reg := prometheus.NewRegistry()
	d := storeDispatcher(t, resourcelease.DispatcherConfig{Store: store, Registerer: reg})
	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := d.Lease(context.Background(), &resourcelease.LeaseRequest{PeerID: "w", Wait: 10 * time.Second})
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waiters := func() float64 { return testutil.ToFloat64(gaugeOf(t, reg, resourcelease.MetricLeaseWaiters)) }
	deadline := time.Now().Add(10 * time.Second)
	for waiters() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want 1 while a long-poll waits", resourcelease.MetricLeaseWaiters, waiters())
		}
		time.Sleep(time.Millisecond)
	}
	enqueueN(t, store, 1)
	if l := <-got; l == nil {
		t.Fatal("the long-poll got nothing")
	}
	if w := waiters(); w != 0 {
		t.Fatalf("%s = %v after the long-poll ended, want 0", resourcelease.MetricLeaseWaiters, w)
	}
}
