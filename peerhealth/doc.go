// Package peerhealth tracks the health of the workers (peers) that lease
// work from a leasemesh dispatcher. A [Tracker] implements
// resourcelease.PeerHealth: the dispatcher tells it about every lease it
// grants, every heartbeat, and every lease that ends, and asks it whether a
// peer may be given another lease. The tracker serves per-peer snapshots, a
// summary and the diagnostics payload of DESIGN §7, and is a
// prometheus.Collector.
//
// # What the tracker is told
//
//	RecordAssignment  a lease was granted        activity; the token becomes active
//	RecordHeartbeat   a lease was extended       activity; the token is (re)marked active
//	RecordRelease     completed / failed+requeue activity; the token is no longer active
//	RecordDisconnect  failed without requeue,    the token is no longer active and
//	                  or the lease expired        counts as a pending reassignment
//
// The tracker learns only from these calls: it never sees a long-poll lease
// request that found nothing, so it cannot tell an idle worker from a dead
// one. The health rules below are built around that.
//
// # Health
//
// A peer is unhealthy when either
//
//   - it lost a lease by disconnect or expiry and has not been heard from
//     since (no assignment, heartbeat or release after the disconnect), or
//   - it holds at least one lease and has not been heard from for longer than
//     the grace period (it is not heartbeating what it holds).
//
// Otherwise it is healthy. In particular a peer that holds no leases owes no
// heartbeats: a worker polling an empty queue stays healthy however long the
// queue stays empty. (A strict "activity within the grace period" rule would
// mark every idle worker unhealthy and, with the dispatcher refusing leases to
// unhealthy peers, lock it out for good.) Releases count as activity because
// completing or failing a lease is a call the worker made.
//
// # Pending reassignments
//
// A peer's pendingReassignments is the number of leases it lost by disconnect
// or expiry since it was last heard from. Those items went back to the queue
// (or to the dead letters) and must be picked up by some peer; the count
// drops to zero as soon as the peer shows fresh activity, because a peer that
// is back is again available to take such work. The summary's
// pendingReassignments is the sum over all peers.
//
// # Eligibility
//
// IsPeerEligible is what the dispatcher asks before granting a lease. Unknown
// peers are eligible (a new worker must be able to get its first lease), and
// healthy peers are eligible. An unhealthy peer is refused, with one bounded
// exception so that refusal is never permanent: a peer that is unhealthy only
// because it lost a lease, and whose last disconnect is older than the
// quarantine period (Config.Quarantine, by default the grace period), is
// eligible again. Without it a worker that once let a lease expire could never
// get the assignment that would make it healthy again. A peer that holds
// leases it does not heartbeat stays ineligible until those leases expire.
//
// # Cost and memory
//
// The Record methods are called with the queue's lock held, so each is O(1)
// amortised: a map lookup, a few field writes, and pruning of forgotten peers
// from the front of a list ordered by last contact. A peer that holds no
// leases and has not been heard from for longer than Config.Retention is
// forgotten, and the tracker never remembers more than Config.MaxPeers peers:
// a new peer beyond that evicts the least recently seen peer that holds no
// leases (or, only when every peer holds leases, the least recently seen
// holder), found in O(1) at the front of a list ordered by last contact,
// and counted by peerhealth_evictions_total. So memory
// stays bounded however many peers come and go, and however fast. Gossip
// metadata (the attributes of a peer's most recent assignment that had any) is
// bounded in keys and in key and value length, and the reason label of the
// disconnect counter is bounded in cardinality.
//
// Reads (Snapshot, Snapshots, Summary, Diagnostics, Collect) take the same
// lock and copy what they return; they cost O(peers).
package peerhealth
