package transport

import (
	"context"
	"encoding/json"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// batchRoute adapts a batch procedure to a route: decode, check, serve (on
// the handler's BatchDispatcher), encode.
func batchRoute[Req, Resp any](
	serve func(h *handler, ctx context.Context, r *Req) (*Resp, error),
	check func(*handler, *Req) error,
) func(*handler, context.Context, []byte) ([]byte, error) {
	return func(h *handler, ctx context.Context, body []byte) ([]byte, error) {
		req := new(Req)
		if err := wire.DecodeRequest(body, req); err != nil {
			return nil, err
		}
		if err := check(h, req); err != nil {
			return nil, err
		}
		resp, err := serve(h, ctx, req)
		if err != nil {
			return nil, err
		}
		return json.Marshal(resp)
	}
}

func checkBatchSize(verb string, n int) error {
	if n > resourcelease.MaxBatchItems {
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeBatchTooLarge,
			"%s takes at most %d items, got %d", verb, resourcelease.MaxBatchItems, n)
	}
	return nil
}

// checkEnqueueBatch checks the batch's size; each payload is validated on
// its own by the Dispatcher, which refuses only that one.
func checkEnqueueBatch(_ *handler, r *resourcelease.EnqueueBatchRequest) error {
	if err := checkBatchSize(VerbEnqueueBatch, len(r.Payloads)); err != nil {
		return err
	}
	return checkDelay(r.Delay)
}

func checkLeaseBatch(h *handler, r *resourcelease.LeaseBatchRequest) error {
	if err := checkPeerID("peerId", r.PeerID); err != nil {
		return err
	}
	switch {
	case r.MaxItems < 1 || r.MaxItems > resourcelease.MaxBatchItems:
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeBatchTooLarge,
			"maxItems must be 1 to %d, got %d", resourcelease.MaxBatchItems, r.MaxItems)
	case r.Wait < 0:
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"waitMs must not be negative, got %d", r.Wait.Milliseconds())
	case r.MaxBytes < 0:
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"maxBytes must not be negative, got %d", r.MaxBytes)
	}
	r.Wait = min(r.Wait, h.maxWait)
	return nil
}

func serveEnqueueBatch(h *handler, ctx context.Context, r *resourcelease.EnqueueBatchRequest) (*resourcelease.EnqueueBatchResponse, error) {
	resp, err := h.bd.EnqueueBatch(ctx, r)
	if err == nil && resp == nil {
		return nil, internalError()
	}
	if err != nil {
		return nil, err
	}
	if len(resp.Results) != len(r.Payloads) {
		return nil, internalError() // a Dispatcher bug: results must pair with payloads
	}
	if resp.Results == nil {
		resp.Results = []resourcelease.EnqueueItemResult{}
	}
	return resp, nil
}

// serveLeaseBatch leases, and releases the leases at once when the request's
// context ended while they were being granted (see leaseOrGiveBack).
func serveLeaseBatch(h *handler, ctx context.Context, r *resourcelease.LeaseBatchRequest) (*wireLeaseBatch, error) {
	leases, err := h.bd.LeaseBatch(ctx, r)
	if err != nil {
		return nil, err
	}
	if len(leases) > 0 && ctx.Err() != nil {
		kept := leases[:0]
		for _, l := range leases {
			if rerr := h.d.Release(context.WithoutCancel(ctx), &resourcelease.ReleaseRequest{OwnershipToken: l.OwnershipToken}); rerr != nil {
				kept = append(kept, l) // could not give it back: deliver it if anyone is still listening
			}
		}
		if len(kept) == 0 {
			return nil, ctx.Err()
		}
		leases = kept
	}
	resp := &wireLeaseBatch{Items: make([]*wireLease, len(leases))}
	for i, l := range leases {
		if l == nil {
			return nil, internalError() // a Dispatcher bug: a batch has no null leases
		}
		w := toWireLease(l)
		resp.Items[i] = &w
	}
	return resp, nil
}

func serveHeartbeatBatch(h *handler, ctx context.Context, r *resourcelease.HeartbeatBatchRequest) (*resourcelease.HeartbeatBatchResponse, error) {
	res, err := h.bd.HeartbeatBatch(ctx, r)
	if err != nil {
		return nil, err
	}
	if len(res) != len(r.OwnershipTokens) {
		return nil, internalError() // a Dispatcher bug: results must pair with tokens
	}
	if res == nil {
		res = []resourcelease.HeartbeatResult{}
	}
	return &resourcelease.HeartbeatBatchResponse{Results: res}, nil
}

func serveCompleteBatch(h *handler, ctx context.Context, r *resourcelease.CompleteBatchRequest) (*resourcelease.CompleteBatchResponse, error) {
	res, err := h.bd.CompleteBatch(ctx, r)
	if err != nil {
		return nil, err
	}
	if len(res) != len(r.OwnershipTokens) {
		return nil, internalError()
	}
	return &resourcelease.CompleteBatchResponse{Results: res}, nil
}
