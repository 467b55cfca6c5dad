package deterministic

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/internal/sqlitewal"
	"github.com/leasemesh/leasemesh/resourcelease"
)

var _ resourcelease.StateStore = (*SQLiteStore)(nil)

// DefaultFileName is the conventional file name of the deterministic store's
// database inside a data directory: <dataDirectory>/deterministic.db.
const DefaultFileName = "deterministic.db"

// DefaultTable is the table SQLiteStore uses when SQLiteConfig.Table is empty.
const DefaultTable = "deterministic_state"

// DefaultCheckpointPages is how many pages a SQLiteStore lets the WAL grow
// by between two of its background checkpoints.
const DefaultCheckpointPages = 1000

// SQLiteConfig configures [NewSQLiteStore]. The zero value is valid.
type SQLiteConfig struct {
	// Table is the table the records live in. It must be a plain SQL
	// identifier: a letter or underscore, then letters, digits or
	// underscores, at most 64 characters, not starting with "sqlite_".
	// Defaults to DefaultTable.
	Table string
	// CheckpointPages is how many pages the WAL may grow by before the
	// store's checkpointer copies it back into the database with a PASSIVE
	// checkpoint, which writes never wait for. Defaults to
	// DefaultCheckpointPages (1000: 4 MiB with 4 KiB pages).
	CheckpointPages int
	// MaxWALPages bounds the WAL: when a checkpoint finds it at MaxWALPages
	// pages or more, the checkpointer resets it the next time no write is in
	// progress; at twice MaxWALPages the next write waits for that reset.
	// At least CheckpointPages; defaults to four times CheckpointPages.
	MaxWALPages int
	// Logger receives checkpoint failures. Defaults to slog.Default().
	Logger *slog.Logger
}

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

func (c SQLiteConfig) withDefaults() (SQLiteConfig, error) {
	if c.Table == "" {
		c.Table = DefaultTable
	}
	if !tableName.MatchString(c.Table) || strings.HasPrefix(strings.ToLower(c.Table), "sqlite_") {
		return c, invalidArgument("sqlite table name %q is not a plain identifier (letters, digits, underscores; at most 64; not sqlite_*)", c.Table)
	}
	switch {
	case c.CheckpointPages < 0:
		return c, invalidArgument("CheckpointPages must not be negative, got %d", c.CheckpointPages)
	case c.MaxWALPages < 0:
		return c, invalidArgument("MaxWALPages must not be negative, got %d", c.MaxWALPages)
	}
	if c.CheckpointPages == 0 {
		c.CheckpointPages = DefaultCheckpointPages
	}
	if c.MaxWALPages == 0 {
		c.MaxWALPages = 4 * c.CheckpointPages
	}
	if c.MaxWALPages < c.CheckpointPages {
		return c, invalidArgument("MaxWALPages %d is below CheckpointPages %d", c.MaxWALPages, c.CheckpointPages)
	}
	return c, nil
}

// SQLiteStore is a [resourcelease.StateStore] kept in one table of a SQLite
// database, so its records survive restarts and can be shared by processes
// that open the same file. It takes a *sql.DB opened by the caller (normally
// with sqlitedb.Open on <dataDirectory>/deterministic.db in WAL mode) and
// imports no driver.
//
// Set is an upsert (INSERT ... ON CONFLICT(key) DO UPDATE) and TryAdd an
// INSERT ... ON CONFLICT(key) DO NOTHING whose affected-row count says whether
// it added the record, so concurrent TryAdds on one key, in one process or
// several, have exactly one winner. Every write is one transaction — a whole
// batch of TryAdds for TryAddMany ([BatchStateStore]) — and is durable when
// the method returns (as durable as the database's synchronous setting makes
// it). The store's writes take turns (a write waits for the one in progress
// in this process rather than for SQLite's lock), and none of them runs a
// WAL checkpoint: each turns SQLite's automatic checkpoint off on its
// connection, and a goroutine of the store's own copies the WAL back with
// checkpoints that writes do not wait for, keeping it bounded (see
// SQLiteConfig.CheckpointPages and MaxWALPages, and the replication
// package's doc, "WAL checkpoints", which explains the tradeoff).
//
// RecordedAt is stored in UTC as RFC 3339 text with nine fractional digits and
// read back equal (==) to rec.RecordedAt.UTC(); times outside years 0000-9999
// are refused with an invalid-argument error. Payloads are stored as BLOBs; a
// nil payload is stored as, and read back as, an empty one.
//
// Errors: the empty key and out-of-range times are invalid-argument; a done
// ctx returns the context's error (cancelled or deadline-exceeded); every
// other failure (closed database, read-only or corrupt file, full disk) is an
// unavailable *resourcelease.Error with code
// error.resourcelease.storage_unavailable naming the operation and the key,
// wrapping the driver's error.
//
// A SQLiteStore is safe for concurrent use. Close stops its checkpointer and
// releases its prepared statements; it does not close the *sql.DB, which
// belongs to the caller. The connections the store wrote with keep the
// automatic checkpoint off.
type SQLiteStore struct {
	db     *sql.DB
	table  string
	get    *sql.Stmt
	set    *sql.Stmt
	tryAdd *sql.Stmt
	noAuto *sql.Stmt // PRAGMA wal_autocheckpoint = 0, run in every write transaction

	turn chan struct{}           // capacity 1: held by the write in progress
	ck   *sqlitewal.Checkpointer // nil only while NewSQLiteStore fails

	closed    atomic.Bool // set by Close; TryAddMany checks it, as tx.Stmt would re-prepare a closed statement
	closeOnce sync.Once
	closeErr  error
}

// errStoreClosed is the cause of TryAddMany's error on a closed store.
var errStoreClosed = errors.New("sqlite store is closed")

// NewSQLiteStore creates the store's table in db if it does not exist yet
// (CREATE TABLE IF NOT EXISTS) and prepares the store's statements. A nil db
// or an invalid table name is an invalid-argument error; a database that
// cannot create or read the table is an unavailable error naming the table.
func NewSQLiteStore(ctx context.Context, db *sql.DB, cfg SQLiteConfig) (*SQLiteStore, error) {
	if db == nil {
		return nil, invalidArgument("sqlite store needs a *sql.DB, got nil")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	t := cfg.Table
	schema := `CREATE TABLE IF NOT EXISTS "` + t + `" (
	key         TEXT    NOT NULL PRIMARY KEY,
	kind        TEXT    NOT NULL,
	version     INTEGER NOT NULL,
	payload     BLOB    NOT NULL,
	recorded_at TEXT    NOT NULL
) WITHOUT ROWID`
	if _, err := db.ExecContext(ctx, schema); err != nil {
		return nil, sqliteError(ctx, "create table "+t, err)
	}
	s := &SQLiteStore{db: db, table: t, turn: make(chan struct{}, 1)}
	for _, p := range []struct {
		dst   **sql.Stmt
		query string
	}{
		{&s.get, `SELECT kind, version, payload, recorded_at FROM "` + t + `" WHERE key = ?`},
		{&s.set, `INSERT INTO "` + t + `" (key, kind, version, payload, recorded_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(key) DO UPDATE SET kind = excluded.kind, version = excluded.version,
			payload = excluded.payload, recorded_at = excluded.recorded_at`},
		{&s.tryAdd, `INSERT INTO "` + t + `" (key, kind, version, payload, recorded_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT(key) DO NOTHING`},
		{&s.noAuto, `PRAGMA wal_autocheckpoint = 0`},
	} {
		stmt, err := db.PrepareContext(ctx, p.query)
		if err != nil {
			s.Close()
			return nil, sqliteError(ctx, "prepare on table "+t, err)
		}
		*p.dst = stmt
	}
	if s.ck, err = sqlitewal.Start(db, sqlitewal.Options{
		Pages: int64(cfg.CheckpointPages), MaxPages: int64(cfg.MaxWALPages),
		Idle: func() bool { return len(s.turn) == 0 }, Logger: cfg.Logger, Path: "table " + t,
	}); err != nil {
		s.Close()
		return nil, invalidArgument("%v", err)
	}
	return s, nil
}

// write runs fn in one write transaction, in the store's turn, on a
// connection whose automatic checkpoint is off. op names the operation in
// errors from beginning and committing; fn names its own.
func (s *SQLiteStore) write(ctx context.Context, op string, fn func(tx *sql.Tx) error) error {
	if s.closed.Load() {
		return sqliteError(ctx, op, errStoreClosed)
	}
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return resourcelease.AsError(ctx.Err())
	}
	defer func() {
		<-s.turn
		s.ck.Idle()
	}()
	committed := false
	s.ck.BeginWrite()
	defer func() { s.ck.EndWrite(committed) }()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return sqliteError(ctx, op+": begin", err)
	}
	if _, err := tx.StmtContext(ctx, s.noAuto).ExecContext(ctx); err != nil {
		_ = tx.Rollback()
		return sqliteError(ctx, op+": turn the automatic checkpoint off", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // the error to report is err; a failed rollback leaves nothing committed either
		return err
	}
	if err := tx.Commit(); err != nil {
		return sqliteError(ctx, op+": commit", err)
	}
	committed = true
	return nil
}

// Table returns the name of the table the store uses.
func (s *SQLiteStore) Table() string { return s.table }

// Get returns the record under key and whether there is one.
func (s *SQLiteStore) Get(ctx context.Context, key string) (resourcelease.Record, bool, error) {
	if err := checkKey(key); err != nil {
		return resourcelease.Record{}, false, err
	}
	var (
		rec resourcelease.Record
		at  string
	)
	err := s.get.QueryRowContext(ctx, key).Scan(&rec.Kind, &rec.Version, &rec.Payload, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return resourcelease.Record{}, false, nil
	}
	if err != nil {
		return resourcelease.Record{}, false, sqliteError(ctx, fmt.Sprintf("get %q from %s", key, s.table), err)
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return resourcelease.Record{}, false, sqliteError(ctx, fmt.Sprintf("get %q from %s: bad recorded_at", key, s.table), err)
	}
	rec.RecordedAt = t.UTC()
	if rec.Payload == nil {
		rec.Payload = []byte{}
	}
	return rec, true, nil
}

// Set stores rec under key, replacing any record.
func (s *SQLiteStore) Set(ctx context.Context, key string, rec resourcelease.Record) error {
	args, err := recordArgs(key, rec)
	if err != nil {
		return err
	}
	op := fmt.Sprintf("set %q in %s", key, s.table)
	return s.write(ctx, op, func(tx *sql.Tx) error {
		if _, err := tx.StmtContext(ctx, s.set).ExecContext(ctx, args...); err != nil {
			return sqliteError(ctx, op, err)
		}
		return nil
	})
}

// TryAdd stores rec under key only if key is absent, and reports whether it did.
func (s *SQLiteStore) TryAdd(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
	args, err := recordArgs(key, rec)
	if err != nil {
		return false, err
	}
	op := fmt.Sprintf("try-add %q to %s", key, s.table)
	added := false
	err = s.write(ctx, op, func(tx *sql.Tx) error {
		res, err := tx.StmtContext(ctx, s.tryAdd).ExecContext(ctx, args...)
		if err != nil {
			return sqliteError(ctx, op, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return sqliteError(ctx, op+": rows affected", err)
		}
		added = n == 1
		return nil
	})
	return added && err == nil, err
}

// TryAddMany stores each of recs whose key is absent, in order, in one
// write transaction (BEGIN IMMEDIATE) that runs the TryAdd statement once
// per record and reads its affected-row count; see [BatchStateStore]. Any
// failure rolls the transaction back, so nothing of the batch is written, and
// the error names the operation (try-add-many), the record that failed and
// the table. The batch is durable when TryAddMany returns, with one commit
// (one fsync under synchronous=FULL) for the whole batch.
func (s *SQLiteStore) TryAddMany(ctx context.Context, recs []KeyedRecord) ([]bool, error) {
	for i := range recs {
		if problem := recordProblem(recs[i].Key, recs[i].Record); problem != "" {
			return nil, invalidArgument("record %d of %d in the batch: %s", i+1, len(recs), problem)
		}
	}
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, sqliteError(ctx, fmt.Sprintf("try-add-many of %d records to %s", len(recs), s.table), errStoreClosed)
	}
	if len(recs) == 0 {
		return []bool{}, nil
	}
	var added []bool
	err := s.write(ctx, fmt.Sprintf("try-add-many of %d records to %s", len(recs), s.table), func(tx *sql.Tx) (err error) {
		added, err = s.tryAddManyTx(ctx, tx, recs)
		return err
	})
	if err != nil {
		return nil, err
	}
	return added, nil
}

// tryAddManyTx runs the TryAdd statement for each record inside tx.
func (s *SQLiteStore) tryAddManyTx(ctx context.Context, tx *sql.Tx, recs []KeyedRecord) ([]bool, error) {
	stmt := tx.StmtContext(ctx, s.tryAdd) // closed with tx; reuses the connection's prepared statement
	added := make([]bool, len(recs))
	args := make([]any, 5)
	for i := range recs {
		fillRecordArgs(args, recs[i].Key, recs[i].Record)
		res, err := stmt.ExecContext(ctx, args...)
		if err == nil {
			var n int64
			if n, err = res.RowsAffected(); err == nil {
				added[i] = n == 1
				continue
			}
		}
		return nil, sqliteError(ctx, fmt.Sprintf("try-add-many %q (record %d of %d) to %s", recs[i].Key, i+1, len(recs), s.table), err)
	}
	return added, nil
}

// Close stops the checkpointer and releases the prepared statements. It does
// not close the database. Calling it twice is safe; the store must not be
// used afterwards (its methods then return unavailable errors).
func (s *SQLiteStore) Close() error {
	s.closed.Store(true)
	s.closeOnce.Do(func() {
		if s.ck != nil {
			s.ck.Close()
		}
		for _, st := range []*sql.Stmt{s.get, s.set, s.tryAdd, s.noAuto} {
			if st != nil {
				if err := st.Close(); err != nil && s.closeErr == nil {
					s.closeErr = err
				}
			}
		}
	})
	return s.closeErr
}

// recordedAtLayout is RFC 3339 with a fixed nine-digit fraction, so the text
// keeps nanoseconds and sorts in time order.
const recordedAtLayout = "2006-01-02T15:04:05.000000000Z07:00"

func recordArgs(key string, rec resourcelease.Record) ([]any, error) {
	if problem := recordProblem(key, rec); problem != "" {
		return nil, invalidArgument("%s", problem)
	}
	args := make([]any, 5)
	fillRecordArgs(args, key, rec)
	return args, nil
}

// recordProblem describes why the table cannot hold rec under key (the key
// is empty, or RecordedAt is outside years 0000-9999), or returns "".
func recordProblem(key string, rec resourcelease.Record) string {
	if key == "" {
		return "key is required"
	}
	if y := rec.RecordedAt.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Sprintf("recordedAt %v of %q is outside years 0000-9999", rec.RecordedAt, key)
	}
	return ""
}

// fillRecordArgs sets args[0:5] to the statement arguments of rec under key,
// which recordProblem accepted.
func fillRecordArgs(args []any, key string, rec resourcelease.Record) {
	payload := rec.Payload
	if payload == nil {
		payload = []byte{} // the driver binds a nil slice as NULL
	}
	args[0], args[1], args[2], args[3], args[4] = key, rec.Kind, rec.Version, payload, rec.RecordedAt.UTC().Format(recordedAtLayout)
}

// sqliteError reports a failed statement: the context's error when ctx is
// done, otherwise unavailable/storage_unavailable naming op.
func sqliteError(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return resourcelease.AsError(cerr)
	}
	return &resourcelease.Error{
		Status:  resourcelease.StatusUnavailable,
		Code:    resourcelease.CodeStorageUnavailable,
		Message: fmt.Sprintf("deterministic: sqlite %s: %v", op, err),
		Err:     err,
	}
}
