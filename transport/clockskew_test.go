package transport_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

// skewedClock is a real clock off by skew, as a dispatcher host's clock that
// disagrees with the worker's.
type skewedClock struct{ skew time.Duration }

func (c skewedClock) Now() time.Time { return time.Now().Add(c.skew) }
func (c skewedClock) NewTimer(d time.Duration) resourcelease.Timer {
	return resourcelease.SystemClock.NewTimer(d)
}

// skewedServer serves h with its Date header off by dateSkew, as the
// dispatcher host's net/http (or a proxy in front of it) would send it.
func skewedServer(t *testing.T, h http.Handler, dateSkew time.Duration) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(dateSkew).UTC().Format(http.TimeFormat))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestLeaseTTLIgnoresClocks: the leaseTtlMs of a lease and a heartbeat is the
// time left counted from when the dispatcher received the request, so it is
// the lease duration whatever the dispatcher's clock (far ahead, far behind)
// or a proxy's Date header say, while leaseExpiresAt follows the
// dispatcher's clock. A client that adds it to its send time gets a
// deadline no later than the dispatcher's.
func TestLeaseTTLIgnoresClocks(t *testing.T) {
	t.Parallel()
	const lease = 4 * time.Second
	for _, tc := range []struct {
		name            string
		clock, dateSkew time.Duration
	}{
		{"same clocks", 0, 0},
		{"dispatcher an hour ahead", time.Hour, time.Hour},
		{"dispatcher an hour behind", -time.Hour, -time.Hour},
		{"a proxy's Date a day off", 0, 24 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Queue: resourcelease.QueueConfig{
				Clock: skewedClock{tc.clock}, LeaseDuration: lease, HeartbeatInterval: time.Second,
			}})
			require.NoError(t, err)
			t.Cleanup(func() { d.Close() })
			srv := skewedServer(t, newHandler(t, d, transport.HandlerConfig{}), tc.dateSkew)
			c, err := transport.NewClient(srv.URL, transport.ClientConfig{})
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			ctx := context.Background()
			_, err = c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &item})
			require.NoError(t, err)

			sent := time.Now()
			l, err := c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
			require.NoError(t, err)
			require.NotNil(t, l)
			assert.Equal(t, lease, l.TTL, "granted at once: the whole lease duration")
			assert.WithinDuration(t, sent.Add(tc.clock).Add(lease), l.LeaseExpiresAt, time.Second, "the expiry is in the dispatcher's clock")
			assert.False(t, sent.Add(l.TTL).After(l.LeaseExpiresAt.Add(-tc.clock)), "send time + TTL is never later than the dispatcher's expiry")

			hb, err := c.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: l.OwnershipToken})
			require.NoError(t, err)
			assert.Equal(t, lease, hb.TTL)
		})
	}
}

// TestLongPollTTLIncludesTheWait: a lease granted after a long-poll waited
// has a TTL counted from when the request arrived, so the wait does not eat
// into it: the worker's send time + TTL lands at the dispatcher's expiry.
func TestLongPollTTLIncludesTheWait(t *testing.T) {
	t.Parallel()
	const lease = 5 * time.Second
	clock := leasetest.NewManualClock(time.Time{})
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Queue: resourcelease.QueueConfig{
		Clock: clock, LeaseDuration: lease, HeartbeatInterval: time.Second,
	}})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	c := newClientServer(t, d, transport.HandlerConfig{}, transport.ClientConfig{})
	ctx := context.Background()

	type result struct {
		l   *resourcelease.Lease
		err error
	}
	got := make(chan result, 1)
	go func() {
		l, err := c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w", Wait: 10 * time.Second})
		got <- result{l, err}
	}()
	require.True(t, clock.WaitForTimers(2, 5*time.Second), "the long-poll is parked") // the sweeper's and the wait's
	clock.Advance(3 * time.Second)
	_, err = c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &item})
	require.NoError(t, err)
	r := <-got
	require.NoError(t, r.err)
	require.NotNil(t, r.l)
	assert.Equal(t, lease+3*time.Second, r.l.TTL, "the 3 s waited are added to the lease duration")
	assert.True(t, r.l.LeaseExpiresAt.Equal(clock.Now().Add(lease)))
}
