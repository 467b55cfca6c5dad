package resourcelease

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
)

// Engine is the lease queue engine. Its index lives in memory; with a
// durable Journal (the SQLite replicator) every change is written through and
// acknowledged before the call returns, and InitialState rebuilds it after a
// restart. Create it with NewEngine; it is safe for concurrent use.
//
// Choosing the next item is O(1) for items in enqueue order (a FIFO ring) and
// O(log n) for requeued or restored ones (a heap by sequence id), so lease cost
// does not grow with queue depth. With per-partition rules
// (MaxActivePerPartition, partitions fairness) it is O(log n) too: a heap of
// pending items per partition, and a heap (fifo) or ring (round-robin) of the
// partitions that have a leasable item (see partition.go).
//
// Payloads are not copied: the Body and Attributes of an enqueued item, and of
// the items a lease, drain or dead-letter listing returns, are shared with the
// queue and its journal, so treat them as read-only. LocalDispatcher copies at
// its boundary, so its callers need not care.
type Engine struct {
	cfg     QueueConfig // defaults applied
	clock   Clock
	journal Journal

	mu      sync.Mutex
	closed  bool
	paused  bool // leasing is paused (pause.go): popReady and handOff grant nothing
	nextSeq int64
	// lastStamp is the newest change time handed out (see stamp), and
	// lastRead the clock reading it came from: with the system clock it
	// carries a monotonic reading, which times leases (Lease.TTL) without
	// trusting the wall clock.
	lastStamp int64
	lastRead  time.Time

	fresh   ring[entry]     // ready, in ascending sequence order (new enqueues)
	redo    minHeap[*entry] // ready, out of order (requeued, restored, redriven): by sequence id
	delayed minHeap[*entry] // waiting for ReadyAt: by ReadyAt, then sequence id
	// backlog counts the ready items in fresh and redo per partition, from
	// the first Backlog call on (nil until then: a queue nobody asks
	// pays nothing). Counts that fell to zero stay until the next Backlog.
	backlog map[string]int
	parts   *partitionIndex         // with per-partition rules, the ready items instead of fresh and redo
	leases  map[int64]*entry        // live leases by sequence id
	expiry  expiryList              // live leases by expiry
	dead    map[int64]*list.Element // of *deadEntry, in dead-letter order
	deadLst list.List

	dedupe      map[string]dedupeRecord
	dedupeOrder ring[DedupeEntry] // by SeenAt: trimmed from the front

	// batch collects the changes of the batch operation in progress (see
	// engine_batch.go); nil outside one.
	batch *changeBatch

	waiters     list.List     // of *waiter, first come first served
	spaceCh     chan struct{} // closed and replaced when pending shrinks and spaceWanted
	spaceWanted bool          // an enqueue is waiting for capacity
	sweepKick   chan struct{}
	stop        chan struct{}
	sweepDone   chan struct{}
}

// entry is one item, pending or leased. Times are Unix nanoseconds to keep the
// entry small (bytes per pending item is a benchmarked figure); 0 means unset.
type entry struct {
	item       Item
	seq        int64
	attempt    int
	enqueuedAt int64
	readyAt    int64
	lastError  *ErrorInfo
	// releases counts the free releases since the attempt last changed.
	releases int
	// lastAttempt and lastLease are the token of the item's newest lease
	// (see lastToken): the live one while the entry is in Engine.leases.
	// One token for both, without the sequence id that seq already holds,
	// keeps the entry in a smaller allocation size class.
	lastAttempt int
	lastLease   uuid.UUID

	// Live lease, valid while the entry is in Engine.leases.
	peer                 string
	leasedAt             int64
	expiresAt            int64
	prevLease, nextLease *entry // neighbours in Engine.expiry
}

// lastToken is the token of e's newest lease, or the zero token.
func (e *entry) lastToken() OwnershipToken {
	if e.lastLease == uuid.Nil && e.lastAttempt == 0 {
		return OwnershipToken{}
	}
	return OwnershipToken{SequenceID: e.seq, Attempt: e.lastAttempt, LeaseID: e.lastLease}
}

func (e *entry) setLastToken(t OwnershipToken) { e.lastAttempt, e.lastLease = t.Attempt, t.LeaseID }

type deadEntry struct {
	e      *entry
	at     int64
	reason string
}

type dedupeRecord struct {
	seq    int64
	seenAt int64
	// ack is the original enqueue's Ack until it was found durable: a retry
	// is answered as the original is now, never acknowledged ahead of the
	// disk (a journal that failed may still commit it later, or never).
	ack Ack
}

// durable waits for the original enqueue of r (outside q.mu), no longer
// than ctx, and returns nil when it is durable. A synchronous sink's failure
// (CodeReplicationFailed) comes after the commit, so it counts as durable.
func (r dedupeRecord) durable(ctx context.Context) error {
	if err := waitAckCtx(ctx, r.ack); err != nil && CodeOf(err) != CodeReplicationFailed {
		return err
	}
	return nil
}

// waitAckCtx is waitAck that gives up when ctx ends. The Ack's Wait then
// goes on in its own goroutine, which ends when the journal answers it (a
// journal answers every Ack, at the latest when it is closed).
func waitAckCtx(ctx context.Context, a Ack) error {
	if a == nil {
		return nil
	}
	if ctx.Done() == nil {
		return waitAck(a)
	}
	done := make(chan error, 1)
	go func() { done <- waitAck(a) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctxError(ctx)
	}
}

// duplicate answers a retry of the enqueue r records: once the original is
// durable, as it is; the record then drops its Ack, which holds the
// original's journal batch.
func (q *Engine) duplicate(ctx context.Context, requestID string, r dedupeRecord) error {
	if err := r.durable(ctx); err != nil {
		return err
	}
	if r.ack != nil {
		q.settleDedupe([]string{requestID}, []int64{r.seq}, nil)
	}
	return nil
}

// settleDedupe drops the Acks (each holds a journal batch) of the enqueues
// of seqs under requestIDs once they were found durable; a failed one is
// kept for the retries to ask again. It takes q.mu.
func (q *Engine) settleDedupe(requestIDs []string, seqs []int64, err error) {
	if err != nil && CodeOf(err) != CodeReplicationFailed {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, id := range requestIDs {
		if r, ok := q.dedupe[id]; ok && r.seq == seqs[i] {
			r.ack = nil
			q.dedupe[id] = r
		}
	}
}

type waiter struct {
	peer string
	ch   chan waiterResult // buffered 1: a grant is sent under the lock, never blocks
	elem *list.Element
}

type waiterResult struct {
	grant grantInfo // grant.e is nil when nothing was granted
	ack   Ack
	err   error
}

var _ Queue = (*Engine)(nil)

// NewEngine validates cfg, applies its defaults, rebuilds from
// cfg.InitialState if given, and starts the expiry sweeper (stopped by Close).
func NewEngine(cfg QueueConfig) (*Engine, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	q := &Engine{
		cfg:       cfg,
		clock:     clockOrSystem(cfg.Clock),
		journal:   cfg.Journal,
		nextSeq:   1,
		leases:    make(map[int64]*entry),
		dead:      make(map[int64]*list.Element),
		dedupe:    make(map[string]dedupeRecord),
		spaceCh:   make(chan struct{}),
		sweepKick: make(chan struct{}, 1),
		stop:      make(chan struct{}),
		sweepDone: make(chan struct{}),
	}
	q.redo.less = bySeq
	if cfg.MaxActivePerPartition > 0 || cfg.Fairness == FairnessPartitions {
		q.parts = newPartitionIndex(&cfg)
	}
	q.delayed.less = func(a, b *entry) bool {
		if a.readyAt != b.readyAt {
			return a.readyAt < b.readyAt
		}
		return a.seq < b.seq
	}
	if cfg.InitialState != nil {
		if err := q.rebuild(cfg.InitialState); err != nil {
			return nil, err
		}
	}
	go q.sweepLoop()
	return q, nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// pendingItem is the snapshot of e as a pending item.
func (e *entry) pendingItem() PendingItem {
	p := PendingItem{
		Payload:    e.item,
		Attempt:    e.attempt,
		EnqueuedAt: fromNanos(e.enqueuedAt),
		LastError:  e.lastError,
		SequenceID: e.seq,
		ReadyAt:    fromNanos(e.readyAt),
		Releases:   e.releases,
	}
	if t := e.lastToken(); !t.IsZero() {
		p.LastOwnershipToken = &t
	}
	return p
}

func (q *Engine) pendingLen() int { return q.readyLen() + q.delayed.Len() }

func (q *Engine) statsLocked() Stats {
	return Stats{PendingCount: q.pendingLen(), DelayedCount: q.delayed.Len(), ActiveLeaseCount: len(q.leases), DeadLetterCount: len(q.dead), Paused: q.paused}
}

// full returns the refusal of an enqueue of an item that is delayed (or
// not) when the queue has no room for it, or nil. Capacity bounds the ready
// and leased items together; DelayedCapacity the delayed ones. Callers hold
// q.mu.
func (q *Engine) full(delayed bool) *Error {
	if delayed {
		if q.cfg.DelayedCapacity > 0 && q.delayed.Len() >= q.cfg.DelayedCapacity {
			return Errorf(StatusResourceExhausted, CodeQueueFull, "queue is at its delayed capacity (%d delayed items)", q.cfg.DelayedCapacity)
		}
		return nil
	}
	if q.cfg.Capacity > 0 && q.readyLen()+len(q.leases) >= q.cfg.Capacity {
		return Errorf(StatusResourceExhausted, CodeQueueFull, "queue is at capacity (%d ready and leased items)", q.cfg.Capacity)
	}
	return nil
}

// readyTime checks an enqueued item's NotBefore against now and returns its
// ready time: 0 when it is ready now. A NotBefore further ahead than
// MaxDuration is invalid-argument.
func readyTime(nb time.Time, now int64) (int64, error) {
	if nb.IsZero() {
		return 0, nil
	}
	at := fromNanos(now)
	if !nb.After(at) {
		return 0, nil
	}
	if nb.Sub(at) > MaxDuration {
		return 0, Errorf(StatusInvalidArgument, CodeInvalidArgument, "payload.notBefore must be at most %v ahead, got %s", MaxDuration, nb.Format(time.RFC3339))
	}
	return nb.UnixNano(), nil
}

// begin starts a call that changes the queue: it checks ctx, reads the clock
// (before the lock: reading it can be slow), takes q.mu and refuses a closed
// queue. On success q.mu is held and now is the call's change time.
func (q *Engine) begin(ctx context.Context) (now int64, err error) {
	_, now, err = q.beginAt(ctx)
	return now, err
}

// beginAt is begin that also returns the clock reading the call started
// with, for timing a lease from it.
func (q *Engine) beginAt(ctx context.Context) (read time.Time, now int64, err error) {
	if err := ctxError(ctx); err != nil {
		return time.Time{}, 0, err
	}
	read = q.clock.Now()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return time.Time{}, 0, ErrClosed
	}
	return read, q.stamp(read), nil
}

// stamp returns the time of a change: the clock reading its caller took
// before the lock, kept from going backwards in change order. Callers hold q.mu.
func (q *Engine) stamp(read time.Time) int64 {
	n := read.UnixNano()
	q.lastRead = read
	if n < q.lastStamp {
		n = q.lastStamp
	}
	q.lastStamp = n
	return n
}

// record hands a change to the journal. Callers hold q.mu. The change is only
// built when there is a journal, so a queue without one pays nothing.
func (q *Engine) record(kind ChangeKind, now int64, fill func(c *Change)) Ack {
	if q.journal == nil {
		return nil
	}
	c := &Change{Kind: kind, At: fromNanos(now), Pending: q.pendingLen(), Delayed: q.delayed.Len(), Active: len(q.leases), DeadLettered: len(q.dead)}
	fill(c)
	if q.batch != nil {
		q.batch.changes = append(q.batch.changes, c)
		return q.batch.ack
	}
	return q.journal.Record(c)
}

func waitAck(a Ack) error {
	if a == nil {
		return nil
	}
	if err := a.Wait(); err != nil {
		return AsError(err)
	}
	return nil
}

// Enqueue implements Queue. An item whose NotBefore is after now is
// delayed: pending, but not leased before then. NotBefore is kept in UTC.
func (q *Engine) Enqueue(ctx context.Context, item Item) (EnqueueResult, error) {
	if err := item.Validate(); err != nil {
		return EnqueueResult{}, err
	}
	if err := ctxError(ctx); err != nil {
		return EnqueueResult{}, err
	}
	if !item.NotBefore.IsZero() {
		item.NotBefore = item.NotBefore.Round(0).UTC()
	}
	// Allocated before taking the lock: less time holding it under contention.
	e := &entry{item: item, attempt: 1}
	for {
		read := q.clock.Now() // before the lock: reading the clock can be slow
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return EnqueueResult{}, ErrClosed
		}
		now := q.stamp(read)
		var readyAt int64
		if !item.NotBefore.IsZero() {
			var err error
			if readyAt, err = readyTime(item.NotBefore, now); err != nil {
				q.mu.Unlock()
				return EnqueueResult{}, err
			}
		}
		if item.RequestID != "" && q.cfg.DedupeWindow > 0 {
			q.trimDedupe(now)
			if r, ok := q.dedupe[item.RequestID]; ok {
				res := EnqueueResult{SequenceID: r.seq, Duplicate: true, Stats: q.statsLocked()}
				q.mu.Unlock()
				if err := q.duplicate(ctx, item.RequestID, r); err != nil {
					return EnqueueResult{}, err
				}
				return res, nil
			}
		}
		if full := q.full(readyAt != 0); full != nil {
			if q.cfg.FullMode == FullReject {
				q.mu.Unlock()
				return EnqueueResult{}, full
			}
			space := q.spaceCh
			q.spaceWanted = true
			q.mu.Unlock()
			select {
			case <-space:
				continue
			case <-ctx.Done():
				return EnqueueResult{}, ctxError(ctx)
			}
		}
		e.seq, e.enqueuedAt = q.nextSeq, now
		q.nextSeq++
		if readyAt != 0 {
			e.readyAt = readyAt
			q.pushDelayed(e)
		} else {
			q.pushNew(e)
		}
		if item.RequestID != "" && q.cfg.DedupeWindow > 0 {
			q.dedupe[item.RequestID] = dedupeRecord{seq: e.seq, seenAt: now}
			q.dedupeOrder.PushBack(&DedupeEntry{RequestID: item.RequestID, SequenceID: e.seq, SeenAt: fromNanos(now)})
			q.boundDedupe()
		}
		ack := q.record(ChangeEnqueued, now, func(c *Change) {
			p := e.pendingItem()
			c.Item = &p
			c.PeerID = CallInfoFrom(ctx).Caller
		})
		deduped := item.RequestID != "" && q.cfg.DedupeWindow > 0 && ack != nil
		if deduped {
			r := q.dedupe[item.RequestID]
			r.ack = ack
			q.dedupe[item.RequestID] = r
		}
		res := EnqueueResult{SequenceID: e.seq, NotBefore: item.NotBefore, Stats: q.statsLocked()}
		if readyAt == 0 {
			q.handOff(now)
		}
		q.mu.Unlock()
		err := waitAck(ack)
		if deduped {
			q.settleDedupe([]string{item.RequestID}, []int64{e.seq}, err)
		}
		return res, err
	}
}

// boundDedupe forgets the oldest remembered request ids beyond
// MaxDedupeEntries. Callers hold q.mu.
func (q *Engine) boundDedupe() {
	for q.cfg.MaxDedupeEntries > 0 && q.dedupeOrder.Len() > q.cfg.MaxDedupeEntries {
		q.forgetOldestDedupe()
	}
}

// forgetOldestDedupe drops the front of dedupeOrder, and its map entry unless
// a newer enqueue of the same request id owns it. Callers hold q.mu.
func (q *Engine) forgetOldestDedupe() {
	d := q.dedupeOrder.PopFront()
	if r, ok := q.dedupe[d.RequestID]; ok && r.seq == d.SequenceID {
		delete(q.dedupe, d.RequestID)
	}
}

func (q *Engine) trimDedupe(now int64) {
	for q.dedupeOrder.Len() > 0 {
		d := q.dedupeOrder.Front()
		if now-d.SeenAt.UnixNano() < int64(q.cfg.DedupeWindow) {
			return
		}
		q.forgetOldestDedupe()
	}
}

// grantInfo is what a Lease is built from: the entry's immutable parts
// (item, sequence id, enqueue time) are read from e at any time, and the
// parts a later change may rewrite are copied under the lock.
type grantInfo struct {
	e         *entry
	token     OwnershipToken
	peer      string
	lastError *ErrorInfo
	expiresAt int64
	// at is the clock reading of the change that granted it (see lastRead).
	at time.Time
}

// grant leases e to peer under lease id id. Callers hold q.mu and have
// removed e from pending. The Lease itself is built from the returned
// grantInfo by newLease, after the lock is released: less time holding it.
func (q *Engine) grant(e *entry, peer string, now int64, id uuid.UUID) (grantInfo, Ack) {
	e.readyAt = 0
	token := OwnershipToken{SequenceID: e.seq, Attempt: e.attempt, LeaseID: id}
	e.setLastToken(token)
	e.peer = peer
	e.leasedAt = now
	e.expiresAt = now + int64(q.cfg.LeaseDuration)
	q.leases[e.seq] = e
	q.expiry.PushBack(e)
	g := grantInfo{e: e, token: token, peer: peer, lastError: e.lastError, expiresAt: e.expiresAt, at: q.lastRead}
	ack := q.record(ChangeLeased, now, func(c *Change) {
		p := e.pendingItem()
		c.Item = &p
		c.Token = token
		c.PeerID = peer
		c.LeaseExpiresAt = fromNanos(e.expiresAt)
		c.LeasedAt = fromNanos(now)
	})
	return g, ack
}

// newLease builds the Lease of a grant to a call that read the clock at
// received. It needs no lock.
//
// The TTL is the lease duration plus the time from received to the grant,
// measured between the two clock readings (monotonic with the system
// clock), so that it does not follow a wall clock step. The grant's change
// time is never earlier than its reading, so the expiry is never earlier than
// received + TTL: a worker adding TTL to when it sent the request gets a
// deadline no later than the engine's.
func (q *Engine) newLease(g *grantInfo, received time.Time) *Lease {
	e := g.e
	return &Lease{
		Payload:           e.item,
		SequenceID:        e.seq,
		Attempt:           g.token.Attempt,
		EnqueuedAt:        fromNanos(e.enqueuedAt),
		LastError:         g.lastError,
		OwnershipToken:    g.token,
		OwnerPeerID:       g.peer,
		LeaseExpiresAt:    fromNanos(g.expiresAt),
		TTL:               max(q.cfg.LeaseDuration+g.at.Sub(received), 0),
		HeartbeatInterval: q.cfg.HeartbeatInterval,
	}
}

// handOff gives ready items to waiting long-polls, first come first served, one
// item per waiter: no waiter is woken for an item it will not get. While
// leasing is paused it gives out nothing; Resume hands off.
func (q *Engine) handOff(now int64) {
	if q.waiters.Len() > 0 && q.stalled() != nil {
		return // they keep waiting: a grant now would only be given back
	}
	for q.waiters.Len() > 0 && q.canLease() {
		w := q.waiters.Remove(q.waiters.Front()).(*waiter)
		w.elem = nil
		g, ack := q.grant(q.popReady(), w.peer, now, newLeaseID())
		w.ch <- waiterResult{grant: g, ack: ack}
	}
}

// signalSpace wakes enqueues waiting for capacity. Callers hold q.mu.
func (q *Engine) signalSpace() {
	if q.spaceWanted {
		q.spaceWanted = false
		close(q.spaceCh)
		q.spaceCh = make(chan struct{})
	}
}

// maxPurgesPerSweep bounds the dead letters one sweep purges, so that a
// retention that catches up with a large backlog does not hold the lock
// for long; the sweeper comes back for the rest at once.
const maxPurgesPerSweep = 4096

// Reasons of a ChangeDeadLetterPurged (its MetaPurgeReason).
const (
	// PurgeReasonRetention: the dead letter was older than
	// QueueConfig.DeadLetterRetention.
	PurgeReasonRetention = "retention"
	// PurgeReasonMaxDeadLetters: it was the oldest when the dead letters
	// went past QueueConfig.MaxDeadLetters.
	PurgeReasonMaxDeadLetters = "max_dead_letters"
)

// trimDeadLetters purges, oldest first and at most limit of them, the dead
// letters beyond MaxDeadLetters or older than DeadLetterRetention, each
// with its own ChangeDeadLetterPurged, and returns the last ack. When more
// are due than limit, the sweeper comes back for them. Callers hold q.mu.
func (q *Engine) trimDeadLetters(now int64, limit int) Ack {
	var last Ack
	for n := 0; ; n++ {
		el, reason := q.purgeDue(now)
		if el == nil {
			return last
		}
		if n == limit {
			q.kickSweeper()
			return last
		}
		d := el.Value.(*deadEntry)
		q.deadLst.Remove(el)
		delete(q.dead, d.e.seq)
		last = q.record(ChangeDeadLetterPurged, now, func(c *Change) {
			p := d.e.pendingItem()
			c.Item = &p
			c.Metadata = map[string]string{MetaPurgeReason: reason}
		})
	}
}

// purgeDue returns the oldest dead letter if it is to be purged now, and
// why. Callers hold q.mu.
func (q *Engine) purgeDue(now int64) (*list.Element, string) {
	el := q.deadLst.Front()
	switch {
	case el == nil:
		return nil, ""
	case q.cfg.MaxDeadLetters > 0 && q.deadLst.Len() > q.cfg.MaxDeadLetters:
		return el, PurgeReasonMaxDeadLetters
	case q.cfg.DeadLetterRetention > 0 && now-el.Value.(*deadEntry).at >= int64(q.cfg.DeadLetterRetention):
		return el, PurgeReasonRetention
	}
	return nil, ""
}

// endLiveLease takes e out of the live leases and returns what its lease
// was; e.lastToken keeps the token. A lease that ends makes room under
// Capacity. Callers hold q.mu.
func (q *Engine) endLiveLease(e *entry) (token OwnershipToken, peer string, leasedAt int64) {
	token, peer, leasedAt = e.lastToken(), e.peer, e.leasedAt
	delete(q.leases, e.seq)
	q.expiry.Remove(e)
	e.peer, e.leasedAt, e.expiresAt = "", 0, 0
	q.leaseEnded(e)
	q.signalSpace()
	return token, peer, leasedAt
}

// endLease removes e's live lease and requeues or dead-letters it. Callers
// hold q.mu.
func (q *Engine) endLease(e *entry, now int64, kind ChangeKind, errInfo *ErrorInfo, requeue bool, meta map[string]string) Ack {
	token, peer, leasedAt := q.endLiveLease(e)
	e.lastError = errInfo
	fill := func(c *Change) {
		p := e.pendingItem()
		c.Item = &p
		c.Token = token
		c.PeerID = peer
		c.LeasedAt = fromNanos(leasedAt)
		c.Error = errInfo
		c.Metadata = meta
	}
	if !requeue || e.attempt >= q.cfg.MaxDeliveryAttempts { // not attempt+1 >: a restored attempt may be huge
		reason := "failed without requeue"
		if requeue {
			reason = fmt.Sprintf("max delivery attempts (%d) exceeded", q.cfg.MaxDeliveryAttempts)
		}
		if errInfo != nil && errInfo.Message != "" {
			reason += ": " + errInfo.Message
		}
		e.releases = 0
		q.dead[e.seq] = q.deadLst.PushBack(&deadEntry{e: e, at: now, reason: reason})
		if kind == ChangeRequeued { // a worker's fail: its Failed event comes before the dead letter
			q.record(ChangeFailed, now, fill)
		}
		code := CodeDeliveryAttemptsExceed
		if !requeue {
			code = ""
			if errInfo != nil {
				code = errInfo.Code
			}
		}
		ack := q.record(ChangeDeadLettered, now, func(c *Change) {
			fill(c)
			c.Error = &ErrorInfo{Message: reason, Code: code}
		})
		if a := q.trimDeadLetters(now, 1); a != nil {
			ack = a
		}
		q.settled(now)
		return ack
	}
	delay := q.requeueDelay(e.attempt)
	e.attempt++
	e.releases = 0
	q.requeue(e, now, delay)
	ack := q.record(kind, now, fill)
	q.handOff(now)
	return ack
}

// requeue puts e, whose lease just ended, back among the pending: ready at
// once, or after delay. Callers hold q.mu.
func (q *Engine) requeue(e *entry, now int64, delay time.Duration) {
	if delay > 0 {
		e.readyAt = now + int64(delay)
		q.pushDelayed(e)
	} else {
		q.pushReady(e)
	}
}

// settled follows a lease that ended for good (completed, dead-lettered):
// with a per-partition limit, its partition's next item may be leasable
// now, for a waiting long-poll. Callers hold q.mu.
func (q *Engine) settled(now int64) {
	if q.parts != nil {
		q.handOff(now)
	}
}

// requeueDelay is the delay after the given failed attempt: fixed, or
// RequeueDelay·2^(attempt-1) capped at MaxRequeueDelay.
func (q *Engine) requeueDelay(failedAttempt int) time.Duration {
	d := q.cfg.RequeueDelay
	if q.cfg.MaxRequeueDelay <= 0 || d <= 0 {
		return d
	}
	for i := 1; i < failedAttempt && d < q.cfg.MaxRequeueDelay; i++ {
		d *= 2
	}
	return min(d, q.cfg.MaxRequeueDelay)
}

// Lease implements Queue.
func (q *Engine) Lease(ctx context.Context, peerID string, wait time.Duration) (*Lease, error) {
	if wait < 0 {
		return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "lease wait must not be negative, got %v", wait)
	}
	id := newLeaseID() // before the lock; wasted only when nothing is ready
	received, now, err := q.beginAt(ctx)
	if err != nil {
		return nil, err
	}
	if err := q.stalled(); err != nil {
		q.mu.Unlock()
		return nil, err
	}
	ack := q.maintain(now)
	// While long-polls wait there are no ready items (handOff gave them out),
	// so this never jumps the line.
	if e := q.popReady(); e != nil {
		g, a := q.grant(e, peerID, now, id)
		q.mu.Unlock()
		return q.deliver(waiterResult{grant: g, ack: a}, received)
	}
	if wait == 0 {
		q.mu.Unlock()
		return nil, waitAck(ack)
	}
	w := &waiter{peer: peerID, ch: make(chan waiterResult, 1)}
	w.elem = q.waiters.PushBack(w)
	q.mu.Unlock()

	timer := q.clock.NewTimer(wait)
	defer timer.Stop()
	select {
	case r := <-w.ch:
		return q.deliver(r, received)
	case <-timer.C():
		if r, ok := q.abandon(w); ok {
			return q.deliver(r, received) // granted just as the wait ended: still ours
		}
		return nil, nil
	case <-ctx.Done():
		r, ok := q.abandon(w)
		if ok && r.grant.e != nil {
			if r.ack != nil {
				_ = r.ack.Wait()
			}
			q.giveBack(r.grant.token)
		}
		if ctx.Err() == context.DeadlineExceeded {
			return nil, nil // the request's deadline bounds the wait: nothing arrived
		}
		return nil, ctxError(ctx)
	}
}

// deliver returns a granted lease once its change is acknowledged. When the
// acknowledgement fails (storage, or a synchronous sink after the commit) the
// caller never gets the lease, so it is given back at once, without counting
// an attempt, instead of leaving the item held by nobody until it expires.
func (q *Engine) deliver(r waiterResult, received time.Time) (*Lease, error) {
	if r.err != nil {
		return nil, r.err
	}
	if err := waitAck(r.ack); err != nil {
		q.giveBack(r.grant.token)
		return nil, err
	}
	return q.newLease(&r.grant, received), nil
}

// abandon removes w from the waiters. If a result was already handed to it,
// it returns that result and true.
func (q *Engine) abandon(w *waiter) (waiterResult, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if w.elem != nil {
		q.waiters.Remove(w.elem)
		w.elem = nil
		return waiterResult{}, false
	}
	return <-w.ch, true // sent under q.mu before elem was cleared
}

// Release implements Queue. Delay must be between 0 and MaxDuration.
func (q *Engine) Release(ctx context.Context, token OwnershipToken, opts ReleaseOptions) error {
	if opts.Delay < 0 || opts.Delay > MaxDuration {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "release delay must be between 0 and %v, got %v", MaxDuration, opts.Delay)
	}
	return q.tokenOp(ctx, token, func(e *entry, now int64) Ack {
		return q.releaseLease(e, now, opts.Delay, true)
	})
}

// giveBack releases a lease granted to a caller that never got it (a
// long-poll gone, or its acknowledgement failed): it does not count toward
// MaxReleases. A token no longer live (the queue closed, or it expired
// meanwhile) needs nothing.
func (q *Engine) giveBack(token OwnershipToken) {
	_ = q.tokenOp(context.Background(), token, func(e *entry, now int64) Ack {
		return q.releaseLease(e, now, 0, false)
	})
}

// releaseLease ends e's live lease and puts it back in its old place
// (delayed by delay, if positive) with its attempt unchanged. A counted
// release beyond MaxReleases in a row is a failed attempt instead. Callers
// hold q.mu.
func (q *Engine) releaseLease(e *entry, now int64, delay time.Duration, counted bool) Ack {
	if counted && q.cfg.MaxReleases > 0 && e.releases >= q.cfg.MaxReleases {
		info := &ErrorInfo{Message: fmt.Sprintf("released more than %d times in a row", q.cfg.MaxReleases), Code: CodeReleaseLimit}
		return q.endLease(e, now, ChangeRequeued, info, true, nil)
	}
	token, peer, leasedAt := q.endLiveLease(e)
	if counted {
		e.releases++
	}
	q.requeue(e, now, delay)
	ack := q.record(ChangeReleased, now, func(c *Change) {
		p := e.pendingItem()
		c.Item = &p
		c.Token = token
		c.PeerID = peer
		c.LeasedAt = fromNanos(leasedAt)
	})
	q.handOff(now)
	return ack
}

// liveLease returns the entry whose live lease token is, expiring it first if
// its time has passed. Callers hold q.mu.
func (q *Engine) liveLease(token OwnershipToken, now int64) (*entry, Ack, error) {
	e, ok := q.leases[token.SequenceID] // so e.seq is token.SequenceID
	if !ok || e.lastLease != token.LeaseID || e.lastAttempt != token.Attempt {
		return nil, nil, ErrUnknownToken
	}
	if e.expiresAt <= now {
		return nil, q.expire(e, now), ErrUnknownToken
	}
	return e, nil, nil
}

// tokenOp runs f on the live lease of token under the lock and waits for the
// acknowledgement of what f recorded.
func (q *Engine) tokenOp(ctx context.Context, token OwnershipToken, f func(e *entry, now int64) Ack) error {
	if err := validateToken(&token); err != nil {
		return err
	}
	now, err := q.begin(ctx)
	if err != nil {
		return err
	}
	e, ack, err := q.liveLease(token, now)
	if err == nil {
		ack = f(e, now)
	}
	q.mu.Unlock()
	if ackErr := waitAck(ack); err == nil {
		err = ackErr
	}
	return err
}

// Heartbeat implements Queue. The TTL is the lease duration: the new expiry
// is counted from this call's own change time.
func (q *Engine) Heartbeat(ctx context.Context, token OwnershipToken) (HeartbeatResponse, error) {
	var expires int64
	var stalled error
	err := q.tokenOp(ctx, token, func(e *entry, now int64) Ack {
		if stalled = q.stalled(); stalled != nil {
			return nil
		}
		expires = q.extend(e, now)
		return q.recordHeartbeat(e, now)
	})
	if err == nil {
		err = stalled
	}
	if err != nil {
		return HeartbeatResponse{}, err
	}
	return HeartbeatResponse{LeaseExpiresAt: fromNanos(expires), TTL: q.cfg.LeaseDuration}, nil
}

// extend gives e's live lease a fresh lease duration from now and returns
// its new expiry. Callers hold q.mu.
func (q *Engine) extend(e *entry, now int64) int64 {
	e.expiresAt = now + int64(q.cfg.LeaseDuration)
	q.expiry.MoveToBack(e)
	return e.expiresAt
}

func (q *Engine) recordHeartbeat(e *entry, now int64) Ack {
	return q.record(ChangeHeartbeat, now, func(c *Change) {
		p := e.pendingItem()
		c.Item = &p
		c.Token = e.lastToken()
		c.PeerID = e.peer
		c.LeaseExpiresAt = fromNanos(e.expiresAt)
	})
}

// Complete implements Queue.
func (q *Engine) Complete(ctx context.Context, token OwnershipToken) error {
	return q.tokenOp(ctx, token, func(e *entry, now int64) Ack {
		return q.complete(e, now)
	})
}

// complete ends e's lease for good. Callers hold q.mu.
func (q *Engine) complete(e *entry, now int64) Ack {
	token, peer, leasedAt := q.endLiveLease(e)
	ack := q.record(ChangeCompleted, now, func(c *Change) {
		p := e.pendingItem()
		c.Item = &p
		c.Token = token
		c.PeerID = peer
		c.LeasedAt = fromNanos(leasedAt)
	})
	q.settled(now)
	return ack
}

// Fail implements Queue.
func (q *Engine) Fail(ctx context.Context, token OwnershipToken, opts FailOptions) error {
	return q.tokenOp(ctx, token, func(e *entry, now int64) Ack {
		info := &ErrorInfo{Message: opts.Reason, Code: opts.ErrorCode}
		if info.Message == "" && info.Code == "" {
			info = nil
		}
		return q.endLease(e, now, ChangeRequeued, info, !opts.DeadLetter, opts.Metadata)
	})
}

// Waiters returns how many long-poll leases are waiting for an item.
func (q *Engine) Waiters() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.waiters.Len()
}

// Stats implements Queue. A closed engine still reports its counts.
func (q *Engine) Stats(ctx context.Context) (Stats, error) {
	if err := ctxError(ctx); err != nil {
		return Stats{}, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.statsLocked(), nil
}

// Close implements Queue: it stops the sweeper, fails every waiting long-poll
// and capacity wait with ErrClosed, and refuses later calls. Leases stay as
// they are (a durable journal has them on disk for the next start).
func (q *Engine) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	for q.waiters.Len() > 0 {
		w := q.waiters.Remove(q.waiters.Front()).(*waiter)
		w.elem = nil
		w.ch <- waiterResult{err: ErrClosed}
	}
	q.spaceWanted = true
	q.signalSpace()
	q.mu.Unlock()
	close(q.stop)
	<-q.sweepDone
	return nil
}
