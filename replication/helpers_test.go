package replication_test

import (
	"context"
	"database/sql"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

const crashChildEnv = "LEASEMESH_CRASH_CHILD"

// openDB opens a fresh database file in t's temporary directory.
func openDB(t testing.TB, path string, opts sqlitedb.Config) *sql.DB {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "replication.db")
	}
	if opts.Synchronous == "" {
		opts.Synchronous = sqlitedb.SynchronousNormal
	}
	db, err := sqlitedb.Open(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// quiet is a logger for tests whose failures are expected.
var quiet = slog.New(slog.DiscardHandler)

func newSQLite(t testing.TB, db *sql.DB, opts replication.SQLiteConfig) *replication.SQLiteReplicator {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	r, err := replication.NewSQLiteReplicator(context.Background(), db, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func newMemory(t testing.TB, opts replication.MemoryConfig) *replication.MemoryReplicator {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	r, err := replication.NewMemoryReplicator(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// wait waits for an Ack; a nil Ack is already done.
func wait(a resourcelease.Ack) error {
	if a == nil {
		return nil
	}
	return a.Wait()
}

// engineStats is a queue's Stats for tests, which read the counts of a live
// engine (its Stats fails only on a done context).
func engineStats(q interface {
	Stats(context.Context) (resourcelease.Stats, error)
}) resourcelease.Stats {
	s, _ := q.Stats(context.Background())
	return s
}
