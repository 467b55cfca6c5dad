package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// TestMaxDeadLettersCountedUnderLock: a transaction that dead-letters
// decides the MaxDeadLetters excess on the count it reads under the counter
// row's lock, not on the one it read at BEGIN: here another process
// dead-letters and commits after this transaction began, and the bound
// still holds when both have committed (no sweep tidies up after them).
func TestMaxDeadLettersCountedUnderLock(t *testing.T) {
	url := pgtest.NewDatabase(t)
	var block atomic.Bool
	inHook, release := make(chan struct{}), make(chan struct{})
	hooked := postgres.QueueConfig{MaxDeadLetters: 1, SweepInterval: time.Hour,
		CommitHook: func(ctx context.Context, _ pgx.Tx, _ []resourcelease.Event) error {
			if block.CompareAndSwap(true, false) {
				close(inHook)
				<-release
			}
			return nil
		}}
	q1 := openQueue(t, url, nil, hooked)
	q2 := openQueue(t, url, nil, postgres.QueueConfig{MaxDeadLetters: 1, SweepInterval: time.Hour})
	for _, id := range []string{"x1", "x2"} {
		if _, err := q1.Enqueue(bg, qitem(id)); err != nil {
			t.Fatal(err)
		}
	}
	l1, l2 := leaseNow(t, q1), leaseNow(t, q2)
	block.Store(true)
	done1, done2 := make(chan error, 1), make(chan error, 1)
	// q1 dead-letters x1 and stops in its CommitHook, holding the counter
	// row, its dead letter not yet committed.
	go func() { done1 <- q1.Fail(bg, l1.OwnershipToken, resourcelease.FailOptions{DeadLetter: true}) }()
	<-inHook
	// q2 begins now (reading no dead letter) and dead-letters x2: it waits
	// for the counter row.
	go func() { done2 <- q2.Fail(bg, l2.OwnershipToken, resourcelease.FailOptions{DeadLetter: true}) }()
	pool, sch := q1.Store().Pool(), q1.Store().Schema()
	for waiting := false; !waiting; {
		select {
		case err := <-done2:
			t.Fatalf("q2's Fail returned %v before q1 committed", err)
		default:
		}
		if err := pool.QueryRow(bg, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	if err := <-done1; err != nil {
		t.Fatal(err)
	}
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	var dead, counted int
	if err := pool.QueryRow(bg, `SELECT (SELECT count(*) FROM `+sch+`.items WHERE state = 'dead'), dead_letter_count FROM `+sch+`.queue_state`).Scan(&dead, &counted); err != nil {
		t.Fatal(err)
	}
	if dead != 1 || counted != 1 {
		t.Errorf("%d dead letters (counter row %d), want 1 (MaxDeadLetters)", dead, counted)
	}
}

// TestMaxDeadLettersWithTwoInFlight: with two transactions in flight, one
// that dead-letters near MaxDeadLetters takes the counter row before its
// final statement; it takes the writer's commit order (commitMu) first, so
// it and the other transaction in flight never wait for each other crosswise
// (a cycle of a mutex and a row lock that PostgreSQL cannot detect: the
// queue would hang for good).
func TestMaxDeadLettersWithTwoInFlight(t *testing.T) {
	t.Parallel()
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{InFlight: 2, MaxDeadLetters: 3, Capacity: -1, SweepInterval: time.Hour})
	const n = 120
	for i := range n {
		if _, err := q.Enqueue(bg, qitem(fmt.Sprint("d", i))); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(bg, 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			for {
				l, err := q.Lease(ctx, "w", 0)
				if err != nil || l == nil {
					errs <- err
					return
				}
				opts := resourcelease.FailOptions{DeadLetter: l.SequenceID%2 == 0}
				if opts.DeadLetter {
					err = q.Fail(ctx, l.OwnershipToken, opts)
				} else {
					err = q.Complete(ctx, l.OwnershipToken)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a worker failed (a hang ends at the deadline): %v", err)
		}
	}
	st, err := q.Stats(bg)
	if err != nil || st.PendingCount != 0 || st.ActiveLeaseCount != 0 || st.DeadLetterCount != 3 {
		t.Fatalf("stats = %+v, %v; want everything settled and 3 dead letters kept", st, err)
	}
}
