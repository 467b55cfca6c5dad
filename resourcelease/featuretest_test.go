package resourcelease_test

import (
	"sync"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/featuretest"
)

// featureLog is a Journal that keeps the replication events of every
// change, numbered as a replicator numbers them.
type featureLog struct {
	mu     sync.Mutex
	events []resourcelease.Event
}

func (l *featureLog) Record(c *resourcelease.Change) resourcelease.Ack {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := resourcelease.NewEvent(c)
	e.SequenceNumber = int64(len(l.events)) + 1
	l.events = append(l.events, e)
	return nil
}

func (l *featureLog) all() []resourcelease.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]resourcelease.Event(nil), l.events...)
}

// TestFeatures holds the in-memory engine to the queue features' cases.
func TestFeatures(t *testing.T) {
	featuretest.Run(t, func(t *testing.T, cfg resourcelease.QueueConfig) *featuretest.Harness {
		log := &featureLog{}
		cfg.Journal = log
		e, err := resourcelease.NewEngine(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return &featuretest.Harness{Queue: e, Sweep: e.Sweep, Waiters: e.Waiters, Events: log.all}
	}, featuretest.Features{})
}
