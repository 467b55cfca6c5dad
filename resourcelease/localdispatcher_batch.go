package resourcelease

import (
	"context"
	"math"
	"time"
)

var _ BatchDispatcher = (*LocalDispatcher)(nil)

// batchSize refuses a batch of more than MaxBatchItems.
func batchSize(verb string, n int) error {
	if n > MaxBatchItems {
		return Errorf(StatusInvalidArgument, CodeBatchTooLarge, "%s takes at most %d items, got %d", verb, MaxBatchItems, n)
	}
	return nil
}

// EnqueueBatch implements BatchDispatcher. Each payload is validated and
// copied as Enqueue does; backpressure admits (or refuses) the batch as a
// whole. An EnqueueAdmission in ctx (the rate limiter's, through HTTP)
// charges the batch per item: the items it does not admit are refused one
// by one with its refusal, the others go ahead. Items the queue has no room
// for are refused one by one (ErrQueueFull); a batch never waits for
// capacity.
func (d *LocalDispatcher) EnqueueBatch(ctx context.Context, req *EnqueueBatchRequest) (*EnqueueBatchResponse, error) {
	ctx = orBackground(ctx)
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
	own := make([]Item, len(items))
	for i := range items {
		own[i] = items[i]
		ownPayload(&own[i])
		d.delay(&own[i], delay)
	}
	admitted, refusal := admitItems(ctx, len(own))
	if admitted == 0 && len(own) > 0 {
		resp := &EnqueueBatchResponse{Results: make([]EnqueueItemResult, len(own))}
		for i := range resp.Results {
			resp.Results[i].Err = refusal
		}
		if st, err := d.q.Stats(ctx); err == nil {
			resp.Stats = QueueCounts{PendingCount: st.PendingCount, ActiveLeaseCount: st.ActiveLeaseCount}
		}
		return resp, nil
	}
	if err := d.admit(ctx); err != nil {
		return nil, err
	}
	res, err := d.q.EnqueueBatch(ctx, own[:admitted])
	if err != nil {
		return nil, d.done("enqueueBatch", err)
	}
	resp := &EnqueueBatchResponse{Results: make([]EnqueueItemResult, len(own))}
	for i, r := range res {
		resp.Results[i] = EnqueueItemResult{SequenceID: r.SequenceID, Duplicate: r.Duplicate, NotBefore: r.NotBefore, Err: r.Err}
	}
	for i := admitted; i < len(own); i++ {
		resp.Results[i].Err = refusal
	}
	if len(res) > 0 {
		resp.Stats = QueueCounts{PendingCount: res[0].Stats.PendingCount, ActiveLeaseCount: res[0].Stats.ActiveLeaseCount}
	} else if st, err := d.q.Stats(ctx); err == nil {
		resp.Stats = QueueCounts{PendingCount: st.PendingCount, ActiveLeaseCount: st.ActiveLeaseCount}
	}
	return resp, nil
}

// LeaseBatch implements BatchDispatcher. The peer is resolved and checked as
// for Lease; MaxItems must be 1 to MaxBatchItems, MaxBytes and Wait must not
// be negative, and Wait is capped at MaxLeaseWait.
func (d *LocalDispatcher) LeaseBatch(ctx context.Context, req *LeaseBatchRequest) ([]*Lease, error) {
	ctx = orBackground(ctx)
	var r LeaseBatchRequest
	if req != nil {
		r = *req
	}
	switch {
	case r.MaxItems < 1 || r.MaxItems > MaxBatchItems:
		return nil, Errorf(StatusInvalidArgument, CodeBatchTooLarge, "leaseBatch maxItems must be 1 to %d, got %d", MaxBatchItems, r.MaxItems)
	case r.Wait < 0:
		return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "waitMs must not be negative, got %d", msCeil(r.Wait))
	case r.MaxBytes < 0:
		return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "maxBytes must not be negative, got %d", r.MaxBytes)
	}
	peer := ResolvePeerID(r.PeerID, CallInfoFrom(ctx))
	admitted, err := d.admitPeer(peer)
	if err != nil {
		return nil, err
	}
	if t, ok := d.health.(trialReporter); ok && admitted && t.OnTrial(peer) {
		r.MaxItems = 1 // a half-open breaker lets one lease through, not a batch
	}
	leases, err := d.q.LeaseBatch(ctx, peer, LeaseBatchOptions{
		Wait: min(r.Wait, d.maxWait), MaxItems: r.MaxItems, MaxBytes: int(min(r.MaxBytes, math.MaxInt)),
	})
	d.leaseEnded(peer, admitted, len(leases) > 0)
	if err != nil {
		return nil, d.done("leaseBatch", err)
	}
	for _, l := range leases {
		ownPayload(&l.Payload)
	}
	return leases, nil
}

// HeartbeatBatch implements BatchDispatcher.
func (d *LocalDispatcher) HeartbeatBatch(ctx context.Context, req *HeartbeatBatchRequest) ([]HeartbeatResult, error) {
	var tokens []OwnershipToken
	if req != nil {
		tokens = req.OwnershipTokens
	}
	if err := batchSize("heartbeatBatch", len(tokens)); err != nil {
		return nil, err
	}
	res, err := d.q.HeartbeatBatch(orBackground(ctx), tokens)
	if err != nil {
		return nil, d.done("heartbeatBatch", err)
	}
	return res, nil
}

// CompleteBatch implements BatchDispatcher.
func (d *LocalDispatcher) CompleteBatch(ctx context.Context, req *CompleteBatchRequest) ([]error, error) {
	var tokens []OwnershipToken
	if req != nil {
		tokens = req.OwnershipTokens
	}
	if err := batchSize("completeBatch", len(tokens)); err != nil {
		return nil, err
	}
	res, err := d.q.CompleteBatch(orBackground(ctx), tokens)
	if err != nil {
		return nil, d.done("completeBatch", err)
	}
	return res, nil
}

// trialReporter is the optional ability of a PeerHealth (peerhealth.Tracker
// has it) to tell that a peer's admitted request is its breaker's half-open
// trial.
type trialReporter interface {
	OnTrial(peerID string) bool
}
