package replication

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/internal/jsonappend"
	"github.com/leasemesh/leasemesh/internal/sqlitewal"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Statement kinds of the multi-row statement cache.
const (
	stmtEvents = iota
	stmtItems
	stmtDeletes
	stmtDedupe
	stmtUpdates
	stmtKinds
)

// Rows per statement: one multi-row statement per chunk keeps cgo calls and
// statement executions per transaction small and constant, and stays far
// below SQLite's bound-parameter limit.
var chunkRows = [stmtKinds]int{stmtEvents: 256, stmtItems: 64, stmtDeletes: 256, stmtDedupe: 256, stmtUpdates: 1}

// rowOp is the net effect of a batch on one queue_items row.
type rowOp struct {
	seq   int64
	del   bool
	fresh bool // the row did not exist before the batch (enqueued/restored in it)
	full  bool // the batch carries the item's payload for the row: write it whole
	state int
	item  *resourcelease.PendingItem
	token resourcelease.OwnershipToken // the live lease (leased)
	peer  string
	at    time.Time                // leasedAt (leased) or deadLetteredAt (dead)
	err   *resourcelease.ErrorInfo // dead-letter reason
	event int64                    // the change's event (dead letters: their order)
}

type dedupeRow struct {
	requestID string
	seq       int64
	seenAt    time.Time
}

// seqReserve is how far ahead of the highest issued queue sequence id the
// persisted next_sequence_id is moved when it must move: one meta write per
// seqReserve enqueues instead of one per batch. Ids are never reused; after a
// restart they may skip up to seqReserve values.
const seqReserve = 1024

// sqliteStore is the SQLiteReplicator's backend. It owns one connection for
// writing, with its statements prepared on it (BEGIN IMMEDIATE and COMMIT
// included), so a commit never re-prepares or waits for the pool, and a
// checkpointer that keeps the WAL short from its own goroutine. Its fields
// below the reads are owned by the writer goroutine and need no lock, but
// for ck and idle.
type sqliteStore struct {
	sqliteReads
	retention int64 // -1: keep all
	pin       func() int64

	conn                                     *sql.Conn
	begin, end, rollback, meta, trimE, trimD *sql.Stmt
	stmts                                    [stmtKinds]map[int]*sql.Stmt

	ck   *sqlitewal.Checkpointer // nil until started, and in tests of the store alone
	idle atomic.Bool             // the writer is waiting for work

	reserved      int64 // next_sequence_id as committed: above every issued id
	trimmedTo     int64 // events at or below this were deleted
	lastDedupeCut time.Time

	// Scratch, reused across commits.
	buf    []byte
	args   []any
	used   int // how much of args the current commit filled, to clear after
	ops    []rowOp
	opIdx  map[int64]int
	dedupe []dedupeRow
	// issued is the highest sequence id the batch created (enqueued or
	// restored), whether or not its row survives the batch: an item created
	// and drained in one batch writes no row, but its id is spent.
	issued int64
	dels   []int64
}

// open takes the writer connection, turns SQLite's automatic checkpoint off
// on it (the checkpointer goroutine runs them: a commit never does), creates
// the schema through it and prepares the fixed statements. Its errors are
// storage errors naming the stage.
func (s *sqliteStore) open(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return s.fail("prepare writer connection", err)
	}
	s.conn = conn
	if _, err := conn.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
		return s.fail("prepare writer connection", err)
	}
	if err := migrate(ctx, conn); err != nil {
		return s.fail("create schema", err)
	}
	for _, p := range []struct {
		st  **sql.Stmt
		sql string
	}{
		{&s.begin, "BEGIN IMMEDIATE"},
		{&s.end, "COMMIT"},
		{&s.rollback, "ROLLBACK"},
		{&s.meta, "UPDATE replication_meta SET value = ? WHERE key = 'next_sequence_id' AND value < ?"},
		{&s.trimE, "DELETE FROM replication_events WHERE seq <= ?"},
		{&s.trimD, "DELETE FROM queue_dedupe WHERE seen_at <= ?"},
	} {
		if *p.st, err = conn.PrepareContext(ctx, p.sql); err != nil {
			return s.fail("prepare writer connection", err)
		}
	}
	return nil
}

// setIdle implements backend: the writer has nothing to commit (or again
// has), which the checkpointer waits for to reset the WAL.
func (s *sqliteStore) setIdle(idle bool) {
	s.idle.Store(idle)
	if idle && s.ck != nil {
		s.ck.Idle()
	}
}

func (s *sqliteStore) stmt(ctx context.Context, kind, rows int) (*sql.Stmt, error) {
	if st, ok := s.stmts[kind][rows]; ok {
		return st, nil
	}
	var b strings.Builder
	switch kind {
	case stmtEvents:
		b.WriteString("INSERT INTO replication_events (seq, event_type, event) VALUES ")
		writePlaceholders(&b, rows, 3)
	case stmtItems:
		b.WriteString("INSERT OR REPLACE INTO queue_items (" + itemColumns + ") VALUES ")
		writePlaceholders(&b, rows, itemColumnCount)
	case stmtDeletes:
		b.WriteString("DELETE FROM queue_items WHERE seq IN (")
		for i := range rows {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('?')
		}
		b.WriteByte(')')
	case stmtDedupe:
		b.WriteString("INSERT OR REPLACE INTO queue_dedupe (request_id, seq, seen_at) VALUES ")
		writePlaceholders(&b, rows, 3)
	case stmtUpdates: // one row: the statement is run per row
		b.WriteString("UPDATE queue_items SET ")
		for i, col := range mutableColumns[1:] {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s = ?%d", col, i+2)
		}
		b.WriteString(" WHERE seq = ?1")
	}
	st, err := s.conn.PrepareContext(ctx, b.String())
	if err != nil {
		return nil, err
	}
	if s.stmts[kind] == nil {
		s.stmts[kind] = make(map[int]*sql.Stmt)
	}
	s.stmts[kind][rows] = st
	return st, nil
}

func writePlaceholders(b *strings.Builder, rows, cols int) {
	for r := range rows {
		if r > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('(')
		for c := range cols {
			if c > 0 {
				b.WriteByte(',')
			}
			b.WriteByte('?')
		}
		b.WriteByte(')')
	}
}

// execChunks runs the kind's multi-row statement over n rows whose arguments
// are args (perRow each), chunk by chunk.
func (s *sqliteStore) execChunks(ctx context.Context, kind, n, perRow int, args []any) error {
	_, err := s.execCount(ctx, kind, n, perRow, args)
	return err
}

// execCount is execChunks returning the number of rows changed.
func (s *sqliteStore) execCount(ctx context.Context, kind, n, perRow int, args []any) (int64, error) {
	total := int64(0)
	for done := 0; done < n; {
		rows := min(n-done, chunkRows[kind])
		st, err := s.stmt(ctx, kind, rows)
		if err != nil {
			return total, err
		}
		res, err := st.ExecContext(ctx, args[done*perRow:(done+rows)*perRow]...)
		if err != nil {
			return total, err
		}
		if c, err := res.RowsAffected(); err == nil {
			total += c
		}
		done += rows
	}
	return total, nil
}

// commit implements backend: the batch's events and the net effect of its
// changes on the queue tables, in one transaction.
func (s *sqliteStore) commit(ctx context.Context, entries []*entry) (err error) {
	defer func() {
		clear(s.args[:s.used]) // drop references to the batch's values
		s.used = 0
	}()
	if err := s.collect(entries); err != nil {
		return storageError(s.path, stageApply, err)
	}
	if s.ck != nil {
		// The transaction is the writer's turn: a reset of the WAL waits for
		// it, and it for a reset in progress.
		s.ck.BeginWrite()
		defer func() { s.ck.EndWrite(err == nil) }()
	}
	if _, err := s.begin.ExecContext(ctx); err != nil { // the write lock, now
		return storageError(s.path, "begin", err)
	}
	defer func() {
		if err != nil {
			_, _ = s.rollback.ExecContext(context.WithoutCancel(ctx))
		}
	}()
	if err = s.insertEvents(ctx, entries); err != nil {
		return storageError(s.path, "insert events", err)
	}
	if err = s.writeState(ctx); err != nil {
		return storageError(s.path, "write queue state", err)
	}
	reserved := s.reserved
	if high := s.highestSeq(); high >= reserved {
		// Completed items lose their row, so the next id is kept on its own,
		// reserved ahead so that this write is rare.
		reserved = high + 1 + seqReserve
		if _, err = s.meta.ExecContext(ctx, reserved, reserved); err != nil {
			return storageError(s.path, "write next sequence id", err)
		}
	}
	last := entries[len(entries)-1].event.SequenceNumber
	trimTo, cut, err := s.trim(ctx, last)
	if err != nil {
		return storageError(s.path, "trim", err)
	}
	if _, err = s.end.ExecContext(ctx); err != nil {
		return storageError(s.path, "commit", err)
	}
	s.reserved = reserved
	s.trimmedTo = trimTo
	s.lastDedupeCut = cut
	return nil
}

// highestSeq is the highest queue sequence id the batch wrote or issued.
func (s *sqliteStore) highestSeq() int64 {
	high := s.issued
	for i := range s.ops {
		if !s.ops[i].del {
			high = max(high, s.ops[i].seq)
		}
	}
	for _, d := range s.dedupe {
		high = max(high, d.seq)
	}
	return high
}

func (s *sqliteStore) insertEvents(ctx context.Context, entries []*entry) error {
	args := s.args[:0]
	for _, e := range entries {
		s.buf = appendEvent(s.buf[:0], &e.event)
		args = append(args, e.event.SequenceNumber, string(e.event.EventType), append([]byte(nil), s.buf...))
	}
	s.keep(args)
	return s.execChunks(ctx, stmtEvents, len(entries), 3, args)
}

// collect folds the batch's changes into their net effect per item row:
// later changes of an item replace earlier ones, and an item both created
// and deleted within the batch needs no write at all.
func (s *sqliteStore) collect(entries []*entry) error {
	s.ops = s.ops[:0]
	clear(s.opIdx)
	s.dedupe = s.dedupe[:0]
	s.issued = 0
	for _, e := range entries {
		c := e.change
		switch c.Kind {
		case resourcelease.ChangeEnqueued:
			if c.Item == nil {
				return fmt.Errorf("event %d: %v change without an item", e.event.SequenceNumber, c.Kind)
			}
			s.set(rowOp{seq: c.Item.SequenceID, state: statePending, item: c.Item}, true)
			s.issued = max(s.issued, c.Item.SequenceID)
			if c.Item.Payload.RequestID != "" && s.dedupeWindow >= 0 {
				s.dedupe = append(s.dedupe, dedupeRow{c.Item.Payload.RequestID, c.Item.SequenceID, c.At})
			}
		case resourcelease.ChangeLeased:
			if c.Item == nil {
				return fmt.Errorf("event %d: %v change without an item", e.event.SequenceNumber, c.Kind)
			}
			at := c.LeasedAt
			if at.IsZero() {
				at = c.At
			}
			s.set(rowOp{seq: c.Item.SequenceID, state: stateLeased, item: c.Item, token: c.Token, peer: c.PeerID, at: at}, false)
		case resourcelease.ChangeHeartbeat:
			// Not persisted: a restored lease gets a fresh duration anyway.
		case resourcelease.ChangeFailed:
			// Event only: the ChangeDeadLettered that follows moves the row.
		case resourcelease.ChangeCompleted:
			s.set(rowOp{seq: c.Token.SequenceID, del: true}, false)
		case resourcelease.ChangeRequeued, resourcelease.ChangeExpired, resourcelease.ChangeReleased:
			if c.Item == nil {
				return fmt.Errorf("event %d: %v change without an item", e.event.SequenceNumber, c.Kind)
			}
			s.set(rowOp{seq: c.Item.SequenceID, state: statePending, item: c.Item}, false)
		case resourcelease.ChangeDeadLettered:
			if c.Item == nil {
				return fmt.Errorf("event %d: %v change without an item", e.event.SequenceNumber, c.Kind)
			}
			s.set(rowOp{seq: c.Item.SequenceID, state: stateDead, item: c.Item, at: c.At, err: c.Error, event: e.event.SequenceNumber}, false)
		case resourcelease.ChangeDrained:
			for i := range c.Items {
				s.set(rowOp{seq: c.Items[i].SequenceID, del: true}, false)
			}
		case resourcelease.ChangeRestored:
			for i := range c.Items {
				s.set(rowOp{seq: c.Items[i].SequenceID, state: statePending, item: &c.Items[i]}, true)
				s.issued = max(s.issued, c.Items[i].SequenceID)
			}
		case resourcelease.ChangeRedriven:
			for i := range c.Items {
				s.set(rowOp{seq: c.Items[i].SequenceID, state: statePending, item: &c.Items[i]}, false)
			}
		case resourcelease.ChangePurged:
			for _, seq := range c.SequenceIDs {
				s.set(rowOp{seq: seq, del: true}, false)
			}
		case resourcelease.ChangeDeadLetterPurged:
			if c.Item == nil {
				return fmt.Errorf("event %d: %v change without an item", e.event.SequenceNumber, c.Kind)
			}
			s.set(rowOp{seq: c.Item.SequenceID, del: true}, false)
		default:
			return fmt.Errorf("event %d: unknown change kind %d", e.event.SequenceNumber, c.Kind)
		}
	}
	return nil
}

// set records op as the net effect on its row; fresh says whether op creates
// the row, which only counts if it is the row's first change in the batch.
func (s *sqliteStore) set(op rowOp, fresh bool) {
	op.full = fresh
	if i, ok := s.opIdx[op.seq]; ok {
		op.fresh = s.ops[i].fresh
		op.full = op.full || s.ops[i].full
		s.ops[i] = op
		return
	}
	op.fresh = fresh
	s.opIdx[op.seq] = len(s.ops)
	s.ops = append(s.ops, op)
}

func (s *sqliteStore) writeState(ctx context.Context) error {
	// Rows the batch created (or restored) are written whole; rows that
	// existed only have their mutable columns updated, in place, with no
	// payload to bind; rows deleted are deleted. Updates and deletes must each
	// touch exactly the rows they name: anything else means the table and
	// the engine disagree, and the batch fails rather than drift.
	args := s.args[:0]
	n := 0
	for i := range s.ops {
		if op := &s.ops[i]; !op.del && op.full {
			args = s.appendItemArgs(args, op)
			n++
		}
	}
	s.keep(args)
	if err := s.execChunks(ctx, stmtItems, n, itemColumnCount, args); err != nil {
		return err
	}
	args, n = args[:0], 0
	for i := range s.ops {
		if op := &s.ops[i]; !op.del && !op.full {
			args = s.appendMutableArgs(args, op)
			n++
		}
	}
	s.keep(args)
	if updated, err := s.execCount(ctx, stmtUpdates, n, len(mutableColumns), args); err != nil {
		return err
	} else if updated != int64(n) {
		return fmt.Errorf("queue_items is out of step with the queue: updated %d of %d rows", updated, n)
	}
	args, n = args[:0], 0
	for i := range s.ops {
		if op := &s.ops[i]; op.del && !op.fresh {
			args = append(args, op.seq)
			n++
		}
	}
	s.keep(args)
	if deleted, err := s.execCount(ctx, stmtDeletes, n, 1, args); err != nil {
		return err
	} else if deleted != int64(n) {
		return fmt.Errorf("queue_items is out of step with the queue: deleted %d of %d rows", deleted, n)
	}
	if len(s.dedupe) > 0 {
		args = args[:0]
		for _, d := range s.dedupe {
			args = append(args, d.requestID, d.seq, d.seenAt.UnixNano())
		}
		s.keep(args)
		if err := s.execChunks(ctx, stmtDedupe, len(s.dedupe), 3, args); err != nil {
			return err
		}
	}
	return nil
}

// keep makes args (built on s.args) the scratch for the next use and
// remembers how much of it to clear after the commit.
func (s *sqliteStore) keep(args []any) {
	s.args = args
	s.used = max(s.used, len(args))
}

// appendItemArgs appends the itemColumns values of op's row.
func (s *sqliteStore) appendItemArgs(args []any, op *rowOp) []any {
	p := &op.item.Payload
	var attrs, reqID, body any
	if len(p.Attributes) > 0 {
		attrs = string(jsonappend.StringMap(s.buf[:0], p.Attributes))
	}
	if p.RequestID != "" {
		reqID = p.RequestID
	}
	if p.Body != nil {
		body = p.Body
	}
	args = append(args, op.seq, p.ResourceType, p.ResourceID, p.PartitionKey, p.PayloadEncoding,
		body, attrs, reqID, nanos(op.item.EnqueuedAt), nanosOrNil(p.NotBefore))
	return s.appendMutable(args, op)
}

// appendMutableArgs appends the mutableColumns values of op's row.
func (s *sqliteStore) appendMutableArgs(args []any, op *rowOp) []any {
	return s.appendMutable(append(args, op.seq), op)
}

// appendMutable appends the values of mutableColumns[1:]: everything a
// transition can change.
func (s *sqliteStore) appendMutable(args []any, op *rowOp) []any {
	it := op.item
	var readyAt, lastErr, lastCode, lastAttempt, lastLease any
	var leaseAttempt, leaseID, peer, leasedAt, deadAt, deadReason, deadCode, deadEvent any
	readyAt = nanosOrNil(it.ReadyAt)
	if it.LastError != nil {
		lastErr = it.LastError.Message
		if it.LastError.Code != "" {
			lastCode = it.LastError.Code
		}
	}
	if t := it.LastOwnershipToken; t != nil {
		lastAttempt = int64(t.Attempt)
		lastLease = append([]byte(nil), t.LeaseID[:]...)
	}
	switch op.state {
	case stateLeased:
		leaseAttempt = int64(op.token.Attempt)
		leaseID = append([]byte(nil), op.token.LeaseID[:]...)
		peer = op.peer
		leasedAt = nanos(op.at)
	case stateDead:
		deadAt = nanos(op.at)
		deadEvent = op.event
		deadReason = ""
		if op.err != nil {
			deadReason = op.err.Message
			if op.err.Code != "" {
				deadCode = op.err.Code
			}
		}
	}
	return append(args, int64(op.state), int64(it.Attempt), readyAt, lastErr, lastCode, lastAttempt,
		lastLease, leaseAttempt, leaseID, peer, leasedAt, deadAt, deadReason, deadCode, deadEvent, int64(it.Releases))
}

// trimStep is the most events deleted by one trim, to keep commits short.
const trimStep = 4096

// trim deletes, within the commit, the events beyond the retention that every
// sink has applied, and the dedupe rows older than the window. Both run only
// now and then, so their cost is spread thin. It returns the new trim marks.
func (s *sqliteStore) trim(ctx context.Context, last int64) (int64, time.Time, error) {
	trimmedTo, cut := s.trimmedTo, s.lastDedupeCut
	if s.retention > 0 {
		target := last - s.retention
		if target-trimmedTo >= min(max(s.retention/16, 1), trimStep) {
			target = min(target, s.pin(), trimmedTo+trimStep)
			if target > trimmedTo {
				if _, err := s.trimE.ExecContext(ctx, target); err != nil {
					return 0, cut, err
				}
				trimmedTo = target
			}
		}
	}
	if s.dedupeWindow > 0 {
		now := s.clock.Now()
		if now.Sub(cut) >= max(s.dedupeWindow/8, time.Second) {
			if _, err := s.trimD.ExecContext(ctx, now.Add(-s.dedupeWindow).UnixNano()); err != nil {
				return 0, cut, err
			}
			cut = now
		}
	}
	return trimmedTo, cut, nil
}

// close implements backend: it stops the checkpointer, closes the
// statements and gives the writer connection back to the pool with SQLite's
// default checkpoint threshold.
func (s *sqliteStore) close() error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	if s.ck != nil {
		s.ck.Close()
	}
	for _, m := range s.stmts {
		for _, st := range m {
			keep(st.Close())
		}
	}
	for _, st := range []*sql.Stmt{s.begin, s.end, s.rollback, s.meta, s.trimE, s.trimD} {
		if st != nil {
			keep(st.Close())
		}
	}
	if s.conn != nil {
		_, err := s.conn.ExecContext(context.Background(), "PRAGMA wal_autocheckpoint = 1000")
		keep(err)
		keep(s.conn.Close())
	}
	return first
}
