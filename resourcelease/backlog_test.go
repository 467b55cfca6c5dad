package resourcelease_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// TestBacklog: the ready items of the top partitions (with their live
// leases), the count of partitions with ready items, the delayed count and
// the oldest ready item's time stay exact through enqueues, leases,
// requeues and drains, with and without per-partition rules (and from the
// first call on, when the queue starts counting).
func TestBacklog(t *testing.T) {
	for _, cfg := range []resourcelease.QueueConfig{
		{}, {MaxActivePerPartition: 1}, {Fairness: resourcelease.FairnessPartitions},
	} {
		t.Run(fmt.Sprintf("%s/maxActive=%d", cfg.Fairness, cfg.MaxActivePerPartition), func(t *testing.T) {
			f := newQueue(t, cfg)
			ctx := context.Background()
			put := func(p string, n int) {
				for i := range n {
					it := item(fmt.Sprint(p, i))
					it.PartitionKey = p
					_, err := f.q.Enqueue(ctx, it)
					require.NoError(t, err)
				}
			}
			backlog := func(top int) resourcelease.Backlog {
				b, err := f.q.Backlog(ctx, top)
				require.NoError(t, err)
				return b
			}
			start := f.clock.Now()
			put("a", 3)
			f.clock.Advance(time.Second)
			put("b", 2)
			put("c", 1)
			b := backlog(2)
			assert.Equal(t, []resourcelease.PartitionBacklog{{PartitionKey: "a", Ready: 3}, {PartitionKey: "b", Ready: 2}}, b.Partitions)
			assert.Equal(t, 3, b.PartitionCount)
			assert.Equal(t, 6, b.Ready)
			assert.True(t, b.OldestReadySince.Equal(start), "oldest ready since %v, want %v", b.OldestReadySince, start)

			// Counted from here on: leases, a requeue, a delayed enqueue.
			l := mustLease(t, f.q, "w")
			require.Equal(t, "a", l.Payload.PartitionKey)
			it := item("later")
			it.PartitionKey, it.NotBefore = "c", f.clock.Now().Add(time.Hour)
			_, err := f.q.Enqueue(ctx, it)
			require.NoError(t, err)
			b = backlog(10)
			assert.Equal(t, []resourcelease.PartitionBacklog{{PartitionKey: "a", Ready: 2, Leased: 1}, {PartitionKey: "b", Ready: 2}, {PartitionKey: "c", Ready: 1}}, b.Partitions)
			assert.Equal(t, 1, b.Delayed)
			require.NoError(t, f.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{}))
			b = backlog(1)
			assert.Equal(t, []resourcelease.PartitionBacklog{{PartitionKey: "a", Ready: 3}}, b.Partitions)
			assert.Equal(t, 3, b.PartitionCount)

			_, _, err = f.q.DrainN(ctx, 0, 0)
			require.NoError(t, err)
			b = backlog(10)
			assert.Empty(t, b.Partitions)
			assert.Zero(t, b.PartitionCount)
			assert.True(t, b.OldestReadySince.IsZero())
			put("d", 1)
			assert.Equal(t, []resourcelease.PartitionBacklog{{PartitionKey: "d", Ready: 1}}, backlog(10).Partitions)
		})
	}
}
