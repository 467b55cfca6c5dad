package resourcelease_test

import (
	"context"
	"fmt"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A service embeds a Dispatcher: a producer enqueues, a worker (named by the
// caller in the context, as the transport does) leases and completes, and the
// metrics on the service's own registry follow.
func ExampleNewDispatcher() {
	reg := prometheus.NewRegistry()
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{
		Queue:      resourcelease.QueueConfig{LeaseDuration: time.Minute},
		Registerer: reg,
	})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	ctx := context.Background()

	enq, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
		ResourceType: "demo.order", ResourceID: "order-0001", PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"total":42}`),
	}})
	if err != nil {
		panic(err)
	}
	fmt.Println("enqueued sequence", enq.SequenceID, "pending", enq.Stats.PendingCount)

	worker := resourcelease.WithCallInfo(ctx, resourcelease.CallInfo{Caller: "worker-a"})
	lease, err := d.Lease(worker, &resourcelease.LeaseRequest{Wait: 5000 * time.Millisecond})
	if err != nil || lease == nil {
		panic("no lease")
	}
	fmt.Println("leased", lease.Payload.ResourceID, "to", lease.OwnerPeerID, "attempt", lease.Attempt)

	if err := d.Complete(worker, &resourcelease.CompleteRequest{OwnershipToken: lease.OwnershipToken}); err != nil {
		panic(err)
	}
	fmt.Println("completed:", true)

	stats, _ := d.Stats(ctx, &resourcelease.StatsRequest{})
	fmt.Printf("pending %d, active %d, backpressure %v\n", stats.PendingCount, stats.ActiveLeaseCount, stats.BackpressureActive)
	n, _ := testutil.GatherAndCount(reg, resourcelease.MetricCompleted)
	fmt.Println("completed series:", n)
	// Output:
	// enqueued sequence 1 pending 1
	// leased order-0001 to worker-a attempt 1
	// completed: true
	// pending 0, active 0, backpressure false
	// completed series: 1
}
