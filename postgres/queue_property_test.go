package postgres_test

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/queuetest"
)

// TestQueueMatchesModel holds the Postgres queue to the model of
// queuetest.CheckModel, each sequence in a schema of its own.
func TestQueueMatchesModel(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	var schemas atomic.Int64
	queuetest.CheckModel(t, queuetest.ModelStore{
		// Expiry is one statement over the due leases, in expiry then
		// sequence id order.
		ExpiryTiesBySequenceID: true,
		Open: func(rt *rapid.T, c queuetest.ModelConfig) (resourcelease.Queue, func() error, func()) {
			s, err := postgres.Open(bg, url, postgres.Config{Schema: fmt.Sprint("prop_", schemas.Add(1)), Clock: c.Clock, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				rt.Fatal(err)
			}
			q, err := postgres.NewQueue(bg, s, postgres.QueueConfig{
				LeaseDuration: c.LeaseDuration, MaxDeliveryAttempts: c.MaxDeliveryAttempts,
				MaxReleases: c.MaxReleases, Capacity: -1, DelayedCapacity: -1, SweepInterval: time.Hour,
				Fairness: c.Fairness, MaxActivePerPartition: c.MaxActivePerPartition, RequeueDelay: c.RequeueDelay,
				MaxDeadLetters: c.MaxDeadLetters, DeadLetterRetention: c.DeadLetterRetention,
			})
			if err != nil {
				s.Close()
				rt.Fatal(err)
			}
			sweep := func() error { _, err := q.Sweep(bg); return err }
			return q, sweep, func() { q.Close(); s.Close() }
		},
	})
}
