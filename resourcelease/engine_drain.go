package resourcelease

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// Drain implements Queue: DrainN without limits.
func (q *Engine) Drain(ctx context.Context) ([]PendingItem, error) {
	items, _, err := q.DrainN(ctx, 0, 0)
	return items, err
}

// DrainN removes and returns the oldest pending items (by sequence id, ready
// or delayed alike; leases are untouched): at most maxItems of them, and no
// more than fit in about maxBytes of JSON (see approxPendingJSONSize), though
// always at least one when any is pending. A limit <= 0 is no limit. It
// records one ChangeDrained carrying exactly the returned items, and more
// reports whether pending items remain.
//
// Paging a drain bounds what is at risk when the response never reaches the
// caller: only the items of that one call.
func (q *Engine) DrainN(ctx context.Context, maxItems, maxBytes int) (items []PendingItem, more bool, err error) {
	now, err := q.begin(ctx)
	if err != nil {
		return nil, false, err
	}
	ack := q.maintain(now)
	// The delayed heap is ordered by ready time: take its entries in sequence
	// order from a sorted copy, and rebuild it from what is left at the end.
	// (With strict partitions the delayed items are in their partitions too:
	// they are taken from there.)
	var delayed []*entry
	strict := q.parts != nil && q.parts.strict
	if !strict {
		delayed = slices.Clone(q.delayed.items)
		slices.SortFunc(delayed, func(a, b *entry) int { return cmp.Compare(a.seq, b.seq) })
	}
	// The partitions by their oldest pending item, to take them in order.
	var heads minHeap[*partition]
	touched := map[*partition]bool{}
	if q.parts != nil {
		heads.less = func(a, b *partition) bool {
			as, _ := a.headSeq()
			bs, _ := b.headSeq()
			return as < bs
		}
		for _, p := range q.parts.byKey {
			if p.len() > 0 {
				heads.items = append(heads.items, p)
			}
		}
		heads.heapify()
	}
	var taken []*entry
	size, tookDelayed, tookStrictDelayed := 0, 0, false
	for maxItems <= 0 || len(taken) < maxItems {
		var next *entry
		from := 0 // 1 fresh, 2 redo, 3 delayed, 4 a partition
		if f := q.fresh.Front(); f != nil {
			next, from = f, 1
		}
		if r, ok := q.redo.Peek(); ok && (next == nil || r.seq < next.seq) {
			next, from = r, 2
		}
		if tookDelayed < len(delayed) && (next == nil || delayed[tookDelayed].seq < next.seq) {
			next, from = delayed[tookDelayed], 3
		}
		if p, ok := heads.Peek(); ok && (next == nil || p.head().seq < next.seq) {
			next, from = p.head(), 4
		}
		if next == nil {
			break
		}
		n := approxPendingJSONSize(next)
		if maxBytes > 0 && len(taken) > 0 && size+n > maxBytes {
			break
		}
		size += n
		switch from {
		case 1:
			q.fresh.PopFront()
			q.unbacklog(next.item.PartitionKey)
		case 2:
			q.redo.Pop()
			q.unbacklog(next.item.PartitionKey)
		case 3:
			tookDelayed++
		case 4:
			p, _ := heads.Peek()
			p.heapSeq = 0 // its fifo heap entry goes stale; update pushes the new head
			p.popHead()
			if next.readyAt == 0 {
				p.ready--
				q.parts.ready--
			} else {
				p.delayed--
				tookStrictDelayed = true
			}
			touched[p] = true
			if p.len() > 0 {
				heads.fixTop()
			} else {
				heads.Pop()
			}
		}
		taken = append(taken, next)
	}
	for p := range touched {
		q.parts.update(p)
	}
	if q.fresh.Len() == 0 {
		q.fresh.Drop() // release the buffer, as a full drain always did
	}
	if q.redo.Len() == 0 {
		q.redo.Drop()
	}
	if tookDelayed > 0 {
		q.delayed.Drop()
		for _, e := range delayed[tookDelayed:] {
			q.delayed.Push(e)
		}
	}
	if tookStrictDelayed {
		gone := make(map[*entry]bool, len(taken))
		for _, e := range taken {
			gone[e] = true
		}
		kept := q.delayed.items[:0]
		for _, e := range q.delayed.items {
			if !gone[e] {
				kept = append(kept, e)
			}
		}
		clear(q.delayed.items[len(kept):])
		q.delayed.items = kept
		q.delayed.heapify()
	}
	items = make([]PendingItem, len(taken))
	for i, e := range taken {
		items[i] = e.pendingItem()
	}
	more = q.pendingLen() > 0
	if len(items) > 0 {
		q.signalSpace()
		if q.parts != nil {
			q.handOff(now) // a drained head may have been holding its partition
		}
		if a := q.record(ChangeDrained, now, func(c *Change) {
			c.Items = items
			c.PeerID = CallInfoFrom(ctx).Caller
		}); a != nil {
			ack = a
		}
	}
	q.mu.Unlock()
	return items, more, waitAck(ack)
}

// approxPendingJSONSize estimates the bytes e takes as a PendingItem in a
// drain response: the body as base64 (4 bytes per 3, rounded up), the
// lengths of the payload's strings, attribute keys and values (plus 6 bytes
// each for quotes, colon and comma) and the last error, plus 300 bytes for
// field names, times, numbers and the ownership token. It does not count JSON
// escaping of unusual characters, so treat it as an estimate and leave
// headroom under any hard limit.
func approxPendingJSONSize(e *entry) int {
	it := &e.item
	n := 300 + (len(it.Body)+2)/3*4 +
		len(it.ResourceType) + len(it.ResourceID) + len(it.PartitionKey) + len(it.PayloadEncoding) + len(it.RequestID)
	for k, v := range it.Attributes {
		n += len(k) + len(v) + 6
	}
	if e.lastError != nil {
		n += len(e.lastError.Message) + len(e.lastError.Code)
	}
	return n
}

// Restore implements Queue. Items are validated first; one bad item, or a
// sequence id already present, restores nothing. Restore is not bound by
// capacity: refusing it would lose the drained work.
func (q *Engine) Restore(ctx context.Context, items []PendingItem) (int, error) {
	if err := ctxError(ctx); err != nil {
		return 0, err
	}
	batch := make(map[int64]bool, len(items))
	for i := range items {
		p := &items[i]
		if err := p.Payload.Validate(); err != nil {
			e := AsError(err)
			return 0, &Error{Status: e.Status, Code: e.Code, Message: fmt.Sprintf("items[%d]: %s", i, e.Message)}
		}
		if p.SequenceID <= 0 {
			return 0, Errorf(StatusInvalidArgument, CodePendingItemRequired, "items[%d]: sequenceId must be positive, got %d", i, p.SequenceID)
		}
		if p.Attempt < 0 {
			return 0, Errorf(StatusInvalidArgument, CodePendingItemRequired, "items[%d]: attempt must not be negative, got %d", i, p.Attempt)
		}
		if !timeInRange(p.ReadyAt) || !timeInRange(p.Payload.NotBefore) {
			return 0, Errorf(StatusInvalidArgument, CodePendingItemRequired, "items[%d]: readyAt and payload.notBefore must be before %d", i, maxNanosTime.Year())
		}
		if batch[p.SequenceID] {
			return 0, Errorf(StatusAlreadyExists, CodeDuplicateSequence, "items[%d]: sequenceId %d appears twice", i, p.SequenceID)
		}
		batch[p.SequenceID] = true
	}
	if len(items) == 0 {
		return 0, nil
	}
	now, err := q.begin(ctx)
	if err != nil {
		return 0, err
	}
	if seq, ok := q.findAny(batch); ok {
		q.mu.Unlock()
		return 0, Errorf(StatusAlreadyExists, CodeDuplicateSequence, "sequenceId %d is already in the queue", seq)
	}
	restored := make([]PendingItem, len(items))
	for i := range items {
		e := newEntryFrom(&items[i])
		if e.enqueuedAt == 0 {
			e.enqueuedAt = now
		}
		if e.readyAt > now {
			q.pushDelayed(e)
		} else {
			q.pushReady(e)
		}
		q.nextSeq = max(q.nextSeq, e.seq+1)
		restored[i] = e.pendingItem()
	}
	ack := q.record(ChangeRestored, now, func(c *Change) {
		c.Items = restored
		c.PeerID = CallInfoFrom(ctx).Caller
	})
	q.handOff(now)
	q.mu.Unlock()
	return len(items), waitAck(ack)
}

// findAny returns a sequence id of ids that is present anywhere in the queue.
// It scans: restore is rare, and an index by sequence id for every pending
// item would cost memory and time on the hot path.
func (q *Engine) findAny(ids map[int64]bool) (int64, bool) {
	for id := range ids {
		if _, ok := q.leases[id]; ok {
			return id, true
		}
		if _, ok := q.dead[id]; ok {
			return id, true
		}
	}
	found := int64(0)
	q.eachPending(func(e *entry) {
		if found == 0 && ids[e.seq] {
			found = e.seq
		}
	})
	return found, found != 0
}
