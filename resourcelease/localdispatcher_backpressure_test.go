package resourcelease_test

import (
	"context"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"
)

// ldSignals is a listener that passes every signal to a channel, so a test
// can wait for the Monitor's goroutine to deliver a transition.
type ldSignals chan resourcelease.BackpressureSignal

func (c ldSignals) OnBackpressure(s resourcelease.BackpressureSignal) { c <- s }

func (c ldSignals) next(t *testing.T) resourcelease.BackpressureSignal {
	t.Helper()
	select {
	case s := <-c:
		return s
	case <-time.After(10 * time.Second): // a hang guard, not a synchronisation
		t.Fatal("no backpressure signal")
		return resourcelease.BackpressureSignal{}
	}
}

func (c ldSignals) none(t *testing.T) {
	t.Helper()
	select {
	case s := <-c:
		t.Fatalf("unexpected signal %+v", s)
	default:
	}
}

func newMonitor(t *testing.T, cfg backpressure.Config) *backpressure.Monitor {
	t.Helper()
	cfg.Logger = ldQuiet
	m, err := backpressure.NewMonitor(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { m.Close() })
	return m
}

func (f ldFixture) active(t *testing.T) bool {
	t.Helper()
	st, err := f.d.Stats(context.Background(), nil)
	require.NoError(t, err)
	return st.BackpressureActive
}

// done leases an item and completes it: the queue holds one item less.
func (f ldFixture) done(t *testing.T, peer string) {
	t.Helper()
	l := f.lease(t, peer)
	require.NoError(t, f.d.Complete(context.Background(), &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}))
}

func (f ldFixture) pending(t *testing.T) int {
	t.Helper()
	st, err := f.d.Stats(context.Background(), nil)
	require.NoError(t, err)
	return st.PendingCount
}

// TestDispatcherBackpressureWatermarks: the Monitor, fed by the Dispatcher's
// journal, activates at the high watermark, holds through the hysteresis
// band, clears at the low watermark only once the cooldown has passed, and
// Stats and the backpressure metrics follow.
func TestDispatcherBackpressureWatermarks(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	signals := make(ldSignals, 8)
	m := newMonitor(t, backpressure.Config{HighWatermark: 4, LowWatermark: 2, Cooldown: 5 * time.Second, Clock: clock,
		Listeners: []resourcelease.BackpressureListener{signals}})
	reg := prometheus.NewPedanticRegistry()
	f := newLD(t, resourcelease.DispatcherConfig{Clock: clock, Backpressure: m, Registerer: reg})
	start := clock.Now()

	f.enqueue(t, "1", "2", "3")
	assert.False(t, f.active(t), "below the high watermark")
	f.enqueue(t, "4")
	s := signals.next(t)
	assert.Equal(t, resourcelease.BackpressureSignal{IsActive: true, PendingCount: 4, ObservedAt: start, HighWatermark: 4, LowWatermark: 2}, s)
	assert.True(t, f.active(t))
	assert.Equal(t, 1.0, ldMetric(t, reg, "backpressure_active"), "the Monitor's collector is registered")

	l := f.lease(t, "w") // still 4: a leased item is work the queue holds
	signals.none(t)
	require.NoError(t, f.d.Complete(context.Background(), &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})) // 3: in the band, no change
	clock.Advance(time.Second)
	f.done(t, "w") // 2: at the low watermark, but the cooldown holds it
	assert.True(t, f.active(t), "the cooldown holds the clear back")
	signals.none(t)

	clock.Advance(4 * time.Second) // the cooldown ends: the deferred clear happens
	s = signals.next(t)
	assert.False(t, s.IsActive)
	assert.Equal(t, 2, s.PendingCount)
	assert.False(t, f.active(t))

	// Straight back above the high watermark: the cooldown holds the
	// activation back too, so enqueues are still admitted meanwhile.
	f.enqueue(t, "5", "6")
	assert.False(t, f.active(t))
	f.enqueue(t, "7")
	signals.none(t)
	clock.Advance(5 * time.Second)
	s = signals.next(t)
	assert.True(t, s.IsActive)
	assert.Equal(t, 5, s.PendingCount)
	assert.True(t, f.active(t))
}

// ldAdmitProbe wraps a controller and reports each Admit call as it starts.
type ldAdmitProbe struct {
	resourcelease.BackpressureController
	entered chan struct{}
}

func (p ldAdmitProbe) Admit(ctx context.Context) error {
	p.entered <- struct{}{}
	return p.BackpressureController.Admit(ctx)
}

// TestDispatcherBackpressureModes: reject mode refuses with
// resource-exhausted; wait mode holds the enqueue until backpressure clears,
// or until the caller's deadline (deadline-exceeded), or until Close.
func TestDispatcherBackpressureModes(t *testing.T) {
	setup := func(t *testing.T, mode backpressure.Mode) (ldFixture, chan struct{}) {
		clock := leasetest.NewManualClock(time.Time{})
		m := newMonitor(t, backpressure.Config{HighWatermark: 2, LowWatermark: 1, Mode: mode, Clock: clock})
		probe := ldAdmitProbe{BackpressureController: m, entered: make(chan struct{}, 4)}
		f := newLD(t, resourcelease.DispatcherConfig{Clock: clock, Backpressure: probe})
		f.enqueue(t, "1", "2")
		<-probe.entered
		<-probe.entered
		require.True(t, f.active(t))
		return f, probe.entered
	}
	enqueueAsync := func(f ldFixture, ctx context.Context) chan error {
		errs := make(chan error, 1)
		go func() {
			_, err := f.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ldItem("3")})
			errs <- err
		}()
		return errs
	}
	tests := []struct {
		name string
		mode backpressure.Mode
		run  func(t *testing.T, f ldFixture, entered chan struct{})
	}{
		{"reject refuses", backpressure.ModeReject, func(t *testing.T, f ldFixture, entered chan struct{}) {
			_, err := f.d.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: ldItem("3")})
			require.Error(t, err)
			assert.ErrorIs(t, err, resourcelease.ErrBackpressure)
			assert.Equal(t, resourcelease.StatusResourceExhausted, resourcelease.StatusOf(err))
			assert.Equal(t, 2, f.pending(t), "nothing was enqueued")
			f.done(t, "w") // 1 ready: cleared
			_, err = f.d.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: ldItem("4")})
			require.NoError(t, err)
		}},
		{"wait until cleared", backpressure.ModeWait, func(t *testing.T, f ldFixture, entered chan struct{}) {
			errs := enqueueAsync(f, context.Background())
			<-entered
			select {
			case err := <-errs:
				t.Fatalf("enqueue returned while backpressure was active: %v", err)
			default:
			}
			assert.Equal(t, 2, f.pending(t), "held back")
			f.done(t, "w") // 1 ready: cleared, the waiter goes through
			require.NoError(t, <-errs)
			assert.Equal(t, 2, f.pending(t))
		}},
		{"wait until the deadline", backpressure.ModeWait, func(t *testing.T, f ldFixture, entered chan struct{}) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			errs := enqueueAsync(f, ctx)
			<-entered
			err := <-errs
			require.Error(t, err)
			assert.Equal(t, resourcelease.StatusDeadlineExceeded, resourcelease.StatusOf(err))
			assert.Equal(t, 2, f.pending(t), "nothing was enqueued")
		}},
		{"wait until Close", backpressure.ModeWait, func(t *testing.T, f ldFixture, entered chan struct{}) {
			errs := enqueueAsync(f, context.Background())
			<-entered
			require.NoError(t, f.d.Close())
			assert.ErrorIs(t, <-errs, resourcelease.ErrClosed)
			_, err := f.d.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: ldItem("4")})
			assert.ErrorIs(t, err, resourcelease.ErrClosed)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, entered := setup(t, tt.mode)
			tt.run(t, f, entered)
		})
	}
}

// TestDispatcherBackpressureRateLimiter: a RateLimiter listed as a Monitor
// listener switches to its backpressure limit when the Dispatcher's queue
// crosses the high watermark, and back when it clears.
func TestDispatcherBackpressureRateLimiter(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	rl, err := backpressure.NewRateLimiter(backpressure.RateLimiterConfig{BackpressureLimit: 50, BackpressureBurst: 10, Clock: clock})
	require.NoError(t, err)
	signals := make(ldSignals, 4)
	// Listeners are called in order: when signals hears of a transition, the
	// rate limiter already has.
	m := newMonitor(t, backpressure.Config{HighWatermark: 3, Clock: clock, Listeners: []resourcelease.BackpressureListener{rl, signals}})
	f := newLD(t, resourcelease.DispatcherConfig{Clock: clock, Backpressure: m})

	assert.Equal(t, rate.Inf, rl.Limiter("").Limit(), "unlimited normally")
	f.enqueue(t, "1", "2", "3")
	require.True(t, signals.next(t).IsActive)
	assert.True(t, rl.BackpressureActive())
	assert.Equal(t, rate.Limit(50), rl.Limiter("").Limit())
	allowed := 0
	for range 20 {
		if rl.Allow("") {
			allowed++
		}
	}
	assert.Equal(t, 10, allowed, "the backpressure burst, with the clock standing still")

	f.done(t, "w")
	f.done(t, "w") // 1 ready: at the low watermark (3/2 = 1)
	require.False(t, signals.next(t).IsActive)
	assert.False(t, rl.BackpressureActive())
	assert.Equal(t, rate.Inf, rl.Limiter("").Limit())
	assert.True(t, rl.Allow(""))
}

// TestDispatcherBackpressureFromRestoredState: a queue rebuilt above the
// high watermark starts with backpressure on.
func TestDispatcherBackpressureFromRestoredState(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	m := newMonitor(t, backpressure.Config{HighWatermark: 2, Mode: backpressure.ModeReject, Clock: clock})
	it := *ldItem("a")
	st := &resourcelease.QueueState{Pending: []resourcelease.PendingItem{
		{Payload: it, SequenceID: 1, Attempt: 1}, {Payload: it, SequenceID: 2, Attempt: 1}}, NextSequenceID: 3}
	f := newLD(t, resourcelease.DispatcherConfig{Clock: clock, Backpressure: m, Queue: resourcelease.QueueConfig{InitialState: st}})
	assert.True(t, f.active(t))
	_, err := f.d.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: ldItem("b")})
	assert.ErrorIs(t, err, resourcelease.ErrBackpressure)
}
