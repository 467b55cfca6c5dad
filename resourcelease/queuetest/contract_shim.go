package queuetest

// Merge shim: what the suite needs of the queue contract that main's
// resourcelease does not have yet. When the branch that changes
// resourcelease.Queue lands: make Queue an alias of resourcelease.Queue,
// delete Engine (the engine then is a Queue itself), and edit the three
// helpers below as their comments say.

import (
	"context"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Queue is the store-neutral queue contract the suite holds every store to.
type Queue = resourcelease.StoreQueue

// requeue is a fail that requeues. At merge: FailOptions{Reason, ErrorCode}.
func requeue(reason, code string) resourcelease.FailOptions {
	return resourcelease.FailOptions{Reason: reason, ErrorCode: code, Requeue: true}
}

// deadLetter is a fail that dead-letters. At merge: add DeadLetter: true.
func deadLetter(reason, code string) resourcelease.FailOptions {
	return resourcelease.FailOptions{Reason: reason, ErrorCode: code}
}

// heartbeatInterval is a lease's advertised heartbeat interval. At merge:
// return l.HeartbeatInterval.
func heartbeatInterval(l *resourcelease.Lease) time.Duration {
	return time.Duration(l.HeartbeatIntervalMs) * time.Millisecond
}

// Engine presents main's resourcelease.Engine as a Queue. Its Release
// ignores ReleaseOptions (run the suite with Features{} for it), and its
// batch calls are the single calls in a loop (not one commit each, which
// the suite does not check).
func Engine(e *resourcelease.Engine) Queue { return engineQueue{e} }

type engineQueue struct{ *resourcelease.Engine }

func (q engineQueue) Heartbeat(ctx context.Context, t resourcelease.OwnershipToken) (resourcelease.HeartbeatReply, error) {
	exp, err := q.Engine.Heartbeat(ctx, t)
	if err != nil {
		return resourcelease.HeartbeatReply{}, err
	}
	return resourcelease.HeartbeatReply{LeaseExpiresAt: exp, TTL: q.Config().LeaseDuration}, nil
}

func (q engineQueue) EnqueueBatch(ctx context.Context, items []resourcelease.Item) ([]resourcelease.EnqueueBatchResult, error) {
	out := make([]resourcelease.EnqueueBatchResult, len(items))
	for i, it := range items {
		if err := it.Validate(); err != nil {
			out[i].Err = err
			continue
		}
		// A batch never waits for room.
		if c := q.Config().Capacity; c > 0 && q.Engine.Stats().PendingCount >= c {
			out[i].Err = resourcelease.Errorf(resourcelease.StatusResourceExhausted, resourcelease.CodeQueueFull, "queue is at capacity")
			continue
		}
		res, err := q.Engine.Enqueue(ctx, it)
		if resourcelease.StatusOf(err) == resourcelease.StatusInvalidArgument {
			out[i].Err = err
			continue
		}
		if err != nil {
			return nil, err
		}
		out[i].EnqueueResult = res
	}
	return out, nil
}

func (q engineQueue) LeaseBatch(ctx context.Context, peer string, opts resourcelease.LeaseBatchOptions) ([]*resourcelease.Lease, error) {
	first, err := q.Engine.Lease(ctx, peer, opts.Wait)
	if err != nil || first == nil {
		return nil, err
	}
	out := []*resourcelease.Lease{first}
	size := leaseSize(first)
	for len(out) < max(opts.MaxItems, 1) && (opts.MaxBytes <= 0 || size < opts.MaxBytes) {
		l, err := q.Engine.Lease(ctx, peer, 0)
		if err != nil {
			return nil, err
		}
		if l == nil {
			break
		}
		if opts.MaxBytes > 0 && size+leaseSize(l) > opts.MaxBytes {
			if err := q.Engine.Release(ctx, l.OwnershipToken); err != nil {
				return nil, err
			}
			break
		}
		size += leaseSize(l)
		out = append(out, l)
	}
	return out, nil
}

// leaseSize approximates a lease's JSON size as the stores do.
func leaseSize(l *resourcelease.Lease) int {
	it := &l.Payload
	n := 300 + (len(it.Body)+2)/3*4 + len(it.ResourceType) + len(it.ResourceID) + len(it.PartitionKey) + len(it.PayloadEncoding) + len(it.RequestID)
	for k, v := range it.Attributes {
		n += len(k) + len(v) + 6
	}
	return n
}

func (q engineQueue) HeartbeatBatch(ctx context.Context, tokens []resourcelease.OwnershipToken) ([]resourcelease.HeartbeatBatchResult, error) {
	out := make([]resourcelease.HeartbeatBatchResult, len(tokens))
	for i, t := range tokens {
		out[i].HeartbeatReply, out[i].Err = q.Heartbeat(ctx, t)
	}
	return out, nil
}

func (q engineQueue) CompleteBatch(ctx context.Context, tokens []resourcelease.OwnershipToken) ([]error, error) {
	out := make([]error, len(tokens))
	for i, t := range tokens {
		out[i] = q.Engine.Complete(ctx, t)
	}
	return out, nil
}

func (q engineQueue) Release(ctx context.Context, t resourcelease.OwnershipToken, _ resourcelease.ReleaseOptions) error {
	return q.Engine.Release(ctx, t)
}

func (q engineQueue) Stats(context.Context) (resourcelease.Stats, error) {
	return q.Engine.Stats(), nil
}

func selectionIDs(sel resourcelease.DeadLetterSelection, verb string) ([]int64, error) {
	switch {
	case sel.All && len(sel.SequenceIDs) > 0:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired, "%s: give sequenceIds or all, not both", verb)
	case !sel.All && len(sel.SequenceIDs) == 0:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired, "%s needs sequenceIds, or all", verb)
	}
	return sel.SequenceIDs, nil
}

func (q engineQueue) Redrive(ctx context.Context, sel resourcelease.DeadLetterSelection) (int, error) {
	ids, err := selectionIDs(sel, "redrive")
	if err != nil {
		return 0, err
	}
	return q.Engine.Redrive(ctx, ids)
}

func (q engineQueue) Purge(ctx context.Context, sel resourcelease.DeadLetterSelection) (int, error) {
	ids, err := selectionIDs(sel, "purge")
	if err != nil {
		return 0, err
	}
	return q.Engine.Purge(ctx, ids)
}
