package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
)

// TestPromoteRechecksTheDelay: a promotion that waited for a delayed row
// another transaction held does not make it ready when that transaction
// left it delayed again, later (an item leased and failed once more while a
// sweep's promotion waited): the recheck of the newest version tests its
// ready time too, not only its state. Without that, an item failed with a
// backoff was leasable before its delay had passed, under load.
func TestPromoteRechecksTheDelay(t *testing.T) {
	t.Parallel()
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{SweepInterval: time.Hour})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := q.Enqueue(ctx, benchItem(1))
	if err != nil {
		t.Fatal(err)
	}
	pool := q.Store().Pool()
	if _, err := pool.Exec(ctx, `UPDATE leasemesh.items SET state = 'scheduled', not_before = now() - interval '1 second'
		WHERE sequence_id = $1`, res.SequenceID); err != nil {
		t.Fatal(err)
	}
	promoter, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Released after the holder has rolled back (deferred calls run last
	// first), so that a failed test does not give back a connection whose
	// query still waits.
	defer promoter.Release()
	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback(ctx) //nolint:errcheck // committed below
	if _, err := holder.Exec(ctx, `UPDATE leasemesh.items SET not_before = now() + interval '1 hour' WHERE sequence_id = $1`, res.SequenceID); err != nil {
		t.Fatal(err)
	}
	pid, holderPID := promoter.Conn().PgConn().PID(), holder.Conn().PgConn().PID()
	type result struct {
		promoted int64
		err      error
	}
	done := make(chan result, 1) // buffered: the goroutine never blocks on a failed test
	go func() {
		tag, err := promoter.Exec(ctx, q.PromoteSQL(), nil, 10000)
		done <- result{tag.RowsAffected(), err}
	}()
	// The promotion read the row as due, and waits for the holder's lock.
	waitFor(t, "the promotion to wait for the held row", func() bool {
		var waiting bool
		if err := pool.QueryRow(ctx, `SELECT $2::int4 = ANY(pg_blocking_pids($1::int4))`, int32(pid), int32(holderPID)).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	if err := holder.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.promoted != 0 {
		t.Fatalf("%d rows promoted: an item delayed an hour again was made ready", r.promoted)
	}
	var state string
	if err := pool.QueryRow(ctx, `SELECT state FROM leasemesh.items WHERE sequence_id = $1`, res.SequenceID).Scan(&state); err != nil {
		t.Fatal(err)
	}
	if state != "scheduled" {
		t.Fatalf("state %s, want scheduled", state)
	}
}
