package replication_test

import (
	"context"
	"testing"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/queuetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// TestQueueConformance holds the engine written through the SQLite journal
// to the store-neutral queue contract. The log it checks is the one the
// replicator persisted.
func TestQueueConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T, cfg resourcelease.QueueConfig) *queuetest.Harness {
		r := newSQLite(t, openDB(t, "", sqlitedb.Config{}), replication.SQLiteConfig{Clock: cfg.Clock, Retention: -1})
		cfg.Journal = r
		e, err := resourcelease.NewEngine(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return &queuetest.Harness{
			Queue:   queuetest.Engine(e),
			Sweep:   e.Sweep,
			Waiters: e.Waiters,
			Events: func() []resourcelease.Event {
				var out []resourcelease.Event
				after := int64(0)
				for {
					evs, err := r.ReadEvents(context.Background(), after, replication.MaxReadLimit)
					if err != nil {
						t.Fatalf("ReadEvents: %v", err)
					}
					if len(evs) == 0 {
						return out
					}
					out = append(out, evs...)
					after = evs[len(evs)-1].SequenceNumber
				}
			},
		}
	}, queuetest.Features{Inspect: true, Pause: true})
}
