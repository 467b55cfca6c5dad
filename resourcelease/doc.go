// Package resourcelease is the centre of leasemesh: the work item and ownership
// token types, errors with wire statuses and stable codes, the lease queue
// engine, and the interfaces (Queue, Journal, Replicator, StateStore,
// PeerHealth, BackpressureController, Dispatcher) that the other packages
// implement or consume. It imports none of leasemesh's other packages and
// builds without cgo.
//
// # Lease lifecycle
//
//	           enqueue / restore / redrive
//	                     │
//	                     ▼
//	┌──────────────▶  pending  ◀──────────────┐
//	│                    │ lease               │ fail(requeue) / expiry
//	│ release            ▼                     │ (attempt+1, lastError)
//	│ (attempt kept)  leased ──────────────────┘
//	│                    │        │
//	└────────────────────┘        │ fail(no requeue) or attempt > max
//	                     │        ▼
//	            complete │    dead-lettered ──▶ redrive (attempt 1) / purge
//	                     ▼
//	                  removed
//
// A release puts the item back in its old place (by sequence id), at once or
// after a delay, without counting its attempt: for a worker shutting down or
// a handler declining the work. Past QueueConfig.MaxReleases releases in a
// row it counts as a failed attempt, so a declined item cannot loop forever.
//
// # Fencing
//
// Every lease carries an [OwnershipToken] {sequenceId, attempt, leaseId}. The
// leaseId is fresh per lease, so a token is valid only while the lease it was
// issued for is live. After complete, fail, expiry, drain or a newer lease of
// the same item, every call with the old token returns [ErrUnknownToken]. This
// is what stops a worker that paused (GC, network partition) past its expiry
// from completing work that another worker now owns.
//
// A lease's TTL is the time it has left counted from when the dispatcher
// received the request, so a worker that adds it to the time it sent the
// request gets a deadline no later than the dispatcher's, whatever the two
// clocks say; LeaseExpiresAt, in the dispatcher's clock, is for display.
//
// Expiry is checked both by a sweeper (every SweepInterval) and lazily on every
// call that presents a token, so a token is refused the instant its lease has
// passed its expiry, whether or not the sweeper has run yet.
//
// # Time
//
// All time comes from a [Clock]. A nil Clock means real time; tests inject the
// manual clock from package leasetest, so lease expiry, backoff and long-poll
// timeouts are exercised without waiting.
//
// # Durability
//
// The engine keeps its index in memory: choosing the next item is a heap/ring
// operation, never a query. Every state change is handed, in order and under
// the engine's lock, to a [Journal]; a durable Journal (the SQLite replicator in
// package replication) persists the change and its replication event in one
// transaction and acknowledges it, and the engine returns to its caller only
// after that acknowledgement. At start a durable store hands back a
// [QueueState] from which the engine rebuilds itself.
package resourcelease
