package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
)

var (
	_ resourcelease.StateStore      = (*StateStore)(nil)
	_ deterministic.BatchStateStore = (*StateStore)(nil)
)

// StateStore is the deterministic [resourcelease.StateStore] on PostgreSQL:
// the state_records table of a [Store]'s schema, shared by every process
// that opens the schema, so an effect is recorded once mesh-wide. Get it
// from [Store.StateStore]. It is safe for concurrent use; closing the Store
// closes it.
//
// Set is an upsert and TryAdd an INSERT ... ON CONFLICT DO NOTHING, so of
// concurrent TryAdds on one key, from any number of processes, exactly one
// reports true. TryAddMany ([deterministic.BatchStateStore]) is one
// statement in one transaction. Each method has a form that runs in the
// caller's transaction instead ([StateStore.TryAddTx] and the others), so
// an effect commits or rolls back with the mutation that caused it.
//
// Keys are stored as bytes (bytea), so every Go string round-trips,
// including NUL bytes and invalid UTF-8, and keys of any length are
// indexed (by their SHA-256). Kind is text: it must be valid UTF-8 without
// NUL. RecordedAt is kept to the nanosecond (timestamptz holds
// microseconds; a second column the nanoseconds below them) and read back
// in UTC; times outside years 0000-9999 are refused, as SQLite refuses
// them. A nil payload is stored as, and read back as, an empty one.
//
// Errors: the empty key, an invalid kind and out-of-range times are
// invalid-argument, before anything is written; a done ctx returns the
// context's error; the database failing is unavailable with code
// error.resourcelease.storage_unavailable naming the operation and the key.
type StateStore struct {
	store *Store
	table string

	get, set, tryAdd, tryAddMany string
}

func newStateStore(s *Store) *StateStore {
	t := s.table("state_records")
	cols := `key, kind, version, payload, recorded_at, recorded_at_ns`
	return &StateStore{
		store: s,
		table: t,
		get:   `SELECT kind, version, payload, recorded_at, recorded_at_ns FROM ` + t + ` WHERE key_hash = sha256($1::bytea) AND key = $1::bytea`,
		set: `INSERT INTO ` + t + ` (` + cols + `) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (key_hash) DO UPDATE SET kind = excluded.kind, version = excluded.version,
			payload = excluded.payload, recorded_at = excluded.recorded_at, recorded_at_ns = excluded.recorded_at_ns`,
		tryAdd: `INSERT INTO ` + t + ` (` + cols + `) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key_hash) DO NOTHING`,
		// Rows go in in key-hash order, the order of the index entries they
		// lock: two batches that share keys then wait for each other at
		// their first shared key instead of deadlocking. Within one hash
		// the batch order decides, so the first of duplicate keys wins.
		tryAddMany: `INSERT INTO ` + t + ` (` + cols + `)
			SELECT k, kd, v, p, r, ns
			FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::bytea[], $5::timestamptz[], $6::int2[])
				WITH ORDINALITY AS b(k, kd, v, p, r, ns, ord)
			ORDER BY sha256(k), ord
			ON CONFLICT (key_hash) DO NOTHING
			RETURNING key`,
	}
}

// Table returns the quoted, schema-qualified name of the table the records
// live in.
func (s *StateStore) Table() string { return s.table }

// Get returns the record under key and whether there is one.
func (s *StateStore) Get(ctx context.Context, key string) (resourcelease.Record, bool, error) {
	if err := s.store.checkOpen("get"); err != nil {
		return resourcelease.Record{}, false, err
	}
	return s.getOn(ctx, s.store.pool, key)
}

// GetTx is Get inside the caller's transaction tx, which sees its own
// uncommitted writes.
func (s *StateStore) GetTx(ctx context.Context, tx pgx.Tx, key string) (resourcelease.Record, bool, error) {
	return s.getOn(ctx, tx, key)
}

// Set stores rec under key, replacing any record.
func (s *StateStore) Set(ctx context.Context, key string, rec resourcelease.Record) error {
	if err := s.store.checkOpen("set"); err != nil {
		return err
	}
	return s.setOn(ctx, s.store.pool, key, rec)
}

// SetTx is Set inside the caller's transaction tx: the record is written
// when tx commits and not at all if it rolls back. An error from the
// database aborts tx, as every failed statement does in PostgreSQL.
func (s *StateStore) SetTx(ctx context.Context, tx pgx.Tx, key string, rec resourcelease.Record) error {
	return s.setOn(ctx, tx, key, rec)
}

// TryAdd stores rec under key only if key is absent, and reports whether it
// did. Of concurrent TryAdds on one key exactly one reports true.
func (s *StateStore) TryAdd(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
	if err := s.store.checkOpen("try-add"); err != nil {
		return false, err
	}
	return s.tryAddOn(ctx, s.store.pool, key, rec)
}

// TryAddTx is TryAdd inside the caller's transaction tx. While tx is open,
// a concurrent TryAdd of the same key waits for it: it reports false if tx
// commits and adds its own record if tx rolls back, so the once-only
// guarantee holds across transactions. An error from the database aborts
// tx.
func (s *StateStore) TryAddTx(ctx context.Context, tx pgx.Tx, key string, rec resourcelease.Record) (bool, error) {
	return s.tryAddOn(ctx, tx, key, rec)
}

// TryAddMany stores each of recs whose key is absent, in order, as one
// statement in one transaction; see [deterministic.BatchStateStore]. It is
// all or nothing, and a concurrent reader sees the whole batch or none of
// it.
func (s *StateStore) TryAddMany(ctx context.Context, recs []deterministic.KeyedRecord) ([]bool, error) {
	if err := s.store.checkOpen("try-add-many"); err != nil {
		return nil, err
	}
	// One statement is its own transaction: no BEGIN and COMMIT round trips.
	return s.tryAddManyOn(ctx, s.store.pool, recs)
}

// TryAddManyTx is TryAddMany inside the caller's transaction tx. An error
// from the database aborts tx.
func (s *StateStore) TryAddManyTx(ctx context.Context, tx pgx.Tx, recs []deterministic.KeyedRecord) ([]bool, error) {
	return s.tryAddManyOn(ctx, tx, recs)
}

// querier is what the methods run on: the pool (each statement its own
// transaction) or a caller's pgx.Tx.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (s *StateStore) getOn(ctx context.Context, q querier, key string) (resourcelease.Record, bool, error) {
	if key == "" {
		return resourcelease.Record{}, false, invalidArgument("key is required")
	}
	if err := ctxErr(ctx); err != nil {
		return resourcelease.Record{}, false, err
	}
	var (
		rec resourcelease.Record
		at  time.Time
		ns  int16
	)
	err := q.QueryRow(ctx, s.get, []byte(key)).Scan(&rec.Kind, &rec.Version, &rec.Payload, &at, &ns)
	if errors.Is(err, pgx.ErrNoRows) {
		return resourcelease.Record{}, false, nil
	}
	if err != nil {
		return resourcelease.Record{}, false, s.store.fail(ctx, fmt.Sprintf("get %s from %s", quoteKey(key), s.table), err)
	}
	rec.RecordedAt = at.UTC().Add(time.Duration(ns))
	if rec.Payload == nil {
		rec.Payload = []byte{}
	}
	return rec, true, nil
}

func (s *StateStore) setOn(ctx context.Context, q querier, key string, rec resourcelease.Record) error {
	if problem := recordProblem(key, rec); problem != "" {
		return invalidArgument("%s", problem)
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	at, ns := splitTime(rec.RecordedAt)
	if _, err := q.Exec(ctx, s.set, []byte(key), rec.Kind, rec.Version, payloadOf(rec), at, ns); err != nil {
		return s.store.fail(ctx, fmt.Sprintf("set %s in %s", quoteKey(key), s.table), err)
	}
	return nil
}

func (s *StateStore) tryAddOn(ctx context.Context, q querier, key string, rec resourcelease.Record) (bool, error) {
	if problem := recordProblem(key, rec); problem != "" {
		return false, invalidArgument("%s", problem)
	}
	if err := ctxErr(ctx); err != nil {
		return false, err
	}
	at, ns := splitTime(rec.RecordedAt)
	tag, err := q.Exec(ctx, s.tryAdd, []byte(key), rec.Kind, rec.Version, payloadOf(rec), at, ns)
	if err != nil {
		return false, s.store.fail(ctx, fmt.Sprintf("try-add %s to %s", quoteKey(key), s.table), err)
	}
	return tag.RowsAffected() == 1, nil
}

func (s *StateStore) tryAddManyOn(ctx context.Context, q querier, recs []deterministic.KeyedRecord) ([]bool, error) {
	for i := range recs {
		if problem := recordProblem(recs[i].Key, recs[i].Record); problem != "" {
			return nil, invalidArgument("record %d of %d in the batch: %s", i+1, len(recs), problem)
		}
	}
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	added := make([]bool, len(recs))
	if len(recs) == 0 {
		return added, nil
	}
	var (
		keys     = make([][]byte, len(recs))
		kinds    = make([]string, len(recs))
		versions = make([]int64, len(recs))
		payloads = make([][]byte, len(recs))
		ats      = make([]time.Time, len(recs))
		nss      = make([]int16, len(recs))
		first    = make(map[string]int, len(recs)) // key → index of its first record
	)
	for i := range recs {
		r := &recs[i]
		keys[i], kinds[i], versions[i], payloads[i] = []byte(r.Key), r.Record.Kind, r.Record.Version, payloadOf(r.Record)
		ats[i], nss[i] = splitTime(r.Record.RecordedAt)
		if _, ok := first[r.Key]; !ok {
			first[r.Key] = i
		}
	}
	op := fmt.Sprintf("try-add-many of %d records to %s", len(recs), s.table)
	rows, err := q.Query(ctx, s.tryAddMany, keys, kinds, versions, payloads, ats, nss)
	if err != nil {
		return nil, s.store.fail(ctx, op, err)
	}
	defer rows.Close()
	var key []byte
	for rows.Next() {
		if err := rows.Scan(&key); err != nil {
			return nil, s.store.fail(ctx, op, err)
		}
		i, ok := first[string(key)]
		if !ok {
			return nil, s.store.fail(ctx, op, fmt.Errorf("the database returned key %s, which is not in the batch", quoteKey(string(key))))
		}
		added[i] = true
	}
	if err := rows.Err(); err != nil {
		return nil, s.store.fail(ctx, op, err)
	}
	return added, nil
}

// recordProblem describes why the table cannot hold rec under key, or
// returns "".
func recordProblem(key string, rec resourcelease.Record) string {
	switch {
	case key == "":
		return "key is required"
	case !utf8.ValidString(rec.Kind):
		return fmt.Sprintf("kind %q of %s is not valid UTF-8", rec.Kind, quoteKey(key))
	case containsNUL(rec.Kind):
		return fmt.Sprintf("kind %q of %s contains NUL", rec.Kind, quoteKey(key))
	}
	if y := rec.RecordedAt.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Sprintf("recordedAt %v of %s is outside years 0000-9999", rec.RecordedAt, quoteKey(key))
	}
	return ""
}

// quoteKey quotes key for a message, cut to its first 64 bytes: keys may be
// any length, messages should fit a log line.
func quoteKey(key string) string {
	const max = 64
	if len(key) <= max {
		return strconv.Quote(key)
	}
	return fmt.Sprintf("%q... (%d bytes)", key[:max], len(key))
}

func containsNUL(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return true
		}
	}
	return false
}

// splitTime splits t into the microsecond instant timestamptz holds and
// the nanoseconds below it. (Nanosecond is never negative, whatever the
// year, so the split is exact.)
func splitTime(t time.Time) (time.Time, int16) {
	t = t.UTC()
	ns := t.Nanosecond() % 1000
	return t.Add(-time.Duration(ns)), int16(ns)
}

// payloadOf returns rec's payload, empty rather than nil: pgx binds a nil
// slice as NULL.
func payloadOf(rec resourcelease.Record) []byte {
	if rec.Payload == nil {
		return []byte{}
	}
	return rec.Payload
}
