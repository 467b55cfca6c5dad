package leasetest

import (
	"context"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// FakeDispatcher is a resourcelease.BatchDispatcher made of func fields, for
// tests of code that talks to a Dispatcher (handlers, workers, control
// planes). A nil per-item field answers with the zero response (and lease
// with null); a nil batch field serves the batch with the per-item fields,
// as resourcelease.PerItem does, so a test that sets only Lease and Complete
// sees batch callers too.
type FakeDispatcher struct {
	EnqueueFn     func(context.Context, *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error)
	LeaseFn       func(context.Context, *resourcelease.LeaseRequest) (*resourcelease.Lease, error)
	HeartbeatFn   func(context.Context, *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error)
	CompleteFn    func(context.Context, *resourcelease.CompleteRequest) error
	FailFn        func(context.Context, *resourcelease.FailRequest) error
	ReleaseFn     func(context.Context, *resourcelease.ReleaseRequest) error
	DrainFn       func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error)
	RestoreFn     func(context.Context, *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error)
	StatsFn       func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error)
	DeadLettersFn func(context.Context, *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error)
	RedriveFn     func(context.Context, *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error)
	PurgeFn       func(context.Context, *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error)

	EnqueueBatchFn   func(context.Context, *resourcelease.EnqueueBatchRequest) (*resourcelease.EnqueueBatchResponse, error)
	LeaseBatchFn     func(context.Context, *resourcelease.LeaseBatchRequest) ([]*resourcelease.Lease, error)
	HeartbeatBatchFn func(context.Context, *resourcelease.HeartbeatBatchRequest) ([]resourcelease.HeartbeatResult, error)
	CompleteBatchFn  func(context.Context, *resourcelease.CompleteBatchRequest) ([]error, error)
}

var _ resourcelease.BatchDispatcher = (*FakeDispatcher)(nil)

// perItem is f with only its per-item methods, for resourcelease.PerItem.
func (f *FakeDispatcher) perItem() resourcelease.BatchDispatcher {
	return resourcelease.PerItem(struct{ resourcelease.Dispatcher }{f})
}

// EnqueueBatch calls EnqueueBatchFn, or Enqueue for each payload.
func (f *FakeDispatcher) EnqueueBatch(ctx context.Context, r *resourcelease.EnqueueBatchRequest) (*resourcelease.EnqueueBatchResponse, error) {
	if f.EnqueueBatchFn != nil {
		return f.EnqueueBatchFn(ctx, r)
	}
	return f.perItem().EnqueueBatch(ctx, r)
}

// LeaseBatch calls LeaseBatchFn, or Lease until MaxItems or null.
func (f *FakeDispatcher) LeaseBatch(ctx context.Context, r *resourcelease.LeaseBatchRequest) ([]*resourcelease.Lease, error) {
	if f.LeaseBatchFn != nil {
		return f.LeaseBatchFn(ctx, r)
	}
	return f.perItem().LeaseBatch(ctx, r)
}

// HeartbeatBatch calls HeartbeatBatchFn, or Heartbeat for each token.
func (f *FakeDispatcher) HeartbeatBatch(ctx context.Context, r *resourcelease.HeartbeatBatchRequest) ([]resourcelease.HeartbeatResult, error) {
	if f.HeartbeatBatchFn != nil {
		return f.HeartbeatBatchFn(ctx, r)
	}
	return f.perItem().HeartbeatBatch(ctx, r)
}

// CompleteBatch calls CompleteBatchFn, or Complete for each token.
func (f *FakeDispatcher) CompleteBatch(ctx context.Context, r *resourcelease.CompleteBatchRequest) ([]error, error) {
	if f.CompleteBatchFn != nil {
		return f.CompleteBatchFn(ctx, r)
	}
	return f.perItem().CompleteBatch(ctx, r)
}

// Enqueue calls EnqueueFn, or answers the zero response.
func (f *FakeDispatcher) Enqueue(ctx context.Context, r *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
	if f.EnqueueFn != nil {
		return f.EnqueueFn(ctx, r)
	}
	return &resourcelease.EnqueueResponse{}, nil
}

// Lease calls LeaseFn, or answers the zero response.
func (f *FakeDispatcher) Lease(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
	if f.LeaseFn != nil {
		return f.LeaseFn(ctx, r)
	}
	return nil, nil
}

// Heartbeat calls HeartbeatFn, or answers the zero response.
func (f *FakeDispatcher) Heartbeat(ctx context.Context, r *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
	if f.HeartbeatFn != nil {
		return f.HeartbeatFn(ctx, r)
	}
	return &resourcelease.HeartbeatResponse{}, nil
}

// Complete calls CompleteFn, or answers the zero response.
func (f *FakeDispatcher) Complete(ctx context.Context, r *resourcelease.CompleteRequest) error {
	if f.CompleteFn != nil {
		return f.CompleteFn(ctx, r)
	}
	return nil
}

// Fail calls FailFn, or answers the zero response.
func (f *FakeDispatcher) Fail(ctx context.Context, r *resourcelease.FailRequest) error {
	if f.FailFn != nil {
		return f.FailFn(ctx, r)
	}
	return nil
}

// Release calls ReleaseFn, or answers the zero response.
func (f *FakeDispatcher) Release(ctx context.Context, r *resourcelease.ReleaseRequest) error {
	if f.ReleaseFn != nil {
		return f.ReleaseFn(ctx, r)
	}
	return nil
}

// Drain calls DrainFn, or answers the zero response.
func (f *FakeDispatcher) Drain(ctx context.Context, r *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
	if f.DrainFn != nil {
		return f.DrainFn(ctx, r)
	}
	return &resourcelease.DrainResponse{}, nil
}

// Restore calls RestoreFn, or answers the zero response.
func (f *FakeDispatcher) Restore(ctx context.Context, r *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
	if f.RestoreFn != nil {
		return f.RestoreFn(ctx, r)
	}
	return &resourcelease.RestoreResponse{}, nil
}

// Stats calls StatsFn, or answers the zero response.
func (f *FakeDispatcher) Stats(ctx context.Context, r *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
	if f.StatsFn != nil {
		return f.StatsFn(ctx, r)
	}
	return &resourcelease.Stats{}, nil
}

// DeadLetters calls DeadLettersFn, or answers the zero response.
func (f *FakeDispatcher) DeadLetters(ctx context.Context, r *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
	if f.DeadLettersFn != nil {
		return f.DeadLettersFn(ctx, r)
	}
	return &resourcelease.DeadLettersResponse{}, nil
}

// Redrive calls RedriveFn, or answers the zero response.
func (f *FakeDispatcher) Redrive(ctx context.Context, r *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
	if f.RedriveFn != nil {
		return f.RedriveFn(ctx, r)
	}
	return &resourcelease.RedriveResponse{}, nil
}

// Purge calls PurgeFn, or answers the zero response.
func (f *FakeDispatcher) Purge(ctx context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
	if f.PurgeFn != nil {
		return f.PurgeFn(ctx, r)
	}
	return &resourcelease.PurgeResponse{}, nil
}
