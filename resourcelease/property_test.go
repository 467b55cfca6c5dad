package resourcelease_test

import (
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/queuetest"
)

// TestQueueMatchesModel holds the engine to the model of
// queuetest.CheckModel.
func TestQueueMatchesModel(t *testing.T) {
	queuetest.CheckModel(t, queuetest.ModelStore{
		CheckTTL: true,
		Open: func(rt *rapid.T, c queuetest.ModelConfig) (resourcelease.Queue, func() error, func()) {
			q, err := resourcelease.NewEngine(resourcelease.QueueConfig{
				Clock: c.Clock, LeaseDuration: c.LeaseDuration, MaxDeliveryAttempts: c.MaxDeliveryAttempts,
				MaxReleases: c.MaxReleases, Capacity: -1, SweepInterval: time.Hour,
				Fairness: c.Fairness, MaxActivePerPartition: c.MaxActivePerPartition, RequeueDelay: c.RequeueDelay,
				MaxDeadLetters: c.MaxDeadLetters, DeadLetterRetention: c.DeadLetterRetention,
			})
			if err != nil {
				rt.Fatal(err)
			}
			return q, func() error { q.Sweep(); return nil }, func() { q.Close() }
		},
	})
}
