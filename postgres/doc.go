// Package postgres keeps leasemesh's state in PostgreSQL, so that any number
// of dispatcher processes can serve one queue and none of them holds state
// of its own. It is pure Go (pgx v5 with pgxpool) and builds with
// CGO_ENABLED=0.
//
//	store, err := postgres.Open(ctx, "postgres://leasemesh@db:5432/app", postgres.Config{})
//	if err != nil { ... }           // a one-line *resourcelease.Error
//	defer store.Close()
//	effects := store.StateStore()  // deterministic capture, once mesh-wide
//
// Open creates the schema (default "leasemesh"; one schema per mesh, so
// several can share a database) and applies the embedded, numbered
// migrations it has not had yet, recorded in schema_migrations. They run in
// one transaction under a transaction-level advisory lock on the schema, so
// dispatchers that start at once on an empty database are safe: one
// migrates, the others wait for it and find the work done. A schema that is
// already current gets no DDL at all, so the role that runs dispatchers
// needs no CREATE privilege once an operator has migrated it. A database
// migrated by a newer leasemesh is refused ([CodeSchemaTooNew]).
//
// # Status
//
// This package has the store (Open, migrations, pool, clock) and the
// deterministic [StateStore]. The queue itself (lease, settle, sweep and
// the replication log on these tables) is not here yet; the first migration
// already creates every table it needs, so it will add no breaking
// migration.
//
// # How it differs from SQLite
//
// With SQLite, one dispatcher owns the queue: an in-memory index, written
// through to a file that is read only at start. Here the state lives in the
// database and every dispatcher reads and writes the same rows, so the
// guarantees that the single owner gave for free are made by the database:
//
// Time is the database's clock. Every time-dependent statement takes
// coalesce($now, now()): $now is NULL in production, so expiries and
// delays never depend on which dispatcher looks or how far its clock has
// drifted, and a manual clock in tests ([Config.Clock]), so the same
// semantic tests drive every store. now() is the start of the transaction,
// which is one more reason to keep transactions short.
//
// The replication log is one gap-free, strictly increasing sequence in
// commit order, each event written in its mutation's transaction. A
// PostgreSQL sequence gives neither (numbers are handed out before commit,
// so they commit out of order, and a rollback leaves a gap), so the log is
// appended through a counter row: queue_state, one row, which every
// mutation takes FOR UPDATE in its last statement before COMMIT. It stays
// locked until the commit and rolls back with it, so the numbers a
// transaction takes follow commit order with no gap. The item rows are
// locked first, in sequence-id order, and the counter row last, so the
// serialization point is held only for the commit itself, and a heartbeat
// and an expiry sweep of the same lease cannot deadlock. Item sequence ids
// come from the same row, as do the pending, active, dead-letter and
// delayed counts (never count(*)). The cost is that commits of the queue
// are serialized: measured with pgbench on a 2-core machine it is about
// twice as slow as an unordered append, and batching decides the
// throughput (one change per transaction: under a thousand a second; a
// hundred: tens of thousands), so each dispatcher puts its concurrent
// callers' mutations in one transaction.
//
// Deterministic capture writes each event's effect in the mutation's own
// transaction ([StateStore.TryAddTx] and the other Tx forms), so there is
// no separate checkpoint that several dispatchers could move backwards, and
// an effect is recorded once however many dispatchers replay the event.
//
// Long-poll wake-ups (with the queue) use LISTEN on a connection of its own,
// outside the pool, and a NOTIFY sent inside the enqueue's transaction, one
// per batch rather than per item (NOTIFY takes a database-wide lock at
// commit); a notification can be lost, so waiters also poll.
//
// The hot paths scan partial indexes (ready items, live leases by expiry,
// scheduled items by due time, dead letters), which hold only the rows the
// path wants and stay small however many rows the table churns through;
// the items table is vacuumed early (autovacuum at 1% dead rows), so the
// dead tuples a FOR UPDATE SKIP LOCKED scan must step over stay few.
//
// # Connections
//
// The pool is pgxpool's; [Config] sets its size and, as startup
// parameters of every connection, statement_timeout (default 30 s: a
// statement stuck behind a lock fails as deadline-exceeded rather than
// holding its caller) and idle_in_transaction_session_timeout (default
// 1 min: a process frozen in a transaction cannot hold the counter row for
// ever). Every call is also bounded by its context. When a call finds its
// connection lost (the server restarted, crashed or ended the session) the
// store resets the pool, so the other idle connections, dead too, are
// replaced instead of each failing one more call; the store reconnects by
// itself once the server is back.
//
// Behind PgBouncer use session pooling. Transaction pooling breaks LISTEN
// (a notification is delivered to the session that listened, which
// transaction pooling hands to others), pgx's cached prepared statements
// (use PgBouncer 1.21 or later with max_prepared_statements, or add
// default_query_exec_mode=exec to the URL) and the startup parameters
// (set StatementTimeout and IdleInTransactionTimeout negative, or list
// them in PgBouncer's ignore_startup_parameters). Migrations need nothing
// of the session: their advisory lock is transaction-scoped and their
// search_path is SET LOCAL.
//
// # Errors
//
// Every error is an [*resourcelease.Error]. A bad URL or Config is
// invalid-argument; the caller's context ending is cancelled or
// deadline-exceeded; the server cancelling a statement (statement_timeout)
// is deadline-exceeded; a value a column cannot hold (SQLSTATE class 22) is
// invalid-argument; everything else — connection refused or reset, the
// server shutting down, starting up or read-only, too many connections —
// is unavailable with code error.resourcelease.storage_unavailable, which
// callers retry. The message names the operation and the host, port and
// database, never the password; the SQLSTATE is in Metadata["sqlstate"].
//
// # Tables
//
// In the store's schema:
//
//	schema_migrations  one row per applied migration
//	queue_state        the counter row: next sequence id, next event sequence, counts
//	items              pending, scheduled, leased and dead items (completed ones are deleted)
//	partitions         per-partition active count and round-robin cursor
//	events             the replication log
//	dedupe             request ids within the dedupe window
//	peers              worker peers' breaker counters
//	state_records      the StateStore
//
// The database must use the UTF8 encoding.
package postgres
