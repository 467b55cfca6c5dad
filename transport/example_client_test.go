package transport_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http/httptest"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// A Client round trip: enqueue, lease, heartbeat, complete. Errors cross the
// wire as *resourcelease.Error, so errors.Is works against the sentinels.
func ExampleClient() {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	h, err := transport.NewHandler(d, transport.HandlerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	c, err := transport.NewClient(srv.URL, transport.ClientConfig{Caller: "worker-1"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	enq, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
		ResourceType: "demo.order", ResourceID: "order-0001", PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"qty":2}`),
	}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("enqueued sequence", enq.SequenceID, "pending", enq.Stats.PendingCount)

	l, err := c.Lease(ctx, &resourcelease.LeaseRequest{Wait: 1000 * time.Millisecond}) // long-polls up to 1 s
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("leased %s attempt %d by %s: %s\n", l.Payload.ResourceID, l.Attempt, l.OwnerPeerID, l.Payload.Body)

	if _, err := c.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: l.OwnershipToken}); err != nil {
		log.Fatal(err)
	}
	if err := c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}); err != nil {
		log.Fatal(err)
	}

	err = c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
	fmt.Println("again:", errors.Is(err, resourcelease.ErrUnknownToken), resourcelease.StatusOf(err))

	none, err := c.Lease(ctx, nil)
	fmt.Println("next lease:", none, err)
	// Output:
	// enqueued sequence 1 pending 1
	// leased order-0001 attempt 1 by worker-1: {"qty":2}
	// again: true not-found
	// next lease: <nil> <nil>
}

// Call sends a raw request with the full procedure name, as `leasectl
// request` does.
func ExampleClient_Call() {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	h, err := transport.NewHandler(d, transport.HandlerConfig{Namespace: "resourcelease.mesh"})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, err := transport.NewClient(srv.URL, transport.ClientConfig{})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	out, err := c.Call(context.Background(), "resourcelease.mesh::stats", []byte(`{}`))
	fmt.Println(string(out), err)
	_, err = c.Call(context.Background(), "resourcelease.mesh::enqueue", []byte(`{"payload":{}}`))
	fmt.Println(err)
	// Output:
	// {"pendingCount":0,"activeLeaseCount":0,"deadLetterCount":0,"backpressureActive":false} <nil>
	// resourcelease.payload.resource_type_required: payload.resourceType is required
}

// A Client over two dispatchers of one mesh (here two handlers over one
// queue, one of them dead): every call goes through the live one, and the
// dead one is tried again only after its back-off.
func ExampleClientConfig_urls() {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	h, err := transport.NewHandler(d, transport.HandlerConfig{})
	if err != nil {
		log.Fatal(err)
	}
	live := httptest.NewServer(h)
	defer live.Close()
	dead := httptest.NewServer(h)
	dead.Close() // connections to it are refused

	c, err := transport.NewClient("", transport.ClientConfig{URLs: []string{dead.URL, live.URL}, Caller: "worker-1"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	for i := range 3 {
		if _, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
			ResourceType: "demo.order", ResourceID: fmt.Sprint("order-", i), PartitionKey: "tenant-1",
			PayloadEncoding: "application/json", Body: []byte(`{}`),
		}}); err != nil {
			log.Fatal(err)
		}
	}
	for range 3 {
		l, err := c.Lease(ctx, nil)
		if err != nil {
			log.Fatal(err)
		}
		if err := c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}); err != nil {
			log.Fatal(err)
		}
	}
	st, err := c.Stats(ctx, nil)
	fmt.Println("pending", st.PendingCount, "active", st.ActiveLeaseCount, err)
	// Output:
	// pending 0 active 0 <nil>
}
