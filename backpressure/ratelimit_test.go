package backpressure_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

var (
	active  = resourcelease.BackpressureSignal{IsActive: true}
	cleared = resourcelease.BackpressureSignal{IsActive: false}
)

func setupLimiter(t *testing.T, cfg backpressure.RateLimiterConfig) (*backpressure.RateLimiter, *leasetest.ManualClock) {
	t.Helper()
	clk := leasetest.NewManualClock(time.Time{})
	cfg.Clock = clk
	l, err := backpressure.NewRateLimiter(cfg)
	require.NoError(t, err)
	return l, clk
}

func TestNewRateLimiterValidatesConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     backpressure.RateLimiterConfig
		wantErr string
	}{
		{name: "zero value is unlimited", cfg: backpressure.RateLimiterConfig{}},
		{name: "demo defaults", cfg: backpressure.RateLimiterConfig{BackpressureLimit: 50, BackpressureBurst: 10, PerKey: true}},
		{name: "infinite", cfg: backpressure.RateLimiterConfig{NormalLimit: rate.Inf, BackpressureLimit: rate.Inf}},
		{name: "negative normal limit", cfg: backpressure.RateLimiterConfig{NormalLimit: -1}, wantErr: "NormalLimit"},
		{name: "NaN backpressure limit", cfg: backpressure.RateLimiterConfig{BackpressureLimit: rate.Limit(math.NaN())}, wantErr: "BackpressureLimit"},
		{name: "negative normal burst", cfg: backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: -1}, wantErr: "NormalBurst"},
		{name: "negative backpressure burst", cfg: backpressure.RateLimiterConfig{BackpressureBurst: -1}, wantErr: "BackpressureBurst"},
		{name: "negative max keys", cfg: backpressure.RateLimiterConfig{PerKey: true, MaxKeys: -1}, wantErr: "MaxKeys"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := backpressure.NewRateLimiter(tt.cfg)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.Nil(t, l)
				return
			}
			require.NoError(t, err)
			assert.NotNil(t, l)
		})
	}
}

func TestRateLimiterFollowsSignal(t *testing.T) {
	t.Parallel()
	type step struct {
		signal  *resourcelease.BackpressureSignal
		advance time.Duration
		want    []bool // results of consecutive Allow calls
	}
	tests := []struct {
		name  string
		cfg   backpressure.RateLimiterConfig
		steps []step
	}{
		{
			name: "unlimited normally, tight under backpressure (the demo)",
			cfg:  backpressure.RateLimiterConfig{BackpressureLimit: 2, BackpressureBurst: 1},
			steps: []step{
				{want: []bool{true, true, true, true, true}},
				{signal: &active, want: []bool{true, false, false}},
				{advance: 499 * time.Millisecond, want: []bool{false}},
				{advance: time.Millisecond, want: []bool{true, false}},
				{signal: &cleared, want: []bool{true, true, true, true}},
			},
		},
		{
			name: "both limited, each limiter keeps its own tokens",
			cfg:  backpressure.RateLimiterConfig{NormalLimit: 10, NormalBurst: 2, BackpressureLimit: 1, BackpressureBurst: 1},
			steps: []step{
				{want: []bool{true, true, false}},
				{signal: &active, want: []bool{true, false}},
				{signal: &cleared, want: []bool{false}},
				{advance: 100 * time.Millisecond, want: []bool{true, false}},
				{signal: &active, advance: 900 * time.Millisecond, want: []bool{true, false}},
			},
		},
		{
			name: "default burst is the limit rounded up",
			cfg:  backpressure.RateLimiterConfig{NormalLimit: 2.5},
			steps: []step{
				{want: []bool{true, true, true, false}},
			},
		},
		{
			name: "rate.Inf is unlimited too",
			cfg:  backpressure.RateLimiterConfig{NormalLimit: rate.Inf, BackpressureLimit: rate.Inf},
			steps: []step{
				{want: []bool{true, true, true}},
				{signal: &active, want: []bool{true, true, true}},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, clk := setupLimiter(t, tt.cfg)
			for i, st := range tt.steps {
				if st.signal != nil {
					l.OnBackpressure(*st.signal)
					assert.Equal(t, st.signal.IsActive, l.BackpressureActive())
				}
				clk.Advance(st.advance)
				for j, want := range st.want {
					assert.Equal(t, want, l.Allow("caller"), "step %d, call %d", i, j)
				}
			}
		})
	}
}

func TestAllowWithRetry(t *testing.T) {
	t.Parallel()
	l, clk := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 1})
	ok, retry := l.AllowWithRetry("k")
	assert.True(t, ok)
	assert.Zero(t, retry)
	ok, retry = l.AllowWithRetry("k")
	assert.False(t, ok)
	assert.Equal(t, time.Second, retry)
	clk.Advance(400 * time.Millisecond)
	_, retry = l.AllowWithRetry("k")
	assert.Equal(t, 600*time.Millisecond, retry)
}

func TestRateLimiterPerKey(t *testing.T) {
	t.Parallel()
	l, _ := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 1, PerKey: true, MaxKeys: 3})
	for _, k := range []string{"a", "b", "c"} {
		assert.True(t, l.Allow(k), "every key has its own bucket")
		assert.False(t, l.Allow(k))
	}
	assert.Equal(t, 3, l.Keys())

	// "a" is used again, so "b" is now the least recently used and goes first.
	assert.False(t, l.Allow("a"))
	assert.True(t, l.Allow("d"))
	assert.Equal(t, 3, l.Keys(), "bounded by MaxKeys")
	assert.True(t, l.Allow("b"), "a forgotten key starts afresh")
	assert.False(t, l.Allow("a"), "the recently used key was kept")

	for i := range 1000 {
		l.Allow(fmt.Sprintf("caller-%d", i))
	}
	assert.Equal(t, 3, l.Keys())
}

func TestRateLimiterUnlimitedRemembersNoKeys(t *testing.T) {
	t.Parallel()
	l, _ := setupLimiter(t, backpressure.RateLimiterConfig{BackpressureLimit: 1, PerKey: true})
	for i := range 100 {
		assert.True(t, l.Allow(fmt.Sprintf("caller-%d", i)))
	}
	assert.Zero(t, l.Keys(), "no limiter state is needed while the rate is unlimited")
	l.OnBackpressure(active)
	assert.True(t, l.Allow("caller-1"))
	assert.Equal(t, 1, l.Keys())
}

func TestRateLimiterGlobalIgnoresKey(t *testing.T) {
	t.Parallel()
	l, _ := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 1})
	assert.True(t, l.Allow("a"))
	assert.False(t, l.Allow("b"), "one bucket shared by all callers")
	assert.Zero(t, l.Keys())
	assert.Same(t, l.Limiter("a"), l.Limiter("b"))
}

func TestRateLimiterWait(t *testing.T) {
	t.Parallel()

	t.Run("returns at once when a token is there", func(t *testing.T) {
		t.Parallel()
		l, _ := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1})
		assert.NoError(t, l.Wait(context.Background(), "k"))
	})

	t.Run("unlimited", func(t *testing.T) {
		t.Parallel()
		l, _ := setupLimiter(t, backpressure.RateLimiterConfig{})
		for range 10 {
			assert.NoError(t, l.Wait(context.Background(), "k"))
		}
	})

	t.Run("waits for the next token on the clock", func(t *testing.T) {
		t.Parallel()
		l, clk := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 2, NormalBurst: 1})
		require.True(t, l.Allow("k"))
		done := make(chan error, 1)
		go func() { done <- l.Wait(context.Background(), "k") }()
		require.True(t, clk.WaitForTimers(1, 5*time.Second), "Wait sleeps on the clock")
		select {
		case err := <-done:
			t.Fatalf("Wait returned %v before its token", err)
		default:
		}
		clk.Advance(500 * time.Millisecond)
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("Wait did not return when the token came")
		}
	})

	t.Run("cancelled while waiting gives the token back", func(t *testing.T) {
		t.Parallel()
		l, clk := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 1})
		require.True(t, l.Allow("k"))
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Wait(ctx, "k") }()
		require.True(t, clk.WaitForTimers(1, 5*time.Second))
		cancel()
		err := <-done
		assert.Equal(t, resourcelease.StatusCancelled, resourcelease.StatusOf(err))
		assert.Zero(t, clk.Timers(), "the timer is stopped")
		clk.Advance(time.Second)
		assert.True(t, l.Allow("k"), "the cancelled reservation was given back")
	})

	t.Run("refuses a wait longer than the deadline", func(t *testing.T) {
		t.Parallel()
		l, clk := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1.0 / 64, NormalBurst: 1})
		require.True(t, l.Allow("k"))
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		err := l.Wait(ctx, "k") // the next token is 64s away
		assert.ErrorIs(t, err, resourcelease.ErrRateLimited)
		assert.Equal(t, "64", resourcelease.AsError(err).Metadata["retryAfterSeconds"])
		clk.Advance(64 * time.Second)
		assert.True(t, l.Allow("k"), "the refused wait reserved nothing")
	})

	t.Run("context already done", func(t *testing.T) {
		t.Parallel()
		l, _ := setupLimiter(t, backpressure.RateLimiterConfig{})
		ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
		defer cancel()
		assert.Equal(t, resourcelease.StatusDeadlineExceeded, resourcelease.StatusOf(l.Wait(ctx, "k")))
	})
}

func TestRateLimiterReserve(t *testing.T) {
	t.Parallel()
	l, clk := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 1})
	r := l.Reserve("k")
	require.True(t, r.OK())
	assert.Zero(t, r.DelayFrom(clk.Now()))
	r = l.Reserve("k")
	assert.Equal(t, time.Second, r.DelayFrom(clk.Now()))
	r.CancelAt(clk.Now())
	assert.Equal(t, time.Second, l.Reserve("k").DelayFrom(clk.Now()), "the cancelled reservation was given back")
}

func TestRateLimiterMetrics(t *testing.T) {
	t.Parallel()
	l, _ := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 2})
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(l))
	for range 5 {
		l.Allow("k")
	}
	const want = `
# HELP backpressure_rate_limited_total Requests refused by the backpressure-aware rate limiter.
# TYPE backpressure_rate_limited_total counter
backpressure_rate_limited_total 3
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want)))
}

func TestRateLimiterAsMonitorListener(t *testing.T) {
	t.Parallel()
	clk := leasetest.NewManualClock(time.Time{})
	l, err := backpressure.NewRateLimiter(backpressure.RateLimiterConfig{BackpressureLimit: 1, BackpressureBurst: 1, Clock: clk})
	require.NoError(t, err)
	rec := newRecorder()
	m, err := backpressure.NewMonitor(backpressure.Config{
		HighWatermark: 2, Clock: clk,
		Listeners: []resourcelease.BackpressureListener{l, rec},
	})
	require.NoError(t, err)
	defer m.Close()

	m.Observe(2, clk.Now())
	rec.next(t) // the limiter, listed first, has been told
	assert.True(t, l.Allow("k"))
	assert.False(t, l.Allow("k"))
	m.Observe(0, clk.Now())
	rec.next(t)
	assert.True(t, l.Allow("k"))
	assert.True(t, l.Allow("k"))
}
