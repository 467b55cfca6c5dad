package resourcelease_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// seqsOf returns the sequence ids of a page.
func seqsOf(items []resourcelease.ItemInfo) []int64 {
	out := []int64{}
	for _, it := range items {
		out = append(out, it.SequenceID)
	}
	return out
}

// TestListItemsScanBound checks that a filter matching little stops after
// MaxListScan items in enqueue order with a cursor to go on from, and that
// an out-of-order (restored) item past that cursor is not listed before the
// items it would jump.
func TestListItemsScanBound(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{Capacity: -1})
	n := resourcelease.MaxListScan + 10
	for i := range n {
		mustEnqueue(t, f.q, fmt.Sprint("a-", i))
	}
	rare := item("rare-fresh")
	rare.PartitionKey = "rare"
	res, err := f.q.Enqueue(ctx, rare)
	require.NoError(t, err)
	restored := item("rare-restored")
	restored.PartitionKey = "rare"
	restoredSeq := int64(n + 100)
	_, err = f.q.Restore(ctx, []resourcelease.PendingItem{{Payload: restored, SequenceID: restoredSeq, Attempt: 1}})
	require.NoError(t, err)

	req := resourcelease.ListItemsRequest{State: resourcelease.ItemPending, PartitionKey: "rare"}
	first, err := f.q.ListItems(ctx, req)
	require.NoError(t, err)
	assert.Empty(t, first.Items, "nothing matched within the scan bound")
	assert.Equal(t, int64(resourcelease.MaxListScan), first.NextAfter)

	req.After = first.NextAfter
	second, err := f.q.ListItems(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, []int64{res.SequenceID, restoredSeq}, seqsOf(second.Items))
	assert.Zero(t, second.NextAfter)
}

// TestEnginePaused checks the engine's own report of the pause (the
// conformance suite checks the pause's behaviour on every store).
func TestEnginePaused(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	require.NoError(t, f.q.Pause(ctx))
	assert.True(t, f.q.Paused())
	require.NoError(t, f.q.Resume(ctx))
	assert.False(t, f.q.Paused())
}
