package resourcelease_test

import (
	"sync"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/queuetest"
)

// eventLog is a Journal that keeps the replication events of every change,
// numbered as a replicator numbers them.
type eventLog struct {
	mu     sync.Mutex
	events []resourcelease.Event
}

func (l *eventLog) Record(c *resourcelease.Change) resourcelease.Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := resourcelease.NewEvent(c)
	e.SequenceNumber = int64(len(l.events)) + 1
	l.events = append(l.events, e)
	return nil
}

func (l *eventLog) all() []resourcelease.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]resourcelease.Event(nil), l.events...)
}

// TestQueueConformance holds the in-memory engine to the store-neutral
// queue contract.
func TestQueueConformance(t *testing.T) {
	queuetest.Run(t, func(t *testing.T, cfg resourcelease.QueueConfig) *queuetest.Harness {
		log := &eventLog{}
		cfg.Journal = log
		e, err := resourcelease.NewEngine(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return &queuetest.Harness{Queue: queuetest.Engine(e), Sweep: e.Sweep, Waiters: e.Waiters, Events: log.all}
	}, queuetest.Features{Inspect: true, Pause: true})
}
