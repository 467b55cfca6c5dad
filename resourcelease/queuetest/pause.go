package queuetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Pauser is a queue whose leasing can be paused. A store with
// Features.Pause has it.
type Pauser interface {
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
}

func (f *fixture) pauser() Pauser {
	f.t.Helper()
	p, ok := f.q.(Pauser)
	if !ok {
		f.t.Fatalf("%T has Features.Pause but no Pause and Resume", f.q)
	}
	return p
}

func testPauseStopsGrantsOnly(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{LeaseDuration: time.Minute})
	f.enqueue("a", "b")
	held := f.lease("w")
	f.must(f.pauser().Pause(bg), "Pause")
	f.must(f.pauser().Pause(bg), "Pause twice")
	if !f.stats().Paused {
		t.Fatal("Stats.Paused is false while paused")
	}
	f.noLease("w")

	// A long-poll waits through the pause; enqueues and redrives hand it
	// nothing, and the other calls keep working.
	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := f.q.Lease(bg, "poller", time.Hour)
		if err != nil {
			t.Errorf("long-poll: %v", err)
		}
		got <- l
	}()
	waitFor(t, "the long-poll to park", func() bool { return f.Waiters() == 1 })
	if res, err := f.q.Enqueue(bg, item("c")); err != nil || !res.Stats.Paused {
		t.Fatalf("Enqueue while paused = %+v, %v; want its stats to say paused", res, err)
	}
	if _, err := f.q.Heartbeat(bg, held.OwnershipToken); err != nil {
		t.Fatalf("Heartbeat while paused: %v", err)
	}
	f.must(f.q.Fail(bg, held.OwnershipToken, deadLetter("x", "")), "Fail while paused")
	if n, err := f.q.Redrive(bg, resourcelease.DeadLetterSelection{SequenceIDs: []int64{held.SequenceID}}); err != nil || n != 1 {
		t.Fatalf("Redrive while paused = %d, %v", n, err)
	}
	f.noLease("w")
	select {
	case l := <-got:
		t.Fatalf("a lease was granted while paused: %+v", l)
	default:
	}
	f.wantStats(resourcelease.Stats{PendingCount: 3, Paused: true}, "paused")
	if n := f.Waiters(); n != 1 {
		t.Fatalf("%d long-polls parked, want 1", n)
	}

	f.must(f.pauser().Resume(bg), "Resume")
	l := <-got
	if l == nil || l.OwnerPeerID != "poller" || l.SequenceID != held.SequenceID {
		t.Fatalf("after Resume the long-poll got %+v, want the oldest item (%d)", l, held.SequenceID)
	}
	if f.stats().Paused {
		t.Fatal("Stats.Paused is true after Resume")
	}
	if l := f.lease("w"); l.Payload.ResourceID != "b" {
		t.Fatalf("after Resume leased %s, want b", l.Payload.ResourceID)
	}
	f.must(f.pauser().Resume(bg), "Resume a running queue")
}

// testPauseStopsEveryLeasePath checks every way to lease while paused: one
// lease, a batch, a batch bounded by size, under each partition rule.
func testPauseStopsEveryLeasePath(t *testing.T, s suite) {
	for _, tc := range []struct {
		name string
		cfg  resourcelease.QueueConfig
	}{
		{"fifo", resourcelease.QueueConfig{}},
		{"strict partitions", resourcelease.QueueConfig{MaxActivePerPartition: 1}},
		{"fair partitions", resourcelease.QueueConfig{Fairness: resourcelease.FairnessPartitions}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := s.newQueue(t, tc.cfg)
			for _, id := range []string{"a", "b"} {
				it := item(id)
				it.PartitionKey = "tenant-" + id
				if _, err := f.q.Enqueue(bg, it); err != nil {
					t.Fatalf("Enqueue: %v", err)
				}
			}
			f.must(f.pauser().Pause(bg), "Pause")
			f.noLease("w")
			for _, opts := range []resourcelease.LeaseBatchOptions{{MaxItems: 2}, {MaxItems: 2, MaxBytes: 1 << 20}} {
				if ls, err := f.q.LeaseBatch(bg, "w", opts); err != nil || len(ls) != 0 {
					t.Fatalf("LeaseBatch(%+v) while paused = %+v, %v; want nothing", opts, ls, err)
				}
			}
			// An enqueue in the same transaction as a lease hands it nothing
			// either.
			f.enqueue("c")
			f.noLease("w")
			f.must(f.pauser().Resume(bg), "Resume")
			ls, err := f.q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 3, MaxBytes: 1 << 20})
			if err != nil || len(ls) == 0 {
				t.Fatalf("LeaseBatch after Resume = %+v, %v; want leases", ls, err)
			}
		})
	}
}

func testPausedLongPollEndsEmpty(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	f.enqueue("a")
	f.must(f.pauser().Pause(bg), "Pause")
	done := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := f.q.Lease(bg, "w", 5*time.Second)
		if err != nil {
			t.Errorf("long-poll: %v", err)
		}
		done <- l
	}()
	waitFor(t, "the long-poll to park", func() bool { return f.Waiters() == 1 })
	if l := f.awaitEmptyWait(5*time.Second, done); l != nil {
		t.Fatalf("a paused long-poll got %+v, want nothing when its wait ends", l)
	}
	f.must(f.q.Close(), "Close")
	for name, call := range map[string]func(context.Context) error{"Pause": f.pauser().Pause, "Resume": f.pauser().Resume} {
		if err := call(bg); !errors.Is(err, resourcelease.ErrClosed) {
			t.Fatalf("%s after Close: %v, want closed", name, err)
		}
	}
}
