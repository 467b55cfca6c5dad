package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/queuetest"
)

// queueConfig maps the engine's options onto the Postgres queue's.
func queueConfig(cfg resourcelease.QueueConfig) postgres.QueueConfig {
	return postgres.QueueConfig{
		Capacity: cfg.Capacity, FullMode: cfg.FullMode, LeaseDuration: cfg.LeaseDuration,
		HeartbeatInterval: cfg.HeartbeatInterval, SweepInterval: cfg.SweepInterval,
		RequeueDelay: cfg.RequeueDelay, MaxRequeueDelay: cfg.MaxRequeueDelay,
		MaxDeliveryAttempts: cfg.MaxDeliveryAttempts, DedupeWindow: cfg.DedupeWindow,
	}
}

// openQueue opens a queue on url with the store's clock and closes both
// when t ends.
func openQueue(t testing.TB, url string, clock resourcelease.Clock, cfg postgres.QueueConfig) *postgres.Queue {
	t.Helper()
	s := openStore(t, url, postgres.Config{Clock: clock})
	q, err := postgres.NewQueue(context.Background(), s, cfg)
	if err != nil {
		t.Fatalf("NewQueue: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// readAll reads the whole log.
func readAll(t testing.TB, q *postgres.Queue) []resourcelease.Event {
	t.Helper()
	var out []resourcelease.Event
	after := int64(0)
	for {
		evs, err := q.ReadEvents(context.Background(), after, postgres.MaxReadLimit)
		if err != nil {
			t.Fatalf("ReadEvents: %v", err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].SequenceNumber
	}
}

// TestQueueConformance holds the Postgres queue to the store-neutral queue
// contract, with the manual clock as the database clock: with one
// transaction in flight (the default) and with two.
func TestQueueConformance(t *testing.T) {
	for _, inFlight := range []int{1, 2} {
		t.Run(fmt.Sprint("inflight=", inFlight), func(t *testing.T) {
			t.Parallel()
			runConformance(t, inFlight, "")
		})
	}
	// What the README advises behind a transaction-pooling PgBouncer
	// without prepared statements: the arguments' types come from their Go
	// types, not from the server's description of each statement. Under the
	// race detector only the first: the second is a whole suite's time more
	// on the same goroutines, and differs only in how arguments are encoded.
	modes := []string{"exec", "simple_protocol"}
	if raceDetector {
		modes = modes[:1]
	}
	for _, mode := range modes {
		t.Run("exec_mode="+mode, func(t *testing.T) {
			t.Parallel()
			runConformance(t, 1, "default_query_exec_mode="+mode)
		})
	}
}

func runConformance(t *testing.T, inFlight int, urlParams string) {
	queuetest.Run(t, func(t *testing.T, cfg resourcelease.QueueConfig) *queuetest.Harness {
		qc := queueConfig(cfg)
		qc.InFlight = inFlight
		url := pgtest.NewDatabase(t)
		if urlParams != "" {
			url += map[bool]string{true: "&", false: "?"}[strings.Contains(url, "?")] + urlParams
		}
		q := openQueue(t, url, cfg.Clock, qc)
		return &queuetest.Harness{
			Queue: q,
			Sweep: func() {
				if _, err := q.Sweep(context.Background()); err != nil {
					t.Errorf("Sweep: %v", err)
				}
			},
			Waiters: q.Waiters,
			Events:  func() []resourcelease.Event { return readAll(t, q) },
		}
	}, queuetest.Features{ReleaseOptions: true, CapacityCountsLeased: true, Inspect: true, Pause: true})
}

// waitListening waits until q listens for notifications.
func waitListening(t testing.TB, q *postgres.Queue) {
	t.Helper()
	select {
	case <-q.Listening():
	case <-time.After(10 * time.Second):
		t.Fatal("the queue did not start listening")
	}
}
