package postgres_test

import (
	"context"
	"testing"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/featuretest"
)

// featureConfig is queueConfig with the queue features' options.
func featureConfig(cfg resourcelease.QueueConfig) postgres.QueueConfig {
	qc := queueConfig(cfg)
	qc.DelayedCapacity = cfg.DelayedCapacity
	qc.MaxActivePerPartition = cfg.MaxActivePerPartition
	qc.Fairness = cfg.Fairness
	qc.DeadLetterRetention = cfg.DeadLetterRetention
	qc.MaxDeadLetters = cfg.MaxDeadLetters
	return qc
}

// TestFeatures holds the Postgres queue to the queue features' cases,
// restarts included: each Reopen closes the queue and its store and opens
// both again on the same database.
func TestFeatures(t *testing.T) {
	featuretest.Run(t, func(t *testing.T, cfg resourcelease.QueueConfig) *featuretest.Harness {
		url := pgtest.NewDatabase(t)
		qc := featureConfig(cfg)
		var q *postgres.Queue
		open := func() *postgres.Queue {
			s := openStore(t, url, postgres.Config{Clock: cfg.Clock})
			nq, err := postgres.NewQueue(context.Background(), s, qc)
			if err != nil {
				t.Fatalf("NewQueue: %v", err)
			}
			t.Cleanup(func() { nq.Close() })
			return nq
		}
		q = open()
		h := &featuretest.Harness{
			Queue: q,
			Sweep: func() {
				if _, err := q.Sweep(context.Background()); err != nil {
					t.Errorf("Sweep: %v", err)
				}
			},
			Waiters: func() int { return q.Waiters() },
			Events:  func() []resourcelease.Event { return readAll(t, q) },
		}
		h.Reopen = func() resourcelease.Queue {
			q.Close()
			q.Store().Close()
			q = open()
			return q
		}
		return h
	}, featuretest.Features{Reopen: true})
}
