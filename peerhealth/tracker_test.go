package peerhealth_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// token returns a deterministic ownership token for sequence id seq.
func token(seq int64) resourcelease.OwnershipToken {
	return resourcelease.OwnershipToken{
		SequenceID: seq,
		Attempt:    1,
		LeaseID:    uuid.MustParse(fmt.Sprintf("00000000-0000-4000-8000-%012d", seq)),
	}
}

// setup returns a tracker on a manual clock.
func setup(t *testing.T, cfg peerhealth.Config) (*peerhealth.Tracker, *leasetest.ManualClock) {
	t.Helper()
	clk := leasetest.NewManualClock(time.Time{})
	cfg.Clock = clk
	tr, err := peerhealth.New(cfg)
	require.NoError(t, err)
	return tr, clk
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     peerhealth.Config
		wantErr string
	}{
		{"zero value", peerhealth.Config{}, ""},
		{"explicit values", peerhealth.Config{GracePeriod: time.Second, BreakerThreshold: 2, BreakerCooldown: time.Minute, Retention: time.Hour, MaxMetadataKeys: 4, MaxPeers: 5}, ""},
		{"negative grace", peerhealth.Config{GracePeriod: -time.Second}, "GracePeriod"},
		{"negative cool-down", peerhealth.Config{BreakerCooldown: -time.Second}, "BreakerCooldown"},
		{"negative threshold", peerhealth.Config{BreakerThreshold: -1}, "BreakerThreshold"},
		{"threshold of one would refuse a peer for its first expiry", peerhealth.Config{BreakerThreshold: 1}, "at least 2"},
		{"negative retention", peerhealth.Config{Retention: -time.Second}, "Retention"},
		{"negative metadata keys", peerhealth.Config{MaxMetadataKeys: -1}, "MaxMetadataKeys"},
		{"negative max peers", peerhealth.Config{MaxPeers: -1}, "MaxPeers must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, err := peerhealth.New(tt.cfg)
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.NotNil(t, tr)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.wantErr)
			assert.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.StatusOf(err))
			assert.Nil(t, tr)
		})
	}
}

// op is one step of a health scenario.
type op func(tr *peerhealth.Tracker, clk *leasetest.ManualClock)

func assign(peer string, seq int64) op {
	return func(tr *peerhealth.Tracker, clk *leasetest.ManualClock) {
		tr.RecordAssignment(peer, token(seq), nil, clk.Now())
	}
}

func heartbeat(peer string, seq int64) op {
	return func(tr *peerhealth.Tracker, clk *leasetest.ManualClock) {
		tr.RecordHeartbeat(peer, token(seq), 0, clk.Now())
	}
}

func release(peer string, seq int64, outcome resourcelease.ReleaseOutcome) op {
	return func(tr *peerhealth.Tracker, clk *leasetest.ManualClock) {
		tr.RecordRelease(peer, token(seq), outcome, clk.Now())
	}
}

func disconnect(peer string, seq int64, reason string) op {
	return func(tr *peerhealth.Tracker, clk *leasetest.ManualClock) {
		tr.RecordDisconnect(peer, token(seq), reason, clk.Now())
	}
}

// admit is a lease request of peer (its answer is not checked).
func admit(peer string) op {
	return func(tr *peerhealth.Tracker, clk *leasetest.ManualClock) { tr.AdmitLease(peer, clk.Now()) }
}

// miss ends peer's admitted lease request without a lease.
func miss(peer string) op {
	return func(tr *peerhealth.Tracker, clk *leasetest.ManualClock) { tr.RecordLeaseMiss(peer, clk.Now()) }
}

func advance(d time.Duration) op {
	return func(_ *peerhealth.Tracker, clk *leasetest.ManualClock) { clk.Advance(d) }
}

// lose is peer "p" leasing item seq and letting the lease expire 10s later,
// found by a sweep of its own.
func lose(seq int64) op {
	return func(tr *peerhealth.Tracker, clk *leasetest.ManualClock) {
		tr.RecordAssignment("p", token(seq), nil, clk.Now())
		clk.Advance(10 * time.Second)
		tr.RecordDisconnect("p", token(seq), resourcelease.DisconnectLeaseExpired, clk.Now())
	}
}

func TestHealth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		cfg          peerhealth.Config
		ops          []op
		wantHealthy  bool
		wantEligible bool
		wantActive   int
		wantPending  int
	}{
		{
			name:        "assignment makes a peer healthy",
			ops:         []op{assign("p", 1)},
			wantHealthy: true, wantEligible: true, wantActive: 1,
		},
		{
			name:        "heartbeats within the grace period keep it healthy",
			ops:         []op{assign("p", 1), advance(20 * time.Second), heartbeat("p", 1), advance(20 * time.Second)},
			wantHealthy: true, wantEligible: true, wantActive: 1,
		},
		{
			name:        "a holder unheard for exactly the grace period is healthy",
			ops:         []op{assign("p", 1), advance(30 * time.Second)},
			wantHealthy: true, wantEligible: true, wantActive: 1,
		},
		{
			name:        "a holder unheard past the grace period is unhealthy but not refused",
			ops:         []op{assign("p", 1), advance(30*time.Second + time.Nanosecond)},
			wantHealthy: false, wantEligible: true, wantActive: 1,
		},
		{
			name:        "a custom grace period is honoured",
			cfg:         peerhealth.Config{GracePeriod: 5 * time.Second},
			ops:         []op{assign("p", 1), advance(6 * time.Second)},
			wantHealthy: false, wantEligible: true, wantActive: 1,
		},
		{
			name:        "a heartbeat revives a stale holder",
			ops:         []op{assign("p", 1), advance(time.Minute), heartbeat("p", 1)},
			wantHealthy: true, wantEligible: true, wantActive: 1,
		},
		{
			name:        "a lease request is proof of life for a holder",
			ops:         []op{assign("p", 1), advance(time.Minute), admit("p")},
			wantHealthy: true, wantEligible: true, wantActive: 1,
		},
		{
			name:        "an idle peer owes no heartbeats",
			ops:         []op{assign("p", 1), release("p", 1, resourcelease.ReleaseCompleted), advance(5 * time.Minute)},
			wantHealthy: true, wantEligible: true,
		},
		{
			name:        "a requeued release ends the lease",
			ops:         []op{assign("p", 1), assign("p", 2), release("p", 1, resourcelease.ReleaseRequeued)},
			wantHealthy: true, wantEligible: true, wantActive: 1,
		},
		{
			name:        "a fail that dead-letters the item is a release, not a disconnect",
			ops:         []op{assign("p", 1), release("p", 1, resourcelease.ReleaseDeadLettered)},
			wantHealthy: true, wantEligible: true,
		},
		{
			name:        "a lease given back unused ends it",
			ops:         []op{assign("p", 1), release("p", 1, resourcelease.ReleaseGivenBack)},
			wantHealthy: true, wantEligible: true,
		},
		{
			name:        "an expiry makes the peer unhealthy with a pending reassignment, still eligible",
			ops:         []op{assign("p", 1), disconnect("p", 1, "lease expired")},
			wantHealthy: false, wantEligible: true, wantPending: 1,
		},
		{
			name: "lease expiry after the grace period",
			ops: []op{
				assign("p", 1), assign("p", 2), advance(31 * time.Second),
				disconnect("p", 1, "lease expired"), disconnect("p", 2, "lease expired"),
			},
			wantHealthy: false, wantEligible: true, wantPending: 2,
		},
		{
			name: "activity after a disconnect heals the peer and clears its pending reassignments",
			ops: []op{
				assign("p", 1), assign("p", 2), disconnect("p", 1, "lease expired"), heartbeat("p", 2),
			},
			wantHealthy: true, wantEligible: true, wantActive: 1,
		},
		{
			name: "a release after a disconnect heals the peer",
			ops: []op{
				assign("p", 1), assign("p", 2), disconnect("p", 1, "lease expired"), release("p", 2, resourcelease.ReleaseCompleted),
			},
			wantHealthy: true, wantEligible: true,
		},
		{
			name:        "a lease request after a disconnect heals the peer",
			ops:         []op{assign("p", 1), disconnect("p", 1, "lease expired"), admit("p"), miss("p")},
			wantHealthy: true, wantEligible: true,
		},
		{
			name:        "an open breaker makes the peer unhealthy and ineligible even when heard from",
			ops:         []op{lose(1), lose(2), lose(3), admit("p")},
			wantHealthy: false, wantEligible: false,
		},
		{
			name:        "a peer known only from a disconnect is unhealthy",
			ops:         []op{disconnect("p", 1, "lease expired")},
			wantHealthy: false, wantEligible: true, wantPending: 1,
		},
		{
			name:        "a heartbeat for a lease the tracker never saw marks it active",
			ops:         []op{heartbeat("p", 7)},
			wantHealthy: true, wantEligible: true, wantActive: 1,
		},
		{
			name:        "a release of an unknown lease is harmless",
			ops:         []op{release("p", 9, resourcelease.ReleaseCompleted)},
			wantHealthy: true, wantEligible: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, clk := setup(t, tt.cfg)
			for _, o := range tt.ops {
				o(tr, clk)
			}
			s, ok := tr.Snapshot("p")
			require.True(t, ok, "peer p should be known")
			assert.Equal(t, tt.wantHealthy, s.IsHealthy, "isHealthy")
			assert.Equal(t, tt.wantEligible, tr.IsPeerEligible("p"), "eligible")
			assert.Equal(t, tt.wantActive, s.ActiveAssignments, "activeAssignments")
			assert.Len(t, s.ActiveLeases, tt.wantActive, "activeLeases")
			assert.Equal(t, tt.wantPending, s.PendingReassignments, "pendingReassignments")
		})
	}
}

// TestBreaker drives every transition of a peer's breaker and checks where
// it ends: the state and count a snapshot shows, IsPeerEligible, and then
// what AdmitLease answers.
func TestBreaker(t *testing.T) {
	t.Parallel()
	const cool = peerhealth.DefaultBreakerCooldown
	tripped := []op{lose(1), lose(2), lose(3)} // opens at the third expiry
	then := func(ops ...op) []op { return append(append([]op(nil), tripped...), ops...) }
	halfOpen := then(advance(cool))
	trial := append(append([]op(nil), halfOpen...), admit("p"), assign("p", 20))
	after := func(base []op, ops ...op) []op { return append(append([]op(nil), base...), ops...) }

	tests := []struct {
		name         string
		cfg          peerhealth.Config
		ops          []op
		wantState    peerhealth.BreakerState
		wantExpiries int
		wantEligible bool
		wantRetry    time.Duration // AdmitLease's answer at the end
	}{
		{"closed: a new peer is admitted", peerhealth.Config{}, []op{admit("p"), miss("p")}, peerhealth.BreakerClosed, 0, true, 0},
		{"closed: a first expiry is never refused", peerhealth.Config{}, []op{lose(1)}, peerhealth.BreakerClosed, 1, true, 0},
		{"closed: two expiries are not refused", peerhealth.Config{}, []op{lose(1), lose(2)}, peerhealth.BreakerClosed, 2, true, 0},
		{"closed → open: three consecutive expiries", peerhealth.Config{}, tripped, peerhealth.BreakerOpen, 3, false, cool},
		{"open: the answer is the rest of the cool-down", peerhealth.Config{}, then(advance(12 * time.Second)), peerhealth.BreakerOpen, 3, false, cool - 12*time.Second},
		{"open: a refused request does not restart the cool-down", peerhealth.Config{}, then(admit("p"), advance(time.Second), admit("p")), peerhealth.BreakerOpen, 3, false, cool - time.Second},
		{"a custom threshold and cool-down", peerhealth.Config{BreakerThreshold: 2, BreakerCooldown: 5 * time.Second},
			[]op{lose(1), lose(2)}, peerhealth.BreakerOpen, 2, false, 5 * time.Second},
		{"expiries found by one sweep count once", peerhealth.Config{},
			[]op{assign("p", 1), assign("p", 2), assign("p", 3), advance(10 * time.Second),
				disconnect("p", 1, "lease_expired"), disconnect("p", 2, "lease_expired"), disconnect("p", 3, "max_attempts")},
			peerhealth.BreakerClosed, 1, true, 0},
		{"a heartbeat in between starts the count again", peerhealth.Config{},
			[]op{assign("p", 9), lose(1), lose(2), heartbeat("p", 9), lose(3)}, peerhealth.BreakerClosed, 1, true, 0},
		{"a completed lease in between starts the count again", peerhealth.Config{},
			[]op{lose(1), lose(2), assign("p", 9), release("p", 9, resourcelease.ReleaseCompleted), lose(3)}, peerhealth.BreakerClosed, 1, true, 0},
		{"a fail with requeue in between starts the count again", peerhealth.Config{},
			[]op{lose(1), lose(2), assign("p", 9), release("p", 9, resourcelease.ReleaseRequeued), lose(3)}, peerhealth.BreakerClosed, 1, true, 0},
		{"a dead-lettering fail in between starts the count again", peerhealth.Config{},
			[]op{lose(1), lose(2), assign("p", 9), release("p", 9, resourcelease.ReleaseDeadLettered), lose(3)}, peerhealth.BreakerClosed, 1, true, 0},
		{"a lease given back in between is not a settle", peerhealth.Config{},
			[]op{lose(1), lose(2), assign("p", 9), release("p", 9, resourcelease.ReleaseGivenBack), lose(3)}, peerhealth.BreakerOpen, 3, false, cool},
		{"lease requests in between are not a settle", peerhealth.Config{},
			[]op{lose(1), admit("p"), miss("p"), lose(2), admit("p"), lose(3)}, peerhealth.BreakerOpen, 3, false, cool},
		{"a worker that keeps dead-lettering items is never refused", peerhealth.Config{},
			[]op{assign("p", 1), release("p", 1, resourcelease.ReleaseDeadLettered), assign("p", 2), release("p", 2, resourcelease.ReleaseDeadLettered),
				assign("p", 3), release("p", 3, resourcelease.ReleaseDeadLettered), assign("p", 4), release("p", 4, resourcelease.ReleaseDeadLettered)},
			peerhealth.BreakerClosed, 0, true, 0},
		{"open: expiries of leases held from before do not extend the cool-down", peerhealth.Config{},
			[]op{assign("p", 8), lose(1), lose(2), lose(3), advance(5 * time.Second), disconnect("p", 8, "lease_expired")},
			peerhealth.BreakerOpen, 4, false, cool - 5*time.Second},
		{"open → closed: a heartbeat of a lease held from before", peerhealth.Config{},
			after([]op{assign("p", 9)}, then(heartbeat("p", 9))...), peerhealth.BreakerClosed, 0, true, 0},
		{"open → half-open: the cool-down is over, one request is let through", peerhealth.Config{},
			halfOpen, peerhealth.BreakerHalfOpen, 3, true, 0},
		{"half-open: while the trial request is under way others wait a second", peerhealth.Config{},
			after(halfOpen, admit("p")), peerhealth.BreakerHalfOpen, 3, false, time.Second},
		{"half-open: while the trial lease is held others wait a second", peerhealth.Config{},
			trial, peerhealth.BreakerHalfOpen, 3, false, time.Second},
		{"half-open: a trial request that got no lease lets the next one through", peerhealth.Config{},
			after(halfOpen, admit("p"), miss("p")), peerhealth.BreakerHalfOpen, 3, true, 0},
		{"half-open: a trial lease given back unused lets the next request through", peerhealth.Config{},
			after(trial, release("p", 20, resourcelease.ReleaseGivenBack)), peerhealth.BreakerHalfOpen, 3, true, 0},
		{"half-open → closed: the trial lease is heartbeated", peerhealth.Config{},
			after(trial, heartbeat("p", 20)), peerhealth.BreakerClosed, 0, true, 0},
		{"half-open → closed: the trial lease is completed", peerhealth.Config{},
			after(trial, release("p", 20, resourcelease.ReleaseCompleted)), peerhealth.BreakerClosed, 0, true, 0},
		{"half-open → closed: the trial lease is failed without requeue", peerhealth.Config{},
			after(trial, release("p", 20, resourcelease.ReleaseDeadLettered)), peerhealth.BreakerClosed, 0, true, 0},
		{"half-open → open: the trial lease expires, for a fresh cool-down", peerhealth.Config{},
			after(trial, advance(10*time.Second), disconnect("p", 20, "lease_expired"), advance(time.Second)), peerhealth.BreakerOpen, 4, false, cool - time.Second},
		{"half-open → open: any expiry once the cool-down is over", peerhealth.Config{},
			after([]op{assign("p", 8)}, then(advance(cool), disconnect("p", 8, "lease_expired"))...), peerhealth.BreakerOpen, 4, false, cool},
		{"closed again: it takes three new expiries to open", peerhealth.Config{},
			after(trial, heartbeat("p", 20), release("p", 20, resourcelease.ReleaseCompleted), lose(21), lose(22)), peerhealth.BreakerClosed, 2, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, clk := setup(t, tt.cfg)
			for _, o := range tt.ops {
				o(tr, clk)
			}
			s, ok := tr.Snapshot("p")
			require.True(t, ok, "peer p should be known")
			assert.Equal(t, tt.wantState, s.Breaker, "breaker")
			assert.Equal(t, tt.wantExpiries, s.ConsecutiveExpiries, "consecutiveExpiries")
			if tt.wantState == peerhealth.BreakerOpen {
				require.NotNil(t, s.BreakerOpenUntil, "breakerOpenUntil")
				assert.Equal(t, clk.Now().Add(tt.wantRetry), *s.BreakerOpenUntil, "breakerOpenUntil")
			} else {
				assert.Nil(t, s.BreakerOpenUntil, "breakerOpenUntil")
			}
			assert.Equal(t, tt.wantEligible, tr.IsPeerEligible("p"), "eligible")
			assert.Equal(t, tt.wantRetry, tr.AdmitLease("p", clk.Now()), "AdmitLease")
		})
	}
}

func TestUnknownPeerIsEligible(t *testing.T) {
	t.Parallel()
	tr, _ := setup(t, peerhealth.Config{})
	assert.True(t, tr.IsPeerEligible("never-seen"))
	_, ok := tr.Snapshot("never-seen")
	assert.False(t, ok, "asking about eligibility must not create the peer")
}

// TestLeaseRequestsAreProofOfLife: a lease request, answered or not, is
// hearing from the peer, and makes an unknown peer known.
func TestLeaseRequestsAreProofOfLife(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{})
	start := clk.Now()
	assert.Zero(t, tr.AdmitLease("p", start))
	s, ok := tr.Snapshot("p")
	require.True(t, ok, "a lease request makes the peer known")
	assert.Equal(t, start, s.LastHeartbeat)
	assert.True(t, s.IsHealthy)

	clk.Advance(5 * time.Second)
	tr.RecordLeaseMiss("p", clk.Now())
	s, _ = tr.Snapshot("p")
	assert.Equal(t, start.Add(5*time.Second), s.LastHeartbeat, "the end of a long-poll that found nothing")
}

func TestSnapshotFields(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{})
	start := clk.Now()
	tr.RecordAssignment("p", token(2), map[string]string{"tenant": "t1"}, start)
	tr.RecordAssignment("p", token(1), nil, start)
	clk.Advance(time.Second)
	tr.RecordAssignment("p", token(3), nil, time.Time{}) // zero time: the clock's now
	tr.RecordDisconnect("p", token(3), "lease expired", clk.Now())

	s, ok := tr.Snapshot("p")
	require.True(t, ok)
	assert.Equal(t, "p", s.PeerID)
	assert.Equal(t, start.Add(time.Second), s.LastHeartbeat)
	require.NotNil(t, s.LastDisconnect)
	assert.Equal(t, peerhealth.Disconnect{Time: start.Add(time.Second), Reason: "lease expired"}, *s.LastDisconnect)
	assert.Equal(t, []resourcelease.OwnershipToken{token(1), token(2)}, s.ActiveLeases, "sorted by sequence id")
	assert.Equal(t, map[string]string{"tenant": "t1"}, s.Metadata, "an assignment without attributes keeps the metadata")

	// The snapshot is a copy.
	s.Metadata["tenant"] = "changed"
	s.ActiveLeases[0] = token(99)
	again, _ := tr.Snapshot("p")
	assert.Equal(t, "t1", again.Metadata["tenant"])
	assert.Equal(t, token(1), again.ActiveLeases[0])
}

func TestMetadataIsBoundedAndCopied(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   map[string]string
		want map[string]string
	}{
		{
			name: "small map kept as is",
			in:   map[string]string{"tenant": "t1", "priority": "high"},
			want: map[string]string{"tenant": "t1", "priority": "high"},
		},
		{
			name: "too many keys keeps the first in key order",
			in:   map[string]string{"d": "4", "a": "1", "c": "3", "b": "2"},
			want: map[string]string{"a": "1", "b": "2", "c": "3"},
		},
		{
			name: "long values are cut at a rune boundary",
			in:   map[string]string{"k": strings.Repeat("x", peerhealth.MaxMetadataLength-1) + "é"},
			want: map[string]string{"k": strings.Repeat("x", peerhealth.MaxMetadataLength-1)},
		},
		{
			name: "long keys are cut",
			in:   map[string]string{strings.Repeat("k", 300): "v"},
			want: map[string]string{strings.Repeat("k", peerhealth.MaxMetadataLength): "v"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, clk := setup(t, peerhealth.Config{MaxMetadataKeys: 3})
			tr.RecordAssignment("p", token(1), tt.in, clk.Now())
			for k := range tt.in {
				tt.in[k] = "mutated by caller"
			}
			s, _ := tr.Snapshot("p")
			assert.Equal(t, tt.want, s.Metadata)
		})
	}
}

func TestLatestMetadataReplacesOlder(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{})
	tr.RecordAssignment("p", token(1), map[string]string{"tenant": "t1", "priority": "high"}, clk.Now())
	tr.RecordAssignment("p", token(2), map[string]string{"tenant": "t2"}, clk.Now())
	s, _ := tr.Snapshot("p")
	assert.Equal(t, map[string]string{"tenant": "t2"}, s.Metadata)
}

func TestRetentionForgetsIdlePeers(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{Retention: time.Minute})
	tr.RecordAssignment("idle", token(1), nil, clk.Now())
	tr.RecordRelease("idle", token(1), resourcelease.ReleaseCompleted, clk.Now())
	tr.RecordAssignment("holder", token(2), nil, clk.Now())
	tr.RecordDisconnect("lost", token(3), "lease expired", clk.Now())

	clk.Advance(time.Minute)
	for _, id := range []string{"idle", "holder", "lost"} {
		_, ok := tr.Snapshot(id)
		assert.True(t, ok, "%s is still within retention", id)
	}

	clk.Advance(time.Nanosecond)
	_, ok := tr.Snapshot("idle")
	assert.False(t, ok, "an idle peer past retention is forgotten")
	_, ok = tr.Snapshot("lost")
	assert.False(t, ok, "a peer that only lost leases is forgotten past retention")
	s, ok := tr.Snapshot("holder")
	require.True(t, ok, "a peer holding leases is kept")
	assert.False(t, s.IsHealthy)

	// Once the holder's lease ends, retention counts from then.
	tr.RecordDisconnect("holder", token(2), "lease expired", clk.Now())
	clk.Advance(time.Minute)
	_, ok = tr.Snapshot("holder")
	assert.True(t, ok)
	clk.Advance(time.Nanosecond)
	_, ok = tr.Snapshot("holder")
	assert.False(t, ok)
	assert.True(t, tr.IsPeerEligible("holder"), "a forgotten peer is eligible like any unknown peer")
}

func TestRetentionBoundsMemoryUnderChurn(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{Retention: 10 * time.Second})
	// 1000 short-lived peers, one a second: at most the last ~10 are remembered.
	for i := range 1000 {
		id := fmt.Sprintf("peer-%04d", i)
		tr.RecordAssignment(id, token(int64(i+1)), nil, clk.Now())
		tr.RecordRelease(id, token(int64(i+1)), resourcelease.ReleaseCompleted, clk.Now())
		clk.Advance(time.Second)
	}
	peers := tr.Snapshots()
	assert.LessOrEqual(t, len(peers), 11)
	assert.Equal(t, "peer-0999", peers[len(peers)-1].PeerID)
}

func TestSummary(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{})
	// healthy holder
	tr.RecordAssignment("a", token(1), nil, clk.Now())
	// stale holder (becomes unhealthy, still eligible)
	tr.RecordAssignment("b", token(2), nil, clk.Now())
	// lost two leases in one sweep (unhealthy, still eligible)
	tr.RecordAssignment("c", token(3), nil, clk.Now())
	tr.RecordAssignment("c", token(4), nil, clk.Now())
	// lost three leases in three sweeps (unhealthy, breaker open)
	for seq := int64(6); seq <= 8; seq++ {
		tr.RecordDisconnect("e", token(seq), resourcelease.DisconnectLeaseExpired, clk.Now().Add(time.Duration(seq)*time.Second))
	}
	clk.Advance(20 * time.Second)
	tr.RecordHeartbeat("a", token(1), 5, clk.Now())
	tr.RecordDisconnect("c", token(3), "lease expired", clk.Now())
	tr.RecordDisconnect("c", token(4), "lease expired", clk.Now())
	// idle, healthy
	tr.RecordAssignment("d", token(5), nil, clk.Now())
	tr.RecordRelease("d", token(5), resourcelease.ReleaseCompleted, clk.Now())
	clk.Advance(15 * time.Second)

	assert.Equal(t, peerhealth.Summary{EligiblePeers: 4, UnhealthyPeers: 3, PendingReassignments: 5}, tr.Summary())

	d := tr.Diagnostics()
	assert.Equal(t, tr.Summary(), d.Summary)
	var ids []string
	for _, p := range d.Peers {
		ids = append(ids, p.PeerID)
	}
	assert.Equal(t, []string{"a", "b", "c", "d", "e"}, ids)
	assert.Equal(t, d.Peers, tr.Snapshots())
}

func TestDiagnosticsJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ops  []op
		want string
	}{
		{
			name: "empty",
			want: `{"peers":[],"summary":{"eligiblePeers":0,"unhealthyPeers":0,"pendingReassignments":0}}`,
		},
		{
			name: "one healthy holder and one peer that lost a lease",
			ops: []op{
				func(tr *peerhealth.Tracker, clk *leasetest.ManualClock) {
					tr.RecordAssignment("worker-1", token(1), map[string]string{"tenant": "tenant-1"}, clk.Now())
				},
				assign("worker-2", 2),
				advance(time.Second),
				disconnect("worker-2", 2, "lease expired"),
			},
			want: `{"peers":[` +
				`{"peerId":"worker-1","lastHeartbeat":"2026-01-02T03:04:05Z","lastDisconnect":null,"isHealthy":true,` +
				`"activeAssignments":1,"pendingReassignments":0,` +
				`"activeLeases":[{"sequenceId":1,"attempt":1,"leaseId":"00000000-0000-4000-8000-000000000001"}],` +
				`"metadata":{"tenant":"tenant-1"},"breaker":"closed","consecutiveExpiries":0},` +
				`{"peerId":"worker-2","lastHeartbeat":"2026-01-02T03:04:05Z",` +
				`"lastDisconnect":{"time":"2026-01-02T03:04:06Z","reason":"lease expired"},"isHealthy":false,` +
				`"activeAssignments":0,"pendingReassignments":1,"activeLeases":[],"metadata":{},"breaker":"closed","consecutiveExpiries":1}` +
				`],"summary":{"eligiblePeers":2,"unhealthyPeers":1,"pendingReassignments":1}}`,
		},
		{
			name: "a peer whose breaker is open",
			ops:  []op{lose(1), lose(2), lose(3), admit("p")},
			want: `{"peers":[` +
				`{"peerId":"p","lastHeartbeat":"2026-01-02T03:04:35Z",` +
				`"lastDisconnect":{"time":"2026-01-02T03:04:35Z","reason":"lease_expired"},"isHealthy":false,` +
				`"activeAssignments":0,"pendingReassignments":0,"activeLeases":[],"metadata":{},` +
				`"breaker":"open","consecutiveExpiries":3,"breakerOpenUntil":"2026-01-02T03:05:05Z"}` +
				`],"summary":{"eligiblePeers":0,"unhealthyPeers":1,"pendingReassignments":0}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, clk := setup(t, peerhealth.Config{})
			for _, o := range tt.ops {
				o(tr, clk)
			}
			got, err := json.Marshal(tr.Diagnostics())
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(got))
		})
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{Retention: time.Second})
	const (
		writers = 8
		leases  = 200
	)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			peer := fmt.Sprintf("w%d", w)
			for i := range leases {
				tok := token(int64(w*leases + i + 1))
				tr.RecordAssignment(peer, tok, map[string]string{"i": fmt.Sprint(i)}, clk.Now())
				tr.RecordHeartbeat(peer, tok, i, clk.Now())
				if i%2 == 0 {
					tr.RecordRelease(peer, tok, resourcelease.ReleaseOutcome(1+i%4), clk.Now())
				} else {
					tr.RecordDisconnect(peer, tok, "lease expired", clk.Now())
				}
				_ = tr.IsPeerEligible(peer)
				if tr.AdmitLease(peer, clk.Now()) == 0 {
					tr.RecordLeaseMiss(peer, clk.Now())
				}
			}
		}()
	}
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = tr.Diagnostics()
			_, _ = tr.Snapshot("w0")
			clk.Advance(time.Millisecond)
		}
	}()
	wg.Wait()
	close(stop)
	<-readerDone

	var active int
	for _, p := range tr.Snapshots() {
		active += p.ActiveAssignments
	}
	assert.Zero(t, active, "every lease ended")
}
