package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
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
	if _, err := q.EnqueueTx(bg, tx, qitem("o-1")); err != nil {
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
	res, err := q.EnqueueTx(bg, tx, it)
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

	// A delayed item is refused, not enqueued ready.
	tx, _ = s.Pool().Begin(bg)
	defer tx.Rollback(bg)
	it = qitem("later")
	it.NotBefore = time.Now().Add(time.Hour)
	if _, err := q.EnqueueTx(bg, tx, it); resourcelease.AsError(err).Status != resourcelease.StatusUnimplemented {
		t.Fatalf("delayed EnqueueTx: %v, want unimplemented", err)
	}
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
		if err := q.CompleteTx(bg, tx, l.OwnershipToken); err != nil {
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
		err := pgx.BeginFunc(bg, s.Pool(), func(tx pgx.Tx) error { return q.CompleteTx(bg, tx, tok) })
		if !errors.Is(err, resourcelease.ErrUnknownToken) {
			t.Fatalf("CompleteTx(%v) = %v, want unknown token", tok, err)
		}
	}
	// An expired lease is refused too.
	l2, _ := q.Lease(bg, "w", 0)
	if _, err := s.Pool().Exec(bg, `UPDATE leasemesh.items SET lease_expires_at = now() - interval '1 second' WHERE sequence_id = $1`, l2.SequenceID); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(bg, s.Pool(), func(tx pgx.Tx) error { return q.CompleteTx(context.Background(), tx, l2.OwnershipToken) })
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
