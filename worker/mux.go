package worker

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Codes of the errors a Mux fails a lease with.
const (
	// CodeNoHandler: no handler is registered for the item's resourceType.
	// The lease is declined (see Decline): released with NoHandlerDelay, its
	// attempt not counted, so that a worker of a newer version, or this one
	// after a deploy, can take the item. A run of such releases counts as
	// one attempt (QueueConfig.MaxReleases), so an item no worker handles is
	// dead-lettered in the end, not kept for ever.
	CodeNoHandler = "resourcelease.worker.no_handler"
	// CodeUndecodable: the item's body could not be decoded into the
	// handler's type, or its payloadEncoding is not the codec's. Retrying
	// cannot help, so the item is dead-lettered at once with the decoder's
	// message as its reason.
	CodeUndecodable = "resourcelease.worker.undecodable"
)

// NoHandlerDelay is how long an item with no handler stays out of reach
// after a Mux declined it: 30 s.
const NoHandlerDelay = 30 * time.Second

// A Mux routes each lease to the handler registered for its item's
// resourceType, the way http.ServeMux routes requests by path. Register
// typed handlers with Handle (or raw ones with HandleLease), then give
// Mux.Work to a Worker:
//
//	mux := worker.NewMux()
//	worker.Handle(mux, "email.send", func(ctx context.Context, job *worker.Job[SendEmail]) error {
//		return send(ctx, job.Value)
//	})
//	w, err := worker.New(d, worker.Config{Handler: mux.Work})
//
// An item whose resourceType has no handler is declined (released for
// NoHandlerDelay, CodeNoHandler); one whose body does not decode is
// dead-lettered with CodeUndecodable. Neither
// panics, and neither is lost. A Mux is safe for concurrent use; handlers
// may be added while a Worker runs.
type Mux struct {
	mu       sync.RWMutex
	handlers map[string]func(context.Context, *resourcelease.Lease) error
}

// NewMux returns an empty Mux.
func NewMux() *Mux {
	return &Mux{handlers: map[string]func(context.Context, *resourcelease.Lease) error{}}
}

// HandleLease registers h for leases of resourceType, with the lease as it
// came (its body undecoded). It panics if resourceType is blank or already
// has a handler: both are programming errors, as with http.ServeMux.
func (m *Mux) HandleLease(resourceType string, h func(context.Context, *resourcelease.Lease) error) {
	if err := m.register(resourceType, h); err != nil {
		panic(err)
	}
}

func (m *Mux) register(resourceType string, h func(context.Context, *resourcelease.Lease) error) error {
	switch {
	case resourceType == "":
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "worker: Mux: blank resourceType")
	case h == nil:
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "worker: Mux: nil handler for %q", resourceType)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, dup := m.handlers[resourceType]; dup {
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "worker: Mux: a handler for %q is already registered", resourceType)
	}
	m.handlers[resourceType] = h
	return nil
}

// ResourceTypes returns the resourceTypes with a handler, sorted.
func (m *Mux) ResourceTypes() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.handlers))
	for t := range m.handlers {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Work runs the handler of l's resourceType. It is the Handler of a Worker
// (Config.Handler: mux.Work).
func (m *Mux) Work(ctx context.Context, l *resourcelease.Lease) error {
	m.mu.RLock()
	h, ok := m.handlers[l.Payload.ResourceType]
	m.mu.RUnlock()
	if !ok {
		return Decline(NoHandlerDelay, resourcelease.Errorf(resourcelease.StatusUnimplemented, CodeNoHandler,
			"no handler for resourceType %q", l.Payload.ResourceType))
	}
	return h(ctx, l)
}

// Job is one lease of typed work: Value is the item's body decoded, and Lease
// the lease itself (its token, attempt, last error and the raw item).
type Job[T any] struct {
	Value T
	Lease *resourcelease.Lease
}

// Handle registers fn for leases of resourceType: each item's body is
// decoded into a T with the JSON codec (whose payloadEncoding is
// application/json) and handed to fn. fn's error fails the lease with
// requeue (wrap it with Permanent to dead-letter instead); nil completes it.
// It panics like Mux.HandleLease on a blank or duplicate resourceType.
func Handle[T any](m *Mux, resourceType string, fn func(ctx context.Context, job *Job[T]) error) {
	HandleCodec(m, resourceType, resourcelease.JSON, fn)
}

// HandleCodec is Handle with another codec: a body whose payloadEncoding the
// codec does not accept, or that it cannot decode, is dead-lettered with
// CodeUndecodable.
func HandleCodec[T any](m *Mux, resourceType string, codec resourcelease.Codec, fn func(ctx context.Context, job *Job[T]) error) {
	if codec == nil {
		codec = resourcelease.JSON
	}
	if fn == nil {
		panic(resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "worker: Mux: nil handler for %q", resourceType))
	}
	m.HandleLease(resourceType, func(ctx context.Context, l *resourcelease.Lease) error {
		job := &Job[T]{Lease: l}
		if !codec.Accepts(l.Payload.PayloadEncoding) {
			return Permanent(resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeUndecodable,
				"payloadEncoding %q is not %s", l.Payload.PayloadEncoding, codec.Encoding()))
		}
		if err := codec.Unmarshal(l.Payload.Body, &job.Value); err != nil {
			return Permanent(resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeUndecodable,
				"cannot decode the %s body into %T: %v", codec.Encoding(), job.Value, err))
		}
		return fn(ctx, job)
	})
}
