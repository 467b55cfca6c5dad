package backpressure_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// setupMonitor returns a monitor on a manual clock with a recorder as its
// last listener; it is closed when the test ends.
func setupMonitor(t *testing.T, cfg backpressure.Config) (*backpressure.Monitor, *leasetest.ManualClock, recorder) {
	t.Helper()
	clk := leasetest.NewManualClock(time.Time{})
	rec := newRecorder()
	cfg.Clock = clk
	cfg.Listeners = append(cfg.Listeners, rec)
	m, err := backpressure.NewMonitor(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, m.Close()) })
	return m, clk, rec
}

func TestNewMonitorValidatesConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     backpressure.Config
		wantErr string
		wantLow int
	}{
		{name: "high only", cfg: backpressure.Config{HighWatermark: 64}, wantLow: 32},
		{name: "high 1 clears at 0", cfg: backpressure.Config{HighWatermark: 1}, wantLow: 0},
		{name: "explicit low", cfg: backpressure.Config{HighWatermark: 64, LowWatermark: 16, Cooldown: 5 * time.Second, Mode: backpressure.ModeReject, SignalBuffer: 2}, wantLow: 16},
		{name: "missing high", cfg: backpressure.Config{}, wantErr: "HighWatermark"},
		{name: "negative high", cfg: backpressure.Config{HighWatermark: -1}, wantErr: "HighWatermark"},
		{name: "low -1 means 0", cfg: backpressure.Config{HighWatermark: 10, LowWatermark: -1}, wantLow: 0},
		{name: "negative low", cfg: backpressure.Config{HighWatermark: 10, LowWatermark: -2}, wantErr: "LowWatermark"},
		{name: "low equal to high", cfg: backpressure.Config{HighWatermark: 10, LowWatermark: 10}, wantErr: "below"},
		{name: "low above high", cfg: backpressure.Config{HighWatermark: 10, LowWatermark: 11}, wantErr: "below"},
		{name: "negative cooldown", cfg: backpressure.Config{HighWatermark: 10, Cooldown: -time.Second}, wantErr: "Cooldown"},
		{name: "unknown mode", cfg: backpressure.Config{HighWatermark: 10, Mode: 7}, wantErr: "Mode"},
		{name: "signal buffer of one", cfg: backpressure.Config{HighWatermark: 10, SignalBuffer: 1}, wantErr: "SignalBuffer"},
		{name: "negative signal buffer", cfg: backpressure.Config{HighWatermark: 10, SignalBuffer: -1}, wantErr: "SignalBuffer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, err := backpressure.NewMonitor(tt.cfg)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				assert.Nil(t, m)
				return
			}
			require.NoError(t, err)
			defer m.Close()
			st := m.State()
			assert.Equal(t, tt.cfg.HighWatermark, st.HighWatermark)
			assert.Equal(t, tt.wantLow, st.LowWatermark)
			assert.False(t, st.IsActive)
			assert.Nil(t, st.Latest)
		})
	}
}

func TestMonitorWatermarks(t *testing.T) {
	t.Parallel()
	type obs struct {
		pending    int
		wantActive bool
	}
	tests := []struct {
		name        string
		high, low   int
		observe     []obs
		wantSignals []resourcelease.BackpressureSignal // IsActive and PendingCount only
	}{
		{
			name: "activates at high and clears at low",
			high: 10, low: 4,
			observe: []obs{{0, false}, {9, false}, {10, true}, {4, false}},
			wantSignals: []resourcelease.BackpressureSignal{
				{IsActive: true, PendingCount: 10}, {IsActive: false, PendingCount: 4},
			},
		},
		{
			name: "hysteresis between the watermarks",
			high: 10, low: 4,
			observe: []obs{{12, true}, {9, true}, {5, true}, {11, true}, {3, false}, {5, false}, {9, false}, {10, true}},
			wantSignals: []resourcelease.BackpressureSignal{
				{IsActive: true, PendingCount: 12}, {IsActive: false, PendingCount: 3}, {IsActive: true, PendingCount: 10},
			},
		},
		{
			name:    "default low is half of high",
			high:    64,
			observe: []obs{{64, true}, {33, true}, {32, false}},
			wantSignals: []resourcelease.BackpressureSignal{
				{IsActive: true, PendingCount: 64}, {IsActive: false, PendingCount: 32},
			},
		},
		{
			name: "repeated observations make no new signal",
			high: 2, low: 1,
			observe: []obs{{2, true}, {2, true}, {3, true}, {0, false}, {0, false}},
			wantSignals: []resourcelease.BackpressureSignal{
				{IsActive: true, PendingCount: 2}, {IsActive: false, PendingCount: 0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, clk, rec := setupMonitor(t, backpressure.Config{HighWatermark: tt.high, LowWatermark: tt.low})
			for i, o := range tt.observe {
				clk.Advance(time.Second)
				m.Observe(o.pending, clk.Now())
				assert.Equal(t, o.wantActive, m.Active(), "after observation %d (%d pending)", i, o.pending)
			}
			for i, want := range tt.wantSignals {
				got := rec.next(t)
				assert.Equal(t, want.IsActive, got.IsActive, "signal %d", i)
				assert.Equal(t, want.PendingCount, got.PendingCount, "signal %d", i)
				assert.Equal(t, tt.high, got.HighWatermark)
				assert.Equal(t, m.State().LowWatermark, got.LowWatermark)
			}
			last, ok := m.Latest()
			require.True(t, ok)
			assert.Equal(t, tt.wantSignals[len(tt.wantSignals)-1].IsActive, last.IsActive)
		})
	}
}

func TestMonitorSignalCarriesObservationTime(t *testing.T) {
	t.Parallel()
	m, clk, rec := setupMonitor(t, backpressure.Config{HighWatermark: 2})
	at := clk.Now().Add(-time.Minute)
	m.Observe(2, at)
	assert.Equal(t, resourcelease.BackpressureSignal{
		IsActive: true, PendingCount: 2, ObservedAt: at, HighWatermark: 2, LowWatermark: 1,
	}, rec.next(t))

	clk.Advance(time.Second)
	m.Observe(0, time.Time{}) // zero: the clock's now
	assert.Equal(t, clk.Now(), rec.next(t).ObservedAt)
}

func TestMonitorCooldown(t *testing.T) {
	t.Parallel()
	m, clk, rec := setupMonitor(t, backpressure.Config{HighWatermark: 10, LowWatermark: 4, Cooldown: 5 * time.Second})
	t0 := clk.Now()

	// The first transition is never held back.
	m.Observe(10, clk.Now())
	require.True(t, m.Active())
	assert.Equal(t, t0, rec.next(t).ObservedAt)

	// A clear within the cooldown is deferred ...
	clk.Advance(time.Second)
	m.Observe(0, clk.Now())
	assert.True(t, m.Active(), "the cooldown holds the clear back")
	require.True(t, clk.WaitForTimers(1, 5*time.Second), "a timer re-evaluates at the end of the cooldown")
	clk.Advance(3 * time.Second)
	assert.True(t, m.Active(), "still within the cooldown")

	// ... and happens when it ends, with no further observation.
	clk.Advance(time.Second)
	got := rec.next(t)
	assert.Equal(t, resourcelease.BackpressureSignal{
		IsActive: false, PendingCount: 0, ObservedAt: t0.Add(5 * time.Second), HighWatermark: 10, LowWatermark: 4,
	}, got)
	assert.False(t, m.Active())

	// A deferred transition the queue no longer calls for does not happen.
	clk.Advance(time.Second) // t0+6s, 1s into the new cooldown
	m.Observe(15, clk.Now())
	assert.False(t, m.Active())
	require.True(t, clk.WaitForTimers(1, 5*time.Second))
	clk.Advance(time.Second)
	m.Observe(3, clk.Now())      // back below the low watermark
	clk.Advance(3 * time.Second) // t0+10s: the timer fires and finds nothing to do
	m.Observe(10, clk.Now())     // the cooldown is over: activates at once
	assert.True(t, m.Active())
	got = rec.next(t)
	assert.True(t, got.IsActive)
	assert.Equal(t, 10, got.PendingCount, "no spurious activation at 15 or 3 came first")
	assert.Equal(t, t0.Add(10*time.Second), got.ObservedAt)
}

func TestMonitorObserveAfterCooldownNeedsNoTimer(t *testing.T) {
	t.Parallel()
	m, clk, rec := setupMonitor(t, backpressure.Config{HighWatermark: 10, Cooldown: 5 * time.Second})
	m.Observe(10, clk.Now())
	rec.next(t)
	clk.Advance(5 * time.Second)
	m.Observe(0, clk.Now())
	assert.False(t, m.Active(), "exactly at the end of the cooldown the transition is allowed")
	assert.Zero(t, clk.Timers())
	assert.False(t, rec.next(t).IsActive)
}

func TestAdmitReject(t *testing.T) {
	t.Parallel()
	m, clk, _ := setupMonitor(t, backpressure.Config{HighWatermark: 4, LowWatermark: 1, Mode: backpressure.ModeReject})
	require.NoError(t, m.Admit(context.Background()))

	m.Observe(5, clk.Now())
	err := m.Admit(context.Background())
	require.Error(t, err)
	assert.ErrorIs(t, err, resourcelease.ErrBackpressure)
	assert.Equal(t, resourcelease.StatusResourceExhausted, resourcelease.StatusOf(err))
	e := resourcelease.AsError(err)
	assert.Equal(t, map[string]string{"pendingCount": "5", "highWatermark": "4", "lowWatermark": "1"}, e.Metadata)

	m.Observe(1, clk.Now())
	assert.NoError(t, m.Admit(context.Background()))
}

func TestAdmitWait(t *testing.T) {
	t.Parallel()
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelExpired()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	tests := []struct {
		name       string
		ctx        func() (context.Context, context.CancelFunc)
		wantStatus resourcelease.Status
		wantCode   string
	}{
		{
			name: "deadline passes while waiting",
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 20*time.Millisecond)
			},
			wantStatus: resourcelease.StatusDeadlineExceeded, wantCode: resourcelease.CodeDeadlineExceeded,
		},
		{
			name:       "deadline already passed",
			ctx:        func() (context.Context, context.CancelFunc) { return expired, func() {} },
			wantStatus: resourcelease.StatusDeadlineExceeded, wantCode: resourcelease.CodeDeadlineExceeded,
		},
		{
			name:       "cancelled",
			ctx:        func() (context.Context, context.CancelFunc) { return cancelled, func() {} },
			wantStatus: resourcelease.StatusCancelled, wantCode: resourcelease.CodeCancelled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m, clk, _ := setupMonitor(t, backpressure.Config{HighWatermark: 4})
			m.Observe(4, clk.Now())
			ctx, cancel := tt.ctx()
			defer cancel()
			err := m.Admit(ctx)
			require.Error(t, err)
			var e *resourcelease.Error
			require.True(t, errors.As(err, &e), "a *resourcelease.Error")
			assert.Equal(t, tt.wantStatus, e.Status)
			assert.Equal(t, tt.wantCode, e.Code)
			assert.True(t, m.Active())
		})
	}
}

func TestAdmitWaitReturnsWhenCleared(t *testing.T) {
	t.Parallel()
	m, clk, rec := setupMonitor(t, backpressure.Config{HighWatermark: 4, LowWatermark: 2})
	m.Observe(4, clk.Now())

	const waiters = 10
	results := make(chan error, waiters)
	for range waiters {
		go func() { results <- m.Admit(context.Background()) }()
	}
	m.Observe(3, clk.Now()) // between the watermarks: still waiting
	select {
	case err := <-results:
		t.Fatalf("Admit returned %v while backpressure was active", err)
	default:
	}
	m.Observe(2, clk.Now())
	for range waiters {
		select {
		case err := <-results:
			assert.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("a waiter was not woken by the clear")
		}
	}
	assert.True(t, rec.next(t).IsActive)
	assert.False(t, rec.next(t).IsActive)
}

func TestCloseWakesWaiters(t *testing.T) {
	t.Parallel()
	clk := leasetest.NewManualClock(time.Time{})
	m, err := backpressure.NewMonitor(backpressure.Config{HighWatermark: 1, Clock: clk})
	require.NoError(t, err)
	m.Observe(1, clk.Now())
	result := make(chan error, 1)
	go func() { result <- m.Admit(context.Background()) }()

	require.NoError(t, m.Close())
	require.NoError(t, m.Close(), "Close is idempotent")
	select {
	case err := <-result:
		assert.ErrorIs(t, err, resourcelease.ErrClosed)
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the waiter")
	}
	assert.ErrorIs(t, m.Admit(context.Background()), resourcelease.ErrClosed)

	// After Close, Observe records the count but makes no transition.
	m.Observe(0, clk.Now())
	assert.True(t, m.Active())
	assert.Equal(t, 0, m.State().PendingCount)
}

func TestCloseStopsCooldownTimer(t *testing.T) {
	t.Parallel()
	clk := leasetest.NewManualClock(time.Time{})
	m, err := backpressure.NewMonitor(backpressure.Config{HighWatermark: 2, Cooldown: time.Minute, Clock: clk})
	require.NoError(t, err)
	m.Observe(2, clk.Now())
	m.Observe(0, clk.Now())
	require.Equal(t, 1, clk.Timers())
	require.NoError(t, m.Close())
	assert.Zero(t, clk.Timers())
	clk.Advance(time.Hour)
	assert.True(t, m.Active(), "no transition after Close")
}

func TestSlowListenerDoesNotBlockObserve(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	slow := backpressure.ListenerFunc(func(resourcelease.BackpressureSignal) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
	})
	m, clk, rec := setupMonitor(t, backpressure.Config{
		HighWatermark: 2, LowWatermark: 1, SignalBuffer: 4,
		Listeners: []resourcelease.BackpressureListener{slow},
		Logger:    slog.New(slog.DiscardHandler),
	})

	m.Observe(2, clk.Now())
	<-entered // the listener is now stuck on the first signal
	const flips = 1001
	for i := range flips {
		m.Observe(i%2*2, clk.Now()) // 0, 2, 0, 2, ..., 0: every call is a transition
	}
	assert.False(t, m.Active(), "Observe kept deciding while the listener was stuck")

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))
	dropped, err := counterValue(reg, "backpressure_signals_dropped_total", nil)
	require.NoError(t, err)
	assert.Positive(t, dropped, "the bounded buffer dropped signals")
	assert.Zero(t, int(dropped)%2, "signals are dropped in pairs")
	close(release)

	// The listeners see an alternating sequence ending in the current state.
	delivered := 1 + flips - int(dropped)
	assert.LessOrEqual(t, delivered, 1+4, "at most the signal in delivery plus a full buffer")
	var got []bool
	for range delivered {
		got = append(got, rec.next(t).IsActive)
	}
	for i, active := range got {
		assert.Equal(t, i%2 == 0, active, "signal %d of %v", i, got)
	}
	assert.False(t, got[len(got)-1], "the last signal is the current state")
}

func TestPanickingListenerIsRecovered(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	boom := backpressure.ListenerFunc(func(s resourcelease.BackpressureSignal) {
		if s.IsActive {
			panic("listener bug")
		}
	})
	m, clk, rec := setupMonitor(t, backpressure.Config{
		HighWatermark: 2,
		Listeners:     []resourcelease.BackpressureListener{boom},
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
	})
	m.Observe(2, clk.Now())
	assert.True(t, rec.next(t).IsActive, "later listeners still get the signal")
	m.Observe(0, clk.Now())
	assert.False(t, rec.next(t).IsActive, "the delivery goroutine survived")

	assert.Contains(t, logs.String(), "listener panicked")
	assert.Contains(t, logs.String(), "listener bug")
	assert.Equal(t, 1.0, testutil.ToFloat64(only(m, "backpressure_listener_panics_total")))
}

func TestMonitorMetrics(t *testing.T) {
	t.Parallel()
	m, clk, rec := setupMonitor(t, backpressure.Config{HighWatermark: 10, LowWatermark: 4})
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))

	m.Observe(12, clk.Now())
	m.Observe(3, clk.Now())
	m.Observe(10, clk.Now())
	m.Observe(7, clk.Now())
	for range 3 {
		rec.next(t)
	}
	const want = `
# HELP backpressure_active 1 while backpressure is active, 0 otherwise.
# TYPE backpressure_active gauge
backpressure_active 1
# HELP backpressure_high_watermark Pending count at which backpressure turns on.
# TYPE backpressure_high_watermark gauge
backpressure_high_watermark 10
# HELP backpressure_listener_panics_total Backpressure listener calls that panicked (recovered).
# TYPE backpressure_listener_panics_total counter
backpressure_listener_panics_total 0
# HELP backpressure_low_watermark Pending count at which backpressure clears.
# TYPE backpressure_low_watermark gauge
backpressure_low_watermark 4
# HELP backpressure_pending_count Last pending count observed by the backpressure monitor.
# TYPE backpressure_pending_count gauge
backpressure_pending_count 7
# HELP backpressure_signals_dropped_total Backpressure signals dropped because the listeners' delivery buffer was full.
# TYPE backpressure_signals_dropped_total counter
backpressure_signals_dropped_total 0
# HELP backpressure_transitions_total Backpressure transitions, by the state entered (active or cleared).
# TYPE backpressure_transitions_total counter
backpressure_transitions_total{state="active"} 2
backpressure_transitions_total{state="cleared"} 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want)))
}

func TestMonitorState(t *testing.T) {
	t.Parallel()
	m, clk, rec := setupMonitor(t, backpressure.Config{HighWatermark: 8, Cooldown: 1500 * time.Millisecond, Mode: backpressure.ModeReject})
	m.Observe(9, clk.Now())
	rec.next(t)
	st := m.State()
	require.NotNil(t, st.Latest)
	assert.Equal(t, backpressure.State{
		IsActive: true, PendingCount: 9, HighWatermark: 8, LowWatermark: 4,
		Mode: backpressure.ModeReject, CooldownMs: 1500, Latest: st.Latest,
	}, st)
	latest, ok := m.Latest()
	require.True(t, ok)
	assert.Equal(t, latest, *st.Latest)
}

// TestMonitorMatchesModel checks, for random observation sequences without a
// cooldown, that the monitor's state and signals follow the watermark rule.
func TestMonitorMatchesModel(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(rt *rapid.T) {
		high := rapid.IntRange(1, 50).Draw(rt, "high")
		cfgLow := rapid.IntRange(-1, high-1).Draw(rt, "low")
		low := cfgLow // the effective low watermark
		switch cfgLow {
		case 0:
			low = high / 2
		case -1:
			low = 0
		}
		pendings := rapid.SliceOf(rapid.IntRange(0, 60)).Draw(rt, "pendings")

		got := make(chan bool, len(pendings)+1)
		clk := leasetest.NewManualClock(time.Time{})
		m, err := backpressure.NewMonitor(backpressure.Config{
			HighWatermark: high, LowWatermark: cfgLow, Clock: clk, SignalBuffer: len(pendings) + 2,
			Listeners: []resourcelease.BackpressureListener{backpressure.ListenerFunc(func(s resourcelease.BackpressureSignal) {
				got <- s.IsActive
			})},
		})
		if err != nil {
			rt.Fatal(err)
		}
		defer m.Close()
		active := false
		var want []bool
		for _, p := range pendings {
			switch {
			case !active && p >= high:
				active = true
				want = append(want, true)
			case active && p <= low:
				active = false
				want = append(want, false)
			}
			m.Observe(p, clk.Now())
			if m.Active() != active {
				rt.Fatalf("after %d pending: active %v, want %v", p, m.Active(), active)
			}
		}
		for i, w := range want {
			select {
			case g := <-got:
				if g != w {
					rt.Fatalf("signal %d: active %v, want %v", i, g, w)
				}
			case <-time.After(5 * time.Second):
				rt.Fatalf("signal %d not delivered", i)
			}
		}
		st := m.State()
		if st.IsActive != active || st.PendingCount != lastOr(pendings, 0) {
			rt.Fatalf("state %+v, want active %v", st, active)
		}
	})
}

func lastOr(s []int, def int) int {
	if len(s) == 0 {
		return def
	}
	return s[len(s)-1]
}

// only wraps the metric called name of c as a collector for testutil.ToFloat64.
func only(c prometheus.Collector, name string) prometheus.Collector {
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		all := make(chan prometheus.Metric, 64)
		c.Collect(all)
		close(all)
		for m := range all {
			if strings.Contains(m.Desc().String(), `"`+name+`"`) {
				ch <- m
			}
		}
	})
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(f, ch) }
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// counterValue gathers reg and returns the counter called name with the
// given labels.
func counterValue(reg *prometheus.Registry, name string, labels map[string]string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue(), nil
		}
	}
	return 0, fmt.Errorf("%s%v not gathered", name, labels)
}
