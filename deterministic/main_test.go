package deterministic_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openDB opens (creating) the SQLite database at path with synchronous
// NORMAL and closes it when the test ends, unless the test closed it first.
func openDB(t testing.TB, path string) *sql.DB {
	t.Helper()
	db, err := sqlitedb.Open(context.Background(), path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// openReadOnly opens the existing database at path read-only.
func openReadOnly(path string) (*sql.DB, error) {
	return sqlitedb.Open(context.Background(), path, sqlitedb.Config{ReadOnly: true})
}

// newSQLiteStore opens a fresh database in a temporary directory and returns
// a store on it, together with the database and its path.
func newSQLiteStore(t testing.TB) (*deterministic.SQLiteStore, *sql.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), deterministic.DefaultFileName)
	db := openDB(t, path)
	s, err := deterministic.NewSQLiteStore(context.Background(), db, deterministic.SQLiteConfig{})
	if err != nil {
		t.Fatalf("NewSQLiteStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, db, path
}
