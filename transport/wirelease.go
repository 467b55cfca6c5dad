package transport

import (
	"math"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// wireLease is a lease in its wire shape, for the hot paths: the handler
// encodes leases and the Client decodes them through it rather than through
// resourcelease.Lease's MarshalJSON and UnmarshalJSON, which encoding/json
// calls with an extra encode, scan and copy per lease (about three times the
// cost, measured). The bytes are the same: the golden tests check both.
type wireLease struct {
	Payload             resourcelease.Item           `json:"payload"`
	SequenceID          int64                        `json:"sequenceId"`
	Attempt             int                          `json:"attempt"`
	EnqueuedAt          time.Time                    `json:"enqueuedAt"`
	LastError           *resourcelease.ErrorInfo     `json:"lastError"`
	OwnershipToken      resourcelease.OwnershipToken `json:"ownershipToken"`
	OwnerPeerID         string                       `json:"ownerPeerId"`
	LeaseExpiresAt      time.Time                    `json:"leaseExpiresAt"`
	LeaseTTLMs          int64                        `json:"leaseTtlMs,omitempty"`
	HeartbeatIntervalMs int64                        `json:"heartbeatIntervalMs"`
}

func toWireLease(l *resourcelease.Lease) wireLease {
	return wireLease{
		Payload: l.Payload, SequenceID: l.SequenceID, Attempt: l.Attempt, EnqueuedAt: l.EnqueuedAt,
		LastError: l.LastError, OwnershipToken: l.OwnershipToken, OwnerPeerID: l.OwnerPeerID,
		LeaseExpiresAt: l.LeaseExpiresAt, LeaseTTLMs: l.TTL.Milliseconds(), HeartbeatIntervalMs: l.HeartbeatInterval.Milliseconds(),
	}
}

func (w *wireLease) lease() *resourcelease.Lease {
	return &resourcelease.Lease{
		Payload: w.Payload, SequenceID: w.SequenceID, Attempt: w.Attempt, EnqueuedAt: w.EnqueuedAt,
		LastError: w.LastError, OwnershipToken: w.OwnershipToken, OwnerPeerID: w.OwnerPeerID,
		LeaseExpiresAt: w.LeaseExpiresAt, TTL: durationMs(w.LeaseTTLMs), HeartbeatInterval: durationMs(w.HeartbeatIntervalMs),
	}
}

// wireLeaseBatch is the body of a leaseBatch response.
type wireLeaseBatch struct {
	Items []*wireLease `json:"items"`
}

// durationMs is ms milliseconds, saturating instead of overflowing.
func durationMs(ms int64) time.Duration {
	const most = math.MaxInt64 / int64(time.Millisecond)
	switch {
	case ms > most:
		return math.MaxInt64
	case ms < -most:
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}
