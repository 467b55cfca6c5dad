package transport_test

import (
	"context"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// queueDispatcher serves a resourcelease.Queue (the real MemoryQueue) as a
// Dispatcher, the way resourcelease's own Dispatcher does minus replication,
// peer health and backpressure. It lets the transport's tests and examples
// run against the real engine.
type queueDispatcher struct{ q resourcelease.Queue }

var _ resourcelease.Dispatcher = queueDispatcher{}

// newQueueDispatcher returns a dispatcher over a new MemoryQueue and a
// function that closes it.
func newQueueDispatcher(cfg resourcelease.QueueConfig) (queueDispatcher, func()) {
	q, err := resourcelease.NewMemoryQueue(cfg)
	if err != nil {
		panic(err) // test and example configurations are valid
	}
	return queueDispatcher{q: q}, func() { _ = q.Close() }
}

func (d queueDispatcher) Enqueue(ctx context.Context, r *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
	if err := r.Payload.Validate(); err != nil {
		return nil, err
	}
	res, err := d.q.Enqueue(ctx, *r.Payload)
	if err != nil {
		return nil, err
	}
	return &resourcelease.EnqueueResponse{
		Stats:      resourcelease.QueueCounts{PendingCount: res.Stats.PendingCount, ActiveLeaseCount: res.Stats.ActiveLeaseCount},
		SequenceID: res.SequenceID,
		Duplicate:  res.Duplicate,
	}, nil
}

func (d queueDispatcher) Lease(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
	peer := resourcelease.ResolvePeerID(r.PeerID, resourcelease.CallInfoFrom(ctx))
	return d.q.Lease(ctx, peer, time.Duration(r.WaitMs)*time.Millisecond)
}

func (d queueDispatcher) Heartbeat(ctx context.Context, r *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
	exp, err := d.q.Heartbeat(ctx, *r.OwnershipToken)
	if err != nil {
		return nil, err
	}
	return &resourcelease.HeartbeatResponse{Success: true, LeaseExpiresAt: exp}, nil
}

func (d queueDispatcher) Complete(ctx context.Context, r *resourcelease.CompleteRequest) (*resourcelease.SuccessResponse, error) {
	if err := d.q.Complete(ctx, *r.OwnershipToken); err != nil {
		return nil, err
	}
	return &resourcelease.SuccessResponse{Success: true}, nil
}

func (d queueDispatcher) Fail(ctx context.Context, r *resourcelease.FailRequest) (*resourcelease.SuccessResponse, error) {
	requeue := r.Requeue == nil || *r.Requeue
	err := d.q.Fail(ctx, *r.OwnershipToken, resourcelease.FailOptions{
		Reason: r.Reason, ErrorCode: r.ErrorCode, Requeue: requeue, Metadata: r.Metadata,
	})
	if err != nil {
		return nil, err
	}
	return &resourcelease.SuccessResponse{Success: true}, nil
}

func (d queueDispatcher) Drain(ctx context.Context, _ *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
	items, err := d.q.Drain(ctx)
	if err != nil {
		return nil, err
	}
	return &resourcelease.DrainResponse{Items: items}, nil
}

func (d queueDispatcher) Restore(ctx context.Context, r *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
	n, err := d.q.Restore(ctx, r.Items)
	if err != nil {
		return nil, err
	}
	return &resourcelease.RestoreResponse{RestoredCount: n}, nil
}

func (d queueDispatcher) Stats(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
	s := d.q.Stats()
	return &s, nil
}

func (d queueDispatcher) DeadLetters(ctx context.Context, r *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
	items, err := d.q.DeadLetters(ctx, r.Limit)
	if err != nil {
		return nil, err
	}
	return &resourcelease.DeadLettersResponse{Items: items}, nil
}

func (d queueDispatcher) Redrive(ctx context.Context, r *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
	n, err := d.q.Redrive(ctx, r.SequenceIDs)
	if err != nil {
		return nil, err
	}
	return &resourcelease.RedriveResponse{RedrivenCount: n}, nil
}

func (d queueDispatcher) Purge(ctx context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
	n, err := d.q.Purge(ctx, r.SequenceIDs)
	if err != nil {
		return nil, err
	}
	return &resourcelease.PurgeResponse{PurgedCount: n}, nil
}
