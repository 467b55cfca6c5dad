package replication

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// sqliteReads are the queries both the replicator and the read-only
// SQLiteLogReader run. None of them writes.
type sqliteReads struct {
	db           *sql.DB
	path         string
	dedupeWindow time.Duration // <0: no dedupe rows
	clock        resourcelease.Clock
}

func (q *sqliteReads) fail(stage string, err error) error {
	if e := ctxErr(err); e != nil {
		return e
	}
	return storageError(q.path, stage, err)
}

// ctxErr keeps a context's cancellation a cancellation, not a storage failure.
func ctxErr(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return resourcelease.AsError(err)
	}
	return nil
}

// readEvents reads up to limit events with seq > after, oldest first.
func (q *sqliteReads) readEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	rows, err := q.db.QueryContext(ctx, `SELECT seq, event FROM replication_events WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, q.fail("read events", err)
	}
	defer rows.Close()
	out := make([]resourcelease.Event, 0, min(limit, 256))
	var raw []byte
	for rows.Next() {
		var seq int64
		if err := rows.Scan(&seq, &raw); err != nil {
			return nil, q.fail("read events", err)
		}
		ev, err := decodeEvent(seq, raw)
		if err != nil {
			return nil, q.fail("read events", err)
		}
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, q.fail("read events", err)
	}
	return out, nil
}

// lastEventSequence is the newest event's sequence number (0 if none).
func (q *sqliteReads) lastEventSequence(ctx context.Context) (int64, error) {
	var n int64
	if err := q.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM replication_events`).Scan(&n); err != nil {
		return 0, q.fail("read last sequence", err)
	}
	return n, nil
}

// firstEventSequence is the oldest retained event's sequence number (0 if none).
func (q *sqliteReads) firstEventSequence(ctx context.Context) (int64, error) {
	var n int64
	if err := q.db.QueryRowContext(ctx, `SELECT COALESCE(MIN(seq), 0) FROM replication_events`).Scan(&n); err != nil {
		return 0, q.fail("read first sequence", err)
	}
	return n, nil
}

// loadState reads the persisted queue state.
func (q *sqliteReads) loadState(ctx context.Context) (*resourcelease.QueueState, error) {
	st := &resourcelease.QueueState{NextSequenceID: 1}
	if err := q.db.QueryRowContext(ctx, `SELECT value FROM replication_meta WHERE key = 'next_sequence_id'`).Scan(&st.NextSequenceID); err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, q.fail("load state", err)
	}
	if err := q.loadItems(ctx, st); err != nil {
		return nil, q.fail("load queue items", err)
	}
	if q.dedupeWindow >= 0 {
		cutoff := q.clock.Now().Add(-q.dedupeWindow).UnixNano()
		if err := q.loadDedupe(ctx, st, cutoff); err != nil {
			return nil, q.fail("load dedupe", err)
		}
	}
	return st, nil
}

func (q *sqliteReads) loadItems(ctx context.Context, st *resourcelease.QueueState) error {
	// Size the slices first: at a million items, growing them by doubling
	// costs more than the count.
	var pending, leased, dead int
	if err := q.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(state = 0), 0), COALESCE(SUM(state = 1), 0), COALESCE(SUM(state = 2), 0) FROM queue_items`).Scan(&pending, &leased, &dead); err != nil {
		return err
	}
	st.Pending = make([]resourcelease.PendingItem, 0, pending)
	st.Leased = make([]resourcelease.LeasedItem, 0, leased)
	st.DeadLetters = make([]resourcelease.DeadLetter, 0, dead)
	deadOrder := make([]deadKey, 0, dead)
	rows, err := q.db.QueryContext(ctx, `SELECT `+itemColumns+` FROM queue_items ORDER BY seq`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var (
		seq, state, attempt, enqueuedAt                   int64
		notBefore                                         sql.NullInt64
		rtype, rid, pkey, penc                            string
		body, lastLease, leaseID                          []byte
		attrs, reqID, lastErr, lastCode, peer, deadReason sql.NullString
		deadCode                                          sql.NullString
		deadEvent                                         sql.NullInt64
		readyAt, lastAttempt, leaseAttempt                sql.NullInt64
		leasedAt, deadAt                                  sql.NullInt64
		releases                                          int64
	)
	for rows.Next() {
		body, lastLease, leaseID = nil, nil, nil
		if err := rows.Scan(&seq, &rtype, &rid, &pkey, &penc, &body, &attrs, &reqID, &enqueuedAt, &notBefore,
			&state, &attempt, &readyAt, &lastErr, &lastCode, &lastAttempt, &lastLease, &leaseAttempt, &leaseID,
			&peer, &leasedAt, &deadAt, &deadReason, &deadCode, &deadEvent, &releases); err != nil {
			return err
		}
		p := resourcelease.PendingItem{
			Payload: resourcelease.Item{
				ResourceType: rtype, ResourceID: rid, PartitionKey: pkey, PayloadEncoding: penc,
				Body: body, RequestID: reqID.String,
			},
			Attempt:    int(attempt),
			EnqueuedAt: fromNanos(enqueuedAt),
			SequenceID: seq,
			Releases:   int(releases),
		}
		if attrs.Valid {
			if p.Payload.Attributes, err = parseStringMap(attrs.String); err != nil {
				return fmt.Errorf("item %d: attributes: %w", seq, err)
			}
		}
		if readyAt.Valid {
			p.ReadyAt = fromNanos(readyAt.Int64)
		}
		if notBefore.Valid {
			p.Payload.NotBefore = fromNanos(notBefore.Int64)
		}
		if lastErr.Valid {
			p.LastError = &resourcelease.ErrorInfo{Message: lastErr.String, Code: lastCode.String}
		}
		if lastAttempt.Valid {
			t, err := token(seq, lastAttempt.Int64, lastLease)
			if err != nil {
				return err
			}
			p.LastOwnershipToken = &t
		}
		switch state {
		case statePending:
			st.Pending = append(st.Pending, p)
		case stateLeased:
			t, err := token(seq, leaseAttempt.Int64, leaseID)
			if err != nil {
				return err
			}
			st.Leased = append(st.Leased, resourcelease.LeasedItem{
				PendingItem: p, Token: t, PeerID: peer.String, LeasedAt: fromNanos(leasedAt.Int64),
			})
		case stateDead:
			deadOrder = append(deadOrder, deadKey{fromNanos(deadAt.Int64), deadEvent.Int64, len(st.DeadLetters)})
			st.DeadLetters = append(st.DeadLetters, resourcelease.DeadLetter{
				PendingItem: p, DeadLetteredAt: fromNanos(deadAt.Int64), Reason: deadReason.String,
			})
		default:
			return fmt.Errorf("item %d has unknown state %d", seq, state)
		}
		st.NextSequenceID = max(st.NextSequenceID, seq+1)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	// Dead letters in the order they were dead-lettered (the engine keeps
	// that order for ties in DeadLetteredAt).
	slices.SortStableFunc(deadOrder, func(a, b deadKey) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.event, b.event)
	})
	sorted := make([]resourcelease.DeadLetter, len(deadOrder))
	for i, k := range deadOrder {
		sorted[i] = st.DeadLetters[k.index]
	}
	st.DeadLetters = sorted
	return nil
}

// deadKey orders loaded dead letters.
type deadKey struct {
	at    time.Time
	event int64
	index int
}

func token(seq, attempt int64, lease []byte) (resourcelease.OwnershipToken, error) {
	id, err := uuid.FromBytes(lease)
	if err != nil {
		return resourcelease.OwnershipToken{}, fmt.Errorf("item %d: lease id: %w", seq, err)
	}
	return resourcelease.OwnershipToken{SequenceID: seq, Attempt: int(attempt), LeaseID: id}, nil
}

func (q *sqliteReads) loadDedupe(ctx context.Context, st *resourcelease.QueueState, cutoff int64) error {
	rows, err := q.db.QueryContext(ctx, `SELECT request_id, seq, seen_at FROM queue_dedupe WHERE seen_at > ? ORDER BY seen_at`, cutoff)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var d resourcelease.DedupeEntry
		var seen int64
		if err := rows.Scan(&d.RequestID, &d.SequenceID, &seen); err != nil {
			return err
		}
		d.SeenAt = fromNanos(seen)
		st.Dedupe = append(st.Dedupe, d)
		st.NextSequenceID = max(st.NextSequenceID, d.SequenceID+1)
	}
	return rows.Err()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// nanosOrNil is t as Unix nanoseconds, or NULL for the zero time.
func nanosOrNil(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// SQLiteLogReader reads a replication database without writing to it: it
// serves another process (a CLI tail, a diagnostics tool) that opened the
// database read-only while the dispatcher keeps writing it. Create it with
// NewSQLiteLogReader.
type SQLiteLogReader struct {
	q sqliteReads
}

var _ resourcelease.StateLoader = (*SQLiteLogReader)(nil)

// SQLiteReaderOptions configure a SQLiteLogReader.
type SQLiteReaderOptions struct {
	// Path is the database's path, for error messages.
	Path string
	// DedupeWindow bounds the dedupe entries LoadState returns. Defaults to
	// 10 minutes; -1 returns none.
	DedupeWindow time.Duration
	// Clock defaults to resourcelease.SystemClock.
	Clock resourcelease.Clock
}

// NewSQLiteLogReader returns a reader of the replication database db (which
// may be opened read-only). It does not check the schema; a database without
// one reports errors on the first read.
func NewSQLiteLogReader(db *sql.DB, opts SQLiteReaderOptions) (*SQLiteLogReader, error) {
	if db == nil {
		return nil, invalidArg("NewSQLiteLogReader: db is nil")
	}
	if opts.DedupeWindow < -1 {
		return nil, invalidArg("DedupeWindow must be -1 (none), 0 (default) or positive, got %v", opts.DedupeWindow)
	}
	if opts.DedupeWindow == 0 {
		opts.DedupeWindow = resourcelease.DefaultDedupeWindow
	}
	if opts.Clock == nil {
		opts.Clock = resourcelease.SystemClock
	}
	return &SQLiteLogReader{q: sqliteReads{db: db, path: opts.Path, dedupeWindow: opts.DedupeWindow, clock: opts.Clock}}, nil
}

// ReadEvents returns up to limit committed events with SequenceNumber >
// after, oldest first (limit <= 0 means DefaultReadLimit; capped at
// MaxReadLimit). It is one indexed query.
func (r *SQLiteLogReader) ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	if after < 0 {
		return nil, invalidArg("ReadEvents: after must not be negative, got %d", after)
	}
	if limit <= 0 {
		limit = DefaultReadLimit
	}
	return r.q.readEvents(ctx, after, min(limit, MaxReadLimit))
}

// LastSequence returns the newest committed event's sequence number (0 if none).
func (r *SQLiteLogReader) LastSequence(ctx context.Context) (int64, error) {
	return r.q.lastEventSequence(ctx)
}

// LoadState implements resourcelease.StateLoader: the queue state as last
// committed.
func (r *SQLiteLogReader) LoadState(ctx context.Context) (*resourcelease.QueueState, error) {
	return r.q.loadState(ctx)
}
