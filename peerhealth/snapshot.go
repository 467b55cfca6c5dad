package peerhealth

import (
	"cmp"
	"slices"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Disconnect is the last lease a peer lost by letting it expire: when, and
// the reason the dispatcher gave (such as resourcelease.DisconnectLeaseExpired).
type Disconnect struct {
	Time   time.Time `json:"time"`
	Reason string    `json:"reason"`
}

// PeerSnapshot is one peer's health at one instant, as served on the control
// plane and the diagnostics page.
type PeerSnapshot struct {
	// PeerID identifies the peer.
	PeerID string `json:"peerId"`
	// LastHeartbeat is when the peer was last heard from: its last lease
	// request, assignment, heartbeat or release. Zero if it never was (a peer
	// known only from a disconnect).
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	// LastDisconnect is the last lease it let expire, nil if none.
	LastDisconnect *Disconnect `json:"lastDisconnect"`
	// IsHealthy applies the health rules of the package doc.
	IsHealthy bool `json:"isHealthy"`
	// ActiveAssignments is the number of leases it holds (len(ActiveLeases)).
	ActiveAssignments int `json:"activeAssignments"`
	// PendingReassignments is the number of leases it lost by disconnect or
	// expiry since it was last heard from.
	PendingReassignments int `json:"pendingReassignments"`
	// ActiveLeases are the ownership tokens of the leases it holds, by
	// sequence id.
	ActiveLeases []resourcelease.OwnershipToken `json:"activeLeases"`
	// Metadata is its gossip metadata: the attributes of its most recent
	// assignment that had any.
	Metadata map[string]string `json:"metadata"`
	// Breaker is the state of its circuit breaker: closed, open (refused
	// until BreakerOpenUntil) or half-open.
	Breaker BreakerState `json:"breaker"`
	// ConsecutiveExpiries is the number of its leases that expired since its
	// last successful heartbeat or settle (expiries found by one sweep count
	// once).
	ConsecutiveExpiries int `json:"consecutiveExpiries"`
	// BreakerOpenUntil is when the cool-down of an open breaker ends; nil
	// unless Breaker is open.
	BreakerOpenUntil *time.Time `json:"breakerOpenUntil,omitempty"`
}

// Summary counts the peers the tracker knows.
type Summary struct {
	// EligiblePeers is the number of known peers that IsPeerEligible would
	// grant a lease.
	EligiblePeers int `json:"eligiblePeers"`
	// UnhealthyPeers is the number of known peers that are not healthy.
	UnhealthyPeers int `json:"unhealthyPeers"`
	// PendingReassignments is the sum of the peers' pending reassignments.
	PendingReassignments int `json:"pendingReassignments"`
}

// Diagnostics is the peer-health payload of the control plane and the
// diagnostics page: {"peers":[...],"summary":{...}}.
type Diagnostics struct {
	// Peers are the snapshots of every known peer, by peer id; never nil.
	Peers []PeerSnapshot `json:"peers"`
	// Summary counts them.
	Summary Summary `json:"summary"`
}

// Snapshot returns peerID's health now, and false if the tracker does not
// know the peer (never seen, or forgotten after Config.Retention).
func (t *Tracker) Snapshot(peerID string) (PeerSnapshot, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Clock.Now()
	t.prune(now)
	p, ok := t.peers[peerID]
	if !ok {
		return PeerSnapshot{}, false
	}
	return t.snapshot(p, now), true
}

// Snapshots returns the health of every known peer now, sorted by peer id.
func (t *Tracker) Snapshots() []PeerSnapshot {
	return t.Diagnostics().Peers
}

// Summary returns the peer counts now.
func (t *Tracker) Summary() Summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Clock.Now()
	t.prune(now)
	var s Summary
	for _, p := range t.peers {
		t.count(&s, p, now)
	}
	return s
}

// Diagnostics returns every peer's snapshot and the summary, computed at the
// same instant.
func (t *Tracker) Diagnostics() Diagnostics {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Clock.Now()
	t.prune(now)
	d := Diagnostics{Peers: make([]PeerSnapshot, 0, len(t.peers))}
	for _, p := range t.peers {
		d.Peers = append(d.Peers, t.snapshot(p, now))
		t.count(&d.Summary, p, now)
	}
	slices.SortFunc(d.Peers, func(a, b PeerSnapshot) int { return cmp.Compare(a.PeerID, b.PeerID) })
	return d
}

// count adds p to s. t.mu must be held.
func (t *Tracker) count(s *Summary, p *peer, now time.Time) {
	if p.eligible(now) {
		s.EligiblePeers++
	}
	if !t.healthy(p, now) {
		s.UnhealthyPeers++
	}
	s.PendingReassignments += p.lost
}

// snapshot copies p's state. t.mu must be held.
func (t *Tracker) snapshot(p *peer, now time.Time) PeerSnapshot {
	s := PeerSnapshot{
		PeerID:               p.id,
		LastHeartbeat:        p.lastActivity,
		IsHealthy:            t.healthy(p, now),
		ActiveAssignments:    len(p.active),
		PendingReassignments: p.lost,
		ActiveLeases:         make([]resourcelease.OwnershipToken, 0, len(p.active)),
		Metadata:             make(map[string]string, len(p.metadata)),
		Breaker:              breakerStates[p.state(now)],
		ConsecutiveExpiries:  p.expiries,
	}
	if s.Breaker == BreakerOpen {
		until := p.openUntil
		s.BreakerOpenUntil = &until
	}
	if p.lastDisconnect != nil {
		d := *p.lastDisconnect
		s.LastDisconnect = &d
	}
	for tok := range p.active {
		s.ActiveLeases = append(s.ActiveLeases, tok)
	}
	slices.SortFunc(s.ActiveLeases, func(a, b resourcelease.OwnershipToken) int {
		return cmp.Or(
			cmp.Compare(a.SequenceID, b.SequenceID),
			cmp.Compare(a.Attempt, b.Attempt),
			slices.Compare(a.LeaseID[:], b.LeaseID[:]),
		)
	})
	for k, v := range p.metadata {
		s.Metadata[k] = v
	}
	return s
}
