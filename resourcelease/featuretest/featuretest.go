// Package featuretest is the conformance suite of the queue features every
// store must have alike: delayed enqueue (Item.NotBefore), per-partition
// ordering and limits (QueueConfig.MaxActivePerPartition), fair leasing
// (QueueConfig.Fairness), the capacity of delayed items, and dead-letter
// retention (QueueConfig.DeadLetterRetention, MaxDeadLetters). Each rule is
// a table of cases run against a fresh queue from the store's factory:
//
//	func TestFeatures(t *testing.T) {
//		featuretest.Run(t, func(t *testing.T, cfg resourcelease.QueueConfig) *featuretest.Harness {
//			q := openMyQueue(t, cfg) // with cfg.Clock as its clock; closed at cleanup
//			return &featuretest.Harness{Queue: q, Sweep: ..., Waiters: ..., Events: ...}
//		})
//	}
//
// Time is a leasetest.ManualClock that the suite creates and passes in
// cfg.Clock: a store must take every time from it. It is for tests only.
package featuretest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// Harness is one queue under test and the hooks the suite drives it with.
type Harness struct {
	// Queue is the queue. The factory closes it when the test ends (Close
	// must be safe twice).
	Queue resourcelease.Queue
	// Sweep expires overdue leases, promotes delayed items and purges dead
	// letters now, as the store's sweeper does every SweepInterval.
	Sweep func()
	// Waiters reports how many long-poll leases are parked.
	Waiters func() int
	// Events returns the replication log so far, oldest first.
	Events func() []resourcelease.Event
	// Reopen, when set, closes the queue and opens it again on the same
	// storage and configuration (a restart), returning the new queue; the
	// restart cases run only for stores that have it.
	Reopen func() resourcelease.Queue
}

// Factory opens a fresh, empty queue configured by cfg, whose Clock is the
// test's manual clock.
type Factory func(t *testing.T, cfg resourcelease.QueueConfig) *Harness

// fixture is one test's queue.
type fixture struct {
	*Harness
	t     *testing.T
	clock *leasetest.ManualClock
	q     resourcelease.Queue
}

func newQueue(t *testing.T, open Factory, cfg resourcelease.QueueConfig) *fixture {
	t.Helper()
	clock := leasetest.NewManualClock(time.Time{})
	cfg.Clock = clock
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = time.Hour // the tests sweep when they mean to
	}
	h := open(t, cfg)
	if h.Queue == nil || h.Sweep == nil || h.Waiters == nil || h.Events == nil {
		t.Fatal("featuretest: the harness needs Queue, Sweep, Waiters and Events")
	}
	return &fixture{Harness: h, t: t, clock: clock, q: h.Queue}
}

// Features names the optional parts a store has.
type Features struct {
	// Reopen: the store's harness has Reopen (its state outlives the
	// queue), and the restart cases run.
	Reopen bool
}

// Run runs the suite, one subtest per rule, each case on a fresh queue from
// open.
func Run(t *testing.T, open Factory, f Features) {
	tests := []struct {
		name string
		run  func(t *testing.T, open Factory)
	}{
		{"DelayedEnqueue", testDelayedEnqueue},
		{"DelayedLongPollWakesAtItsTime", testDelayedLongPoll},
		{"DelayedCapacity", testDelayedCapacity},
		{"DelayedDrainRestore", testDelayedDrainRestore},
		{"StrictPartitions", testStrictPartitions},
		{"StrictPartitionLongPoll", testStrictLongPoll},
		{"StrictPartitionDrainedHead", testStrictDrainedHead},
		{"PartitionLimit", testPartitionLimit},
		{"Fairness", testFairness},
		{"DeadLetterBounds", testDeadLetterBounds},
	}
	if f.Reopen {
		tests = append(tests, struct {
			name string
			run  func(t *testing.T, open Factory)
		}{"RestartKeepsDelaysAndPartitionOrder", testRestart})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, open)
		})
	}
}

var bg = context.Background()

// item is an item of partition p named id.
func item(p, id string) resourcelease.Item {
	return resourcelease.Item{
		ResourceType: "demo.order", ResourceID: id, PartitionKey: p,
		PayloadEncoding: "application/json", Body: []byte(`{"id":"` + id + `"}`),
	}
}

// later is item(p, id) not leasable before at.
func later(p, id string, at time.Time) resourcelease.Item {
	it := item(p, id)
	it.NotBefore = at
	return it
}

func (f *fixture) enqueue(items ...resourcelease.Item) []int64 {
	f.t.Helper()
	var seqs []int64
	for _, it := range items {
		res, err := f.q.Enqueue(bg, it)
		if err != nil {
			f.t.Fatalf("Enqueue(%s/%s): %v", it.PartitionKey, it.ResourceID, err)
		}
		seqs = append(seqs, res.SequenceID)
	}
	return seqs
}

func (f *fixture) lease() *resourcelease.Lease {
	f.t.Helper()
	l, err := f.q.Lease(bg, "w", 0)
	if err != nil {
		f.t.Fatalf("Lease: %v", err)
	}
	if l == nil {
		f.t.Fatal("Lease: nothing leased, want a lease")
	}
	return l
}

func (f *fixture) noLease(what string) {
	f.t.Helper()
	l, err := f.q.Lease(bg, "w", 0)
	if err != nil || l != nil {
		f.t.Fatalf("%s: Lease = %v, %v; want nothing", what, describe(l), err)
	}
}

// leaseIDs leases n items and returns their resource ids, in order.
func (f *fixture) leaseIDs(n int) []string {
	f.t.Helper()
	var ids []string
	for range n {
		ids = append(ids, f.lease().Payload.ResourceID)
	}
	return ids
}

// wantLease leases and checks the item's resource id and attempt.
func (f *fixture) wantLease(id string, attempt int, what string) *resourcelease.Lease {
	f.t.Helper()
	l := f.lease()
	if l.Payload.ResourceID != id || l.Attempt != attempt {
		f.t.Fatalf("%s: leased %s (attempt %d), want %s (attempt %d)", what, l.Payload.ResourceID, l.Attempt, id, attempt)
	}
	return l
}

func (f *fixture) stats() resourcelease.Stats {
	f.t.Helper()
	st, err := f.q.Stats(bg)
	if err != nil {
		f.t.Fatalf("Stats: %v", err)
	}
	return st
}

func (f *fixture) must(err error, what string) {
	f.t.Helper()
	if err != nil {
		f.t.Fatalf("%s: %v", what, err)
	}
}

func (f *fixture) complete(l *resourcelease.Lease) {
	f.t.Helper()
	f.must(f.q.Complete(bg, l.OwnershipToken), "Complete")
}

// advance moves the clock and sweeps.
func (f *fixture) advance(d time.Duration) {
	f.clock.Advance(d)
	f.Sweep()
}

func describe(l *resourcelease.Lease) string {
	if l == nil {
		return "nil"
	}
	return l.Payload.PartitionKey + "/" + l.Payload.ResourceID
}

func wantStatus(t *testing.T, err error, status resourcelease.Status, what string) {
	t.Helper()
	if got := resourcelease.StatusOf(err); got != status {
		t.Fatalf("%s: err = %v (status %q), want status %q", what, err, got, status)
	}
}

func wantIDs(t *testing.T, got, want []string, what string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: leased %v, want %v", what, got, want)
	}
}

// waitFor polls cond (a state another goroutine reaches) until it holds or
// 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// longPoll starts a long-poll lease and waits until it is parked.
func (f *fixture) longPoll(wait time.Duration) <-chan *resourcelease.Lease {
	f.t.Helper()
	n := f.Waiters()
	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := f.q.Lease(bg, "poller", wait)
		if err != nil {
			f.t.Errorf("long-poll: %v", err)
		}
		got <- l
	}()
	waitFor(f.t, "the long-poll to park", func() bool { return f.Waiters() > n })
	return got
}

// received returns what a long-poll got, or fails after 10 s.
func received(t *testing.T, got <-chan *resourcelease.Lease, what string) *resourcelease.Lease {
	t.Helper()
	select {
	case l := <-got:
		return l
	case <-time.After(10 * time.Second): // a hang guard, not a synchronisation
		t.Fatalf("%s: the long-poll got nothing", what)
		return nil
	}
}

func eventsOf(evs []resourcelease.Event, typ resourcelease.EventType) []resourcelease.Event {
	var out []resourcelease.Event
	for _, e := range evs {
		if e.EventType == typ {
			out = append(out, e)
		}
	}
	return out
}
