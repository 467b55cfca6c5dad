// Package sqlitedb opens SQLite databases for leasemesh's durable stores. It
// is the one library package that imports the cgo driver
// (github.com/mattn/go-sqlite3); the stores themselves take a *sql.DB, so a
// process that never opens a database (a worker, a client) never links cgo.
package sqlitedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/mattn/go-sqlite3" // registers the "sqlite3" driver
)

// Synchronous is SQLite's synchronous setting in WAL mode.
type Synchronous string

const (
	// SynchronousFull survives power loss: every commit is fsynced.
	SynchronousFull Synchronous = "FULL"
	// SynchronousNormal survives process crashes (kill -9) but may lose the
	// last commits on power loss; it is several times faster.
	SynchronousNormal Synchronous = "NORMAL"
)

// Config configures Open. The zero value means FULL and a 5 s busy timeout.
type Config struct {
	// Synchronous defaults to SynchronousFull.
	Synchronous Synchronous
	// BusyTimeoutMs is how long a statement waits for a lock held by another
	// connection or process. Defaults to 5000.
	BusyTimeoutMs int
	// ReadOnly opens the database read-only (for tools that tail a log).
	ReadOnly bool
}

// Open opens (creating if needed) the SQLite database at path in WAL mode and
// checks that it is usable now, so a corrupt, read-only or locked file is
// reported at start, as an unavailable *resourcelease.Error naming the path,
// rather than on the first write.
//
// The connections keep SQLite's automatic WAL checkpoint, which runs inside
// a commit. leasemesh's stores (replication.SQLiteReplicator,
// deterministic.SQLiteStore) turn it off on the connections they write with
// and checkpoint from a goroutine of their own instead, so that no commit
// waits for one; a database used directly keeps SQLite's behaviour.
func Open(ctx context.Context, path string, opts Config) (*sql.DB, error) {
	sync := opts.Synchronous
	if sync == "" {
		sync = SynchronousFull
	}
	if sync != SynchronousFull && sync != SynchronousNormal {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"sqlitedb: synchronous must be FULL or NORMAL, got %q", sync)
	}
	busy := opts.BusyTimeoutMs
	if busy <= 0 {
		busy = 5000
	}
	if !opts.ReadOnly {
		if dir := filepath.Dir(path); dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, unavailable(path, err)
			}
		}
	}
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busy))
	q.Set("_synchronous", string(sync))
	q.Set("_txlock", "immediate")
	if opts.ReadOnly {
		q.Set("mode", "ro")
	} else {
		q.Set("_journal_mode", "WAL")
	}
	db, err := sql.Open("sqlite3", "file:"+escapePath(path)+"?"+q.Encode())
	if err != nil {
		return nil, unavailable(path, err)
	}
	if err := check(ctx, db, opts.ReadOnly); err != nil {
		db.Close()
		return nil, unavailable(path, err)
	}
	return db, nil
}

// check touches the file: the schema read fails on a corrupt file, and the
// write probe fails on a read-only file or one another process holds locked.
func check(ctx context.Context, db *sql.DB, readOnly bool) error {
	var n int
	if err := db.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master").Scan(&n); err != nil {
		return err
	}
	if readOnly {
		return nil
	}
	var mode string
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal mode is %q, want wal (is the file read-only?)", mode)
	}
	tx, err := db.BeginTx(ctx, nil) // _txlock=immediate: takes the write lock
	if err != nil {
		return err
	}
	return tx.Rollback()
}

// escapePath makes path safe inside a file: URI. Unescaped, a '?' or '#' (Go
// subtests put "#01" in their temp dirs) would cut the path short and open a
// different, shared database; SQLite decodes the %XX escapes.
func escapePath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23").Replace(path)
}

func unavailable(path string, err error) error {
	return &resourcelease.Error{
		Status:  resourcelease.StatusUnavailable,
		Code:    resourcelease.CodeStorageUnavailable,
		Message: fmt.Sprintf("sqlite %s: %v", path, err),
		Err:     err,
	}
}

// Retryable reports whether err, from a write, may succeed when retried as
// is: SQLite answered BUSY or LOCKED (another connection or process holds
// the database), FULL (the disk is full) or IOERR. Those faults clear
// outside the process; any other error (a constraint, a schema error, an
// error SQLite did not raise) fails the same way every time. It is what
// replication.SQLiteConfig.Retryable wants.
func Retryable(err error) bool {
	var se sqlite3.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code {
	case sqlite3.ErrBusy, sqlite3.ErrLocked, sqlite3.ErrFull, sqlite3.ErrIoErr:
		return true
	}
	return false
}
