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

// seqsOf returns the sequence ids of a page.
func seqsOf(items []resourcelease.ItemInfo) []int64 {
	out := []int64{}
	for _, it := range items {
		out = append(out, it.SequenceID)
	}
	return out
}

// listAll pages through req's listing and returns every sequence id.
func listAll(t *testing.T, q *resourcelease.Engine, req resourcelease.ListItemsRequest) []int64 {
	t.Helper()
	var all []int64
	for range 100 {
		page, err := q.ListItems(ctx, req)
		require.NoError(t, err)
		all = append(all, seqsOf(page.Items)...)
		if page.NextAfter == 0 {
			return all
		}
		require.Greater(t, page.NextAfter, req.After, "the cursor must move")
		req.After = page.NextAfter
	}
	t.Fatal("the listing never ended")
	return nil
}

func TestListItemsPagesPendingInSequenceOrder(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{RequeueDelay: time.Minute})
	for i := 1; i <= 7; i++ {
		it := item(fmt.Sprintf("o-%d", i))
		it.PartitionKey = fmt.Sprintf("tenant-%d", i%2)
		_, err := f.q.Enqueue(ctx, it)
		require.NoError(t, err)
	}
	// Item 1 fails and waits out a requeue delay (the delayed heap); item 2
	// is redriven from the dead letters (the redo heap); the rest are fresh.
	l1 := mustLease(t, f.q, "w")
	require.NoError(t, f.q.Fail(ctx, l1.OwnershipToken, resourcelease.FailOptions{Reason: "boom", ErrorCode: "x"}))
	l2 := mustLease(t, f.q, "w")
	require.NoError(t, f.q.Fail(ctx, l2.OwnershipToken, resourcelease.FailOptions{Reason: "poison", DeadLetter: true}))
	n, err := f.q.Redrive(ctx, resourcelease.DeadLetterSelection{SequenceIDs: []int64{l2.SequenceID}})
	require.NoError(t, err)
	require.Equal(t, 1, n)

	tests := []struct {
		name      string
		req       resourcelease.ListItemsRequest
		want      []int64
		wantAfter int64
	}{
		{"first page", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, Limit: 3}, []int64{1, 2, 3}, 3},
		{"second page", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, Limit: 3, After: 3}, []int64{4, 5, 6}, 6},
		{"last page", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, Limit: 3, After: 6}, []int64{7}, 0},
		{"exactly full last page", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, Limit: 7}, []int64{1, 2, 3, 4, 5, 6, 7}, 0},
		{"default limit", resourcelease.ListItemsRequest{State: resourcelease.ItemPending}, []int64{1, 2, 3, 4, 5, 6, 7}, 0},
		{"after the end", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, After: 7}, []int64{}, 0},
		{"partition filter", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, PartitionKey: "tenant-1"}, []int64{1, 3, 5, 7}, 0},
		{"partition filter paged", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, PartitionKey: "tenant-0", Limit: 2}, []int64{2, 4}, 4},
		{"resource id filter", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, ResourceID: "o-2"}, []int64{2}, 0},
		{"resource type filter", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, ResourceType: "demo.order", ResourceID: "o-5"}, []int64{5}, 0},
		{"no match", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, ResourceType: "other"}, []int64{}, 0},
		{"exact match only", resourcelease.ListItemsRequest{State: resourcelease.ItemPending, ResourceID: "o-"}, []int64{}, 0},
		{"no leases", resourcelease.ListItemsRequest{State: resourcelease.ItemLeased}, []int64{}, 0},
		{"no dead letters", resourcelease.ListItemsRequest{State: resourcelease.ItemDead}, []int64{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page, err := f.q.ListItems(ctx, tt.req)
			require.NoError(t, err)
			assert.Equal(t, tt.want, seqsOf(page.Items))
			assert.Equal(t, tt.wantAfter, page.NextAfter)
			require.NotNil(t, page.Items, "an empty page is [], not null")
			for _, it := range page.Items {
				assert.Equal(t, resourcelease.ItemPending, it.State)
				assert.Nil(t, it.Payload.Body, "lists carry no body")
				assert.Equal(t, len(`{"id":"`+it.Payload.ResourceID+`"}`), it.BodySize)
			}
		})
	}

	page, err := f.q.ListItems(ctx, resourcelease.ListItemsRequest{State: resourcelease.ItemPending, Limit: 2})
	require.NoError(t, err)
	delayed, redriven := page.Items[0], page.Items[1]
	assert.Equal(t, 2, delayed.Attempt)
	assert.Equal(t, &resourcelease.ErrorInfo{Message: "boom", Code: "x"}, delayed.LastError)
	assert.Equal(t, f.clock.Now().Add(time.Minute), delayed.ReadyAt)
	assert.Equal(t, 1, redriven.Attempt, "redrive starts again at attempt 1")
	assert.True(t, redriven.ReadyAt.IsZero())
}

func TestListItemsLeasedAndDead(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{LeaseDuration: time.Minute})
	mustEnqueue(t, f.q, "a", "b", "c", "d", "e")
	var leases []*resourcelease.Lease
	for _, peer := range []string{"w1", "w2", "w1", "w2"} {
		leases = append(leases, mustLease(t, f.q, peer))
	}
	// Dead-letter d (4) first, then b (2): dead-letter order is not sequence order.
	require.NoError(t, f.q.Fail(ctx, leases[3].OwnershipToken, resourcelease.FailOptions{Reason: "bad d", DeadLetter: true}))
	f.clock.Advance(time.Second)
	require.NoError(t, f.q.Fail(ctx, leases[1].OwnershipToken, resourcelease.FailOptions{Reason: "bad b", DeadLetter: true}))

	leased, err := f.q.ListItems(ctx, resourcelease.ListItemsRequest{State: resourcelease.ItemLeased})
	require.NoError(t, err)
	require.Equal(t, []int64{1, 3}, seqsOf(leased.Items))
	for i, it := range leased.Items {
		assert.Equal(t, resourcelease.ItemLeased, it.State)
		assert.Equal(t, "w1", it.LeaseOwner)
		assert.Equal(t, leases[2*i].LeaseExpiresAt, it.LeaseExpiresAt)
		assert.False(t, it.LeasedAt.IsZero())
		assert.Equal(t, 1, it.Attempt)
	}

	dead, err := f.q.ListItems(ctx, resourcelease.ListItemsRequest{State: resourcelease.ItemDead, Limit: 1})
	require.NoError(t, err)
	require.Equal(t, []int64{2}, seqsOf(dead.Items))
	assert.Equal(t, int64(2), dead.NextAfter)
	assert.Equal(t, "failed without requeue: bad b", dead.Items[0].DeadLetterReason)
	assert.Equal(t, f.clock.Now(), dead.Items[0].DeadLetteredAt)
	assert.Equal(t, []int64{2, 4}, listAll(t, f.q, resourcelease.ListItemsRequest{State: resourcelease.ItemDead, Limit: 1}))
	assert.Equal(t, []int64{4}, listAll(t, f.q, resourcelease.ListItemsRequest{State: resourcelease.ItemDead, ResourceID: "d"}))
	assert.Equal(t, []int64{5}, listAll(t, f.q, resourcelease.ListItemsRequest{State: resourcelease.ItemPending}))
}

func TestListItemsBadRequests(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	for _, req := range []resourcelease.ListItemsRequest{
		{},
		{State: "done"},
		{State: "PENDING"},
		{State: resourcelease.ItemPending, After: -1},
		{State: resourcelease.ItemPending, Limit: -1},
	} {
		_, err := f.q.ListItems(ctx, req)
		assert.ErrorIs(t, err, resourcelease.ErrInvalidArgument, "%+v", req)
	}
	c, cancel := context.WithCancel(ctx)
	cancel()
	_, err := f.q.ListItems(c, resourcelease.ListItemsRequest{State: resourcelease.ItemPending})
	assert.Equal(t, resourcelease.StatusCancelled, resourcelease.StatusOf(err))
	require.NoError(t, f.q.Close())
	_, err = f.q.ListItems(ctx, resourcelease.ListItemsRequest{State: resourcelease.ItemPending})
	assert.ErrorIs(t, err, resourcelease.ErrClosed)
	_, err = f.q.Item(ctx, 1)
	assert.ErrorIs(t, err, resourcelease.ErrClosed)
}

func TestListItemsLimitIsCut(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{Capacity: -1})
	for i := range resourcelease.MaxListLimit + 2 {
		mustEnqueue(t, f.q, fmt.Sprint("o-", i))
	}
	page, err := f.q.ListItems(ctx, resourcelease.ListItemsRequest{State: resourcelease.ItemPending, Limit: 100_000})
	require.NoError(t, err)
	assert.Len(t, page.Items, resourcelease.MaxListLimit)
	assert.Equal(t, int64(resourcelease.MaxListLimit), page.NextAfter)
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

func TestItemDetail(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{RequeueDelay: time.Minute, LeaseDuration: time.Minute})
	it := item("a")
	it.Attributes = map[string]string{"tenant": "t1"}
	_, err := f.q.Enqueue(ctx, it)
	require.NoError(t, err)
	mustEnqueue(t, f.q, "b", "c", "d")

	l1 := mustLease(t, f.q, "w") // a: fails, delayed
	require.NoError(t, f.q.Fail(ctx, l1.OwnershipToken, resourcelease.FailOptions{Reason: "boom"}))
	l2 := mustLease(t, f.q, "w") // b: dead
	require.NoError(t, f.q.Fail(ctx, l2.OwnershipToken, resourcelease.FailOptions{Reason: "poison", ErrorCode: "bad", DeadLetter: true}))
	l3 := mustLease(t, f.q, "w3") // c: leased

	a, err := f.q.Item(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, resourcelease.ItemPending, a.State)
	assert.Equal(t, []byte(`{"id":"a"}`), a.Payload.Body, "the detail has the body")
	assert.Equal(t, map[string]string{"tenant": "t1"}, a.Payload.Attributes)
	assert.Equal(t, 2, a.Attempt)
	assert.Equal(t, "boom", a.LastError.Message)
	assert.False(t, a.ReadyAt.IsZero())
	assert.False(t, a.EnqueuedAt.IsZero())

	b, err := f.q.Item(ctx, 2)
	require.NoError(t, err)
	assert.Equal(t, resourcelease.ItemDead, b.State)
	assert.Equal(t, "failed without requeue: poison", b.DeadLetterReason)
	assert.Equal(t, &resourcelease.ErrorInfo{Message: "poison", Code: "bad"}, b.LastError)

	c, err := f.q.Item(ctx, 3)
	require.NoError(t, err)
	assert.Equal(t, resourcelease.ItemLeased, c.State)
	assert.Equal(t, "w3", c.LeaseOwner)
	assert.Equal(t, l3.LeaseExpiresAt, c.LeaseExpiresAt)

	d, err := f.q.Item(ctx, 4)
	require.NoError(t, err)
	assert.Equal(t, resourcelease.ItemPending, d.State)
	assert.Equal(t, 1, d.Attempt)

	require.NoError(t, f.q.Complete(ctx, l3.OwnershipToken))
	for _, seq := range []int64{3, 5, 0, -1} {
		_, err = f.q.Item(ctx, seq)
		assert.ErrorIs(t, err, resourcelease.ErrItemNotFound, "seq %d", seq)
		assert.Equal(t, resourcelease.StatusNotFound, resourcelease.StatusOf(err))
	}
}

func TestPauseStopsGrantsOnly(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{LeaseDuration: time.Minute})
	mustEnqueue(t, f.q, "a", "b")
	held := mustLease(t, f.q, "w")

	require.NoError(t, f.q.Pause(ctx))
	require.NoError(t, f.q.Pause(ctx), "pausing twice is fine")
	assert.True(t, f.q.Paused())
	assert.True(t, mustStats(t, f.q).Paused)

	l, err := f.q.Lease(ctx, "w", 0)
	require.NoError(t, err)
	assert.Nil(t, l, "no lease while paused")

	// A long-poll waits through the pause; enqueues and redrives hand it nothing.
	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := f.q.Lease(ctx, "poller", time.Hour)
		assert.NoError(t, err)
		got <- l
	}()
	require.Eventually(t, func() bool { return f.q.Waiters() == 1 }, 5*time.Second, time.Millisecond)
	mustEnqueue(t, f.q, "c")
	_, err = f.q.Heartbeat(ctx, held.OwnershipToken)
	require.NoError(t, err, "heartbeats keep working")
	require.NoError(t, f.q.Fail(ctx, held.OwnershipToken, resourcelease.FailOptions{Reason: "x", DeadLetter: true}), "fails keep working")
	_, err = f.q.Redrive(ctx, resourcelease.DeadLetterSelection{SequenceIDs: []int64{held.SequenceID}})
	require.NoError(t, err)
	select {
	case l := <-got:
		t.Fatalf("a lease was granted while paused: %+v", l)
	default:
	}
	st := mustStats(t, f.q)
	assert.Equal(t, 0, st.ActiveLeaseCount)
	assert.Equal(t, 3, st.PendingCount)
	assert.Equal(t, 1, f.q.Waiters())

	require.NoError(t, f.q.Resume(ctx))
	l = <-got
	require.NotNil(t, l, "the waiting long-poll is served on resume")
	assert.Equal(t, "poller", l.OwnerPeerID)
	assert.Equal(t, int64(1), l.SequenceID, "oldest first")
	assert.False(t, mustStats(t, f.q).Paused)
	assert.Equal(t, int64(2), mustLease(t, f.q, "w").SequenceID)
	require.NoError(t, f.q.Resume(ctx), "resuming a running queue is fine")
}

func TestPausedLongPollEndsEmpty(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a")
	require.NoError(t, f.q.Pause(ctx))
	done := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := f.q.Lease(ctx, "w", 5*time.Second)
		assert.NoError(t, err)
		done <- l
	}()
	require.True(t, f.clock.WaitForTimers(2, 5*time.Second)) // sweeper + the wait
	f.clock.Advance(5 * time.Second)
	assert.Nil(t, <-done, "the wait bounds a long-poll while paused")
	require.NoError(t, f.q.Close())
	assert.ErrorIs(t, f.q.Pause(ctx), resourcelease.ErrClosed)
	assert.ErrorIs(t, f.q.Resume(ctx), resourcelease.ErrClosed)
}

// mustStats returns q's counts, failing the test on an error.
func mustStats(t *testing.T, q *resourcelease.Engine) resourcelease.Stats {
	t.Helper()
	st, err := q.Stats(context.Background())
	require.NoError(t, err)
	return st
}
