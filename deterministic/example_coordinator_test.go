package deterministic_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// The Coordinator records each replication event once; a redelivery of the
// same events (here, the replicator replaying from sequence 2) records
// nothing new.
func ExampleCoordinator() {
	ctx := context.Background()
	store := deterministic.NewMemoryStore()
	coord, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
	if err != nil {
		panic(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	events := []resourcelease.Event{
		{SequenceNumber: 1, EventType: resourcelease.EventEnqueue, Timestamp: at},
		{SequenceNumber: 2, EventType: resourcelease.EventLeaseGranted, Timestamp: at.Add(time.Second)},
		{SequenceNumber: 3, EventType: resourcelease.EventCompleted, Timestamp: at.Add(2 * time.Second)},
	}
	for _, e := range events {
		if err := coord.ApplyEvent(ctx, e); err != nil {
			panic(err)
		}
	}
	for _, e := range events[1:] { // replay after a failover
		if err := coord.ApplyEvent(ctx, e); err != nil {
			panic(err)
		}
	}
	// The store holds one record per event and the checkpoint.
	fmt.Printf("recorded %d, replayed %d, records %d\n", coord.Recorded(), coord.Replayed(), store.Len())

	rec, _, err := coord.Effect(ctx, 2)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%s: kind %s, version %d, at %s\n", coord.Key(2), rec.Kind, rec.Version, rec.RecordedAt.Format(time.RFC3339))

	err = coord.ApplyEvent(ctx, resourcelease.Event{SequenceNumber: 0, EventType: resourcelease.EventHeartbeat})
	fmt.Println(resourcelease.StatusOf(err))
	// Output:
	// recorded 3, replayed 2, records 4
	// resourcelease/seq/2: kind LeaseGranted, version 2, at 2026-01-02T03:04:06Z
	// invalid-argument
}

// With a SQLiteStore in <dataDirectory>/deterministic.db the records survive
// a restart: the new process's Coordinator finds every redelivered event
// already recorded.
func ExampleSQLiteStore() {
	ctx := context.Background()
	dataDir, err := os.MkdirTemp("", "meshdata")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dataDir)
	path := filepath.Join(dataDir, deterministic.DefaultFileName)
	events := []resourcelease.Event{
		{SequenceNumber: 1, EventType: resourcelease.EventEnqueue, Timestamp: time.Unix(1, 0)},
		{SequenceNumber: 2, EventType: resourcelease.EventLeaseGranted, Timestamp: time.Unix(2, 0)},
	}
	for _, process := range []string{"before restart", "after restart"} {
		db, err := sqlitedb.Open(ctx, path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
		if err != nil {
			panic(err)
		}
		store, err := deterministic.NewSQLiteStore(ctx, db, deterministic.SQLiteConfig{})
		if err != nil {
			panic(err)
		}
		coord, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
		if err != nil {
			panic(err)
		}
		for _, e := range events {
			if err := coord.ApplyEvent(ctx, e); err != nil {
				panic(err)
			}
		}
		fmt.Printf("%s: recorded %d, replayed %d\n", process, coord.Recorded(), coord.Replayed())
		store.Close()
		db.Close()
	}
	// Output:
	// before restart: recorded 2, replayed 0
	// after restart: recorded 0, replayed 2
}

// A replicator hands a synchronous Coordinator each commit batch through
// ApplyEvents, which records the batch in one store operation (one SQLite
// transaction). When a batch fails, the replicator redelivers all of it;
// here the redelivered batch overlaps events already recorded, which are
// counted as replays.
func ExampleCoordinator_ApplyEvents() {
	ctx := context.Background()
	store := deterministic.NewMemoryStore()
	coord, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
	if err != nil {
		panic(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	event := func(seq int64, typ resourcelease.EventType) resourcelease.Event {
		return resourcelease.Event{SequenceNumber: seq, EventType: typ, Timestamp: at.Add(time.Duration(seq) * time.Second)}
	}
	batches := [][]resourcelease.Event{
		{event(1, resourcelease.EventEnqueue), event(2, resourcelease.EventLeaseGranted), event(3, resourcelease.EventCompleted)},
		{event(3, resourcelease.EventCompleted), event(4, resourcelease.EventEnqueue)}, // redelivered from 3
	}
	for _, batch := range batches {
		if err := coord.ApplyEvents(ctx, batch); err != nil {
			panic(err)
		}
		last, _ := coord.LastApplied(ctx)
		fmt.Printf("recorded %d, replayed %d, records %d (with the checkpoint), applied up to %d\n",
			coord.Recorded(), coord.Replayed(), store.Len(), last)
	}

	// A bad event anywhere in a batch rejects the whole batch.
	err = coord.ApplyEvents(ctx, []resourcelease.Event{event(5, resourcelease.EventEnqueue), event(0, resourcelease.EventHeartbeat)})
	fmt.Println(resourcelease.StatusOf(err), store.Len())
	// Output:
	// recorded 3, replayed 0, records 4 (with the checkpoint), applied up to 3
	// recorded 4, replayed 1, records 5 (with the checkpoint), applied up to 4
	// invalid-argument 5
}
