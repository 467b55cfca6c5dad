package resourcelease

import (
	"context"
	"time"
)

// Where pending items live. Without per-partition rules (fifo fairness, no
// MaxActivePerPartition) the ready items are in q.fresh (new enqueues, in
// sequence order: O(1)) and q.redo (the rest, a heap by sequence id), and
// q.backlog, once Backlog was asked for, counts them per partition. With per-partition
// rules they are in q.parts (partition.go). Delayed items are in q.delayed
// either way (and, with strict partitions, in their partition as well).
// Every ready item has readyAt 0; a delayed one has its ready time.

// pushNew adds a ready item just enqueued: its sequence id is the highest.
func (q *Engine) pushNew(e *entry) {
	if q.parts != nil {
		q.parts.push(e)
		return
	}
	q.fresh.PushBack(e)
	if q.backlog != nil {
		q.backlog[e.item.PartitionKey]++
	}
}

// pushReady puts a ready item among the pending in its place by sequence
// id (requeued, released, restored, redriven or promoted).
func (q *Engine) pushReady(e *entry) {
	e.readyAt = 0
	if q.parts != nil {
		q.parts.push(e)
		return
	}
	q.redo.Push(e)
	if q.backlog != nil {
		q.backlog[e.item.PartitionKey]++
	}
}

// pushDelayed adds an item that is not ready before e.readyAt, and makes
// the sweeper look again at when to wake (for the long-polls that wait for
// it).
func (q *Engine) pushDelayed(e *entry) {
	q.delayed.Push(e)
	if q.parts != nil && q.parts.strict {
		q.parts.pushDelayed(e)
	}
	q.kickSweeper()
}

// promote makes a delayed item, just taken from q.delayed, ready.
func (q *Engine) promote(e *entry) {
	e.readyAt = 0
	if q.parts != nil && q.parts.strict {
		q.parts.promoted(e) // it is in its partition already
		return
	}
	q.pushReady(e)
}

// popReady removes and returns the next item to lease, or nil (always nil
// while leasing is paused). The caller grants it.
func (q *Engine) popReady() *entry {
	if q.paused {
		return nil
	}
	if q.parts != nil {
		return q.parts.pop()
	}
	f := q.fresh.Front()
	r, ok := q.redo.Peek()
	var e *entry
	switch {
	case f == nil && !ok:
		return nil
	case f == nil:
		e = q.redo.Pop()
	case !ok || f.seq < r.seq:
		e = q.fresh.PopFront()
	default:
		e = q.redo.Pop()
	}
	q.unbacklog(e.item.PartitionKey)
	return e
}

// peekReady returns what popReady would take, without taking it.
func (q *Engine) peekReady() *entry {
	if q.paused {
		return nil
	}
	if q.parts != nil {
		return q.parts.peek()
	}
	f := q.fresh.Front()
	r, ok := q.redo.Peek()
	switch {
	case f == nil && !ok:
		return nil
	case f == nil:
		return r
	case !ok || f.seq < r.seq:
		return f
	}
	return r
}

// canLease reports whether popReady would return an item.
func (q *Engine) canLease() bool {
	if q.paused {
		return false
	}
	if q.parts != nil {
		return q.parts.next() != nil
	}
	return q.fresh.Len()+q.redo.Len() > 0
}

// readyLen is the number of ready items, leasable now or held back by
// their partition's limit.
func (q *Engine) readyLen() int {
	if q.parts != nil {
		return q.parts.ready
	}
	return q.fresh.Len() + q.redo.Len()
}

func (q *Engine) unbacklog(key string) {
	if q.backlog != nil {
		q.backlog[key]-- // a zero count is dropped by the next Backlog
	}
}

// leaseEnded tells the partitions that e's live lease ended. Callers hold
// q.mu.
func (q *Engine) leaseEnded(e *entry) {
	if q.parts != nil {
		q.parts.unleased(e)
	}
}

// eachPending calls f on every pending item once, in no order.
func (q *Engine) eachPending(f func(*entry)) {
	q.fresh.Each(f)
	for _, e := range q.redo.items {
		f(e)
	}
	if q.parts != nil {
		q.parts.each(f)
		if q.parts.strict {
			return // the delayed items are in their partitions
		}
	}
	for _, e := range q.delayed.items {
		f(e)
	}
}

// eachPendingOf is eachPending for the items of one partition.
func (q *Engine) eachPendingOf(key string, f func(*entry)) {
	if q.parts == nil {
		q.eachPending(func(e *entry) {
			if e.item.PartitionKey == key {
				f(e)
			}
		})
		return
	}
	if p := q.parts.byKey[key]; p != nil {
		p.each(f)
	}
	if !q.parts.strict {
		for _, e := range q.delayed.items {
			if e.item.PartitionKey == key {
				f(e)
			}
		}
	}
}

// notBeforeNanos is the ready time of an item with the given notBefore (0
// when it has none, or one before 1970, which has passed anyway).
func notBeforeNanos(t time.Time) int64 {
	if t.IsZero() || t.Unix() < 0 {
		return 0
	}
	return t.UnixNano()
}

// timeInRange reports whether t, as a ready time, can be held as Unix
// nanoseconds (a time before 1970 is held as "ready").
func timeInRange(t time.Time) bool { return t.Before(maxNanosTime) }

var maxNanosTime = time.Unix(0, 1<<63-1)

// PartitionBacklog is one partition's share of the queue.
type PartitionBacklog struct {
	PartitionKey string `json:"partitionKey"`
	// Ready counts its ready items: leasable now, or held back by the
	// partition's limit (MaxActivePerPartition).
	Ready int `json:"ready"`
	// Leased counts its live leases.
	Leased int `json:"leased"`
}

// Backlog is what is waiting, by partition, as Engine.Backlog reports it.
type Backlog struct {
	// Partitions are the partitions with the most ready items, most first
	// (ties by key), at most as many as asked for.
	Partitions []PartitionBacklog `json:"partitions"`
	// PartitionCount counts the partitions that have a ready item.
	PartitionCount int `json:"partitionCount"`
	// Ready and Delayed count the ready and the delayed items.
	Ready   int `json:"ready"`
	Delayed int `json:"delayed"`
	// OldestReadySince is when the ready item with the lowest sequence id
	// (the next one fifo leasing takes, partition limits aside) became
	// ready: its enqueue, or its NotBefore when that was later. Zero when
	// nothing is ready. Its age is what to alarm on when work piles up.
	OldestReadySince time.Time `json:"oldestReadySince,omitzero"`
}

// Backlog returns the top partitions by ready items (at most top of them;
// top <= 0 returns none) and the age of the oldest ready item. It runs
// under the queue's lock in O(P log top + L) for P partitions with ready
// items and L live leases (with strict partitions, plus the items of those
// whose head is delayed), so call it now and then (a metrics scrape), not
// per operation. Without per-partition rules the queue counts ready items
// by partition only once asked: the first call scans every ready item, and
// from then on each enqueue and lease keeps the counts.
func (q *Engine) Backlog(ctx context.Context, top int) (Backlog, error) {
	if err := ctxError(ctx); err != nil {
		return Backlog{}, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	b := Backlog{Ready: q.readyLen(), Delayed: q.delayed.Len()}
	worse := func(a, c PartitionBacklog) bool { // a ranks below c
		if a.Ready != c.Ready {
			return a.Ready < c.Ready
		}
		return a.PartitionKey > c.PartitionKey
	}
	h := minHeap[PartitionBacklog]{less: worse}
	offer := func(key string, ready int) {
		if ready == 0 {
			return
		}
		b.PartitionCount++
		if top <= 0 {
			return
		}
		pb := PartitionBacklog{PartitionKey: key, Ready: ready}
		if h.Len() < top {
			h.Push(pb)
		} else if least, _ := h.Peek(); worse(least, pb) {
			h.Pop()
			h.Push(pb)
		}
	}
	var oldest *entry
	older := func(e *entry) {
		if e != nil && (oldest == nil || e.seq < oldest.seq) {
			oldest = e
		}
	}
	if q.parts == nil {
		if q.backlog == nil {
			q.backlog = make(map[string]int)
			count := func(e *entry) { q.backlog[e.item.PartitionKey]++ }
			q.fresh.Each(count)
			for _, e := range q.redo.items {
				count(e)
			}
		}
		for key, n := range q.backlog {
			if n <= 0 {
				delete(q.backlog, key)
				continue
			}
			offer(key, n)
		}
		older(q.fresh.Front())
		if r, ok := q.redo.Peek(); ok {
			older(r)
		}
	} else {
		for key, p := range q.parts.byKey {
			offer(key, p.ready)
			switch h := p.head(); {
			case p.ready == 0:
			case h.readyAt == 0:
				older(h)
			default: // a strict partition held by its delayed head
				p.each(func(e *entry) {
					if e.readyAt == 0 {
						older(e)
					}
				})
			}
		}
	}
	b.Partitions = make([]PartitionBacklog, h.Len())
	at := make(map[string]int, h.Len())
	for i := len(b.Partitions) - 1; i >= 0; i-- {
		b.Partitions[i] = h.Pop()
		at[b.Partitions[i].PartitionKey] = i
	}
	if len(at) > 0 {
		for _, e := range q.leases {
			if i, ok := at[e.item.PartitionKey]; ok {
				b.Partitions[i].Leased++
			}
		}
	}
	if oldest != nil {
		since := oldest.enqueuedAt
		if nb := notBeforeNanos(oldest.item.NotBefore); nb > since {
			since = nb
		}
		b.OldestReadySince = fromNanos(since)
	}
	return b, nil
}
