package worker_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
	"github.com/leasemesh/leasemesh/worker"
)

// startWorker runs w until the test ends (or stop is called) and returns
// stop, which cancels Run's context and waits for Run to return nil.
func startWorker(t *testing.T, w *worker.Worker) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			assert.NoError(t, <-done)
		})
	}
	t.Cleanup(stop)
	return stop
}

func newWorker(t *testing.T, d resourcelease.Dispatcher, opts worker.Config) *worker.Worker {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	w, err := worker.New(d, opts)
	require.NoError(t, err)
	return w
}

// leaseN returns a LeaseFn that hands out n distinct leases, then long-polls
// until its context ends.
func leaseN(n int, heartbeatMs int64) func(context.Context, *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
	var given atomic.Int64
	return func(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
		if i := given.Add(1); i <= int64(n) {
			return &resourcelease.Lease{
				Payload: item, SequenceID: i, Attempt: 1, OwnerPeerID: r.PeerID, HeartbeatInterval: time.Duration(heartbeatMs) * time.Millisecond,
				OwnershipToken: resourcelease.OwnershipToken{SequenceID: i, Attempt: 1, LeaseID: uuid.New()},
			}, nil
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
}

// notifyDispatcher wraps a Dispatcher and reports successful completes and
// fails, so that tests wait on events rather than on time.
type notifyDispatcher struct {
	resourcelease.Dispatcher
	completed chan resourcelease.OwnershipToken
	failed    chan *resourcelease.FailRequest
}

func (d *notifyDispatcher) Complete(ctx context.Context, r *resourcelease.CompleteRequest) error {
	err := d.Dispatcher.Complete(ctx, r)
	if err == nil {
		d.completed <- r.OwnershipToken
	}
	return err
}

func (d *notifyDispatcher) Fail(ctx context.Context, r *resourcelease.FailRequest) error {
	err := d.Dispatcher.Fail(ctx, r)
	if err == nil {
		d.failed <- r
	}
	return err
}

// TestWorkerWithLocalDispatcher runs two workers against the real
// Dispatcher, over the network and in process: every item is completed, the
// flaky ones after one failure whose error reaches the next attempt as
// lastError.
func TestWorkerWithLocalDispatcher(t *testing.T) {
	t.Parallel()
	for _, overNetwork := range []bool{true, false} {
		name := map[bool]string{true: "over client", false: "in process"}[overNetwork]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			local, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
			defer closeDispatcher()
			var d resourcelease.Dispatcher = local
			if overNetwork {
				d = newClientServer(t, local, transport.HandlerConfig{}, transport.ClientConfig{Caller: "test"})
			}
			// Notified on the workers' side, once they have the answer.
			nd := &notifyDispatcher{Dispatcher: d, completed: make(chan resourcelease.OwnershipToken, 16), failed: make(chan *resourcelease.FailRequest, 16)}
			const n = 6
			for i := range n {
				it := item
				it.ResourceID = fmt.Sprintf("order-%d", i)
				it.RequestID = ""
				_, err := d.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: &it})
				require.NoError(t, err)
			}
			var mu sync.Mutex
			lastErrors := map[string]*resourcelease.ErrorInfo{}
			handler := func(_ context.Context, l *resourcelease.Lease) error {
				flaky := strings.HasSuffix(l.Payload.ResourceID, "1") || strings.HasSuffix(l.Payload.ResourceID, "3")
				if flaky && l.Attempt == 1 {
					return resourcelease.Errorf(resourcelease.StatusUnavailable, "app.flaky", "flaky %s", l.Payload.ResourceID)
				}
				mu.Lock()
				lastErrors[l.Payload.ResourceID] = l.LastError
				mu.Unlock()
				return nil
			}
			w1 := newWorker(t, nd, worker.Config{PeerID: "w1", Handler: handler, Concurrency: 2, LeaseWait: time.Second})
			w2 := newWorker(t, nd, worker.Config{PeerID: "w2", Handler: handler, LeaseWait: time.Second})
			stop1, stop2 := startWorker(t, w1), startWorker(t, w2)
			for range n {
				<-nd.completed
			}
			for range 2 {
				f := <-nd.failed
				require.Equal(t, "app.flaky", f.ErrorCode)
				require.False(t, f.DeadLetter)
			}
			stop1()
			stop2()
			s1, s2 := w1.Stats(), w2.Stats()
			require.EqualValues(t, n, s1.Completed+s2.Completed)
			require.EqualValues(t, 2, s1.Failed+s2.Failed)
			require.EqualValues(t, n+2, s1.Leased+s2.Leased)
			require.Zero(t, s1.Lost+s2.Lost)
			stats, err := d.Stats(context.Background(), nil)
			require.NoError(t, err)
			require.Equal(t, resourcelease.Stats{}, *stats, "nothing pending or leased")
			require.Nil(t, lastErrors["order-0"])
			require.Equal(t, &resourcelease.ErrorInfo{Message: "app.flaky: flaky order-1", Code: "app.flaky"}, lastErrors["order-1"])
			require.Equal(t, &resourcelease.ErrorInfo{Message: "app.flaky: flaky order-3", Code: "app.flaky"}, lastErrors["order-3"])
		})
	}
}

// TestWorkerHeartbeats checks the heartbeat cadence on a manual clock: the
// lease's advertised interval, or the option that overrides it.
func TestWorkerHeartbeats(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		advertised  int64
		override    time.Duration
		wantEveryMs time.Duration
	}{
		{"advertised", 1000, 0, time.Second},
		{"override", 1000, 250 * time.Millisecond, 250 * time.Millisecond},
		{"default when none advertised", 0, 0, resourcelease.DefaultHeartbeatInterval},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := leasetest.NewManualClock(time.Time{})
			heartbeats := make(chan time.Time, 4)
			completed := make(chan struct{}, 1)
			d := &leasetest.FakeDispatcher{
				LeaseFn: leaseN(1, tt.advertised),
				HeartbeatFn: func(_ context.Context, r *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
					heartbeats <- clock.Now()
					return &resourcelease.HeartbeatResponse{LeaseExpiresAt: clock.Now().Add(30 * time.Second)}, nil
				},
				CompleteFn: func(context.Context, *resourcelease.CompleteRequest) error {
					completed <- struct{}{}
					return nil
				},
			}
			started, release := make(chan struct{}), make(chan struct{})
			w := newWorker(t, d, worker.Config{Clock: clock, HeartbeatInterval: tt.override, Handler: func(context.Context, *resourcelease.Lease) error {
				close(started)
				<-release
				return nil
			}})
			startWorker(t, w)
			<-started
			start := clock.Now()
			for i := 1; i <= 3; i++ {
				require.True(t, clock.WaitForTimers(1, 10*time.Second), "heartbeat timer %d", i)
				clock.Advance(tt.wantEveryMs - time.Millisecond)
				require.Equal(t, 1, clock.Timers(), "no heartbeat before the interval")
				clock.Advance(time.Millisecond)
				require.Equal(t, start.Add(time.Duration(i)*tt.wantEveryMs), <-heartbeats)
			}
			close(release)
			<-completed
			require.Empty(t, heartbeats, "no heartbeat after the handler returned")
		})
	}
}

// TestWorkerLostLease: a heartbeat answered unknown_token across the wire
// cancels the handler's context with ErrLeaseLost, and the lease is neither
// completed nor failed.
func TestWorkerLostLease(t *testing.T) {
	t.Parallel()
	clock := leasetest.NewManualClock(time.Time{})
	var settled atomic.Int64
	d := &leasetest.FakeDispatcher{
		LeaseFn: leaseN(1, 1000),
		HeartbeatFn: func(context.Context, *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
			return nil, resourcelease.ErrUnknownToken
		},
		CompleteFn: func(context.Context, *resourcelease.CompleteRequest) error {
			settled.Add(1)
			return nil
		},
		FailFn: func(context.Context, *resourcelease.FailRequest) error {
			settled.Add(1)
			return nil
		},
	}
	c := newClientServer(t, d, transport.HandlerConfig{}, transport.ClientConfig{})
	started, cause := make(chan struct{}), make(chan error, 1)
	handlerDone := make(chan struct{})
	w := newWorker(t, c, worker.Config{Clock: clock, Handler: func(ctx context.Context, _ *resourcelease.Lease) error {
		defer close(handlerDone)
		close(started)
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return ctx.Err()
	}})
	stop := startWorker(t, w)
	<-started
	require.True(t, clock.WaitForTimers(1, 10*time.Second))
	clock.Advance(time.Second)
	require.ErrorIs(t, <-cause, worker.ErrLeaseLost)
	<-handlerDone
	stop()
	require.Zero(t, settled.Load(), "a lost lease is not settled")
	require.Equal(t, worker.Stats{Leased: 1, Lost: 1}, w.Stats())
}

// TestWorkerStopsAtLeaseExpiry: a lease shorter than its advertised heartbeat
// interval is heartbeated in time anyway, and when every heartbeat fails the
// handler's context is cancelled with ErrLeaseLost once the lease's expiry
// passes, because from then on another worker may hold the item.
func TestWorkerStopsAtLeaseExpiry(t *testing.T) {
	t.Parallel()
	clock := leasetest.NewManualClock(time.Time{})
	expires := clock.Now().Add(3 * time.Second)
	var beats atomic.Int64
	at, err := holdUntilStopped(t, unrenewableLease(expires, 10_000, &beats), clock, expires.Add(time.Minute))
	require.ErrorIs(t, err, worker.ErrLeaseLost)
	require.False(t, at.Before(expires), "cancelled before the lease expired")
	require.GreaterOrEqual(t, beats.Load(), int64(2), "heartbeats were attempted before expiry despite the 10 s interval")
}

// unrenewableLease is a dispatcher that hands out one lease, stated to
// expire at expiresAt (in its own clock) and advertising heartbeatMs, whose
// heartbeats all fail transiently; it counts them in beats.
func unrenewableLease(expiresAt time.Time, heartbeatMs int64, beats *atomic.Int64) *leasetest.FakeDispatcher {
	var given atomic.Bool
	return &leasetest.FakeDispatcher{
		LeaseFn: func(ctx context.Context, _ *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
			if given.Swap(true) { // one lease, then nothing until the worker stops
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return &resourcelease.Lease{Payload: item, SequenceID: 1, Attempt: 1, HeartbeatInterval: time.Duration(heartbeatMs) * time.Millisecond,
				LeaseExpiresAt: expiresAt, OwnershipToken: resourcelease.OwnershipToken{SequenceID: 1, Attempt: 1, LeaseID: uuid.New()}}, nil
		},
		HeartbeatFn: func(context.Context, *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
			beats.Add(1)
			return nil, resourcelease.ErrStorageUnavailable // transient, never succeeds
		},
		FailFn: func(context.Context, *resourcelease.FailRequest) error {
			return nil
		},
	}
}

// holdUntilStopped runs a Worker on clock over d with a handler that holds
// its lease until its context ends, moving clock on in 250 ms steps (up to
// limit) while the worker waits on it. It returns the clock's time when the
// handler was stopped and why; it fails the test if it never was.
func holdUntilStopped(t *testing.T, d resourcelease.Dispatcher, clock *leasetest.ManualClock, limit time.Time) (at time.Time, cause error) {
	t.Helper()
	causes := make(chan error, 1)
	var once sync.Once
	w := newWorker(t, d, worker.Config{Clock: clock, Concurrency: 1, Handler: func(ctx context.Context, _ *resourcelease.Lease) error {
		<-ctx.Done()
		once.Do(func() { causes <- context.Cause(ctx) })
		return ctx.Err()
	}})
	stop := startWorker(t, w)
	defer stop()
	deadline := time.Now().Add(10 * time.Second) // real time: a bound on the test, not synchronisation
	for time.Now().Before(deadline) {
		select {
		case err := <-causes:
			return clock.Now(), err
		default:
		}
		if clock.WaitForTimers(1, 20*time.Millisecond) && clock.Now().Before(limit) {
			clock.Advance(250 * time.Millisecond)
		}
	}
	t.Fatalf("the handler was never stopped (worker clock at %v)", clock.Now())
	return time.Time{}, nil
}

// TestWorkerShutdown: when Run's context ends, in-flight handlers are
// cancelled and their leases released (the attempt not counted) on a
// context that is still alive; a dispatcher that predates release
// (unimplemented) gets a fail with requeue instead, as before.
func TestWorkerShutdown(t *testing.T) {
	t.Parallel()
	const n = 3
	for _, tt := range []struct {
		name       string
		oldServer  bool
		wantStats  worker.Stats
		wantFailed int
	}{
		{"release", false, worker.Stats{Leased: n, Released: n}, 0},
		{"dispatcher without release", true, worker.Stats{Leased: n, Failed: n}, n},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			type settleCall struct {
				token    resourcelease.OwnershipToken
				fail     *resourcelease.FailRequest // nil for a release
				ctxErr   error
				deadline bool
			}
			calls := make(chan settleCall, 2*n)
			var releases atomic.Int64
			d := &leasetest.FakeDispatcher{
				LeaseFn: leaseN(n, 0),
				ReleaseFn: func(ctx context.Context, r *resourcelease.ReleaseRequest) error {
					releases.Add(1)
					if tt.oldServer {
						return &resourcelease.Error{Status: resourcelease.StatusUnimplemented, Code: transport.CodeUnknownProcedure}
					}
					_, hasDeadline := ctx.Deadline()
					calls <- settleCall{r.OwnershipToken, nil, ctx.Err(), hasDeadline}
					return nil
				},
				FailFn: func(ctx context.Context, r *resourcelease.FailRequest) error {
					_, hasDeadline := ctx.Deadline()
					calls <- settleCall{r.OwnershipToken, r, ctx.Err(), hasDeadline}
					return nil
				},
			}
			var running sync.WaitGroup
			running.Add(n)
			w := newWorker(t, d, worker.Config{Concurrency: n, Handler: func(ctx context.Context, _ *resourcelease.Lease) error {
				running.Done()
				<-ctx.Done()
				return ctx.Err()
			}})
			stop := startWorker(t, w)
			running.Wait()
			stop()
			require.Len(t, calls, n, "every in-flight lease was settled before Run returned")
			seen := map[int64]bool{}
			failed := 0
			for range n {
				c := <-calls
				require.NoError(t, c.ctxErr, "the call has a live context")
				require.True(t, c.deadline, "bounded by the shutdown timeout")
				if c.fail != nil {
					failed++
					require.Equal(t, worker.ShutdownReason, c.fail.Reason)
					require.Equal(t, resourcelease.CodeCancelled, c.fail.ErrorCode)
					require.False(t, c.fail.DeadLetter)
				}
				seen[c.token.SequenceID] = true
			}
			require.Len(t, seen, n)
			require.Equal(t, tt.wantFailed, failed)
			require.Equal(t, tt.wantStats, w.Stats())
			if tt.oldServer {
				require.LessOrEqual(t, releases.Load(), int64(n), "release is not retried once refused")
			}
		})
	}
}

// TestWorkerLeasedAsItStops: a lease that arrives after Run's context ended is
// released at once without running the handler.
func TestWorkerLeasedAsItStops(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	releases := make(chan *resourcelease.ReleaseRequest, 1)
	inner := leaseN(1, 0)
	d := &leasetest.FakeDispatcher{
		LeaseFn: func(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
			l, err := inner(ctx, r)
			cancel() // the worker is told to stop while the lease is on its way
			return l, err
		},
		ReleaseFn: func(_ context.Context, r *resourcelease.ReleaseRequest) error {
			releases <- r
			return nil
		},
	}
	var ran atomic.Bool
	w := newWorker(t, d, worker.Config{Handler: func(context.Context, *resourcelease.Lease) error {
		ran.Store(true)
		return nil
	}})
	require.NoError(t, w.Run(ctx))
	require.False(t, ran.Load())
	r := <-releases
	require.Equal(t, int64(1), r.OwnershipToken.SequenceID)
	require.Equal(t, worker.Stats{Leased: 1, Released: 1}, w.Stats())
}

// TestWorkerBackoffAndResume: a dispatcher that is down (503 over the wire)
// is retried with backoff, and the worker resumes when it is back.
func TestWorkerBackoffAndResume(t *testing.T) {
	t.Parallel()
	const outage = 3
	h := newHandler(t, &leasetest.FakeDispatcher{LeaseFn: leaseN(1, 0)}, transport.HandlerConfig{})
	var refused atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if refused.Load() < outage {
			refused.Add(1)
			transport.WriteError(w, resourcelease.ErrClosed)
			return
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c, err := transport.NewClient(srv.URL, transport.ClientConfig{})
	require.NoError(t, err)
	defer c.Close()
	nd := &notifyDispatcher{Dispatcher: c, completed: make(chan resourcelease.OwnershipToken, 1)}
	w := newWorker(t, nd, worker.Config{MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond,
		Handler: func(context.Context, *resourcelease.Lease) error { return nil }})
	stop := startWorker(t, w)
	<-nd.completed
	stop()
	require.Equal(t, worker.Stats{Leased: 1, Completed: 1, Errors: outage}, w.Stats())
}

// TestWorkerBackoffSchedule checks the exponential backoff with jitter on a
// manual clock: each wait lies in [d/2, d] for d = min·2^n capped at max.
func TestWorkerBackoffSchedule(t *testing.T) {
	t.Parallel()
	clock := leasetest.NewManualClock(time.Time{})
	calls := make(chan time.Time, 16)
	d := &leasetest.FakeDispatcher{LeaseFn: func(ctx context.Context, _ *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
		calls <- clock.Now()
		return nil, resourcelease.ErrStorageUnavailable
	}}
	const minB, maxB = 100 * time.Millisecond, 800 * time.Millisecond
	w := newWorker(t, d, worker.Config{Clock: clock, MinBackoff: minB, MaxBackoff: maxB,
		Handler: func(context.Context, *resourcelease.Lease) error { return nil }})
	startWorker(t, w)
	prev := <-calls
	for _, ceiling := range []time.Duration{100, 200, 400, 800, 800, 800} {
		ceiling *= time.Millisecond
		require.True(t, clock.WaitForTimers(1, 10*time.Second))
		// Step through the window in 1 ms steps until the retry happens.
		var next time.Time
		for next.IsZero() {
			clock.Advance(time.Millisecond)
			select {
			case next = <-calls:
			default:
				if clock.Timers() == 0 { // fired: the call is on its way
					next = <-calls
				}
			}
		}
		wait := next.Sub(prev)
		require.GreaterOrEqual(t, wait, ceiling/2, "backoff too short")
		require.LessOrEqual(t, wait, ceiling+time.Millisecond, "backoff too long")
		prev = next
	}
}

// TestWorkerIdleDispatcher: a dispatcher that answers null at once instead of
// long-polling does not make the worker spin.
func TestWorkerIdleDispatcher(t *testing.T) {
	t.Parallel()
	clock := leasetest.NewManualClock(time.Time{})
	var calls atomic.Int64
	d := &leasetest.FakeDispatcher{LeaseFn: func(context.Context, *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
		calls.Add(1)
		return nil, nil
	}}
	w := newWorker(t, d, worker.Config{Clock: clock, MinBackoff: time.Second, MaxBackoff: time.Second,
		Handler: func(context.Context, *resourcelease.Lease) error { return nil }})
	startWorker(t, w)
	require.True(t, clock.WaitForTimers(1, 10*time.Second))
	require.EqualValues(t, 1, calls.Load())
	clock.Advance(time.Second)
	require.True(t, clock.WaitForTimers(1, 10*time.Second))
	require.EqualValues(t, 2, calls.Load())
}

// TestWorkerSettle checks complete and fail calls that fail: transient errors
// are retried, unknown_token and permanent errors end with the lease lost.
func TestWorkerSettle(t *testing.T) {
	t.Parallel()
	unavailable := resourcelease.ErrStorageUnavailable
	tests := []struct {
		name       string
		errs       []error // answers of successive complete calls; then success
		wantStats  worker.Stats
		wantCalls  int
		wantLogged string
	}{
		{"first time", nil, worker.Stats{Leased: 1, Completed: 1}, 1, ""},
		{"after transient errors", []error{unavailable, unavailable}, worker.Stats{Leased: 1, Completed: 1, Errors: 2}, 3, ""},
		{"after a bare 5xx (unknown, as yarpc reads it)", []error{resourcelease.Errorf(resourcelease.StatusUnknown, "", "HTTP 502 Bad Gateway")},
			worker.Stats{Leased: 1, Completed: 1, Errors: 1}, 2, ""},
		{"unknown token", []error{resourcelease.ErrUnknownToken}, worker.Stats{Leased: 1, Lost: 1}, 1, "lease lost before it was settled"},
		{"not retryable", []error{resourcelease.Errorf(resourcelease.StatusInvalidArgument, "x", "bad")}, worker.Stats{Leased: 1, Lost: 1, Errors: 1}, 1, "could not settle lease"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int64
			done := make(chan struct{})
			d := &leasetest.FakeDispatcher{
				LeaseFn: leaseN(1, 0),
				CompleteFn: func(context.Context, *resourcelease.CompleteRequest) error {
					i := int(calls.Add(1))
					if i == len(tt.errs)+1 || i == len(tt.errs) && tt.wantStats.Completed == 0 {
						defer close(done)
					}
					if i <= len(tt.errs) {
						return tt.errs[i-1]
					}
					return nil
				},
			}
			var logs logBuffer
			w := newWorker(t, d, worker.Config{MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, Logger: logs.logger(),
				Handler: func(context.Context, *resourcelease.Lease) error { return nil }})
			stop := startWorker(t, w)
			<-done
			stop()
			require.Equal(t, tt.wantStats, w.Stats())
			require.EqualValues(t, tt.wantCalls, calls.Load())
			require.Contains(t, logs.String(), tt.wantLogged)
		})
	}
}

// TestWorkerHandlerErrors checks the fail request made for each kind of
// handler error.
func TestWorkerHandlerErrors(t *testing.T) {
	t.Parallel()
	appErr := resourcelease.Errorf(resourcelease.StatusFailedPrecondition, "app.stock", "out of stock")
	tests := []struct {
		name        string
		handler     func() error
		wantReason  string
		wantCode    string
		wantRequeue bool
	}{
		{"plain error", func() error { return errors.New("db timeout") }, "db timeout", "", true},
		{"*Error", func() error { return appErr }, "app.stock: out of stock", "app.stock", true},
		{"wrapped *Error", func() error { return fmt.Errorf("order 7: %w", appErr) }, "order 7: app.stock: out of stock", "app.stock", true},
		{"permanent", func() error { return worker.Permanent(errors.New("poison")) }, "poison", "", false},
		{"permanent *Error", func() error { return worker.Permanent(appErr) }, "app.stock: out of stock", "app.stock", false},
		{"panic", func() error { panic("boom") }, "handler panic: boom", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			fails := make(chan *resourcelease.FailRequest, 1)
			d := &leasetest.FakeDispatcher{
				LeaseFn: leaseN(1, 0),
				FailFn: func(_ context.Context, r *resourcelease.FailRequest) error {
					fails <- r
					return nil
				},
			}
			w := newWorker(t, d, worker.Config{Handler: func(context.Context, *resourcelease.Lease) error { return tt.handler() }})
			stop := startWorker(t, w)
			f := <-fails
			stop()
			require.Equal(t, tt.wantReason, f.Reason)
			require.Equal(t, tt.wantCode, f.ErrorCode)
			require.Equal(t, !tt.wantRequeue, f.DeadLetter)
			require.Equal(t, worker.Stats{Leased: 1, Failed: 1}, w.Stats())
		})
	}
	require.NoError(t, worker.Permanent(nil))
}

// TestWorkerRunTwice: a Worker runs once at a time.
func TestWorkerRunTwice(t *testing.T) {
	t.Parallel()
	leasing := make(chan struct{}, 1)
	d := &leasetest.FakeDispatcher{LeaseFn: func(ctx context.Context, _ *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
		select {
		case leasing <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	w := newWorker(t, d, worker.Config{Handler: func(context.Context, *resourcelease.Lease) error { return nil }})
	stop := startWorker(t, w)
	<-leasing
	require.ErrorContains(t, w.Run(context.Background()), "already running")
	stop()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, w.Run(ctx), "it can run again once stopped")
}

// TestNewWorkerOptions checks that bad options are errors.
func TestNewWorkerOptions(t *testing.T) {
	t.Parallel()
	h := func(context.Context, *resourcelease.Lease) error { return nil }
	tests := []struct {
		name    string
		d       resourcelease.Dispatcher
		opts    worker.Config
		wantErr string
	}{
		{name: "minimal", d: &leasetest.FakeDispatcher{}, opts: worker.Config{Handler: h}},
		{name: "all set", d: &leasetest.FakeDispatcher{}, opts: worker.Config{PeerID: "w", Handler: h, Concurrency: 4, LeaseWait: time.Second,
			MinBackoff: time.Millisecond, MaxBackoff: time.Second, HeartbeatInterval: time.Second, ShutdownTimeout: time.Second,
			Logger: quietLogger, Clock: leasetest.NewManualClock(time.Time{})}},
		{name: "only MinBackoff, under the default max", d: &leasetest.FakeDispatcher{}, opts: worker.Config{Handler: h, MinBackoff: time.Second}},
		{name: "nil dispatcher", opts: worker.Config{Handler: h}, wantErr: "nil Dispatcher"},
		{name: "no handler", d: &leasetest.FakeDispatcher{}, wantErr: "Handler is required"},
		{name: "negative concurrency", d: &leasetest.FakeDispatcher{}, opts: worker.Config{Handler: h, Concurrency: -1}, wantErr: "Concurrency"},
		{name: "negative lease wait", d: &leasetest.FakeDispatcher{}, opts: worker.Config{Handler: h, LeaseWait: -1}, wantErr: "LeaseWait"},
		{name: "negative backoff", d: &leasetest.FakeDispatcher{}, opts: worker.Config{Handler: h, MinBackoff: -1}, wantErr: "MinBackoff"},
		{name: "negative heartbeat", d: &leasetest.FakeDispatcher{}, opts: worker.Config{Handler: h, HeartbeatInterval: -1}, wantErr: "HeartbeatInterval"},
		{name: "negative shutdown", d: &leasetest.FakeDispatcher{}, opts: worker.Config{Handler: h, ShutdownTimeout: -1}, wantErr: "ShutdownTimeout"},
		{name: "min over max", d: &leasetest.FakeDispatcher{}, opts: worker.Config{Handler: h, MinBackoff: time.Minute, MaxBackoff: time.Second}, wantErr: "exceeds MaxBackoff"},
		{name: "min over the default max", d: &leasetest.FakeDispatcher{}, opts: worker.Config{Handler: h, MinBackoff: time.Minute}, wantErr: "exceeds MaxBackoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			w, err := worker.New(tt.d, tt.opts)
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.NotNil(t, w)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			require.Nil(t, w)
		})
	}
}

// TestWorkerStopDuringSettleIsNotLost: stopping the worker while its
// complete is in flight does not cut the call short. The dispatcher may
// already have applied it, and a retry would be told the token is unknown and
// count finished work as lost.
func TestWorkerStopDuringSettleIsNotLost(t *testing.T) {
	t.Parallel()
	inFlight := make(chan struct{})
	runStopped := make(chan struct{})
	var calls atomic.Int64
	d := &leasetest.FakeDispatcher{
		LeaseFn: leaseN(1, 10_000),
		CompleteFn: func(ctx context.Context, _ *resourcelease.CompleteRequest) error {
			if calls.Add(1) > 1 {
				return resourcelease.ErrUnknownToken // the first call was applied
			}
			close(inFlight)
			<-runStopped // Run's context has ended by now
			if err := ctx.Err(); err != nil {
				return err // the call was cut short (as a real client's would be)
			}
			return nil
		},
	}
	w := newWorker(t, d, worker.Config{Concurrency: 1, Handler: func(context.Context, *resourcelease.Lease) error { return nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	<-inFlight
	cancel()
	close(runStopped)
	require.NoError(t, <-done)
	s := w.Stats()
	assert.Equal(t, int64(1), s.Completed, "stats %+v", s)
	assert.Equal(t, int64(0), s.Lost, "stats %+v", s)
	assert.Equal(t, int64(1), calls.Load(), "one complete call")
}

// TestWorkerShutdownTimeoutBoundsSettling: a dispatcher that never answers
// holds a settling call only until the shutdown timeout after Run's context
// ends, once for all attempts: no fresh timeout for a retry.
func TestWorkerShutdownTimeoutBoundsSettling(t *testing.T) {
	t.Parallel()
	inFlight := make(chan struct{})
	var calls atomic.Int64
	d := &leasetest.FakeDispatcher{
		LeaseFn: leaseN(1, 10_000),
		CompleteFn: func(ctx context.Context, _ *resourcelease.CompleteRequest) error {
			if calls.Add(1) == 1 {
				close(inFlight)
			}
			<-ctx.Done() // hangs until the worker gives up on the call
			return resourcelease.AsError(ctx.Err())
		},
	}
	w := newWorker(t, d, worker.Config{Concurrency: 1, ShutdownTimeout: 100 * time.Millisecond,
		Handler: func(context.Context, *resourcelease.Lease) error { return nil }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	<-inFlight
	cancel()
	require.NoError(t, <-done)
	assert.Equal(t, int64(1), calls.Load(), "the call cut at the shutdown timeout is not retried with a fresh one")
	s := w.Stats()
	assert.Equal(t, int64(1), s.Lost, "stats %+v", s)
	assert.Equal(t, int64(0), s.Completed, "stats %+v", s)
}

// TestWorkerShutdownCutIsNotADispatcherError: a shutdown release that the
// shutdown timeout cuts short is the worker's own doing, not a failed
// dispatcher call: Errors stays 0 and the lease counts as lost (it will
// expire and be redelivered).
func TestWorkerShutdownCutIsNotADispatcherError(t *testing.T) {
	t.Parallel()
	running := make(chan struct{})
	var calls atomic.Int64
	d := &leasetest.FakeDispatcher{
		LeaseFn: leaseN(1, 0),
		ReleaseFn: func(ctx context.Context, _ *resourcelease.ReleaseRequest) error {
			calls.Add(1)
			<-ctx.Done() // the dispatcher never answers
			return resourcelease.AsError(ctx.Err())
		},
	}
	w := newWorker(t, d, worker.Config{Concurrency: 1, ShutdownTimeout: 50 * time.Millisecond,
		Handler: func(ctx context.Context, _ *resourcelease.Lease) error {
			close(running)
			<-ctx.Done()
			return ctx.Err()
		}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	<-running
	cancel()
	require.NoError(t, <-done)
	s := w.Stats()
	assert.Equal(t, worker.Stats{Leased: 1, Lost: 1}, s, "after %d release calls", calls.Load())
}
