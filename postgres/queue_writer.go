package postgres

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// setGenericPlans makes the rest of a transaction use generic plans,
// setCustomPlans plans each statement for its arguments and the tables'
// present size, setDefaultPlans gives back the setting of the role,
// database or URL; setNoSeqScans leaves the planner an index where it can,
// setSeqScans gives the setting back.
const (
	setGenericPlans = "SET LOCAL plan_cache_mode = force_generic_plan"
	setCustomPlans  = "SET LOCAL plan_cache_mode = force_custom_plan"
	setDefaultPlans = "SET LOCAL plan_cache_mode TO DEFAULT"
	setNoSeqScans   = "SET LOCAL enable_seqscan = off"
	setSeqScans     = "SET LOCAL enable_seqscan TO DEFAULT"
)

const (
	// sweepLimit bounds the leases one sweep round expires; the sweeper runs
	// rounds until one finds fewer.
	sweepLimit = 1000
	// promoteLimit bounds the delayed items one transaction promotes.
	promoteLimit = 10000
	// trimChunk bounds the events or request ids one trim statement deletes.
	trimChunk = 10000
)

// batch is one transaction of the writer: the ops it carries and what it
// decided for them.
type batch struct {
	ops      []*op // taken from pending, in arrival order
	waiters  []*op // parked long-polls, first come first served
	full     []*op // parked capacity waits, first come first served
	deferred []*op // for the next transaction

	tookWaiters, tookFull, tookSweep bool  // it holds Queue.waitersBusy, fullBusy, sweepBusy
	waitLease                        bool  // it is counted in Queue.waitLeases
	admitted                         int64 // items it reserved in Queue.reserved
	admittedDelayed                  int64 // delayed items it reserved in Queue.reservedDelayed

	// For letCallersIn: how many callers it answered, Queue.submitted
	// before it answered them, and how long it took from being taken to
	// its last answer (failed attempts included).
	answered      int
	submittedMark int64
	took          time.Duration

	now    any
	ts     time.Time
	before counts

	// lease slots, in service order
	slots []slot
	// token ops' rows, locked and simulated
	rows    map[int64]*simRow
	expired []*simRow
	granted []grantRow
	// enqueue
	reqIDs   []string // request ids to claim, sorted
	claimed  map[string]bool
	firstSeq map[string]int64 // request ids already taken: the first enqueue's sequence id
	promoted int
	nextDue  *time.Time

	log      changeLog
	fin      finalInput
	parkFull []*op // solo enqueues refused for capacity in FullWait mode
	newRefs  []newRef
	grants   []newGrant
	unclaim  []string
	sweeps   []*op
	// dead letters to purge: those a sweep found (excess first, then
	// expired), and the ids the transaction deletes
	excessDead, expiredDead []*itemRow
	purge                   []int64
	// partsLeasable: a partition it changed is leasable now
	partsLeasable bool
	// scheduled is the earliest ready time of the items it delays, told to
	// the other processes' sweepers with its notification
	scheduled *time.Time
}

type slot struct {
	op      *op
	leaseID uuid.UUID
}

type grantRow struct {
	rn  int64
	row *itemRow
}

// simRow is a locked row and what the transaction did to it.
type simRow struct {
	row     *itemRow
	live    bool // leased and unexpired when locked
	hb      bool // heartbeated: write the new expiry
	ended   bool // its lease ended: write its new state
	deleted bool // completed
	delayUS int64
}

// newGrant is a lease of an item enqueued in the same transaction, built
// once the counter row gives the item its sequence id.
type newGrant struct {
	op   *op
	ord  int64
	item *resourcelease.Item
	id   uuid.UUID
}

// newRef is where a new item's sequence id goes once the counter row
// decides it.
type newRef struct {
	op *op
	i  int
}

// finalInput is what the final statement writes besides the changes'
// events.
type finalInput struct {
	rt, rid, pk, enc []string
	body             [][]byte
	attrs, req       []*string
	ddReq            []string
	ddOrd            []int64
	// A new item leased in the transaction that enqueues it: its lease id
	// and owner (an invalid UUID and nil for one that stays pending).
	lid   []pgtype.UUID
	owner []*string
	// leaseUS is the lease duration of such a lease.
	leaseUS int64
	// nb is each item's NotBefore (nil for none); sched its ready time
	// when it is delayed (nil for an item ready now).
	nb, sched []*time.Time
}

func (f *finalInput) addItem(it *resourcelease.Item) int64 {
	f.rt = append(f.rt, it.ResourceType)
	f.rid = append(f.rid, it.ResourceID)
	f.pk = append(f.pk, it.PartitionKey)
	f.enc = append(f.enc, it.PayloadEncoding)
	f.body = append(f.body, it.Body)
	var attrs, req *string
	if it.Attributes != nil {
		attrs = jsonText(it.Attributes)
	}
	if it.RequestID != "" {
		r := it.RequestID
		req = &r
	}
	f.attrs = append(f.attrs, attrs)
	f.req = append(f.req, req)
	f.lid = append(f.lid, pgtype.UUID{})
	f.owner = append(f.owner, nil)
	var nb *time.Time
	if !it.NotBefore.IsZero() {
		t := it.NotBefore
		nb = &t
	}
	f.nb = append(f.nb, nb)
	f.sched = append(f.sched, nil)
	return int64(len(f.rt))
}

func (o *op) units() int {
	switch o.kind {
	case opEnqueue:
		return len(o.items)
	case opLease:
		return o.max
	case opSweep:
		return 1
	}
	return len(o.tokens)
}

func (q *Queue) writeLoop() {
	defer q.wg.Done()
	for {
		b := q.nextBatch()
		if b == nil {
			return
		}
		start := time.Now()
		q.run(b)
		b.took = time.Since(start)
		q.letCallersIn(b)
	}
}

// Callers usually come straight back after a commit answers them (a
// worker leases after its enqueue, completes after its lease). One that
// misses the next transaction by microseconds waits through all of it, and
// in a closed loop stays out of step from then on, in small transactions of
// its own. So after a commit the writer waits for as many new calls as it
// answered, yielding to the callers, and gives up when no call has come
// for lingerGap, after 1/lingerShare of the transaction's time, or after
// maxLinger. It yields rather than sleeps: the runtime's timers do not wake
// an idle process in less than about a millisecond.
const (
	maxLinger   = 200 * time.Microsecond
	lingerShare = 8
	lingerGap   = 50 * time.Microsecond
)

// letCallersIn waits for the callers deliver answered (see maxLinger), or
// until the pending calls fill a transaction or the queue closes. With more
// than one writer it
// does not wait: the others take the calls as they come, so the pending
// list no longer says who came back.
func (q *Queue) letCallersIn(b *batch) {
	if q.cfg.InFlight > 1 || b.answered == 0 || q.pendingFill() {
		return
	}
	start := time.Now()
	deadline := start.Add(min(maxLinger, b.took/lingerShare))
	last, seen := start, int64(0)
	for {
		came := q.submitted.Load() - b.submittedMark
		if came >= int64(b.answered) || q.stopCtx.Err() != nil {
			return
		}
		now := time.Now()
		if came > seen {
			seen, last = came, now
			if q.pendingFill() {
				return
			}
		}
		if now.After(deadline) || now.Sub(last) > lingerGap {
			return
		}
		runtime.Gosched()
	}
}

// pendingFill reports whether the pending calls fill a transaction
// (MaxBatch units) already.
func (q *Queue) pendingFill() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	units := 0
	for _, o := range q.pending {
		if units += o.units(); units >= q.cfg.MaxBatch {
			return true
		}
	}
	return false
}

// nextBatch waits for work and takes it: pending ops up to MaxBatch units,
// and the parked waits when they are due a round.
func (q *Queue) nextBatch() *batch {
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil
		}
		b := q.takeLocked()
		q.mu.Unlock()
		if b != nil {
			return b
		}
		select {
		case <-q.kick:
		case <-q.stop:
			return nil
		}
	}
}

func (q *Queue) takeLocked() *batch {
	b := &batch{}
	units := 0
	hasLease, hasEnqueue := false, false
	var rest []*op
	for i, o := range q.pending {
		u := o.units()
		if len(b.ops) > 0 && units+u > q.cfg.MaxBatch {
			rest = append(rest, q.pending[i:]...)
			break
		}
		if o.kind == opSweep && (q.sweepBusy || b.tookSweep) {
			// One sweep at a time in a process: a second one would skip the
			// rows the first has locked and report them not expired.
			rest = append(rest, o)
			continue
		}
		if o.kind == opSweep {
			b.tookSweep = true
		}
		units += u
		b.ops = append(b.ops, o)
		b.waitLease = b.waitLease || o.kind == opLease && o.wait
		hasLease = hasLease || o.kind == opLease
		hasEnqueue = hasEnqueue || o.kind == opEnqueue
	}
	clear(q.pending)
	q.pending = rest
	if b.tookSweep {
		q.sweepBusy = true
	}
	if b.waitLease {
		q.waitLeases++
	}
	// A batch with leases serves the parked waiters first, so that a new
	// lease never takes an item a waiter was due.
	// (While the other transaction in flight serves them, they wait for it.)
	// So does one with enqueues: the waiters get the new items in the
	// transaction that enqueues them.
	if (hasLease || hasEnqueue || q.serveWaiters) && len(q.waiters) > 0 && !q.waitersBusy {
		b.waiters, q.waiters = q.waiters, nil
		q.waitersBusy, q.serveWaiters = true, false
		b.tookWaiters = true
	}
	if (hasEnqueue || q.serveFull) && len(q.full) > 0 && !q.fullBusy {
		b.full, q.full = q.full, nil
		q.fullBusy, q.serveFull = true, false
		b.tookFull = true
	}
	if len(b.ops) == 0 && len(b.waiters) == 0 && len(b.full) == 0 {
		return nil
	}
	return b
}

// run executes one batch and hands out its results.
func (q *Queue) run(b *batch) {
	keep := func(list []*op) []*op {
		out := list[:0]
		for _, o := range list {
			switch {
			case o.state.Load() != opOpen:
				q.unpark(o) // abandoned while it was being parked again
			case o.ctx.Err() != nil:
				o.err = ctxErr(o.ctx)
				q.finish(o)
			default:
				out = append(out, o)
			}
		}
		return out
	}
	b.ops, b.waiters, b.full = keep(b.ops), keep(b.waiters), keep(b.full)
	if len(b.ops) == 0 && len(b.waiters) == 0 && len(b.full) == 0 {
		q.deliver(b, nil, nil)
		return
	}
	ctx, cancel := q.batchContext(b)
	committed, err := q.exec(ctx, b)
	cancel()
	if err != nil && q.stopCtx.Err() != nil {
		err = resourcelease.ErrClosed // Close cut the transaction short
	}
	q.deliver(b, committed, err)
}

// batchContext bounds a transaction by the latest deadline among its
// callers (so that no caller's call is cut short by another's), capped at
// BatchTimeout, and ends it when the queue closes.
func (q *Queue) batchContext(b *batch) (context.Context, context.CancelFunc) {
	limit := time.Now().Add(q.cfg.BatchTimeout)
	var latest time.Time
	for _, list := range [][]*op{b.ops, b.waiters, b.full} {
		for _, o := range list {
			d, ok := o.ctx.Deadline()
			if !ok {
				d = limit
			}
			if d.After(latest) {
				latest = d
			}
		}
	}
	if latest.After(limit) {
		latest = limit
	}
	return context.WithDeadline(q.stopCtx, latest)
}

// plan lays the batch out before anything is read: lease slots, the rows
// to lock, the request ids to claim.
func (q *Queue) plan(b *batch) {
	for _, o := range b.ops {
		if o.kind == opSweep {
			b.sweeps = append(b.sweeps, o)
		}
	}
	for _, list := range [][]*op{b.waiters, b.ops} {
		for _, o := range list {
			if o.kind != opLease {
				continue
			}
			for range o.max {
				b.slots = append(b.slots, slot{op: o, leaseID: uuid.New()})
			}
		}
	}
	if q.cfg.DedupeWindow <= 0 {
		return
	}
	seen := map[string]bool{}
	enq := append(slices.Clone(b.full), b.ops...)
	kept := b.ops[:0]
	deferred := map[*op]bool{}
	for _, o := range enq {
		if o.kind != opEnqueue {
			continue
		}
		mine := map[string]bool{}
		clash := false
		for i := range o.items {
			r := o.items[i].RequestID
			if r == "" || mine[r] {
				continue
			}
			mine[r] = true
			clash = clash || seen[r]
		}
		if clash {
			// Another op of this batch has the same request id: this one
			// goes in the next transaction, where it finds the first.
			deferred[o] = true
			continue
		}
		for r := range mine {
			seen[r] = true
			b.reqIDs = append(b.reqIDs, r)
		}
	}
	for _, o := range b.ops {
		if deferred[o] {
			b.deferred = append(b.deferred, o)
			continue
		}
		kept = append(kept, o)
	}
	b.ops = kept
	full := b.full[:0]
	for _, o := range b.full {
		if deferred[o] {
			b.deferred = append(b.deferred, o)
			continue
		}
		full = append(full, o)
	}
	b.full = full
	sort.Strings(b.reqIDs)
}

func (b *batch) hasEnqueue() bool {
	if len(b.full) > 0 {
		return true
	}
	for _, o := range b.ops {
		if o.kind == opEnqueue {
			return true
		}
	}
	return false
}

// hasNotBefore reports whether an enqueue of the batch has an item with a
// NotBefore.
func (b *batch) hasNotBefore() bool {
	for _, list := range [][]*op{b.full, b.ops} {
		for _, o := range list {
			if o.kind != opEnqueue {
				continue
			}
			for i := range o.items {
				if !o.items[i].NotBefore.IsZero() {
					return true
				}
			}
		}
	}
	return false
}

func (b *batch) lockIDs() []int64 {
	var ids []int64
	seen := map[int64]bool{}
	for _, o := range b.ops {
		switch o.kind {
		case opHeartbeat, opComplete, opFail, opRelease, opGiveBack:
			for _, t := range o.tokens {
				if !seen[t.SequenceID] && !t.IsZero() {
					seen[t.SequenceID] = true
					ids = append(ids, t.SequenceID)
				}
			}
		}
	}
	slices.Sort(ids)
	return ids
}

// exec runs the batch's transaction. It returns the committed changes.
func (q *Queue) exec(ctx context.Context, b *batch) ([]Committed, error) {
	q.plan(b)
	lockIDs := b.lockIDs()
	for attempt := 1; ; attempt++ {
		committed, retry, err := q.attempt(ctx, b, lockIDs)
		if err == nil || !retry || attempt == 2 || ctx.Err() != nil {
			return committed, err
		}
		// The connection was dead (the server restarted since the pool
		// last used it) and nothing can have been committed: run the
		// transaction once more on a fresh one.
		q.mu.Lock()
		q.reserved -= b.admitted
		q.reservedDelayed -= b.admittedDelayed
		q.mu.Unlock()
		b.admitted, b.admittedDelayed = 0, 0
		b.reset()
	}
}

// reset forgets what a failed attempt read and decided, for the next
// attempt.
func (b *batch) reset() {
	b.ts, b.before, b.rows, b.expired, b.granted = time.Time{}, counts{}, nil, nil, nil
	b.claimed, b.firstSeq, b.promoted, b.nextDue = nil, nil, 0, nil
	b.log, b.fin, b.parkFull, b.newRefs, b.unclaim, b.grants = changeLog{}, finalInput{}, nil, nil, nil, nil
	b.excessDead, b.expiredDead, b.purge, b.partsLeasable, b.scheduled = nil, nil, nil, false, nil
	for _, list := range [][]*op{b.waiters, b.full, b.ops} {
		for _, o := range list {
			o.leases, o.errs, o.seqs, o.dups, o.expires, o.expired, o.purged, o.nextDue = nil, nil, nil, nil, nil, 0, 0, nil
		}
	}
}

// attempt runs the batch's transaction once. retry reports a failure that
// committed nothing and that a fresh connection may not meet: the
// connection was found dead before the commit was sent.
func (q *Queue) attempt(ctx context.Context, b *batch, lockIDs []int64) (committed []Committed, retry bool, err error) {
	conn, err := q.store.pool.Acquire(ctx)
	if err != nil {
		return nil, false, q.store.fail(ctx, "queue transaction", err)
	}
	defer conn.Release()
	c := conn.Conn()
	b.now = q.store.nowArg()
	inTx := false
	defer func() {
		if err != nil && inTx {
			rollback(c)
		}
	}()
	// A bounded queue reads the counts before it admits enqueues, so that
	// it sees what other processes admitted since its own last commit.
	// So does one with a delayed item: whether it is delayed is decided
	// against the transaction's clock.
	read := len(lockIDs) > 0 || len(b.slots) > 0 || len(b.sweeps) > 0 || len(b.reqIDs) > 0 ||
		(q.cfg.Capacity > 0 && b.hasEnqueue()) || b.hasNotBefore()
	if read {
		inTx = true
		if err := q.read(ctx, c, b, lockIDs); err != nil {
			return nil, connectionLost(err), err
		}
	} else {
		q.mu.Lock()
		b.before = q.counts
		q.mu.Unlock()
	}
	q.decide(b)
	l := &b.log
	if len(l.changes) == 0 && b.promoted == 0 && len(b.unclaim) == 0 && len(b.fin.rt) == 0 {
		if inTx {
			// Nothing changed (a lease round found nothing): end the
			// transaction without a commit to flush.
			inTx = false
			if _, err := c.Exec(ctx, "ROLLBACK"); err != nil {
				return nil, false, q.store.fail(ctx, "queue transaction", err)
			}
		}
		return nil, false, nil
	}
	hook := q.cfg.CommitHook
	var p pgx.Batch
	if !inTx {
		p.Queue("BEGIN")
		inTx = true
	}
	// The net effect on the rows locked earlier, then the counter row last.
	var hb, del []int64
	var end endArgs
	for _, id := range lockIDs {
		s := b.rows[id]
		switch {
		case s == nil:
		case s.deleted:
			del = append(del, id)
		case s.ended:
		case s.hb:
			hb = append(hb, id)
		}
	}
	for _, s := range b.rows {
		if s.ended && !s.deleted {
			end.add(s)
		}
	}
	if len(hb) > 0 || len(end.seq) > 0 || len(del) > 0 || len(b.unclaim) > 0 {
		// Writes by key are planned for the table as it is now: a generic
		// plan made while the table was small keeps scanning it whole
		// after it has grown (until the next ANALYZE), which on a busy
		// new queue costs more than all the rest of the transaction.
		p.Queue(setCustomPlans)
	}
	if len(hb) > 0 {
		p.Queue(q.sql.heartbeat, b.now, hb, q.cfg.LeaseDuration.Microseconds())
	}
	if len(end.seq) > 0 {
		p.Queue(q.sql.endLease, end.args(b.now)...)
	}
	if len(del) > 0 {
		p.Queue(q.sql.complete, del)
	}
	if len(b.unclaim) > 0 {
		p.Queue(q.sql.unclaimDedupe, b.unclaim)
	}
	// The final statement and those after it are planned once: their
	// generic plans (the final one's made without sequential scans, below)
	// are as good as any, and planning the final statement afresh each
	// time (which a custom plan does) costs about a third of its execution.
	p.Queue(setGenericPlans)
	// commitMu orders this process's final statements, and the counter
	// row is taken under it; a transaction that takes the counter row
	// earlier (the dead-letter count below) takes commitMu first, so that
	// two writers of this process never wait crosswise for each other's
	// mutex and row (a cycle the database's deadlock detector cannot see).
	var unlockCommit func()
	lockCommit := func() {
		if unlockCommit == nil {
			q.commitMu.Lock()
			unlockCommit = q.commitMu.Unlock
		}
	}
	defer func() {
		if unlockCommit != nil {
			unlockCommit()
		}
	}()
	if guess := q.deadExcess(b); guess > -deadSlack {
		lockCommit()
		// Past MaxDeadLetters (or near it): the oldest go in this
		// transaction, as the engine purges them. One more round trip,
		// after the writes above, so that this transaction's own dead
		// letters are among those it can choose (they sort last: newest).
		// The count read at BEGIN was read unlocked: other processes may
		// have dead-lettered since, so the excess is decided on the count
		// read under the counter row's lock (held from here to COMMIT, with
		// commitMu taken first, as the final statement takes it), and the
		// guess only sizes the list, with
		// deadSlack to spare. An excess past the list is left to the sweep.
		// The oldest include those the batch purges already (it holds
		// their locks, so they are not skipped): ask for them too.
		p.Queue(q.sql.deadCount)
		p.Queue(q.sql.deadOldest, max(guess, 0)+deadSlack+int64(len(b.purge)))
		var oldest []*itemRow
		var dead int64
		err := q.pipeline(ctx, c, &p, func(br pgx.BatchResults) error {
			for i := range p.QueuedQueries {
				switch p.QueuedQueries[i].SQL {
				case q.sql.deadCount:
					if err := br.QueryRow().Scan(&dead); err != nil {
						return err
					}
				case q.sql.deadOldest:
					if err := eachRow(br, func(rows pgx.Rows) error {
						r, err := scanItem(rows)
						if err == nil {
							oldest = append(oldest, r)
						}
						return err
					}); err != nil {
						return err
					}
				default:
					if _, err := br.Exec(); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, false, err
		}
		if excess := dead + b.log.dDead - int64(q.cfg.MaxDeadLetters); excess > 0 {
			q.purgeDead(b, oldest, resourcelease.PurgeReasonMaxDeadLetters, int(excess))
		}
		p = pgx.Batch{}
	}
	if len(b.purge) > 0 {
		// A write by key too (the same statement as a complete's): planned
		// at each call. With MaxDeadLetters its batch holds the counter row
		// already, so a whole-table scan here would hold every commit.
		p.Queue(setCustomPlans)
		p.Queue(q.sql.purge, b.purge)
		p.Queue(setGenericPlans)
	}
	q.mu.Lock()
	trimmed := q.trimmed
	q.mu.Unlock()
	lockCommit()
	keys := q.queueFinal(&p, b.now, l, finalArgs(b.now, l, &b.fin, trimmed), hook != nil)
	if note := q.notification(b); note != "" {
		p.Queue(q.sql.notify, q.channel, note)
	}
	if hook == nil {
		p.Queue("COMMIT")
	}
	var fr finalRow
	err = q.pipeline(ctx, c, &p, func(br pgx.BatchResults) error {
		for i := range p.QueuedQueries {
			sql := p.QueuedQueries[i].SQL
			if sql == q.sql.final {
				if err := fr.scan(br.QueryRow()); err != nil {
					return err
				}
				continue
			}
			if q.parted && sql == q.psql.update {
				ok, err := q.partitionsDone(br, keys, l)
				b.partsLeasable = ok
				if err != nil {
					return err
				}
				continue
			}
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Without a first round trip the transaction is this one pipeline:
		// retry only what provably never reached the server.
		return nil, !read && pgconn.SafeToRetry(err), err
	}
	committed = l.number(fr.firstSeq, fr.firstEv, fr.after, fr.ts)
	if hook != nil {
		if err := hook(ctx, connTx{c}, eventsOf(committed)); err != nil {
			return nil, false, resourcelease.AsError(err)
		}
		if _, err := c.Exec(ctx, "COMMIT"); err != nil {
			return nil, false, q.store.fail(ctx, "queue commit", err)
		}
	}
	inTx = false
	b.ts = fr.ts
	for _, g := range b.grants {
		seq := fr.firstSeq + g.ord - 1
		r := &itemRow{seq: seq, state: stateLeased, item: *g.item, attempt: 1, enqueuedAt: fr.ts,
			leaseID: pgUUID(g.id), leasedAt: &fr.ts, owner: &g.op.peer}
		exp := fr.ts.Add(time.Duration(b.fin.leaseUS) * time.Microsecond)
		r.expiresAt = &exp
		for i, l := range g.op.leases {
			if l == nil {
				g.op.leases[i] = newLease(r, q.ttl(g.op), q.cfg.HeartbeatInterval)
				break
			}
		}
	}
	for _, r := range b.newRefs {
		r.op.seqs[r.i] = fr.firstSeq + r.op.seqs[r.i] - 1
	}
	q.committedCounts(fr.after, fr.firstEv+int64(len(committed)), b.admitted, b.admittedDelayed)
	b.admitted, b.admittedDelayed = 0, 0
	if n := len(committed); n > 0 {
		q.noteSeq(committed[n-1].Event.SequenceNumber)
		if q.cfg.OnCommit != nil {
			q.cfg.OnCommit(committed)
		}
	}
	return committed, false, nil
}

// queueFinal queues a transaction's final statement (args) and the
// statements after it that bring the rows of the partitions l touched up
// to date, and returns the partitions' keys (see queuePartitions). The
// transaction runs them with generic plans (set earlier). The final
// statement's updates by key (the request ids it claimed, the items it
// dead-lettered) join its arguments to dedupe and items, and the partition
// statements theirs to partitions and partition_dirty: a generic plan,
// made once per connection, perhaps while a new queue's tables were small,
// joins over a sequential scan of the table and keeps it after it has
// grown, holding the counter row through the scan. Without sequential
// scans the plans are the primary keys'. (A node left no index would be
// priced as disabled, past jit_above_cost, and compiled at every run: each
// statement here reaches its tables by key, and the plan tests hold their
// costs under the threshold.) With hook, a CommitHook runs next in the
// transaction: it gets the session's planner settings back.
func (q *Queue) queueFinal(p *pgx.Batch, now any, l *changeLog, args []any, hook bool) []string {
	p.Queue(setNoSeqScans)
	p.Queue(q.sql.final, args...)
	keys := q.queuePartitions(p, now, l, true)
	if hook {
		p.Queue(setSeqScans)
		p.Queue(setDefaultPlans)
	}
	return keys
}

// deadSlack is how many more dead letters than the count read at BEGIN
// says a batch that dead-letters lists for the bound, for those other
// processes dead-lettered since.
const deadSlack = 16

// deadExcess guesses, from the counts read at BEGIN, how many dead letters
// past MaxDeadLetters the batch leaves, beyond those it purges already
// (-deadSlack when the bound is not the batch's business): only a batch
// that dead-letters purges for the bound (a sweep does for a bound lowered
// since).
func (q *Queue) deadExcess(b *batch) int64 {
	if q.cfg.MaxDeadLetters <= 0 || !b.log.deadLettered {
		return -deadSlack
	}
	return b.before.dead + b.log.dDead - int64(q.cfg.MaxDeadLetters)
}

// purgeDead deletes dead letters the batch has locked (or dead-lettered
// itself), at most limit of them, each with its DeadLetterPurged change;
// one already purged is skipped.
func (q *Queue) purgeDead(b *batch, rows []*itemRow, reason string, limit int) {
	for _, r := range rows {
		if slices.Contains(b.purge, r.seq) {
			continue
		}
		if limit--; limit < 0 {
			return
		}
		b.purge = append(b.purge, r.seq)
		b.log.moved(stateDead, "")
		p := r.pendingItem()
		b.log.add(resourcelease.Change{
			Kind: resourcelease.ChangeDeadLetterPurged, Item: &p,
			Metadata: map[string]string{resourcelease.MetaPurgeReason: reason},
		}, 0)
		for _, o := range b.sweeps {
			o.purged++
		}
	}
}

// pipeline sends p in one round trip and reads its results with read.
func (q *Queue) pipeline(ctx context.Context, c *pgx.Conn, p *pgx.Batch, read func(pgx.BatchResults) error) error {
	br := c.SendBatch(ctx, p)
	err := read(br)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return q.store.fail(ctx, "queue transaction", err)
	}
	return nil
}

// rollback ends a failed transaction. If it cannot, the connection goes
// back to the pool still in the transaction, and the pool closes it.
func rollback(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = c.Exec(ctx, "ROLLBACK")
}

type finalRow struct {
	firstSeq, firstEv int64
	after             counts
	ts                time.Time
}

func (f *finalRow) scan(r pgx.Row) error {
	if err := r.Scan(&f.firstSeq, &f.firstEv, &f.after.ready, &f.after.delayed, &f.after.active, &f.after.dead, &f.after.paused, &f.ts); err != nil {
		return err
	}
	f.ts = f.ts.UTC()
	return nil
}

func finalArgs(now any, l *changeLog, f *finalInput, trimmed int64) []any {
	ea := l.eventArgs()
	return []any{now, int64(len(f.rt)), int64(len(l.changes)), l.dReady, l.dDelayed, l.dActive, l.dDead, trimmed,
		f.rt, f.rid, f.pk, f.enc, f.body, f.attrs, f.req,
		f.ddReq, f.ddOrd,
		l.deadSeq, l.deadOrd,
		ea.typ, ea.own, ea.peer, ea.iseq, ea.payload, ea.err, ea.meta, l.dp, l.da, l.nord,
		f.lid, f.owner, f.leaseUS, f.nb, f.sched, ea.body}
}

func eventsOf(cs []Committed) []resourcelease.Event {
	out := make([]resourcelease.Event, len(cs))
	for i := range cs {
		out[i] = cs[i].Event
	}
	return out
}

// notification is the NOTIFY payload of a batch ("" for none): r when
// items became ready (waiters elsewhere should look), s when room opened
// in a queue that was at capacity, then this queue's id so that it can
// ignore its own.
//
// With d, a third part is the earliest time (Unix nanoseconds) of the items
// the batch delayed, so that every process's sweeper wakes for it, not only
// this one's (which may die first).
func (q *Queue) notification(b *batch) string {
	note := ""
	if b.log.madeReady || b.promoted > 0 || b.log.unserved() {
		note += "r"
	}
	if b.log.freed && q.cfg.Capacity > 0 && b.before.ready+b.before.active >= int64(q.cfg.Capacity) {
		note += "s"
	}
	if b.scheduled != nil {
		note += "d"
	}
	if note == "" {
		return ""
	}
	note += ":" + q.instance
	if b.scheduled != nil {
		note += ":" + strconv.FormatInt(b.scheduled.UnixNano(), 10)
	}
	return note
}

// due notes that the batch delays an item until at.
func (b *batch) due(at time.Time) {
	if b.nextDue == nil || at.Before(*b.nextDue) {
		b.nextDue = &at
	}
	if b.scheduled == nil || at.Before(*b.scheduled) {
		b.scheduled = &at
	}
}

// read is the transaction's first round trip: BEGIN, the counts, the
// promotion of due delayed items (which waits for rows held elsewhere,
// before this transaction holds any), the rows the token ops name (locked
// in id order, also waiting), then the expiries and leases, which lock
// with SKIP LOCKED (a partitioned lease may wait for a ready row, as the
// promotion does); then the dedupe claims.
func (q *Queue) read(ctx context.Context, c *pgx.Conn, b *batch, lockIDs []int64) error {
	var p pgx.Batch
	p.Queue("BEGIN")
	p.Queue(q.sql.counts, b.now)
	// The promotion first, before the transaction holds any row: it waits
	// for the scheduled rows another transaction holds, in its own order,
	// and a transaction that waited here after locking its token rows in
	// sequence id order could deadlock with one that holds the scheduled
	// row and waits for a token row.
	promote := len(b.slots) > 0 || len(b.sweeps) > 0
	if promote {
		p.Queue(q.sql.promote, b.now, promoteLimit)
	}
	if len(lockIDs) > 0 {
		// Without sequential scans: a plan made while a new queue's table
		// was small may read it whole, and a cached generic plan would keep
		// doing so after it grew. The rows are found by key alone (see
		// lockItems), so the one plan left is the primary key's, and it
		// needs no planning at each call (which cost more than the lock).
		p.Queue(setNoSeqScans)
		p.Queue(q.sql.lockItems, b.now, lockIDs)
		p.Queue(setSeqScans)
	}
	if len(b.sweeps) > 0 {
		p.Queue(q.sql.expired, b.now, sweepLimit)
	}
	sized := false
	if len(b.slots) > 0 {
		// Typed slices throughout: where the URL asks for the exec or the
		// simple protocol, pgx takes each argument's type from its Go type.
		ids := make([]pgtype.UUID, 0, len(b.slots))
		peers := make([]string, len(b.slots))
		reqs := make([]int32, len(b.slots))
		budgets := make([]int64, len(b.slots))
		var last *op
		req := int32(0)
		for i, s := range b.slots {
			ids = append(ids, pgUUID(s.leaseID))
			peers[i] = s.op.peer
			if s.op != last {
				req++
				last = s.op
			}
			reqs[i], budgets[i] = req, int64(s.op.budget)
			sized = sized || s.op.budget > 0
		}
		lease, leaseSized := q.sql.lease, q.sql.leaseSized
		if q.parted {
			lease, leaseSized = q.psql.lease, q.psql.leaseSized
		}
		if sized {
			p.Queue(leaseSized, b.now, len(b.slots), ids, peers, q.cfg.LeaseDuration.Microseconds(), reqs, budgets)
		} else {
			p.Queue(lease, b.now, len(b.slots), ids, peers, q.cfg.LeaseDuration.Microseconds())
		}
	}
	if len(b.reqIDs) > 0 {
		p.Queue(q.sql.claimDedupe, b.now, b.reqIDs, q.cfg.DedupeWindow.Microseconds())
		p.Queue(q.sql.readDedupe, b.reqIDs)
	}
	if len(b.sweeps) > 0 {
		p.Queue(q.sql.nextDue)
	}
	excess := len(b.sweeps) > 0 && q.cfg.MaxDeadLetters > 0
	if excess {
		p.Queue(q.sql.deadExcess, q.cfg.MaxDeadLetters, sweepLimit)
	}
	expired := len(b.sweeps) > 0 && q.cfg.DeadLetterRetention > 0
	if expired {
		p.Queue(q.sql.deadExpired, b.now, q.cfg.DeadLetterRetention.Microseconds(), sweepLimit)
	}
	b.rows = map[int64]*simRow{}
	return q.pipeline(ctx, c, &p, func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		var mark int64
		if err := br.QueryRow().Scan(&b.ts, &b.before.ready, &b.before.delayed, &b.before.active, &b.before.dead, &mark, &b.before.paused); err != nil {
			return err
		}
		b.ts = b.ts.UTC()
		// Fresher than the last commit's counts unless a commit of this
		// process came after it (the mark, the log position, says which).
		q.committedCounts(b.before, mark, 0, 0)
		if promote {
			if err := eachRow(br, func(rows pgx.Rows) error {
				var id int64
				var key string
				b.promoted++
				err := rows.Scan(&id, &key)
				b.log.touch(key, false)
				return err
			}); err != nil {
				return err
			}
		}
		if len(lockIDs) > 0 {
			if _, err := br.Exec(); err != nil {
				return err
			}
			if err := eachRow(br, func(rows pgx.Rows) error {
				var live bool
				r, err := scanItem(rows, &live)
				if err == nil {
					b.rows[r.seq] = &simRow{row: r, live: live && r.state == stateLeased}
				}
				return err
			}); err != nil {
				return err
			}
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		if len(b.sweeps) > 0 {
			if err := eachRow(br, func(rows pgx.Rows) error {
				r, err := scanItem(rows)
				if err != nil {
					return err
				}
				s := b.rows[r.seq]
				if s == nil {
					s = &simRow{row: r}
					b.rows[r.seq] = s
				}
				s.live = false
				b.expired = append(b.expired, s)
				return nil
			}); err != nil {
				return err
			}
		}
		if len(b.slots) > 0 {
			if err := eachRow(br, func(rows pgx.Rows) error {
				var rn int64
				r, err := scanItem(rows, &rn)
				if err == nil {
					b.granted = append(b.granted, grantRow{rn: rn, row: r})
				}
				return err
			}); err != nil {
				return err
			}
			sort.Slice(b.granted, func(i, j int) bool { return b.granted[i].rn < b.granted[j].rn })
		}
		if len(b.reqIDs) > 0 {
			b.claimed = map[string]bool{}
			b.firstSeq = map[string]int64{}
			if err := eachRow(br, func(rows pgx.Rows) error {
				var r string
				err := rows.Scan(&r)
				b.claimed[r] = true
				return err
			}); err != nil {
				return err
			}
			if err := eachRow(br, func(rows pgx.Rows) error {
				var r string
				var seq int64
				err := rows.Scan(&r, &seq)
				b.firstSeq[r] = seq
				return err
			}); err != nil {
				return err
			}
		}
		if len(b.sweeps) > 0 {
			var due *time.Time
			if err := br.QueryRow().Scan(&due); err != nil {
				return err
			}
			b.nextDue = due
		}
		for _, d := range []struct {
			on   bool
			into *[]*itemRow
		}{{excess, &b.excessDead}, {expired, &b.expiredDead}} {
			if !d.on {
				continue
			}
			if err := eachRow(br, func(rows pgx.Rows) error {
				r, err := scanItem(rows)
				if err == nil {
					*d.into = append(*d.into, r)
				}
				return err
			}); err != nil {
				return err
			}
		}
		return nil
	})
}

func eachRow(br pgx.BatchResults, f func(pgx.Rows) error) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := f(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// decide applies the batch's ops to what the first round trip read, in log
// order: leases, expiries, token ops (in arrival order), enqueues. The ops
// touch disjoint rows (a lease takes pending rows; a token op or an expiry
// only a leased one), so any order of them is one the database allows.
func (q *Queue) decide(b *batch) {
	l := &b.log
	for range b.promoted {
		l.moved(stateScheduled, statePending)
	}
	for _, g := range b.granted {
		s := b.slots[g.rn-1]
		r := g.row
		l.moved(statePending, stateLeased)
		if q.parted {
			l.touch(r.item.PartitionKey, true)
		}
		p := r.pendingItem()
		l.add(resourcelease.Change{
			Kind: resourcelease.ChangeLeased, Item: &p, Token: r.token(), PeerID: deref(r.owner),
			LeaseExpiresAt: utc(r.expiresAt), LeasedAt: utc(r.leasedAt),
		}, 0)
		s.op.leases = append(s.op.leases, newLease(r, q.ttl(s.op), q.cfg.HeartbeatInterval))
	}
	for _, s := range b.expired {
		info := &resourcelease.ErrorInfo{Message: "lease expired without a heartbeat", Code: resourcelease.CodeLeaseExpired}
		q.endLease(b, s, resourcelease.ChangeExpired, info, true, nil)
		for _, o := range b.sweeps {
			o.expired++
		}
	}
	for _, o := range b.ops {
		switch o.kind {
		case opHeartbeat, opComplete, opFail, opRelease, opGiveBack:
			q.tokenOps(b, o)
		}
	}
	q.enqueues(b)
	q.leaseNew(b)
	if q.parted {
		for _, s := range b.rows {
			if s.ended || s.deleted {
				l.touch(s.row.item.PartitionKey, false)
			}
		}
	}
	q.purgeDead(b, b.excessDead, resourcelease.PurgeReasonMaxDeadLetters, len(b.excessDead))
	q.purgeDead(b, b.expiredDead, resourcelease.PurgeReasonRetention, len(b.expiredDead))
	if b.nextDue != nil || len(b.sweeps) > 0 {
		for _, o := range b.sweeps {
			o.nextDue = b.nextDue
		}
	}
}

func (s *simRow) liveFor(t resourcelease.OwnershipToken) bool {
	return s != nil && s.live && !s.deleted && !s.ended && s.row.state == stateLeased && s.row.token() == t
}

func (q *Queue) tokenOps(b *batch, o *op) {
	o.errs = make([]error, len(o.tokens))
	if o.kind == opHeartbeat {
		o.expires = make([]time.Time, len(o.tokens))
	}
	for i, t := range o.tokens {
		if err := tokenError(&t); err != nil {
			o.errs[i] = err
			continue
		}
		s := b.rows[t.SequenceID]
		if !s.liveFor(t) {
			o.errs[i] = resourcelease.ErrUnknownToken
			continue
		}
		r := s.row
		switch o.kind {
		case opHeartbeat:
			exp := b.ts.Add(time.Duration(q.cfg.LeaseDuration.Microseconds()) * time.Microsecond)
			r.expiresAt = &exp
			s.hb = true
			o.expires[i] = exp
			p := r.pendingItem()
			b.log.add(resourcelease.Change{
				Kind: resourcelease.ChangeHeartbeat, Item: &p, Token: t, PeerID: deref(r.owner), LeaseExpiresAt: exp,
			}, 0)
		case opComplete:
			s.deleted = true
			b.log.moved(stateLeased, "")
			p := r.pendingItem()
			b.log.add(resourcelease.Change{
				Kind: resourcelease.ChangeCompleted, Item: &p, Token: t, PeerID: deref(r.owner), LeasedAt: utc(r.leasedAt),
			}, 0)
		case opFail:
			info := &resourcelease.ErrorInfo{Message: o.fail.Reason, Code: o.fail.ErrorCode}
			if info.Message == "" && info.Code == "" {
				info = nil
			}
			q.endLease(b, s, resourcelease.ChangeRequeued, info, !failDeadLetters(o.fail), o.fail.Metadata)
		case opRelease:
			q.release(b, s, o.delay, true)
		case opGiveBack:
			q.release(b, s, 0, false)
		}
	}
}

// requeueDelay is the delay after the given failed attempt: fixed, or
// RequeueDelay·2^(attempt-1) capped at MaxRequeueDelay (as the engine's).
func (q *Queue) requeueDelay(failedAttempt int) time.Duration {
	d := q.cfg.RequeueDelay
	if q.cfg.MaxRequeueDelay <= 0 || d <= 0 {
		return d
	}
	for i := 1; i < failedAttempt && d < q.cfg.MaxRequeueDelay; i++ {
		d *= 2
	}
	return min(d, q.cfg.MaxRequeueDelay)
}

// endOfLease clears s's live lease and returns what it was.
func endOfLease(s *simRow) (resourcelease.OwnershipToken, string, time.Time) {
	r := s.row
	tok, peer, at := r.token(), deref(r.owner), utc(r.leasedAt)
	r.leaseID.Valid, r.owner, r.leasedAt, r.expiresAt = false, nil, nil, nil
	s.ended = true
	return tok, peer, at
}

// schedule puts s back as pending, or scheduled after delay.
func (q *Queue) schedule(b *batch, s *simRow, delay time.Duration) {
	r := s.row
	if delay > 0 {
		us := delay.Microseconds()
		at := b.ts.Add(time.Duration(us) * time.Microsecond)
		r.state, r.notBefore, s.delayUS = stateScheduled, &at, us
		b.log.moved(stateLeased, stateScheduled)
		b.due(at)
		return
	}
	r.state, r.notBefore, s.delayUS = statePending, nil, 0
	b.log.moved(stateLeased, statePending)
}

// endLease ends s's lease and requeues or dead-letters its item, as the
// engine's endLease does.
func (q *Queue) endLease(b *batch, s *simRow, kind resourcelease.ChangeKind, info *resourcelease.ErrorInfo, requeue bool, meta map[string]string) {
	tok, peer, leasedAt := endOfLease(s)
	r := s.row
	r.lastError = info
	r.releases = 0
	change := func(kind resourcelease.ChangeKind, e *resourcelease.ErrorInfo) resourcelease.Change {
		p := r.pendingItem()
		return resourcelease.Change{Kind: kind, Item: &p, Token: tok, PeerID: peer, LeasedAt: leasedAt, Error: e, Metadata: meta}
	}
	if !requeue || r.attempt >= q.cfg.MaxDeliveryAttempts {
		reason := "failed without requeue"
		if requeue {
			reason = fmt.Sprintf("max delivery attempts (%d) exceeded", q.cfg.MaxDeliveryAttempts)
		}
		if info != nil && info.Message != "" {
			reason += ": " + info.Message
		}
		code := resourcelease.CodeDeliveryAttemptsExceed
		if !requeue {
			code = ""
			if info != nil {
				code = info.Code
			}
		}
		at := b.ts
		r.state, r.deadAt, r.reason, r.reasonCode, r.notBefore = stateDead, &at, &reason, &code, nil
		b.log.moved(stateLeased, stateDead)
		if kind == resourcelease.ChangeRequeued { // a worker's fail: its Failed event comes before the dead letter
			b.log.add(change(resourcelease.ChangeFailed, info), 0)
		}
		b.log.add(change(resourcelease.ChangeDeadLettered, &resourcelease.ErrorInfo{Message: reason, Code: code}), 0)
		return
	}
	delay := q.requeueDelay(r.attempt)
	r.attempt++
	q.schedule(b, s, delay)
	b.log.add(change(kind, info), 0)
}

// release gives s's lease back without counting its attempt, unless it is
// a counted release past MaxReleases, which fails the attempt.
func (q *Queue) release(b *batch, s *simRow, delay time.Duration, counted bool) {
	r := s.row
	if counted && q.cfg.MaxReleases > 0 && r.releases >= q.cfg.MaxReleases {
		info := &resourcelease.ErrorInfo{Message: fmt.Sprintf("released more than %d times in a row", q.cfg.MaxReleases), Code: resourcelease.CodeReleaseLimit}
		q.endLease(b, s, resourcelease.ChangeRequeued, info, true, nil)
		return
	}
	tok, peer, leasedAt := endOfLease(s)
	if counted {
		r.releases++
	}
	q.schedule(b, s, delay)
	p := r.pendingItem()
	b.log.add(resourcelease.Change{Kind: resourcelease.ChangeReleased, Item: &p, Token: tok, PeerID: peer, LeasedAt: leasedAt}, 0)
}

// enqueues admits the batch's enqueues (the parked capacity waits first):
// a request id taken within the window answers with its first enqueue; the
// rest is admitted while the capacity allows.
func (q *Queue) enqueues(b *batch) {
	// Capacity is checked against the counts of the latest commit, less
	// what transactions still in flight have admitted: exact within the
	// process. The reservation holds until this transaction commits or
	// fails.
	q.mu.Lock()
	defer q.mu.Unlock()
	room, roomDelayed := int64(-1), int64(-1)
	if q.cfg.Capacity > 0 {
		room = max(int64(q.cfg.Capacity)-q.counts.ready-q.counts.active-q.reserved, 0)
	}
	if q.cfg.DelayedCapacity > 0 {
		roomDelayed = max(int64(q.cfg.DelayedCapacity)-q.counts.delayed-q.reservedDelayed, 0)
	}
	defer func() { q.reserved += b.admitted; q.reservedDelayed += b.admittedDelayed }()
	for _, list := range [][]*op{b.full, b.ops} {
		for _, o := range list {
			if o.kind != opEnqueue {
				continue
			}
			o.seqs, o.dups, o.errs = make([]int64, len(o.items)), make([]bool, len(o.items)), make([]error, len(o.items))
			dupOf := map[string]int{}
			var admitted []int
			wait := false
			for i := range o.items {
				r := o.items[i].RequestID
				if q.cfg.DedupeWindow <= 0 {
					r = ""
				}
				if r != "" {
					if j, ok := dupOf[r]; ok {
						o.seqs[i], o.dups[i] = -1-int64(j), true // resolved once j's id is known
						continue
					}
					dupOf[r] = i
					if seq, ok := b.firstSeq[r]; ok {
						o.seqs[i], o.dups[i] = seq, true
						continue
					}
					if !b.claimed[r] {
						// The first enqueue of this id was forgotten between
						// the claim and the read (its window ended).
						o.errs[i] = resourcelease.Errorf(resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable,
							"postgres: request id %q changed hands during the enqueue; retry", r)
						continue
					}
				}
				delayed := o.items[i].NotBefore.After(b.ts)
				left := &room
				if delayed {
					left = &roomDelayed
				}
				if *left == 0 {
					if o.solo && q.cfg.FullMode == resourcelease.FullWait {
						wait = true
					} else if delayed {
						o.errs[i] = resourcelease.Errorf(resourcelease.StatusResourceExhausted, resourcelease.CodeQueueFull,
							"queue is at its delayed capacity (%d delayed items)", q.cfg.DelayedCapacity)
					} else {
						o.errs[i] = resourcelease.Errorf(resourcelease.StatusResourceExhausted, resourcelease.CodeQueueFull,
							"queue is at capacity (%d ready and leased)", q.cfg.Capacity)
					}
					if r != "" {
						b.unclaim = append(b.unclaim, r)
					}
					continue
				}
				if *left > 0 {
					*left--
				}
				admitted = append(admitted, i)
				if delayed {
					b.admittedDelayed++
				} else {
					b.admitted++
				}
			}
			if wait {
				b.parkFull = append(b.parkFull, o)
				continue
			}
			for _, i := range admitted {
				it := &o.items[i]
				ord := b.fin.addItem(it)
				if it.RequestID != "" && q.cfg.DedupeWindow > 0 {
					b.fin.ddReq = append(b.fin.ddReq, it.RequestID)
					b.fin.ddOrd = append(b.fin.ddOrd, ord)
				}
				o.seqs[i] = ord // a position among the new items until the counter row decides
				b.newRefs = append(b.newRefs, newRef{op: o, i: i})
				p := resourcelease.PendingItem{Payload: *it, Attempt: 1}
				if q.parted {
					b.log.touch(it.PartitionKey, false)
				}
				if it.NotBefore.After(b.ts) {
					at := it.NotBefore
					b.fin.sched[ord-1], p.ReadyAt = &at, at
					b.log.moved("", stateScheduled)
					b.due(at)
				} else {
					b.log.moved("", statePending)
				}
				b.log.add(resourcelease.Change{Kind: resourcelease.ChangeEnqueued, Item: &p, PeerID: o.caller}, ord)
			}
		}
	}
}

// leaseNew gives the lease slots that the database had no ready item for
// to the items this transaction enqueues, oldest first: they are newer than
// every item in the table, so FIFO holds, and a long-poll gets an item
// enqueued beside it without waiting for the next transaction.
func (q *Queue) leaseNew(b *batch) {
	if len(b.slots) == 0 || len(b.fin.rt) == 0 || q.parted || b.before.paused {
		// With partition rules a new item waits for the next transaction,
		// which finds it through its partition's row.
		return
	}
	served := make([]bool, len(b.slots))
	for _, g := range b.granted {
		served[g.rn-1] = true
	}
	size := map[*op]int{}
	for _, g := range b.granted {
		size[b.slots[g.rn-1].op] += approxSize(&g.row.item, g.row.lastError)
	}
	next := 0 // the next new item, by its position in the final statement
	for i, s := range b.slots {
		for next < len(b.fin.rt) && b.fin.sched[next] != nil {
			next++ // delayed: not for a lease yet
		}
		if served[i] || next == len(b.fin.rt) {
			continue
		}
		o := s.op
		it := b.newItem(next)
		if o.budget > 0 && len(o.leases) > 0 && size[o]+approxSize(it, nil) > o.budget {
			continue
		}
		size[o] += approxSize(it, nil)
		ord := int64(next + 1)
		next++
		b.fin.lid[ord-1], b.fin.owner[ord-1] = pgUUID(s.leaseID), &o.peer
		b.fin.leaseUS = q.cfg.LeaseDuration.Microseconds()
		exp := b.ts.Add(time.Duration(b.fin.leaseUS) * time.Microsecond)
		b.log.moved(statePending, stateLeased)
		p := resourcelease.PendingItem{Payload: *it, Attempt: 1, EnqueuedAt: b.ts}
		b.log.add(resourcelease.Change{
			Kind: resourcelease.ChangeLeased, Item: &p, Token: resourcelease.OwnershipToken{Attempt: 1, LeaseID: s.leaseID},
			PeerID: o.peer, LeaseExpiresAt: exp, LeasedAt: b.ts,
		}, ord)
		b.grants = append(b.grants, newGrant{op: o, ord: ord, item: it, id: s.leaseID})
		o.leases = append(o.leases, nil) // a place, filled once the item has its sequence id
	}
}

// newItem is the item at position i of the transaction's new items
// (b.newRefs is in that order).
func (b *batch) newItem(i int) *resourcelease.Item {
	r := b.newRefs[i]
	return &r.op.items[r.i]
}

// approxSize estimates an item's JSON size as sizeExpr does in SQL.
func approxSize(it *resourcelease.Item, lastErr *resourcelease.ErrorInfo) int {
	n := 300 + (len(it.Body)+2)/3*4 + len(it.ResourceType) + len(it.ResourceID) + len(it.PartitionKey) +
		len(it.PayloadEncoding) + len(it.RequestID)
	for k, v := range it.Attributes {
		n += len(k) + len(v) + 6
	}
	if lastErr != nil {
		n += len(lastErr.Message) + len(lastErr.Code) + 24
	}
	return n
}

// deliver hands out a batch's results after its commit (or its failure),
// parks what must wait, and reports the commit.
func (q *Queue) deliver(b *batch, committed []Committed, err error) {
	q.mu.Lock()
	stats := q.counts.stats()
	q.reserved -= b.admitted // what a failed transaction admitted is not coming
	q.reservedDelayed -= b.admittedDelayed
	if b.tookWaiters {
		q.waitersBusy = false
	}
	if b.tookFull {
		q.fullBusy = false
	}
	if b.tookSweep {
		q.sweepBusy = false
	}
	q.mu.Unlock()
	// Counted before any caller is answered: one that comes back before
	// this returns must count as come back.
	b.submittedMark = q.submitted.Load()
	var park, giveBack []*op
	var toFull []*op
	parked := map[*op]bool{}
	for _, o := range b.parkFull {
		parked[o] = true
	}
	for i, list := range [][]*op{b.waiters, b.full, b.ops} {
		for _, o := range list {
			if err != nil && i < 2 && o.state.Load() == opOpen {
				// A parked wait whose round failed keeps waiting (its own
				// deadline bounds it): the failure was the round's, not a
				// call it made. A lease it was granted is not committed.
				o.leases = nil
				if i == 0 {
					park = append(park, o)
				} else {
					toFull = append(toFull, o)
				}
				continue
			}
			if err != nil {
				o.err = err
				o.leases = nil
				q.finish(o)
				continue
			}
			switch {
			case parked[o]:
				toFull = append(toFull, o)
				continue
			case o.kind == opLease && len(o.leases) == 0 && o.wait:
				park = append(park, o)
				continue
			case o.kind == opLease && len(o.leases) == 0 && q.parted && b.promoted > 0 && !o.again:
				// With partition rules the items this transaction promoted
				// are leasable from its commit on (their partitions' rows
				// were recomputed in it): look once more.
				o.again = true
				b.deferred = append(b.deferred, o)
				continue
			case o.kind == opEnqueue:
				for i := range o.items {
					if o.dups[i] && o.seqs[i] < 0 {
						j := int(-1 - o.seqs[i])
						o.seqs[i], o.errs[i] = o.seqs[j], o.errs[j]
					}
				}
			}
			o.stats = stats
			if !q.finish(o) {
				if o.kind == opLease {
					giveBack = append(giveBack, o)
				}
			} else if o.kind != opSweep && o.kind != opGiveBack {
				// A caller that may come back at once (sweeps and
				// give-backs are the queue's own: nobody comes back).
				b.answered++
			}
		}
	}
	q.mu.Lock()
	if b.waitLease {
		q.waitLeases--
	}
	if !q.closed {
		q.pending = append(b.deferred, q.pending...)
		for _, o := range park {
			if o.state.Load() == opOpen {
				q.park(o)
				q.waiters = append(q.waiters, o)
			}
		}
		q.full = append(toFull, q.full...)
		if err == nil && (len(committed) > 0 || b.promoted > 0) {
			if b.log.madeReady || b.promoted > 0 || b.partsLeasable {
				q.serveWaiters = true
			}
			if b.log.freed {
				q.serveFull = true
			}
		}
	} else {
		for _, o := range append(append(b.deferred, park...), toFull...) {
			o.err = resourcelease.ErrClosed
			q.finish(o)
		}
	}
	q.mu.Unlock()
	for _, o := range giveBack {
		for _, l := range o.leases {
			q.giveBack(l.OwnershipToken)
		}
	}
	if err == nil && b.nextDue != nil {
		q.hintDue(*b.nextDue)
	}
	q.mu.Lock()
	again := len(q.pending) > 0 || q.serveWaiters || q.serveFull
	q.mu.Unlock()
	if again {
		q.wake()
	}
}

// committedCounts records the counts a commit read from the counter row
// (at event number mark, which orders commits) and releases the capacity
// its admitted items had reserved: from now on the counts hold them.
func (q *Queue) committedCounts(c counts, mark, admitted, admittedDelayed int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if mark >= q.countsMark {
		q.counts, q.countsMark = c, mark
	}
	q.reserved -= admitted
	q.reservedDelayed -= admittedDelayed
}

// endArgs are the columns of the endLease statement.
type endArgs struct {
	seq                []int64
	state              []string
	attempt, releases  []int32
	lastErr            []*string
	delay              []int64
	reason, reasonCode []*string
}

func (e *endArgs) add(s *simRow) {
	r := s.row
	e.seq = append(e.seq, r.seq)
	e.state = append(e.state, r.state)
	e.attempt = append(e.attempt, int32(r.attempt))
	e.releases = append(e.releases, int32(r.releases))
	e.lastErr = append(e.lastErr, errorJSON(r.lastError))
	e.delay = append(e.delay, s.delayUS)
	if r.state == stateDead {
		e.reason = append(e.reason, r.reason)
		e.reasonCode = append(e.reasonCode, r.reasonCode)
	} else {
		e.reason = append(e.reason, nil)
		e.reasonCode = append(e.reasonCode, nil)
	}
}

func (e *endArgs) args(now any) []any {
	return []any{now, e.seq, e.state, e.attempt, e.releases, e.lastErr, e.delay, e.reason, e.reasonCode}
}

// connTx presents the writer's connection, inside its transaction, as a
// pgx.Tx for CommitHook. The queue owns the transaction: Commit, Rollback
// and Begin are refused.
type connTx struct{ c *pgx.Conn }

var errHookTx = errors.New("postgres: the queue owns this transaction; CommitHook must not begin, commit or roll it back")

func (t connTx) Begin(context.Context) (pgx.Tx, error) { return nil, errHookTx }
func (t connTx) Commit(context.Context) error          { return errHookTx }
func (t connTx) Rollback(context.Context) error        { return errHookTx }
func (t connTx) CopyFrom(ctx context.Context, name pgx.Identifier, cols []string, src pgx.CopyFromSource) (int64, error) {
	return t.c.CopyFrom(ctx, name, cols, src)
}
func (t connTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return t.c.SendBatch(ctx, b)
}

// LargeObjects is not available in a CommitHook.
func (t connTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }
func (t connTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	return t.c.Prepare(ctx, name, sql)
}
func (t connTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return t.c.Exec(ctx, sql, args...)
}
func (t connTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return t.c.Query(ctx, sql, args...)
}
func (t connTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return t.c.QueryRow(ctx, sql, args...)
}
func (t connTx) Conn() *pgx.Conn { return t.c }
