// Package deterministic records the effect of each replication event exactly
// once, so that replaying the replication log after a failover or a restart
// never applies anything twice.
//
// Everything rests on one primitive of [resourcelease.StateStore]: TryAdd,
// which stores a record under a key only if the key is absent and reports
// whether it did. Two implementations are provided:
//
//   - [MemoryStore], a map guarded by a mutex, for tests and for processes
//     that need no durability;
//   - [SQLiteStore], which keeps its records in one table of a SQLite database
//     that the caller opened (typically <dataDirectory>/deterministic.db, see
//     [DefaultFileName], opened with package sqlitedb). It takes a *sql.DB and
//     imports no driver, so this package builds without cgo.
//
// On top of a store sit three helpers, each a thin layer over TryAdd:
//
//   - [EffectStore] runs a function at most once per effect id and replays its
//     recorded result afterwards, including after a restart;
//   - [VersionGate] records one version decision per change id; the first
//     caller wins and a conflicting later caller gets [ErrVersionConflict];
//   - [Coordinator] is a [resourcelease.EventSink] that records every
//     replication event under <changeId>/seq/<sequenceNumber>, counting what it
//     recorded and what it skipped as a replay. As a
//     [resourcelease.BatchEventSink] it records a replicator's whole commit
//     batch at once.
//
// Both stores are also a [BatchStateStore], whose TryAddMany adds many
// records in one atomic step (for SQLiteStore, one transaction): the
// Coordinator's ApplyEvents uses it so that a synchronous Coordinator costs
// one commit per replicator batch rather than one per event.
//
// # Keys
//
// All helpers namespace their keys, so one store can serve several of them:
//
//	<changeId>/seq/<sequenceNumber>   Coordinator (changeId defaults to "resourcelease")
//	effect/<effectId>                 EffectStore (prefix configurable)
//	version/<changeId>                VersionGate (prefix configurable)
//
// # Failure
//
// A store never loses a write silently: a write it could not make returns an
// unavailable [*resourcelease.Error] with code
// error.resourcelease.storage_unavailable naming the operation, and the
// Coordinator turns it into error.resourcelease.deterministic_failed naming the
// stage and the sequence number (the first of the batch, for ApplyEvents), so
// the replicator redelivers the event or the batch. Because TryAdd and
// TryAddMany are idempotent, the redelivery records each effect once.
//
// Exactly-once across processes comes from the store alone: two processes
// sharing one SQLite file race on TryAdd and exactly one wins. Within one
// process the EffectStore additionally serializes captures of the same effect
// id, so its function does not even run twice.
package deterministic
