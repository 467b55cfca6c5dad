package resourcelease_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTrackedLD(t *testing.T, refuse bool) (ldFixture, *peerhealth.Tracker) {
	t.Helper()
	clock := leasetest.NewManualClock(time.Time{})
	tracker, err := peerhealth.New(peerhealth.Config{GracePeriod: 30 * time.Second, Clock: clock})
	require.NoError(t, err)
	f := newLD(t, resourcelease.DispatcherConfig{
		Clock:                clock,
		PeerHealth:           tracker,
		RefuseUnhealthyPeers: refuse,
		Queue:                resourcelease.QueueConfig{LeaseDuration: 10 * time.Second, MaxDeliveryAttempts: 3},
	})
	return f, tracker
}

func ldSnapshot(t *testing.T, tr *peerhealth.Tracker, peer string) peerhealth.PeerSnapshot {
	t.Helper()
	s, ok := tr.Snapshot(peer)
	require.True(t, ok, "tracker knows %s", peer)
	return s
}

// TestDispatcherPeerHealthFollowsLeases drives leases, heartbeats, completes,
// fails and an expiry (on a manual clock, swept by hand) and checks what the
// real tracker concluded after each step.
func TestDispatcherPeerHealthFollowsLeases(t *testing.T) {
	f, tr := newTrackedLD(t, false)
	ctx := context.Background()
	start := f.clock.Now()
	f.enqueue(t, "a", "b", "c")

	// w1 leases a: one active assignment, gossip metadata from the item.
	la := f.lease(t, "w1")
	s := ldSnapshot(t, tr, "w1")
	assert.Equal(t, 1, s.ActiveAssignments)
	assert.Equal(t, []resourcelease.OwnershipToken{la.OwnershipToken}, s.ActiveLeases)
	assert.Equal(t, map[string]string{"tenant": "tenant-1"}, s.Metadata)
	assert.True(t, s.IsHealthy)
	assert.Equal(t, start, s.LastHeartbeat)

	// A heartbeat later is the peer's latest activity.
	f.clock.Advance(5 * time.Second)
	_, err := f.d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: la.OwnershipToken})
	require.NoError(t, err)
	assert.Equal(t, start.Add(5*time.Second), ldSnapshot(t, tr, "w1").LastHeartbeat)

	// Complete releases it.
	err = f.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: la.OwnershipToken})
	require.NoError(t, err)
	s = ldSnapshot(t, tr, "w1")
	assert.Zero(t, s.ActiveAssignments)
	assert.True(t, s.IsHealthy)

	// w2 leases b and goes silent: past the lease, the sweep expires it and
	// the tracker records a disconnect.
	lb := f.lease(t, "w2")
	assert.Equal(t, 1, ldSnapshot(t, tr, "w2").ActiveAssignments)
	f.clock.Advance(11 * time.Second)
	f.d.Queue().Sweep()
	s = ldSnapshot(t, tr, "w2")
	assert.False(t, s.IsHealthy)
	assert.Zero(t, s.ActiveAssignments)
	assert.Equal(t, 1, s.PendingReassignments)
	require.NotNil(t, s.LastDisconnect)
	assert.Equal(t, resourcelease.DisconnectLeaseExpired, s.LastDisconnect.Reason)
	assert.Equal(t, f.clock.Now(), s.LastDisconnect.Time)
	err = f.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: lb.OwnershipToken})
	assert.ErrorIs(t, err, resourcelease.ErrUnknownToken)

	// w3 fails with requeue, then without: both are releases, the second
	// dead-letters the item, and w3 stays healthy with no disconnect.
	l := f.lease(t, "w3")
	err = f.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, Reason: "retry me"})
	require.NoError(t, err)
	s = ldSnapshot(t, tr, "w3")
	assert.True(t, s.IsHealthy)
	assert.Nil(t, s.LastDisconnect)
	l = f.lease(t, "w3")
	err = f.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, DeadLetter: true})
	require.NoError(t, err)
	s = ldSnapshot(t, tr, "w3")
	assert.Nil(t, s.LastDisconnect, "a fail without requeue is not a disconnect")
	assert.True(t, s.IsHealthy)
	assert.Zero(t, s.ActiveAssignments)
	assert.Zero(t, s.PendingReassignments)

	// A lease failed with requeue on the item's last attempt dead-letters it:
	// still a release.
	for attempt := 1; attempt <= 3; attempt++ {
		l = f.lease(t, "w4")
		require.Equal(t, "c", l.Payload.ResourceID)
		require.Equal(t, attempt, l.Attempt)
		err = f.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken})
		require.NoError(t, err)
	}
	s = ldSnapshot(t, tr, "w4")
	assert.Nil(t, s.LastDisconnect, "dead-lettered by max attempts after a fail: not a disconnect")
	assert.True(t, s.IsHealthy)
	st, _ := f.d.Stats(ctx, nil)
	assert.Equal(t, 2, st.DeadLetterCount)

	// A lease that expires on the item's last attempt is a max_attempts
	// disconnect.
	f.enqueue(t, "d")
	for attempt := 1; attempt <= 3; attempt++ {
		l = f.lease(t, "w5")
		require.Equal(t, "d", l.Payload.ResourceID)
		f.clock.Advance(11 * time.Second)
		f.d.Queue().Sweep()
	}
	s = ldSnapshot(t, tr, "w5")
	require.NotNil(t, s.LastDisconnect)
	assert.Equal(t, resourcelease.DisconnectMaxAttempts, s.LastDisconnect.Reason)
	assert.Equal(t, 3, s.ConsecutiveExpiries)

	sum := tr.Summary()
	assert.Equal(t, 2, sum.UnhealthyPeers, "w2 and w5")
	assert.Equal(t, 2, sum.PendingReassignments, "one each: w5's lease requests heard from it after its earlier expiries")
}

// expireLease has peer lease the next item and let it expire: past the lease
// duration a sweep of its own finds it.
func expireLease(t *testing.T, f ldFixture, peer string) {
	t.Helper()
	f.lease(t, peer)
	f.clock.Advance(11 * time.Second)
	f.d.Queue().Sweep()
}

// requireRefused checks that err refuses a lease with failed-precondition /
// peer_ineligible, telling the peer to come back in retryAfter seconds.
func requireRefused(t *testing.T, err error, peer, retryAfter string) {
	t.Helper()
	require.Error(t, err)
	assert.ErrorIs(t, err, resourcelease.ErrPeerIneligible)
	assert.Equal(t, resourcelease.StatusFailedPrecondition, resourcelease.StatusOf(err))
	assert.Contains(t, err.Error(), `"`+peer+`"`)
	var e *resourcelease.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, map[string]string{resourcelease.MetadataRetryAfterSeconds: retryAfter}, e.Metadata)
}

// TestDispatcherFailWithoutRequeueDoesNotRefuse: with RefuseUnhealthyPeers, a
// worker that dead-letters item after item (fail without requeue, and fail
// on the last attempt) is served every lease.
func TestDispatcherFailWithoutRequeueDoesNotRefuse(t *testing.T) {
	f, tr := newTrackedLD(t, true)
	ctx := context.Background()
	for i := range 5 {
		f.enqueue(t, fmt.Sprintf("poison-%d", i))
		l := f.lease(t, "w")
		err := f.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, DeadLetter: true, Reason: "poison"})
		require.NoError(t, err)
	}
	f.enqueue(t, "last-attempt")
	for range 3 {
		l := f.lease(t, "w")
		err := f.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken})
		require.NoError(t, err)
	}
	for i := range 10 {
		f.enqueue(t, fmt.Sprintf("good-%d", i))
		l := f.lease(t, "w") // fails the test if refused
		err := f.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
		require.NoError(t, err)
	}
	st, _ := f.d.Stats(ctx, nil)
	assert.Equal(t, 6, st.DeadLetterCount)
	s := ldSnapshot(t, tr, "w")
	assert.True(t, s.IsHealthy)
	assert.Equal(t, peerhealth.BreakerClosed, s.Breaker)
	assert.Nil(t, s.LastDisconnect)
}

// TestDispatcherBreaker: with RefuseUnhealthyPeers, a peer whose leases
// expire three times in a row is refused (failed-precondition, Retry-After
// the rest of the cool-down); other peers are served; after the cool-down
// one lease is let through, and its heartbeat closes the breaker. Without
// the option nobody is refused.
func TestDispatcherBreaker(t *testing.T) {
	for _, refuse := range []bool{true, false} {
		name := "refuse"
		if !refuse {
			name = "serve anyway"
		}
		t.Run(name, func(t *testing.T) {
			f, tr := newTrackedLD(t, refuse)
			ctx := context.Background()
			f.enqueue(t, "a", "b", "c", "d", "e")
			expireLease(t, f, "w-bad")
			expireLease(t, f, "w-bad") // a first and a second expiry are not refused
			expireLease(t, f, "w-bad")
			require.False(t, tr.IsPeerEligible("w-bad"))

			l, err := f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w-bad"})
			if !refuse {
				require.NoError(t, err)
				require.NotNil(t, l)
				return
			}
			requireRefused(t, err, "w-bad", "30")
			assert.Nil(t, l)
			st, _ := f.d.Stats(ctx, nil)
			assert.Zero(t, st.ActiveLeaseCount, "nothing was leased")

			// Retry-After is the rest of the cool-down in whole seconds, up.
			f.clock.Advance(12500 * time.Millisecond)
			_, err = f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w-bad"})
			requireRefused(t, err, "w-bad", "18")

			// A healthy peer is served, also when named by its caller.
			cctx := resourcelease.WithCallInfo(ctx, resourcelease.CallInfo{Caller: "w-good"})
			l, err = f.d.Lease(cctx, nil)
			require.NoError(t, err)
			require.NotNil(t, l)
			assert.Equal(t, "w-good", l.OwnerPeerID)
			err = f.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
			require.NoError(t, err)

			// After the cool-down one lease is let through (half-open); a
			// second request waits a second until the trial is decided.
			f.clock.Advance(17500 * time.Millisecond)
			trial := f.lease(t, "w-bad")
			assert.Equal(t, peerhealth.BreakerHalfOpen, ldSnapshot(t, tr, "w-bad").Breaker)
			_, err = f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w-bad"})
			requireRefused(t, err, "w-bad", "1")

			// Its heartbeat closes the breaker.
			_, err = f.d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: trial.OwnershipToken})
			require.NoError(t, err)
			s := ldSnapshot(t, tr, "w-bad")
			assert.Equal(t, peerhealth.BreakerClosed, s.Breaker)
			assert.Zero(t, s.ConsecutiveExpiries)
			assert.True(t, s.IsHealthy)
			f.lease(t, "w-bad")
		})
	}
}

// TestDispatcherBreakerHalfOpen covers the other ends of a trial: an expiry
// opens the breaker for a fresh cool-down, and a trial request that finds
// nothing lets the next request through.
func TestDispatcherBreakerHalfOpen(t *testing.T) {
	ctx := context.Background()
	trip := func(t *testing.T) (ldFixture, *peerhealth.Tracker) {
		f, tr := newTrackedLD(t, true)
		f.enqueue(t, "a", "b", "c")
		for range 3 {
			expireLease(t, f, "w-bad")
		}
		f.clock.Advance(30 * time.Second)
		return f, tr
	}

	t.Run("the trial lease expires", func(t *testing.T) {
		f, tr := trip(t)
		expireLease(t, f, "w-bad") // the trial
		assert.Equal(t, peerhealth.BreakerOpen, ldSnapshot(t, tr, "w-bad").Breaker)
		f.clock.Advance(time.Second)
		_, err := f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w-bad"})
		requireRefused(t, err, "w-bad", "29")
	})

	t.Run("the trial is one lease, even asked for a batch", func(t *testing.T) {
		f, tr := trip(t)
		f.enqueue(t, "d", "e", "f")
		leases, err := f.d.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{PeerID: "w-bad", MaxItems: 20})
		require.NoError(t, err)
		require.Len(t, leases, 1, "a half-open breaker risks one item")
		err = f.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: leases[0].OwnershipToken})
		require.NoError(t, err)
		assert.Equal(t, peerhealth.BreakerClosed, ldSnapshot(t, tr, "w-bad").Breaker)
		leases, err = f.d.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{PeerID: "w-bad", MaxItems: 20})
		require.NoError(t, err)
		assert.Greater(t, len(leases), 1, "closed again: a whole batch")
	})

	t.Run("the trial request finds nothing", func(t *testing.T) {
		f, tr := trip(t)
		// Another peer takes everything, so the trial finds the queue empty.
		drained, err := f.d.Drain(ctx, nil)
		require.NoError(t, err)
		require.NotEmpty(t, drained.Items)
		l, err := f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w-bad"})
		require.NoError(t, err)
		require.Nil(t, l, "nothing to lease")
		assert.True(t, tr.IsPeerEligible("w-bad"), "the next request is the trial")
		f.enqueue(t, "z")
		l = f.lease(t, "w-bad")
		err = f.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
		require.NoError(t, err)
		assert.Equal(t, peerhealth.BreakerClosed, ldSnapshot(t, tr, "w-bad").Breaker)
	})

	t.Run("expiries of one sweep count once", func(t *testing.T) {
		f, tr := newTrackedLD(t, true)
		f.enqueue(t, "a", "b", "c")
		for range 3 {
			f.lease(t, "w-busy")
		}
		f.clock.Advance(11 * time.Second)
		f.d.Queue().Sweep()
		s := ldSnapshot(t, tr, "w-busy")
		assert.Equal(t, 1, s.ConsecutiveExpiries)
		assert.Equal(t, 3, s.PendingReassignments)
		f.lease(t, "w-busy")
	})
}
