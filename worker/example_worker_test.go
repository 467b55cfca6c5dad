package worker_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/worker"
)

// A Worker leases, heartbeats and completes (or fails with requeue) until its
// context ends. Here it works in process; given a Client instead, the same
// code works over the network.
func ExampleWorker() {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	ctx := context.Background()
	for _, id := range []string{"order-0001", "order-0002", "order-0003"} {
		_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
			ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-1", PayloadEncoding: "application/json"}})
		if err != nil {
			log.Fatal(err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	handled := 0
	w, err := worker.New(d, worker.Config{
		PeerID: "worker-1",
		Logger: slog.New(slog.DiscardHandler),
		Handler: func(ctx context.Context, l *resourcelease.Lease) error {
			handled++
			if handled == 4 {
				stop() // a real worker runs until SIGTERM; this one stops after four leases
			}
			if l.LastError != nil {
				fmt.Printf("%s attempt %d (last error: %s)\n", l.Payload.ResourceID, l.Attempt, l.LastError.Message)
				return nil
			}
			fmt.Printf("%s attempt %d\n", l.Payload.ResourceID, l.Attempt)
			if l.Payload.ResourceID == "order-0002" {
				return errors.New("downstream timeout") // failed with requeue: retried at once
			}
			return nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}
	s := w.Stats()
	fmt.Println("completed", s.Completed, "failed", s.Failed, "lost", s.Lost)
	// Output:
	// order-0001 attempt 1
	// order-0002 attempt 1
	// order-0002 attempt 2 (last error: downstream timeout)
	// order-0003 attempt 1
	// completed 3 failed 1 lost 0
}
