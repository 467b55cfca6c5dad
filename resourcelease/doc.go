// Package resourcelease is the centre of leasemesh: the work item and its
// lease, the Dispatcher interface that every way of reaching a queue
// implements, errors with wire statuses and stable codes, and the queue
// engine. It imports none of leasemesh's other packages and builds without
// cgo.
//
// # Start here
//
// Most users need five names from this package:
//
//   - [Item]: one piece of work (resourceType, resourceId, partitionKey,
//     payloadEncoding, body); [Enqueue] enqueues a Go value as its body.
//   - [Lease]: an item handed to one worker, with its [OwnershipToken] and its
//     expiry; heartbeat it while working, then complete or fail it.
//   - [Dispatcher]: the procedures of the protocol (enqueue, lease,
//     heartbeat, complete, fail, drain, restore, dead letters). A dispatcher
//     in process (leasemesh.Open) and a transport.Client over the network are
//     both one, so the same code runs either way.
//   - [QueueConfig]: capacity, lease duration, heartbeat interval, requeue
//     delay and backoff, delivery attempts, dedupe window, with their defaults.
//   - [Error] and its sentinels ([ErrUnknownToken], [ErrQueueFull], ...):
//     errors.Is works on them in process and across the wire.
//
// To run a dispatcher, use package leasemesh (leasemesh.Open wires a durable
// one in one call); to work leases, package worker.
//
// # For implementers
//
// The other names are contracts between leasemesh's own packages, listed
// here so that they do not crowd the API above. A storage implements
// [Journal] (it receives every [Change] in order and returns an [Ack] once
// the change is durable) and, when durable, [StateLoader] (a [QueueState] to
// rebuild from); a replication log implements [Replicator] and feeds
// [EventSink]s ([BatchEventSink], [ResumableSink]); deterministic capture
// implements [StateStore]; peer health and backpressure implement
// [PeerHealth] and [BackpressureController]. [Engine] is the queue engine
// (in memory, and durable with a durable Journal) and [LocalDispatcher] the
// composition that leasemesh.Open builds. Users of a queue need none of them.
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
