package replication_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/replication/replicatortest"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// TestSQLiteStallGivesUp: a writer stalled on a storage failure gives up —
// the replicator is poisoned, and stays so after the fault clears — once
// more changes wait than it holds, and when it is closed while stalled;
// either way nothing recorded after it gave up reaches the disk (the batch
// it was retrying may still land: its callers were told unavailable, an
// unknown outcome).
func TestSQLiteStallGivesUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		// giveUp makes the stalled r give up while the lock is held.
		giveUp func(t *testing.T, r *replication.SQLiteReplicator)
		// maxOnDisk is how many events may be on disk once r is closed
		// after the lock went: 2 when the batch retried may have landed.
		maxOnDisk int
	}{
		{"too many changes wait", func(t *testing.T, r *replication.SQLiteReplicator) {
			var last error
			for i := range replication.MaxStalledEntries {
				last = wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+3), i+2)))
			}
			if !errors.Is(last, resourcelease.ErrStorageUnavailable) {
				t.Fatalf("the Record past the bound: %v", last)
			}
			if !replication.Poisoned(r) {
				t.Fatal("the replicator is not poisoned past the bound")
			}
		}, 2},
		{"too many bytes wait", func(t *testing.T, r *replication.SQLiteReplicator) {
			var last error
			body := make([]byte, 1<<20)
			for i := range 64 {
				c := replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+3), i+2)
				c.Item.Payload.Body = body
				last = wait(r.Record(c))
			}
			if !errors.Is(last, resourcelease.ErrStorageUnavailable) {
				t.Fatalf("the Record past the bound: %v", last)
			}
			if !replication.Poisoned(r) {
				t.Fatal("the replicator is not poisoned past 64 MiB waiting")
			}
		}, 2},
		{"closed while stalled", func(t *testing.T, r *replication.SQLiteReplicator) {
			start := time.Now()
			if err := r.Close(); !errors.Is(err, resourcelease.ErrStorageUnavailable) {
				t.Fatalf("Close while stalled = %v, want the storage error", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("Close while stalled took %v", took)
			}
			if !errors.Is(r.Err(), resourcelease.ErrStorageUnavailable) {
				t.Fatalf("Err() after giving up = %v, want the storage error", r.Err())
			}
		}, 1}, // the lock was held through Close: the retried batch cannot land
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "replication.db")
			db := openDB(t, path, sqlitedb.Config{BusyTimeoutMs: 50})
			other := openDB(t, path, sqlitedb.Config{BusyTimeoutMs: 50})
			r, err := replication.NewSQLiteReplicator(context.Background(), db, replication.SQLiteConfig{Path: path, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 1, 0))); err != nil {
				t.Fatal(err)
			}
			tx, err := other.Begin() // _txlock=immediate: holds the write lock
			if err != nil {
				t.Fatal(err)
			}
			if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 2, 1))); !errors.Is(err, resourcelease.ErrStorageUnavailable) {
				t.Fatalf("Record behind the lock: %v", err)
			}
			if replication.Poisoned(r) {
				t.Fatal("poisoned by a lock another connection holds; want stalled")
			}
			tc.giveUp(t, r)
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			// The fault is gone, but the replicator gave up: Close waits for
			// the writer, which must not commit what it held.
			if err := r.Close(); !errors.Is(err, resourcelease.ErrStorageUnavailable) {
				t.Fatalf("Close after giving up = %v, want the storage error", err)
			}
			if n := r.LastSequence(); n > int64(tc.maxOnDisk) {
				t.Errorf("LastSequence = %d after giving up, want at most %d", n, tc.maxOnDisk)
			}
			var n int
			if err := other.QueryRow(`SELECT count(*) FROM replication_events`).Scan(&n); err != nil || n > tc.maxOnDisk || n < 1 {
				t.Errorf("%d events on disk (%v), want 1 to %d", n, err, tc.maxOnDisk)
			}
		})
	}
}

// blockingSink is a synchronous sink that, when armed, holds the writer in
// ApplyEvent until released.
type blockingSink struct {
	armed   chan struct{} // closed: the next ApplyEvent blocks
	entered chan struct{} // closed when it blocks
	release chan struct{}
}

func (s *blockingSink) ApplyEvent(ctx context.Context, ev resourcelease.Event) error {
	select {
	case <-s.armed:
	default:
		return nil
	}
	select {
	case <-s.entered:
	default:
		close(s.entered)
		<-s.release
	}
	return nil
}

// TestSQLiteStallAnswersTakenBatches: when the writer stalls on a batch, the
// batches it already took behind it are answered unavailable at once too,
// not held for the whole stall; once the storage works they are all
// committed, in order.
func TestSQLiteStallAnswersTakenBatches(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replication.db")
	db := openDB(t, path, sqlitedb.Config{BusyTimeoutMs: 50})
	other := openDB(t, path, sqlitedb.Config{BusyTimeoutMs: 50})
	r := newSQLite(t, db, replication.SQLiteConfig{Path: path, MaxBatch: 1})
	s := &blockingSink{armed: make(chan struct{}), entered: make(chan struct{}), release: make(chan struct{})}
	if err := r.AddSink("blocking", s, resourcelease.SinkOptions{Synchronous: true}); err != nil {
		t.Fatal(err)
	}
	close(s.armed)
	first := r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 1, 0))
	<-s.entered // the writer is in the sink
	tx, err := other.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	// MaxBatch 1: two batches, which the writer takes together once the
	// sink lets it go; the first of them fails on the lock.
	a := r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 2, 1))
	b := r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 3, 2))
	close(s.release)
	if err := wait(first); err != nil {
		t.Fatal(err)
	}
	for i, ack := range []resourcelease.Ack{a, b} {
		done := make(chan error, 1)
		go func() { done <- wait(ack) }()
		select {
		case err := <-done:
			if !errors.Is(err, resourcelease.ErrStorageUnavailable) {
				t.Fatalf("Ack %d during the stall: %v, want unavailable", i+2, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Ack %d still waits 10 s into the stall", i+2)
		}
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.LastSequence() < 3 { // the writer's next retry, within its backoff
		if time.Now().After(deadline) {
			t.Fatalf("LastSequence = %d 10 s after the lock went, want 3", r.LastSequence())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 4, 3))); err != nil {
		t.Fatalf("Record after the recovery: %v", err)
	}
	evs, err := r.ReadEvents(context.Background(), 0, 100)
	if err != nil || len(evs) != 4 {
		t.Fatalf("ReadEvents: %d events, %v; want 4", len(evs), err)
	}
	for i, e := range evs {
		if e.SequenceNumber != int64(i+1) {
			t.Fatalf("event %d has sequence %d", i, e.SequenceNumber)
		}
	}
}

// TestSQLiteOutOfStepPoisons: queue tables out of step with the log (a row
// the change updates is gone) fail the same way on every retry, so the
// writer refuses for good at once instead of stalling.
func TestSQLiteOutOfStepPoisons(t *testing.T) {
	path := filepath.Join(t.TempDir(), "replication.db")
	db := openDB(t, path, sqlitedb.Config{BusyTimeoutMs: 50})
	other := openDB(t, path, sqlitedb.Config{BusyTimeoutMs: 50})
	r := newSQLite(t, db, replication.SQLiteConfig{Path: path})
	if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 1, 0))); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(`DELETE FROM queue_items`); err != nil {
		t.Fatal(err)
	}
	err := wait(r.Record(replicatortest.Change(resourcelease.ChangeLeased, 1, 1)))
	wantStorageError(t, err, path, "out of step")
	if !replication.Poisoned(r) {
		t.Fatal("stalled on tables out of step; want refused for good")
	}
	if err := r.Close(); !errors.Is(err, resourcelease.ErrStorageUnavailable) {
		t.Fatalf("Close = %v, want the storage error", err)
	}
}
