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
		name   string
		giveUp func(t *testing.T, r *replication.SQLiteReplicator)
	}{
		{"too many changes wait", func(t *testing.T, r *replication.SQLiteReplicator) {
			var last error
			for i := range replication.MaxStalledEntries + 1 {
				last = wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+3), i+2)))
			}
			if !errors.Is(last, resourcelease.ErrStorageUnavailable) {
				t.Fatalf("the Record past the bound: %v", last)
			}
		}},
		{"closed while stalled", func(t *testing.T, r *replication.SQLiteReplicator) {
			if err := r.Close(); !errors.Is(err, resourcelease.ErrStorageUnavailable) {
				t.Fatalf("Close while stalled = %v, want the storage error", err)
			}
		}},
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
			tc.giveUp(t, r)
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			// The fault is gone, but the replicator gave up: nothing more is
			// committed, and Records are refused.
			time.Sleep(3 * time.Second) // longer than the writer's longest retry backoff
			if n := r.LastSequence(); n > 2 {
				t.Errorf("LastSequence = %d after giving up, want at most 2", n)
			}
			if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 99, 1))); err == nil {
				t.Error("a Record after giving up was acknowledged")
			}
			var n int
			if err := other.QueryRow(`SELECT count(*) FROM replication_events`).Scan(&n); err != nil || n > 2 {
				t.Errorf("%d events on disk (%v), want at most 2", n, err)
			}
		})
	}
}
