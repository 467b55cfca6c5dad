package replication

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// schemaVersion is the version of the tables below. A database written by a
// newer version is refused rather than misread; an older one is migrated.
//
//   - 1: the first schema.
//   - 2: queue_items.releases (free releases since the attempt changed).
//   - 3: queue_items.not_before (the payload's NotBefore).
const schemaVersion = 3

// Item states in queue_items.state.
const (
	statePending = 0
	stateLeased  = 1
	stateDead    = 2
)

// The schema. Times are Unix nanoseconds (UTC); NULL means unset.
//
//   - replication_meta: schema_version and next_sequence_id (the next queue
//     sequence id, kept so that ids are never reused even after every item
//     was completed and deleted).
//   - replication_events: the ordered log, one row per event: its sequence
//     number, its type (for SQL) and the event in a compact binary form
//     (eventcodec.go).
//   - queue_items: one row per pending, leased or dead-lettered item, keyed by
//     the item's sequence id. Completed items have no row. dead_event is the
//     sequence number of the DeadLettered event, which orders dead letters
//     that share a timestamp as the queue listed them. releases counts an
//     item's free releases in a row. not_before is the payload's NotBefore
//     (a delayed item's time is its ready_at).
//   - queue_dedupe: requestId → sequence id and when it was seen; rows outlive
//     their item and are trimmed after the dedupe window.
var schemaStatements = []string{
	`CREATE TABLE IF NOT EXISTS replication_events (
		seq        INTEGER PRIMARY KEY,
		event_type TEXT NOT NULL,
		event      BLOB NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS queue_items (
		seq                INTEGER PRIMARY KEY,
		state              INTEGER NOT NULL,
		resource_type      TEXT NOT NULL,
		resource_id        TEXT NOT NULL,
		partition_key      TEXT NOT NULL,
		payload_encoding   TEXT NOT NULL,
		body               BLOB,
		attributes         TEXT,
		request_id         TEXT,
		attempt            INTEGER NOT NULL,
		enqueued_at        INTEGER NOT NULL,
		ready_at           INTEGER,
		last_error         TEXT,
		last_error_code    TEXT,
		last_token_attempt INTEGER,
		last_token_lease   BLOB,
		lease_attempt      INTEGER,
		lease_id           BLOB,
		peer_id            TEXT,
		leased_at          INTEGER,
		dead_at            INTEGER,
		dead_reason        TEXT,
		dead_code          TEXT,
		dead_event         INTEGER,
		releases           INTEGER NOT NULL DEFAULT 0,
		not_before         INTEGER
	)`,
	`CREATE TABLE IF NOT EXISTS queue_dedupe (
		request_id TEXT PRIMARY KEY,
		seq        INTEGER NOT NULL,
		seen_at    INTEGER NOT NULL
	)`,
	`CREATE INDEX IF NOT EXISTS queue_dedupe_seen_at ON queue_dedupe (seen_at)`,
}

// itemColumns are queue_items' columns: the key, the payload (written once,
// when the row is created) and then mutableColumns[1:].
const itemColumns = `seq, resource_type, resource_id, partition_key, payload_encoding, body,
	attributes, request_id, enqueued_at, not_before, state, attempt, ready_at, last_error, last_error_code,
	last_token_attempt, last_token_lease, lease_attempt, lease_id, peer_id, leased_at,
	dead_at, dead_reason, dead_code, dead_event, releases`

// itemColumnCount is the number of columns in itemColumns.
const itemColumnCount = 26

// mutableColumns are the key and the columns a transition may change.
var mutableColumns = []string{"seq", "state", "attempt", "ready_at", "last_error", "last_error_code",
	"last_token_attempt", "last_token_lease", "lease_attempt", "lease_id", "peer_id", "leased_at",
	"dead_at", "dead_reason", "dead_code", "dead_event", "releases"}

// txBeginner is a *sql.DB or a *sql.Conn.
type txBeginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// migrate creates the schema if needed, in one transaction, and refuses a
// database whose schema is newer than this build's.
func migrate(ctx context.Context, db txBeginner) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS replication_meta (
		key   TEXT PRIMARY KEY,
		value INTEGER NOT NULL
	) WITHOUT ROWID`); err != nil {
		return err
	}
	var v int64
	switch err := tx.QueryRowContext(ctx, `SELECT value FROM replication_meta WHERE key = 'schema_version'`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return err
	case v > schemaVersion:
		return fmt.Errorf("schema version %d is newer than this build's %d", v, schemaVersion)
	}
	for _, s := range schemaStatements {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return err
		}
	}
	if v == 1 {
		if _, err := tx.ExecContext(ctx, `ALTER TABLE queue_items ADD COLUMN releases INTEGER NOT NULL DEFAULT 0`); err != nil {
			return fmt.Errorf("migrate schema 1 to 2: %w", err)
		}
	}
	if v == 1 || v == 2 {
		if _, err := tx.ExecContext(ctx, `ALTER TABLE queue_items ADD COLUMN not_before INTEGER`); err != nil {
			return fmt.Errorf("migrate schema %d to 3: %w", v, err)
		}
	}
	if v >= 1 && v < schemaVersion {
		if _, err := tx.ExecContext(ctx, `UPDATE replication_meta SET value = ? WHERE key = 'schema_version'`, schemaVersion); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO replication_meta (key, value) VALUES ('schema_version', ?), ('next_sequence_id', 1)
		ON CONFLICT (key) DO NOTHING`, schemaVersion); err != nil {
		return err
	}
	return tx.Commit()
}
