package leasetest

import (
	"context"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// FakeDispatcher is a resourcelease.Dispatcher made of func fields, for tests
// of code that talks to a Dispatcher (handlers, workers, control planes). A nil
// field answers with the zero response (and lease with null).
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
}

var _ resourcelease.Dispatcher = (*FakeDispatcher)(nil)

func (f *FakeDispatcher) Enqueue(ctx context.Context, r *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
	if f.EnqueueFn != nil {
		return f.EnqueueFn(ctx, r)
	}
	return &resourcelease.EnqueueResponse{}, nil
}

func (f *FakeDispatcher) Lease(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
	if f.LeaseFn != nil {
		return f.LeaseFn(ctx, r)
	}
	return nil, nil
}

func (f *FakeDispatcher) Heartbeat(ctx context.Context, r *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
	if f.HeartbeatFn != nil {
		return f.HeartbeatFn(ctx, r)
	}
	return &resourcelease.HeartbeatResponse{}, nil
}

func (f *FakeDispatcher) Complete(ctx context.Context, r *resourcelease.CompleteRequest) error {
	if f.CompleteFn != nil {
		return f.CompleteFn(ctx, r)
	}
	return nil
}

func (f *FakeDispatcher) Fail(ctx context.Context, r *resourcelease.FailRequest) error {
	if f.FailFn != nil {
		return f.FailFn(ctx, r)
	}
	return nil
}

func (f *FakeDispatcher) Release(ctx context.Context, r *resourcelease.ReleaseRequest) error {
	if f.ReleaseFn != nil {
		return f.ReleaseFn(ctx, r)
	}
	return nil
}

func (f *FakeDispatcher) Drain(ctx context.Context, r *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
	if f.DrainFn != nil {
		return f.DrainFn(ctx, r)
	}
	return &resourcelease.DrainResponse{}, nil
}

func (f *FakeDispatcher) Restore(ctx context.Context, r *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
	if f.RestoreFn != nil {
		return f.RestoreFn(ctx, r)
	}
	return &resourcelease.RestoreResponse{}, nil
}

func (f *FakeDispatcher) Stats(ctx context.Context, r *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
	if f.StatsFn != nil {
		return f.StatsFn(ctx, r)
	}
	return &resourcelease.Stats{}, nil
}

func (f *FakeDispatcher) DeadLetters(ctx context.Context, r *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
	if f.DeadLettersFn != nil {
		return f.DeadLettersFn(ctx, r)
	}
	return &resourcelease.DeadLettersResponse{}, nil
}

func (f *FakeDispatcher) Redrive(ctx context.Context, r *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
	if f.RedriveFn != nil {
		return f.RedriveFn(ctx, r)
	}
	return &resourcelease.RedriveResponse{}, nil
}

func (f *FakeDispatcher) Purge(ctx context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
	if f.PurgeFn != nil {
		return f.PurgeFn(ctx, r)
	}
	return &resourcelease.PurgeResponse{}, nil
}
