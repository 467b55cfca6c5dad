package deterministic_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"pgregory.net/rapid"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
)

var allEventTypes = []resourcelease.EventType{
	resourcelease.EventEnqueue, resourcelease.EventLeaseGranted, resourcelease.EventHeartbeat,
	resourcelease.EventCompleted, resourcelease.EventFailed, resourcelease.EventLeaseExpired,
	resourcelease.EventDeadLettered, resourcelease.EventDrainSnapshot, resourcelease.EventRestoreSnapshot,
}

// TestCoordinatorReplayProperty: for any event sequence and any interleaving
// of replayers that deliver it in order and restart from arbitrary earlier
// checkpoints, the store ends with exactly one record per delivered sequence
// number, holding the first delivery's payload, and the counters add up.
// Every delivery carries a distinct variant (peer id, metadata), so "first"
// is observable.
func TestCoordinatorReplayProperty(t *testing.T) {
	sqliteStore, _, _ := newSQLiteStore(t)
	run := 0
	for _, tc := range []struct {
		name string
		// setup returns the store for one check and the change id to use.
		setup func() (resourcelease.StateStore, string)
	}{
		{"memory", func() (resourcelease.StateStore, string) { return deterministic.NewMemoryStore(), "" }},
		// One database for every check; a fresh change id keeps them apart.
		{"sqlite", func() (resourcelease.StateStore, string) { run++; return sqliteStore, fmt.Sprintf("run-%d", run) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rapid.Check(t, func(rt *rapid.T) {
				ctx := context.Background()
				store, changeID := tc.setup()
				c, err := deterministic.NewCoordinator(deterministic.Config{Store: store, ChangeID: changeID})
				if err != nil {
					rt.Fatal(err)
				}
				n := rapid.IntRange(1, 25).Draw(rt, "events")
				types := make([]resourcelease.EventType, n+1)
				for seq := 1; seq <= n; seq++ {
					types[seq] = rapid.SampledFrom(allEventTypes).Draw(rt, fmt.Sprintf("type%d", seq))
				}
				replayers := rapid.IntRange(1, 4).Draw(rt, "replayers")
				cursor := make([]int, replayers) // sequence number last delivered by each replayer
				first := map[int64][]byte{}      // the model: payload of the first delivery
				deliveries := 0
				steps := rapid.IntRange(1, 120).Draw(rt, "steps")
				for step := range steps {
					r := rapid.IntRange(0, replayers-1).Draw(rt, fmt.Sprintf("replayer%d", step))
					if cursor[r] == n || rapid.IntRange(0, 9).Draw(rt, fmt.Sprintf("restart%d", step)) == 0 {
						// Restart from an earlier checkpoint (possibly the start).
						cursor[r] = rapid.IntRange(0, cursor[r]).Draw(rt, fmt.Sprintf("checkpoint%d", step))
						continue
					}
					cursor[r]++
					seq := int64(cursor[r])
					e := testEvent(seq, types[seq], step)
					if err := c.ApplyEvent(ctx, e); err != nil {
						rt.Fatalf("ApplyEvent(%d): %v", seq, err)
					}
					deliveries++
					if _, ok := first[seq]; !ok {
						first[seq], _ = json.Marshal(e)
					}
				}
				if got, want := c.Recorded(), int64(len(first)); got != want {
					rt.Fatalf("Recorded = %d, want %d", got, want)
				}
				if got, want := c.Replayed(), int64(deliveries-len(first)); got != want {
					rt.Fatalf("Replayed = %d, want %d", got, want)
				}
				for seq := int64(1); seq <= int64(n)+1; seq++ {
					rec, ok, err := c.Effect(ctx, seq)
					if err != nil {
						rt.Fatal(err)
					}
					want, delivered := first[seq]
					if ok != delivered {
						rt.Fatalf("seq %d: record present = %v, delivered = %v", seq, ok, delivered)
					}
					if ok && (string(rec.Payload) != string(want) || rec.Version != seq || rec.Kind != string(types[seq])) {
						rt.Fatalf("seq %d: record %+v (payload %s), want the first delivery %s", seq, rec, rec.Payload, want)
					}
				}
				if ms, ok := store.(*deterministic.MemoryStore); ok && ms.Len() != len(first) {
					rt.Fatalf("store holds %d records, want %d", ms.Len(), len(first))
				}
			})
		})
	}
}
