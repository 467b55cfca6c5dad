package replication_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

var ctxTime = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// startQueue opens dir/replication.db and builds a queue from what it holds:
// the restart path of a durable dispatcher.
func startQueue(ctx context.Context, path string) (*resourcelease.Engine, *replication.SQLiteReplicator, *resourcelease.QueueState, func()) {
	db, err := sqlitedb.Open(ctx, path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		panic(err)
	}
	r, err := replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: path})
	if err != nil {
		panic(err)
	}
	st, err := r.LoadState(ctx)
	if err != nil {
		panic(err)
	}
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Journal: r, InitialState: st, Clock: leasetest.NewManualClock(ctxTime)})
	if err != nil {
		panic(err)
	}
	return q, r, st, func() { q.Close(); r.Close(); db.Close() }
}

// The durable queue: every call returns after its change and its event are
// committed; a restart rebuilds the queue from the database and the event
// sequence continues where it stopped.
func ExampleNewSQLiteReplicator() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "replication-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "replication.db")

	q, _, _, stop := startQueue(ctx, path)
	for _, id := range []string{"order-0001", "order-0002"} {
		q.Enqueue(ctx, resourcelease.Item{ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-1", PayloadEncoding: "application/json"})
	}
	l, _ := q.Lease(ctx, "worker-1", 0)
	stop() // or kill -9: what was acknowledged is on disk

	q, r, st, stop := startQueue(ctx, path)
	defer stop()
	fmt.Printf("pending %d, leased %d (token attempt %d, peer %s)\n", len(st.Pending), len(st.Leased), st.Leased[0].Token.Attempt, st.Leased[0].PeerID)
	fmt.Println("complete with the old token:", q.Complete(ctx, l.OwnershipToken))
	evs, _ := r.ReadEvents(ctx, 0, 10)
	for _, e := range evs {
		fmt.Println(e.SequenceNumber, e.EventType, e.Payload.ResourceID)
	}
	// Output:
	// pending 1, leased 1 (token attempt 1, peer worker-1)
	// complete with the old token: <nil>
	// 1 Enqueue order-0001
	// 2 Enqueue order-0002
	// 3 LeaseGranted order-0001
	// 4 Completed order-0001
}
