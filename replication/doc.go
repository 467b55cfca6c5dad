// Package replication is leasemesh's ordered replication log: the
// resourcelease.Replicator implementations that every queue change flows
// through, the sinks that consume the log, and — for the SQLite replicator —
// the durable home of the queue's own state.
//
// # Two replicators
//
// [MemoryReplicator] keeps a bounded log in memory (for a queue that needs
// the event stream but not durability). [SQLiteReplicator] keeps the log and
// the queue's state in one SQLite database, <dataDirectory>/replication.db,
// and is what makes a queue lose nothing across kill -9. Both pass the
// conformance suite in package replicatortest.
//
// # Group commit
//
// The queue engine (resourcelease.Engine) calls Record for every change,
// in order, with its lock held, then waits — after unlocking — for the Ack of
// its last change. Record therefore must not block: it builds the event
// (resourcelease.NewEvent), assigns the next sequence number (strictly
// increasing, gap-free, resumed after a restart) and appends the pair to the
// open batch. One writer goroutine takes every waiting batch and, for each:
//
//	Record ─┐                      ┌─ BEGIN IMMEDIATE
//	Record ─┼─▶ open batch ─▶ writer ─ INSERT events; upsert/delete queue rows
//	Record ─┘   (≤ MaxBatch)       └─ COMMIT ─▶ sync sinks ─▶ complete Acks ─▶ wake async sinks
//
// While one batch commits the next fills, so the number of changes per
// transaction grows with the load and the cost of a commit (in WAL mode a
// write of a few pages, plus an fsync with synchronous=FULL) is shared by
// every caller waiting on it. After completing a batch's Acks the writer
// yields once, so the callers it just woke can record their next change
// before it starts the next transaction: on a small machine that fills the
// batches instead of committing the first arrival alone.
//
// What a commit costs is mostly the pages it dirties (each is a WAL frame
// written at COMMIT), so the writer keeps that small: the writer owns one
// connection with every statement prepared on it (BEGIN IMMEDIATE and COMMIT
// included) and never checkpoints (below); events are stored in a
// compact binary form (a third of their JSON); statements are multi-row; an
// existing item's row is updated in place; changes to the same item within a
// batch are coalesced (an item enqueued and completed in one batch never gets
// a row) — but every change always gets its event row. The next queue
// sequence id is persisted ahead of use (a reservation of 1024 ids), so it is
// written once per thousand enqueues rather than every batch; after a restart
// ids may skip, never repeat.
//
// # WAL checkpoints
//
// In WAL mode every commit appends its pages to the write-ahead log, and a
// checkpoint copies them back into the database file so that the log can
// start again. SQLite's automatic checkpoint runs inside the COMMIT that
// takes the log past a threshold, which would make that one commit, and
// every caller waiting on its batch, pay tens of milliseconds for the copy
// and its fsync. So the writer's connection has the automatic checkpoint
// off, and a goroutine of the replicator's own (stopped by Close) does the
// copying, on another connection of the pool:
//
//   - every CheckpointPages pages (default 1000) a PASSIVE checkpoint, which
//     neither waits for nor blocks a commit. It copies what the log held when
//     it started; if no commit came meanwhile, the next commit starts the log
//     from its beginning, which is what usually happens below saturation;
//   - when a PASSIVE checkpoint finds the log at MaxWALPages or more (default
//     four times CheckpointPages), because commits never paused long enough
//     or a reader keeps an old snapshot, a RESTART checkpoint at the
//     writer's next idle moment, right after another PASSIVE one has copied
//     nearly everything. It needs the write lock, so it takes the writer's
//     turn between two transactions: a commit that arrives in that window
//     waits for it (a millisecond or so). Its busy timeout is zero, so it
//     never waits for a reader while the writer waits for it: if a reader's
//     snapshot is in the way it gives up until the next round;
//   - only if the log reaches twice MaxWALPages anyway (a writer that is
//     never idle, on a disk where a checkpoint takes long) is the writer's
//     next transaction held until the log has been reset: the one deliberate
//     stall, of about one checkpoint, the price of a bounded log. If a
//     reader's snapshot makes that reset fail too, the writer goes on and is
//     held again only after another MaxWALPages.
//
// So the -wal file stays under about twice MaxWALPages pages (by default
// 8000 pages, some 32 MiB with 4 KiB pages) while no reader keeps a snapshot
// open for long;
// if one did and the file grew past three times MaxWALPages, the reset after
// it truncates the file. A smaller CheckpointPages keeps the log smaller and
// each checkpoint shorter (so that it ends the log more often); a larger one
// copies a page that many commits change fewer times. Another connection
// that checkpoints the same database (PRAGMA wal_checkpoint) may find the
// replicator's checkpoint in progress and get SQLITE_BUSY back. The metrics
// replication_wal_checkpoints_total{mode,result} and replication_wal_pages
// show what the checkpointer does.
//
// # Why the queue state lives beside the log
//
// A mutation and its event must commit together (guarantee 4 in docs/guarantees.md): if the queue
// state were in one store and the log in another, a crash between the two
// writes would leave an event for a mutation that did not happen, or the
// reverse. Writing both in one SQLite transaction makes them atomic for free,
// and the same group commit amortises both. The engine keeps its index in
// memory (no query per lease); the tables are write-through, read only by
// LoadState at start:
//
//	queue_items   one row per pending, leased or dead-lettered item
//	queue_dedupe  requestId → sequence id, kept for the dedupe window
//	replication_events  the log (Retention newest events)
//	replication_meta    schema version and the next queue sequence id
//
// If a write or a commit fails in a way that can clear by itself (SQLite
// reports busy, locked, a full disk or an I/O error: a lock another process
// holds, a full disk), memory is ahead of disk, so nothing may be
// acknowledged until the disk has caught up: the writer stalls. The Acks of
// that batch, of every batch behind it and of every later Record are
// answered at once with an unavailable *resourcelease.Error (code
// error.resourcelease.storage_unavailable) naming the path, the stage and
// the cause, while the writer retries the batch with backoff (50 ms doubling
// to 2 s). When the storage works again it commits what it holds, in order
// and gap-free, and goes on: the store recovers by itself. An unavailable
// answer is therefore an unknown outcome, as a timeout is (the change may
// be committed later; a retried enqueue with the same requestId is then
// answered as a duplicate). The replicator gives up and is poisoned — every
// later Record refused until a restart, which rebuilds from the disk — when
// it is closed while stalled (the changes not written are lost; none was
// acknowledged), when more than 16,384 changes or 64 MiB of them wait
// (counted from Record to commit, across stalls), and at once on a failure
// retrying cannot mend: a change that cannot be turned into rows, a
// constraint (an event row that already exists), a schema error (a missing
// table), the queue tables out of step with the log. While stalled,
// StorageStalled reports it, and the queue engine refuses leases and
// heartbeats up front rather than fill that bound.
//
// # Sinks
//
// AddSink registers an EventSink. Synchronous sinks run in the writer after
// the commit, in registration order, before the Acks complete; a failure
// completes the Acks of that event and the later ones of the batch with a
// replication_failed error naming the sink and the sequence. The event is not
// lost: the sink gets it again — on the next batch, or from a retry timer
// when the queue is idle — before any later event. Asynchronous sinks each
// have a goroutine and a cursor and read the log itself (memory first, then
// the database), so one that falls behind costs no extra memory; failures are
// retried with doubling backoff on the injected clock and reported by
// SinkStatus. A sink that implements resourcelease.BatchEventSink gets a
// whole commit batch (or catch-up read) in one ApplyEvents call, redelivered
// whole if it fails. Log trimming never removes an event a registered sink
// has not applied.
//
// [CheckpointSink] makes a sink apply each event once under redelivery;
// [RecentLog] keeps the newest events for the diagnostics page.
//
// # Reading the log
//
// ReadEvents(after, limit) serves tails: recent events from memory, older ones
// with one indexed query. Another process can open the database read-only
// and use [SQLiteLogReader].
//
// # Metrics
//
// Both replicators are prometheus.Collectors (nothing is registered
// globally): replication_events_total{event_type},
// replication_last_sequence, replication_storage_failing (1 while writes
// fail), replication_sink_lag_seconds{sink},
// replication_commit_batch_size and replication_sink_failures_total{sink};
// the SQLite replicator also replication_wal_checkpoints_total{mode,result}
// and replication_wal_pages.
//
// This package never imports the cgo SQLite driver: it takes a *sql.DB.
// Open one with package sqlitedb.
package replication
