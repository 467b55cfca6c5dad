package resourcelease_test

import (
	"context"
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

	// w3 fails with requeue (a release), then w3 fails without requeue (a
	// disconnect with reason failed).
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
	require.NotNil(t, s.LastDisconnect)
	assert.Equal(t, resourcelease.DisconnectFailed, s.LastDisconnect.Reason)
	assert.False(t, s.IsHealthy)

	// A lease failed with requeue on the item's last attempt is a
	// max_attempts disconnect.
	for attempt := 1; attempt <= 3; attempt++ {
		l = f.lease(t, "w4")
		require.Equal(t, "c", l.Payload.ResourceID)
		require.Equal(t, attempt, l.Attempt)
		if attempt < 3 {
			assert.True(t, ldSnapshot(t, tr, "w4").IsHealthy)
		}
		err = f.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken})
		require.NoError(t, err)
	}
	s = ldSnapshot(t, tr, "w4")
	require.NotNil(t, s.LastDisconnect)
	assert.Equal(t, resourcelease.DisconnectMaxAttempts, s.LastDisconnect.Reason)

	sum := tr.Summary()
	assert.Equal(t, 3, sum.UnhealthyPeers, "w2, w3, w4")
	assert.Equal(t, 3, sum.PendingReassignments)
}

// TestDispatcherRefusesUnhealthyPeers: with RefuseUnhealthyPeers, a peer that
// let its lease expire is refused (failed-precondition) until the tracker's
// quarantine passes; other peers are served; without the option nobody is
// refused.
func TestDispatcherRefusesUnhealthyPeers(t *testing.T) {
	for _, refuse := range []bool{true, false} {
		name := "refuse"
		if !refuse {
			name = "serve anyway"
		}
		t.Run(name, func(t *testing.T) {
			f, tr := newTrackedLD(t, refuse)
			ctx := context.Background()
			f.enqueue(t, "a", "b")
			f.lease(t, "w-bad")
			f.clock.Advance(11 * time.Second)
			f.d.Queue().Sweep()
			require.False(t, tr.IsPeerEligible("w-bad"))

			l, err := f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w-bad"})
			if refuse {
				require.Error(t, err)
				assert.Nil(t, l)
				assert.ErrorIs(t, err, resourcelease.ErrPeerIneligible)
				assert.Equal(t, resourcelease.StatusFailedPrecondition, resourcelease.StatusOf(err))
				assert.Contains(t, err.Error(), `"w-bad"`)
				st, _ := f.d.Stats(ctx, nil)
				assert.Zero(t, st.ActiveLeaseCount, "nothing was leased")
			} else {
				require.NoError(t, err)
				require.NotNil(t, l)
			}

			// A healthy peer is served either way, also when named by its caller.
			cctx := resourcelease.WithCallInfo(ctx, resourcelease.CallInfo{Caller: "w-good"})
			l, err = f.d.Lease(cctx, nil)
			require.NoError(t, err)
			require.NotNil(t, l)
			assert.Equal(t, "w-good", l.OwnerPeerID)

			err = f.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
			require.NoError(t, err)

			if refuse {
				// After the tracker's quarantine (its grace period) the bad
				// peer may try again, and a lease makes it healthy.
				f.clock.Advance(31 * time.Second)
				require.True(t, tr.IsPeerEligible("w-bad"))
				l, err = f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w-bad"})
				require.NoError(t, err)
				require.NotNil(t, l)
				assert.True(t, ldSnapshot(t, tr, "w-bad").IsHealthy)
			}
		})
	}
}
