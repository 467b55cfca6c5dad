package resourcelease_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func seqs(items []resourcelease.PendingItem) []int64 {
	out := make([]int64, len(items))
	for i, p := range items {
		out[i] = p.SequenceID
	}
	return out
}

// drainedChanges returns the items of every ChangeDrained recorded so far.
func drainedChanges(r *recorder) [][]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]int64
	for _, c := range r.changes {
		if c.Kind == resourcelease.ChangeDrained {
			out = append(out, seqs(c.Items))
		}
	}
	return out
}

// TestDrainNOldestFirstAcrossRingRedoAndDelayed builds pending items in all
// three places (new enqueues in the ring, restored ready ones in the redo
// heap, restored not-yet-ready ones in the delayed heap, which is ordered by
// ready time) and checks that pages come out in sequence order, one change
// per page, with more set until the queue is empty.
func TestDrainNOldestFirstAcrossRingRedoAndDelayed(t *testing.T) {
	g := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, g.q, "1", "2", "3", "4", "5", "6", "7", "8")
	src, err := g.q.Drain(ctx)
	require.NoError(t, err)
	require.Len(t, src, 8)

	f := newQueue(t, resourcelease.QueueConfig{})
	now := f.clock.Now()
	restore := func(p resourcelease.PendingItem, readyIn time.Duration) {
		t.Helper()
		if readyIn > 0 {
			p.ReadyAt = now.Add(readyIn)
		}
		_, err := f.q.Restore(ctx, []resourcelease.PendingItem{p})
		require.NoError(t, err)
	}
	mustEnqueue(t, f.q, "x")       // seq 1, ring
	restore(src[1], 0)             // seq 2, redo
	mustEnqueue(t, f.q, "y")       // seq 3, ring
	restore(src[3], 2*time.Minute) // seq 4, delayed (later)
	restore(src[5], time.Minute)   // seq 6, delayed (sooner)
	mustEnqueue(t, f.q, "z")       // seq 7, ring
	restore(src[4], 0)             // seq 5, redo
	mustEnqueue(t, f.q, "w")       // seq 8, ring
	require.Equal(t, 8, engineStats(f.q).PendingCount)

	items, more, err := f.q.DrainN(ctx, 4, 0)
	require.NoError(t, err)
	assert.Equal(t, []int64{1, 2, 3, 4}, seqs(items))
	assert.True(t, more)
	assert.Equal(t, "x", items[0].Payload.ResourceID)
	assert.Equal(t, 4, engineStats(f.q).PendingCount)

	// Seq 6 is still delayed (the heap was rebuilt), 5 is the oldest ready.
	l := mustLease(t, f.q, "w")
	assert.Equal(t, int64(5), l.SequenceID)

	items, more, err = f.q.DrainN(ctx, 2, 0)
	require.NoError(t, err)
	assert.Equal(t, []int64{6, 7}, seqs(items))
	assert.True(t, more)
	assert.False(t, items[0].ReadyAt.IsZero(), "a delayed item keeps its ready time")

	items, more, err = f.q.DrainN(ctx, 0, 0)
	require.NoError(t, err)
	assert.Equal(t, []int64{8}, seqs(items))
	assert.False(t, more)
	assert.Equal(t, resourcelease.Stats{ActiveLeaseCount: 1}, engineStats(f.q), "leases are untouched")

	// Empty: nothing returned, nothing recorded.
	items, more, err = f.q.DrainN(ctx, 3, 100)
	require.NoError(t, err)
	assert.Empty(t, items)
	assert.False(t, more)

	assert.Equal(t, [][]int64{{1, 2, 3, 4}, {6, 7}, {8}}, drainedChanges(f.rec), "one change per call, with exactly its items")

}

func TestDrainNByBytes(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	for i := range 5 {
		it := item(string(rune('a' + i)))
		it.Body = []byte(strings.Repeat("b", 1000))
		it.Attributes = map[string]string{"k": "v"}
		_, err := f.q.Enqueue(ctx, it)
		require.NoError(t, err)
	}
	// About 1.7 KB each by the estimate: two fit in 3500 bytes, not three.
	items, more, err := f.q.DrainN(ctx, 0, 3500)
	require.NoError(t, err)
	assert.Equal(t, []int64{1, 2}, seqs(items))
	assert.True(t, more)
	data, err := json.Marshal(&resourcelease.DrainResponse{Items: items, More: more})
	require.NoError(t, err)
	assert.LessOrEqual(t, len(data), 3500, "the estimate does not undercount plain items")

	// A limit below one item still returns one.
	items, more, err = f.q.DrainN(ctx, 0, 1)
	require.NoError(t, err)
	assert.Equal(t, []int64{3}, seqs(items))
	assert.True(t, more)

	// Both limits: the tighter one wins.
	items, more, err = f.q.DrainN(ctx, 1, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, []int64{4}, seqs(items))
	assert.True(t, more)

	items, more, err = f.q.DrainN(ctx, 10, 1<<20)
	require.NoError(t, err)
	assert.Equal(t, []int64{5}, seqs(items))
	assert.False(t, more)
	assert.Equal(t, [][]int64{{1, 2}, {3}, {4}, {5}}, drainedChanges(f.rec))

	// Room freed by a paged drain is usable at once.
	mustEnqueue(t, f.q, "again")
	assert.Equal(t, 1, engineStats(f.q).PendingCount)
}

func TestDispatcherDrainPaged(t *testing.T) {
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{})
	require.NoError(t, err)
	defer d.Close()
	for _, id := range []string{"a", "b", "c"} {
		_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: new(item(id))})
		require.NoError(t, err)
	}
	for _, req := range []*resourcelease.DrainRequest{{Limit: -1}, {MaxBytes: -1}} {
		_, err := d.Drain(ctx, req)
		e := resourcelease.AsError(err)
		require.NotNil(t, e)
		assert.Equal(t, resourcelease.StatusInvalidArgument, e.Status)
		assert.Equal(t, resourcelease.CodeInvalidArgument, e.Code)
	}
	st, err := d.Stats(ctx, &resourcelease.StatsRequest{})
	require.NoError(t, err)
	assert.Equal(t, 3, st.PendingCount, "a refused drain removes nothing")

	resp, err := d.Drain(ctx, &resourcelease.DrainRequest{Limit: 2})
	require.NoError(t, err)
	assert.Equal(t, []int64{1, 2}, seqs(resp.Items))
	assert.True(t, resp.More)
	resp, err = d.Drain(ctx, nil) // no limits: everything left
	require.NoError(t, err)
	assert.Equal(t, []int64{3}, seqs(resp.Items))
	assert.False(t, resp.More)
	resp, err = d.Drain(ctx, &resourcelease.DrainRequest{MaxBytes: 1 << 20})
	require.NoError(t, err)
	assert.NotNil(t, resp.Items)
	assert.Empty(t, resp.Items)
	assert.False(t, resp.More)
}
