package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Limits of ReadEvents, as the replication package's readers have them.
const (
	DefaultReadLimit = 1000
	MaxReadLimit     = 10_000
)

// ReadEvents returns up to limit events of the log with SequenceNumber >
// after, oldest first (limit <= 0 means DefaultReadLimit; capped at
// MaxReadLimit): one indexed query. The log is one gap-free sequence for
// the whole mesh, so every process returns the same events. Events trimmed
// by retention are gone: the result then starts at the oldest retained
// event, and a reader sees the gap (the control plane's replication page
// reports it as trimmed).
func (q *Queue) ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	return q.readEvents(ctx, q.sql.events, after, limit, true)
}

// ReadEventsWithoutBodies is ReadEvents with each event's item body left
// out (attributes and the rest kept): what a reader that never looks at
// bodies (a dispatcher's log tail, behind peer health and the mesh
// metrics) reads, since a body may be MiBs
// (resourcelease.BodylessEventLog).
func (q *Queue) ReadEventsWithoutBodies(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	return q.readEvents(ctx, q.sql.eventsBodyless, after, limit, false)
}

func (q *Queue) readEvents(ctx context.Context, stmt string, after int64, limit int, bodies bool) ([]resourcelease.Event, error) {
	if after < 0 {
		return nil, invalidArgument("ReadEvents: after must not be negative, got %d", after)
	}
	if err := q.checkOpen("read events"); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = DefaultReadLimit
	}
	limit = min(limit, MaxReadLimit)
	rows, err := q.store.pool.Query(ctx, stmt, after, limit)
	if err != nil {
		return nil, q.store.fail(ctx, "read events", err)
	}
	defer rows.Close()
	var out []resourcelease.Event
	for rows.Next() {
		var (
			e                                 resourcelease.Event
			typ                               string
			own, peer, payload, errJSON, meta *string
			body                              []byte
		)
		if err := rows.Scan(&e.SequenceNumber, &typ, &e.Timestamp, &own, &peer, &payload, &errJSON, &meta, &body); err != nil {
			return nil, q.store.fail(ctx, "read events", err)
		}
		e.EventType, e.Timestamp, e.PeerID = resourcelease.EventType(typ), e.Timestamp.UTC(), deref(peer)
		if err := decodeEventParts(&e, own, payload, errJSON, meta); err != nil {
			return nil, q.store.fail(ctx, "read events", fmt.Errorf("event %d: %w", e.SequenceNumber, err))
		}
		switch {
		case e.Payload == nil:
		case !bodies:
			// An event a dispatcher from before migration 0004 wrote while
			// a newer one ran beside it has the body in its payload.
			e.Payload.Body = nil
		case body != nil:
			e.Payload.Body = body
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, q.store.fail(ctx, "read events", err)
	}
	if n := len(out); n > 0 {
		q.noteSeq(out[n-1].SequenceNumber)
	}
	return out, nil
}

func decodeEventParts(e *resourcelease.Event, own, payload, errJSON, meta *string) error {
	if own != nil {
		e.Ownership = &resourcelease.OwnershipToken{}
		if err := json.Unmarshal([]byte(*own), e.Ownership); err != nil {
			return err
		}
	}
	if payload != nil {
		e.Payload = &resourcelease.Item{}
		if err := json.Unmarshal([]byte(*payload), e.Payload); err != nil {
			return err
		}
	}
	if errJSON != nil {
		e.Error = &resourcelease.ErrorInfo{}
		if err := json.Unmarshal([]byte(*errJSON), e.Error); err != nil {
			return err
		}
	}
	e.Metadata = map[string]string{}
	if meta != nil {
		if err := json.Unmarshal([]byte(*meta), &e.Metadata); err != nil {
			return err
		}
	}
	return nil
}

// LastSequence returns the number of the newest event in the log. It
// reads the counter row, with a timeout of a second; when the database
// cannot answer it returns the newest number this process has seen (its
// own commits and reads), so a diagnostics page still renders.
func (q *Queue) LastSequence() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := q.LastSequenceContext(ctx)
	if err != nil {
		return q.lastSeq.Load()
	}
	return n
}

// LastSequenceContext returns the number of the newest event in the log,
// read from the counter row.
func (q *Queue) LastSequenceContext(ctx context.Context) (int64, error) {
	if err := q.checkOpen("last sequence"); err != nil {
		return 0, err
	}
	var last, trimmed int64
	if err := q.store.pool.QueryRow(ctx, q.sql.lastEvent).Scan(&last, &trimmed); err != nil {
		return 0, q.store.fail(ctx, "last sequence", err)
	}
	q.noteSeq(last)
	return last, nil
}

// trim applies the event retention and forgets request ids whose dedupe
// window has passed, a chunk per statement, each its own transaction
// (neither touches the counter row, so neither holds up a commit).
func (q *Queue) trim(ctx context.Context) error {
	if q.cfg.EventRetention > 0 {
		var last, trimmed int64
		if err := q.store.pool.QueryRow(ctx, q.sql.lastEvent).Scan(&last, &trimmed); err != nil {
			return q.store.fail(ctx, "trim events", err)
		}
		q.mu.Lock()
		from := max(q.trimmed, trimmed)
		q.mu.Unlock()
		cut := last - int64(q.cfg.EventRetention)
		for from < cut {
			to := min(cut, from+trimChunk)
			if _, err := q.store.pool.Exec(ctx, q.sql.trimEvents, from, to); err != nil {
				return q.store.fail(ctx, "trim events", err)
			}
			from = to
			q.mu.Lock()
			q.trimmed = max(q.trimmed, from)
			q.mu.Unlock()
		}
	}
	if q.cfg.DedupeWindow > 0 {
		for {
			tag, err := q.store.pool.Exec(ctx, q.sql.trimDedupe, q.store.nowArg(), trimChunk)
			if err != nil {
				return q.store.fail(ctx, "trim dedupe", err)
			}
			if tag.RowsAffected() < trimChunk {
				break
			}
		}
	}
	return nil
}
