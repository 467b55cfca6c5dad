// Package sqlitestore is leasemesh's durable default Storage: a data
// directory holding replication.db (the queue's state and its replication
// log, written together by one group-committing writer) and
// deterministic.db (the deterministic records). It links the cgo SQLite
// driver; a program that opens a dispatcher on Postgres, or only runs
// workers, does not import it.
//
//	d, err := leasemesh.Open(ctx, leasemesh.Config{Storage: sqlitestore.Dir("data")})
package sqlitestore

import (
	"context"
	"errors"
	"os"
	"path/filepath"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// File names inside the data directory.
const (
	// ReplicationFile holds the queue's state and its replication log.
	ReplicationFile = "replication.db"
	// DeterministicFile holds the deterministic records.
	DeterministicFile = deterministic.DefaultFileName
)

// Config configures a data directory. The zero value is the durable default.
type Config struct {
	// Synchronous is replication.db's durability: sqlitedb.SynchronousFull
	// (the default) survives power loss; sqlitedb.SynchronousNormal survives
	// a killed process and commits several times faster.
	Synchronous sqlitedb.Synchronous
	// Replication tunes the SQLite replicator (retention, batch size,
	// checkpoints). Its Path, DedupeWindow, Clock and Logger are set by the
	// storage from the dispatcher's own settings.
	Replication replication.SQLiteConfig
}

// Dir returns the Storage of the data directory dir with the default
// Config; the directory is created when missing.
func Dir(dir string) leasemesh.Storage { return DirWith(dir, Config{}) }

// DirWith is Dir with a Config.
func DirWith(dir string, cfg Config) leasemesh.Storage { return storage{dir: dir, cfg: cfg} }

type storage struct {
	dir string
	cfg Config
}

// OpenStorage implements leasemesh.Storage.
func (s storage) OpenStorage(ctx context.Context, opts leasemesh.StorageOptions) (st *leasemesh.Stores, err error) {
	if s.dir == "" {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"sqlitestore: the data directory is empty")
	}
	dir, err := filepath.Abs(s.dir)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return nil, &resourcelease.Error{Status: resourcelease.StatusUnavailable, Code: resourcelease.CodeStorageUnavailable,
			Message: "sqlitestore: cannot use data directory " + s.dir + ": " + err.Error(), Err: err}
	}
	var closers []func() error
	closeAll := func() error {
		var errs []error
		for i := len(closers) - 1; i >= 0; i-- {
			errs = append(errs, closers[i]())
		}
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			_ = closeAll()
		}
	}()

	replPath := filepath.Join(dir, ReplicationFile)
	replDB, err := sqlitedb.Open(ctx, replPath, sqlitedb.Config{Synchronous: s.cfg.Synchronous})
	if err != nil {
		return nil, err
	}
	closers = append(closers, replDB.Close)
	ro := s.cfg.Replication
	ro.Path, ro.DedupeWindow, ro.Clock, ro.Logger = replPath, opts.DedupeWindow, opts.Clock, opts.Logger
	if ro.Retryable == nil {
		ro.Retryable = sqlitedb.Retryable
	}
	repl, err := replication.NewSQLiteReplicator(ctx, replDB, ro)
	if err != nil {
		return nil, err
	}
	// The dispatcher closes the replicator before Stores.Close; this only
	// runs when a later step of the open fails.
	defer func() {
		if err != nil {
			_ = repl.Close()
		}
	}()

	// NORMAL is enough here: every record is derived from replication.db's
	// events, and the coordinator's checkpoint makes the replicator
	// redeliver whatever a crash lost.
	detDB, err := sqlitedb.Open(ctx, filepath.Join(dir, DeterministicFile), sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		return nil, err
	}
	closers = append(closers, detDB.Close)
	state, err := deterministic.NewSQLiteStore(ctx, detDB, deterministic.SQLiteConfig{Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	closers = append(closers, state.Close) // its checkpointer, before its database
	// Not ready while writes to replication.db fail: calls that change the
	// queue are answered unavailable until the writer gets through again.
	health := func(context.Context) error { return repl.Err() }
	return &leasemesh.Stores{Replicator: repl, State: state, Location: dir, Close: closeAll, Health: health}, nil
}
