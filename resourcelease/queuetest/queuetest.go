// Package queuetest is the conformance suite of the store-neutral queue
// contract: the semantics every queue store must have (FIFO, long-poll
// first come first served, fencing, expiry with lease_expired, backoff,
// dead letters with redrive and purge, the dedupe window, capacity, paged
// drain and restore, release) as table tests, run against each store by
// that store's own tests:
//
//	func TestConformance(t *testing.T) {
//		queuetest.Run(t, func(t *testing.T, cfg resourcelease.QueueConfig) *queuetest.Harness {
//			q := openMyQueue(t, cfg) // with cfg.Clock as its clock; closed at cleanup
//			return &queuetest.Harness{Queue: q, Sweep: ..., Waiters: q.Waiters, Events: ...}
//		}, queuetest.Features{...})
//	}
//
// Time is a leasetest.ManualClock that the suite creates and passes in
// cfg.Clock: a store must take every time from it (the in-memory engine
// reads it; the Postgres store passes its time as the database clock). It
// is for tests only.
package queuetest

import (
	"context"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// Harness is one queue under test and the hooks the suite drives it with.
type Harness struct {
	// Queue is the queue. The factory closes it when the test ends (the
	// suite closes some itself first; Close must be safe twice).
	Queue Queue
	// Sweep expires overdue leases and promotes delayed items now, as the
	// store's sweeper does every SweepInterval.
	Sweep func()
	// Waiters reports how many long-poll leases are parked.
	Waiters func() int
	// Events returns the replication log so far, oldest first.
	Events func() []resourcelease.Event
}

// Factory opens a fresh, empty queue configured by cfg, whose Clock is the
// test's manual clock.
type Factory func(t *testing.T, cfg resourcelease.QueueConfig) *Harness

// Features names the optional parts of the contract a store has.
type Features struct {
	// ReleaseOptions: Release honours ReleaseOptions.Delay and
	// QueueConfig.MaxReleases.
	ReleaseOptions bool
	// CapacityCountsLeased: capacity bounds ready and leased items together
	// (a lease does not make room; a completion does), and delayed items
	// are not counted. Without it capacity bounds the pending items (ready
	// and delayed) and a lease makes room.
	CapacityCountsLeased bool
	// Inspect: the queue is an Inspector (ListItems and Item).
	Inspect bool
	// Pause: the queue is a Pauser (Pause and Resume).
	Pause bool
}

// fixture is one test's queue.
type fixture struct {
	*Harness
	t     *testing.T
	clock *leasetest.ManualClock
	q     Queue
}

type suite struct {
	open Factory
	f    Features
}

func (s suite) newQueue(t *testing.T, cfg resourcelease.QueueConfig) *fixture {
	t.Helper()
	clock := leasetest.NewManualClock(time.Time{})
	cfg.Clock = clock
	h := s.open(t, cfg)
	if h.Sweep == nil || h.Waiters == nil || h.Queue == nil || h.Events == nil {
		t.Fatal("queuetest: the harness needs Queue, Sweep, Waiters and Events")
	}
	return &fixture{Harness: h, t: t, clock: clock, q: h.Queue}
}

// Run runs the conformance suite, one subtest per behaviour, each on a fresh
// queue from open.
func Run(t *testing.T, open Factory, f Features) {
	s := suite{open: open, f: f}
	type test struct {
		name string
		run  func(*testing.T, suite)
	}
	tests := []test{
		{"EnqueueValidation", testEnqueueValidation},
		{"LeaseOldestReadyFirst", testLeaseOldestReadyFirst},
		{"LeaseFields", testLeaseFields},
		{"HeartbeatExtendsLease", testHeartbeatExtendsLease},
		{"Fencing", testFencing},
		{"BadTokens", testBadTokens},
		{"ExpirySweepRequeues", testExpirySweepRequeues},
		{"SweeperRunsByItself", testSweeperRunsByItself},
		{"MaxDeliveryAttemptsDeadLetters", testMaxDeliveryAttempts},
		{"ExpiryOnLastAttemptIsNotAFail", testExpiryOnLastAttempt},
		{"HugeRestoredAttemptDeadLetters", testHugeRestoredAttempt},
		{"DeadLetterListRedrivePurge", testDeadLetters},
		{"DeadLetterSelection", testDeadLetterSelection},
		{"RequeueDelayAndBackoff", testRequeueDelayAndBackoff},
		{"DrainAndRestoreKeepBookkeeping", testDrainAndRestore},
		{"DrainPaged", testDrainPaged},
		{"RestoreRejectsBadItems", testRestoreRejects},
		{"RequestIDDedupe", testDedupe},
		{"Capacity", testCapacity},
		{"LongPoll", testLongPoll},
		{"Release", testRelease},
		{"EventsCarryCounts", testEventsCarryCounts},
		{"Batches", testBatches},
		{"Stats", testStats},
	}
	if f.ReleaseOptions {
		tests = append(tests, test{"ReleaseDelayAndLimit", testReleaseOptions})
	}
	if f.Inspect {
		tests = append(tests, test{"ListItemsPending", testListItemsPending}, test{"ListItemsLeasedAndDead", testListItemsLeasedAndDead},
			test{"ListItemsBadRequests", testListItemsBadRequests}, test{"ItemDetail", testItemDetail})
	}
	if f.Pause {
		tests = append(tests, test{"PauseStopsGrantsOnly", testPauseStopsGrantsOnly}, test{"PausedLongPollEndsEmpty", testPausedLongPollEndsEmpty},
			test{"PauseStopsEveryLeasePath", testPauseStopsEveryLeasePath})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, s)
		})
	}
}

var bg = context.Background()

func item(id string) resourcelease.Item {
	return resourcelease.Item{
		ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"id":"` + id + `"}`),
	}
}

func (f *fixture) enqueue(ids ...string) []int64 {
	f.t.Helper()
	var seqs []int64
	for _, id := range ids {
		res, err := f.q.Enqueue(bg, item(id))
		if err != nil {
			f.t.Fatalf("Enqueue(%s): %v", id, err)
		}
		seqs = append(seqs, res.SequenceID)
	}
	return seqs
}

func (f *fixture) lease(peer string) *resourcelease.Lease {
	f.t.Helper()
	l, err := f.q.Lease(bg, peer, 0)
	if err != nil {
		f.t.Fatalf("Lease: %v", err)
	}
	if l == nil {
		f.t.Fatal("Lease: nothing leased, want a lease")
	}
	return l
}

func (f *fixture) noLease(peer string) {
	f.t.Helper()
	l, err := f.q.Lease(bg, peer, 0)
	if err != nil || l != nil {
		f.t.Fatalf("Lease = %+v, %v; want nothing", l, err)
	}
}

func (f *fixture) stats() resourcelease.Stats {
	f.t.Helper()
	st, err := f.q.Stats(bg)
	if err != nil {
		f.t.Fatalf("Stats: %v", err)
	}
	return st
}

// wantStats compares the counts of st with want, DelayedCount included
// (an item waiting for a requeue delay or a delayed release counts as
// delayed on every store).
func (f *fixture) wantStats(want resourcelease.Stats, what string) {
	f.t.Helper()
	got := f.stats()
	if got != want {
		f.t.Fatalf("%s: stats %+v, want %+v", what, got, want)
	}
}

func (f *fixture) must(err error, what string) {
	f.t.Helper()
	if err != nil {
		f.t.Fatalf("%s: %v", what, err)
	}
}

// events returns the log, checking that it is gap-free from 1 (ok is
// always true; it keeps the checks that use it in their own block).
func (f *fixture) events() ([]resourcelease.Event, bool) {
	f.t.Helper()
	evs := f.Events()
	for i, e := range evs {
		if e.SequenceNumber != int64(i)+1 {
			f.t.Fatalf("event %d has sequence number %d: the log has a gap or is out of order", i, e.SequenceNumber)
		}
	}
	return evs, true
}

func types(evs []resourcelease.Event) []resourcelease.EventType {
	out := make([]resourcelease.EventType, len(evs))
	for i, e := range evs {
		out[i] = e.EventType
	}
	return out
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

// awaitEmptyWait advances the clock past a long-poll's wait until it ends:
// the wait's timer may be set only after the long-poll shows as parked.
func (f *fixture) awaitEmptyWait(wait time.Duration, done <-chan *resourcelease.Lease) *resourcelease.Lease {
	f.t.Helper()
	f.clock.Advance(wait)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case l := <-done:
			return l
		case <-time.After(10 * time.Millisecond):
			f.clock.Advance(time.Second) // a chance for a timer set late, not a synchronisation
		case <-deadline:
			f.t.Fatal("the long-poll's wait never ended")
		}
	}
}

func wantCode(t *testing.T, err error, code, what string) {
	t.Helper()
	if got := resourcelease.CodeOf(err); got != code {
		t.Fatalf("%s: err = %v (code %q), want code %q", what, err, got, code)
	}
}
