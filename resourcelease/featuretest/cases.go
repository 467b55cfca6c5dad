package featuretest

import (
	"errors"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

func testDelayedEnqueue(t *testing.T, open Factory) {
	cases := []struct {
		name string
		run  func(t *testing.T, f *fixture)
	}{
		{"not leased before its time", func(t *testing.T, f *fixture) {
			at := f.clock.Now().Add(10 * time.Second)
			res, err := f.q.Enqueue(bg, later("a", "x", at))
			f.must(err, "Enqueue")
			if !res.NotBefore.Equal(at) {
				t.Fatalf("Enqueue echoed notBefore %v, want %v", res.NotBefore, at)
			}
			f.enqueue(item("a", "y"))
			if st := f.stats(); st.PendingCount != 2 || st.DelayedCount != 1 {
				t.Fatalf("stats %+v, want 2 pending of which 1 delayed", st)
			}
			f.wantLease("y", 1, "the ready one")
			f.noLease("x before its time")
			f.advance(9 * time.Second)
			f.noLease("x a second early")
			f.advance(time.Second)
			l := f.wantLease("x", 1, "x at its time")
			if !l.Payload.NotBefore.Equal(at) {
				t.Fatalf("lease payload notBefore %v, want %v", l.Payload.NotBefore, at)
			}
		}},
		{"ready items stay in sequence order", func(t *testing.T, f *fixture) {
			f.enqueue(later("a", "first", f.clock.Now().Add(5*time.Second)), item("b", "second"), item("c", "third"))
			f.wantLease("second", 1, "the oldest ready")
			f.advance(5 * time.Second)
			wantIDs(t, f.leaseIDs(2), []string{"first", "third"}, "once first is ready")
		}},
		{"a time already passed is ready now", func(t *testing.T, f *fixture) {
			at := f.clock.Now().Add(-time.Hour)
			res, err := f.q.Enqueue(bg, later("a", "x", at))
			f.must(err, "Enqueue")
			if !res.NotBefore.Equal(at) {
				t.Fatalf("Enqueue echoed notBefore %v, want %v", res.NotBefore, at)
			}
			if st := f.stats(); st.DelayedCount != 0 {
				t.Fatalf("stats %+v, want nothing delayed", st)
			}
			f.wantLease("x", 1, "at once")
		}},
		{"too far ahead is invalid", func(t *testing.T, f *fixture) {
			_, err := f.q.Enqueue(bg, later("a", "x", f.clock.Now().Add(resourcelease.MaxDuration+time.Hour)))
			wantStatus(t, err, resourcelease.StatusInvalidArgument, "notBefore beyond MaxDuration")
			if st := f.stats(); st.PendingCount != 0 {
				t.Fatalf("stats %+v after a refused enqueue", st)
			}
		}},
		{"the enqueue event carries the time", func(t *testing.T, f *fixture) {
			at := f.clock.Now().Add(time.Minute)
			f.enqueue(later("a", "x", at))
			evs := eventsOf(f.Events(), resourcelease.EventEnqueue)
			if len(evs) != 1 || evs[0].Payload == nil || !evs[0].Payload.NotBefore.Equal(at) {
				t.Fatalf("Enqueue events %+v, want one whose payload has notBefore %v", evs, at)
			}
		}},
		{"a batch delays item by item", func(t *testing.T, f *fixture) {
			at := f.clock.Now().Add(5 * time.Second)
			res, err := f.q.EnqueueBatch(bg, []resourcelease.Item{later("a", "x", at), item("a", "y")})
			f.must(err, "EnqueueBatch")
			if len(res) != 2 || res[0].Err != nil || res[1].Err != nil || !res[0].NotBefore.Equal(at) || !res[1].NotBefore.IsZero() {
				t.Fatalf("EnqueueBatch results %+v, want x echoing %v and y without a time", res, at)
			}
			f.wantLease("y", 1, "the ready one")
			f.noLease("x before its time")
			f.advance(5 * time.Second)
			f.wantLease("x", 1, "x at its time")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newQueue(t, open, resourcelease.QueueConfig{}))
		})
	}
}

// testDelayedLongPoll: a long-poll waiting when a delayed item becomes
// ready gets it then, woken by the queue's own timer (the sweep interval is
// an hour and the test does not sweep).
func testDelayedLongPoll(t *testing.T, open Factory) {
	for _, strict := range []bool{false, true} {
		name := "fifo"
		cfg := resourcelease.QueueConfig{}
		if strict {
			name, cfg.MaxActivePerPartition = "strict partitions", 1
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newQueue(t, open, cfg)
			f.enqueue(later("a", "x", f.clock.Now().Add(10*time.Second)))
			got := f.longPoll(time.Hour)
			f.clock.Advance(10 * time.Second)
			if l := received(t, got, "the delayed item"); l == nil || l.Payload.ResourceID != "x" {
				t.Fatalf("long-poll got %s, want x", describe(l))
			}
		})
	}
}

func testDelayedCapacity(t *testing.T, open Factory) {
	f := newQueue(t, open, resourcelease.QueueConfig{Capacity: 1, DelayedCapacity: 1, FullMode: resourcelease.FullReject})
	hour := f.clock.Now().Add(time.Hour)
	f.enqueue(later("a", "d1", hour))
	f.enqueue(item("a", "r1")) // the delayed item takes no room under Capacity
	for _, tc := range []struct {
		what string
		it   resourcelease.Item
	}{
		{"a ready item at capacity", item("a", "r2")},
		{"a delayed item at the delayed capacity", later("a", "d2", hour)},
	} {
		if _, err := f.q.Enqueue(bg, tc.it); !errors.Is(err, resourcelease.ErrQueueFull) {
			t.Fatalf("%s: %v, want queue_full", tc.what, err)
		}
	}
	l := f.lease()
	if _, err := f.q.Enqueue(bg, item("a", "r2")); !errors.Is(err, resourcelease.ErrQueueFull) {
		t.Fatalf("a leased item counts against capacity, but the enqueue got %v", err)
	}
	f.complete(l)
	f.enqueue(item("a", "r2"))
	if st := f.stats(); st.PendingCount != 2 || st.DelayedCount != 1 {
		t.Fatalf("stats %+v, want 2 pending of which 1 delayed", st)
	}
}

func testDelayedDrainRestore(t *testing.T, open Factory) {
	for _, strict := range []bool{false, true} {
		cfg := resourcelease.QueueConfig{}
		name := "fifo"
		if strict {
			name, cfg.MaxActivePerPartition = "strict partitions", 1
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newQueue(t, open, cfg)
			at := f.clock.Now().Add(time.Hour)
			f.enqueue(later("a", "x", at), item("b", "y"))
			items, more, err := f.q.DrainN(bg, 0, 0)
			f.must(err, "DrainN")
			if len(items) != 2 || more || items[0].Payload.ResourceID != "x" || !items[0].ReadyAt.Equal(at) || !items[0].Payload.NotBefore.Equal(at) {
				t.Fatalf("drained %+v (more %v), want x (ready at %v) then y", items, more, at)
			}
			if st := f.stats(); st.PendingCount != 0 || st.DelayedCount != 0 {
				t.Fatalf("stats after the drain %+v", st)
			}
			n, err := f.q.Restore(bg, items)
			f.must(err, "Restore")
			if st := f.stats(); n != 2 || st.PendingCount != 2 || st.DelayedCount != 1 {
				t.Fatalf("restored %d, stats %+v; want 2 pending of which 1 delayed", n, st)
			}
			f.wantLease("y", 1, "the ready one")
			f.noLease("x before its time")
			f.advance(time.Hour)
			f.wantLease("x", 1, "x at its time")
		})
	}
}

func testStrictPartitions(t *testing.T, open Factory) {
	cases := []struct {
		name string
		cfg  resourcelease.QueueConfig
		run  func(t *testing.T, f *fixture)
	}{
		{"one at a time, in order", resourcelease.QueueConfig{}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"), item("b", "b1"))
			a1 := f.wantLease("a1", 1, "the oldest")
			f.wantLease("b1", 1, "another partition")
			f.noLease("a2 while a1 is leased")
			f.complete(a1)
			f.wantLease("a2", 1, "once a1 is settled")
		}},
		{"a fail with requeue keeps the head", resourcelease.QueueConfig{}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"))
			l := f.wantLease("a1", 1, "the oldest")
			f.must(f.q.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{Reason: "boom"}), "Fail")
			f.wantLease("a1", 2, "a1 again")
		}},
		{"an expiry keeps the head", resourcelease.QueueConfig{LeaseDuration: 10 * time.Second}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"))
			f.wantLease("a1", 1, "the oldest")
			f.advance(10 * time.Second)
			f.wantLease("a1", 2, "a1 after its lease expired")
		}},
		{"a release keeps the head", resourcelease.QueueConfig{}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"))
			l := f.wantLease("a1", 1, "the oldest")
			f.must(f.q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{}), "Release")
			f.wantLease("a1", 1, "a1 after its release")
		}},
		{"a requeue delay holds the partition", resourcelease.QueueConfig{RequeueDelay: 5 * time.Second}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"), item("b", "b1"))
			l := f.wantLease("a1", 1, "the oldest")
			f.must(f.q.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{Reason: "boom"}), "Fail")
			f.wantLease("b1", 1, "another partition")
			f.noLease("a2 while a1 waits for its requeue delay")
			f.advance(5 * time.Second)
			f.wantLease("a1", 2, "a1 after its delay")
		}},
		{"a delayed release holds the partition", resourcelease.QueueConfig{}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"))
			l := f.wantLease("a1", 1, "the oldest")
			f.must(f.q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{Delay: 5 * time.Second}), "Release")
			f.noLease("a2 while a1 waits for its release delay")
			f.advance(5 * time.Second)
			f.wantLease("a1", 1, "a1 after its delay")
		}},
		{"a delayed item at the head holds the partition", resourcelease.QueueConfig{}, func(t *testing.T, f *fixture) {
			f.enqueue(later("a", "a1", f.clock.Now().Add(10*time.Second)), item("a", "a2"), item("b", "b1"))
			f.wantLease("b1", 1, "the other partition")
			f.noLease("a2 behind the delayed a1")
			f.advance(10 * time.Second)
			f.complete(f.wantLease("a1", 1, "a1 at its time"))
			f.wantLease("a2", 1, "a2 after a1")
		}},
		{"a dead letter lets the partition move on", resourcelease.QueueConfig{}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"))
			l := f.wantLease("a1", 1, "the oldest")
			f.must(f.q.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{Reason: "poison", DeadLetter: true}), "Fail")
			f.wantLease("a2", 1, "a2 after a1 was dead-lettered")
		}},
		{"a batch takes one item per partition", resourcelease.QueueConfig{}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"), item("b", "b1"), item("b", "b2"))
			leases, err := f.q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 4})
			f.must(err, "LeaseBatch")
			var got []string
			for _, l := range leases {
				got = append(got, l.Payload.ResourceID)
			}
			wantIDs(t, got, []string{"a1", "b1"}, "LeaseBatch of 4")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			cfg.MaxActivePerPartition = 1
			tc.run(t, newQueue(t, open, cfg))
		})
	}
}

// testStrictLongPoll: a long-poll that found nothing leasable (its
// partition held) gets the next item as soon as the lease holding it is
// settled.
func testStrictLongPoll(t *testing.T, open Factory) {
	settle := []struct {
		name string
		do   func(f *fixture, l *resourcelease.Lease) error
		want string
	}{
		{"complete", func(f *fixture, l *resourcelease.Lease) error { return f.q.Complete(bg, l.OwnershipToken) }, "a2"},
		{"dead letter", func(f *fixture, l *resourcelease.Lease) error {
			return f.q.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{DeadLetter: true})
		}, "a2"},
		{"fail with requeue", func(f *fixture, l *resourcelease.Lease) error {
			return f.q.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{})
		}, "a1"},
	}
	for _, tc := range settle {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newQueue(t, open, resourcelease.QueueConfig{MaxActivePerPartition: 1})
			f.enqueue(item("a", "a1"), item("a", "a2"))
			l := f.wantLease("a1", 1, "the oldest")
			got := f.longPoll(time.Hour)
			f.must(tc.do(f, l), tc.name)
			if l := received(t, got, tc.name); l == nil || l.Payload.ResourceID != tc.want {
				t.Fatalf("long-poll got %s, want %s", describe(l), tc.want)
			}
		})
	}
}

// testStrictDrainedHead: draining the delayed item that holds a strict
// partition lets its next item go, to a long-poll waiting for it.
func testStrictDrainedHead(t *testing.T, open Factory) {
	f := newQueue(t, open, resourcelease.QueueConfig{MaxActivePerPartition: 1})
	f.enqueue(later("a", "a1", f.clock.Now().Add(time.Hour)), item("a", "a2"))
	got := f.longPoll(time.Hour)
	items, more, err := f.q.DrainN(bg, 1, 0)
	f.must(err, "DrainN")
	if len(items) != 1 || items[0].Payload.ResourceID != "a1" || !more {
		t.Fatalf("drained %+v (more %v), want a1 and more", items, more)
	}
	if l := received(t, got, "after the drain"); l == nil || l.Payload.ResourceID != "a2" {
		t.Fatalf("long-poll got %s, want a2", describe(l))
	}
}

func testPartitionLimit(t *testing.T, open Factory) {
	for _, fair := range []resourcelease.Fairness{resourcelease.FairnessFIFO, resourcelease.FairnessPartitions} {
		t.Run(string(fair), func(t *testing.T) {
			t.Parallel()
			f := newQueue(t, open, resourcelease.QueueConfig{MaxActivePerPartition: 2, Fairness: fair})
			f.enqueue(item("a", "a1"), item("a", "a2"), item("a", "a3"), item("b", "b1"))
			var leases []*resourcelease.Lease
			got := map[string]bool{}
			for range 3 {
				l := f.lease()
				leases = append(leases, l)
				got[l.Payload.ResourceID] = true
			}
			if !got["a1"] || !got["a2"] || !got["b1"] {
				t.Fatalf("leased %v, want a1, a2 and b1", got)
			}
			f.noLease("a3 while a has two leases")
			f.complete(leases[0])
			f.wantLease("a3", 1, "a3 once a has room")
		})
	}
}

func testFairness(t *testing.T, open Factory) {
	cases := []struct {
		name string
		cfg  resourcelease.QueueConfig
		run  func(t *testing.T, f *fixture)
	}{
		{"fifo takes the oldest", resourcelease.QueueConfig{}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"), item("a", "a3"), item("b", "b1"), item("c", "c1"))
			wantIDs(t, f.leaseIDs(5), []string{"a1", "a2", "a3", "b1", "c1"}, "fifo")
		}},
		{"partitions go round-robin", resourcelease.QueueConfig{Fairness: resourcelease.FairnessPartitions}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"), item("a", "a3"), item("b", "b1"), item("c", "c1"))
			wantIDs(t, f.leaseIDs(5), []string{"a1", "b1", "c1", "a2", "a3"}, "round-robin")
		}},
		{"a partition that becomes ready joins the back", resourcelease.QueueConfig{Fairness: resourcelease.FairnessPartitions}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"), item("b", "b1"))
			f.wantLease("a1", 1, "the first partition")
			f.enqueue(item("c", "c1"))
			wantIDs(t, f.leaseIDs(3), []string{"b1", "a2", "c1"}, "after c joined")
		}},
		{"round-robin with strict partitions", resourcelease.QueueConfig{Fairness: resourcelease.FairnessPartitions, MaxActivePerPartition: 1}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"), item("b", "b1"))
			a1 := f.wantLease("a1", 1, "the first partition")
			f.wantLease("b1", 1, "the next partition")
			f.noLease("a2 while a1 is leased")
			f.complete(a1)
			f.wantLease("a2", 1, "a2 once a1 is settled")
		}},
		{"a batch goes round-robin too", resourcelease.QueueConfig{Fairness: resourcelease.FairnessPartitions}, func(t *testing.T, f *fixture) {
			f.enqueue(item("a", "a1"), item("a", "a2"), item("b", "b1"), item("b", "b2"))
			leases, err := f.q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 4})
			f.must(err, "LeaseBatch")
			var got []string
			for _, l := range leases {
				got = append(got, l.Payload.ResourceID)
			}
			wantIDs(t, got, []string{"a1", "b1", "a2", "b2"}, "LeaseBatch of 4")
		}},
		{"delayed items wait their turn", resourcelease.QueueConfig{Fairness: resourcelease.FairnessPartitions}, func(t *testing.T, f *fixture) {
			f.enqueue(later("a", "a1", f.clock.Now().Add(time.Minute)), item("a", "a2"), item("b", "b1"))
			wantIDs(t, f.leaseIDs(2), []string{"a2", "b1"}, "the ready ones")
			f.noLease("a1 before its time")
			f.advance(time.Minute)
			f.wantLease("a1", 1, "a1 at its time")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, newQueue(t, open, tc.cfg))
		})
	}
}

func testDeadLetterBounds(t *testing.T, open Factory) {
	kill := func(f *fixture, ids ...string) {
		f.t.Helper()
		for _, id := range ids {
			f.enqueue(item("a", id))
			l := f.wantLease(id, 1, "the one just enqueued")
			f.must(f.q.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{Reason: "poison", DeadLetter: true}), "Fail")
		}
	}
	dead := func(f *fixture) []string {
		f.t.Helper()
		dl, err := f.q.DeadLetters(bg, 0)
		f.must(err, "DeadLetters")
		var ids []string
		for _, d := range dl {
			ids = append(ids, d.Payload.ResourceID)
		}
		return ids
	}
	purged := func(f *fixture, reason string) []string {
		f.t.Helper()
		var ids []string
		for _, e := range eventsOf(f.Events(), resourcelease.EventDeadLetterPurged) {
			if e.Metadata[resourcelease.MetaPurgeReason] != reason || e.Payload == nil {
				f.t.Fatalf("DeadLetterPurged event %+v, want reason %q and the item", e, reason)
			}
			ids = append(ids, e.Payload.ResourceID)
		}
		return ids
	}
	t.Run("MaxDeadLetters purges the oldest", func(t *testing.T) {
		t.Parallel()
		f := newQueue(t, open, resourcelease.QueueConfig{MaxDeadLetters: 2})
		kill(f, "x", "y", "z")
		wantIDs(t, dead(f), []string{"y", "z"}, "dead letters kept")
		wantIDs(t, purged(f, resourcelease.PurgeReasonMaxDeadLetters), []string{"x"}, "purged")
		if st := f.stats(); st.DeadLetterCount != 2 {
			t.Fatalf("stats %+v, want 2 dead letters", st)
		}
	})
	t.Run("DeadLetterRetention purges the old", func(t *testing.T) {
		t.Parallel()
		f := newQueue(t, open, resourcelease.QueueConfig{DeadLetterRetention: time.Hour})
		kill(f, "x")
		f.advance(30 * time.Minute)
		kill(f, "y")
		f.advance(30 * time.Minute)
		wantIDs(t, dead(f), []string{"y"}, "dead letters kept")
		wantIDs(t, purged(f, resourcelease.PurgeReasonRetention), []string{"x"}, "purged")
	})
	t.Run("unlimited keeps them all", func(t *testing.T) {
		t.Parallel()
		f := newQueue(t, open, resourcelease.QueueConfig{MaxDeadLetters: -1})
		kill(f, "x", "y", "z")
		f.advance(24 * time.Hour)
		wantIDs(t, dead(f), []string{"x", "y", "z"}, "dead letters kept")
	})
}

// testRestart: a delayed item keeps its time, and a strict partition its
// order and its held lease, across a restart.
func testRestart(t *testing.T, open Factory) {
	f := newQueue(t, open, resourcelease.QueueConfig{MaxActivePerPartition: 1})
	at := f.clock.Now().Add(time.Hour)
	f.enqueue(later("b", "x", at), item("a", "a1"), item("a", "a2"))
	a1 := f.wantLease("a1", 1, "the oldest ready")
	f.q = f.Reopen()
	if st := f.stats(); st.PendingCount != 2 || st.DelayedCount != 1 || st.ActiveLeaseCount != 1 {
		t.Fatalf("stats after the restart %+v, want 2 pending (1 delayed) and 1 lease", st)
	}
	f.noLease("a2 behind the restored lease of a1, and x before its time")
	f.complete(a1) // the lease outlived the restart
	f.wantLease("a2", 1, "a2 once a1 is settled")
	f.advance(time.Hour)
	l := f.wantLease("x", 1, "x at its time")
	if !l.Payload.NotBefore.Equal(at) {
		t.Fatalf("x's notBefore after the restart is %v, want %v", l.Payload.NotBefore, at)
	}
}
