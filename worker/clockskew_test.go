package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
	"github.com/leasemesh/leasemesh/worker"
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

// TestWorkerWithSkewedDispatcherClock: whatever the dispatcher's clock (far
// ahead, far behind) or a proxy's Date header say, the Worker times its
// lease by the leaseTtlMs it was given and its own clock, and keeps the
// lease alive through a handler that outlives it. Failing heartbeats in that
// case are TestWorkerTimesLeasesByTTL.
func TestWorkerWithSkewedDispatcherClock(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name            string
		clock, dateSkew time.Duration
	}{
		{"same clocks", 0, 0},
		{"dispatcher 10m ahead", 10 * time.Minute, 10 * time.Minute},
		{"dispatcher 10m behind", -10 * time.Minute, -10 * time.Minute},
		{"a proxy's Date 1h behind", 0, -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			local, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Queue: resourcelease.QueueConfig{
				Clock: skewedClock{tc.clock}, LeaseDuration: 4 * time.Second, HeartbeatInterval: 500 * time.Millisecond,
			}})
			require.NoError(t, err)
			t.Cleanup(func() { local.Close() })
			srv := skewedServer(t, newHandler(t, local, transport.HandlerConfig{}), tc.dateSkew)
			c, err := transport.NewClient(srv.URL+"/yarpc/v1", transport.ClientConfig{Caller: "worker-a"})
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })

			ctx := context.Background()
			_, err = c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &item})
			require.NoError(t, err)
			done := make(chan error, 1)
			w := newWorker(t, c, worker.Config{Concurrency: 1, LeaseWait: 200 * time.Millisecond,
				Handler: func(ctx context.Context, _ *resourcelease.Lease) error {
					select {
					case <-time.After(5 * time.Second): // longer than the lease: needs heartbeats
						done <- nil
						return nil
					case <-ctx.Done():
						done <- context.Cause(ctx)
						return ctx.Err()
					}
				}})
			stop := startWorker(t, w)
			select {
			case err := <-done:
				require.NoError(t, err, "the handler was stopped")
			case <-time.After(30 * time.Second): // a bound on the test, not synchronisation
				t.Fatal("the handler never finished")
			}
			stop()
			s := w.Stats()
			assert.Equal(t, int64(1), s.Completed, "stats %+v", s)
			assert.Equal(t, int64(0), s.Lost, "stats %+v", s)
			st, err := local.Stats(ctx, &resourcelease.StatsRequest{})
			require.NoError(t, err)
			assert.Equal(t, 0, st.PendingCount+st.ActiveLeaseCount, "the item was completed, not requeued")
		})
	}
}

// TestWorkerTimesLeasesByTTL: when every heartbeat fails, the handler is
// stopped (ErrLeaseLost) when the lease's TTL, counted from when the worker
// asked for it, runs out: never later, whatever the dispatcher's clock says
// in leaseExpiresAt, so another worker never holds the item while this one
// still works on it; and not much earlier either.
func TestWorkerTimesLeasesByTTL(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	for _, tc := range []struct {
		name   string
		offset time.Duration // the dispatcher's clock minus the worker's
	}{
		{"same clocks", 0},
		{"dispatcher far ahead", 10 * time.Minute},
		{"dispatcher far behind", -10 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := leasetest.NewManualClock(time.Time{})
			sent := clock.Now() // the worker asks for its first lease at once
			var beats atomic.Int64
			d := unrenewableLease(sent.Add(tc.offset+ttl), 1000, &beats)
			inner := d.LeaseFn
			d.LeaseFn = func(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
				l, err := inner(ctx, r)
				if l != nil {
					l.TTL = ttl
				}
				return l, err
			}
			at, err := holdUntilStopped(t, d, clock, sent.Add(time.Hour))
			require.ErrorIs(t, err, worker.ErrLeaseLost)
			require.False(t, at.After(sent.Add(ttl)), "stopped at %v, after the lease ran out at %v", at, sent.Add(ttl))
			require.False(t, at.Before(sent.Add(ttl-time.Second)), "stopped at %v, well before the lease ran out at %v", at, sent.Add(ttl))
			require.GreaterOrEqual(t, beats.Load(), int64(2), "heartbeats were attempted")
		})
	}
}

// TestWorkerHeartbeatTTL: a heartbeat's TTL is counted from when the worker
// sent it: the lease runs out TTL after the last successful heartbeat was
// sent, whatever leaseExpiresAt says (here: an hour in the past).
func TestWorkerHeartbeatTTL(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	clock := leasetest.NewManualClock(time.Time{})
	var (
		mu       sync.Mutex
		lastSent time.Time
		beats    int
	)
	one := leaseN(1, 1000)
	d := &leasetest.FakeDispatcher{
		LeaseFn: func(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
			l, err := one(ctx, r)
			if l != nil {
				l.TTL, l.LeaseExpiresAt = ttl, clock.Now().Add(-time.Hour)
			}
			return l, err
		},
		HeartbeatFn: func(context.Context, *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			beats++
			if beats > 3 {
				return nil, resourcelease.ErrStorageUnavailable // transient, from now on
			}
			lastSent = clock.Now() // the manual clock does not move during the call
			return &resourcelease.HeartbeatResponse{TTL: ttl, LeaseExpiresAt: clock.Now().Add(-time.Hour)}, nil
		},
	}
	at, err := holdUntilStopped(t, d, clock, clock.Now().Add(time.Hour))
	require.ErrorIs(t, err, worker.ErrLeaseLost)
	mu.Lock()
	defer mu.Unlock()
	require.False(t, lastSent.IsZero(), "a heartbeat succeeded")
	require.False(t, at.After(lastSent.Add(ttl)), "stopped at %v, after the renewed lease ran out at %v", at, lastSent.Add(ttl))
	require.False(t, at.Before(lastSent.Add(ttl-time.Second)), "stopped at %v, well before the renewed lease ran out at %v", at, lastSent.Add(ttl))
}

// TestWorkerWarnsOfSkewWithoutTTL: from a dispatcher that predates
// leaseTtlMs, the lease's expiry is taken as stated; when it is already past
// on arrival (the clocks disagree by more than a lease), the worker warns,
// once.
func TestWorkerWarnsOfSkewWithoutTTL(t *testing.T) {
	t.Parallel()
	clock := leasetest.NewManualClock(time.Time{})
	var logs logBuffer
	logger := logs.logger()
	var beats atomic.Int64
	d := unrenewableLease(clock.Now().Add(-10*time.Minute), 1000, &beats) // no TTL; expiry long past
	causes := make(chan error, 1)
	w := newWorker(t, d, worker.Config{Clock: clock, Logger: logger, Handler: func(ctx context.Context, _ *resourcelease.Lease) error {
		<-ctx.Done()
		causes <- context.Cause(ctx)
		return ctx.Err()
	}})
	stop := startWorker(t, w)
	defer stop()
	bound := time.Now().Add(10 * time.Second) // real time: a bound on the test, not synchronisation
	for time.Now().Before(bound) {
		select {
		case err := <-causes:
			require.ErrorIs(t, err, worker.ErrLeaseLost, "a lease stated to be over is over")
			assert.Equal(t, 1, strings.Count(logs.String(), "sends no leaseTtlMs"), "one warning: %s", logs.String())
			return
		default:
		}
		if clock.WaitForTimers(1, 20*time.Millisecond) {
			clock.Advance(250 * time.Millisecond)
		}
	}
	t.Fatal("the handler was never stopped")
}
