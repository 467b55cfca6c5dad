package resourcelease_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// batchDispatchers are the two ways to get batches from a Dispatcher: a
// LocalDispatcher's own, and PerItem's adapter over its per-item calls. Both
// must give the same results.
func batchDispatchers(t *testing.T) map[string]func(*resourcelease.LocalDispatcher) resourcelease.BatchDispatcher {
	t.Helper()
	return map[string]func(*resourcelease.LocalDispatcher) resourcelease.BatchDispatcher{
		"local": func(d *resourcelease.LocalDispatcher) resourcelease.BatchDispatcher { return d },
		"per item": func(d *resourcelease.LocalDispatcher) resourcelease.BatchDispatcher {
			return resourcelease.PerItem(struct{ resourcelease.Dispatcher }{d})
		},
	}
}

// TestDispatcherBatchCycle runs enqueue → lease → heartbeat → complete in
// batches, natively and through PerItem, with per-item refusals.
func TestDispatcherBatchCycle(t *testing.T) {
	t.Parallel()
	for name, as := range batchDispatchers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newLD(t, resourcelease.DispatcherConfig{})
			bd := as(f.d)
			ctx := context.Background()
			bad := *ldItem("bad")
			bad.ResourceType = ""
			payloads := []resourcelease.Item{*ldItem("a"), bad, *ldItem("b"), *ldItem("c")}
			er, err := bd.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: payloads})
			require.NoError(t, err)
			require.Len(t, er.Results, 4)
			assert.Equal(t, int64(1), er.Results[0].SequenceID)
			assert.ErrorIs(t, er.Results[1].Err, &resourcelease.Error{Code: resourcelease.CodeResourceTypeRequired})
			assert.Equal(t, int64(2), er.Results[2].SequenceID)
			assert.Equal(t, resourcelease.QueueCounts{PendingCount: 3}, er.Stats)

			leases, err := bd.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{PeerID: "w", MaxItems: 2})
			require.NoError(t, err)
			require.Len(t, leases, 2)
			assert.Equal(t, []string{"a", "b"}, []string{leases[0].Payload.ResourceID, leases[1].Payload.ResourceID})
			leases[0].Payload.Body[0] = 'X' // the caller's copy
			tokens := []resourcelease.OwnershipToken{leases[0].OwnershipToken, {}, leases[1].OwnershipToken}

			f.clock.Advance(time.Second)
			hb, err := bd.HeartbeatBatch(ctx, &resourcelease.HeartbeatBatchRequest{OwnershipTokens: tokens})
			require.NoError(t, err)
			require.Len(t, hb, 3)
			assert.NoError(t, hb[0].Err)
			assert.Equal(t, resourcelease.DefaultLeaseDuration, hb[0].TTL)
			assert.ErrorIs(t, hb[1].Err, &resourcelease.Error{Code: resourcelease.CodeTokenRequired})
			assert.NoError(t, hb[2].Err)

			errs, err := bd.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: tokens})
			require.NoError(t, err)
			require.Len(t, errs, 3)
			assert.NoError(t, errs[0])
			assert.Error(t, errs[1])
			assert.NoError(t, errs[2])

			rest, err := bd.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{PeerID: "w", MaxItems: 10})
			require.NoError(t, err)
			require.Len(t, rest, 1)
			assert.Equal(t, `{"id":"c"}`, string(rest[0].Payload.Body))
			none, err := bd.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{PeerID: "w", MaxItems: 10})
			require.NoError(t, err)
			assert.Empty(t, none)
		})
	}
}

// TestDispatcherBatchLimits: batches over MaxBatchItems, a maxItems outside
// 1..MaxBatchItems and negative waits or byte bounds are invalid-argument,
// natively and through PerItem; nil requests are empty batches.
func TestDispatcherBatchLimits(t *testing.T) {
	t.Parallel()
	for name, as := range batchDispatchers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			f := newLD(t, resourcelease.DispatcherConfig{})
			bd := as(f.d)
			ctx := context.Background()
			tooMany := make([]resourcelease.OwnershipToken, resourcelease.MaxBatchItems+1)
			for _, tt := range []struct {
				name string
				call func() error
				code string
			}{
				{"enqueue too many", func() error {
					_, err := bd.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: make([]resourcelease.Item, resourcelease.MaxBatchItems+1)})
					return err
				}, resourcelease.CodeBatchTooLarge},
				{"lease maxItems 0", func() error {
					_, err := bd.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{})
					return err
				}, resourcelease.CodeBatchTooLarge},
				{"lease maxItems too many", func() error {
					_, err := bd.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{MaxItems: resourcelease.MaxBatchItems + 1})
					return err
				}, resourcelease.CodeBatchTooLarge},
				{"heartbeat too many", func() error {
					_, err := bd.HeartbeatBatch(ctx, &resourcelease.HeartbeatBatchRequest{OwnershipTokens: tooMany})
					return err
				}, resourcelease.CodeBatchTooLarge},
				{"complete too many", func() error {
					_, err := bd.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: tooMany})
					return err
				}, resourcelease.CodeBatchTooLarge},
			} {
				err := tt.call()
				assert.ErrorIs(t, err, &resourcelease.Error{Code: tt.code}, tt.name)
				assert.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.StatusOf(err), tt.name)
			}
			er, err := bd.EnqueueBatch(ctx, nil)
			require.NoError(t, err)
			assert.Empty(t, er.Results)
			hb, err := bd.HeartbeatBatch(ctx, nil)
			require.NoError(t, err)
			assert.Empty(t, hb)
			errs, err := bd.CompleteBatch(ctx, nil)
			require.NoError(t, err)
			assert.Empty(t, errs)
		})
	}
	f := newLD(t, resourcelease.DispatcherConfig{})
	_, err := f.d.LeaseBatch(context.Background(), &resourcelease.LeaseBatchRequest{MaxItems: 1, Wait: -time.Second})
	assert.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
	_, err = f.d.LeaseBatch(context.Background(), &resourcelease.LeaseBatchRequest{MaxItems: 1, MaxBytes: -1})
	assert.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
}

// TestDispatcherLeaseBatchLongPoll: natively and through PerItem, a
// leaseBatch long-poll returns as soon as the first item is there, with what
// else was enqueued with it.
func TestDispatcherLeaseBatchLongPoll(t *testing.T) {
	t.Parallel()
	for name, as := range batchDispatchers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			clock := leasetest.NewManualClock(time.Time{})
			f := newLD(t, resourcelease.DispatcherConfig{Clock: clock})
			bd := as(f.d)
			got := make(chan []*resourcelease.Lease, 1)
			go func() {
				leases, err := bd.LeaseBatch(context.Background(), &resourcelease.LeaseBatchRequest{PeerID: "w", Wait: time.Minute, MaxItems: 5})
				assert.NoError(t, err)
				got <- leases
			}()
			require.Eventually(t, func() bool { return f.d.Queue().Waiters() == 1 }, 5*time.Second, time.Millisecond)
			payloads := make([]resourcelease.Item, 3)
			for i := range payloads {
				payloads[i] = *ldItem(fmt.Sprint("i", i))
			}
			_, err := f.d.EnqueueBatch(context.Background(), &resourcelease.EnqueueBatchRequest{Payloads: payloads})
			require.NoError(t, err)
			assert.Len(t, <-got, 3)
		})
	}
}

// TestDispatcherBatchesTellPeerHealthAndMetrics: a batch's changes reach
// the journal's observers one by one, as single calls do.
func TestDispatcherBatchesTellPeerHealthAndMetrics(t *testing.T) {
	t.Parallel()
	var kinds []resourcelease.ChangeKind
	repl := &recordingReplicator{record: func(c *resourcelease.Change) { kinds = append(kinds, c.Kind) }}
	f := newLD(t, resourcelease.DispatcherConfig{Replicator: repl})
	ctx := context.Background()
	_, err := f.d.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{*ldItem("a"), *ldItem("b")}})
	require.NoError(t, err)
	leases, err := f.d.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{PeerID: "w", MaxItems: 2})
	require.NoError(t, err)
	require.Len(t, leases, 2)
	assert.Equal(t, []resourcelease.ChangeKind{resourcelease.ChangeEnqueued, resourcelease.ChangeEnqueued,
		resourcelease.ChangeLeased, resourcelease.ChangeLeased}, kinds)
	assert.Equal(t, 2, repl.units, "two RecordAll calls: one per batch")
}

// recordingReplicator is a Replicator (and BatchJournal) that only records.
type recordingReplicator struct {
	record func(*resourcelease.Change)
	units  int
}

func (r *recordingReplicator) Record(c *resourcelease.Change) resourcelease.Ack {
	r.record(c)
	return nil
}

func (r *recordingReplicator) RecordAll(cs []*resourcelease.Change) resourcelease.Ack {
	r.units++
	for _, c := range cs {
		r.record(c)
	}
	return nil
}

func (r *recordingReplicator) ReadEvents(context.Context, int64, int) ([]resourcelease.Event, error) {
	return nil, nil
}
func (r *recordingReplicator) LastSequence() int64 { return 0 }
func (r *recordingReplicator) AddSink(string, resourcelease.EventSink, resourcelease.SinkOptions) error {
	return nil
}
func (r *recordingReplicator) Close() error { return nil }
