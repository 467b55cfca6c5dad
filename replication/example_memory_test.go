package replication_test

import (
	"context"
	"fmt"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// A queue journaled to an in-memory replicator, with a RecentLog as a
// synchronous sink: by the time a call returns, its event is in the log.
func ExampleNewMemoryReplicator() {
	ctx := context.Background()
	r, err := replication.NewMemoryReplicator(replication.MemoryConfig{})
	if err != nil {
		panic(err)
	}
	defer r.Close()
	recent, _ := replication.NewRecentLog(10)
	if err := r.AddSink("recent", recent, resourcelease.SinkOptions{Synchronous: true}); err != nil {
		panic(err)
	}
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Journal: r, Clock: leasetest.NewManualClock(ctxTime)})
	if err != nil {
		panic(err)
	}
	defer q.Close()

	q.Enqueue(ctx, resourcelease.Item{ResourceType: "demo.order", ResourceID: "order-0001", PartitionKey: "tenant-1", PayloadEncoding: "application/json"})
	l, _ := q.Lease(ctx, "worker-1", 0)
	q.Complete(ctx, l.OwnershipToken)

	for _, e := range recent.Events() {
		fmt.Println(e.SequenceNumber, e.EventType, e.PeerID, e.Metadata[resourcelease.MetaQueuePending], e.Metadata[resourcelease.MetaQueueActive])
	}
	// Output:
	// 1 Enqueue  1 0
	// 2 LeaseGranted worker-1 0 1
	// 3 Completed worker-1 0 0
}
