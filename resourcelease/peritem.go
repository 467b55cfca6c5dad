package resourcelease

import (
	"context"
	"sync"
	"time"
)

// PerItem returns d as a BatchDispatcher: d itself when it is one, else an
// adapter that serves each batch with d's per-item calls. Results are the
// same as a batch's, item by item, but nothing is committed together: use it
// where batches are a convenience (a handler serving any Dispatcher, a
// client falling back on an older server), not for their speed.
//
// The adapter enqueues in order, one after another; it leases with one
// long-poll for the first item and then without waiting until MaxItems or
// nothing is ready (or MaxBytes is spent); heartbeats and completes run
// concurrently, a few at a time.
func PerItem(d Dispatcher) BatchDispatcher {
	if bd, ok := d.(BatchDispatcher); ok {
		return bd
	}
	return perItem{d}
}

// perItemConcurrency is how many heartbeats or completes the adapter has in
// flight at once.
const perItemConcurrency = 16

type perItem struct{ Dispatcher }

func (p perItem) EnqueueBatch(ctx context.Context, req *EnqueueBatchRequest) (*EnqueueBatchResponse, error) {
	var items []Item
	var delay time.Duration
	if req != nil {
		items, delay = req.Payloads, req.Delay
	}
	if err := batchSize("enqueueBatch", len(items)); err != nil {
		return nil, err
	}
	if delay < 0 {
		return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "delayMs must not be negative, got %d", msCeil(delay))
	}
	resp := &EnqueueBatchResponse{Results: make([]EnqueueItemResult, len(items))}
	for i := range items {
		if err := ctx.Err(); err != nil {
			return nil, AsError(err)
		}
		r, err := p.Enqueue(ctx, &EnqueueRequest{Payload: &items[i], Delay: delay})
		if err != nil {
			resp.Results[i].Err = err
			continue
		}
		resp.Results[i] = EnqueueItemResult{SequenceID: r.SequenceID, Duplicate: r.Duplicate, NotBefore: r.NotBefore}
		resp.Stats = r.Stats
	}
	return resp, nil
}

func (p perItem) LeaseBatch(ctx context.Context, req *LeaseBatchRequest) ([]*Lease, error) {
	var r LeaseBatchRequest
	if req != nil {
		r = *req
	}
	if r.MaxItems < 1 || r.MaxItems > MaxBatchItems {
		return nil, Errorf(StatusInvalidArgument, CodeBatchTooLarge, "leaseBatch maxItems must be 1 to %d, got %d", MaxBatchItems, r.MaxItems)
	}
	first, err := p.Lease(ctx, &LeaseRequest{PeerID: r.PeerID, Wait: r.Wait})
	if err != nil || first == nil {
		return nil, err
	}
	leases := []*Lease{first}
	size := approxLeaseJSONSize(first)
	for len(leases) < r.MaxItems && (r.MaxBytes <= 0 || int64(size) < r.MaxBytes) && ctx.Err() == nil {
		l, err := p.Lease(ctx, &LeaseRequest{PeerID: r.PeerID})
		if err != nil || l == nil {
			break // what was leased is the caller's: return it, not the error
		}
		leases = append(leases, l)
		size += approxLeaseJSONSize(l)
	}
	return leases, nil
}

func (p perItem) HeartbeatBatch(ctx context.Context, req *HeartbeatBatchRequest) ([]HeartbeatResult, error) {
	var tokens []OwnershipToken
	if req != nil {
		tokens = req.OwnershipTokens
	}
	if err := batchSize("heartbeatBatch", len(tokens)); err != nil {
		return nil, err
	}
	results := make([]HeartbeatResult, len(tokens))
	each(len(tokens), func(i int) {
		r, err := p.Heartbeat(ctx, &HeartbeatRequest{OwnershipToken: tokens[i]})
		switch {
		case err != nil:
			results[i].Err = err
		case r != nil:
			results[i].HeartbeatResponse = *r
		}
	})
	return results, nil
}

func (p perItem) CompleteBatch(ctx context.Context, req *CompleteBatchRequest) ([]error, error) {
	var tokens []OwnershipToken
	if req != nil {
		tokens = req.OwnershipTokens
	}
	if err := batchSize("completeBatch", len(tokens)); err != nil {
		return nil, err
	}
	results := make([]error, len(tokens))
	each(len(tokens), func(i int) {
		results[i] = p.Complete(ctx, &CompleteRequest{OwnershipToken: tokens[i]})
	})
	return results, nil
}

// each runs f(0..n-1), perItemConcurrency at a time, and returns when all
// have.
func each(n int, f func(i int)) {
	if n == 1 {
		f(0)
		return
	}
	sem := make(chan struct{}, perItemConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}
