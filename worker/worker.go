package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// Defaults of Config.
const (
	// DefaultLeaseWait is how long each lease call long-polls: 10 s.
	DefaultLeaseWait = 10 * time.Second
	// DefaultMinBackoff is the first delay after a failed dispatcher call: 100 ms.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff caps the delay between retries: 10 s.
	DefaultMaxBackoff = 10 * time.Second
	// DefaultShutdownTimeout bounds the calls that settle in-flight leases
	// once Run's context has ended: 5 s.
	DefaultShutdownTimeout = 5 * time.Second
)

// ShutdownReason is the reason given when a Worker fails an in-flight lease
// (with requeue) because its Run context ended and the dispatcher is too old
// to take it back with release (which does not count an attempt).
const ShutdownReason = "worker shutting down"

// ErrLeaseLost is the cause (context.Cause) of a handler's context when the
// Worker learned that the lease was lost: a heartbeat was answered with
// resourcelease.ErrUnknownToken (the lease expired or was taken over).
var ErrLeaseLost = errors.New("worker: lease lost")

// Config configures New. The zero value of every field but
// Handler means its documented default; a bad value makes New return an
// error.
type Config struct {
	// PeerID is sent with every lease request. Defaults to "": the dispatcher
	// then takes the peer id from the call (a Client's Caller or PeerID).
	PeerID string
	// Handler does the work of one lease. Its context ends when Run's context
	// ends or the lease is lost (then context.Cause is ErrLeaseLost). nil
	// completes the lease; an error fails it with requeue, the error text as
	// reason and, when it is a *resourcelease.Error, its code as errorCode
	// (wrap it with Permanent to dead-letter instead). A panic counts as an
	// error. Required.
	Handler func(ctx context.Context, l *resourcelease.Lease) error
	// Concurrency is how many leases are worked at once. Defaults to 1.
	Concurrency int
	// LeaseBatch is the most leases one lease call asks for, when the
	// Dispatcher takes batches (a resourcelease.BatchDispatcher, as Client
	// and LocalDispatcher are): the worker then keeps one leaseBatch call in
	// flight for all its free slots (up to LeaseBatch at a time) instead of
	// one lease call per slot. 1 leases one at a time, each slot on its own.
	// Defaults to Concurrency, at most resourcelease.MaxBatchItems.
	LeaseBatch int
	// CompleteBatch is the most completions one call carries, when the
	// Dispatcher takes batches: a completion goes out at once when none is
	// in flight, and those that finish meanwhile go out together
	// (completeBatch) when it returns, so batching adds no wait. 1
	// completes one at a time. Defaults to Concurrency, at most
	// resourcelease.MaxBatchItems.
	CompleteBatch int
	// LeaseWait is how long each lease call long-polls for work. Defaults to
	// DefaultLeaseWait.
	LeaseWait time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff (with jitter)
	// after failed dispatcher calls. They default to DefaultMinBackoff and
	// DefaultMaxBackoff; MinBackoff must not exceed MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// HeartbeatInterval overrides the interval a lease advertises
	// (heartbeatIntervalMs). Defaults to 0: the advertised one, or
	// resourcelease.DefaultHeartbeatInterval if the lease has none.
	HeartbeatInterval time.Duration
	// ShutdownTimeout bounds settling in-flight leases after Run's context
	// ended. Defaults to DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Clock times heartbeats and backoff. Defaults to resourcelease.SystemClock.
	Clock resourcelease.Clock
}

// Stats are a Worker's counters since it was made.
type Stats struct {
	// Leased counts leases received.
	Leased int64
	// Completed counts leases completed.
	Completed int64
	// Failed counts leases failed (requeued, or dead-lettered with Permanent),
	// including those failed at shutdown by a dispatcher without release.
	Failed int64
	// Released counts leases given back at shutdown without counting their
	// attempt.
	Released int64
	// Lost counts leases the worker could not settle: a heartbeat or the
	// final call was answered unknown_token, or the dispatcher stayed
	// unreachable until the lease expired.
	Lost int64
	// PossiblySettled counts leases whose complete, fail or release was
	// answered unknown_token on a retry, after an earlier try had been sent
	// and failed in a way that may have applied it (its answer was lost: a
	// dispatcher died, a connection broke, a deadline passed after the
	// request went out): most likely that try settled the lease
	// (resourcelease.ErrPossiblySettled). A try that reached no dispatcher
	// (transport.ErrNotConnected: refused, the connect timed out) applied
	// nothing, so an unknown_token after it counts as Lost. They are not
	// counted in Lost, nor in Completed or Failed.
	PossiblySettled int64
	// Errors counts dispatcher calls that failed (and were retried or given
	// up), other than unknown_token answers.
	Errors int64
}

// Worker runs a lease → heartbeat → complete/fail loop over any
// resourcelease.Dispatcher: a Client over the network, or a dispatcher in the
// same process.
//
// It works up to Concurrency leases at once: for each it runs Handler while
// heartbeating at the lease's advertised interval, then completes or fails
// the lease. Over a Dispatcher that takes batches (Client, LocalDispatcher)
// it keeps one leaseBatch call in flight for all its free slots and groups
// the completions that finish together into completeBatch calls; otherwise
// each slot long-polls for its own lease. A dispatcher that is down is retried with exponential backoff and
// jitter; the worker resumes when it is back. Over a transport.Client with
// several dispatcher URLs (one mesh) the Client fails over from a dead one,
// so the worker keeps working through the others and returns to it when it
// is back; a complete, fail or release whose answer was lost and whose
// retry finds the token unknown counts as PossiblySettled, not Lost. Run blocks until its context
// ends, then stops leasing, cancels the handlers' contexts, releases their
// leases (back to pending at once, the attempt not counted; a dispatcher
// without release gets a fail with requeue, reason ShutdownReason) and
// returns.
//
// The Worker times each lease with its own clock: its deadline is when it
// sent the lease (or heartbeat) request plus the TTL the dispatcher gave,
// which is never later than the dispatcher's own expiry, whatever the two
// clocks say. A handler whose lease could not be renewed in time is stopped
// (ErrLeaseLost) before the dispatcher can give the item to another worker.
type Worker struct {
	d            resourcelease.Dispatcher
	bd           resourcelease.BatchDispatcher // d, when it takes batches
	leaseBatch   int
	complBatch   int
	completes    *completer // set by Run when completions are batched
	handler      func(context.Context, *resourcelease.Lease) error
	peerID       string
	concurrency  int
	leaseWait    time.Duration
	minBackoff   time.Duration
	maxBackoff   time.Duration
	heartbeat    time.Duration
	shutdownWait time.Duration
	logger       *slog.Logger
	clock        resourcelease.Clock

	running                                             atomic.Bool
	leased, completed, failed, released, lost, failures atomic.Int64
	possiblySettled                                     atomic.Int64
	skewWarned                                          atomic.Bool
	// noRelease is set once the dispatcher answered release with
	// unimplemented (it predates release).
	noRelease atomic.Bool
}

// skewWarnBound: a lease without a TTL (from a dispatcher that predates
// leaseTtlMs) whose expiry is already past, or further ahead than this, when
// it arrives means the clocks disagree; the Worker warns once.
const skewWarnBound = time.Hour

// New returns a Worker that leases from d.
func New(d resourcelease.Dispatcher, opts Config) (*Worker, error) {
	if d == nil {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "worker: New: nil Dispatcher")
	}
	if opts.Handler == nil {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "worker: New: Handler is required")
	}
	w := &Worker{
		d:            d,
		handler:      opts.Handler,
		peerID:       opts.PeerID,
		concurrency:  opts.Concurrency,
		leaseWait:    opts.LeaseWait,
		minBackoff:   opts.MinBackoff,
		maxBackoff:   opts.MaxBackoff,
		heartbeat:    opts.HeartbeatInterval,
		shutdownWait: opts.ShutdownTimeout,
		leaseBatch:   opts.LeaseBatch,
		complBatch:   opts.CompleteBatch,
		logger:       opts.Logger,
		clock:        opts.Clock,
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"Concurrency", int64(w.concurrency)}, {"LeaseWait", int64(w.leaseWait)},
		{"MinBackoff", int64(w.minBackoff)}, {"MaxBackoff", int64(w.maxBackoff)},
		{"HeartbeatInterval", int64(w.heartbeat)}, {"ShutdownTimeout", int64(w.shutdownWait)},
		{"LeaseBatch", int64(w.leaseBatch)}, {"CompleteBatch", int64(w.complBatch)},
	} {
		if f.v < 0 {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "worker: New: %s must not be negative", f.name)
		}
	}
	if w.leaseBatch > resourcelease.MaxBatchItems || w.complBatch > resourcelease.MaxBatchItems {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "worker: New: LeaseBatch and CompleteBatch must be at most %d", resourcelease.MaxBatchItems)
	}
	w.concurrency = cmpOr(w.concurrency, 1)
	w.leaseBatch = cmpOr(w.leaseBatch, min(w.concurrency, resourcelease.MaxBatchItems))
	w.complBatch = cmpOr(w.complBatch, min(w.concurrency, resourcelease.MaxBatchItems))
	if bd, ok := d.(resourcelease.BatchDispatcher); ok {
		w.bd = bd
	}
	w.leaseWait = cmpOr(w.leaseWait, DefaultLeaseWait)
	w.minBackoff = cmpOr(w.minBackoff, DefaultMinBackoff)
	w.maxBackoff = cmpOr(w.maxBackoff, DefaultMaxBackoff)
	w.shutdownWait = cmpOr(w.shutdownWait, DefaultShutdownTimeout)
	if w.minBackoff > w.maxBackoff {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "worker: New: MinBackoff %v exceeds MaxBackoff %v", w.minBackoff, w.maxBackoff)
	}
	if w.logger == nil {
		w.logger = slog.Default()
	}
	if w.clock == nil {
		w.clock = resourcelease.SystemClock
	}
	return w, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Stats returns the worker's counters.
func (w *Worker) Stats() Stats {
	return Stats{
		Leased:    w.leased.Load(),
		Completed: w.completed.Load(),
		Failed:    w.failed.Load(),
		Released:  w.released.Load(),
		Lost:      w.lost.Load(),
		Errors:    w.failures.Load(),

		PossiblySettled: w.possiblySettled.Load(),
	}
}

// Run works leases until ctx ends, then settles the in-flight ones and
// returns nil. It waits for every Handler to return, so handlers must honour
// their context. It returns an error at once if the Worker is already
// running; once it has returned it may be called again.
func (w *Worker) Run(ctx context.Context) error {
	if !w.running.CompareAndSwap(false, true) {
		return errors.New("worker: Worker.Run: already running")
	}
	defer w.running.Store(false)
	if w.bd != nil && w.complBatch > 1 {
		w.completes = newCompleter(w.bd, w.complBatch)
		defer func() {
			w.completes.stop()
			w.completes = nil
		}()
	}
	var wg sync.WaitGroup
	if w.bd != nil && w.leaseBatch > 1 {
		w.fetch(ctx, &wg)
	} else {
		for i := range w.concurrency {
			wg.Go(func() { w.loop(ctx, i) })
		}
	}
	wg.Wait()
	return nil
}

// fetch is the lease loop of a batching worker: one leaseBatch call at a
// time, for as many leases as slots are free (at least one, at most
// LeaseBatch), each lease worked by its own goroutine, added to wg.
func (w *Worker) fetch(ctx context.Context, wg *sync.WaitGroup) {
	free := make(chan struct{}, w.concurrency) // one token per free slot
	for range w.concurrency {
		free <- struct{}{}
	}
	giveBack := func() {
		select {
		case free <- struct{}{}:
		default: // a dispatcher that sent more than it was asked for
		}
	}
	failures := 0
	for ctx.Err() == nil {
		select {
		case <-free:
		case <-ctx.Done():
			return
		}
		n := 1
	take:
		for n < w.leaseBatch {
			select {
			case <-free:
				n++
			default:
				break take
			}
		}
		start := w.clock.Now()
		leases, err := w.bd.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{PeerID: w.peerID, Wait: w.leaseWait, MaxItems: n})
		for range max(n-len(leases), 0) {
			giveBack()
		}
		for _, l := range leases { // even alongside an error: they are ours
			w.leased.Add(1)
			wg.Go(func() {
				defer giveBack()
				w.work(ctx, l, start)
			})
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.failures.Add(1)
			delay := w.leaseRetryDelay(err, failures)
			failures++
			w.logger.Warn("worker: lease failed; backing off", "peer", w.peerID, "batch", n,
				"status", string(resourcelease.StatusOf(err)), "code", resourcelease.CodeOf(err), "error", err, "backoff", delay)
			if !w.sleep(ctx, delay) {
				return
			}
			continue
		}
		if failures > 0 {
			w.logger.Info("worker: dispatcher is back", "peer", w.peerID)
			failures = 0
		}
		if len(leases) == 0 && w.clock.Now().Sub(start) < w.leaseWait/2 && !w.sleep(ctx, w.minBackoff) {
			return // a dispatcher that answers at once instead of long-polling must not make us spin
		}
	}
}

// loop is one lease loop.
func (w *Worker) loop(ctx context.Context, slot int) {
	failures := 0
	for ctx.Err() == nil {
		start := w.clock.Now()
		l, err := w.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: w.peerID, Wait: w.leaseWait})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.failures.Add(1)
			delay := w.leaseRetryDelay(err, failures)
			failures++
			w.logger.Warn("worker: lease failed; backing off", "slot", slot, "peer", w.peerID,
				"status", string(resourcelease.StatusOf(err)), "code", resourcelease.CodeOf(err), "error", err, "backoff", delay)
			if !w.sleep(ctx, delay) {
				return
			}
			continue
		}
		if failures > 0 {
			w.logger.Info("worker: dispatcher is back", "slot", slot, "peer", w.peerID)
			failures = 0
		}
		if l == nil {
			// A dispatcher that answers at once instead of long-polling must
			// not make us spin.
			if w.clock.Now().Sub(start) < w.leaseWait/2 && !w.sleep(ctx, w.minBackoff) {
				return
			}
			continue
		}
		w.leased.Add(1)
		w.work(ctx, l, start)
	}
}

// deadline is when a lease ends by the worker's clock, if it is not
// renewed. It is a time.Time, not Unix nanoseconds, so that with the system
// clock it keeps the monotonic reading and a wall clock step does not move
// it.
type deadline struct {
	mu sync.Mutex
	t  time.Time
}

func (d *deadline) get() time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.t
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	d.t = t
	d.mu.Unlock()
}

// work runs the handler on one lease, which was asked for at sent by the
// worker's clock, heartbeating meanwhile, and settles it.
func (w *Worker) work(ctx context.Context, l *resourcelease.Lease, sent time.Time) {
	token := l.OwnershipToken
	expiry := &deadline{t: w.expiryOf(sent, l.TTL, l.LeaseExpiresAt)}
	if ctx.Err() != nil { // leased as the worker stopped: hand it straight back
		w.settle(ctx, token, context.Cause(ctx), expiry)
		return
	}
	hctx, cancelHandler := context.WithCancelCause(ctx)
	defer cancelHandler(nil)
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	var lost atomic.Bool
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		w.heartbeatLoop(hbCtx, token, w.heartbeatInterval(l), expiry, func() {
			lost.Store(true)
			cancelHandler(ErrLeaseLost)
		})
	}()
	herr := w.runHandler(hctx, l)
	stopHeartbeat()
	<-hbDone
	if lost.Load() {
		w.lost.Add(1)
		w.logger.Warn("worker: lease lost while working", "peer", w.peerID, "sequenceId", token.SequenceID, "attempt", token.Attempt)
		return
	}
	w.settle(ctx, token, herr, expiry)
}

// expiryOf is when, by the worker's clock, a lease (or its renewal) asked
// for at sent ends: sent + ttl. A dispatcher that predates leaseTtlMs gives
// only its own clock's expiry, which is then taken as is (with a warning
// when it looks off by a lot); one that gives neither gets the default lease
// duration.
func (w *Worker) expiryOf(sent time.Time, ttl time.Duration, expiresAt time.Time) time.Time {
	switch {
	case ttl > 0:
		return sent.Add(ttl)
	case expiresAt.IsZero():
		return sent.Add(resourcelease.DefaultLeaseDuration)
	}
	if left := expiresAt.Sub(w.clock.Now()); (left <= 0 || left > skewWarnBound) && !w.skewWarned.Swap(true) {
		w.logger.Warn("worker: the dispatcher sends no leaseTtlMs (upgrade it) and its lease expiries look wrong by this host's clock; fix the clocks",
			"peer", w.peerID, "expiresIn", left.Round(time.Second).String())
	}
	return expiresAt
}

func (w *Worker) heartbeatInterval(l *resourcelease.Lease) time.Duration {
	switch {
	case w.heartbeat > 0:
		return w.heartbeat
	case l.HeartbeatInterval > 0:
		return l.HeartbeatInterval
	}
	return resourcelease.DefaultHeartbeatInterval
}

// heartbeatLoop heartbeats every interval until ctx ends; onLost is called
// (and the loop ends) when the dispatcher no longer knows the token, or when
// the lease's expiry passes without a successful heartbeat (failures were
// transient, or the interval was too long): from then on another worker may
// hold the item, so the handler must stop.
func (w *Worker) heartbeatLoop(ctx context.Context, token resourcelease.OwnershipToken, interval time.Duration, expiry *deadline, onLost func()) {
	for w.sleep(ctx, w.nextHeartbeat(interval, expiry.get())) {
		sent := w.clock.Now()
		if !sent.Before(expiry.get()) {
			w.logger.Warn("worker: lease expired without a successful heartbeat", "peer", w.peerID, "sequenceId", token.SequenceID)
			onLost()
			return
		}
		resp, err := w.d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: token})
		switch {
		case err == nil:
			if resp.TTL > 0 || !resp.LeaseExpiresAt.IsZero() {
				expiry.set(w.expiryOf(sent, resp.TTL, resp.LeaseExpiresAt))
			}
		case errors.Is(err, resourcelease.ErrUnknownToken):
			onLost()
			return
		case ctx.Err() != nil:
			return
		default:
			w.failures.Add(1)
			w.logger.Warn("worker: heartbeat failed", "peer", w.peerID, "sequenceId", token.SequenceID,
				"status", string(resourcelease.StatusOf(err)), "error", err)
		}
	}
}

// nextHeartbeat is how long to wait before the next heartbeat: the interval,
// but never more than half the time left on the lease, so a lease shorter than
// the advertised interval (or one a failed heartbeat did not extend) is still
// renewed in time, with a retry before it runs out.
func (w *Worker) nextHeartbeat(interval time.Duration, expiresAt time.Time) time.Duration {
	left := expiresAt.Sub(w.clock.Now())
	return max(min(interval, left/2), time.Millisecond)
}

// runHandler calls the handler, turning a panic into an error.
func (w *Worker) runHandler(ctx context.Context, l *resourcelease.Lease) (err error) {
	defer func() {
		if p := recover(); p != nil {
			w.logger.Error("worker: handler panicked", "peer", w.peerID, "sequenceId", l.SequenceID,
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("handler panic: %v", p)
		}
	}()
	return w.handler(ctx, l)
}

// settle completes (herr == nil) or fails the lease, retrying transient
// failures until the lease would have expired. Once ctx has ended, a failure
// is a release (or, from a dispatcher without release, a requeue with
// ShutdownReason), and every call, including one already in
// flight, must finish within the shutdown timeout after ctx ended (one
// deadline for all attempts). A call in flight is not cut short by ctx
// ending itself: the dispatcher may already have applied it, and the retry
// would then be told the token is unknown and count finished work as lost.
func (w *Worker) settle(ctx context.Context, token resourcelease.OwnershipToken, herr error, expiry *deadline) {
	complete := herr == nil
	// Every call runs on callCtx: not cut short when ctx ends (the call may
	// already have been applied), but cancelled the shutdown timeout after
	// it, one deadline for all attempts, so Run returns within that bound.
	callCtx, cancelCalls := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCalls()
	var shutdownBy atomic.Int64 // Unix ns: when calls are cut, once ctx has ended
	stopAfter := context.AfterFunc(ctx, func() {
		shutdownBy.Store(time.Now().Add(w.shutdownWait).UnixNano())
		time.AfterFunc(w.shutdownWait, cancelCalls)
	})
	defer stopAfter()
	shuttingDown := false
	// mayHaveApplied: an earlier try failed after it may have reached the
	// dispatcher, so an unknown_token now may be that try's doing.
	mayHaveApplied := false
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			shuttingDown = true
		}
		if callCtx.Err() != nil {
			w.lost.Add(1)
			w.logger.Error("worker: could not settle lease before the shutdown timeout; it will expire and be redelivered",
				"peer", w.peerID, "sequenceId", token.SequenceID, "attempt", token.Attempt, "complete", complete)
			return
		}
		// A call made while shutting down carries the shutdown deadline, so
		// the dispatcher sees it too (Rpc-TTL-Ms).
		cctx, cancel := callCtx, context.CancelFunc(func() {})
		if shuttingDown {
			if by := shutdownBy.Load(); by != 0 {
				cctx, cancel = context.WithDeadline(callCtx, time.Unix(0, by))
			} else { // ctx has just ended: the deadline is being set
				cctx, cancel = context.WithTimeout(callCtx, w.shutdownWait)
			}
		}
		var err error
		declineDelay, declined := declinedBy(herr)
		release := !complete && (shuttingDown || declined) && !w.noRelease.Load()
		switch {
		case complete:
			err = w.complete(cctx, token)
		case release:
			err = w.d.Release(cctx, &resourcelease.ReleaseRequest{OwnershipToken: token, Delay: declineDelay})
		default:
			err = w.d.Fail(cctx, failRequest(token, herr, shuttingDown))
		}
		cutByShutdown := cctx.Err() != nil // our own deadline, not the dispatcher's failure
		cancel()
		switch {
		case err == nil && complete:
			w.completed.Add(1)
			return
		case err == nil && release:
			w.released.Add(1)
			if declined {
				w.logger.Info("worker: lease declined and released", "peer", w.peerID, "sequenceId", token.SequenceID,
					"attempt", token.Attempt, "delay", declineDelay, "reason", herr)
			} else {
				w.logger.Info("worker: lease released at shutdown", "peer", w.peerID, "sequenceId", token.SequenceID,
					"attempt", token.Attempt)
			}
			return
		case release && resourcelease.StatusOf(err) == resourcelease.StatusUnimplemented:
			// A dispatcher older than release: fail with requeue instead,
			// from now on, which counts an attempt.
			w.noRelease.Store(true)
			attempt--
			continue
		case err == nil:
			w.failed.Add(1)
			w.logger.Info("worker: lease failed", "peer", w.peerID, "sequenceId", token.SequenceID,
				"attempt", token.Attempt, "reason", failReason(herr, shuttingDown))
			return
		case errors.Is(err, resourcelease.ErrPossiblySettled),
			mayHaveApplied && errors.Is(err, resourcelease.ErrUnknownToken):
			w.possiblySettled.Add(1)
			w.logger.Info("worker: lease possibly settled: a retry after a lost answer found the token unknown", "peer", w.peerID,
				"sequenceId", token.SequenceID, "attempt", token.Attempt, "complete", complete)
			return
		case errors.Is(err, resourcelease.ErrUnknownToken):
			w.lost.Add(1)
			w.logger.Warn("worker: lease lost before it was settled", "peer", w.peerID,
				"sequenceId", token.SequenceID, "attempt", token.Attempt)
			return
		}
		if mayHaveBeenApplied(err) {
			mayHaveApplied = true
		}
		if !cutByShutdown {
			w.failures.Add(1)
		}
		delay := w.backoff(attempt)
		giveUp := !retryable(err) || !w.clock.Now().Add(delay).Before(expiry.get())
		backoffCtx := ctx // a backoff ends when Run's context does: retry at once, as a shutdown
		if shuttingDown {
			backoffCtx = callCtx
		}
		if !giveUp {
			// Cut short when Run's context ends (the next attempt is then a
			// shutdown's) or the shutdown timeout does (the loop gives up).
			w.sleep(backoffCtx, delay)
			continue
		}
		w.lost.Add(1)
		w.logger.Error("worker: could not settle lease; it will expire and be redelivered", "peer", w.peerID,
			"sequenceId", token.SequenceID, "attempt", token.Attempt, "complete", complete, "error", err)
		return
	}
}

// failRequest is the fail call for a handler error.
func failRequest(token resourcelease.OwnershipToken, herr error, shuttingDown bool) *resourcelease.FailRequest {
	req := &resourcelease.FailRequest{OwnershipToken: token, Reason: failReason(herr, shuttingDown)}
	if shuttingDown {
		req.ErrorCode = resourcelease.CodeCancelled
		return req
	}
	req.DeadLetter = IsPermanent(herr)
	var e *resourcelease.Error
	if errors.As(herr, &e) {
		req.ErrorCode = e.Code
	}
	return req
}

func failReason(herr error, shuttingDown bool) string {
	if shuttingDown {
		return ShutdownReason
	}
	return herr.Error()
}

// retryable reports whether a failed complete or fail may succeed if tried
// again. Unknown is what a bare 5xx (a proxy's) and a yarpc server's
// unclassified errors decode to.
func retryable(err error) bool {
	switch resourcelease.StatusOf(err) {
	case resourcelease.StatusUnavailable, resourcelease.StatusResourceExhausted, resourcelease.StatusDeadlineExceeded,
		resourcelease.StatusCancelled, resourcelease.StatusInternal, resourcelease.StatusUnknown:
		return true
	}
	return false
}

// mayHaveBeenApplied reports whether a failed settle may have been applied
// all the same: its answer, not its request, may have been lost. A refusal
// (resource-exhausted: rate limit, backpressure) was not applied, nor was a
// call that reached no dispatcher (transport.ErrNotConnected: the
// connection was refused or timed out).
func mayHaveBeenApplied(err error) bool {
	return retryable(err) && resourcelease.StatusOf(err) != resourcelease.StatusResourceExhausted &&
		!errors.Is(err, transport.ErrNotConnected)
}

// backoff is the delay before retry number attempt (from 0): MinBackoff
// doubled per attempt, capped at MaxBackoff, with equal jitter (a uniformly
// random delay between half of that and all of it).
func (w *Worker) backoff(attempt int) time.Duration {
	d := w.maxBackoff
	if attempt < 32 {
		if e := w.minBackoff << attempt; e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// maxRetryAfterSeconds caps how long a Retry-After makes the worker wait: an
// hour.
const maxRetryAfterSeconds = 3600

// leaseRetryDelay is how long to wait after a failed lease call: the
// backoff, or longer when the dispatcher said when to come back (a breaker's
// cool-down, a rate limit): asking sooner would only be refused again.
func (w *Worker) leaseRetryDelay(err error, failures int) time.Duration {
	d := w.backoff(failures)
	if e := resourcelease.AsError(err); e != nil {
		if secs, perr := strconv.Atoi(e.Metadata[resourcelease.MetadataRetryAfterSeconds]); perr == nil && secs > 0 {
			// A dispatcher's word is bounded: a bad value must not park
			// the worker for a day.
			d = max(d, time.Duration(min(secs, maxRetryAfterSeconds))*time.Second)
		}
	}
	return d
}

// sleep waits d on the worker's clock; false means ctx ended first.
func (w *Worker) sleep(ctx context.Context, d time.Duration) bool {
	t := w.clock.NewTimer(d)
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		t.Stop()
		return false
	}
}

// Permanent marks a handler error as permanent: the Worker fails the lease
// without requeue, so the item is dead-lettered at once instead of being
// retried. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

// Error returns the text of the wrapped error: it is the fail reason.
func (e *permanentError) Error() string { return e.err.Error() }

// Unwrap returns the wrapped error, so its *resourcelease.Error code is kept.
func (e *permanentError) Unwrap() error { return e.err }
