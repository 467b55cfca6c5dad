package peerhealth

import (
	"container/list"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Defaults of Config.
const (
	// DefaultGracePeriod is how long a peer holding leases may go unheard
	// before it is unhealthy.
	DefaultGracePeriod = 30 * time.Second
	// DefaultRetention is how long a peer without leases is remembered after
	// it was last heard from.
	DefaultRetention = 10 * time.Minute
	// DefaultMaxMetadataKeys is the most gossip metadata entries kept per peer.
	DefaultMaxMetadataKeys = 32
	// DefaultMaxPeers is the most peers a Tracker remembers.
	DefaultMaxPeers = 10_000
	// DefaultBreakerThreshold is how many consecutive lease expiries open a
	// peer's breaker.
	DefaultBreakerThreshold = 3
	// DefaultBreakerCooldown is how long an open breaker refuses its peer.
	DefaultBreakerCooldown = 30 * time.Second
)

// MaxMetadataLength is the most bytes kept of a metadata key or value; longer
// ones are cut at a UTF-8 boundary.
const MaxMetadataLength = 256

// maxReasonLabels bounds the distinct values of the reason label of
// peerhealth_disconnects_total; further reasons are counted as "other".
const maxReasonLabels = 32

// Config configures a Tracker. The zero value of every field means its
// documented default; negative values are an error.
type Config struct {
	// GracePeriod is how long a peer that holds leases may go without being
	// heard from (a lease request, assignment, heartbeat or release) before it
	// is unhealthy. Defaults to 30s.
	GracePeriod time.Duration
	// BreakerThreshold is how many consecutive lease expiries of a peer, with
	// no successful heartbeat or settle of it in between, open its breaker
	// (AdmitLease then refuses it for BreakerCooldown). Expiries recorded at
	// the same instant, as one sweep finds them, count as one. Defaults to 3;
	// 1 is an error, because a peer whose first lease expires is never
	// refused.
	BreakerThreshold int
	// BreakerCooldown is how long an open breaker refuses its peer before it
	// lets one lease request through (half-open). Defaults to 30s.
	BreakerCooldown time.Duration
	// Retention is how long a peer that holds no leases is remembered after it
	// was last heard from (or last disconnected); then it is forgotten.
	// Defaults to 10 minutes.
	Retention time.Duration
	// MaxMetadataKeys is the most gossip metadata entries kept per peer; when
	// an assignment carries more, the first ones in key order are kept.
	// Defaults to 32.
	MaxMetadataKeys int
	// MaxPeers is the most peers the tracker remembers. It exists because
	// Retention forgets peers by time only: clients that invent peer ids
	// faster than Retention expires them (each id is a new peer) would grow
	// the tracker without bound, so MaxPeers bounds its memory by count.
	//
	// When a peer the tracker does not know is heard from while MaxPeers
	// peers are remembered, the tracker first forgets the peers past
	// Retention, then evicts the peer that holds no leases and was least
	// recently seen. A peer that holds leases is evicted only when every
	// remembered peer holds leases, and then it is the least recently seen
	// of them. An evicted peer is as good as unknown: it is eligible, and it
	// is tracked afresh (with the lease it heartbeats) when next heard from.
	// Evictions are counted by peerhealth_evictions_total.
	// Defaults to 10,000 (DefaultMaxPeers).
	MaxPeers int
	// Clock is the source of time for health decisions made at read time.
	// Nil means resourcelease.SystemClock.
	Clock resourcelease.Clock
}

func (c Config) withDefaults() (Config, error) {
	for _, f := range [...]struct {
		name string
		v    time.Duration
	}{
		{"GracePeriod", c.GracePeriod},
		{"BreakerCooldown", c.BreakerCooldown},
		{"Retention", c.Retention},
	} {
		if f.v < 0 {
			return c, configError("%s must not be negative, got %v", f.name, f.v)
		}
	}
	if c.BreakerThreshold < 0 || c.BreakerThreshold == 1 {
		return c, configError("BreakerThreshold must be 0 (the default, %d) or at least 2, got %d", DefaultBreakerThreshold, c.BreakerThreshold)
	}
	if c.MaxMetadataKeys < 0 {
		return c, configError("MaxMetadataKeys must not be negative, got %d", c.MaxMetadataKeys)
	}
	if c.MaxPeers < 0 {
		return c, configError("MaxPeers must not be negative, got %d", c.MaxPeers)
	}
	if c.GracePeriod == 0 {
		c.GracePeriod = DefaultGracePeriod
	}
	if c.BreakerThreshold == 0 {
		c.BreakerThreshold = DefaultBreakerThreshold
	}
	if c.BreakerCooldown == 0 {
		c.BreakerCooldown = DefaultBreakerCooldown
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.MaxMetadataKeys == 0 {
		c.MaxMetadataKeys = DefaultMaxMetadataKeys
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = DefaultMaxPeers
	}
	if c.Clock == nil {
		c.Clock = resourcelease.SystemClock
	}
	return c, nil
}

// configError is a bad Config: invalid-argument, like every leasemesh
// configuration error.
func configError(format string, args ...any) *resourcelease.Error {
	return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "peerhealth: Config."+format, args...)
}

// Tracker keeps the lease health of every peer a dispatcher deals with. It
// implements resourcelease.PeerHealth (the dispatcher feeds it) and
// prometheus.Collector (register it with a registry of your choice). Create
// one with New; it starts no goroutines and needs no Close. It is safe for
// concurrent use.
type Tracker struct {
	cfg Config

	mu    sync.Mutex
	peers map[string]*peer
	// idle holds the peers with no active leases and busy those with some,
	// each ordered by last contact (oldest first); every known peer is in
	// exactly one of them. Forgetting a peer (by retention or eviction) thus
	// costs O(1).
	idle, busy *list.List

	assignments uint64
	heartbeats  uint64
	releases    [len(releaseOutcomes)]uint64 // by outcome, in releaseOutcomes order
	disconnects map[string]uint64
	evictions   [2]uint64 // [0] idle peers, [1] peers holding leases
	trips       uint64    // breakers opened (or reopened from half-open)

	descs descs
}

var (
	_ resourcelease.PeerHealth = (*Tracker)(nil)
	_ prometheus.Collector     = (*Tracker)(nil)
)

// peer is one peer's state; it is guarded by Tracker.mu.
type peer struct {
	id string
	// lastActivity is the last lease request, assignment, heartbeat or
	// release.
	lastActivity time.Time
	// lastSeen is the later of lastActivity and the last disconnect; it drives
	// retention.
	lastSeen       time.Time
	lastDisconnect *Disconnect
	// lost counts the leases lost by disconnect since the last activity. It is
	// the peer's pendingReassignments, and lost > 0 makes the peer unhealthy.
	lost     int
	active   map[resourcelease.OwnershipToken]struct{}
	metadata map[string]string
	// elem is the peer's element in Tracker.idle while it holds no leases,
	// in Tracker.busy otherwise (see Tracker.lru).
	elem *list.Element
	breaker
}

// New returns a Tracker configured by cfg.
func New(cfg Config) (*Tracker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Tracker{
		cfg:         cfg,
		peers:       make(map[string]*peer),
		idle:        list.New(),
		busy:        list.New(),
		disconnects: make(map[string]uint64),
		descs:       newDescs(),
	}, nil
}

// RecordAssignment records that a lease identified by token was granted to
// peerID at at (the clock's now when zero). The token becomes one of the
// peer's active leases, the peer counts as heard from, and metadata (the
// leased item's attributes), when not empty, replaces the peer's gossip
// metadata (bounded by Config.MaxMetadataKeys and MaxMetadataLength).
func (t *Tracker) RecordAssignment(peerID string, token resourcelease.OwnershipToken, metadata map[string]string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at = t.at(at)
	t.assignments++
	p := t.touch(peerID, at)
	p.activity(at)
	t.addActive(p, token)
	t.assigned(p, token, at)
	if len(metadata) > 0 {
		p.metadata = boundMetadata(metadata, t.cfg.MaxMetadataKeys)
	}
	t.prune(at)
}

// RecordHeartbeat records that peerID extended the lease identified by token
// at at (the clock's now when zero). The peer counts as heard from, its
// breaker closes, and the token is marked active if the tracker did not know
// it (as after a dispatcher restart that kept its leases). pendingCount, the
// queue's pending count at the heartbeat, says nothing about the peer and is
// not kept.
func (t *Tracker) RecordHeartbeat(peerID string, token resourcelease.OwnershipToken, pendingCount int, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at = t.at(at)
	t.heartbeats++
	p := t.touch(peerID, at)
	p.activity(at)
	t.addActive(p, token)
	p.close()
	t.prune(at)
}

// RecordRelease records that the lease identified by token ended without
// expiring at at (the clock's now when zero), as outcome says: completed, or
// failed (requeued or dead-lettered), or given back unused. The peer counts
// as heard from. Every outcome but a give-back is a settle, which closes the
// peer's breaker: a worker that fails or dead-letters items is talking to the
// dispatcher, and is never refused for it.
func (t *Tracker) RecordRelease(peerID string, token resourcelease.OwnershipToken, outcome resourcelease.ReleaseOutcome, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at = t.at(at)
	if i := slices.Index(releaseOutcomes[:], outcome); i >= 0 {
		t.releases[i]++
	}
	p := t.touch(peerID, at)
	p.activity(at)
	t.removeActive(p, token)
	if outcome == resourcelease.ReleaseGivenBack {
		p.givenBack(token)
	} else {
		p.close()
	}
	t.prune(at)
}

// RecordDisconnect records that peerID lost the lease identified by token at
// at (the clock's now when zero) because it expired without being settled.
// reason says how the item ended up (it labels the disconnect counter). The
// peer is unhealthy until it is heard from again, the lease counts as one of
// its pending reassignments, and the expiry counts towards opening its
// breaker (expiries at the same instant count once).
func (t *Tracker) RecordDisconnect(peerID string, token resourcelease.OwnershipToken, reason string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at = t.at(at)
	t.countDisconnect(reason)
	p := t.touch(peerID, at)
	p.lastDisconnect = &Disconnect{Time: at, Reason: truncate(reason)}
	p.lost++
	t.removeActive(p, token)
	t.expired(p, at)
	t.prune(at)
}

// AdmitLease implements resourcelease.PeerHealth: peerID asks for a lease at
// at (the clock's now when zero). The request counts as hearing from the
// peer. It returns zero when the peer's breaker lets the request through,
// else how long the peer should wait before asking again: the rest of the
// cool-down while the breaker is open, one second while it is half-open and
// its one trial request or lease is under way.
func (t *Tracker) AdmitLease(peerID string, at time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	at = t.at(at)
	p := t.touch(peerID, at)
	p.activity(at)
	retry := p.admit(at)
	t.prune(at)
	return retry
}

// OnTrial reports whether peerID's lease request now in flight is its
// breaker's half-open trial: the dispatcher then grants it one lease, not a
// batch, so that a peer that may still be sick risks one item.
func (t *Tracker) OnTrial(peerID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.peers[peerID]
	return ok && p.stored == breakerHalfOpen && p.probing && p.trial.IsZero()
}

// RecordLeaseMiss implements resourcelease.PeerHealth: a lease request of
// peerID that AdmitLease let through ended at at (the clock's now when zero)
// without a lease. The peer counts as heard from, and a half-open breaker
// lets its next request through.
func (t *Tracker) RecordLeaseMiss(peerID string, at time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at = t.at(at)
	p := t.touch(peerID, at)
	p.activity(at)
	p.probing = false
	t.prune(at)
}

// IsPeerEligible reports whether AdmitLease would let a lease request of
// peerID through now. Unlike AdmitLease it changes nothing, and an unknown
// peer stays unknown (and eligible).
func (t *Tracker) IsPeerEligible(peerID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.cfg.Clock.Now()
	t.prune(now)
	p, ok := t.peers[peerID]
	if !ok {
		return true
	}
	return p.eligible(now)
}

// at returns at, or the clock's now when at is zero.
func (t *Tracker) at(at time.Time) time.Time {
	if at.IsZero() {
		return t.cfg.Clock.Now()
	}
	return at
}

// touch returns peerID's state, creating it (within Config.MaxPeers), and
// records contact at at. t.mu must be held.
func (t *Tracker) touch(peerID string, at time.Time) *peer {
	p, ok := t.peers[peerID]
	if !ok {
		if len(t.peers) >= t.cfg.MaxPeers {
			t.makeRoom(at)
		}
		// A new peer holds no leases yet.
		p = &peer{id: peerID}
		p.elem = t.idle.PushBack(p)
		t.peers[peerID] = p
	} else {
		// Requeue at the back of its list: it was just seen.
		t.lru(p).MoveToBack(p.elem)
	}
	if at.After(p.lastSeen) {
		p.lastSeen = at
	}
	return p
}

// lru returns the list p is in: idle when it holds no leases, busy
// otherwise. t.mu must be held.
func (t *Tracker) lru(p *peer) *list.List {
	if len(p.active) == 0 {
		return t.idle
	}
	return t.busy
}

// makeRoom frees one place for a new peer when Config.MaxPeers are known:
// it forgets the peers past retention, and if that is not enough evicts the
// least recently seen idle peer, or, when every known peer holds leases, the
// least recently seen one of those. Both are O(1) amortised: no scan of the
// peers. t.mu must be held.
//
// Evicting a peer that holds leases, rather than refusing to track the new
// peer, is deliberate: the memory bound wins, and it does the least harm.
// The least recently seen holder is the likeliest to be dead (it has gone
// the longest without a heartbeat); if it is alive, its next heartbeat
// tracks it again with the lease it names (RecordHeartbeat marks unknown
// tokens active), and if its lease expires instead, the disconnect tracks
// it again as unhealthy. Refusing would instead blind the tracker to new
// peers for as long as the old holders linger: a new worker's lost leases
// would go unrecorded and it would stay eligible (an unknown peer is)
// however badly it behaved.
func (t *Tracker) makeRoom(now time.Time) {
	t.prune(now)
	if len(t.peers) < t.cfg.MaxPeers {
		return
	}
	if e := t.idle.Front(); e != nil {
		t.evictions[0]++
		t.forget(t.idle, e)
		return
	}
	if e := t.busy.Front(); e != nil {
		t.evictions[1]++
		t.forget(t.busy, e)
	}
}

// forget drops the peer at e of l. t.mu must be held.
func (t *Tracker) forget(l *list.List, e *list.Element) {
	p := l.Remove(e).(*peer)
	p.elem = nil
	delete(t.peers, p.id)
}

func (p *peer) activity(at time.Time) {
	if at.After(p.lastActivity) {
		p.lastActivity = at
	}
	p.lost = 0
}

// addActive marks token active for p; a peer that held no leases moves from
// the idle list to the back of the busy list. t.mu must be held.
func (t *Tracker) addActive(p *peer, token resourcelease.OwnershipToken) {
	if p.active == nil {
		p.active = make(map[resourcelease.OwnershipToken]struct{})
	}
	if len(p.active) == 0 {
		t.idle.Remove(p.elem)
		p.elem = t.busy.PushBack(p)
	}
	p.active[token] = struct{}{}
}

// removeActive ends token for p; a peer left with no leases moves from the
// busy list to the back of the idle list. t.mu must be held.
func (t *Tracker) removeActive(p *peer, token resourcelease.OwnershipToken) {
	if _, ok := p.active[token]; !ok {
		return
	}
	delete(p.active, token)
	if len(p.active) == 0 {
		t.busy.Remove(p.elem)
		p.elem = t.idle.PushBack(p)
	}
}

// prune forgets the idle peers not seen for longer than Retention. The idle
// list is ordered by last contact as long as callers pass non-decreasing
// times; an out-of-order time only delays forgetting the peers behind it.
// t.mu must be held.
func (t *Tracker) prune(now time.Time) {
	for e := t.idle.Front(); e != nil; e = t.idle.Front() {
		if now.Sub(e.Value.(*peer).lastSeen) <= t.cfg.Retention {
			return
		}
		t.forget(t.idle, e)
	}
}

// countDisconnect counts a disconnect under a bounded set of reason labels
// (valid UTF-8, or the scrape would fail).
// t.mu must be held.
func (t *Tracker) countDisconnect(reason string) {
	label := strings.ToValidUTF8(truncate(reason), "\uFFFD")
	if label == "" {
		label = "unspecified"
	}
	if _, ok := t.disconnects[label]; !ok && len(t.disconnects) >= maxReasonLabels {
		label = "other"
	}
	t.disconnects[label]++
}

// healthy applies the health rules of the package doc. t.mu must be held.
func (t *Tracker) healthy(p *peer, now time.Time) bool {
	return p.lost == 0 && !t.stale(p, now) && p.state(now) == breakerClosed
}

// stale reports whether p holds leases it has not heartbeated within the
// grace period.
func (t *Tracker) stale(p *peer, now time.Time) bool {
	return len(p.active) > 0 && now.Sub(p.lastActivity) > t.cfg.GracePeriod
}

// boundMetadata copies md, keeping at most max entries (the first in key
// order) and cutting keys and values to MaxMetadataLength bytes.
func boundMetadata(md map[string]string, max int) map[string]string {
	out := make(map[string]string, min(len(md), max))
	if len(md) <= max {
		for k, v := range md {
			out[truncate(k)] = truncate(v)
		}
		return out
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys[:max] {
		out[truncate(k)] = truncate(md[k])
	}
	return out
}

// truncate cuts s to at most MaxMetadataLength bytes without splitting a
// UTF-8 sequence.
func truncate(s string) string {
	if len(s) <= MaxMetadataLength {
		return s
	}
	cut := MaxMetadataLength
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
