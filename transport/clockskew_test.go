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
			c := newRawServer(t, transport.ClientConfig{}, func(w http.ResponseWriter, _ *http.Request) {
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
	c := newRawServer(t, transport.ClientConfig{}, func(w http.ResponseWriter, _ *http.Request) {
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
	c := newRawServer(t, transport.ClientConfig{}, func(w http.ResponseWriter, _ *http.Request) {
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
