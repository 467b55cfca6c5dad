package peerhealth

import (
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// BreakerState is the state of a peer's circuit breaker, as snapshots show
// it.
type BreakerState string

// The breaker states.
const (
	// BreakerClosed: the peer is served (the normal state).
	BreakerClosed BreakerState = "closed"
	// BreakerOpen: the peer's leases expired Config.BreakerThreshold times in
	// a row; it is refused until the cool-down ends.
	BreakerOpen BreakerState = "open"
	// BreakerHalfOpen: the cool-down is over; one lease request is let
	// through, and a heartbeat or settle closes the breaker while an expiry
	// opens it again.
	BreakerHalfOpen BreakerState = "half-open"
)

// trialRetryAfter is the wait AdmitLease answers while a half-open breaker's
// trial is under way: it ends with the trial request, or with the first
// heartbeat of the trial lease, so the peer is told to check back soon.
const trialRetryAfter = time.Second

// breakerState is the stored state; an open breaker whose cool-down has
// passed is half-open (see breaker.state).
type breakerState uint8

const (
	breakerClosed breakerState = iota
	breakerOpen
	breakerHalfOpen
)

var breakerStates = [...]BreakerState{breakerClosed: BreakerClosed, breakerOpen: BreakerOpen, breakerHalfOpen: BreakerHalfOpen}

// breaker is one peer's circuit breaker; it is guarded by Tracker.mu.
type breaker struct {
	stored breakerState
	// expiries counts the peer's lease expiries since its last successful
	// heartbeat or settle; lastExpiry is the time of the last one counted, so
	// that the expiries one sweep finds (which share their time) count once.
	expiries   int
	lastExpiry time.Time
	// openUntil is when the cool-down of an open breaker ends.
	openUntil time.Time
	// probing is set, while half-open, from the moment a lease request is let
	// through until it gets a lease or ends without one; trial is the lease
	// it got, until that lease is heartbeated, settled, expired or given
	// back. Either refuses other requests.
	probing bool
	trial   resourcelease.OwnershipToken
}

// state returns the breaker's state at now. t.mu must be held.
func (b *breaker) state(now time.Time) breakerState {
	if b.stored == breakerOpen && !now.Before(b.openUntil) {
		return breakerHalfOpen
	}
	return b.stored
}

// advance stores the state at now: an open breaker whose cool-down has
// passed becomes half-open, with no trial yet.
func (b *breaker) advance(now time.Time) {
	if b.stored == breakerOpen && !now.Before(b.openUntil) {
		b.stored = breakerHalfOpen
		b.probing, b.trial = false, resourcelease.OwnershipToken{}
	}
}

// admit decides a lease request at now: zero lets it through, else the wait
// to answer it with.
func (b *breaker) admit(now time.Time) time.Duration {
	b.advance(now)
	switch b.stored {
	case breakerOpen:
		return b.openUntil.Sub(now)
	case breakerHalfOpen:
		if b.probing || !b.trial.IsZero() {
			return trialRetryAfter
		}
		b.probing = true
	}
	return 0
}

// eligible reports whether admit would let a request through at now.
func (b *breaker) eligible(now time.Time) bool {
	switch b.state(now) {
	case breakerOpen:
		return false
	case breakerHalfOpen:
		if b.stored == breakerOpen {
			return true // the cool-down has just passed: no trial yet
		}
		return !b.probing && b.trial.IsZero()
	}
	return true
}

// close is a successful heartbeat or settle: the breaker closes and the count
// of consecutive expiries starts again.
func (b *breaker) close() {
	*b = breaker{}
}

// givenBack ends a half-open trial whose lease went back unused: it proved
// nothing, so the next request is the trial.
func (b *breaker) givenBack(token resourcelease.OwnershipToken) {
	if b.trial == token {
		b.trial = resourcelease.OwnershipToken{}
	}
}

// assigned records a lease granted at at: while half-open, the first one is
// the trial.
func (t *Tracker) assigned(p *peer, token resourcelease.OwnershipToken, at time.Time) {
	p.advance(at)
	if p.stored == breakerHalfOpen && p.trial.IsZero() {
		p.probing, p.trial = false, token
	}
}

// expired counts a lease expiry at at and opens the breaker when it reaches
// the threshold, or when the breaker was half-open. t.mu must be held.
func (t *Tracker) expired(p *peer, at time.Time) {
	if p.expiries > 0 && at.Equal(p.lastExpiry) {
		return // found by the same sweep as the last one
	}
	p.expiries++
	p.lastExpiry = at
	p.advance(at)
	switch {
	case p.stored == breakerHalfOpen,
		p.stored == breakerClosed && p.expiries >= t.cfg.BreakerThreshold:
		p.stored = breakerOpen
		p.openUntil = at.Add(t.cfg.BreakerCooldown)
		p.probing, p.trial = false, resourcelease.OwnershipToken{}
		t.trips++
	}
}
