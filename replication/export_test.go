package replication

import (
	"context"
	"database/sql"
	"time"

	"github.com/leasemesh/leasemesh/internal/sqlitewal"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// BulkInsertPending writes items as pending rows in one transaction with one
// prepared statement, through the same row encoding the replicator uses. It
// lets benchmarks build a 1M-item database in seconds. Test-only.
func BulkInsertPending(ctx context.Context, db *sql.DB, items []resourcelease.PendingItem) error {
	if err := migrate(ctx, db); err != nil {
		return err
	}
	s := &sqliteStore{}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	st, err := tx.PrepareContext(ctx, "INSERT INTO queue_items ("+itemColumns+") VALUES (?"+repeat(",?", itemColumnCount-1)+")")
	if err != nil {
		return err
	}
	defer st.Close()
	next := int64(1)
	var args []any
	for i := range items {
		args = s.appendItemArgs(args[:0], &rowOp{seq: items[i].SequenceID, state: statePending, item: &items[i]})
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return err
		}
		next = max(next, items[i].SequenceID+1)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE replication_meta SET value = ? WHERE key = 'next_sequence_id'`, next); err != nil {
		return err
	}
	return tx.Commit()
}

func repeat(s string, n int) string {
	out := ""
	for range n {
		out += s
	}
	return out
}

// NewSQLiteReplicatorWithCheckpointHooks is NewSQLiteReplicator with hooks
// on its checkpointer: before runs on the checkpointer's goroutine before
// each checkpoint (and may block it), observe gets each checkpoint's result,
// onHold runs when the writer starts waiting for a reset at the hard bound.
func NewSQLiteReplicatorWithCheckpointHooks(ctx context.Context, db *sql.DB, opts SQLiteConfig,
	before func(sqlitewal.Mode), observe func(sqlitewal.Result), onHold func()) (*SQLiteReplicator, error) {
	return newSQLiteReplicator(ctx, db, opts, checkpointHooks{before: before, observe: observe, onHold: onHold})
}

// SetSinkDrainTimeout shortens how long Close lets async sinks catch up, for
// one test; the returned function restores it. Test-only.
func SetSinkDrainTimeout(d time.Duration) (restore func()) {
	old := sinkDrainTimeout
	sinkDrainTimeout = d
	return func() { sinkDrainTimeout = old }
}
