package postgres

// Merge shim: the few places where the queue's code depends on the shape of
// resourcelease types that change when the store-neutral Queue contract
// lands on main (FailOptions.Requeue becomes DeadLetter; Lease gains TTL and
// HeartbeatInterval in place of HeartbeatIntervalMs; PendingItem gains
// Releases). At the merge, edit the bodies below as their comments say;
// nothing else in the package needs to change for it, apart from renaming
// resourcelease.HeartbeatResult to HeartbeatResponse and StoreQueue to
// Queue (see resourcelease/contract_shim.go).

import (
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// failDeadLetters reports whether a fail dead-letters the item at once
// rather than requeueing it. At merge: return o.DeadLetter.
func failDeadLetters(o resourcelease.FailOptions) bool { return !o.Requeue }

// newLease builds a granted Lease. At merge: set TTL: ttl and
// HeartbeatInterval: hb instead of HeartbeatIntervalMs.
func newLease(r *itemRow, ttl, hb time.Duration) *resourcelease.Lease {
	_ = ttl
	return &resourcelease.Lease{
		Payload:             r.item,
		SequenceID:          r.seq,
		Attempt:             r.attempt,
		EnqueuedAt:          r.enqueuedAt,
		LastError:           r.lastError,
		OwnershipToken:      r.token(),
		OwnerPeerID:         deref(r.owner),
		LeaseExpiresAt:      utc(r.expiresAt),
		HeartbeatIntervalMs: hb.Milliseconds(),
	}
}

// setReleases records an item's release count in a PendingItem. At merge:
// p.Releases = n.
func setReleases(p *resourcelease.PendingItem, n int) { _, _ = p, n }

// releasesOf is a restored item's release count. At merge: return
// max(p.Releases, 0).
func releasesOf(p *resourcelease.PendingItem) int { _ = p; return 0 }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
