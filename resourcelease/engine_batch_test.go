package resourcelease_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// batchRecorder is a BatchJournal that records which changes came as one
// unit, and can fail a unit.
type batchRecorder struct {
	recorder
	mu    sync.Mutex
	units [][]resourcelease.ChangeKind // one per Record or RecordAll call
	fail  error
}

func (b *batchRecorder) Record(c *resourcelease.Change) resourcelease.Ack {
	b.mu.Lock()
	b.units = append(b.units, []resourcelease.ChangeKind{c.Kind})
	fail := b.fail
	b.mu.Unlock()
	b.recorder.Record(c)
	if fail != nil {
		return failedAck{fail}
	}
	return nil
}

func (b *batchRecorder) RecordAll(cs []*resourcelease.Change) resourcelease.Ack {
	unit := make([]resourcelease.ChangeKind, len(cs))
	for i, c := range cs {
		unit[i] = c.Kind
		b.recorder.Record(c)
	}
	b.mu.Lock()
	b.units = append(b.units, unit)
	fail := b.fail
	b.mu.Unlock()
	if fail != nil {
		return failedAck{fail}
	}
	return nil
}

func (b *batchRecorder) lastUnit() []resourcelease.ChangeKind {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.units[len(b.units)-1]
}

func (b *batchRecorder) setFail(err error) {
	b.mu.Lock()
	b.fail = err
	b.mu.Unlock()
}

func newBatchQueue(t *testing.T, cfg resourcelease.QueueConfig) (fixture, *batchRecorder) {
	t.Helper()
	j := &batchRecorder{}
	cfg.Journal = j
	f := newQueue(t, cfg)
	f.rec = &j.recorder
	return f, j
}

func kindsN(k resourcelease.ChangeKind, n int) []resourcelease.ChangeKind {
	out := make([]resourcelease.ChangeKind, n)
	for i := range out {
		out[i] = k
	}
	return out
}

// TestEnqueueBatch: each item is validated and deduplicated on its own (a
// request id repeated inside the batch too), items past capacity are
// refused one by one, and every accepted item is one unit for the journal.
func TestEnqueueBatch(t *testing.T) {
	t.Parallel()
	f, j := newBatchQueue(t, resourcelease.QueueConfig{Capacity: 4})
	seen := item("seen")
	seen.RequestID = "req-seen"
	first, err := f.q.Enqueue(ctx, seen)
	require.NoError(t, err)

	dupInBatch := item("x")
	dupInBatch.RequestID = "req-x"
	bad := item("bad")
	bad.PartitionKey = " "
	items := []resourcelease.Item{item("a"), bad, seen, dupInBatch, dupInBatch, item("b"), item("c"), item("d")}
	res, err := f.q.EnqueueBatch(ctx, items)
	require.NoError(t, err)
	require.Len(t, res, len(items))

	assert.Equal(t, int64(2), res[0].SequenceID)
	assert.ErrorIs(t, res[1].Err, &resourcelease.Error{Code: resourcelease.CodePartitionKeyRequired})
	assert.Equal(t, resourcelease.EnqueueResult{SequenceID: first.SequenceID, Duplicate: true, Stats: res[2].Stats}, res[2], "seen before the batch")
	assert.Equal(t, int64(3), res[3].SequenceID)
	assert.Equal(t, resourcelease.EnqueueResult{SequenceID: 3, Duplicate: true, Stats: res[4].Stats}, res[4], "seen earlier in the batch")
	assert.Equal(t, int64(4), res[5].SequenceID)
	for _, i := range []int{6, 7} {
		assert.ErrorIs(t, res[i].Err, resourcelease.ErrQueueFull, "item %d is past capacity", i)
		assert.Equal(t, resourcelease.StatusResourceExhausted, resourcelease.StatusOf(res[i].Err))
	}
	for i := range res {
		assert.Equal(t, resourcelease.Stats{PendingCount: 4}, res[i].Stats, "the counts after the batch")
	}
	assert.Equal(t, kindsN(resourcelease.ChangeEnqueued, 3), j.lastUnit(), "one unit for the whole batch")

	// A batch of nothing but refusals changes nothing and records nothing.
	units := len(j.units)
	res, err = f.q.EnqueueBatch(ctx, []resourcelease.Item{bad, item("e")})
	require.NoError(t, err)
	assert.Error(t, res[0].Err)
	assert.ErrorIs(t, res[1].Err, resourcelease.ErrQueueFull)
	assert.Len(t, j.units, units)
}

// TestEnqueueBatchWakesLongPolls: items of a batch go to waiting long-polls
// first come first served, and the grants are part of the batch's unit.
func TestEnqueueBatchWakesLongPolls(t *testing.T) {
	t.Parallel()
	f, j := newBatchQueue(t, resourcelease.QueueConfig{})
	got := make(chan *resourcelease.Lease, 2)
	for range 2 {
		go func() {
			l, err := f.q.Lease(ctx, "w", time.Minute)
			assert.NoError(t, err)
			got <- l
		}()
	}
	require.Eventually(t, func() bool { return f.q.Waiters() == 2 }, 5*time.Second, time.Millisecond)
	_, err := f.q.EnqueueBatch(ctx, []resourcelease.Item{item("a"), item("b"), item("c")})
	require.NoError(t, err)
	a, b := <-got, <-got
	require.NotNil(t, a)
	require.NotNil(t, b)
	assert.ElementsMatch(t, []string{"a", "b"}, []string{a.Payload.ResourceID, b.Payload.ResourceID})
	assert.Equal(t, []resourcelease.ChangeKind{
		resourcelease.ChangeEnqueued, resourcelease.ChangeEnqueued, resourcelease.ChangeEnqueued,
		resourcelease.ChangeLeased, resourcelease.ChangeLeased,
	}, j.lastUnit())
	assert.Equal(t, 1, engineStats(f.q).PendingCount)
}

// TestLeaseBatch: up to MaxItems of the ready items, oldest first, bounded
// by MaxBytes (but at least one), all granted in one unit, each with the
// lease duration as TTL.
func TestLeaseBatch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		pending  int
		opts     resourcelease.LeaseBatchOptions
		wantIDs  []string
		wantUnit int
	}{
		{"fewer ready than asked", 3, resourcelease.LeaseBatchOptions{MaxItems: 10}, []string{"i0", "i1", "i2"}, 3},
		{"more ready than asked", 5, resourcelease.LeaseBatchOptions{MaxItems: 2}, []string{"i0", "i1"}, 2},
		{"max items 0 is 1", 5, resourcelease.LeaseBatchOptions{}, []string{"i0"}, 1},
		{"max bytes fits two", 5, resourcelease.LeaseBatchOptions{MaxItems: 10, MaxBytes: 2*350 + 10}, []string{"i0", "i1"}, 2},
		{"max bytes too small still gives one", 5, resourcelease.LeaseBatchOptions{MaxItems: 10, MaxBytes: 1}, []string{"i0"}, 1},
		{"nothing ready, no wait", 0, resourcelease.LeaseBatchOptions{MaxItems: 10}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, j := newBatchQueue(t, resourcelease.QueueConfig{LeaseDuration: 20 * time.Second})
			for i := range tt.pending {
				mustEnqueue(t, f.q, fmt.Sprint("i", i))
			}
			units := len(j.units)
			leases, err := f.q.LeaseBatch(ctx, "w", tt.opts)
			require.NoError(t, err)
			var ids []string
			for _, l := range leases {
				ids = append(ids, l.Payload.ResourceID)
				assert.Equal(t, 20*time.Second, l.TTL)
				assert.Equal(t, "w", l.OwnerPeerID)
				assert.Equal(t, 1, l.Attempt)
			}
			assert.Equal(t, tt.wantIDs, ids)
			if tt.wantUnit == 0 {
				assert.Len(t, j.units, units, "nothing recorded")
				return
			}
			assert.Equal(t, kindsN(resourcelease.ChangeLeased, tt.wantUnit), j.lastUnit())
			st := engineStats(f.q)
			assert.Equal(t, resourcelease.Stats{PendingCount: tt.pending - len(ids), ActiveLeaseCount: len(ids)}, st)
		})
	}
}

// TestLeaseBatchLongPoll: with nothing ready a leaseBatch waits; the first
// item to arrive wakes it, and it takes what else is ready then without
// waiting more. The TTLs count the wait (from the call).
func TestLeaseBatchLongPoll(t *testing.T) {
	t.Parallel()
	f, _ := newBatchQueue(t, resourcelease.QueueConfig{LeaseDuration: 20 * time.Second})
	got := make(chan []*resourcelease.Lease, 1)
	go func() {
		leases, err := f.q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{Wait: time.Minute, MaxItems: 10})
		assert.NoError(t, err)
		got <- leases
	}()
	require.Eventually(t, func() bool { return f.q.Waiters() == 1 }, 5*time.Second, time.Millisecond)
	f.clock.Advance(2 * time.Second)
	_, err := f.q.EnqueueBatch(ctx, []resourcelease.Item{item("a"), item("b"), item("c")})
	require.NoError(t, err)
	leases := <-got
	require.Len(t, leases, 3, "the first woke it, the rest came without waiting")
	for i, l := range leases {
		assert.Equal(t, fmt.Sprint(string(rune('a'+i))), l.Payload.ResourceID)
	}
	assert.GreaterOrEqual(t, leases[1].TTL, 22*time.Second, "the 2 s waited count: the TTL is from the call")

	// A wait that ends empty returns no leases and no error.
	go func() {
		leases, err := f.q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{Wait: time.Second, MaxItems: 10})
		assert.NoError(t, err)
		got <- leases
	}()
	require.Eventually(t, func() bool { return f.q.Waiters() == 1 }, 5*time.Second, time.Millisecond)
	f.clock.Advance(time.Second)
	assert.Empty(t, <-got)
}

// TestLeaseBatchFailedAckGivesBack: when the batch's acknowledgement fails
// (storage), no lease is delivered and every item is given back without
// counting an attempt.
func TestLeaseBatchFailedAckGivesBack(t *testing.T) {
	t.Parallel()
	f, j := newBatchQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a", "b")
	j.setFail(resourcelease.ErrStorageUnavailable)
	_, err := f.q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{MaxItems: 5})
	require.ErrorIs(t, err, resourcelease.ErrStorageUnavailable)
	j.setFail(nil)
	assert.Equal(t, resourcelease.Stats{PendingCount: 2}, engineStats(f.q))
	leases, err := f.q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{MaxItems: 5})
	require.NoError(t, err)
	require.Len(t, leases, 2)
	assert.Equal(t, 1, leases[0].Attempt)
}

// TestHeartbeatAndCompleteBatch: per-token results (a stale, a zero and a
// repeated token are refused on their own), one unit each.
func TestHeartbeatAndCompleteBatch(t *testing.T) {
	t.Parallel()
	f, j := newBatchQueue(t, resourcelease.QueueConfig{LeaseDuration: 10 * time.Second})
	mustEnqueue(t, f.q, "a", "b", "c")
	leases, err := f.q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{MaxItems: 3})
	require.NoError(t, err)
	require.Len(t, leases, 3)
	stale := resourcelease.OwnershipToken{SequenceID: leases[0].SequenceID, Attempt: 1, LeaseID: uuid.New()}
	tokens := []resourcelease.OwnershipToken{leases[0].OwnershipToken, stale, {}, leases[1].OwnershipToken, leases[2].OwnershipToken}

	f.clock.Advance(4 * time.Second)
	hb, err := f.q.HeartbeatBatch(ctx, tokens)
	require.NoError(t, err)
	require.Len(t, hb, len(tokens))
	for _, i := range []int{0, 3, 4} {
		require.NoError(t, hb[i].Err)
		assert.True(t, hb[i].LeaseExpiresAt.Equal(f.clock.Now().Add(10*time.Second)))
		assert.Equal(t, 10*time.Second, hb[i].TTL)
	}
	assert.ErrorIs(t, hb[1].Err, resourcelease.ErrUnknownToken)
	assert.ErrorIs(t, hb[2].Err, &resourcelease.Error{Code: resourcelease.CodeTokenRequired})
	assert.Equal(t, kindsN(resourcelease.ChangeHeartbeat, 3), j.lastUnit())

	errs, err := f.q.CompleteBatch(ctx, append(tokens, leases[0].OwnershipToken))
	require.NoError(t, err)
	require.Len(t, errs, len(tokens)+1)
	assert.NoError(t, errs[0])
	assert.ErrorIs(t, errs[1], resourcelease.ErrUnknownToken)
	assert.ErrorIs(t, errs[2], &resourcelease.Error{Code: resourcelease.CodeTokenRequired})
	assert.NoError(t, errs[3])
	assert.NoError(t, errs[4])
	assert.ErrorIs(t, errs[5], resourcelease.ErrUnknownToken, "completed earlier in the same batch")
	assert.Equal(t, kindsN(resourcelease.ChangeCompleted, 3), j.lastUnit())
	assert.Equal(t, resourcelease.Stats{}, engineStats(f.q))
}

// TestTokenBatchExpiresLapsedLeases: a heartbeat batch that meets a lease
// past its expiry expires it (in the same unit) and refuses its token.
func TestTokenBatchExpiresLapsedLeases(t *testing.T) {
	t.Parallel()
	f, j := newBatchQueue(t, resourcelease.QueueConfig{LeaseDuration: 10 * time.Second, SweepInterval: time.Hour})
	mustEnqueue(t, f.q, "a")
	l := mustLease(t, f.q, "w")
	f.clock.Advance(11 * time.Second)
	hb, err := f.q.HeartbeatBatch(ctx, []resourcelease.OwnershipToken{l.OwnershipToken})
	require.NoError(t, err)
	assert.ErrorIs(t, hb[0].Err, resourcelease.ErrUnknownToken)
	assert.Equal(t, []resourcelease.ChangeKind{resourcelease.ChangeExpired}, j.lastUnit())
}

// TestBatchesWithoutBatchJournal: a Journal without RecordAll gets the
// batch's changes one by one, and the batch still waits for them.
func TestBatchesWithoutBatchJournal(t *testing.T) {
	t.Parallel()
	f := newQueue(t, resourcelease.QueueConfig{})
	res, err := f.q.EnqueueBatch(ctx, []resourcelease.Item{item("a"), item("b")})
	require.NoError(t, err)
	require.Len(t, res, 2)
	assert.Equal(t, kindsN(resourcelease.ChangeEnqueued, 2), f.rec.kinds())
	f.rec.mu.Lock()
	f.rec.fail = errors.New("disk on fire")
	f.rec.mu.Unlock()
	_, err = f.q.EnqueueBatch(ctx, []resourcelease.Item{item("c"), item("d")})
	require.Error(t, err, "the batch's failed acknowledgement is its error")
}

// TestBatchesOnAClosedEngine: every batch operation refuses with ErrClosed,
// and with the context's error once it is done.
func TestBatchesOnAClosedEngine(t *testing.T) {
	t.Parallel()
	f := newQueue(t, resourcelease.QueueConfig{})
	require.NoError(t, f.q.Close())
	for name, call := range map[string]func() error{
		"enqueue": func() error { _, err := f.q.EnqueueBatch(ctx, []resourcelease.Item{item("a")}); return err },
		"lease": func() error {
			_, err := f.q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{MaxItems: 2})
			return err
		},
		"heartbeat": func() error { _, err := f.q.HeartbeatBatch(ctx, nil); return err },
		"complete":  func() error { _, err := f.q.CompleteBatch(ctx, nil); return err },
	} {
		assert.ErrorIs(t, call(), resourcelease.ErrClosed, name)
	}
	open := newQueue(t, resourcelease.QueueConfig{})
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err := open.q.EnqueueBatch(cctx, []resourcelease.Item{item("a")})
	assert.Equal(t, resourcelease.StatusCancelled, resourcelease.StatusOf(err), "a done context refuses the batch")
}
