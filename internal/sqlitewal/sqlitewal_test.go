package sqlitewal_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/leasemesh/leasemesh/internal/sqlitewal"
	"github.com/leasemesh/leasemesh/sqlitedb"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// writer commits one row per transaction the way the stores do: in the
// writer's turn, with the automatic checkpoint off.
type writer struct {
	t  *testing.T
	db *sql.DB
	ck *sqlitewal.Checkpointer
	n  int
}

func (w *writer) commit() {
	w.t.Helper()
	w.ck.BeginWrite()
	tx, err := w.db.Begin()
	if err == nil {
		if _, err = tx.Exec("PRAGMA wal_autocheckpoint = 0"); err == nil {
			_, err = tx.Exec("INSERT INTO t (k, v) VALUES (?, randomblob(300))", fmt.Sprint(w.n))
		}
		if err == nil {
			err = tx.Commit()
		} else {
			tx.Rollback()
		}
	}
	w.ck.EndWrite(err == nil)
	if err != nil {
		w.t.Fatal(err)
	}
	w.n++
}

func openWAL(t *testing.T) (*sql.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "w.db")
	db, err := sqlitedb.Open(context.Background(), path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Exec("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)"); err != nil {
		t.Fatal(err)
	}
	return db, path
}

func TestStartRefusesBadOptions(t *testing.T) {
	db, _ := openWAL(t)
	for _, tc := range []struct {
		name string
		db   *sql.DB
		opts sqlitewal.Options
	}{
		{"nil db", nil, sqlitewal.Options{Pages: 1, MaxPages: 1}},
		{"no pages", db, sqlitewal.Options{MaxPages: 1}},
		{"max below pages", db, sqlitewal.Options{Pages: 10, MaxPages: 9}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if ck, err := sqlitewal.Start(tc.db, tc.opts); err == nil {
				ck.Close()
				t.Fatal("Start accepted bad options")
			}
		})
	}
}

// TestNeverIdleWriterIsHeldAtTheBound: a writer that is never idle gets no
// reset at an idle moment, so at twice MaxPages it is held for one, and the
// WAL stays bounded.
func TestNeverIdleWriterIsHeldAtTheBound(t *testing.T) {
	const pages, maxPages = 32, 128
	db, path := openWAL(t)
	var mu sync.Mutex
	resets, holds := 0, 0
	ck, err := sqlitewal.Start(db, sqlitewal.Options{Pages: pages, MaxPages: maxPages,
		Observe: func(r sqlitewal.Result) {
			if r.Mode != sqlitewal.Passive && r.Err == nil && !r.Busy {
				mu.Lock()
				resets++
				mu.Unlock()
			}
		},
		OnHold: func() { holds++ }, // the writer's goroutine: this test's
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	w := &writer{t: t, db: db, ck: ck}
	var pageSize int64
	if err := db.QueryRow("PRAGMA page_size").Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	largest := int64(0)
	for range 3000 {
		w.commit()
		if fi, err := os.Stat(path + "-wal"); err == nil {
			largest = max(largest, fi.Size()/(pageSize+24))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if holds == 0 || resets == 0 {
		t.Fatalf("holds = %d, resets = %d; want the writer held for resets", holds, resets)
	}
	// The bound is twice MaxPages by the Checkpointer's estimate, and until
	// a PASSIVE checkpoint has measured what a commit appends (late, on a
	// loaded machine) the estimate counts one page per commit, where these
	// commits append about two: so the first WAL may reach about four times
	// MaxPages, and a RESTART reuses the file at that size. Without the
	// bound, 3,000 commits would make it over 6,000 frames.
	if largest > 5*maxPages {
		t.Fatalf("the -wal file reached %d frames, want at most %d", largest, 5*maxPages)
	}
	t.Logf("largest -wal file %d frames; %d holds, %d resets", largest, holds, resets)
}

// TestNotInWALMode: on a database that has no WAL the checkpointer finds
// nothing to do, and the writer is not held (but perhaps once, before the
// first checkpoint finds out).
func TestNotInWALMode(t *testing.T) {
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(t.TempDir(), "rollback.db")+"?_journal_mode=DELETE")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)"); err != nil {
		t.Fatal(err)
	}
	var passives []sqlitewal.Result
	var mu sync.Mutex
	holds := 0
	ck, err := sqlitewal.Start(db, sqlitewal.Options{Pages: 8, MaxPages: 8,
		Observe: func(r sqlitewal.Result) { mu.Lock(); passives = append(passives, r); mu.Unlock() },
		OnHold:  func() { holds++ }, // the writer's goroutine: this test's
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	w := &writer{t: t, db: db, ck: ck}
	for range 200 {
		w.commit()
	}
	ck.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(passives) == 0 || passives[0].Log != -1 {
		t.Fatalf("checkpoints %+v, want a first one reporting no WAL (log -1)", passives)
	}
	if holds > 1 {
		t.Fatalf("the writer was held %d times on a database without a WAL", holds)
	}
}
