package deterministic_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// TestCoordinatorCaptureWith: the records go through the caller's function
// (a store's Tx form), are exactly those ApplyEvents writes, are counted,
// and no checkpoint is written; a failure is the stage's error.
func TestCoordinatorCaptureWith(t *testing.T) {
	ctx := context.Background()
	own := deterministic.NewMemoryStore()
	c, err := deterministic.NewCoordinator(deterministic.Config{Store: own})
	if err != nil {
		t.Fatal(err)
	}
	into := deterministic.NewMemoryStore()
	addMany := func(ctx context.Context, recs []deterministic.KeyedRecord) ([]bool, error) {
		return into.TryAddMany(ctx, recs)
	}
	events := []resourcelease.Event{testEvent(1, resourcelease.EventEnqueue, 0), testEvent(2, resourcelease.EventLeaseGranted, 0)}
	if err := c.CaptureWith(ctx, events, addMany); err != nil {
		t.Fatal(err)
	}
	if err := c.CaptureWith(ctx, events[1:], addMany); err != nil { // a replay
		t.Fatal(err)
	}
	if c.Recorded() != 2 || c.Replayed() != 1 {
		t.Fatalf("recorded %d, replayed %d; want 2 and 1", c.Recorded(), c.Replayed())
	}
	for _, e := range events {
		rec, ok, err := into.Get(ctx, c.Key(e.SequenceNumber))
		if err != nil || !ok {
			t.Fatalf("event %d: no record (%v)", e.SequenceNumber, err)
		}
		want, _ := json.Marshal(e)
		if rec.Kind != string(e.EventType) || rec.Version != e.SequenceNumber || string(rec.Payload) != string(want) {
			t.Fatalf("event %d: record %+v", e.SequenceNumber, rec)
		}
		if _, ok, _ := own.Get(ctx, c.Key(e.SequenceNumber)); ok {
			t.Fatal("CaptureWith wrote to the coordinator's own store")
		}
	}
	if _, ok, _ := into.Get(ctx, c.CheckpointKey()); ok {
		t.Fatal("CaptureWith wrote a checkpoint")
	}
	boom := errors.New("boom")
	err = c.CaptureWith(ctx, events, func(context.Context, []deterministic.KeyedRecord) ([]bool, error) { return nil, boom })
	if !errors.Is(err, boom) || resourcelease.AsError(err).Code != resourcelease.CodeDeterministicFailed {
		t.Fatalf("failure = %v, want the stage's error wrapping boom", err)
	}
	if err := c.CaptureWith(ctx, []resourcelease.Event{{SequenceNumber: 0}}, addMany); !errors.Is(err, resourcelease.ErrInvalidArgument) {
		t.Fatalf("sequence 0 = %v, want invalid-argument", err)
	}
}
