// Package postgres keeps leasemesh's state in PostgreSQL, so that any number
// of dispatcher processes can serve one queue and none of them holds state
// of its own. It is pure Go (pgx v5 with pgxpool) and builds with
// CGO_ENABLED=0.
//
//	store, err := postgres.Open(ctx, "postgres://leasemesh@db:5432/app", postgres.Config{})
//	if err != nil { ... }           // a one-line *resourcelease.Error
//	defer store.Close()
//	queue, err := postgres.NewQueue(ctx, store, postgres.QueueConfig{})
//	if err != nil { ... }
//	defer queue.Close()              // before store.Close
//	effects := store.StateStore()  // deterministic capture, once mesh-wide
//
// Open creates the schema (default "leasemesh"; one schema per mesh, so
// several can share a database) and applies the embedded, numbered
// migrations it has not had yet, recorded in schema_migrations. They run in
// one transaction under a transaction-level advisory lock on the schema, so
// dispatchers that start at once on an empty database are safe: one
// migrates, the others wait for it and find the work done. A schema that is
// already current gets no DDL at all, so the role that runs dispatchers
// needs no CREATE privilege once an operator has migrated it; it needs
// SELECT, INSERT, UPDATE and DELETE on every table of the schema, those a
// newer migration adds included (grant them with ALTER DEFAULT PRIVILEGES,
// or again after upgrading). A database migrated by a newer leasemesh is
// refused ([CodeSchemaTooNew]). Dispatchers check the version only when
// they open, so stop those of an older build before the first of a build
// with new migrations opens the database (schema version 4 changed the
// event log's columns, which version-3 log tails cannot read).
//
// [Queue] is the lease queue with all of its state in the database: the
// items, the dedupe window, the dead letters and the replication log are
// rows, and no process keeps an index of its own, so any number of
// processes can serve one queue (every process's lease takes the oldest
// ready item, every token works on every process, a drain on one drains
// the queue for all). It holds to the same conformance suite
// (resourcelease/queuetest) as the in-memory engine and the engine written
// through SQLite.
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
// Long-poll wake-ups use LISTEN on a connection of its own, outside the
// pool, and a NOTIFY sent inside the enqueue's transaction, one per
// transaction rather than per item (NOTIFY takes a database-wide lock at
// commit); a notification can be lost (the listening connection dropped),
// so parked waiters also get a round every PollInterval (1 s). Within a
// process the writer hands the items a transaction enqueues straight to the
// parked waiters, in that same transaction.
//
// # A queue transaction
//
// Calls are group-committed: the queue's writer puts every mutation that
// arrives while a transaction is in flight into the next one, and each call
// returns after its transaction commits. A transaction is two round trips
// (one when it only enqueues into an unbounded queue):
//
//  1. BEGIN; the counts (the counter row, unlocked);
//     delayed items whose time has come, promoted to ready (waiting for a
//     concurrent promoter, so a lease right after the delay finds them;
//     first, before the transaction holds any row, so the wait closes no
//     cycle);
//     the leased rows the heartbeats, completes, fails and releases name,
//     locked FOR UPDATE in sequence id order (they and the promotion are
//     the statements that wait for another transaction's locks, with a
//     partition's items below);
//     expired leases (a sweep), FOR UPDATE SKIP LOCKED;
//     the oldest ready items for every lease slot at once (this process's
//     waiters first come, first served, then the new leases), FOR UPDATE
//     SKIP LOCKED LIMIT k (with partition rules, the partitions SKIP
//     LOCKED and their items FOR UPDATE): one statement however many wait;
//     the request ids of the enqueues, claimed (INSERT ... ON CONFLICT)
//  2. the process decides every call on what it read (fencing: item,
//     attempt and lease id match, still leased and unexpired by the
//     database clock, else unknown_token), then sends the net effect on
//     the locked rows (planned at each call, for the table as it is then),
//     then the final statement (planned once: planning it afresh would
//     cost a third of its run) — it takes the counter row,
//     draws sequence ids for the new items and numbers for the events from
//     it, inserts both, and updates the counts — then NOTIFY and COMMIT.
//
// Sweeping is a transaction of the same kind: every process sweeps every
// SweepInterval; SKIP LOCKED means two sweeps never take the same lease, and
// the fence means an expiry happens once, with its event. Drain, restore,
// redrive and purge run in transactions of their own beside the writer's,
// ordered by the counter row like every other.
//
// Completed items are deleted, not kept with a state: the table holds only
// live work, and its churn (insert, a few updates, delete) is what
// autovacuum is tuned for below. The log keeps the newest EventRetention
// events; the sweeper deletes older ones by primary key range, and expired
// request ids, in statements of their own that never touch the counter row.
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
// ever). A Queue uses one pooled connection per transaction in flight
// (QueueConfig.InFlight, default 1) plus short-lived ones for reads,
// sweeps and the rare drain or restore, and one unpooled connection to
// LISTEN: a pool of 4 (pgxpool's default on a small machine) serves one
// Queue and the StateStore; give it InFlight + 3 or more. Every call is
// also bounded by its context, and a transaction by the latest deadline of
// its callers (capped by QueueConfig.BatchTimeout). When a call finds its
// connection lost (the server restarted, crashed or ended the session) the
// store resets the pool, so the other idle connections, dead too, are
// replaced instead of each failing one more call; a queue transaction that
// met a dead connection before it sent anything runs once more on a fresh
// one. The store and the listener reconnect by themselves once the server
// is back.
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
// # Queue features
//
// Delayed items, per-partition limits, fair leasing and bounded dead letters
// ([QueueConfig] has the options of resourcelease.QueueConfig, with the same
// names, defaults and validation) work here as in the in-memory engine,
// across every dispatcher of a schema, and the suite resourcelease/featuretest
// holds them to it.
//
// A delayed item (Item.NotBefore ahead, or a requeue delay, or a delayed
// release) is a row in the scheduled state with its not_before; leases never
// look at scheduled rows. The sweeper's timer sleeps until the earliest
// not_before it knows of (its own, those other dispatchers' commits name
// in their NOTIFY, and what each sweep finds) and
// promotes what is due in one statement on the items_scheduled index; the
// promotion's transaction sends the NOTIFY that wakes long-polls on every
// dispatcher. The delayed count is on the counter row: Capacity and the
// backpressure watermarks count ready and leased items, DelayedCapacity the
// delayed ones. NotBefore is kept to the microsecond (the database's
// precision; the answer echoes what was kept), in item_not_before, so a
// lease, a drain and a restore carry it.
//
// MaxActivePerPartition and partitions fairness use the partitions table:
// one row per partition with pending or leased items, holding its oldest
// ready item (head_seq), for strict partitions its oldest scheduled item
// (which holds the partition while older than the head), its live leases,
// whether it is leasable and when it was last served. A lease takes the
// first leasable partitions by head_seq (fifo) or by last_served
// (partitions fairness), FOR UPDATE SKIP LOCKED, so no two dispatchers lease
// from one partition at once and none waits for another, then up to each
// partition's room of its oldest ready items. EXPLAIN shows a bounded
// index scan of partitions_fifo or partitions_fair, then per partition a
// bounded scan of items_ready_partition: the cost does not grow with the
// depth of the queue or the number of partitions (TestLeasePlanIsFlat). Each
// transaction recomputes the rows of the partitions it touched from a few
// index probes after taking the counter row, so they follow commit order;
// rows that another transaction holds (which recomputes them itself before
// its commit) are skipped, never waited for, and marked in the table
// partition_dirty, which every later commit that recomputes rows and every
// sweep (of any process) works off. The table is kept only with partition rules: a queue that
// opens with other rules than the last one rebuilds it from the items (one
// scan), so every process serving a schema must use the same
// MaxActivePerPartition and Fairness. With partition rules an item enqueued
// while a long-poll waits goes to it in the next transaction rather than in
// its own, and a lease that promoted items whose delay just passed (with
// none leasable before) looks once more after that commit.
//
// Dead letters past MaxDeadLetters are purged, oldest first, in the
// transaction that dead-letters; those older than DeadLetterRetention by the
// sweeper; each with a DeadLetterPurged event.
//
// # Not yet
//
// The first migration already has the table for this; the queue does not
// use it yet: the breaker's counters per worker peer (the peers table).
//
// # Inside your own transaction
//
// [Queue.Tx] stages enqueues and fenced completions in a pgx.Tx of the
// caller ([QueueTx]): they commit or roll back with the caller's own
// writes, and the log stays gap-free either way (a rolled back transaction
// took no number). The calls lock item rows; [QueueTx.Finish] alone takes
// the counter row, last, as every writer of the queue does, so a QueueTx
// cannot deadlock against them whatever the order of its calls. From
// Finish to COMMIT every other mutation of the queue, on every process,
// waits: commit at once. The transaction must be READ COMMITTED.
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
//	partitions         per-partition head, live leases and round-robin place (with partition rules)
//	events             the replication log: JSON as text, each item's body apart (bytea)
//	dedupe             request ids within the dedupe window
//	peers              worker peers' breaker counters
//	state_records      the StateStore
//
// The database must use the UTF8 encoding.
package postgres
