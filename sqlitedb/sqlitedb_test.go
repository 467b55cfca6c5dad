package sqlitedb_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

func TestOpenCreatesWALDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "x.db")
	db, err := sqlitedb.Open(context.Background(), path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode = %q, %v; want wal", mode, err)
	}
}

// TestOpenKeepsOddPathsApart: '#', '?' and '%' are part of the file name, not
// URI syntax, so two such paths open two databases.
func TestOpenKeepsOddPathsApart(t *testing.T) {
	dir := t.TempDir()
	names := []string{"a#01.db", "a?x=1.db", "a%23.db", "a"}
	for i, name := range names {
		path := filepath.Join(dir, name)
		db, err := sqlitedb.Open(context.Background(), path, sqlitedb.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec("CREATE TABLE t (v INTEGER)"); err != nil {
			t.Fatalf("%s: %v (is it sharing a file with an earlier path?)", name, err)
		}
		if _, err := db.Exec("INSERT INTO t VALUES (?)", i); err != nil {
			t.Fatal(err)
		}
		db.Close()
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("%s was not created at its own path: %v", name, err)
		}
	}
}

func TestOpenReportsBadFiles(t *testing.T) {
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.db")
	if err := os.WriteFile(corrupt, []byte(strings.Repeat("this is not a database ", 400)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		opts sqlitedb.Config
	}{
		{"corrupt file", corrupt, sqlitedb.Config{}},
		{"bad synchronous", filepath.Join(dir, "ok.db"), sqlitedb.Config{Synchronous: "SOMETIMES"}},
		{"directory in the way", dir, sqlitedb.Config{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, err := sqlitedb.Open(context.Background(), tc.path, tc.opts)
			if err == nil {
				db.Close()
				t.Fatal("Open succeeded, want an error")
			}
			var e *resourcelease.Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not a *resourcelease.Error", err, err)
			}
			if e.Status == resourcelease.StatusUnavailable && !strings.Contains(e.Message, tc.path) {
				t.Fatalf("message %q does not name the path %q", e.Message, tc.path)
			}
		})
	}
}

// TestOpenReportsLockedDatabase: another process (here a second handle) holds
// the write lock; Open gives up after the busy timeout with an unavailable
// error naming the path instead of hanging.
func TestOpenReportsLockedDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "locked.db")
	holder, err := sqlitedb.Open(context.Background(), path, sqlitedb.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	tx, err := holder.Begin() // _txlock=immediate: takes the write lock
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	db, err := sqlitedb.Open(context.Background(), path, sqlitedb.Config{BusyTimeoutMs: 50})
	if err == nil {
		db.Close()
		t.Fatal("Open of a locked database succeeded, want an error")
	}
	var e *resourcelease.Error
	if !errors.As(err, &e) || e.Status != resourcelease.StatusUnavailable || !strings.Contains(e.Message, path) {
		t.Fatalf("got %v, want unavailable naming %s", err, path)
	}
}
