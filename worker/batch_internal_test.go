package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

func tok(i int) resourcelease.OwnershipToken {
	return resourcelease.OwnershipToken{SequenceID: int64(i), Attempt: 1, LeaseID: uuid.New()}
}

func (c *completer) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

// TestCompleterGroupsWhatArrivesMeanwhile: the first completion goes out
// alone and at once; those that arrive while it is in flight go out together
// in the next call, up to the batch size, each getting its own result.
func TestCompleterGroupsWhatArrivesMeanwhile(t *testing.T) {
	t.Parallel()
	unblock := make(chan struct{})
	var (
		mu    sync.Mutex
		calls [][]resourcelease.OwnershipToken
	)
	f := &leasetest.FakeDispatcher{CompleteBatchFn: func(_ context.Context, r *resourcelease.CompleteBatchRequest) ([]error, error) {
		mu.Lock()
		calls = append(calls, r.OwnershipTokens)
		first := len(calls) == 1
		mu.Unlock()
		if first {
			<-unblock
		}
		errs := make([]error, len(r.OwnershipTokens))
		for i, tk := range r.OwnershipTokens {
			if tk.SequenceID == 3 {
				errs[i] = resourcelease.ErrUnknownToken
			}
		}
		return errs, nil
	}}
	c := newCompleter(f, 3)
	defer c.stop()
	results := make(chan [2]any, 5)
	complete := func(i int) {
		go func() { results <- [2]any{i, c.complete(context.Background(), tok(i))} }()
	}
	complete(1)
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(calls) == 1 }, 5*time.Second, time.Millisecond)
	for i := 2; i <= 5; i++ {
		complete(i)
	}
	require.Eventually(t, func() bool { return c.queued() == 4 }, 5*time.Second, time.Millisecond)
	close(unblock)
	got := map[int]error{}
	for range 5 {
		r := <-results
		got[r[0].(int)], _ = r[1].(error)
	}
	for i := 1; i <= 5; i++ {
		if i == 3 {
			assert.ErrorIs(t, got[i], resourcelease.ErrUnknownToken)
			continue
		}
		assert.NoError(t, got[i], "token %d", i)
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, calls, 3, "1, then 3 (the batch size), then 1")
	assert.Len(t, calls[0], 1)
	assert.Len(t, calls[1], 3)
	assert.Len(t, calls[2], 1)
}

// TestCompleterCallBounds: the call carries the earliest deadline of its
// completions, a completion whose caller gave up is not sent, a failed call
// fails every completion in it, and a miscounted answer is internal.
func TestCompleterCallBounds(t *testing.T) {
	t.Parallel()
	deadlines := make(chan time.Time, 4)
	sizes := make(chan int, 4)
	var answer func(n int) ([]error, error)
	var amu sync.Mutex
	f := &leasetest.FakeDispatcher{CompleteBatchFn: func(ctx context.Context, r *resourcelease.CompleteBatchRequest) ([]error, error) {
		d, _ := ctx.Deadline()
		deadlines <- d
		sizes <- len(r.OwnershipTokens)
		amu.Lock()
		defer amu.Unlock()
		return answer(len(r.OwnershipTokens))
	}}
	c := newCompleter(f, 10)
	defer c.stop()
	setAnswer := func(fn func(n int) ([]error, error)) {
		amu.Lock()
		answer = fn
		amu.Unlock()
	}

	setAnswer(func(n int) ([]error, error) { return make([]error, n), nil })
	dl := time.Now().Add(time.Minute)
	ctx, cancel := context.WithDeadline(context.Background(), dl)
	defer cancel()
	require.NoError(t, c.complete(ctx, tok(1)))
	assert.True(t, (<-deadlines).Equal(dl), "the completion's deadline bounds the call")
	<-sizes

	gone, giveUp := context.WithCancel(context.Background())
	giveUp()
	assert.Error(t, c.complete(gone, tok(2)), "a caller that gave up gets its context's error")

	setAnswer(func(int) ([]error, error) { return nil, resourcelease.ErrStorageUnavailable })
	assert.ErrorIs(t, c.complete(context.Background(), tok(3)), resourcelease.ErrStorageUnavailable)
	<-deadlines
	assert.Equal(t, 1, <-sizes, "the given-up completion was not sent")

	setAnswer(func(int) ([]error, error) { return nil, nil })
	err := c.complete(context.Background(), tok(4))
	assert.Equal(t, resourcelease.StatusInternal, resourcelease.StatusOf(err))
}
