package resourcelease_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConcurrentLeaseCompleteExactlyOnce: producers and long-polling consumers
// race; every item is completed exactly once and nothing is left.
func TestConcurrentLeaseCompleteExactlyOnce(t *testing.T) {
	const producers, consumers, perProducer = 4, 8, 500
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Capacity: 64})
	require.NoError(t, err)
	defer q.Close()
	var seen sync.Map
	var completed atomic.Int64
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range perProducer {
				_, err := q.Enqueue(context.Background(), item(fmt.Sprintf("p%d-%d", p, i)))
				assert.NoError(t, err)
			}
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cw sync.WaitGroup
	for c := range consumers {
		cw.Go(func() {
			for ctx.Err() == nil {
				l, err := q.Lease(ctx, fmt.Sprint("c", c), 50*time.Millisecond)
				if err != nil || l == nil {
					continue
				}
				if _, dup := seen.LoadOrStore(l.Payload.ResourceID, c); dup {
					t.Errorf("%s delivered twice", l.Payload.ResourceID)
				}
				if c%3 == 0 { // some heartbeats in the mix
					_, err := q.Heartbeat(context.Background(), l.OwnershipToken)
					assert.NoError(t, err)
				}
				assert.NoError(t, q.Complete(context.Background(), l.OwnershipToken))
				if completed.Add(1) == producers*perProducer {
					cancel()
				}
			}
		})
	}
	wg.Wait()
	cw.Wait()
	assert.Equal(t, int64(producers*perProducer), completed.Load())
	assert.Equal(t, resourcelease.Stats{}, engineStats(q))
}
