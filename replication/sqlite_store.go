package replication

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Statement kinds of the multi-row statement cache.
const (
	stmtEvents = iota
	stmtItems
	stmtDeletes
	stmtDedupe
	stmtKinds
)

// Rows per statement: one multi-row statement per chunk keeps cgo calls and
// statement executions per transaction small and constant, and stays far
// below SQLite's bound-parameter limit.
var chunkRows = [stmtKinds]int{stmtEvents: 256, stmtItems: 64, stmtDeletes: 256, stmtDedupe: 256}

// rowOp is the net effect of a batch on one queue_items row.
type rowOp struct {
	seq   int64
	del   bool
	fresh bool // the row did not exist before the batch (enqueued/restored in it)
	state int
	item  *resourcelease.PendingItem
	token resourcelease.OwnershipToken // the live lease (leased)
	peer  string
	at    time.Time                // leasedAt (leased) or deadLetteredAt (dead)
	err   *resourcelease.ErrorInfo // dead-letter reason
}

type dedupeRow struct {
	requestID string
	seq       int64
	seenAt    time.Time
}

// sqliteStore is the SQLiteReplicator's backend. Its fields below the reads
// are owned by the writer goroutine (commit) and need no lock.
type sqliteStore struct {
	sqliteReads
	retention int64 // -1: keep all
	pin       func() int64

	stmts [stmtKinds]map[int]*sql.Stmt
	meta  *sql.Stmt // next_sequence_id update

	nextItemSeq   int64 // next_sequence_id as committed
	trimmedTo     int64 // events at or below this were deleted
	lastDedupeCut time.Time

	// Scratch, reused across commits.
	buf    []byte
	args   []any
	used   int // how much of args the current commit filled, to clear after
	ops    []rowOp
	opIdx  map[int64]int
	dedupe []dedupeRow
	dels   []int64
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
	}
	st, err := s.db.PrepareContext(ctx, b.String())
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
func (s *sqliteStore) execChunks(ctx context.Context, tx *sql.Tx, kind, n, perRow int, args []any) error {
	for done := 0; done < n; {
		rows := min(n-done, chunkRows[kind])
		st, err := s.stmt(ctx, kind, rows)
		if err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, st).ExecContext(ctx, args[done*perRow:(done+rows)*perRow]...); err != nil {
			return err
		}
		done += rows
	}
	return nil
}

// commit implements backend: the batch's events and the net effect of its
// changes on the queue tables, in one transaction.
func (s *sqliteStore) commit(ctx context.Context, entries []*entry) (err error) {
	defer func() {
		clear(s.args[:s.used]) // drop references to the batch's values
		s.used = 0
	}()
	if err := s.collect(entries); err != nil {
		return storageError(s.path, "apply change", err)
	}
	tx, err := s.db.BeginTx(ctx, nil) // _txlock=immediate: the write lock, now
	if err != nil {
		return storageError(s.path, "begin", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	stage := "insert events"
	if err = s.insertEvents(ctx, tx, entries); err != nil {
		return storageError(s.path, stage, err)
	}
	stage = "write queue state"
	if err = s.writeState(ctx, tx); err != nil {
		return storageError(s.path, stage, err)
	}
	next := s.nextItemSeq
	for i := range s.ops {
		if !s.ops[i].del {
			next = max(next, s.ops[i].seq+1)
		}
	}
	for _, d := range s.dedupe {
		next = max(next, d.seq+1)
	}
	if next > s.nextItemSeq {
		// Completed items lose their row, so the next id is kept on its own.
		stage = "write next sequence id"
		if _, err = tx.StmtContext(ctx, s.meta).ExecContext(ctx, next, next); err != nil {
			return storageError(s.path, stage, err)
		}
	}
	last := entries[len(entries)-1].event.SequenceNumber
	trimTo, cut, err := s.trim(ctx, tx, last)
	if err != nil {
		return storageError(s.path, "trim", err)
	}
	if err = tx.Commit(); err != nil {
		return storageError(s.path, "commit", err)
	}
	s.nextItemSeq = next
	s.trimmedTo = trimTo
	s.lastDedupeCut = cut
	return nil
}

func (s *sqliteStore) insertEvents(ctx context.Context, tx *sql.Tx, entries []*entry) error {
	args := s.args[:0]
	for _, e := range entries {
		s.buf = appendEventJSON(s.buf[:0], &e.event)
		args = append(args, e.event.SequenceNumber, string(e.event.EventType), string(s.buf))
	}
	s.keep(args)
	return s.execChunks(ctx, tx, stmtEvents, len(entries), 3, args)
}

// collect folds the batch's changes into their net effect per item row:
// later changes of an item replace earlier ones, and an item both created
// and deleted within the batch needs no write at all.
func (s *sqliteStore) collect(entries []*entry) error {
	s.ops = s.ops[:0]
	clear(s.opIdx)
	s.dedupe = s.dedupe[:0]
	for _, e := range entries {
		c := e.change
		switch c.Kind {
		case resourcelease.ChangeEnqueued:
			if c.Item == nil {
				return fmt.Errorf("event %d: %v change without an item", e.event.SequenceNumber, c.Kind)
			}
			s.set(rowOp{seq: c.Item.SequenceID, state: statePending, item: c.Item}, true)
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
			s.set(rowOp{seq: c.Item.SequenceID, state: stateDead, item: c.Item, at: c.At, err: c.Error}, false)
		case resourcelease.ChangeDrained:
			for i := range c.Items {
				s.set(rowOp{seq: c.Items[i].SequenceID, del: true}, false)
			}
		case resourcelease.ChangeRestored:
			for i := range c.Items {
				s.set(rowOp{seq: c.Items[i].SequenceID, state: statePending, item: &c.Items[i]}, true)
			}
		case resourcelease.ChangeRedriven:
			for i := range c.Items {
				s.set(rowOp{seq: c.Items[i].SequenceID, state: statePending, item: &c.Items[i]}, false)
			}
		case resourcelease.ChangePurged:
			for _, seq := range c.SequenceIDs {
				s.set(rowOp{seq: seq, del: true}, false)
			}
		default:
			return fmt.Errorf("event %d: unknown change kind %d", e.event.SequenceNumber, c.Kind)
		}
	}
	return nil
}

// set records op as the net effect on its row; fresh says whether op creates
// the row, which only counts if it is the row's first change in the batch.
func (s *sqliteStore) set(op rowOp, fresh bool) {
	if i, ok := s.opIdx[op.seq]; ok {
		op.fresh = s.ops[i].fresh
		s.ops[i] = op
		return
	}
	op.fresh = fresh
	s.opIdx[op.seq] = len(s.ops)
	s.ops = append(s.ops, op)
}

func (s *sqliteStore) writeState(ctx context.Context, tx *sql.Tx) error {
	args := s.args[:0]
	dels := s.dels[:0]
	n := 0
	for i := range s.ops {
		op := &s.ops[i]
		switch {
		case op.del && op.fresh: // created and deleted in this batch: nothing to write
		case op.del:
			dels = append(dels, op.seq)
		default:
			args = s.appendItemArgs(args, op)
			n++
		}
	}
	s.dels = dels
	s.keep(args)
	if err := s.execChunks(ctx, tx, stmtItems, n, itemColumnCount, args); err != nil {
		return err
	}
	if len(dels) > 0 {
		args = args[:0]
		for _, seq := range dels {
			args = append(args, seq)
		}
		s.keep(args)
		if err := s.execChunks(ctx, tx, stmtDeletes, len(dels), 1, args); err != nil {
			return err
		}
	}
	if len(s.dedupe) > 0 {
		args = args[:0]
		for _, d := range s.dedupe {
			args = append(args, d.requestID, d.seq, d.seenAt.UnixNano())
		}
		s.keep(args)
		if err := s.execChunks(ctx, tx, stmtDedupe, len(s.dedupe), 3, args); err != nil {
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
	it := op.item
	p := &it.Payload
	var attrs, reqID, readyAt, lastErr, lastCode, lastAttempt, lastLease any
	var leaseAttempt, leaseID, peer, leasedAt, deadAt, deadReason, deadCode any
	if len(p.Attributes) > 0 {
		attrs = string(appendStringMapJSON(s.buf[:0], p.Attributes))
	}
	if p.RequestID != "" {
		reqID = p.RequestID
	}
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
		deadReason = ""
		if op.err != nil {
			deadReason = op.err.Message
			if op.err.Code != "" {
				deadCode = op.err.Code
			}
		}
	}
	var body any
	if p.Body != nil {
		body = p.Body
	}
	return append(args, op.seq, int64(op.state), p.ResourceType, p.ResourceID, p.PartitionKey,
		p.PayloadEncoding, body, attrs, reqID, int64(it.Attempt), nanos(it.EnqueuedAt), readyAt,
		lastErr, lastCode, lastAttempt, lastLease, leaseAttempt, leaseID, peer, leasedAt,
		deadAt, deadReason, deadCode)
}

// trimStep is the most events deleted by one trim, to keep commits short.
const trimStep = 4096

// trim deletes, within the commit, the events beyond the retention that every
// sink has applied, and the dedupe rows older than the window. Both run only
// now and then, so their cost is spread thin. It returns the new trim marks.
func (s *sqliteStore) trim(ctx context.Context, tx *sql.Tx, last int64) (int64, time.Time, error) {
	trimmedTo, cut := s.trimmedTo, s.lastDedupeCut
	if s.retention > 0 {
		target := last - s.retention
		if target-trimmedTo >= min(max(s.retention/16, 1), trimStep) {
			target = min(target, s.pin(), trimmedTo+trimStep)
			if target > trimmedTo {
				if _, err := tx.ExecContext(ctx, `DELETE FROM replication_events WHERE seq <= ?`, target); err != nil {
					return 0, cut, err
				}
				trimmedTo = target
			}
		}
	}
	if s.dedupeWindow > 0 {
		now := s.clock.Now()
		if now.Sub(cut) >= max(s.dedupeWindow/8, time.Second) {
			if _, err := tx.ExecContext(ctx, `DELETE FROM queue_dedupe WHERE seen_at <= ?`, now.Add(-s.dedupeWindow).UnixNano()); err != nil {
				return 0, cut, err
			}
			cut = now
		}
	}
	return trimmedTo, cut, nil
}

// close implements backend.
func (s *sqliteStore) close() error {
	var first error
	for _, m := range s.stmts {
		for _, st := range m {
			if err := st.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	if s.meta != nil {
		if err := s.meta.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
