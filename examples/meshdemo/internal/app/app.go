// Package app is the mesh demo itself: it runs a seeder that enqueues
// demo.order items and two workers (mesh-worker-a, mesh-worker-b) that lease,
// heartbeat and complete them (failing about 20% with requeue), and prints a
// status line every few seconds until its context ends.
package app

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Options tune Start for tests; the zero value is the demo's defaults.
type Options struct {
	// SeedInterval is how often the seeder enqueues an item. Defaults to 1s.
	SeedInterval time.Duration
	// StatusInterval is how often the status line is printed. Defaults to 5s.
	StatusInterval time.Duration
	// WorkTime is how long a worker "works" on an item. Defaults to 300ms.
	WorkTime time.Duration
	// Out receives the console output. Defaults to os.Stdout.
	Out io.Writer
}

// Counters are the demo's running totals.
type Counters struct {
	Enqueued, Completed, Failed atomic.Int64
}

// Run runs the in-process demo until ctx ends. args are reserved for the
// configuration layers of the full demo.
func Run(ctx context.Context, args []string) error {
	_ = args
	_, err := run(ctx, Options{})
	return err
}

func run(ctx context.Context, o Options) (*Counters, error) {
	if o.SeedInterval <= 0 {
		o.SeedInterval = time.Second
	}
	if o.StatusInterval <= 0 {
		o.StatusInterval = 5 * time.Second
	}
	if o.WorkTime <= 0 {
		o.WorkTime = 300 * time.Millisecond
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	q, err := resourcelease.NewMemoryQueue(resourcelease.QueueConfig{LeaseDuration: 10 * time.Second, HeartbeatInterval: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	defer q.Close()
	fmt.Fprintln(o.Out, "meshdemo: in-process demo (seeder + mesh-worker-a + mesh-worker-b); Ctrl-C to stop")

	var c Counters
	var wg sync.WaitGroup
	wg.Go(func() { seed(ctx, q, o.SeedInterval, &c) })
	for _, peer := range []string{"mesh-worker-a", "mesh-worker-b"} {
		wg.Go(func() { work(ctx, q, peer, o.WorkTime, &c) })
	}
	t := time.NewTicker(o.StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			printStatus(o.Out, q.Stats(), &c)
			return &c, nil
		case <-t.C:
			printStatus(o.Out, q.Stats(), &c)
		}
	}
}

func printStatus(w io.Writer, s resourcelease.Stats, c *Counters) {
	fmt.Fprintf(w, "status: pending=%d active=%d completed=%d failed=%d dead-lettered=%d\n",
		s.PendingCount, s.ActiveLeaseCount, c.Completed.Load(), c.Failed.Load(), s.DeadLetterCount)
}

func seed(ctx context.Context, q resourcelease.Queue, every time.Duration, c *Counters) {
	t := time.NewTicker(every)
	defer t.Stop()
	for n := 1; ; n++ {
		prio := "normal"
		if n%5 == 0 {
			prio = "high"
		}
		tenant := fmt.Sprintf("tenant-%d", (n-1)%3+1)
		_, err := q.Enqueue(ctx, resourcelease.Item{
			ResourceType: "demo.order", ResourceID: fmt.Sprintf("order-%04d", n), PartitionKey: tenant,
			PayloadEncoding: "application/json", Body: fmt.Appendf(nil, `{"order":%d}`, n),
			Attributes: map[string]string{"tenant": tenant, "priority": prio},
		})
		if err == nil {
			c.Enqueued.Add(1)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func work(ctx context.Context, q resourcelease.Queue, peer string, workTime time.Duration, c *Counters) {
	for ctx.Err() == nil {
		l, err := q.Lease(ctx, peer, 2*time.Second)
		if err != nil || l == nil {
			continue
		}
		select {
		case <-ctx.Done():
			_ = q.Fail(context.WithoutCancel(ctx), l.OwnershipToken, resourcelease.FailOptions{Reason: "shutting down", Requeue: true})
			return
		case <-time.After(workTime / 2):
		}
		_, _ = q.Heartbeat(ctx, l.OwnershipToken)
		time.Sleep(workTime / 2)
		if rand.IntN(5) == 0 {
			if q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "simulated failure", ErrorCode: "demo.simulated", Requeue: true}) == nil {
				c.Failed.Add(1)
			}
			continue
		}
		if q.Complete(ctx, l.OwnershipToken) == nil {
			c.Completed.Add(1)
		}
	}
}
