package replication

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// TestRetryableJudges: the driver's judge (sqlitedb.Retryable, which
// sqlitestore installs) and this package's own, by SQLite's message, agree
// on real errors: a database locked by another connection may clear; a
// constraint and a missing table never will.
func TestRetryableJudges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.db")
	open := func() *sql.DB {
		db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=0")
		if err != nil {
			t.Fatal(err)
		}
		db.SetMaxOpenConns(1)
		t.Cleanup(func() { db.Close() })
		return db
	}
	a, b := open(), open()
	if _, err := a.Exec(`CREATE TABLE t (k INTEGER PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(`INSERT INTO t VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	_, constraint := a.Exec(`INSERT INTO t VALUES (1)`)
	_, noTable := a.Exec(`INSERT INTO missing VALUES (1)`)
	tx, err := a.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`INSERT INTO t VALUES (2)`); err != nil {
		t.Fatal(err)
	}
	_, locked := b.Exec(`INSERT INTO t VALUES (3)`)
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"locked by another connection", locked, true},
		{"unique constraint", constraint, false},
		{"no such table", noTable, false},
	} {
		if tc.err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		e := storageError(path, "commit", tc.err)
		if got := transient(e, sqlitedb.Retryable); got != tc.want {
			t.Errorf("%s (%v): sqlitedb.Retryable judges %v, want %v", tc.name, tc.err, got, tc.want)
		}
		if got := transient(e, nil); got != tc.want {
			t.Errorf("%s (%v): the message judge says %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
	if transient(&resourcelease.Error{Metadata: map[string]string{MetaStage: stageApply}, Err: locked}, nil) {
		t.Error("a change the store cannot turn into rows is never retried")
	}
}
