package resourcelease

import (
	"context"
	"strconv"
	"time"
)

// ItemState is where an item is, as ListItems and Item report it.
type ItemState string

// The item states.
const (
	// ItemPending: waiting to be leased, ready now or (with ReadyAt) after a
	// requeue delay.
	ItemPending ItemState = "pending"
	// ItemLeased: leased to a worker (LeaseOwner) until LeaseExpiresAt.
	ItemLeased ItemState = "leased"
	// ItemDead: dead-lettered; it stays until redriven or purged.
	ItemDead ItemState = "dead"
)

// Valid reports whether s is one of the item states.
func (s ItemState) Valid() bool {
	return s == ItemPending || s == ItemLeased || s == ItemDead
}

// Bounds of ListItems.
const (
	// DefaultListLimit is the page size of ListItems when the request has none.
	DefaultListLimit = 50
	// MaxListLimit is the largest page; larger limits are cut to it.
	MaxListLimit = 500
	// MaxListScan bounds how many pending items in enqueue order one
	// ListItems call looks at, so that a filter that matches little cannot
	// hold the queue's lock for a scan of the whole queue: the page then
	// ends early, with NextAfter set where the scan stopped.
	MaxListScan = 10_000
)

// CodeItemNotFound is the code of ErrItemNotFound.
const CodeItemNotFound = "resourcelease.item.not_found"

// ErrItemNotFound: no pending, leased or dead-lettered item has the sequence
// id (it was completed, purged or drained, or never existed).
var ErrItemNotFound = &Error{Status: StatusNotFound, Code: CodeItemNotFound, Message: "no such item"}

// ItemNotFound is the error a queue's Item returns when no item has the
// sequence id: ErrItemNotFound's status and code (errors.Is matches it),
// naming the id.
func ItemNotFound(seq int64) *Error {
	return &Error{Status: ErrItemNotFound.Status, Code: ErrItemNotFound.Code,
		Message: "no pending, leased or dead-lettered item has sequenceId " + strconv.FormatInt(seq, 10)}
}

// ListItemsRequest selects a page of items in one state. The filters are
// exact matches; an empty one matches everything.
type ListItemsRequest struct {
	// State is the state to list: pending, leased or dead. Required.
	State ItemState `json:"state"`
	// ResourceType, PartitionKey and ResourceID filter by the payload's fields.
	ResourceType string `json:"resourceType,omitempty"`
	PartitionKey string `json:"partitionKey,omitempty"`
	ResourceID   string `json:"resourceId,omitempty"`
	// After is the cursor: only items with a larger sequence id are listed.
	// Start at 0 and pass the previous page's NextAfter.
	After int64 `json:"after,omitempty"`
	// Limit is the most items returned: 0 means DefaultListLimit, more than
	// MaxListLimit is cut to it; negative is invalid-argument.
	Limit int `json:"limit,omitempty"`
}

// ListItemsResponse is a page of items, in ascending sequence id order.
type ListItemsResponse struct {
	// Items never is null. Their Payload has no Body (BodySize says how
	// large it is); Item returns it.
	Items []ItemInfo `json:"items"`
	// NextAfter, when not zero, is the After of the next page: there may be
	// more items (the page was full, or the scan bound was reached). Zero
	// means the listing is complete.
	NextAfter int64 `json:"nextAfter,omitempty"`
}

// ItemInfo describes one item for an operator: its payload and where it is
// in its lifecycle. It carries no ownership token, so that reading it does
// not give the power to complete or fail a lease.
type ItemInfo struct {
	SequenceID int64     `json:"sequenceId"`
	State      ItemState `json:"state"`
	// Payload is the item; its Body only in Item's answer.
	Payload Item `json:"payload"`
	// BodySize is the length of the body in bytes.
	BodySize int `json:"bodySize"`
	// Attempt is the delivery attempt: the next lease's for a pending item,
	// the live lease's for a leased one, the last one for a dead letter.
	Attempt    int        `json:"attempt"`
	EnqueuedAt time.Time  `json:"enqueuedAt"`
	LastError  *ErrorInfo `json:"lastError,omitempty"`
	// ReadyAt, for a delayed pending item, is when it can be leased.
	ReadyAt time.Time `json:"readyAt,omitzero"`
	// LeaseOwner, LeasedAt and LeaseExpiresAt describe a leased item's lease.
	LeaseOwner     string    `json:"leaseOwner,omitempty"`
	LeasedAt       time.Time `json:"leasedAt,omitzero"`
	LeaseExpiresAt time.Time `json:"leaseExpiresAt,omitzero"`
	// DeadLetteredAt and DeadLetterReason describe a dead letter.
	DeadLetteredAt   time.Time `json:"deadLetteredAt,omitzero"`
	DeadLetterReason string    `json:"deadLetterReason,omitempty"`
}

// info describes e in state; with body it includes the payload's body.
// Callers hold q.mu.
func (e *entry) info(state ItemState, body bool) ItemInfo {
	in := ItemInfo{
		SequenceID: e.seq, State: state, Payload: e.item, BodySize: len(e.item.Body),
		Attempt: e.attempt, EnqueuedAt: fromNanos(e.enqueuedAt), LastError: e.lastError,
		ReadyAt: fromNanos(e.readyAt),
	}
	if !body {
		in.Payload.Body = nil
	}
	if state == ItemLeased {
		in.LeaseOwner, in.LeasedAt, in.LeaseExpiresAt = e.peer, fromNanos(e.leasedAt), fromNanos(e.expiresAt)
	}
	return in
}

func (r *ListItemsRequest) matches(it *Item) bool {
	return (r.ResourceType == "" || it.ResourceType == r.ResourceType) &&
		(r.PartitionKey == "" || it.PartitionKey == r.PartitionKey) &&
		(r.ResourceID == "" || it.ResourceID == r.ResourceID)
}

// ListItems returns a page of the items in req.State that match its filters,
// by ascending sequence id after req.After. It copies nothing but the page
// (Attributes are shared with the queue: treat them as read-only).
//
// It runs under the queue's lock, so its cost is paid by every other call
// waiting for it; for a page of k items it is:
//
//   - pending: O(log F + min(F, MaxListScan) + R + D + k log k), where F
//     is the number of items waiting in enqueue order (searched, then
//     scanned from After), and R and D those requeued, restored or redriven
//     and those delayed (kept in heaps, so scanned in full). With
//     per-partition rules (MaxActivePerPartition, partitions fairness) the
//     ready items are kept by partition, so a listing scans every pending
//     item, O(n + k log k), or with a PartitionKey filter only that
//     partition's and the delayed ones;
//   - leased: O(L + k log k) for L live leases;
//   - dead: O(N + k log k) for N dead letters.
//
// Memory is O(k) in every case.
func (q *Engine) ListItems(ctx context.Context, req ListItemsRequest) (ListItemsResponse, error) {
	if !req.State.Valid() {
		return ListItemsResponse{}, Errorf(StatusInvalidArgument, CodeInvalidArgument,
			"state must be %q, %q or %q, got %q", ItemPending, ItemLeased, ItemDead, req.State)
	}
	if req.After < 0 || req.Limit < 0 {
		return ListItemsResponse{}, Errorf(StatusInvalidArgument, CodeInvalidArgument,
			"after and limit must not be negative, got %d and %d", req.After, req.Limit)
	}
	limit := req.Limit
	if limit == 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	if err := ctxError(ctx); err != nil {
		return ListItemsResponse{}, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ListItemsResponse{}, ErrClosed
	}
	// sel keeps the limit+1 smallest matches: one more than the page, to
	// know whether the page is the last.
	sel := newSmallest(limit + 1)
	consider := func(e *entry, upTo int64) {
		if e.seq > req.After && e.seq <= upTo && req.matches(&e.item) {
			sel.offer(e)
		}
	}
	scanStop := int64(0) // where a bounded scan stopped early; 0 when it did not
	switch req.State {
	case ItemPending:
		if q.parts != nil {
			all := func(e *entry) { consider(e, 1<<63-1) }
			if req.PartitionKey != "" {
				q.eachPendingOf(req.PartitionKey, all)
			} else {
				q.eachPending(all)
			}
			break
		}
		scanStop = q.scanFresh(&req, sel)
		upTo := int64(1<<63 - 1)
		if scanStop != 0 {
			// Fresh items after scanStop were not looked at: a requeued one
			// past it could jump ahead of them and the cursor would skip them.
			upTo = scanStop
		}
		for _, e := range q.redo.items {
			consider(e, upTo)
		}
		for _, e := range q.delayed.items {
			consider(e, upTo)
		}
	case ItemLeased:
		for _, e := range q.leases {
			consider(e, 1<<63-1)
		}
	case ItemDead:
		for el := q.deadLst.Front(); el != nil; el = el.Next() {
			consider(el.Value.(*deadEntry).e, 1<<63-1)
		}
	}
	found := sel.sorted()
	resp := ListItemsResponse{Items: make([]ItemInfo, 0, min(len(found), limit))}
	for i, e := range found {
		if i == limit {
			resp.NextAfter = found[limit-1].seq
			break
		}
		in := e.info(req.State, false)
		if req.State == ItemDead {
			d := q.dead[e.seq].Value.(*deadEntry)
			in.DeadLetteredAt, in.DeadLetterReason = fromNanos(d.at), d.reason
		}
		resp.Items = append(resp.Items, in)
	}
	if resp.NextAfter == 0 && scanStop != 0 {
		resp.NextAfter = scanStop
	}
	return resp, nil
}

// scanFresh offers sel the fresh items after req.After that match req, in
// order, until sel is full or MaxListScan items were looked at; in that
// second case it returns the sequence id of the last one looked at (0
// otherwise). Callers hold q.mu.
func (q *Engine) scanFresh(req *ListItemsRequest, sel *smallest) int64 {
	f := &q.fresh
	// fresh is in ascending sequence order: find the first after req.After.
	lo, hi := 0, f.Len()
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if f.at(mid).seq <= req.After {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for i, scanned := lo, 0; i < f.Len(); i++ {
		if scanned == MaxListScan {
			return f.at(i - 1).seq
		}
		scanned++
		if e := f.at(i); req.matches(&e.item) {
			sel.offer(e)
			if sel.full() {
				return 0 // later fresh items have larger ids than all of these
			}
		}
	}
	return 0
}

// Item returns the item with sequence id seq, with its body, or
// ErrItemNotFound. The body and attributes are shared with the queue: treat
// them as read-only. It costs O(1) for a leased or dead-lettered item and up
// to O(log F + R + D) for a pending one (see ListItems), O(n) with
// per-partition rules, under the lock.
func (q *Engine) Item(ctx context.Context, seq int64) (ItemInfo, error) {
	if err := ctxError(ctx); err != nil {
		return ItemInfo{}, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ItemInfo{}, ErrClosed
	}
	if e, ok := q.leases[seq]; ok {
		return e.info(ItemLeased, true), nil
	}
	if el, ok := q.dead[seq]; ok {
		d := el.Value.(*deadEntry)
		in := d.e.info(ItemDead, true)
		in.DeadLetteredAt, in.DeadLetterReason = fromNanos(d.at), d.reason
		return in, nil
	}
	if e := q.findPending(seq); e != nil {
		return e.info(ItemPending, true), nil
	}
	return ItemInfo{}, ItemNotFound(seq)
}

// findPending returns the pending entry with sequence id seq, or nil.
// Callers hold q.mu.
func (q *Engine) findPending(seq int64) *entry {
	f := &q.fresh
	lo, hi := 0, f.Len()
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if f.at(mid).seq < seq {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < f.Len() && f.at(lo).seq == seq {
		return f.at(lo)
	}
	var found *entry
	q.eachPending(func(e *entry) {
		if e.seq == seq {
			found = e
		}
	})
	return found
}

// at returns the i-th element from the front (0 <= i < Len).
func (r *ring[T]) at(i int) *T { return r.buf[(r.head+i)%len(r.buf)] }

// smallest keeps the n entries with the smallest sequence ids it is offered,
// in a max-heap so the largest is the one to drop: O(log n) per offer.
type smallest struct {
	n int
	h minHeap[*entry]
}

func newSmallest(n int) *smallest {
	s := &smallest{n: n}
	s.h.less = func(a, b *entry) bool { return a.seq > b.seq }
	return s
}

// offer adds e unless n smaller ones are kept already.
func (s *smallest) offer(e *entry) {
	if s.h.Len() < s.n {
		s.h.Push(e)
		return
	}
	if top, _ := s.h.Peek(); e.seq < top.seq {
		s.h.Pop()
		s.h.Push(e)
	}
}

func (s *smallest) full() bool { return s.h.Len() >= s.n }

// sorted empties s and returns its entries in ascending sequence order.
func (s *smallest) sorted() []*entry {
	out := make([]*entry, s.h.Len())
	for i := len(out) - 1; i >= 0; i-- {
		out[i] = s.h.Pop()
	}
	return out
}
