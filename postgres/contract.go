package postgres

// The few places where the queue's rows meet the shape of resourcelease's
// types.

import (
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// failDeadLetters reports whether a fail dead-letters the item at once
// rather than requeueing it.
func failDeadLetters(o resourcelease.FailOptions) bool { return o.DeadLetter }

// newLease builds a granted Lease from its row.
func newLease(r *itemRow, ttl, hb time.Duration) *resourcelease.Lease {
	return &resourcelease.Lease{
		Payload:           r.item,
		SequenceID:        r.seq,
		Attempt:           r.attempt,
		EnqueuedAt:        r.enqueuedAt,
		LastError:         r.lastError,
		OwnershipToken:    r.token(),
		OwnerPeerID:       deref(r.owner),
		LeaseExpiresAt:    utc(r.expiresAt),
		TTL:               ttl,
		HeartbeatInterval: hb,
	}
}

// setReleases records an item's release count in a PendingItem.
func setReleases(p *resourcelease.PendingItem, n int) { p.Releases = n }

// releasesOf is a restored item's release count (never negative).
func releasesOf(p *resourcelease.PendingItem) int { return max(p.Releases, 0) }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
