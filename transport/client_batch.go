package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

var _ resourcelease.BatchDispatcher = (*Client)(nil)

// fallbackRecheck is how long the Client sends a server that did not know a
// batch procedure per-item calls instead, before it tries the batch again
// (the server may have been upgraded).
const fallbackRecheck = time.Minute

// batchSupport remembers, per batch procedure, until when a dispatcher is
// taken not to serve it. Each endpoint has its own: in a mesh being
// upgraded, one old dispatcher does not send the calls of the new ones to
// per-item.
type batchSupport struct {
	until [5]atomic.Int64 // Unix nanoseconds, by batch procedure
}

// The batch procedures, as indexes into batchSupport (0 is no batch).
const (
	batchEnqueue = iota + 1
	batchLease
	batchHeartbeat
	batchComplete
)

func (b *batchSupport) known(verb int) bool {
	return time.Now().UnixNano() >= b.until[verb].Load()
}

func (b *batchSupport) unknown(verb int) {
	b.until[verb].Store(time.Now().Add(fallbackRecheck).UnixNano())
}

// perItem is the Client seen through its per-item methods only, for the
// fallback on a server without batch procedures.
func (c *Client) perItem() resourcelease.BatchDispatcher {
	return resourcelease.PerItem(struct{ resourcelease.Dispatcher }{c})
}

// batchCall sends a batch procedure. ok is false when the dispatcher it
// reached does not serve it (an older leasemesh, or a yarpc server: see
// isUnknownProcedure), or is known not to; the caller then falls back to
// per-item calls. retried says whether an earlier try of the call may have
// reached a dispatcher (see Client.callMaybeRetried), whatever ok: a
// fallback after such a try must not apply anything twice.
func batchCall[Resp any](ctx context.Context, c *Client, which int, verb string, req any, o callOpts) (resp *Resp, ok, retried bool, err error) {
	body, err := encodeRequest(req)
	if err != nil {
		return nil, true, false, err
	}
	o.batch = which
	out, retried, err := c.callMaybeRetried(ctx, Procedure(c.namespace, verb), body, o)
	if isUnknownProcedure(err) {
		return nil, false, retried, nil
	}
	if err != nil {
		return nil, true, retried, err
	}
	resp = new(Resp)
	if err := json.Unmarshal(out, resp); err != nil {
		return nil, true, retried, wire.MalformedResponse(verb, err)
	}
	return resp, true, retried, nil
}

// EnqueueBatch calls the enqueueBatch procedure; with a server that predates
// it, it enqueues the payloads one by one, in order. A delayed payload
// whose result does not echo notBefore (a server that predates delayed
// enqueue) gets resourcelease.DelayIgnoredError as its Err, as Enqueue
// returns it.
func (c *Client) EnqueueBatch(ctx context.Context, req *resourcelease.EnqueueBatchRequest) (*resourcelease.EnqueueBatchResponse, error) {
	req = wire.OrEmpty(req)
	sent, generated := req, []bool(nil)
	if len(c.endpoints) > 1 {
		// A retry on another dispatcher must dedupe against this try.
		for i := range req.Payloads {
			if req.Payloads[i].RequestID != "" {
				continue
			}
			if generated == nil {
				r := *req
				r.Payloads = append([]resourcelease.Item(nil), req.Payloads...)
				sent, generated = &r, make([]bool, len(req.Payloads))
			}
			sent.Payloads[i].RequestID = newRequestID()
			generated[i] = true
		}
	}
	resp, ok, _, err := batchCall[resourcelease.EnqueueBatchResponse](ctx, c, batchEnqueue, VerbEnqueueBatch, sent, callOpts{retry: retrySafe})
	switch {
	case !ok:
		// With the requestIds already sent: an earlier try may have
		// enqueued them all on a dispatcher that serves the batch.
		resp, err := c.perItem().EnqueueBatch(ctx, sent)
		if err == nil && generated != nil {
			for i := range resp.Results {
				if i < len(generated) && generated[i] {
					resp.Results[i].Duplicate = false
				}
			}
		}
		return resp, err
	case err != nil:
		return nil, err
	case len(resp.Results) != len(req.Payloads):
		return nil, wire.MalformedResponse(VerbEnqueueBatch, errResultCount(len(resp.Results), len(req.Payloads)))
	}
	for i := range resp.Results {
		if r := &resp.Results[i]; r.Err == nil && delayIgnored(&req.Payloads[i], req.Delay, r.Duplicate, r.NotBefore) {
			r.Err = resourcelease.DelayIgnoredError(r.SequenceID)
		} else if r.Err == nil && generated != nil && generated[i] {
			r.Duplicate = false // our own retry's: the caller enqueued once
		}
	}
	return resp, nil
}

// LeaseBatch calls the leaseBatch procedure. A long-poll's request is
// allowed Wait plus LongPollMargin, as Lease's. With a server that predates
// it, it leases one by one: one long-poll for the first, then without
// waiting.
func (c *Client) LeaseBatch(ctx context.Context, req *resourcelease.LeaseBatchRequest) ([]*resourcelease.Lease, error) {
	req = wire.OrEmpty(req)
	o := callOpts{retry: retrySafe}
	if req.Wait > 0 {
		o.minTimeout = c.longPollTimeout(req.Wait)
		o.rebody = func(spent time.Duration) ([]byte, bool) {
			r := *req
			r.Wait -= spent
			if r.Wait <= 0 {
				return nil, false
			}
			b, err := encodeRequest(&r)
			return b, err == nil
		}
	}
	start := time.Now()
	resp, ok, _, err := batchCall[wireLeaseBatch](ctx, c, batchLease, VerbLeaseBatch, req, o)
	switch {
	case !ok:
		// With what is left of the wait, if the batch tries spent some.
		r := *req
		if r.Wait > 0 {
			if r.Wait -= time.Since(start); r.Wait <= 0 {
				return nil, nil
			}
		}
		return c.perItem().LeaseBatch(ctx, &r)
	case err != nil:
		return nil, err
	}
	leases := make([]*resourcelease.Lease, len(resp.Items))
	for i, w := range resp.Items {
		if w == nil {
			return nil, wire.MalformedResponse(VerbLeaseBatch, errNullLease)
		}
		leases[i] = w.lease()
	}
	return leases, nil
}

// HeartbeatBatch calls the heartbeatBatch procedure; with a server that
// predates it, it heartbeats the leases one by one (a few at a time).
func (c *Client) HeartbeatBatch(ctx context.Context, req *resourcelease.HeartbeatBatchRequest) ([]resourcelease.HeartbeatResult, error) {
	req = wire.OrEmpty(req)
	resp, ok, _, err := batchCall[resourcelease.HeartbeatBatchResponse](ctx, c, batchHeartbeat, VerbHeartbeatBatch, req, callOpts{retry: retrySafe})
	switch {
	case !ok:
		return c.perItem().HeartbeatBatch(ctx, req)
	case err != nil:
		return nil, err
	case len(resp.Results) != len(req.OwnershipTokens):
		return nil, wire.MalformedResponse(VerbHeartbeatBatch, errResultCount(len(resp.Results), len(req.OwnershipTokens)))
	}
	return resp.Results, nil
}

// CompleteBatch calls the completeBatch procedure; with a server that
// predates it, it completes the leases one by one (a few at a time).
func (c *Client) CompleteBatch(ctx context.Context, req *resourcelease.CompleteBatchRequest) ([]error, error) {
	req = wire.OrEmpty(req)
	resp, ok, retried, err := batchCall[resourcelease.CompleteBatchResponse](ctx, c, batchComplete, VerbCompleteBatch, req, callOpts{retry: retrySettle})
	switch {
	case !ok:
		errs, err := c.perItem().CompleteBatch(ctx, req)
		if err == nil && retried {
			possiblySettled(errs) // the batch tries may have completed them
		}
		return errs, err
	case err != nil:
		return nil, err
	case len(resp.Results) != len(req.OwnershipTokens):
		return nil, wire.MalformedResponse(VerbCompleteBatch, errResultCount(len(resp.Results), len(req.OwnershipTokens)))
	}
	if retried {
		possiblySettled(resp.Results)
	}
	return resp.Results, nil
}

// possiblySettled marks the unknown_token results of a settle retried after
// an earlier try may have been applied.
func possiblySettled(errs []error) {
	for i, e := range errs {
		if errors.Is(e, resourcelease.ErrUnknownToken) && !errors.Is(e, resourcelease.ErrPossiblySettled) {
			errs[i] = resourcelease.PossiblySettledError(e)
		}
	}
}

func errResultCount(got, want int) error {
	return fmt.Errorf("the response has %d results for %d items", got, want)
}

var errNullLease = errors.New("a lease in the batch is null")
