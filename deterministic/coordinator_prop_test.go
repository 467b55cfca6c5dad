package deterministic_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
)

var allEventTypes = []resourcelease.EventType{
	resourcelease.EventEnqueue, resourcelease.EventLeaseGranted, resourcelease.EventHeartbeat,
	resourcelease.EventCompleted, resourcelease.EventFailed, resourcelease.EventLeaseExpired,
	resourcelease.EventDeadLettered, resourcelease.EventDrainSnapshot, resourcelease.EventRestoreSnapshot,
}

// propStore is a store for the property test and a way to make it fail.
type propStore struct {
	store    resourcelease.StateStore
	changeID string
	// breakKey makes writing key fail until mend is called: a TryAdd of key
	// fails, and so does a TryAddMany holding key, writing nothing.
	breakKey func(key string) (mend func() error, err error)
	// records counts the records under changeID.
	records func() (int, error)
}

// memoryPropStore returns a MemoryStore behind funcStores that fail writes
// of one key; batch says whether it exposes TryAddMany (else ApplyEvents
// takes the one-TryAdd-per-event path).
func memoryPropStore(batch bool) propStore {
	base := deterministic.NewMemoryStore()
	var broken string
	fs := &funcStore{base: base, tryAdd: func(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
		if broken != "" && key == broken {
			return false, errBoom
		}
		return base.TryAdd(ctx, key, rec)
	}}
	p := propStore{store: fs, breakKey: func(key string) (func() error, error) {
		broken = key
		return func() error { broken = ""; return nil }, nil
	}, records: func() (int, error) {
		// Every record but the checkpoint is an event's.
		_, ckpt, err := base.Get(context.Background(), deterministic.DefaultChangeID+"/checkpoint")
		if ckpt {
			return base.Len() - 1, err
		}
		return base.Len(), err
	}}
	if batch {
		p.store = &batchFuncStore{funcStore: fs, tryAddMany: func(ctx context.Context, recs []deterministic.KeyedRecord) ([]bool, error) {
			for _, r := range recs {
				if broken != "" && r.Key == broken {
					return nil, errBoom
				}
			}
			return base.TryAddMany(ctx, recs)
		}}
	}
	return p
}

// TestCoordinatorReplayProperty: for any event sequence and any interleaving
// of replayers that deliver it in order, one event at a time (ApplyEvent) or
// in batches of any size (ApplyEvents), that restart from arbitrary earlier
// checkpoints, and whose deliveries sometimes fail part-way (the replayer
// then redelivers from the same place), the store ends with exactly one
// record per delivered sequence number, holding the first successful
// delivery's payload, and the counters add up. A failed batch records
// nothing on a BatchStateStore (on SQLite a trigger aborts the transaction
// part-way, which rolls back) and the events before the failing one on a
// plain store. Every delivery carries a distinct variant (peer id,
// metadata), so "first" is observable.
func TestCoordinatorReplayProperty(t *testing.T) {
	sqliteStore, sqliteDB, _ := newSQLiteStore(t)
	run := 0
	for _, tc := range []struct {
		name  string
		batch bool // the store is a BatchStateStore
		setup func() propStore
	}{
		{"memory", true, func() propStore { return memoryPropStore(true) }},
		{"plain", false, func() propStore { return memoryPropStore(false) }},
		// One database for every check; a fresh change id keeps them apart.
		{"sqlite", true, func() propStore {
			run++
			changeID := fmt.Sprintf("run-%d", run)
			return propStore{store: sqliteStore, changeID: changeID, records: func() (n int, err error) {
				err = sqliteDB.QueryRow(`SELECT count(*) FROM `+deterministic.DefaultTable+` WHERE key LIKE ?`, changeID+"/seq/%").Scan(&n)
				return n, err
			}, breakKey: func(key string) (func() error, error) {
				// A check that failed part-way may have left its trigger.
				if err := execRetryingLocks(sqliteDB, `DROP TRIGGER IF EXISTS poison`); err != nil {
					return nil, err
				}
				if _, err := sqliteDB.Exec(`CREATE TRIGGER poison BEFORE INSERT ON ` + deterministic.DefaultTable +
					` WHEN NEW.key = '` + key + `' BEGIN SELECT RAISE(ABORT, 'poisoned record'); END`); err != nil {
					return nil, err
				}
				return func() error { return execRetryingLocks(sqliteDB, `DROP TRIGGER poison`) }, nil
			}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rapid.Check(t, func(rt *rapid.T) {
				ctx := context.Background()
				ps := tc.setup()
				c, err := deterministic.NewCoordinator(deterministic.Config{Store: ps.store, ChangeID: ps.changeID})
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
				deliveries := 0                  // events delivered successfully (recorded or replayed)
				steps := rapid.IntRange(1, 120).Draw(rt, "steps")
				for step := range steps {
					r := rapid.IntRange(0, replayers-1).Draw(rt, fmt.Sprintf("replayer%d", step))
					if cursor[r] == n || rapid.IntRange(0, 9).Draw(rt, fmt.Sprintf("restart%d", step)) == 0 {
						// Restart from an earlier checkpoint (possibly the start).
						cursor[r] = rapid.IntRange(0, cursor[r]).Draw(rt, fmt.Sprintf("checkpoint%d", step))
						continue
					}
					size := rapid.IntRange(1, min(8, n-cursor[r])).Draw(rt, fmt.Sprintf("size%d", step))
					batch := make([]resourcelease.Event, size)
					for i := range batch {
						seq := int64(cursor[r] + 1 + i)
						batch[i] = testEvent(seq, types[seq], step)
					}
					single := size == 1 && rapid.Bool().Draw(rt, fmt.Sprintf("single%d", step))
					failAt := -1
					if rapid.IntRange(0, 7).Draw(rt, fmt.Sprintf("fail%d", step)) == 0 {
						failAt = rapid.IntRange(0, size-1).Draw(rt, fmt.Sprintf("failAt%d", step))
					}
					var mend func() error
					if failAt >= 0 {
						if mend, err = ps.breakKey(c.Key(batch[failAt].SequenceNumber)); err != nil {
							rt.Fatal(err)
						}
					}
					if single {
						err = c.ApplyEvent(ctx, batch[0])
					} else {
						err = c.ApplyEvents(ctx, batch)
					}
					delivered := batch
					if failAt >= 0 {
						if merr := mend(); merr != nil {
							rt.Fatal(merr)
						}
						if resourcelease.CodeOf(err) != resourcelease.CodeDeterministicFailed {
							rt.Fatalf("delivery of %d..%d failing at %d: err = %v, want %s", batch[0].SequenceNumber, batch[size-1].SequenceNumber, failAt, err, resourcelease.CodeDeterministicFailed)
						}
						// A batch store writes nothing of a failed batch; a plain
						// store keeps what it wrote before the failing event.
						delivered = nil
						if !tc.batch {
							delivered = batch[:failAt]
						}
					} else {
						if err != nil {
							rt.Fatalf("delivery of %d..%d: %v", batch[0].SequenceNumber, batch[size-1].SequenceNumber, err)
						}
						cursor[r] += size
					}
					deliveries += len(delivered)
					for _, e := range delivered {
						if _, ok := first[e.SequenceNumber]; !ok {
							first[e.SequenceNumber], _ = json.Marshal(e)
						}
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
				if got, err := ps.records(); err != nil || got != len(first) {
					rt.Fatalf("store holds %d records (%v), want %d", got, err, len(first))
				}
			})
		})
	}
}

// execRetryingLocks runs a schema change, retrying while the database is
// locked: the store's checkpointer may hold the database for a moment, and
// DDL fails at once with "locked" rather than waiting out the busy timeout
// when another connection's statement is active.
func execRetryingLocks(db *sql.DB, stmt string) error {
	var err error
	for range 200 {
		if _, err = db.Exec(stmt); err == nil || !strings.Contains(err.Error(), "locked") {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
	return err
}
