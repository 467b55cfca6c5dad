package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// TestQueuePartitionRulesChange: the partitions table is rebuilt from the
// items when a queue opens with other partition rules than the last one,
// so items enqueued and leases taken without rules are held to them.
func TestQueuePartitionRulesChange(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	open := func(cfg postgres.QueueConfig) *postgres.Queue {
		s := openStore(t, url, postgres.Config{})
		q, err := postgres.NewQueue(bg, s, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { q.Close() })
		return q
	}
	enqueue := func(q *postgres.Queue, p, id string) {
		t.Helper()
		it := qitem(id)
		it.PartitionKey = p
		if _, err := q.Enqueue(bg, it); err != nil {
			t.Fatal(err)
		}
	}
	lease := func(q *postgres.Queue) string {
		t.Helper()
		l, err := q.Lease(bg, "w", 0)
		if err != nil {
			t.Fatal(err)
		}
		if l == nil {
			return ""
		}
		return l.Payload.ResourceID
	}
	plain := open(postgres.QueueConfig{})
	enqueue(plain, "a", "a1")
	enqueue(plain, "a", "a2")
	enqueue(plain, "b", "b1")
	if got := lease(plain); got != "a1" {
		t.Fatalf("leased %q, want a1", got)
	}
	plain.Close()

	strict := open(postgres.QueueConfig{MaxActivePerPartition: 1})
	if got := lease(strict); got != "b1" {
		t.Fatalf("with strict partitions, leased %q, want b1 (a is held by a1's lease)", got)
	}
	if got := lease(strict); got != "" {
		t.Fatalf("leased %q behind a1's lease", got)
	}
	enqueue(strict, "b", "b2")
	strict.Close()

	fair := open(postgres.QueueConfig{Fairness: resourcelease.FairnessPartitions})
	enqueue(fair, "c", "c1")
	var got []string
	for range 3 {
		got = append(got, lease(fair))
	}
	if fmt.Sprint(got) != "[a2 b2 c1]" {
		t.Fatalf("round-robin after the rebuild leased %v, want [a2 b2 c1]", got)
	}
	fair.Close()

	var rules string
	again := open(postgres.QueueConfig{})
	if err := again.Store().Pool().QueryRow(bg, `SELECT partition_rules FROM leasemesh.queue_state`).Scan(&rules); err != nil || rules != "" {
		t.Fatalf("a queue without rules left partition_rules %q, %v", rules, err)
	}
}

// TestQueueStrictPartitionsAcrossQueues: two queues on one schema (two
// dispatchers) lease concurrently from strict partitions. The log, in
// commit order, shows never two live leases of one partition and each
// partition's items leased in order.
func TestQueueStrictPartitionsAcrossQueues(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	cfg := postgres.QueueConfig{Capacity: -1, MaxActivePerPartition: 1, Fairness: resourcelease.FairnessPartitions, PollInterval: 50 * time.Millisecond}
	qs := []*postgres.Queue{openQueue(t, url, nil, cfg), openQueue(t, url, nil, cfg)}
	const partitions, perPartition = 4, 15
	var items []resourcelease.Item
	for i := range perPartition {
		for p := range partitions {
			it := qitem(fmt.Sprint(i))
			it.PartitionKey = fmt.Sprint("p", p)
			items = append(items, it)
		}
	}
	if _, err := qs[0].EnqueueBatch(bg, items); err != nil {
		t.Fatal(err)
	}
	var done atomic.Int64
	ctx, cancel := context.WithTimeout(bg, 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := qs[w%2]
			for ctx.Err() == nil && done.Load() < int64(len(items)) {
				l, err := q.Lease(ctx, fmt.Sprint("w", w), 100*time.Millisecond)
				if err != nil {
					errs <- err
					return
				}
				if l == nil {
					continue
				}
				time.Sleep(time.Millisecond) // hold it while the others try
				if err := q.Complete(ctx, l.OwnershipToken); err != nil {
					errs <- err
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := done.Load(); n != int64(len(items)) {
		t.Fatalf("processed %d of %d items", n, len(items))
	}
	held := map[string]string{} // partition → the item leased
	dumped := false
	next := map[string]int{}
	for _, ev := range readAll(t, qs[1]) {
		if ev.Payload == nil {
			continue
		}
		p, id := ev.Payload.PartitionKey, ev.Payload.ResourceID
		switch ev.EventType {
		case resourcelease.EventLeaseGranted:
			if h, ok := held[p]; ok && !dumped {
				dumped = true
				for _, e := range readAll(t, qs[1])[:ev.SequenceNumber] {
					t.Logf("%d %s %s/%s %v %s", e.SequenceNumber, e.EventType, e.Payload.PartitionKey, e.Payload.ResourceID, e.Ownership, e.PeerID)
				}
				t.Fatalf("event %d: partition %s leased %s while %s is leased", ev.SequenceNumber, p, id, h)
			}
			if want := fmt.Sprint(next[p]); id != want {
				t.Fatalf("event %d: partition %s leased %s, want %s", ev.SequenceNumber, p, id, want)
			}
			held[p] = id
		case resourcelease.EventCompleted:
			delete(held, p)
			next[p]++
		case resourcelease.EventLeaseReleased: // a long-poll granted as its wait ended gives it back
			delete(held, p)
		}
	}
	for p := range partitions {
		if n := next[fmt.Sprint("p", p)]; n != perPartition {
			t.Fatalf("partition p%d: %d completed in the log, want %d", p, n, perPartition)
		}
	}
}

// TestQueueDelayedWakesOtherProcesses: a delayed item enqueued through one
// queue, which then goes away, is promoted at its time by another queue's
// sweeper (told of it by the enqueue's notification; sweeps and polls are an
// hour apart), whose parked long-poll gets it then.
func TestQueueDelayedWakesOtherProcesses(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	clock := leasetest.NewManualClock(time.Time{})
	cfg := postgres.QueueConfig{PollInterval: time.Hour, SweepInterval: time.Hour}
	a := openQueue(t, url, clock, cfg)
	b := openQueue(t, url, clock, cfg)
	waitListening(t, b)
	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := b.Lease(bg, "on-b", 2*time.Hour)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitFor(t, "the waiter on b", func() bool { return b.Waiters() == 1 })
	it := qitem("x")
	it.NotBefore = clock.Now().Add(10 * time.Second)
	if _, err := a.Enqueue(bg, it); err != nil {
		t.Fatal(err)
	}
	a.Close()
	select {
	case l := <-got:
		t.Fatalf("leased %v before its time", l)
	case <-time.After(100 * time.Millisecond): // a chance to go wrong, not a synchronisation
	}
	clock.Advance(10 * time.Second)
	select {
	case l := <-got:
		if l == nil || l.Payload.ResourceID != "x" {
			t.Fatalf("the long-poll on b got %v, want x", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the delayed item did not reach the long-poll on b at its time")
	}
}

// TestQueueBacklog: the top partitions by ready items, with their live
// leases, the counts and the oldest ready item's time, as the engine's
// Backlog reports them.
func TestQueueBacklog(t *testing.T) {
	t.Parallel()
	clock := leasetest.NewManualClock(time.Time{})
	q := openQueue(t, pgtest.NewDatabase(t), clock, postgres.QueueConfig{})
	empty, err := q.Backlog(bg, 5)
	if err != nil || empty.PartitionCount != 0 || len(empty.Partitions) != 0 || !empty.OldestReadySince.IsZero() {
		t.Fatalf("backlog of an empty queue %+v, %v", empty, err)
	}
	start := clock.Now()
	for _, pi := range [][2]string{{"a", "a1"}, {"a", "a2"}, {"b", "b1"}, {"c", "c1"}, {"c", "c2"}, {"c", "c3"}} {
		it := qitem(pi[1])
		it.PartitionKey = pi[0]
		if _, err := q.Enqueue(bg, it); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Second)
	}
	later := qitem("d1")
	later.PartitionKey, later.NotBefore = "d", clock.Now().Add(time.Hour)
	if _, err := q.Enqueue(bg, later); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Lease(bg, "w", 0); err != nil { // a1
		t.Fatal(err)
	}
	for _, tc := range []struct {
		top  int
		want []resourcelease.PartitionBacklog
	}{
		{0, []resourcelease.PartitionBacklog{}},
		{2, []resourcelease.PartitionBacklog{{PartitionKey: "c", Ready: 3}, {PartitionKey: "a", Ready: 1, Leased: 1}}},
		{9, []resourcelease.PartitionBacklog{{PartitionKey: "c", Ready: 3}, {PartitionKey: "a", Ready: 1, Leased: 1}, {PartitionKey: "b", Ready: 1}}},
	} {
		b, err := q.Backlog(bg, tc.top)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(b.Partitions) != fmt.Sprint(tc.want) || b.PartitionCount != 3 || b.Ready != 5 || b.Delayed != 1 ||
			!b.OldestReadySince.Equal(start.Add(time.Second)) {
			t.Fatalf("Backlog(%d) = %+v; want partitions %v of 3, 5 ready, 1 delayed, oldest ready since %v", tc.top, b, tc.want, start.Add(time.Second))
		}
	}
}

// TestQueuePartitionLeaseAfterDelay: with partition rules, a lease right
// after an item's delay passed gets it, with no sweep in between (the lease
// promotes it, and looks again once the promotion committed).
func TestQueuePartitionLeaseAfterDelay(t *testing.T) {
	t.Parallel()
	for _, cfg := range []postgres.QueueConfig{
		{MaxActivePerPartition: 1, SweepInterval: time.Hour},
		{Fairness: resourcelease.FairnessPartitions, SweepInterval: time.Hour},
	} {
		clock := leasetest.NewManualClock(time.Time{})
		q := openQueue(t, pgtest.NewDatabase(t), clock, cfg)
		it := qitem("x")
		it.NotBefore = clock.Now().Add(5 * time.Second)
		if _, err := q.Enqueue(bg, it); err != nil {
			t.Fatal(err)
		}
		if l, err := q.Lease(bg, "w", 0); err != nil || l != nil {
			t.Fatalf("%+v: lease before the time = %v, %v", cfg, l, err)
		}
		clock.Advance(5 * time.Second)
		if l, err := q.Lease(bg, "w", 0); err != nil || l == nil || l.Payload.ResourceID != "x" {
			t.Fatalf("%+v: lease at the time = %v, %v; want x", cfg, l, err)
		}
	}
}

// TestQueueDelayedCounts: the changes a commit reports count a delayed item
// apart (the Dispatcher's backpressure leaves it out), and a restore refuses
// a time no store can hold.
func TestQueueDelayedCounts(t *testing.T) {
	t.Parallel()
	clock := leasetest.NewManualClock(time.Time{})
	var mu sync.Mutex
	var changes []resourcelease.Change
	q := openQueue(t, pgtest.NewDatabase(t), clock, postgres.QueueConfig{OnCommit: func(cs []postgres.Committed) {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range cs {
			changes = append(changes, c.Change)
		}
	}})
	later := qitem("x")
	later.NotBefore = clock.Now().Add(time.Minute)
	if _, err := q.Enqueue(bg, later); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(bg, qitem("y")); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := fmt.Sprint(len(changes))
	if len(changes) == 2 {
		got = fmt.Sprintf("%d/%d %d/%d", changes[0].Pending, changes[0].Delayed, changes[1].Pending, changes[1].Delayed)
	}
	mu.Unlock()
	if got != "1/1 2/1" {
		t.Fatalf("pending/delayed after each enqueue: %s, want 1/1 2/1", got)
	}
	far := resourcelease.PendingItem{Payload: qitem("z"), Attempt: 1, SequenceID: 99, ReadyAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}
	if _, err := q.Restore(bg, []resourcelease.PendingItem{far}); resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
		t.Fatalf("restore of an item ready in the year 3000: %v, want invalid-argument", err)
	}
}

// TestQueuePartitionsInCallerTx: a change made in a caller's own
// transaction (as EnqueueTx and CompleteTx make them) brings its
// partition's row up to date before the caller commits, so a strict
// partition moves on at that commit.
func TestQueuePartitionsInCallerTx(t *testing.T) {
	t.Parallel()
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{MaxActivePerPartition: 1})
	for _, id := range []string{"a1", "a2"} {
		it := qitem(id)
		it.PartitionKey = "a"
		if _, err := q.Enqueue(bg, it); err != nil {
			t.Fatal(err)
		}
	}
	l, err := q.Lease(bg, "w", 0)
	if err != nil || l == nil || l.Payload.ResourceID != "a1" {
		t.Fatalf("lease = %v, %v; want a1", l, err)
	}
	tx, err := q.Store().Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(bg)
	// The caller's transaction settles a1 (what CompleteTx writes to the
	// items table), then the partition's row is recomputed in it.
	if _, err := tx.Exec(bg, `DELETE FROM leasemesh.items WHERE sequence_id = $1`, l.SequenceID); err != nil {
		t.Fatal(err)
	}
	leasable, err := q.TouchPartitionTx(bg, tx, "a")
	if err != nil || !leasable {
		t.Fatalf("TouchPartitionTx = %v, %v; want the partition leasable", leasable, err)
	}
	if err := tx.Commit(bg); err != nil {
		t.Fatal(err)
	}
	if l, err := q.Lease(bg, "w", 0); err != nil || l == nil || l.Payload.ResourceID != "a2" {
		t.Fatalf("lease after the caller's commit = %v, %v; want a2", l, err)
	}
}

// TestQueueDeadLetterBoundLowered: a queue opened with a lower
// MaxDeadLetters than the dead letters it finds purges the oldest at its
// next sweep, each with its event.
func TestQueueDeadLetterBoundLowered(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	first := openQueue(t, url, nil, postgres.QueueConfig{})
	for _, id := range []string{"x", "y", "z"} {
		if _, err := first.Enqueue(bg, qitem(id)); err != nil {
			t.Fatal(err)
		}
		l, err := first.Lease(bg, "w", 0)
		if err != nil || l == nil {
			t.Fatalf("lease: %v, %v", l, err)
		}
		if err := first.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{DeadLetter: true}); err != nil {
			t.Fatal(err)
		}
	}
	first.Close()
	q := openQueue(t, url, nil, postgres.QueueConfig{MaxDeadLetters: 1, SweepInterval: time.Hour})
	if _, err := q.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	dl, err := q.DeadLetters(bg, 0)
	if err != nil || len(dl) != 1 || dl[0].Payload.ResourceID != "z" {
		t.Fatalf("dead letters after the sweep %+v, %v; want z alone", dl, err)
	}
	var purged []string
	for _, ev := range readAll(t, q) {
		if ev.EventType == resourcelease.EventDeadLetterPurged {
			if ev.Metadata[resourcelease.MetaPurgeReason] != resourcelease.PurgeReasonMaxDeadLetters {
				t.Fatalf("purge event %+v, want reason %s", ev, resourcelease.PurgeReasonMaxDeadLetters)
			}
			purged = append(purged, ev.Payload.ResourceID)
		}
	}
	if fmt.Sprint(purged) != "[x y]" {
		t.Fatalf("purged %v, want [x y]", purged)
	}
	if st, err := q.Stats(bg); err != nil || st.DeadLetterCount != 1 {
		t.Fatalf("stats %+v, %v", st, err)
	}
}
