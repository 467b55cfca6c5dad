package worker_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
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
			srv := skewedServer(t, newHandler(t, local, transport.HandlerConfig{}), skew)
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
