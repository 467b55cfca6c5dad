// Package peerhealth tracks the health of the workers (peers) that lease
// work from a leasemesh dispatcher. A [Tracker] implements
// resourcelease.PeerHealth: the dispatcher tells it about every lease request,
// every lease it grants, every heartbeat, and every lease that ends, and asks
// it whether to serve a peer's lease request. The tracker serves per-peer
// snapshots, a summary and the diagnostics payload
// {"peers":[...],"summary":{...}}, and is a prometheus.Collector.
//
// # What the tracker is told
//
//	AdmitLease        a lease request arrived      activity; the breaker's answer
//	RecordLeaseMiss   that request got no lease    activity
//	RecordAssignment  a lease was granted          activity; the token becomes active
//	RecordHeartbeat   a lease was extended         activity; the token is (re)marked active; the breaker closes
//	RecordRelease     completed, failed (requeued  activity; the token is no longer active;
//	                  or not), or given back       the breaker closes (not on a give-back)
//	RecordDisconnect  the lease expired unsettled  the token is no longer active, counts as a
//	                                               pending reassignment and as an expiry
//
// A fail is a release whatever becomes of the item: a worker that fails or
// dead-letters a poison item made that decision while talking to the
// dispatcher, so it is healthy. Only a lease that expired without being
// settled means the peer went silent.
//
// # Health
//
// A peer is unhealthy when
//
//   - it lost a lease by expiry and has not been heard from since (no lease
//     request, assignment, heartbeat or release after the expiry), or
//   - it holds at least one lease and has not been heard from for longer than
//     the grace period (it is not heartbeating what it holds), or
//   - its breaker is not closed.
//
// Otherwise it is healthy. In particular a peer that holds no leases owes no
// heartbeats: a worker polling an empty queue stays healthy however long the
// queue stays empty.
//
// # Pending reassignments
//
// A peer's pendingReassignments is the number of leases it lost by expiry
// since it was last heard from. Those items went back to the queue (or to the
// dead letters) and must be picked up by some peer; the count drops to zero
// as soon as the peer shows fresh activity, because a peer that is back is
// again available to take such work. The summary's pendingReassignments is
// the sum over all peers.
//
// # The breaker
//
// AdmitLease is a circuit breaker per peer, not a verdict on its health.
// Unknown peers are admitted, and so is every peer whose breaker is closed.
// The breaker opens after Config.BreakerThreshold (3) consecutive lease
// expiries of the peer with no successful heartbeat or settle of it in
// between; expiries recorded at the same instant, as one sweep finds them,
// count as one. While open, for Config.BreakerCooldown (30s), every request
// is answered with the rest of the cool-down (the dispatcher refuses it with
// failed-precondition and Retry-After). Then the breaker is half-open: one
// request is let through, and others are answered with one second until it
// is decided. A successful heartbeat or settle (of any of the peer's leases)
// closes the breaker; an expiry while half-open opens it for a fresh
// cool-down; a trial request that got no lease, or whose lease was given back
// unused, lets the next request through. A worker that fails or dead-letters
// items, or whose first lease expires, is therefore never refused.
//
// IsPeerEligible asks the same question as AdmitLease without changing
// anything; the summary's eligiblePeers counts the peers it admits.
//
// # Cost and memory
//
// The Record methods are called with the queue's lock held (AdmitLease and
// RecordLeaseMiss on every lease request, without it), so each is O(1)
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
// lock and copy what they return; they cost O(peers). A forgotten or evicted
// peer loses its breaker with the rest of its state; a peer that keeps asking
// for leases is heard from, so it is not forgotten while refused.
package peerhealth
