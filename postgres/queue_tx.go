package postgres

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// txNotifyTag stands for the instance id in the notifications of a
// QueueTx: it commits outside the writer, so every process, this one
// included, must look.
const txNotifyTag = "tx"

// txNowExpr is the clock of the statements a QueueTx runs. A caller's
// transaction may have started long before (now() is its start), so a
// lease that expired meanwhile would look live and the events would be
// stamped earlier than the ones committed since: the wall clock at the
// statement fixes both. The manual clock of tests still wins.
const txNowExpr = `coalesce($1::timestamptz, clock_timestamp())`

// txStmt is a queue statement on the QueueTx clock.
func txStmt(s string) string { return strings.ReplaceAll(s, nowExpr, txNowExpr) }

// perCallMode is the pgx mode in which a QueueTx runs its statements that
// find rows by key (the lock and delete of the rows it completes, the read
// and give-back of request ids, the final statement's updates by key, the
// recompute of the partitions it touched), so that each call is planned for
// its arguments and the tables as they are then: nil when the caller's
// connection does so already. A connection in
// pgx's default mode prepares each statement under a name, and Postgres
// may switch a named statement to a generic plan after five calls; one
// made while the queue's tables were small scans them whole, and stays
// cached after they have grown (until the next ANALYZE), holding the rows
// it scans past. The writer guards its own statements with planner
// settings, which a QueueTx may not change in the caller's transaction.
// Described statements keep the binary formats of the default mode (text
// results would depend on the session's DateStyle and bytea_output); the
// other modes (the simple protocol, unnamed statements, as behind a
// pooler) plan each call already, and the connection keeps its mode.
func perCallMode(tx pgx.Tx) any {
	c := tx.Conn()
	if c == nil {
		return nil
	}
	cfg := c.Config()
	switch {
	case cfg.DefaultQueryExecMode != pgx.QueryExecModeCacheStatement:
		return nil
	case cfg.DescriptionCacheCapacity > 0:
		return pgx.QueryExecModeCacheDescribe
	}
	return pgx.QueryExecModeDescribeExec
}

// withMode is args after mode, when there is one.
func withMode(mode any, args ...any) []any {
	if mode == nil {
		return args
	}
	return append([]any{mode}, args...)
}

// QueueTx stages the queue's mutations made inside a caller's pgx.Tx, so
// that the item, its events (and, with a CommitHook, their effects) commit
// or roll back with the caller's own data: enqueue the follow-up of a job
// and complete the job, with the job's own writes, in one transaction
// (effectively-once processing). A rolled-back tx leaves nothing: no item,
// no completion, no event, no gap in the log.
//
// Get one from [Queue.Tx], call Enqueue and Complete in any order and any
// number, then Finish, then commit tx. The calls lock the item rows they
// need (a completed item's row is held by tx until it ends, so a
// heartbeat, fail or expiry of that lease waits for it); only Finish takes
// the queue's counter row, which serializes the log, so every row lock of
// tx comes before the counter row whatever the calls' order — the order
// every writer of the queue keeps, so a QueueTx never deadlocks against
// them. From Finish to COMMIT every other mutation of the queue, on every
// dispatcher, waits for tx: commit at once after Finish, and never call
// this Queue's other methods between Tx and COMMIT (its writer would wait
// for rows tx holds). The server's idle_in_transaction_session_timeout
// bounds a caller that stalls.
//
// tx must be READ COMMITTED (PostgreSQL's default): under REPEATABLE READ
// or SERIALIZABLE the counter row, updated by every commit of the mesh,
// would fail the transaction with a serialization error nearly every
// time, so Tx refuses it. A QueueTx is not safe for concurrent use (nor is
// a pgx.Tx).
type QueueTx struct {
	q    *Queue
	tx   pgx.Tx
	now  any
	mode any // perCallMode of tx

	before counts
	l      changeLog
	f      finalInput
	// results are the Enqueue calls' results in call order; a new item's
	// sequence id is ord-1 past the first one Finish draws.
	results []txResult
	reqOrd  map[string]int64 // request ids staged here: the item's ord
	// maxLocked is the highest sequence id a Complete locked: rows are
	// locked in ascending order, as the queue's writer locks them.
	maxLocked int64
	freed     bool
	done      bool
	// clock is the time delays are judged by (read once, when an item
	// first has a NotBefore); scheduled the earliest ready time of the
	// items this QueueTx delays, for the notification.
	clock     *time.Time
	scheduled *time.Time
	ready     bool // an Enqueue staged an item ready at once
}

type txResult struct {
	res resourcelease.EnqueueResult
	ord int64 // 0: res is final (a duplicate of a committed enqueue)
}

// Tx starts staging this queue's mutations in the caller's transaction tx
// (see [QueueTx]). It reads the queue's counts (capacity is checked
// against them) and checks tx's isolation level: anything but READ
// COMMITTED is failed-precondition.
func (q *Queue) Tx(ctx context.Context, tx pgx.Tx) (*QueueTx, error) {
	if tx == nil {
		return nil, invalidArgument("Tx: tx is nil")
	}
	if err := q.checkOpen("transaction"); err != nil {
		return nil, err
	}
	var iso string
	if err := tx.QueryRow(ctx, `SELECT current_setting('transaction_isolation')`).Scan(&iso); err != nil {
		return nil, q.store.fail(ctx, "transaction", err)
	}
	if iso != "read committed" {
		return nil, resourcelease.Errorf(resourcelease.StatusFailedPrecondition, resourcelease.CodeInvalidArgument,
			"postgres: a queue transaction must be READ COMMITTED, got %s: the queue's counter row, which every commit updates, would fail it with a serialization error", strings.ToUpper(iso))
	}
	t := &QueueTx{q: q, tx: tx, now: q.store.nowArg(), mode: perCallMode(tx)}
	if err := tx.QueryRow(ctx, q.sql.counts, t.now).Scan(new(any), &t.before.ready, &t.before.delayed, &t.before.active, &t.before.dead, new(int64), &t.before.paused); err != nil {
		return nil, q.store.fail(ctx, "transaction", err)
	}
	return t, nil
}

// clockNow is the time a QueueTx judges delays by: the manual clock in
// tests, else the database's wall clock (not now(), the caller's
// transaction start), read once.
func (t *QueueTx) clockNow(ctx context.Context) (time.Time, error) {
	if t.clock == nil {
		var now time.Time
		if err := t.tx.QueryRow(ctx, `SELECT `+txNowExpr, t.now).Scan(&now); err != nil {
			return time.Time{}, t.q.store.fail(ctx, "enqueue in transaction", err)
		}
		now = now.UTC()
		t.clock = &now
	}
	return *t.clock, nil
}

func (t *QueueTx) check(op string) error {
	if t.done {
		return resourcelease.Errorf(resourcelease.StatusFailedPrecondition, resourcelease.CodeInvalidArgument,
			"postgres: %s after Finish: start another Tx", op)
	}
	return t.q.checkOpen(op + " in transaction")
}

// Enqueue stages item: it is inserted, numbered and logged by Finish, and
// visible to leases (long-polls on every dispatcher are woken: the NOTIFY
// is sent in tx) once tx commits. Dedupe and capacity apply: capacity is
// checked against the counts Tx read plus what this QueueTx staged, and
// never waits (ErrQueueFull at once); a RequestID seen within the window,
// or staged earlier in this QueueTx, is a duplicate of the first enqueue.
// An item whose NotBefore is ahead of the database's clock is delayed: it
// is counted apart (DelayedCapacity) and becomes leasable at its time, as
// with Queue.Enqueue.
func (t *QueueTx) Enqueue(ctx context.Context, item resourcelease.Item) error {
	if err := t.check("enqueue"); err != nil {
		return err
	}
	q := t.q
	if err := item.Validate(); err != nil {
		return err
	}
	if err := checkItemText(&item); err != nil {
		return err
	}
	delayed := false
	if !item.NotBefore.IsZero() {
		now, err := t.clockNow(ctx)
		if err != nil {
			return err
		}
		if err := q.checkNotBefore(&item, now); err != nil {
			return err
		}
		delayed = item.NotBefore.After(now)
	}
	req := item.RequestID
	if q.cfg.DedupeWindow <= 0 {
		req = ""
	}
	if req != "" {
		if ord, ok := t.reqOrd[req]; ok {
			t.results = append(t.results, txResult{res: resourcelease.EnqueueResult{Duplicate: true}, ord: ord})
			return nil
		}
		seq, dup, err := q.claimTx(ctx, t.tx, t.mode, t.now, req)
		if err != nil {
			return err
		}
		if dup {
			t.results = append(t.results, txResult{res: resourcelease.EnqueueResult{SequenceID: seq, Duplicate: true}})
			return nil
		}
	}
	full := q.cfg.Capacity > 0 && t.before.ready+t.l.dReady+t.before.active+t.l.dActive >= int64(q.cfg.Capacity)
	if delayed {
		full = q.cfg.DelayedCapacity > 0 && t.before.delayed+t.l.dDelayed >= int64(q.cfg.DelayedCapacity)
	}
	if full {
		if req != "" {
			// Give the claim back: nobody else may have seen it yet.
			if _, err := t.tx.Exec(ctx, q.sql.unclaimDedupe, withMode(t.mode, []string{req})...); err != nil {
				return q.store.fail(ctx, "enqueue in transaction", err)
			}
		}
		if delayed {
			return resourcelease.Errorf(resourcelease.StatusResourceExhausted, resourcelease.CodeQueueFull,
				"queue is at its delayed capacity (%d delayed items)", q.cfg.DelayedCapacity)
		}
		return resourcelease.Errorf(resourcelease.StatusResourceExhausted, resourcelease.CodeQueueFull,
			"queue is at capacity (%d ready and leased)", q.cfg.Capacity)
	}
	ord := t.f.addItem(&item)
	if req != "" {
		t.f.ddReq, t.f.ddOrd = append(t.f.ddReq, req), append(t.f.ddOrd, ord)
		if t.reqOrd == nil {
			t.reqOrd = map[string]int64{}
		}
		t.reqOrd[req] = ord
	}
	if q.parted {
		t.l.touch(item.PartitionKey, false)
	}
	p := resourcelease.PendingItem{Payload: item, Attempt: 1}
	if delayed {
		at := item.NotBefore
		t.f.sched[ord-1], p.ReadyAt = &at, at
		t.l.moved("", stateScheduled)
		if t.scheduled == nil || at.Before(*t.scheduled) {
			t.scheduled = &at
		}
	} else {
		t.l.moved("", statePending)
		t.ready = true
	}
	t.l.add(resourcelease.Change{Kind: resourcelease.ChangeEnqueued, Item: &p}, ord)
	t.results = append(t.results, txResult{res: resourcelease.EnqueueResult{NotBefore: item.NotBefore}, ord: ord})
	return nil
}

// Complete stages the completion of the leases tokens name: their rows are
// locked and deleted now (in tx), the Completed events are written by
// Finish. Each is fenced as Complete is: the token must name the item's
// live lease (same attempt and lease id, not expired by the wall clock at
// this call), or it is ErrUnknownToken and nothing of this call is staged
// (tx may go on, or roll back).
//
// Rows are locked in ascending sequence id order, as every writer of the
// queue locks them, so that two transactions that share items wait for
// each other instead of deadlocking: a later Complete may only name items
// above those an earlier one locked (invalid-argument otherwise); pass
// them all to one call when in doubt.
func (t *QueueTx) Complete(ctx context.Context, tokens ...resourcelease.OwnershipToken) error {
	if err := t.check("complete"); err != nil {
		return err
	}
	q := t.q
	if len(tokens) == 0 {
		return nil
	}
	tokens = slices.Clone(tokens)
	slices.SortFunc(tokens, func(a, b resourcelease.OwnershipToken) int {
		return int(min(max(a.SequenceID-b.SequenceID, -1), 1))
	})
	ids := make([]int64, len(tokens))
	for i := range tokens {
		if err := tokenError(&tokens[i]); err != nil {
			return err
		}
		if i > 0 && tokens[i].SequenceID == tokens[i-1].SequenceID {
			return invalidArgument("Complete: item %d named twice", tokens[i].SequenceID)
		}
		ids[i] = tokens[i].SequenceID
	}
	if ids[0] <= t.maxLocked {
		return invalidArgument("Complete: item %d is not above item %d an earlier Complete of this transaction locked; complete them in one call, or in ascending sequence id order", ids[0], t.maxLocked)
	}
	rows, err := t.tx.Query(ctx, txStmt(q.sql.lockItems), withMode(t.mode, t.now, ids)...)
	if err != nil {
		return q.store.fail(ctx, "complete in transaction", err)
	}
	found := map[int64]*itemRow{}
	for rows.Next() {
		var live bool
		row, err := scanItem(rows, &live)
		if err != nil {
			rows.Close()
			return q.store.fail(ctx, "complete in transaction", err)
		}
		if live {
			found[row.seq] = row
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return q.store.fail(ctx, "complete in transaction", err)
	}
	t.maxLocked = ids[len(ids)-1]
	for _, tok := range tokens {
		row := found[tok.SequenceID]
		if row == nil || row.state != stateLeased || row.token() != tok {
			return resourcelease.ErrUnknownToken
		}
	}
	if _, err := t.tx.Exec(ctx, q.sql.complete, withMode(t.mode, ids)...); err != nil {
		return q.store.fail(ctx, "complete in transaction", err)
	}
	for _, tok := range tokens {
		row := found[tok.SequenceID]
		t.l.moved(stateLeased, "")
		if q.parted {
			t.l.touch(row.item.PartitionKey, false)
		}
		p := row.pendingItem()
		t.l.add(resourcelease.Change{
			Kind: resourcelease.ChangeCompleted, Item: &p, Token: tok, PeerID: deref(row.owner), LeasedAt: utc(row.leasedAt),
		}, 0)
	}
	t.freed = true
	return nil
}

// Finish is the last statement of the QueueTx before COMMIT: it takes the
// counter row, numbers the staged items and events and writes them, sends
// the notification (delivered at commit) and runs the CommitHook in tx.
// It returns the Enqueue calls' results, in call order. Commit tx at once
// after it: the counter row is held until then. With nothing staged it
// writes nothing. A QueueTx finishes once.
func (t *QueueTx) Finish(ctx context.Context) ([]resourcelease.EnqueueResult, error) {
	if err := t.check("finish"); err != nil {
		return nil, err
	}
	t.done = true
	q := t.q
	if len(t.l.changes) == 0 {
		out := make([]resourcelease.EnqueueResult, len(t.results))
		for i, r := range t.results {
			out[i] = r.res
			out[i].Stats = t.before.stats()
		}
		return out, nil
	}
	note := ""
	if t.ready {
		note = "r"
	}
	if t.freed && q.cfg.Capacity > 0 {
		note += "s"
	}
	var fr finalRow
	if err := fr.scan(t.tx.QueryRow(ctx, txStmt(q.sql.final), withMode(t.mode, finalArgs(t.now, &t.l, &t.f, 0)...)...)); err != nil {
		return nil, q.store.fail(ctx, "finish transaction", err)
	}
	committed := t.l.number(fr.firstSeq, fr.firstEv, fr.after, fr.ts)
	// With partition rules, the rows of the partitions touched follow the
	// change in tx (a new partition, a strict partition's next item freed
	// by a completion), or leases would not see it until another commit.
	leasable, err := q.partitionsTx(ctx, t.tx, t.mode, t.now, &t.l)
	if err != nil {
		return nil, q.store.fail(ctx, "finish transaction", err)
	}
	if leasable && !strings.Contains(note, "r") {
		note += "r"
	}
	if t.scheduled != nil {
		note += "d" // every process's sweeper wakes for the earliest delayed item
	}
	if note != "" {
		note += ":" + txNotifyTag
		if t.scheduled != nil {
			note += ":" + strconv.FormatInt(t.scheduled.UnixNano(), 10)
		}
		if _, err := t.tx.Exec(ctx, q.sql.notify, q.channel, note); err != nil {
			return nil, q.store.fail(ctx, "finish transaction", err)
		}
	}
	if hook := q.cfg.CommitHook; hook != nil {
		if err := hook(ctx, t.tx, eventsOf(committed)); err != nil {
			return nil, resourcelease.AsError(err)
		}
	}
	out := make([]resourcelease.EnqueueResult, len(t.results))
	for i, r := range t.results {
		out[i] = r.res
		if r.ord != 0 {
			out[i].SequenceID = fr.firstSeq + r.ord - 1
		}
		out[i].Stats = fr.after.stats()
	}
	return out, nil
}

// claimTx claims req for an enqueue in tx, or returns the sequence id of
// the enqueue that holds it within the window (read in mode: see
// perCallMode; the claim, an INSERT … ON CONFLICT, finds its conflict
// through the primary key in any plan).
func (q *Queue) claimTx(ctx context.Context, tx pgx.Tx, mode, now any, req string) (seq int64, dup bool, err error) {
	rows, err := tx.Query(ctx, txStmt(q.sql.claimDedupe), now, []string{req}, q.cfg.DedupeWindow.Microseconds())
	if err != nil {
		return 0, false, q.store.fail(ctx, "enqueue in transaction", err)
	}
	claimed := false
	for rows.Next() {
		claimed = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, false, q.store.fail(ctx, "enqueue in transaction", err)
	}
	if claimed {
		return 0, false, nil
	}
	var r string
	err = tx.QueryRow(ctx, q.sql.readDedupe, withMode(mode, []string{req})...).Scan(&r, &seq)
	if err != nil {
		if err == pgx.ErrNoRows {
			return 0, false, resourcelease.Errorf(resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable,
				"postgres: request id %q changed hands during the enqueue; retry", req)
		}
		return 0, false, q.store.fail(ctx, "enqueue in transaction", err)
	}
	return seq, true, nil
}
