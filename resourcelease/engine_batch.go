package resourcelease

import (
	"context"
	"slices"
	"time"
)

// The batch operations take the lock once and hand every change they make
// to the journal as one unit (BatchJournal.RecordAll), so that a durable
// journal commits a batch in one transaction. While a batch is open
// (q.batch != nil), record collects changes instead of recording them; the
// Ack it returns stands for the whole batch, including the grants handed to
// waiting long-polls on the way.

// changeBatch collects the changes of one batch operation.
type changeBatch struct {
	changes []*Change
	ack     *batchAck
}

// batchAck is the Ack of a change recorded inside a batch: the Ack of the
// whole batch, known once the batch has been handed to the journal (before
// the engine's lock is released, but a long-poll woken by a grant in the
// batch may Wait sooner).
type batchAck struct {
	ready chan struct{} // closed once ack is set
	ack   Ack
}

// Wait implements Ack.
func (b *batchAck) Wait() error {
	<-b.ready
	if b.ack == nil {
		return nil
	}
	return b.ack.Wait()
}

// beginBatch opens a batch. Callers hold q.mu.
func (q *Engine) beginBatch() {
	if q.journal != nil {
		q.batch = &changeBatch{ack: &batchAck{ready: make(chan struct{})}}
	}
}

// endBatch hands the batch's changes to the journal, together, and returns
// their Ack. Callers hold q.mu.
func (q *Engine) endBatch() Ack {
	b := q.batch
	q.batch = nil
	if b == nil {
		return nil
	}
	defer close(b.ack.ready)
	switch {
	case len(b.changes) == 0:
		return nil
	case len(b.changes) == 1:
		b.ack.ack = q.journal.Record(b.changes[0])
	default:
		if bj, ok := q.journal.(BatchJournal); ok {
			b.ack.ack = bj.RecordAll(b.changes)
			break
		}
		for _, c := range b.changes {
			if a := q.journal.Record(c); a != nil {
				b.ack.ack = a
			}
		}
	}
	return b.ack
}

// EnqueueBatch implements Queue.
func (q *Engine) EnqueueBatch(ctx context.Context, items []Item) ([]EnqueueResult, error) {
	results := make([]EnqueueResult, len(items))
	// Allocated before the lock, one by one: an entry lives as long as its
	// item, so entries sharing one array would keep each other alive.
	entries := make([]*entry, len(items))
	for i := range items {
		if err := items[i].Validate(); err != nil {
			results[i].Err = err
			continue
		}
		entries[i] = &entry{}
	}
	cloned := false // the caller's slice is never written: NotBefore is normalised in a copy
	for i := range items {
		if !items[i].NotBefore.IsZero() {
			if !cloned {
				items, cloned = slices.Clone(items), true
			}
			items[i].NotBefore = items[i].NotBefore.Round(0).UTC()
		}
	}
	now, err := q.begin(ctx)
	if err != nil {
		return nil, err
	}
	q.beginBatch()
	dedupe := q.cfg.DedupeWindow > 0
	if dedupe {
		q.trimDedupe(now)
	}
	caller := CallInfoFrom(ctx).Caller
	var originals []dedupeRecord // of the duplicates: answered as the originals were
	var originalIDs []string
	var dedupeIDs []string // of the new items with a request id
	var dedupeSeqs []int64
	for i := range items {
		if results[i].Err != nil {
			continue
		}
		item := items[i]
		if item.RequestID != "" && dedupe {
			if r, ok := q.dedupe[item.RequestID]; ok {
				results[i] = EnqueueResult{SequenceID: r.seq, Duplicate: true}
				originals, originalIDs = append(originals, r), append(originalIDs, item.RequestID)
				continue
			}
		}
		var readyAt int64
		if !item.NotBefore.IsZero() {
			var err error
			if readyAt, err = readyTime(item.NotBefore, now); err != nil {
				results[i].Err = err
				continue
			}
		}
		if full := q.full(readyAt != 0); full != nil {
			results[i].Err = full
			continue
		}
		e := entries[i]
		e.item, e.attempt, e.seq, e.enqueuedAt = item, 1, q.nextSeq, now
		q.nextSeq++
		if readyAt != 0 {
			e.readyAt = readyAt
			q.pushDelayed(e)
		} else {
			q.pushNew(e)
		}
		if item.RequestID != "" && dedupe {
			q.dedupe[item.RequestID] = dedupeRecord{seq: e.seq, seenAt: now}
			q.dedupeOrder.PushBack(&DedupeEntry{RequestID: item.RequestID, SequenceID: e.seq, SeenAt: fromNanos(now)})
			q.boundDedupe()
			dedupeIDs, dedupeSeqs = append(dedupeIDs, item.RequestID), append(dedupeSeqs, e.seq)
		}
		q.record(ChangeEnqueued, now, func(c *Change) {
			p := e.pendingItem()
			c.Item = &p
			c.PeerID = caller
		})
		results[i].SequenceID = e.seq
		results[i].NotBefore = item.NotBefore
	}
	q.handOff(now)
	st := q.statsLocked()
	ack := q.endBatch()
	if ack != nil {
		for _, id := range dedupeIDs {
			r := q.dedupe[id]
			r.ack = ack
			q.dedupe[id] = r
		}
	}
	q.mu.Unlock()
	err = waitAck(ack)
	if ack != nil && len(dedupeIDs) > 0 {
		q.settleDedupe(dedupeIDs, dedupeSeqs, err)
	}
	if err != nil {
		return nil, err
	}
	for i, r := range originals {
		if err := q.duplicate(ctx, originalIDs[i], r); err != nil {
			return nil, err
		}
	}
	for i := range results {
		results[i].Stats = st
	}
	return results, nil
}

// LeaseBatch implements Queue. The first lease waits as Lease does (a
// waiter among the others, first come first served); the rest are taken,
// ready, right after it.
func (q *Engine) LeaseBatch(ctx context.Context, peerID string, opts LeaseBatchOptions) ([]*Lease, error) {
	if opts.Wait < 0 {
		return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "lease wait must not be negative, got %v", opts.Wait)
	}
	n := max(opts.MaxItems, 1)
	received, now, err := q.beginAt(ctx)
	if err != nil {
		return nil, err
	}
	if err := q.stalled(); err != nil {
		q.mu.Unlock()
		return nil, err
	}
	ack := q.maintain(now)
	if !q.canLease() {
		q.mu.Unlock()
		if err := waitAck(ack); err != nil {
			return nil, err
		}
		if opts.Wait == 0 {
			return nil, nil
		}
		// Wait for the first as a long-poll, then take the rest.
		first, err := q.Lease(ctx, peerID, opts.Wait)
		if err != nil || first == nil {
			return nil, err
		}
		budget := 0 // no limit
		if opts.MaxBytes > 0 {
			budget = opts.MaxBytes - approxLeaseJSONSize(first)
			if budget <= 0 {
				return []*Lease{first}, nil
			}
		}
		rest, err := q.takeReady(ctx, peerID, n-1, budget, received)
		if err != nil {
			return []*Lease{first}, nil // the first is granted and durable: deliver it
		}
		return append([]*Lease{first}, rest...), nil
	}
	leases, ack2 := q.grantReady(peerID, n, opts.MaxBytes, true, now)
	q.mu.Unlock()
	return q.deliverAll(leases, ack2, received)
}

// takeReady leases up to n ready items without waiting, within about
// maxBytes when positive.
func (q *Engine) takeReady(ctx context.Context, peerID string, n, maxBytes int, received time.Time) ([]*Lease, error) {
	if n <= 0 {
		return nil, nil
	}
	now, err := q.begin(ctx)
	if err != nil {
		return nil, err
	}
	if !q.canLease() || q.stalled() != nil {
		q.mu.Unlock()
		return nil, nil
	}
	leases, ack := q.grantReady(peerID, n, maxBytes, false, now)
	if len(leases) == 0 {
		q.mu.Unlock()
		return nil, nil
	}
	q.mu.Unlock()
	return q.deliverAll(leases, ack, received)
}

// grantReady grants up to n ready items in one batch, while the next fits in
// maxBytes when positive (but the first always, with atLeastOne). Callers
// hold q.mu and have checked that an item is ready.
func (q *Engine) grantReady(peerID string, n, maxBytes int, atLeastOne bool, now int64) ([]grantInfo, Ack) {
	grants := make([]grantInfo, 0, min(n, q.readyLen(), 64))
	q.beginBatch()
	size := 0
	for len(grants) < n {
		e := q.peekReady()
		if e == nil {
			break
		}
		sz := approxPendingJSONSize(e)
		if maxBytes > 0 && (len(grants) > 0 || !atLeastOne) && size+sz > maxBytes {
			break
		}
		size += sz
		q.popReady()
		g, _ := q.grant(e, peerID, now, newLeaseID())
		grants = append(grants, g)
	}
	return grants, q.endBatch()
}

// deliverAll returns the leases of grants once their batch is acknowledged,
// or gives them all back when it failed.
func (q *Engine) deliverAll(grants []grantInfo, ack Ack, received time.Time) ([]*Lease, error) {
	if err := waitAck(ack); err != nil {
		for i := range grants {
			q.giveBack(grants[i].token)
		}
		return nil, err
	}
	leases := make([]*Lease, len(grants))
	for i := range grants {
		leases[i] = q.newLease(&grants[i], received)
	}
	return leases, nil
}

// approxLeaseJSONSize is about the JSON size of l (see
// approxPendingJSONSize).
func approxLeaseJSONSize(l *Lease) int {
	e := entry{item: l.Payload, lastError: l.LastError}
	return approxPendingJSONSize(&e)
}

// HeartbeatBatch implements Queue.
func (q *Engine) HeartbeatBatch(ctx context.Context, tokens []OwnershipToken) ([]HeartbeatResult, error) {
	results := make([]HeartbeatResult, len(tokens))
	expires := make([]int64, len(tokens))
	err := q.tokenBatch(ctx, tokens, func(i int, e *entry, now int64) error {
		if err := q.stalled(); err != nil {
			return err
		}
		expires[i] = q.extend(e, now)
		q.recordHeartbeat(e, now)
		return nil
	}, func(i int, err error) { results[i].Err = err })
	if err != nil {
		return nil, err
	}
	for i := range results {
		if results[i].Err == nil {
			results[i].HeartbeatResponse = HeartbeatResponse{LeaseExpiresAt: fromNanos(expires[i]), TTL: q.cfg.LeaseDuration}
		}
	}
	return results, nil
}

// CompleteBatch implements Queue.
func (q *Engine) CompleteBatch(ctx context.Context, tokens []OwnershipToken) ([]error, error) {
	results := make([]error, len(tokens))
	err := q.tokenBatch(ctx, tokens, func(_ int, e *entry, now int64) error {
		q.complete(e, now)
		return nil
	}, func(i int, err error) { results[i] = err })
	if err != nil {
		return nil, err
	}
	return results, nil
}

// tokenBatch runs f on the live lease of each token under one lock and one
// batch, reporting each token's refusal (a zero or stale token) to fail,
// and waits for the batch's acknowledgement.
func (q *Engine) tokenBatch(ctx context.Context, tokens []OwnershipToken, f func(i int, e *entry, now int64) error, fail func(i int, err error)) error {
	now, err := q.begin(ctx)
	if err != nil {
		return err
	}
	q.beginBatch()
	for i := range tokens {
		if err := validateToken(&tokens[i]); err != nil {
			fail(i, err)
			continue
		}
		e, _, err := q.liveLease(tokens[i], now) // an expiry it records joins the batch
		if err == nil {
			err = f(i, e, now)
		}
		if err != nil {
			fail(i, err)
		}
	}
	ack := q.endBatch()
	q.mu.Unlock()
	return waitAck(ack)
}
