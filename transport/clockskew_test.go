package transport_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// skewedClock is a real clock off by skew, as a dispatcher host's clock that
// disagrees with the worker's.
type skewedClock struct{ skew time.Duration }

func (c skewedClock) Now() time.Time { return time.Now().Add(c.skew) }
func (c skewedClock) NewTimer(d time.Duration) resourcelease.Timer {
	return resourcelease.SystemClock.NewTimer(d)
}

// skewedServer serves h with its Date header off by skew, as the dispatcher
// host's net/http would send it.
func skewedServer(t *testing.T, h http.Handler, skew time.Duration) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(skew).UTC().Format(http.TimeFormat))
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestClientServerClockOffset(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		date   func() string // nil: no Date header at all
		want   time.Duration
		wantOK bool
	}{
		{"server ahead", func() string { return time.Now().Add(10 * time.Minute).UTC().Format(http.TimeFormat) }, 10 * time.Minute, true},
		{"server behind", func() string { return time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat) }, -time.Hour, true},
		{"same clock", func() string { return time.Now().UTC().Format(http.TimeFormat) }, 0, true},
		{"no Date header", nil, 0, false},
		{"unparsable Date", func() string { return "yesterday" }, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newRawServer(t, transport.ClientOptions{}, func(w http.ResponseWriter, _ *http.Request) {
				if tc.date == nil {
					w.Header()["Date"] = nil // net/http then sends none
				} else {
					w.Header().Set("Date", tc.date())
				}
				_, _ = w.Write([]byte(`{"pendingCount":0}`))
			})
			_, ok := c.ServerClockOffset()
			require.False(t, ok, "known before any response")
			_, err := c.Stats(context.Background(), &resourcelease.StatsRequest{})
			require.NoError(t, err)
			got, ok := c.ServerClockOffset()
			require.Equal(t, tc.wantOK, ok)
			if ok {
				assert.InDelta(t, tc.want.Seconds(), got.Seconds(), 1.5, "offset %v", got)
			}
		})
	}
}

// TestServerClockOffsetIgnoresDelaysAndProxies: the estimate is taken when
// the headers arrive, so a slow body does not make the server look behind,
// and only the handler's own successes count, so a proxy's error page with
// a clock of its own does not move it.
func TestServerClockOffsetIgnoresDelaysAndProxies(t *testing.T) {
	t.Parallel()
	var proxyError atomic.Bool
	c := newRawServer(t, transport.ClientOptions{}, func(w http.ResponseWriter, _ *http.Request) {
		if proxyError.Load() {
			// A proxy whose clock is ahead: the highest-sample rule alone
			// would take it.
			w.Header().Set("Date", time.Now().Add(10*time.Minute).UTC().Format(http.TimeFormat))
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK) // Date: now, same clock
		w.(http.Flusher).Flush()
		time.Sleep(1600 * time.Millisecond) // the body arrives late
		_, _ = w.Write([]byte(`{"pendingCount":0}`))
	})
	ctx := context.Background()
	_, err := c.Stats(ctx, &resourcelease.StatsRequest{})
	require.NoError(t, err)
	off, ok := c.ServerClockOffset()
	require.True(t, ok)
	assert.InDelta(t, 0, off.Seconds(), 1.0, "same clock, slow body: offset %v", off)

	proxyError.Store(true)
	_, err = c.Stats(ctx, &resourcelease.StatsRequest{})
	require.Error(t, err)
	off, ok = c.ServerClockOffset()
	require.True(t, ok)
	assert.InDelta(t, 0, off.Seconds(), 1.0, "a proxy's error page moved the offset to %v", off)
}

// TestServerClockOffsetTakesTheHighestRecentSample: a response whose
// headers were delayed makes the server look further behind than it is, so
// the estimate is the highest of the recent samples, not the latest.
func TestServerClockOffsetTakesTheHighestRecentSample(t *testing.T) {
	t.Parallel()
	var delayed atomic.Bool
	c := newRawServer(t, transport.ClientOptions{}, func(w http.ResponseWriter, _ *http.Request) {
		skew := time.Minute
		if delayed.Load() {
			skew -= 3 * time.Second // as if Date was stamped 3 s before the headers arrived
		}
		w.Header().Set("Date", time.Now().Add(skew).UTC().Format(http.TimeFormat))
		_, _ = w.Write([]byte(`{"pendingCount":0}`))
	})
	ctx := context.Background()
	_, err := c.Stats(ctx, &resourcelease.StatsRequest{})
	require.NoError(t, err)
	delayed.Store(true)
	_, err = c.Stats(ctx, &resourcelease.StatsRequest{})
	require.NoError(t, err)
	off, ok := c.ServerClockOffset()
	require.True(t, ok)
	assert.InDelta(t, 60, off.Seconds(), 1.0, "offset %v", off)
}

// TestWorkerWithSkewedDispatcherClock: a dispatcher whose host clock is
// minutes ahead of the worker's states lease expiries in its own clock; the
// Worker translates them (a second early) and still keeps the lease alive
// through a handler that outlives the lease. Failing heartbeats in that case
// are TestWorkerStopsAtTranslatedExpiry.
func TestWorkerWithSkewedDispatcherClock(t *testing.T) {
	t.Parallel()
	// A dispatcher behind is not corrected (see ClockSkewTolerance): with it
	// 10 minutes behind, every lease looks expired to the worker.
	for _, skew := range []time.Duration{0, 10 * time.Minute} {
		t.Run(skew.String(), func(t *testing.T) {
			t.Parallel()
			local, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Queue: resourcelease.QueueConfig{
				Clock: skewedClock{skew}, LeaseDuration: 4 * time.Second, HeartbeatInterval: 500 * time.Millisecond,
			}})
			require.NoError(t, err)
			t.Cleanup(func() { local.Close() })
			srv := skewedServer(t, newHandler(t, local, transport.HandlerOptions{}), skew)
			c, err := transport.NewClient(srv.URL+"/yarpc/v1", transport.ClientOptions{Caller: "worker-a"})
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })

			ctx := context.Background()
			_, err = c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &item})
			require.NoError(t, err)
			done := make(chan error, 1)
			w := newWorker(t, c, transport.WorkerOptions{Concurrency: 1, LeaseWait: 200 * time.Millisecond,
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
