package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// checkGapFree fails t unless the log is numbered 1..n with no gap.
func checkGapFree(t *testing.T, q *postgres.Queue) []resourcelease.Event {
	t.Helper()
	evs := readAll(t, q)
	for i, e := range evs {
		if e.SequenceNumber != int64(i+1) {
			t.Fatalf("event %d has sequence %d: the log has a gap", i, e.SequenceNumber)
		}
	}
	if last := q.LastSequence(); last != int64(len(evs)) {
		t.Fatalf("LastSequence %d, but %d events", last, len(evs))
	}
	return evs
}

// enqueueTx enqueues item in tx through a QueueTx, as its only mutation.
func enqueueTx(ctx context.Context, q *postgres.Queue, tx pgx.Tx, item resourcelease.Item) (resourcelease.EnqueueResult, error) {
	qt, err := q.Tx(ctx, tx)
	if err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	if err := qt.Enqueue(ctx, item); err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	res, err := qt.Finish(ctx)
	if err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	return res[0], nil
}

// completeTx completes tok in tx through a QueueTx, as its only mutation.
func completeTx(ctx context.Context, q *postgres.Queue, tx pgx.Tx, tok resourcelease.OwnershipToken) error {
	qt, err := q.Tx(ctx, tx)
	if err != nil {
		return err
	}
	if err := qt.Complete(ctx, tok); err != nil {
		return err
	}
	_, err = qt.Finish(ctx)
	return err
}

// userTable is the caller's own data, written in the same transactions.
func userTable(t *testing.T, s *postgres.Store) {
	t.Helper()
	if _, err := s.Pool().Exec(bg, `CREATE TABLE public.orders (id text PRIMARY KEY, state text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
}

func TestQueueEnqueueTx(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	q := openQueue(t, url, nil, postgres.QueueConfig{PollInterval: time.Hour})
	other := openQueue(t, url, nil, postgres.QueueConfig{PollInterval: time.Hour})
	waitListening(t, other)
	s := q.Store()
	userTable(t, s)

	// Rollback: neither the order nor the item nor an event.
	tx, err := s.Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(bg, `INSERT INTO public.orders VALUES ('o-1', 'new')`); err != nil {
		t.Fatal(err)
	}
	if _, err := enqueueTx(bg, q, tx, qitem("o-1")); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	if st, _ := q.Stats(bg); st.PendingCount != 0 {
		t.Fatalf("after a rollback the queue holds %d items", st.PendingCount)
	}
	if n := len(checkGapFree(t, q)); n != 0 {
		t.Fatalf("after a rollback the log has %d events", n)
	}

	// A long-poll on another queue of the mesh is woken by the commit.
	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := other.Lease(bg, "w", 30*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitFor(t, "the waiter", func() bool { return other.Waiters() == 1 })

	// Commit: both, visible and leasable.
	tx, err = s.Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(bg, `INSERT INTO public.orders VALUES ('o-2', 'new')`); err != nil {
		t.Fatal(err)
	}
	it := qitem("o-2")
	it.RequestID = "order-o-2"
	res, err := enqueueTx(bg, q, tx, it)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(bg); err != nil {
		t.Fatal(err)
	}
	var l *resourcelease.Lease
	select {
	case l = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the commit of an EnqueueTx did not wake a long-poll elsewhere")
	}
	if l == nil || l.Payload.ResourceID != "o-2" || l.SequenceID != res.SequenceID {
		t.Fatalf("leased %+v, want o-2 with sequence %d", l, res.SequenceID)
	}

	// Dedupe holds across the two paths.
	again, err := q.Enqueue(bg, it)
	if err != nil || !again.Duplicate || again.SequenceID != res.SequenceID {
		t.Fatalf("a retry of the request = %+v, %v; want a duplicate of %d", again, err, res.SequenceID)
	}
	evs := checkGapFree(t, q)
	if len(evs) != 2 || evs[0].EventType != resourcelease.EventEnqueue || evs[1].EventType != resourcelease.EventLeaseGranted {
		t.Fatalf("log = %+v, want Enqueue, LeaseGranted", evs)
	}
}

// TestQueueTxDelayed: an item a QueueTx enqueues with a NotBefore ahead is
// delayed as Queue.Enqueue delays it: counted apart, echoed, not leasable
// before its time, leasable after; DelayedCapacity bounds it.
func TestQueueTxDelayed(t *testing.T) {
	t.Parallel()
	clock := leasetest.NewManualClock(time.Time{})
	q := openQueue(t, pgtest.NewDatabase(t), clock, postgres.QueueConfig{DelayedCapacity: 1, SweepInterval: time.Hour})
	s := q.Store()
	enqueue := func(id string, delay time.Duration) (resourcelease.EnqueueResult, error) {
		tx, err := s.Pool().Begin(bg)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(bg)
		it := qitem(id)
		it.NotBefore = clock.Now().Add(delay)
		res, err := enqueueTx(bg, q, tx, it)
		if err == nil {
			err = tx.Commit(bg)
		}
		return res, err
	}
	res, err := enqueue("later", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.Now().Add(time.Minute); !res.NotBefore.Equal(want) {
		t.Fatalf("notBefore echoed %v, want %v", res.NotBefore, want)
	}
	if _, err := enqueue("later-still", time.Hour); resourcelease.CodeOf(err) != resourcelease.CodeQueueFull {
		t.Fatalf("a second delayed item past DelayedCapacity 1: %v, want queue_full", err)
	}
	if _, err := enqueue("now", 0); err != nil {
		t.Fatalf("a ready item is not bounded by DelayedCapacity: %v", err)
	}
	st, err := q.Stats(bg)
	if err != nil || st.DelayedCount != 1 || st.PendingCount != 2 {
		t.Fatalf("stats = %+v, %v; want 2 pending, 1 of them delayed", st, err)
	}
	if l, err := q.Lease(bg, "w", 0); err != nil || l == nil || l.Payload.ResourceID != "now" {
		t.Fatalf("lease = %v, %v; want the ready item", l, err)
	}
	if l, err := q.Lease(bg, "w", 0); err != nil || l != nil {
		t.Fatalf("leased %v (%v) before its time", l, err)
	}
	clock.Advance(2 * time.Minute)
	if _, err := q.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	l, err := q.Lease(bg, "w", 0)
	if err != nil || l == nil || l.Payload.ResourceID != "later" || !l.Payload.NotBefore.Equal(res.NotBefore) {
		t.Fatalf("after its time: lease = %v, %v; want the delayed item with its notBefore", l, err)
	}
	checkGapFree(t, q)
}

func TestQueueCompleteTx(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	q := openQueue(t, url, nil, postgres.QueueConfig{})
	s := q.Store()
	userTable(t, s)
	for _, id := range []string{"a", "b"} {
		if _, err := q.Enqueue(bg, qitem(id)); err != nil {
			t.Fatal(err)
		}
	}
	l, err := q.Lease(bg, "w", 0)
	if err != nil || l == nil {
		t.Fatal(l, err)
	}
	handle := func(commit bool) error {
		tx, err := s.Pool().Begin(bg)
		if err != nil {
			return err
		}
		defer tx.Rollback(bg)
		if _, err := tx.Exec(bg, `INSERT INTO public.orders VALUES ($1, 'done') ON CONFLICT (id) DO UPDATE SET state = 'done'`, l.Payload.ResourceID); err != nil {
			return err
		}
		if err := completeTx(bg, q, tx, l.OwnershipToken); err != nil {
			return err
		}
		if commit {
			return tx.Commit(bg)
		}
		return tx.Rollback(bg)
	}

	// Rolled back: the lease is still live, the order not written.
	if err := handle(false); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Heartbeat(bg, l.OwnershipToken); err != nil {
		t.Fatalf("after a rolled-back CompleteTx the lease must be live: %v", err)
	}
	var n int
	_ = s.Pool().QueryRow(bg, `SELECT count(*) FROM public.orders`).Scan(&n)
	if n != 0 {
		t.Fatalf("rolled-back order written: %d rows", n)
	}
	// Committed: gone, and the order written with it.
	if err := handle(true); err != nil {
		t.Fatal(err)
	}
	var state string
	if err := s.Pool().QueryRow(bg, `SELECT state FROM public.orders WHERE id = $1`, l.Payload.ResourceID).Scan(&state); err != nil || state != "done" {
		t.Fatalf("order = %q, %v", state, err)
	}
	if st, _ := q.Stats(bg); st.ActiveLeaseCount != 0 || st.PendingCount != 1 {
		t.Fatalf("stats after CompleteTx = %+v", st)
	}
	// Fenced: the same token again, a wrong attempt, an unknown item.
	for _, tok := range []resourcelease.OwnershipToken{
		l.OwnershipToken,
		{SequenceID: l.SequenceID, Attempt: 2, LeaseID: l.OwnershipToken.LeaseID},
		{SequenceID: 999, Attempt: 1, LeaseID: l.OwnershipToken.LeaseID},
	} {
		err := pgx.BeginFunc(bg, s.Pool(), func(tx pgx.Tx) error { return completeTx(bg, q, tx, tok) })
		if !errors.Is(err, resourcelease.ErrUnknownToken) {
			t.Fatalf("CompleteTx(%v) = %v, want unknown token", tok, err)
		}
	}
	// An expired lease is refused too.
	l2, _ := q.Lease(bg, "w", 0)
	if _, err := s.Pool().Exec(bg, `UPDATE leasemesh.items SET lease_expires_at = now() - interval '1 second' WHERE sequence_id = $1`, l2.SequenceID); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(bg, s.Pool(), func(tx pgx.Tx) error { return completeTx(context.Background(), q, tx, l2.OwnershipToken) })
	if !errors.Is(err, resourcelease.ErrUnknownToken) {
		t.Fatalf("CompleteTx of an expired lease = %v, want unknown token", err)
	}
	evs := checkGapFree(t, q)
	want := []resourcelease.EventType{resourcelease.EventEnqueue, resourcelease.EventEnqueue, resourcelease.EventLeaseGranted,
		resourcelease.EventHeartbeat, resourcelease.EventCompleted, resourcelease.EventLeaseGranted}
	if len(evs) != len(want) {
		t.Fatalf("log = %+v, want %v", evs, want)
	}
	for i := range want {
		if evs[i].EventType != want[i] {
			t.Fatalf("event %d = %s, want %s", i+1, evs[i].EventType, want[i])
		}
	}
	if evs[4].PeerID != "w" || evs[4].Ownership == nil || *evs[4].Ownership != l.OwnershipToken {
		t.Fatalf("Completed event = %+v", evs[4])
	}
}

// TestQueueTxWallClock: a caller's transaction that began before a lease
// expired must not complete it, and its events are stamped no earlier than
// those committed while it was open (now() would be the transaction's
// start for both).
func TestQueueTxWallClock(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	q := openQueue(t, url, nil, postgres.QueueConfig{SweepInterval: time.Hour, PollInterval: time.Hour})
	s := q.Store()
	if _, err := q.Enqueue(bg, qitem("a")); err != nil {
		t.Fatal(err)
	}
	l, err := q.Lease(bg, "w", 0)
	if err != nil || l == nil {
		t.Fatal(l, err)
	}
	tx, err := s.Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(bg)
	if _, err := tx.Exec(bg, `SELECT 1`); err != nil { // now() is fixed from here
		t.Fatal(err)
	}
	// The lease expires after tx began; another enqueue commits meanwhile.
	if _, err := s.Pool().Exec(bg, `UPDATE leasemesh.items SET lease_expires_at = clock_timestamp() WHERE sequence_id = $1`, l.SequenceID); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(bg, qitem("b")); err != nil {
		t.Fatal(err)
	}
	qt, err := q.Tx(bg, tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := qt.Complete(bg, l.OwnershipToken); !errors.Is(err, resourcelease.ErrUnknownToken) {
		t.Fatalf("Complete of a lease that expired after the transaction began = %v, want unknown token", err)
	}
	if err := qt.Enqueue(bg, qitem("c")); err != nil {
		t.Fatal(err)
	}
	if _, err := qt.Finish(bg); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(bg); err != nil {
		t.Fatal(err)
	}
	evs := checkGapFree(t, q)
	for i := 1; i < len(evs); i++ {
		if evs[i].Timestamp.Before(evs[i-1].Timestamp) {
			t.Fatalf("event %d at %v is earlier than event %d at %v", evs[i].SequenceNumber, evs[i].Timestamp, evs[i-1].SequenceNumber, evs[i-1].Timestamp)
		}
	}
	var enq time.Time
	if err := s.Pool().QueryRow(bg, `SELECT enqueued_at FROM leasemesh.items WHERE resource_id = 'c'`).Scan(&enq); err != nil || enq.Before(evs[len(evs)-2].Timestamp) {
		t.Fatalf("the transaction's item enqueued at %v (%v), before the event committed earlier at %v", enq, err, evs[len(evs)-2].Timestamp)
	}
}

// TestQueueTxNoDeadlockWithHeartbeats: "enqueue the follow-up, complete
// this item" in one transaction while the item is heartbeated. When the
// enqueue took the counter row at once, the heartbeat locked the item and
// waited for the counter row while the completion waited for the item: a
// deadlock (40P01). Every row lock now comes first.
func TestQueueTxNoDeadlockWithHeartbeats(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	q := openQueue(t, url, nil, postgres.QueueConfig{})
	s := q.Store()

	// Deterministic: the heartbeat runs between the enqueue and the
	// completion, and must not wait for the transaction.
	if _, err := q.Enqueue(bg, qitem("job")); err != nil {
		t.Fatal(err)
	}
	l, err := q.Lease(bg, "w", 0)
	if err != nil || l == nil {
		t.Fatal(l, err)
	}
	tx, err := s.Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	qt, err := q.Tx(bg, tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := qt.Enqueue(bg, qitem("follow-up")); err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithTimeout(bg, 5*time.Second)
	_, err = q.Heartbeat(hctx, l.OwnershipToken)
	cancel()
	if err != nil {
		t.Fatalf("a heartbeat between a staged enqueue and the completion: %v", err)
	}
	if err := qt.Complete(bg, l.OwnershipToken); err != nil {
		t.Fatal(err)
	}
	if _, err := qt.Finish(bg); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(bg); err != nil {
		t.Fatal(err)
	}

	// Under load: workers complete-and-follow-up while a heartbeater beats
	// every live lease as fast as it can.
	const workers, rounds = 3, 15
	for i := range workers {
		if _, err := q.Enqueue(bg, qitem(fmt.Sprintf("seed-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	live := map[int64]resourcelease.OwnershipToken{}
	stop := make(chan struct{})
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			toks := make([]resourcelease.OwnershipToken, 0, len(live))
			for _, tok := range live {
				toks = append(toks, tok)
			}
			mu.Unlock()
			if len(toks) == 0 {
				runtime.Gosched()
				continue
			}
			if _, err := q.HeartbeatBatch(bg, toks); err != nil {
				t.Errorf("heartbeat: %v", err)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				l, err := q.Lease(bg, fmt.Sprintf("w%d", w), 10*time.Second)
				if err != nil || l == nil {
					t.Errorf("lease: %v, %v", l, err)
					return
				}
				mu.Lock()
				live[l.SequenceID] = l.OwnershipToken
				mu.Unlock()
				err = pgx.BeginFunc(bg, s.Pool(), func(tx pgx.Tx) error {
					qt, err := q.Tx(bg, tx)
					if err != nil {
						return err
					}
					if err := qt.Enqueue(bg, qitem(fmt.Sprintf("next-%d-%d", w, r))); err != nil {
						return err
					}
					if err := qt.Complete(bg, l.OwnershipToken); err != nil {
						return err
					}
					_, err = qt.Finish(bg)
					return err
				})
				mu.Lock()
				delete(live, l.SequenceID)
				mu.Unlock()
				if err != nil {
					t.Errorf("worker %d round %d: %v", w, r, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-hbDone
	checkGapFree(t, q)
	if st, err := q.Stats(bg); err != nil || st.PendingCount != 1+workers || st.ActiveLeaseCount != 0 {
		t.Fatalf("stats = %+v, %v; want %d pending, none leased", st, err, 1+workers)
	}
}

// TestQueueTxRefusals: the isolation level, the lock order, a second
// Finish.
func TestQueueTxRefusals(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	q := openQueue(t, url, nil, postgres.QueueConfig{})
	s := q.Store()
	for _, iso := range []pgx.TxIsoLevel{pgx.RepeatableRead, pgx.Serializable} {
		tx, err := s.Pool().BeginTx(bg, pgx.TxOptions{IsoLevel: iso})
		if err != nil {
			t.Fatal(err)
		}
		_, err = q.Tx(bg, tx)
		_ = tx.Rollback(bg)
		if e := resourcelease.AsError(err); e == nil || e.Status != resourcelease.StatusFailedPrecondition {
			t.Fatalf("Tx in %s = %v, want failed-precondition", iso, err)
		}
	}
	for _, id := range []string{"a", "b"} {
		if _, err := q.Enqueue(bg, qitem(id)); err != nil {
			t.Fatal(err)
		}
	}
	ls, err := q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 2})
	if err != nil || len(ls) != 2 {
		t.Fatal(ls, err)
	}
	tx, err := s.Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(bg)
	qt, err := q.Tx(bg, tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := qt.Complete(bg, ls[1].OwnershipToken); err != nil {
		t.Fatal(err)
	}
	if err := qt.Complete(bg, ls[0].OwnershipToken); resourcelease.AsError(err).Status != resourcelease.StatusInvalidArgument {
		t.Fatalf("Complete below a locked item = %v, want invalid-argument", err)
	}
	if _, err := qt.Finish(bg); err != nil {
		t.Fatal(err)
	}
	if _, err := qt.Finish(bg); resourcelease.AsError(err).Status != resourcelease.StatusFailedPrecondition {
		t.Fatalf("a second Finish = %v, want failed-precondition", err)
	}
}

// TestQueueTxStrictPartition: with partition rules a QueueTx keeps the
// partitions' rows in step in its own transaction: completing a strict
// partition's head frees its next item, and an item enqueued in a new
// partition is leasable, as soon as tx commits, with no other commit in
// between.
func TestQueueTxStrictPartition(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	q := openQueue(t, url, nil, postgres.QueueConfig{MaxActivePerPartition: 1, SweepInterval: time.Hour, PollInterval: time.Hour})
	s := q.Store()
	for _, id := range []string{"a1", "a2"} {
		it := qitem(id)
		it.PartitionKey = "a"
		if _, err := q.Enqueue(bg, it); err != nil {
			t.Fatal(err)
		}
	}
	head, err := q.Lease(bg, "w", 0)
	if err != nil || head == nil || head.Payload.ResourceID != "a1" {
		t.Fatalf("lease = %v, %v; want a1", head, err)
	}
	if l, err := q.Lease(bg, "w", 0); err != nil || l != nil {
		t.Fatalf("a2 leased while a1 holds the strict partition: %v, %v", l, err)
	}
	tx, err := s.Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(bg)
	qt, err := q.Tx(bg, tx)
	if err != nil {
		t.Fatal(err)
	}
	next := qitem("b1")
	next.PartitionKey = "b"
	if err := qt.Enqueue(bg, next); err != nil {
		t.Fatal(err)
	}
	if err := qt.Complete(bg, head.OwnershipToken); err != nil {
		t.Fatal(err)
	}
	if _, err := qt.Finish(bg); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(bg); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for range 2 {
		l, err := q.Lease(bg, "w", 0)
		if err != nil || l == nil {
			t.Fatalf("after the transaction: lease = %v, %v; want a2 and b1 leasable (have %v)", l, err, got)
		}
		got[l.Payload.ResourceID] = true
	}
	if !got["a2"] || !got["b1"] {
		t.Fatalf("leased %v, want a2 (freed by the completion) and b1 (a new partition)", got)
	}
	checkGapFree(t, q)
}
