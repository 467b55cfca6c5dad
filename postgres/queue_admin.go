package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// QueueStats are the counts of the counter row, with delayed items (waiting
// for a requeue delay) apart from those ready now.
type QueueStats struct {
	Ready, Delayed, Active, DeadLetters int
}

// Stats implements the queue contract: the counts from the counter row
// (one row read, never count(*)). PendingCount is ready and delayed items
// together, as the in-memory engine counts them.
func (q *Queue) Stats(ctx context.Context) (resourcelease.Stats, error) {
	c, err := q.readCounts(ctx)
	return c.stats(), err
}

// QueueStats returns the counts with delayed items apart.
func (q *Queue) QueueStats(ctx context.Context) (QueueStats, error) {
	c, err := q.readCounts(ctx)
	return QueueStats{Ready: int(c.ready), Delayed: int(c.delayed), Active: int(c.active), DeadLetters: int(c.dead)}, err
}

func (q *Queue) readCounts(ctx context.Context) (counts, error) {
	if err := q.checkOpen("stats"); err != nil {
		return counts{}, err
	}
	var c counts
	var ts time.Time
	if err := q.store.pool.QueryRow(ctx, q.sql.counts, q.store.nowArg()).Scan(&ts, &c.ready, &c.delayed, &c.active, &c.dead, new(int64), &c.paused); err != nil {
		return counts{}, q.store.fail(ctx, "stats", err)
	}
	return c, nil
}

func (q *Queue) checkOpen(op string) error {
	if q.isClosed() {
		return resourcelease.ErrClosed
	}
	return q.store.checkOpen(op)
}

// DeadLetters implements the queue contract: up to limit dead letters, in
// the order they were dead-lettered (limit <= 0: all).
func (q *Queue) DeadLetters(ctx context.Context, limit int) ([]resourcelease.DeadLetter, error) {
	if err := q.checkOpen("dead letters"); err != nil {
		return nil, err
	}
	var lim any
	if limit > 0 {
		lim = limit
	}
	rows, err := q.store.pool.Query(ctx, q.sql.deadList, lim)
	if err != nil {
		return nil, q.store.fail(ctx, "dead letters", err)
	}
	defer rows.Close()
	var out []resourcelease.DeadLetter
	for rows.Next() {
		r, err := scanItem(rows)
		if err != nil {
			return nil, q.store.fail(ctx, "dead letters", err)
		}
		out = append(out, r.deadLetter())
	}
	if err := rows.Err(); err != nil {
		return nil, q.store.fail(ctx, "dead letters", err)
	}
	return out, nil
}

// adminTx runs one of the rare operations (drain, restore, redrive, purge)
// in a transaction of its own, beside the writer's: it takes the counter
// row last like every mutation, so it is serialized with them as another
// dispatcher's would be. body locks and changes rows and logs the changes;
// the final statement numbers them and COMMIT follows in the same round
// trip. It returns the counts after the commit.
func (q *Queue) adminTx(ctx context.Context, name string, body func(c *pgx.Conn, now any, ts time.Time, l *changeLog) error) (counts, error) {
	if err := q.checkOpen(name); err != nil {
		return counts{}, err
	}
	if err := ctxErr(ctx); err != nil {
		return counts{}, err
	}
	conn, err := q.store.pool.Acquire(ctx)
	if err != nil {
		return counts{}, q.store.fail(ctx, name, err)
	}
	defer conn.Release()
	c := conn.Conn()
	now := q.store.nowArg()
	var before counts
	var ts time.Time
	var p pgx.Batch
	p.Queue("BEGIN")
	p.Queue(q.sql.counts, now)
	err = q.pipeline(ctx, c, &p, func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		return br.QueryRow().Scan(&ts, &before.ready, &before.delayed, &before.active, &before.dead, new(int64), &before.paused)
	})
	if err != nil {
		rollback(c)
		return counts{}, err
	}
	var l changeLog
	if err := body(c, now, ts.UTC(), &l); err != nil {
		rollback(c)
		return counts{}, err
	}
	if len(l.changes) == 0 {
		rollback(c)
		return before, nil
	}
	var fr finalRow
	var p2 pgx.Batch
	p2.Queue(setGenericPlans)
	keys := q.queueFinal(&p2, now, &l, finalArgs(now, &l, &finalInput{}, 0), q.cfg.CommitHook != nil)
	leasable := false
	note := ""
	if l.madeReady || l.unserved() {
		note += "r"
	}
	if l.freed {
		note += "s"
	}
	if note != "" {
		p2.Queue(q.sql.notify, q.channel, note+":"+q.instance)
	}
	if q.cfg.CommitHook == nil {
		p2.Queue("COMMIT")
	}
	err = q.pipeline(ctx, c, &p2, func(br pgx.BatchResults) error {
		for i := range p2.QueuedQueries {
			switch sql := p2.QueuedQueries[i].SQL; {
			case sql == q.sql.final:
				if err := fr.scan(br.QueryRow()); err != nil {
					return err
				}
			case q.parted && sql == q.psql.update:
				ok, err := q.partitionsDone(br, keys, &l)
				if err != nil {
					return err
				}
				leasable = ok
			default:
				if _, err := br.Exec(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		rollback(c)
		return counts{}, err
	}
	committed := l.number(fr.firstSeq, fr.firstEv, fr.after, fr.ts)
	if hook := q.cfg.CommitHook; hook != nil {
		if err := hook(ctx, connTx{c}, eventsOf(committed)); err != nil {
			rollback(c)
			return counts{}, resourcelease.AsError(err)
		}
		if _, err := c.Exec(ctx, "COMMIT"); err != nil {
			rollback(c)
			return counts{}, q.store.fail(ctx, name, err)
		}
	}
	q.noteSeq(committed[len(committed)-1].Event.SequenceNumber)
	q.committedCounts(fr.after, fr.firstEv+int64(len(committed)), 0, 0)
	q.mu.Lock()
	q.serveWaiters = q.serveWaiters || l.madeReady || leasable
	q.serveFull = q.serveFull || l.freed
	q.mu.Unlock()
	q.wake()
	return fr.after, nil
}

func (q *Queue) noteSeq(seq int64) {
	for {
		old := q.lastSeq.Load()
		if old >= seq || q.lastSeq.CompareAndSwap(old, seq) {
			return
		}
	}
}

func queryRows(ctx context.Context, c *pgx.Conn, sql string, args ...any) ([]*itemRow, error) {
	rows, err := c.Query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*itemRow
	for rows.Next() {
		r, err := scanItem(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// DrainN implements the queue contract: it removes and returns the oldest
// pending items (ready or delayed, by sequence id; leases are untouched):
// at most maxItems, and no more than fit in about maxBytes of JSON, but at
// least one when any is pending (a limit <= 0 is no limit). more reports
// whether pending items remain. Items that another transaction has locked
// at that instant (being leased) are skipped.
func (q *Queue) DrainN(ctx context.Context, maxItems, maxBytes int) ([]resourcelease.PendingItem, bool, error) {
	var items []resourcelease.PendingItem
	after, err := q.adminTx(ctx, "drain", func(c *pgx.Conn, now any, ts time.Time, l *changeLog) error {
		var lim any
		if maxItems > 0 {
			lim = maxItems
		}
		var rows []*itemRow
		var err error
		if maxBytes > 0 {
			rows, err = queryRows(ctx, c, q.sql.drainSized, lim, maxBytes)
		} else {
			rows, err = queryRows(ctx, c, q.sql.drain, lim)
		}
		if err != nil {
			return q.store.fail(ctx, "drain", err)
		}
		slices.SortFunc(rows, func(a, b *itemRow) int { return int(a.seq - b.seq) })
		for _, r := range rows {
			l.moved(r.state, "")
			if q.parted {
				l.touch(r.item.PartitionKey, false)
			}
			items = append(items, r.pendingItem())
		}
		if len(items) > 0 {
			l.add(resourcelease.Change{Kind: resourcelease.ChangeDrained, Items: items, PeerID: resourcelease.CallInfoFrom(ctx).Caller}, 0)
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return items, after.ready+after.delayed > 0, nil
}

// Restore implements the queue contract: it puts drained items back,
// keeping their sequence ids, attempts, enqueue times and last errors, all
// or nothing. A sequence id already in the queue is already-exists. It is
// not bound by capacity (refusing it would lose the drained work). The
// next sequence id moves past the restored ids first, in a transaction of
// its own, so a new enqueue can never be given one of them.
func (q *Queue) Restore(ctx context.Context, items []resourcelease.PendingItem) (int, error) {
	batch := make(map[int64]bool, len(items))
	maxSeq := int64(0)
	for i := range items {
		p := &items[i]
		err := p.Payload.Validate()
		if err == nil {
			err = checkItemText(&p.Payload)
		}
		if err == nil && p.LastError != nil {
			if textProblem(p.LastError.Message) != "" || textProblem(p.LastError.Code) != "" {
				err = invalidArgument("lastError is not valid UTF-8 text")
			}
		}
		if err != nil {
			e := resourcelease.AsError(err)
			return 0, &resourcelease.Error{Status: e.Status, Code: e.Code, Message: fmt.Sprintf("items[%d]: %s", i, e.Message)}
		}
		if p.SequenceID <= 0 {
			return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodePendingItemRequired, "items[%d]: sequenceId must be positive, got %d", i, p.SequenceID)
		}
		if !p.ReadyAt.Before(maxRestoreTime) || !p.Payload.NotBefore.Before(maxRestoreTime) {
			return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodePendingItemRequired, "items[%d]: readyAt and payload.notBefore must be before %d", i, maxRestoreTime.Year())
		}
		if p.Attempt < 0 || p.Attempt > 1<<31-1 {
			return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodePendingItemRequired, "items[%d]: attempt must be between 0 and %d, got %d", i, 1<<31-1, p.Attempt)
		}
		if batch[p.SequenceID] {
			return 0, resourcelease.Errorf(resourcelease.StatusAlreadyExists, resourcelease.CodeDuplicateSequence, "items[%d]: sequenceId %d appears twice", i, p.SequenceID)
		}
		batch[p.SequenceID] = true
		maxSeq = max(maxSeq, p.SequenceID)
	}
	if len(items) == 0 {
		return 0, ctxErr(ctx)
	}
	if err := q.checkOpen("restore"); err != nil {
		return 0, err
	}
	if maxSeq == 1<<63-1 {
		return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodePendingItemRequired, "sequenceId %d leaves no room for new ones", maxSeq)
	}
	if _, err := q.store.pool.Exec(ctx, q.sql.bumpSequence, maxSeq+1); err != nil {
		return 0, q.store.fail(ctx, "restore", err)
	}
	n := 0
	_, err := q.adminTx(ctx, "restore", func(c *pgx.Conn, now any, ts time.Time, l *changeLog) error {
		ids := make([]int64, len(items))
		for i := range items {
			ids[i] = items[i].SequenceID
		}
		var present int64
		err := c.QueryRow(ctx, q.sql.presentIDs, ids).Scan(&present)
		switch {
		case err == nil:
			return resourcelease.Errorf(resourcelease.StatusAlreadyExists, resourcelease.CodeDuplicateSequence, "sequenceId %d is already in the queue", present)
		case !errors.Is(err, pgx.ErrNoRows):
			return q.store.fail(ctx, "restore", err)
		}
		rows, err := queryRows(ctx, c, q.sql.restore, restoreArgs(now, items)...)
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "23505" {
				return resourcelease.Errorf(resourcelease.StatusAlreadyExists, resourcelease.CodeDuplicateSequence, "a restored sequenceId was added to the queue meanwhile: %s", pgErr.Detail)
			}
			return q.store.fail(ctx, "restore", err)
		}
		restored := make([]resourcelease.PendingItem, len(rows))
		for i, r := range rows {
			l.moved("", r.state)
			if q.parted {
				l.touch(r.item.PartitionKey, false)
			}
			restored[i] = r.pendingItem()
		}
		n = len(rows)
		l.add(resourcelease.Change{Kind: resourcelease.ChangeRestored, Items: restored, PeerID: resourcelease.CallInfoFrom(ctx).Caller}, 0)
		for _, r := range rows {
			if r.notBefore != nil {
				q.hintDue(*r.notBefore)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// maxRestoreTime bounds the times a restore takes, as the engine bounds
// them (Unix nanoseconds), so that what one store drains every store
// restores.
var maxRestoreTime = time.Unix(0, 1<<63-1)

func restoreArgs(now any, items []resourcelease.PendingItem) []any {
	n := len(items)
	var (
		seq                  = make([]int64, n)
		rt, rid, pk, enc     = make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		body                 = make([][]byte, n)
		attrs, req, lastErr  = make([]*string, n), make([]*string, n), make([]*string, n)
		attempt, rel, tokAtt = make([]int32, n), make([]int32, n), make([]*int32, n)
		enq, ready, nb       = make([]*time.Time, n), make([]*time.Time, n), make([]*time.Time, n)
		tokLease             = make([]pgtype.UUID, n)
	)
	for i := range items {
		p := &items[i]
		it := &p.Payload
		seq[i], rt[i], rid[i], pk[i], enc[i], body[i] = p.SequenceID, it.ResourceType, it.ResourceID, it.PartitionKey, it.PayloadEncoding, it.Body
		if it.Attributes != nil {
			attrs[i] = jsonText(it.Attributes)
		}
		if it.RequestID != "" {
			r := it.RequestID
			req[i] = &r
		}
		lastErr[i] = errorJSON(p.LastError)
		attempt[i], rel[i] = int32(max(p.Attempt, 1)), int32(releasesOf(p))
		if !p.EnqueuedAt.IsZero() {
			t := p.EnqueuedAt
			enq[i] = &t
		}
		if !p.ReadyAt.IsZero() {
			t := p.ReadyAt
			ready[i] = &t
		}
		if !it.NotBefore.IsZero() {
			t := it.NotBefore
			nb[i] = &t
		}
		if t := p.LastOwnershipToken; t != nil && !t.IsZero() {
			a := int32(t.Attempt)
			tokAtt[i], tokLease[i] = &a, pgUUID(t.LeaseID)
		}
	}
	return []any{now, seq, rt, rid, pk, enc, body, attrs, req, attempt, rel, enq, ready, lastErr, tokAtt, tokLease, nb}
}

func checkSelection(sel resourcelease.DeadLetterSelection, verb string) error {
	switch {
	case sel.All && len(sel.SequenceIDs) > 0:
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired, "%s: give sequenceIds or all, not both", verb)
	case !sel.All && len(sel.SequenceIDs) == 0:
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired, "%s needs sequenceIds, or all:true for every dead letter", verb)
	}
	return nil
}

// takeDead locks the selected dead letters, in sequence id order.
func (q *Queue) takeDead(ctx context.Context, c *pgx.Conn, sel resourcelease.DeadLetterSelection, name string) ([]*itemRow, error) {
	var rows []*itemRow
	var err error
	if sel.All {
		rows, err = queryRows(ctx, c, q.sql.deadLockAll)
	} else {
		// By key alone, as the writer locks leased rows (see lockItems):
		// without sequential scans the one plan left is the primary key's.
		if _, err := c.Exec(ctx, setNoSeqScans); err != nil {
			return nil, q.store.fail(ctx, name, err)
		}
		rows, err = queryRows(ctx, c, q.sql.deadLock, sel.SequenceIDs)
		if err == nil {
			_, err = c.Exec(ctx, setSeqScans)
		}
	}
	if err != nil {
		return nil, q.store.fail(ctx, name, err)
	}
	return rows, nil
}

// Redrive implements the queue contract: the selected dead letters are
// pending again with attempt 1; unknown ids are ignored.
func (q *Queue) Redrive(ctx context.Context, sel resourcelease.DeadLetterSelection) (int, error) {
	if err := checkSelection(sel, "redrive"); err != nil {
		return 0, err
	}
	n := 0
	_, err := q.adminTx(ctx, "redrive", func(c *pgx.Conn, now any, ts time.Time, l *changeLog) error {
		rows, err := q.takeDead(ctx, c, sel, "redrive")
		if err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]int64, len(rows))
		items := make([]resourcelease.PendingItem, len(rows))
		for i, r := range rows {
			ids[i] = r.seq
			r.state, r.attempt, r.releases, r.notBefore, r.deadAt, r.reason, r.reasonCode = statePending, 1, 0, nil, nil, nil, nil
			items[i] = r.pendingItem()
			l.moved(stateDead, statePending)
			if q.parted {
				l.touch(r.item.PartitionKey, false)
			}
		}
		if _, err := c.Exec(ctx, q.sql.redrive, ids); err != nil {
			return q.store.fail(ctx, "redrive", err)
		}
		n = len(rows)
		l.add(resourcelease.Change{Kind: resourcelease.ChangeRedriven, Items: items, PeerID: resourcelease.CallInfoFrom(ctx).Caller}, 0)
		return nil
	})
	return n, err
}

// Purge implements the queue contract: the selected dead letters are
// deleted; unknown ids are ignored.
func (q *Queue) Purge(ctx context.Context, sel resourcelease.DeadLetterSelection) (int, error) {
	if err := checkSelection(sel, "purge"); err != nil {
		return 0, err
	}
	n := 0
	_, err := q.adminTx(ctx, "purge", func(c *pgx.Conn, now any, ts time.Time, l *changeLog) error {
		rows, err := q.takeDead(ctx, c, sel, "purge")
		if err != nil || len(rows) == 0 {
			return err
		}
		ids := make([]int64, len(rows))
		for i, r := range rows {
			ids[i] = r.seq
			l.moved(stateDead, "")
		}
		if _, err := c.Exec(ctx, q.sql.purge, ids); err != nil {
			return q.store.fail(ctx, "purge", err)
		}
		n = len(rows)
		l.add(resourcelease.Change{Kind: resourcelease.ChangePurged, SequenceIDs: ids, PeerID: resourcelease.CallInfoFrom(ctx).Caller}, 0)
		return nil
	})
	return n, err
}
