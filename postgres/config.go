package postgres

import (
	"log/slog"
	"regexp"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Defaults of [Config].
const (
	// DefaultSchema is the schema the store's tables live in.
	DefaultSchema = "leasemesh"
	// DefaultStatementTimeout bounds every statement of the store's
	// connections on the server side.
	DefaultStatementTimeout = 30 * time.Second
	// DefaultIdleInTransactionTimeout is how long the server lets a
	// connection of the store sit idle inside a transaction before it ends
	// the session.
	DefaultIdleInTransactionTimeout = time.Minute
	// DefaultConnectTimeout bounds each connection attempt.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultApplicationName is the application_name the store's
	// connections report (pg_stat_activity).
	DefaultApplicationName = "leasemesh"
)

// Config configures [Open]. The zero value of every field means its
// documented default; a bad value is an invalid-argument error.
type Config struct {
	// Schema is the schema that holds the store's tables, created at open
	// if missing, so several meshes can share one database. It must be a
	// plain lower-case identifier: a letter or underscore, then letters,
	// digits or underscores, at most 63 bytes, not starting with pg_.
	// Defaults to DefaultSchema.
	Schema string
	// MaxConns is the most connections the pool opens. Defaults to the
	// URL's pool_max_conns, else pgxpool's default (4 or the number of
	// CPUs, whichever is larger).
	MaxConns int32
	// ConnectTimeout bounds each connection attempt, so a server that does
	// not answer fails a call within it rather than at the caller's
	// deadline. Defaults to the URL's connect_timeout, else
	// DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// StatementTimeout is the server-side statement_timeout of the store's
	// connections: a statement running longer is cancelled and reported as
	// deadline-exceeded. Defaults to the URL's statement_timeout, else
	// DefaultStatementTimeout; negative sends none but the URL's, leaving
	// the server's setting (for a PgBouncer that refuses startup
	// parameters). Migrations run without it.
	StatementTimeout time.Duration
	// IdleInTransactionTimeout is the server-side
	// idle_in_transaction_session_timeout: a transaction of the store left
	// open that long (its process frozen or cut off) is ended by the
	// server, so it cannot hold the queue's serialization row for ever.
	// Defaults to the URL's setting, else DefaultIdleInTransactionTimeout;
	// negative sends none but the URL's.
	IdleInTransactionTimeout time.Duration
	// ApplicationName is reported in pg_stat_activity. Defaults to the URL's
	// application_name, else DefaultApplicationName.
	ApplicationName string
	// Clock, when set, replaces the database clock in every time-dependent
	// statement (the statements take coalesce($now, now())): for tests that
	// drive expiries and delays with resourcelease/leasetest.ManualClock.
	// Nil, as in production, means the database's now(), so that expiry
	// never depends on which dispatcher looks.
	Clock resourcelease.Clock
	// Logger receives the store's notices (migrations applied). Defaults
	// to slog.Default().
	Logger *slog.Logger
}

var schemaName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c Config) withDefaults() (Config, error) {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	switch {
	case !schemaName.MatchString(c.Schema) || strings.HasPrefix(c.Schema, "pg_") || c.Schema == "information_schema":
		return c, invalidArgument("schema %q is not a plain lower-case identifier (letters, digits, underscores; at most 63; not pg_* or information_schema)", c.Schema)
	case c.MaxConns < 0:
		return c, invalidArgument("MaxConns must not be negative, got %d", c.MaxConns)
	case c.ConnectTimeout < 0:
		return c, invalidArgument("ConnectTimeout must not be negative, got %v", c.ConnectTimeout)
	case c.StatementTimeout > 0 && c.StatementTimeout < time.Millisecond:
		return c, invalidArgument("StatementTimeout must be at least 1ms (or negative to leave the server's), got %v", c.StatementTimeout)
	case c.IdleInTransactionTimeout > 0 && c.IdleInTransactionTimeout < time.Millisecond:
		return c, invalidArgument("IdleInTransactionTimeout must be at least 1ms (or negative to leave the server's), got %v", c.IdleInTransactionTimeout)
	case strings.ContainsRune(c.ApplicationName, 0):
		return c, invalidArgument("ApplicationName must not contain NUL")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
