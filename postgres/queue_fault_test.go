package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// queueOps are the queue's calls, each on its own item or token, so a fault
// test can check every one of them.
func queueOps(tok resourcelease.OwnershipToken) []struct {
	name string
	call func(ctx context.Context, q *postgres.Queue) error
} {
	return []struct {
		name string
		call func(ctx context.Context, q *postgres.Queue) error
	}{
		{"Enqueue", func(ctx context.Context, q *postgres.Queue) error {
			_, err := q.Enqueue(ctx, qitem("down"))
			return err
		}},
		{"EnqueueBatch", func(ctx context.Context, q *postgres.Queue) error {
			_, err := q.EnqueueBatch(ctx, []resourcelease.Item{qitem("down-1"), qitem("down-2")})
			return err
		}},
		{"Lease", func(ctx context.Context, q *postgres.Queue) error { _, err := q.Lease(ctx, "w", 0); return err }},
		{"LeaseBatch", func(ctx context.Context, q *postgres.Queue) error {
			_, err := q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{MaxItems: 4})
			return err
		}},
		{"Heartbeat", func(ctx context.Context, q *postgres.Queue) error { _, err := q.Heartbeat(ctx, tok); return err }},
		{"Fail", func(ctx context.Context, q *postgres.Queue) error {
			t := tok
			t.Attempt++ // a stale token: must not end the real lease once the server is back
			return q.Fail(ctx, t, resourcelease.FailOptions{})
		}},
		{"Stats", func(ctx context.Context, q *postgres.Queue) error { _, err := q.Stats(ctx); return err }},
		{"DrainN", func(ctx context.Context, q *postgres.Queue) error { _, _, err := q.DrainN(ctx, 1, 0); return err }},
		{"Restore", func(ctx context.Context, q *postgres.Queue) error {
			_, err := q.Restore(ctx, []resourcelease.PendingItem{{Payload: qitem("r"), SequenceID: 1_000_000, Attempt: 1}})
			return err
		}},
		{"DeadLetters", func(ctx context.Context, q *postgres.Queue) error { _, err := q.DeadLetters(ctx, 0); return err }},
		{"Redrive", func(ctx context.Context, q *postgres.Queue) error {
			_, err := q.Redrive(ctx, resourcelease.DeadLetterSelection{All: true})
			return err
		}},
		{"ReadEvents", func(ctx context.Context, q *postgres.Queue) error { _, err := q.ReadEvents(ctx, 0, 10); return err }},
		{"LastSequence", func(ctx context.Context, q *postgres.Queue) error { _, err := q.LastSequenceContext(ctx); return err }},
		{"Sweep", func(ctx context.Context, q *postgres.Queue) error { _, err := q.Sweep(ctx); return err }},
	}
}

// TestQueueServerDown: with the server crashed every call of the queue
// answers unavailable at once, well inside its deadline; once the server
// is back the queue reconnects by itself (its pool and its LISTEN
// connection), nothing acknowledged is lost, and a lease held across the
// crash is still honoured.
func TestQueueServerDown(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	url := srv.NewDatabase(t)
	// The waiter's queue never polls: only its listener can wake it.
	q := openQueue(t, url, nil, postgres.QueueConfig{PollInterval: time.Hour})
	p := openQueue(t, url, nil, postgres.QueueConfig{})
	waitListening(t, q)
	acked := map[int64]bool{}
	for i := range 5 {
		res, err := p.Enqueue(bg, qitem(fmt.Sprint("acked-", i)))
		if err != nil {
			t.Fatal(err)
		}
		acked[res.SequenceID] = true
	}
	held, err := q.Lease(bg, "holder", 0)
	if err != nil || held == nil {
		t.Fatal(held, err)
	}
	if _, _, err := q.DrainN(bg, 0, 0); err != nil { // the queue is empty but for the lease
		t.Fatal(err)
	}
	waiter := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := q.Lease(bg, "waiter", time.Minute)
		if err != nil {
			t.Errorf("the parked long-poll: %v", err)
		}
		waiter <- l
	}()
	waitFor(t, "the long-poll to park", func() bool { return q.Waiters() == 1 })

	if err := srv.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	for _, op := range queueOps(held.OwnershipToken) {
		for round := range 2 { // the first may meet a dead pooled connection, the next a refused connect
			ctx, cancel := context.WithTimeout(bg, 10*time.Second)
			start := time.Now()
			err := op.call(ctx, q)
			cancel()
			if resourcelease.StatusOf(err) != resourcelease.StatusUnavailable {
				t.Errorf("%s #%d with the server down: %v, want unavailable", op.name, round, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%s #%d with the server down took %v, want prompt", op.name, round, d)
			}
		}
	}
	if n := q.LastSequence(); n == 0 {
		t.Error("LastSequence with the server down forgot the last number seen")
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the listener to reconnect", q.ListenConnected)
	// The parked long-poll (it kept waiting through the outage) is woken by
	// an enqueue on the other queue, through the new LISTEN connection.
	if _, err := p.Enqueue(bg, qitem("after")); err != nil {
		t.Fatalf("the first enqueue after the restart: %v", err)
	}
	select {
	case l := <-waiter:
		if l == nil || l.Payload.ResourceID != "after" {
			t.Fatalf("the parked long-poll got %+v", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the parked long-poll was not woken after the restart")
	}
	// The lease held across the crash is honoured.
	if _, err := q.Heartbeat(bg, held.OwnershipToken); err != nil {
		t.Fatalf("heartbeat of the lease held across the crash: %v", err)
	}
	// Every call works again.
	for _, op := range queueOps(held.OwnershipToken) {
		err := op.call(bg, q)
		if err != nil && !errors.Is(err, resourcelease.ErrUnknownToken) {
			t.Errorf("%s after the restart: %v", op.name, err)
		}
	}
	// Nothing acknowledged is lost: every acknowledged enqueue has its event.
	enqueued := map[int64]bool{}
	for _, e := range readAll(t, p) {
		if e.EventType == resourcelease.EventEnqueue {
			var seq int64
			fmt.Sscan(e.Metadata[resourcelease.MetaSequenceID], &seq)
			enqueued[seq] = true
		}
	}
	for seq := range acked {
		if !enqueued[seq] {
			t.Errorf("acknowledged enqueue %d is not in the log", seq)
		}
	}
	queueCounts(t, p.Store().Pool())
}

// TestQueueFrozenServer: a server that answers nothing holds each call of
// the queue only until its deadline, and the queue works again once the
// server does.
func TestQueueFrozenServer(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	q := openQueue(t, srv.NewDatabase(t), nil, postgres.QueueConfig{})
	if _, err := q.Enqueue(bg, qitem("a")); err != nil {
		t.Fatal(err)
	}
	held, err := q.Lease(bg, "w", 0)
	if err != nil || held == nil {
		t.Fatal(held, err)
	}
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	defer srv.Thaw() //nolint:errcheck // the cleanup's Close thaws it too
	for _, op := range queueOps(held.OwnershipToken) {
		ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
		start := time.Now()
		err := op.call(ctx, q)
		cancel()
		if resourcelease.StatusOf(err) != resourcelease.StatusDeadlineExceeded {
			t.Errorf("%s on a frozen server: %v, want deadline-exceeded", op.name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s on a frozen server returned after %v, want at its 200ms deadline", op.name, d)
		}
	}
	// A long-poll's deadline ends its wait with nothing, as on a live server.
	ctx, cancel := context.WithTimeout(bg, 200*time.Millisecond)
	l, err := q.Lease(ctx, "w", time.Hour)
	cancel()
	if l != nil || (err != nil && resourcelease.StatusOf(err) != resourcelease.StatusDeadlineExceeded) {
		t.Errorf("long-poll on a frozen server: %+v, %v", l, err)
	}
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	for range 3 { // deadlines broke the connections they cut; the pool replaces them
		if _, err = q.Heartbeat(bg, held.OwnershipToken); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("heartbeat after the thaw: %v", err)
	}
	if err := q.Complete(bg, held.OwnershipToken); err != nil {
		t.Fatalf("complete after the thaw: %v", err)
	}
}
