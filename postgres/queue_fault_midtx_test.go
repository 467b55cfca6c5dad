package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// blockCounter holds the queue's counter row locked from a transaction of
// its own, so that a write transaction of the queue stops mid-way (it takes
// the counter row in its last statement, after its item rows) until the
// returned function releases it.
func blockCounter(t *testing.T, url string) (release func()) {
	t.Helper()
	conn, err := pgx.Connect(bg, url)
	if err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(bg, `SELECT 1 FROM leasemesh.queue_state FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	done := false
	release = func() {
		if !done {
			done = true
			_ = tx.Rollback(bg)
			_ = conn.Close(bg)
		}
	}
	t.Cleanup(release)
	return release
}

// midTxCalls are the writes a fault can cut in the middle of their
// transaction: each gets a fresh item (or the lease of one) to work on.
var midTxCalls = []struct {
	name string
	// prepare runs before the fault; call is the write the fault cuts; after
	// checks that it left nothing behind and that its retry works.
	prepare func(t *testing.T, q *postgres.Queue) resourcelease.OwnershipToken
	call    func(ctx context.Context, q *postgres.Queue, tok resourcelease.OwnershipToken) error
	after   func(t *testing.T, q *postgres.Queue, tok resourcelease.OwnershipToken)
}{
	{
		name:    "enqueue",
		prepare: func(*testing.T, *postgres.Queue) resourcelease.OwnershipToken { return resourcelease.OwnershipToken{} },
		call: func(ctx context.Context, q *postgres.Queue, _ resourcelease.OwnershipToken) error {
			it := qitem("cut")
			it.RequestID = "req-cut"
			_, err := q.Enqueue(ctx, it)
			return err
		},
		after: func(t *testing.T, q *postgres.Queue, _ resourcelease.OwnershipToken) {
			var n int
			if err := q.Store().Pool().QueryRow(bg, `SELECT count(*) FROM leasemesh.items WHERE resource_id = 'cut'`).Scan(&n); err != nil || n != 0 {
				t.Errorf("the cut enqueue left %d rows (%v)", n, err)
			}
			it := qitem("cut")
			it.RequestID = "req-cut"
			res, err := q.Enqueue(bg, it)
			if err != nil || res.Duplicate {
				t.Errorf("the retry of the cut enqueue: %+v, %v; want a new item", res, err)
			}
		},
	},
	{
		name: "complete",
		prepare: func(t *testing.T, q *postgres.Queue) resourcelease.OwnershipToken {
			if _, err := q.Enqueue(bg, qitem("to-complete")); err != nil {
				t.Fatal(err)
			}
			l, err := q.Lease(bg, "w", 0)
			if err != nil || l == nil {
				t.Fatal(l, err)
			}
			return l.OwnershipToken
		},
		call: func(ctx context.Context, q *postgres.Queue, tok resourcelease.OwnershipToken) error {
			return q.Complete(ctx, tok)
		},
		after: func(t *testing.T, q *postgres.Queue, tok resourcelease.OwnershipToken) {
			// The lease is still live: the cut complete did not happen.
			if _, err := q.Heartbeat(bg, tok); err != nil {
				t.Errorf("heartbeat after the cut complete: %v", err)
			}
			if err := q.Complete(bg, tok); err != nil {
				t.Errorf("the retry of the cut complete: %v", err)
			}
		},
	},
}

// faultCase runs each of midTxCalls with the fault that cut injects once
// the call's transaction waits on the counter row, checking the status
// the call fails with, that nothing acknowledged before is lost, that the
// counts stay true, and that the call's retry works once the fault is gone.
func faultCase(t *testing.T, cfg postgres.Config, want resourcelease.Status, cut func(t *testing.T, q *postgres.Queue)) {
	for _, c := range midTxCalls {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			url := pgtest.NewDatabase(t)
			s := openStore(t, url, cfg)
			q, err := postgres.NewQueue(bg, s, postgres.QueueConfig{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { q.Close() })
			acked := map[int64]bool{}
			for range 3 {
				res, err := q.Enqueue(bg, qitem("acked"))
				if err != nil {
					t.Fatal(err)
				}
				acked[res.SequenceID] = true
			}
			tok := c.prepare(t, q)
			release := blockCounter(t, url)
			errc := make(chan error, 1)
			start := time.Now()
			go func() {
				ctx, cancel := context.WithTimeout(bg, 20*time.Second)
				defer cancel()
				errc <- c.call(ctx, q, tok)
			}()
			waitForLockWait(t, s)
			cut(t, q)
			var callErr error
			select {
			case callErr = <-errc:
			case <-time.After(15 * time.Second):
				t.Fatal("the call did not return after the fault")
			}
			if resourcelease.StatusOf(callErr) != want {
				t.Fatalf("%s cut mid-transaction: %v, want %s", c.name, callErr, want)
			}
			t.Logf("%s failed after %v: %v", c.name, time.Since(start).Round(time.Millisecond), callErr)
			release()
			c.after(t, q, tok)
			delete(acked, tok.SequenceID) // completed on purpose by the retry
			for seq := range acked {
				var n int
				if err := s.Pool().QueryRow(bg, `SELECT count(*) FROM leasemesh.items WHERE sequence_id = $1`, seq).Scan(&n); err != nil || n != 1 {
					t.Errorf("acknowledged item %d: %d rows (%v)", seq, n, err)
				}
			}
			queueCounts(t, s.Pool())
		})
	}
}

// TestQueueBackendTerminatedMidTransaction: the server ends the session of
// a write in the middle of its transaction (pg_terminate_backend, as an
// operator or a failover does): the call is unavailable, nothing of it is
// committed, nothing acknowledged before is lost, and its retry works.
func TestQueueBackendTerminatedMidTransaction(t *testing.T) {
	t.Parallel()
	faultCase(t, postgres.Config{}, resourcelease.StatusUnavailable, func(t *testing.T, q *postgres.Queue) {
		var n int
		err := q.Store().Pool().QueryRow(bg, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock') AS killed`).Scan(&n)
		if err != nil || n != 1 {
			t.Fatalf("terminated %d sessions (%v), want the one waiting", n, err)
		}
	})
}

// TestQueueStatementTimeout: a write stuck behind a lock past the store's
// statement timeout is cancelled by the server: deadline-exceeded, nothing
// of it committed, and its retry works once the lock is gone.
func TestQueueStatementTimeout(t *testing.T) {
	t.Parallel()
	faultCase(t, postgres.Config{StatementTimeout: 300 * time.Millisecond}, resourcelease.StatusDeadlineExceeded, func(*testing.T, *postgres.Queue) {})
}
