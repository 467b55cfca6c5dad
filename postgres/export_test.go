package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Listening is closed once the queue's first LISTEN is established, for
// tests that need a notification to reach it.
func (q *Queue) Listening() <-chan struct{} { return q.listening }

// ListenConnected reports whether the queue is listening now.
func (q *Queue) ListenConnected() bool { return q.listenOK.Load() }

// LeaseSQL is the queue's lease statement (for EXPLAIN in tests).
func (q *Queue) LeaseSQL() string {
	if q.parted {
		return q.psql.lease
	}
	return q.sql.lease
}

// KeyWriteSQL are the statements that write the net effect of a batch's
// token operations on the rows it locked, by sequence id, and its writes of
// dedupe rows and dead-letter purges by key.
func (q *Queue) KeyWriteSQL() []string {
	return []string{q.sql.heartbeat, q.sql.endLease, q.sql.complete, q.sql.unclaimDedupe, q.sql.purge}
}

// PromoteSQL is the statement that makes delayed items ready when due.
func (q *Queue) PromoteSQL() string { return q.sql.promote }

// FinalSQL is the batch's final statement.
func (q *Queue) FinalSQL() string { return q.sql.final }

// TouchPartitionTx recomputes the row of one partition inside tx, as a call
// in a caller's own transaction does after its final statement.
func (q *Queue) TouchPartitionTx(ctx context.Context, tx pgx.Tx, key string) (bool, error) {
	var l changeLog
	l.touch(key, false)
	return q.partitionsTx(ctx, tx, perCallMode(tx), q.store.nowArg(), &l)
}

// PartitionUpdateSQL is the statement that recomputes partition rows (for
// EXPLAIN in tests); "" without partition rules.
func (q *Queue) PartitionUpdateSQL() string { return q.psql.update }

// ListSQL is the listing statement of an item state.
func (q *Queue) ListSQL(state resourcelease.ItemState) string { return q.isql.list[state] }

// MigrateThrough applies the embedded migrations up to version to a schema
// that has none, in one transaction: the database an older build left.
func MigrateThrough(ctx context.Context, conn *pgx.Conn, schema string, version int) error {
	ms, err := embeddedMigrations()
	if err != nil {
		return err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit, a no-op
	quoted := pgx.Identifier{schema}.Sanitize()
	for _, sql := range []string{`CREATE SCHEMA ` + quoted, `CREATE TABLE ` + quoted + `.schema_migrations` + schemaMigrationsColumns,
		`SET LOCAL search_path TO ` + quoted} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			return err
		}
	}
	for _, m := range ms[:version] {
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

// LockItemsSQL is the statement that locks the leased rows a batch's token
// operations name.
func (q *Queue) LockItemsSQL() string { return q.sql.lockItems }

// DeadLockSQL is the statement that locks chosen dead letters.
func (q *Queue) DeadLockSQL() string { return q.sql.deadLock }

// TxKeySQL are the statements a QueueTx runs in the caller's transaction
// planned at each call: the lock and delete of the rows it completes, the
// read and give-back of request ids, its final statement and, with
// partition rules, the recompute of the partitions it touched.
func (q *Queue) TxKeySQL() []string {
	return append([]string{txStmt(q.sql.lockItems), q.sql.complete, q.sql.readDedupe, q.sql.unclaimDedupe, txStmt(q.sql.final)}, q.PartitionSQL()...)
}

// TxClaimSQL is a QueueTx's claim of a request id, run in the connection's
// own mode.
func (q *Queue) TxClaimSQL() string { return txStmt(q.sql.claimDedupe) }

// HealPartitions runs the sweeper's recompute of the partitions marked in
// partition_dirty once.
func (q *Queue) HealPartitions(ctx context.Context) (bool, error) { return q.healPartitions(ctx) }

// PartitionSQL are the statements that bring partition rows up to date
// after a change (empty without partition rules).
func (q *Queue) PartitionSQL() []string {
	if !q.parted {
		return nil
	}
	return []string{q.psql.ensure, q.psql.update, q.psql.prune}
}
