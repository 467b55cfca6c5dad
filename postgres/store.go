package postgres

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Store is a leasemesh store in one schema of a PostgreSQL database: a
// connection pool, the schema migrated to this build's version, and the
// stores built on them ([Store.StateStore]). It is safe for concurrent use;
// Close it when done.
type Store struct {
	pool   *pgxpool.Pool
	cfg    Config
	schema string // quoted, ready to prefix a table name
	state  *StateStore

	closed    atomic.Bool
	closeOnce sync.Once
}

// Open connects to the database at url (postgres://user:password@host:port/db?options,
// or libpq's key=value form), creates the schema if missing and applies the
// migrations it has not had yet, then returns the store.
//
// The URL's options are pgx's and libpq's (sslmode, connect_timeout,
// pool_max_conns, default_query_exec_mode, ...); Config's non-zero fields
// take precedence over them. Migrations run in one transaction under a
// transaction-level advisory lock on the schema, so any number of processes
// may open the same empty database at once: one migrates, the others wait
// for it and find the work done.
//
// Errors: an empty or malformed URL and a bad Config are invalid-argument;
// a server that cannot be reached, refuses the login or fails a migration
// is unavailable (code storage_unavailable) naming the host and the cause,
// never the password; a database whose encoding is not UTF8 is
// failed-precondition; one migrated by a newer leasemesh is
// failed-precondition with [CodeSchemaTooNew]; a ctx that ends first is
// deadline-exceeded or cancelled.
func Open(ctx context.Context, url string, cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if url == "" {
		return nil, invalidArgument("a database URL is required (postgres://user@host:port/database)")
	}
	poolCfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// pgx's parse errors redact the password.
		return nil, invalidArgument("bad database URL: %v", err)
	}
	applyConfig(poolCfg, cfg)
	poolCfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		registerArrayCodecs(c.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, storageError(ctx, "open "+describe(poolCfg), err)
	}
	s := &Store{pool: pool, cfg: cfg, schema: pgx.Identifier{cfg.Schema}.Sanitize()}
	s.state = newStateStore(s)
	if err := s.migrate(ctx, describe(poolCfg)); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// applyConfig puts cfg's settings into the pool's configuration, where cfg
// sets them or the URL did not.
func applyConfig(p *pgxpool.Config, cfg Config) {
	if cfg.MaxConns > 0 {
		p.MaxConns = cfg.MaxConns
	}
	cc := p.ConnConfig
	switch {
	case cfg.ConnectTimeout > 0:
		cc.ConnectTimeout = cfg.ConnectTimeout
	case cc.ConnectTimeout == 0:
		cc.ConnectTimeout = DefaultConnectTimeout
	}
	setParam := func(name string, d, def time.Duration) {
		switch _, inURL := cc.RuntimeParams[name]; {
		case d > 0:
			cc.RuntimeParams[name] = strconv.FormatInt(d.Milliseconds(), 10)
		case d == 0 && !inURL:
			cc.RuntimeParams[name] = strconv.FormatInt(def.Milliseconds(), 10)
		}
	}
	setParam("statement_timeout", cfg.StatementTimeout, DefaultStatementTimeout)
	setParam("idle_in_transaction_session_timeout", cfg.IdleInTransactionTimeout, DefaultIdleInTransactionTimeout)
	switch {
	case cfg.ApplicationName != "":
		cc.RuntimeParams["application_name"] = cfg.ApplicationName
	case cc.RuntimeParams["application_name"] == "":
		cc.RuntimeParams["application_name"] = DefaultApplicationName
	}
}

// describe names the database a configuration points at, for messages:
// host, port and database, never the password.
func describe(p *pgxpool.Config) string {
	cc := p.ConnConfig
	return fmt.Sprintf("%s:%d/%s", cc.Host, cc.Port, cc.Database)
}

// Pool returns the store's connection pool, for callers that run their own
// statements beside the store's (their business writes, in the same
// transaction as a StateStore write). It belongs to the store: Close closes
// it.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Schema returns the name of the store's schema.
func (s *Store) Schema() string { return s.cfg.Schema }

// StateStore returns the store's deterministic StateStore.
func (s *Store) StateStore() *StateStore { return s.state }

// table returns the quoted, schema-qualified name of one of the store's
// tables.
func (s *Store) table(name string) string { return s.schema + "." + pgx.Identifier{name}.Sanitize() }

// nowArg is the $now argument of the time-dependent statements: nil (the
// database clock) unless Config.Clock is set.
func (s *Store) nowArg() any {
	if s.cfg.Clock == nil {
		return nil
	}
	return s.cfg.Clock.Now()
}

// Now returns the store's clock: the database's now() (the start of the
// statement's transaction), or Config.Clock's time when one is set. It is
// the time every expiry and delay of the store is measured by.
func (s *Store) Now(ctx context.Context) (time.Time, error) {
	if s.closed.Load() {
		return time.Time{}, closedError("now")
	}
	var t time.Time
	if err := s.pool.QueryRow(ctx, `SELECT coalesce($1::timestamptz, now())`, s.nowArg()).Scan(&t); err != nil {
		return time.Time{}, s.fail(ctx, "now", err)
	}
	return t.UTC(), nil
}

// SchemaVersion returns the version of the newest migration applied to the
// store's schema.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	if s.closed.Load() {
		return 0, closedError("schema version")
	}
	var v int
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM `+s.table("schema_migrations")).Scan(&v); err != nil {
		return 0, s.fail(ctx, "schema version", err)
	}
	return v, nil
}

// Close closes the pool, waiting for the connections in use to be released.
// Calling it twice is safe; the store must not be used afterwards (its
// methods then return unavailable errors with code
// error.resourcelease.closed).
func (s *Store) Close() error {
	s.closed.Store(true)
	s.closeOnce.Do(s.pool.Close)
	return nil
}

// fail is storageError for a statement run on the store's pool: when the
// error says the connection was lost, it also resets the pool, so the
// other idle connections, dead too after a server restart, are replaced
// rather than each failing one more call.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if ctx.Err() == nil && connectionLost(err) {
		s.pool.Reset()
	}
	return storageError(ctx, op, err)
}

// checkOpen returns the error op answers on a closed store, or nil.
func (s *Store) checkOpen(op string) error {
	if s.closed.Load() {
		return closedError(op)
	}
	return nil
}
