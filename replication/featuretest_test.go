package replication_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/featuretest"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// TestFeatures holds the engine journaled to SQLite to the queue features'
// cases, restarts included: each Reopen closes the engine and the
// replicator and rebuilds both from the database file.
func TestFeatures(t *testing.T) {
	featuretest.Run(t, func(t *testing.T, cfg resourcelease.QueueConfig) *featuretest.Harness {
		s := &featureStore{t: t, cfg: cfg, path: filepath.Join(t.TempDir(), "replication.db")}
		s.open()
		t.Cleanup(func() { s.close() }) // the latest open's
		h := &featuretest.Harness{
			Queue:   s.q,
			Sweep:   func() { s.q.Sweep() },
			Waiters: func() int { return s.q.Waiters() },
			Events:  s.events,
		}
		h.Reopen = func() resourcelease.Queue {
			s.close()
			s.open()
			return s.q
		}
		return h
	}, featuretest.Features{Reopen: true})
}

// featureStore is an Engine on a SQLiteReplicator on one file.
type featureStore struct {
	t     *testing.T
	cfg   resourcelease.QueueConfig
	path  string
	close func()
	r     *replication.SQLiteReplicator
	q     *resourcelease.Engine
}

func (s *featureStore) open() {
	s.t.Helper()
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, s.path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		s.t.Fatal(err)
	}
	r, err := replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: s.path, Clock: s.cfg.Clock, DedupeWindow: s.cfg.DedupeWindow, Logger: quiet})
	if err != nil {
		s.t.Fatal(err)
	}
	st, err := r.LoadState(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	cfg := s.cfg
	cfg.Journal, cfg.InitialState = r, st
	q, err := resourcelease.NewEngine(cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	s.r, s.q = r, q
	done := false
	s.close = func() {
		if done {
			return
		}
		done = true
		q.Close()
		if err := r.Close(); err != nil {
			s.t.Errorf("replicator Close: %v", err)
		}
		db.Close()
	}
}

func (s *featureStore) events() []resourcelease.Event {
	s.t.Helper()
	evs, err := s.r.ReadEvents(context.Background(), 0, 1<<20)
	if err != nil {
		s.t.Fatal(err)
	}
	return evs
}
