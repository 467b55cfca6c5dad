package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// txNotifyTag stands for the instance id in the notifications of
// EnqueueTx and CompleteTx: they commit outside the writer, so every
// process, this one included, must look.
const txNotifyTag = "tx"

// EnqueueTx enqueues item inside the caller's transaction tx: the item,
// its Enqueue event (and, with a CommitHook, the event's effect) are
// written by tx and so commit, or roll back, with the caller's own data. A
// rolled-back tx leaves nothing: no item, no event, no gap in the log. The
// item is visible to leases, and long-polls on every dispatcher are woken
// (the NOTIFY is sent in tx), once tx commits.
//
// The cost: the log is serialized through the queue's counter row, which
// tx takes in the last statement of EnqueueTx and holds until the caller
// commits or rolls back, so every other mutation of the queue, on every
// dispatcher, waits that long. Call it last, just before Commit, keep tx
// short, and never call this Queue's other methods between EnqueueTx and
// Commit (its writer would wait for the row tx holds). The server's
// idle_in_transaction_session_timeout bounds a caller that stalls.
//
// Dedupe and capacity apply (capacity is checked against the committed
// counts and never waits: ErrQueueFull at once); a RequestID seen within
// the window returns the first enqueue's result. A NotBefore is refused
// (unimplemented) until the Postgres queue delays items.
func (q *Queue) EnqueueTx(ctx context.Context, tx pgx.Tx, item resourcelease.Item) (resourcelease.EnqueueResult, error) {
	if tx == nil {
		return resourcelease.EnqueueResult{}, invalidArgument("EnqueueTx: tx is nil")
	}
	if err := q.checkOpen("enqueue in transaction"); err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	if err := item.Validate(); err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	if err := checkItemText(&item); err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	if !item.NotBefore.IsZero() {
		return resourcelease.EnqueueResult{}, resourcelease.Errorf(resourcelease.StatusUnimplemented, resourcelease.CodeNotSupported,
			"postgres: EnqueueTx does not delay items yet (notBefore set)")
	}
	now := q.store.nowArg()
	var before counts
	if err := tx.QueryRow(ctx, q.sql.counts, now).Scan(new(any), &before.ready, &before.delayed, &before.active, &before.dead, new(int64)); err != nil {
		return resourcelease.EnqueueResult{}, q.store.fail(ctx, "enqueue in transaction", err)
	}
	req := item.RequestID
	if q.cfg.DedupeWindow <= 0 {
		req = ""
	}
	if req != "" {
		seq, dup, err := q.claimTx(ctx, tx, now, req)
		if err != nil {
			return resourcelease.EnqueueResult{}, err
		}
		if dup {
			return resourcelease.EnqueueResult{SequenceID: seq, Duplicate: true, Stats: before.stats()}, nil
		}
	}
	if q.cfg.Capacity > 0 && before.ready+before.active >= int64(q.cfg.Capacity) {
		return resourcelease.EnqueueResult{}, resourcelease.Errorf(resourcelease.StatusResourceExhausted, resourcelease.CodeQueueFull,
			"queue is at capacity (%d ready and leased)", q.cfg.Capacity)
	}
	var l changeLog
	var f finalInput
	ord := f.addItem(&item)
	if req != "" {
		f.ddReq, f.ddOrd = []string{req}, []int64{ord}
	}
	l.moved("", statePending)
	p := resourcelease.PendingItem{Payload: item, Attempt: 1}
	l.add(resourcelease.Change{Kind: resourcelease.ChangeEnqueued, Item: &p}, ord)
	fr, err := q.finishTx(ctx, tx, now, &l, &f, "r", "enqueue in transaction")
	if err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	return resourcelease.EnqueueResult{SequenceID: fr.firstSeq + ord - 1, Stats: fr.after.stats()}, nil
}

// claimTx claims req for an enqueue in tx, or returns the sequence id of
// the enqueue that holds it within the window.
func (q *Queue) claimTx(ctx context.Context, tx pgx.Tx, now any, req string) (seq int64, dup bool, err error) {
	rows, err := tx.Query(ctx, q.sql.claimDedupe, now, []string{req}, q.cfg.DedupeWindow.Microseconds())
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
	err = tx.QueryRow(ctx, q.sql.readDedupe, []string{req}).Scan(&r, &seq)
	if err != nil {
		if err == pgx.ErrNoRows {
			return 0, false, resourcelease.Errorf(resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable,
				"postgres: request id %q changed hands during the enqueue; retry", req)
		}
		return 0, false, q.store.fail(ctx, "enqueue in transaction", err)
	}
	return seq, true, nil
}

// CompleteTx completes the lease token inside the caller's transaction
// tx, so that a handler's own writes and the completion commit together
// (effectively-once processing): if tx rolls back, the lease is still live
// and the item is completed by nobody. It is fenced as Complete is: the
// token must name the item's live lease (same attempt and lease id, not
// expired), or it is ErrUnknownToken and tx is left as it was, to roll
// back or go on. The item's row is locked by tx until it ends, so a
// heartbeat, a fail or an expiry of the same lease waits for it.
//
// It has EnqueueTx's cost: the counter row is held from CompleteTx until
// the caller commits; call it last and commit promptly.
func (q *Queue) CompleteTx(ctx context.Context, tx pgx.Tx, token resourcelease.OwnershipToken) error {
	if tx == nil {
		return invalidArgument("CompleteTx: tx is nil")
	}
	if err := tokenError(&token); err != nil {
		return err
	}
	if err := q.checkOpen("complete in transaction"); err != nil {
		return err
	}
	now := q.store.nowArg()
	rows, err := tx.Query(ctx, q.sql.lockItems, now, []int64{token.SequenceID})
	if err != nil {
		return q.store.fail(ctx, "complete in transaction", err)
	}
	var row *itemRow
	var live bool
	for rows.Next() {
		if row, err = scanItem(rows, &live); err != nil {
			rows.Close()
			return q.store.fail(ctx, "complete in transaction", err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return q.store.fail(ctx, "complete in transaction", err)
	}
	if row == nil || !live || row.state != stateLeased || row.token() != token {
		return resourcelease.ErrUnknownToken
	}
	if _, err := tx.Exec(ctx, q.sql.complete, []int64{token.SequenceID}); err != nil {
		return q.store.fail(ctx, "complete in transaction", err)
	}
	var l changeLog
	l.moved(stateLeased, "")
	p := row.pendingItem()
	l.add(resourcelease.Change{
		Kind: resourcelease.ChangeCompleted, Item: &p, Token: token, PeerID: deref(row.owner), LeasedAt: utc(row.leasedAt),
	}, 0)
	note := ""
	if q.cfg.Capacity > 0 {
		note = "s"
	}
	_, err = q.finishTx(ctx, tx, now, &l, &finalInput{}, note, "complete in transaction")
	return err
}

// finishTx is the last statement of a mutation in a caller's transaction:
// it takes the counter row, numbers the changes and writes their events,
// sends the notification (delivered at commit) and runs the CommitHook in
// tx.
func (q *Queue) finishTx(ctx context.Context, tx pgx.Tx, now any, l *changeLog, f *finalInput, note, name string) (finalRow, error) {
	var fr finalRow
	if err := fr.scan(tx.QueryRow(ctx, q.sql.final, finalArgs(now, l, f, 0)...)); err != nil {
		return fr, q.store.fail(ctx, name, err)
	}
	committed := l.number(fr.firstSeq, fr.firstEv, fr.after, fr.ts)
	if note != "" {
		if _, err := tx.Exec(ctx, q.sql.notify, q.channel, note+":"+txNotifyTag); err != nil {
			return fr, q.store.fail(ctx, name, err)
		}
	}
	if hook := q.cfg.CommitHook; hook != nil {
		if err := hook(ctx, tx, eventsOf(committed)); err != nil {
			return fr, resourcelease.AsError(err)
		}
	}
	return fr, nil
}
