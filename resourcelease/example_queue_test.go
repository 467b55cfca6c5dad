package resourcelease_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// A producer enqueues, a worker leases, heartbeats and completes; the spent
// token is fenced off afterwards.
func ExampleEngine() {
	ctx := context.Background()
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{})
	if err != nil {
		panic(err)
	}
	defer q.Close()

	_, err = q.Enqueue(ctx, resourcelease.Item{
		ResourceType: "demo.order", ResourceID: "order-0001", PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"total":42}`),
	})
	if err != nil {
		panic(err)
	}

	lease, err := q.Lease(ctx, "worker-a", 5*time.Second) // long-poll up to 5 s
	if err != nil || lease == nil {
		panic("no lease")
	}
	fmt.Println("leased", lease.Payload.ResourceID, "attempt", lease.Attempt)
	if _, err := q.Heartbeat(ctx, lease.OwnershipToken); err != nil {
		panic(err)
	}
	fmt.Println("complete:", q.Complete(ctx, lease.OwnershipToken))
	err = q.Complete(ctx, lease.OwnershipToken)
	fmt.Println("again:", errors.Is(err, resourcelease.ErrUnknownToken), resourcelease.StatusOf(err))
	// Output:
	// leased order-0001 attempt 1
	// complete: <nil>
	// again: true not-found
}

// A failed attempt goes back with its error; the next delivery sees it.
func ExampleEngine_Fail() {
	ctx := context.Background()
	q, _ := resourcelease.NewEngine(resourcelease.QueueConfig{MaxDeliveryAttempts: 2})
	defer q.Close()
	q.Enqueue(ctx, resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", PayloadEncoding: "raw"})

	l, _ := q.Lease(ctx, "w", 0)
	q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "db timeout", ErrorCode: "app.timeout"})
	l, _ = q.Lease(ctx, "w", 0)
	fmt.Println("attempt", l.Attempt, "lastError", l.LastError.Code)
	q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "db timeout"})

	dead, _ := q.DeadLetters(ctx, 0)
	fmt.Println(len(dead), "dead letter:", dead[0].Reason)
	// Output:
	// attempt 2 lastError app.timeout
	// 1 dead letter: max delivery attempts (2) exceeded: db timeout
}

// Lease expiry is driven by the injected clock: no real waiting in tests.
func ExampleQueueConfig_clock() {
	ctx := context.Background()
	clock := leasetest.NewManualClock(time.Time{})
	q, _ := resourcelease.NewEngine(resourcelease.QueueConfig{Clock: clock, LeaseDuration: 30 * time.Second})
	defer q.Close()
	q.Enqueue(ctx, resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", PayloadEncoding: "raw"})
	l, _ := q.Lease(ctx, "slow-worker", 0)

	clock.Advance(31 * time.Second)
	_, err := q.Heartbeat(ctx, l.OwnershipToken)
	fmt.Println("late heartbeat:", resourcelease.CodeOf(err))
	again, _ := q.Lease(ctx, "other-worker", 0)
	fmt.Println("redelivered attempt", again.Attempt, "because", again.LastError.Code)
	// Output:
	// late heartbeat: error.resourcelease.unknown_token
	// redelivered attempt 2 because error.resourcelease.lease_expired
}
