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
// ignores ReleaseOptions (run the suite with Features{} for it).
func Engine(e *resourcelease.Engine) Queue { return engineQueue{e} }

type engineQueue struct{ *resourcelease.Engine }

func (q engineQueue) Heartbeat(ctx context.Context, t resourcelease.OwnershipToken) (resourcelease.HeartbeatResult, error) {
	exp, err := q.Engine.Heartbeat(ctx, t)
	if err != nil {
		return resourcelease.HeartbeatResult{}, err
	}
	return resourcelease.HeartbeatResult{LeaseExpiresAt: exp, TTL: q.Config().LeaseDuration}, nil
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
