package resourcelease

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/internal/loglimit"
)

// DefaultMaxLeaseWait is the longest a lease request may long-poll when
// DispatcherConfig.MaxLeaseWait is zero.
const DefaultMaxLeaseWait = 5 * time.Minute

// DeterministicSinkName is the name under which NewDispatcher attaches
// DispatcherConfig.Deterministic to the Replicator; it appears in the errors
// and metrics of the replicator.
const DeterministicSinkName = "deterministic"

// Reasons the Dispatcher gives PeerHealth.RecordDisconnect. Both are a lease
// that expired without being settled; a fail is never a disconnect.
const (
	// DisconnectLeaseExpired: the peer let a lease expire without a heartbeat
	// and the item went back to pending.
	DisconnectLeaseExpired = "lease_expired"
	// DisconnectMaxAttempts: the peer let a lease expire on the item's last
	// delivery attempt and the item was dead-lettered.
	DisconnectMaxAttempts = "max_attempts"
)

// DispatcherConfig configures NewDispatcher. Every field is optional: the zero
// value is an in-memory queue with the QueueConfig defaults, no replication,
// no peer health, no backpressure and no metrics.
type DispatcherConfig struct {
	// Queue configures the engine. Its Journal must be nil: the Dispatcher
	// installs itself as the engine's Journal, because the Journal is the one
	// place that sees every change, in order, including those nobody called
	// for (the sweeper's lease expiries). Installing itself there is what lets
	// replication, peer health, backpressure and metrics all follow the queue
	// exactly, rather than only the changes a Dispatcher method happened to
	// cause. (With none of them configured it installs no journal, and the
	// engine skips building changes.) Its Clock, when nil, is
	// DispatcherConfig.Clock.
	Queue QueueConfig
	// Replicator, when set, receives every change first; the Ack it returns
	// is what the queue waits for before answering the caller. If it also
	// implements StateLoader and Queue.InitialState is nil, NewDispatcher
	// rebuilds the queue from LoadState. The Dispatcher does not close it:
	// the caller owns it and closes it after the Dispatcher.
	Replicator Replicator
	// Deterministic, when set, is attached to the Replicator as a synchronous
	// sink named DeterministicSinkName, so a failure to capture an event
	// reaches the caller of the operation that produced it. It requires a
	// Replicator.
	Deterministic EventSink
	// PeerHealth, when set, is told about every lease assignment, heartbeat,
	// release and disconnect, and asked about every lease request
	// (AdmitLease). Leases and requests with an empty peer id are not
	// reported.
	PeerHealth PeerHealth
	// RefuseUnhealthyPeers makes Lease refuse a peer that PeerHealth's
	// AdmitLease answers with a wait: ErrPeerIneligible (status
	// failed-precondition) with MetadataRetryAfterSeconds, the wait in whole
	// seconds. With peerhealth.Tracker that is a circuit breaker that opens
	// only after several consecutive lease expiries. It requires PeerHealth.
	RefuseUnhealthyPeers bool
	// Backpressure, when set, observes the count of ready and leased items
	// after every change (delayed items are not counted: work scheduled for
	// later does not hold backpressure on), admits each enqueue, and fills
	// Stats.BackpressureActive.
	Backpressure BackpressureController
	// Registerer, when set, receives the Dispatcher's metrics (the Metric*
	// names) and every one of Replicator, Deterministic, PeerHealth and
	// Backpressure that implements prometheus.Collector (or, like
	// deterministic.Coordinator, has a Collector() prometheus.Collector
	// method). Nil means no metrics. Nothing is ever
	// registered with the global registry. Two Dispatchers need two
	// registries (or prometheus.WrapRegistererWith distinct labels); a
	// registration failure is an error from NewDispatcher. Close unregisters
	// what NewDispatcher registered.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default(), as in every leasemesh package.
	Logger *slog.Logger
	// Clock is the engine's clock when Queue.Clock is nil. Defaults to
	// SystemClock.
	Clock Clock
	// MaxLeaseWait caps the waitMs of a lease request. Defaults to
	// DefaultMaxLeaseWait; negative is an error.
	MaxLeaseWait time.Duration

	// Store, when set, is a ready Queue the Dispatcher serves instead of an
	// engine it builds: one whose state lives elsewhere, such as
	// postgres.Queue, in a database that several dispatchers share. It
	// excludes the engine's settings: Queue must be zero and Replicator and
	// Deterministic nil, since such a store writes its own log (and
	// effects) in its own transactions. When it is also an EventLog, the
	// Dispatcher tails that log (see LogPollInterval) so that peer health,
	// backpressure, the mesh-wide metrics and LogSinks follow every change,
	// whichever dispatcher made it; when it is a CommitReporter, its own
	// commits feed the per-dispatcher counters. Close closes it.
	Store Queue
	// LogSinks receive every event of the Store's EventLog, in order, each
	// from a goroutine of its own that reads the log, starting after
	// LogAfter — or, for a ResumableSink, after its LastApplied (asked once
	// at NewDispatcher; an error fails NewDispatcher). An event a sink
	// refuses is retried with backoff (100 ms doubling to 10 s) until it
	// applies, logged at WARN once per outage; a sink waits, peer health
	// and the other sinks do not. Events the log's retention trimmed before
	// a sink caught up are skipped with a WARN and MetricMeshLogGaps. Only
	// with Store.
	LogSinks []EventSink
	// LogAfter is the event the Dispatcher's reading of the Store's log
	// starts after: 0 (the default) means the newest event at NewDispatcher,
	// -1 the start of the log, a positive number that event — a caller that
	// read the log up to n (to pre-fill a view of recent events, say) passes
	// n, so that nothing committed meanwhile is missed. Only with Store.
	LogAfter int64
	// LogPollInterval is how often the Dispatcher reads the Store's log for
	// changes made elsewhere; it also reads it after each commit of its own
	// that a CommitReporter reports. Defaults to DefaultLogPollInterval;
	// negative is an error. Only with Store.
	LogPollInterval time.Duration
}

// LocalDispatcher is the in-process Dispatcher: the queue engine composed with
// replication, deterministic capture, peer health, backpressure and
// Prometheus metrics. It is the one object a service embeds; the transport
// serves it over HTTP. Create it with NewDispatcher and Close it when done
// (then close the Replicator you gave it). It is safe for concurrent use.
//
// Each operation validates its request (invalid-argument with the codes of
// docs/protocol.md), applies the change to the queue and returns once the change is
// durable and the Replicator's synchronous sinks have applied its event. A
// nil request is treated as an empty one; nothing a caller sends makes it
// panic.
type LocalDispatcher struct {
	// q is what every call goes to: the engine, or the Store.
	q Queue
	// queue is the engine the Dispatcher built; nil with a Store.
	queue   *Engine
	clock   Clock
	repl    Replicator
	health  PeerHealth
	refuse  bool
	bp      BackpressureController
	metrics *queueMetrics // nil without a Registerer
	reg     *registration // nil without a Registerer
	log     *slog.Logger
	maxWait time.Duration

	// leaseMu guards failedLease. The engine only calls the journal with its
	// own lock held, so leaseMu is never contended; it keeps failedLease safe
	// without depending on that.
	leaseMu sync.Mutex
	// failedLease is the lease of the last ChangeFailed the metrics saw: the
	// ChangeDeadLettered that follows it (in the same commit) is that fail's;
	// a dead letter that ends a lease without one is an expiry's. The change
	// alone says so, whichever dispatcher granted the lease.
	failedLease OwnershipToken
	// failed is the lease of the last ChangeFailed told to peer health: the
	// ChangeDeadLettered that follows it is that fail's, not an expiry's.
	// Only the journal touches it, with the queue's lock held.
	failed OwnershipToken

	closeCtx  context.Context // cancelled by Close, to wake enqueues waiting on backpressure
	cancel    context.CancelFunc
	closeOnce sync.Once
	closeErr  error

	failLog loglimit.Limiter // rate-limits the log lines of failed operations

	mesh bool     // serving a Store: the gauges are the mesh's (MetricMesh* names)
	tail *logTail // the Store's log follower; nil without a Store that is an EventLog
}

// leaseEnding is how a lease that ended in a dead letter ended.
type leaseEnding uint8

const (
	endedUnknown leaseEnding = iota // not a dead letter that ended a lease
	endedByFail
	endedByExpiry
)

var _ Dispatcher = (*LocalDispatcher)(nil)

// NewDispatcher validates cfg, registers metrics, loads the Replicator's state
// if it is a StateLoader, attaches the deterministic sink, and builds and
// starts the queue engine with the Dispatcher as its Journal. With
// cfg.Store it builds no engine: it serves the Store and starts the
// goroutine that follows the Store's log (see DispatcherConfig.Store).
//
// On error nothing stays registered and no queue is left running, but a
// deterministic sink already attached to the Replicator stays attached
// (Replicator has no way to remove one): discard the Replicator.
func NewDispatcher(cfg DispatcherConfig) (*LocalDispatcher, error) {
	if cfg.Store != nil {
		return newStoreDispatcher(cfg)
	}
	switch {
	case len(cfg.LogSinks) > 0 || cfg.LogPollInterval != 0 || cfg.LogAfter != 0:
		return nil, configError("LogSinks, LogPollInterval and LogAfter apply only with Store")
	case cfg.Queue.Journal != nil:
		return nil, configError("Queue.Journal must be nil: the Dispatcher is the queue's journal (set Replicator instead)")
	case cfg.Deterministic != nil && cfg.Replicator == nil:
		return nil, configError("Deterministic requires a Replicator to attach it to")
	case cfg.RefuseUnhealthyPeers && cfg.PeerHealth == nil:
		return nil, configError("RefuseUnhealthyPeers requires PeerHealth")
	case cfg.MaxLeaseWait < 0:
		return nil, configError("MaxLeaseWait must not be negative, got %v", cfg.MaxLeaseWait)
	case cfg.Queue.LeaseDuration < 0:
		return nil, configError("Queue.LeaseDuration must not be negative, got %v", cfg.Queue.LeaseDuration)
	}
	qcfg := cfg.Queue
	if qcfg.Clock == nil {
		qcfg.Clock = cfg.Clock
	}
	d := &LocalDispatcher{
		clock:   clockOrSystem(qcfg.Clock),
		repl:    cfg.Replicator,
		health:  cfg.PeerHealth,
		refuse:  cfg.RefuseUnhealthyPeers,
		bp:      cfg.Backpressure,
		log:     cfg.Logger,
		maxWait: cfg.MaxLeaseWait,
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.maxWait == 0 {
		d.maxWait = DefaultMaxLeaseWait
	}
	if cfg.Registerer != nil {
		if err := d.registerMetrics(cfg.Registerer, cfg.Deterministic); err != nil {
			return nil, err
		}
	}
	fail := func(err error) (*LocalDispatcher, error) {
		if d.reg != nil {
			d.reg.unregisterAll()
		}
		return nil, err
	}
	if loader, ok := cfg.Replicator.(StateLoader); ok && qcfg.InitialState == nil {
		st, err := loader.LoadState(context.Background())
		if err != nil {
			return fail(fmt.Errorf("resourcelease: load queue state: %w", err))
		}
		qcfg.InitialState = st
	}
	if cfg.Deterministic != nil {
		if err := cfg.Replicator.AddSink(DeterministicSinkName, cfg.Deterministic, SinkOptions{Synchronous: true}); err != nil {
			return fail(fmt.Errorf("resourcelease: attach deterministic sink: %w", err))
		}
	}
	if d.metrics != nil {
	}
	if d.repl != nil || d.metrics != nil || d.health != nil || d.bp != nil {
		// With nobody to tell, no journal: the engine then builds no Change
		// at all, which is most of what a journal costs.
		qcfg.Journal = dispatcherJournal{d}
	}
	q, err := NewEngine(qcfg)
	if err != nil {
		return fail(err)
	}
	d.queue, d.q = q, q
	if d.metrics != nil {
		if err := d.reg.register("queue backlog", newBacklogCollector(d), false); err != nil {
			q.Close()
			return fail(err)
		}
	}
	d.closeCtx, d.cancel = context.WithCancel(context.Background())
	st, _ := q.Stats(context.Background()) // a background context: it cannot fail
	if d.metrics != nil {
		d.metrics.setCounts(st.PendingCount, st.DelayedCount, st.ActiveLeaseCount, st.DeadLetterCount)
	}
	if d.bp != nil {
		d.bp.Observe(st.PendingCount-st.DelayedCount+st.ActiveLeaseCount, d.clock.Now())
	}
	if qcfg.InitialState != nil {
		d.log.Info("resourcelease: dispatcher rebuilt queue from stored state",
			"pending", st.PendingCount, "activeLeases", st.ActiveLeaseCount, "deadLetters", st.DeadLetterCount)
	}
	return d, nil
}

func configError(format string, args ...any) *Error {
	return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: DispatcherConfig."+format, args...)
}

// registerMetrics registers the Dispatcher's metrics and the collectors among
// its parts with reg. On error it leaves nothing registered.
func (d *LocalDispatcher) registerMetrics(reg prometheus.Registerer, deterministic EventSink) error {
	d.metrics = newQueueMetrics(d.mesh)
	d.reg = &registration{reg: reg}
	for _, c := range d.metrics.collectors() {
		if err := d.reg.register("queue", c, false); err != nil {
			d.reg.unregisterAll()
			return err
		}
	}
	for _, part := range []struct {
		name string
		v    any
	}{{"replication", d.repl}, {"deterministic", deterministic}, {"peer health", d.health}, {"backpressure", d.bp}} {
		c, shared := collectorOf(part.v)
		if c == nil {
			continue
		}
		if err := d.reg.register(part.name, c, shared); err != nil {
			d.reg.unregisterAll()
			return err
		}
	}
	return nil
}

// collectorOf returns v as a prometheus.Collector, or the collector its
// Collector method returns (deterministic.Coordinator has one; shared is
// then true, since the caller may have registered an equal one), or nil.
func collectorOf(v any) (c prometheus.Collector, shared bool) {
	switch v := v.(type) {
	case prometheus.Collector:
		return v, false
	case interface{ Collector() prometheus.Collector }:
		return v.Collector(), true
	}
	return nil, false
}

// record is the queue's Journal. It runs with the queue's lock held, in
// change order, so it only hands the change on (to the Replicator, whose Ack
// the queue waits for outside the lock) and updates in-memory state: it never
// blocks and never calls back into the queue.
func (d *LocalDispatcher) record(c *Change) Ack {
	var ack Ack
	if d.repl != nil {
		ack = d.repl.Record(c)
	}
	d.observe(c)
	return ack
}

// recordAll is record for the changes of one batch: the Replicator gets
// them as one unit when it can take one (BatchJournal), so a durable one
// commits the batch in one transaction.
func (d *LocalDispatcher) recordAll(cs []*Change) Ack {
	var ack Ack
	if bj, ok := d.repl.(BatchJournal); ok {
		ack = bj.RecordAll(cs)
	} else if d.repl != nil {
		for _, c := range cs {
			if a := d.repl.Record(c); a != nil {
				ack = a
			}
		}
	}
	for _, c := range cs {
		d.observe(c)
	}
	return ack
}

// observe updates metrics, peer health and backpressure from c. Callers
// hold the queue's lock.
func (d *LocalDispatcher) observe(c *Change) {
	if d.metrics != nil {
		d.metrics.observe(c, d.trackLease(c))
	}
	if d.health != nil && c.PeerID != "" {
		d.tellPeerHealth(c)
	}
	if d.bp != nil {
		d.bp.Observe(c.Pending-c.Delayed+c.Active, c.At)
	}
}

// dispatcherJournal is the LocalDispatcher as its engine's Journal.
type dispatcherJournal struct{ d *LocalDispatcher }

func (j dispatcherJournal) Record(c *Change) Ack       { return j.d.record(c) }
func (j dispatcherJournal) RecordAll(cs []*Change) Ack { return j.d.recordAll(cs) }

// trackLease says, for a dead letter that ended a lease, whether a fail or
// an expiry ended it: a worker's fail records its ChangeFailed just before
// the dead letter; an expiry on the last attempt records the dead letter
// alone.
func (d *LocalDispatcher) trackLease(c *Change) leaseEnding {
	if c.Token.IsZero() {
		return endedUnknown
	}
	d.leaseMu.Lock()
	defer d.leaseMu.Unlock()
	switch c.Kind {
	case ChangeFailed:
		d.failedLease = c.Token
	case ChangeDeadLettered:
		if c.Token == d.failedLease {
			d.failedLease = OwnershipToken{}
			return endedByFail
		}
		return endedByExpiry
	}
	return endedUnknown
}

// tellPeerHealth reports c to the peer-health tracker. Callers hold the
// queue's lock.
func (d *LocalDispatcher) tellPeerHealth(c *Change) {
	switch c.Kind {
	case ChangeLeased:
		var attrs map[string]string
		if c.Item != nil {
			attrs = c.Item.Payload.Attributes
		}
		d.health.RecordAssignment(c.PeerID, c.Token, attrs, c.At)
	case ChangeHeartbeat:
		d.health.RecordHeartbeat(c.PeerID, c.Token, c.Pending, c.At)
	case ChangeCompleted:
		d.health.RecordRelease(c.PeerID, c.Token, ReleaseCompleted, c.At)
	case ChangeRequeued:
		d.health.RecordRelease(c.PeerID, c.Token, ReleaseRequeued, c.At)
	case ChangeReleased:
		// A lease granted to a long-poll that was gone before it got it: the
		// peer never held it, so it must not count against the peer.
		d.health.RecordRelease(c.PeerID, c.Token, ReleaseGivenBack, c.At)
	case ChangeExpired:
		d.health.RecordDisconnect(c.PeerID, c.Token, DisconnectLeaseExpired, c.At)
	case ChangeFailed:
		// A fail that dead-letters the item (requeue false, or the last
		// attempt) is a release like any fail; its dead letter follows.
		d.failed = c.Token
		d.health.RecordRelease(c.PeerID, c.Token, ReleaseDeadLettered, c.At)
	case ChangeDeadLettered:
		if c.Token.IsZero() {
			return
		}
		if c.Token == d.failed {
			d.failed = OwnershipToken{}
			return
		}
		// No fail came first: the lease expired on the item's last attempt.
		d.health.RecordDisconnect(c.PeerID, c.Token, DisconnectMaxAttempts, c.At)
	}
}

// Queue returns the engine, for what the Dispatcher interface does not cover
// (Sweep, Config). Changes made through it are journaled like any other.
//
// It is nil unless the Dispatcher built the engine (DispatcherConfig.Queue):
// a Dispatcher serving a DispatcherConfig.Store — every leasemesh
// Dispatcher on Postgres — answers nil. Code that must work on both uses
// Store, which every Dispatcher has, and type-asserts what it needs.
func (d *LocalDispatcher) Queue() *Engine { return d.queue }

// Store returns the Queue every call goes to: the engine, or
// DispatcherConfig.Store. Never nil; prefer it to Queue in code that may
// run on either.
func (d *LocalDispatcher) Store() Queue { return d.q }

// Close closes the queue (waking every waiting long-poll and enqueue with
// ErrClosed) and unregisters the metrics NewDispatcher registered. It does
// not close the Replicator, which the caller owns. Safe to call twice.
func (d *LocalDispatcher) Close() error {
	d.closeOnce.Do(func() {
		d.cancel()
		d.tail.stop()
		d.closeErr = d.q.Close()
		if d.reg != nil {
			d.reg.unregisterAll()
		}
	})
	return d.closeErr
}

func orBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// done logs a failure that is the Dispatcher's, not the caller's (storage,
// replication, internal), and returns err as an *Error.
func (d *LocalDispatcher) done(op string, err error) error {
	if err == nil {
		return nil
	}
	e := AsError(err)
	switch e.Status {
	case StatusUnavailable, StatusInternal:
		if e.Code == CodeClosed {
			break
		}
		// While storage is down every call fails the same way: one line
		// per kind every few seconds says so without flooding the log.
		if ok, suppressed := d.failLog.Allow(string(e.Status) + "/" + e.Code); ok {
			d.log.Error("resourcelease: operation failed", "op", op, "status", e.Status, "code", e.Code, "err", err, "suppressedSinceLast", suppressed)
		} else {
			d.log.Debug("resourcelease: operation failed", "op", op, "status", e.Status, "code", e.Code, "err", err)
		}
	}
	return e
}

// Enqueue implements Dispatcher. The payload is validated and copied (the
// caller may reuse its Body and Attributes), then admitted by backpressure,
// which may wait for it to clear (bounded by ctx: deadline-exceeded) or
// refuse it (resource-exhausted), by its mode.
func (d *LocalDispatcher) Enqueue(ctx context.Context, req *EnqueueRequest) (*EnqueueResponse, error) {
	ctx = orBackground(ctx)
	if req == nil || req.Payload == nil {
		return nil, Errorf(StatusInvalidArgument, CodePayloadRequired, "payload is required")
	}
	if err := req.Payload.Validate(); err != nil {
		return nil, err
	}
	if req.Delay < 0 {
		return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "delayMs must not be negative, got %d", msCeil(req.Delay))
	}
	item := *req.Payload
	ownPayload(&item)
	d.delay(&item, req.Delay)
	if err := d.admit(ctx); err != nil {
		return nil, err
	}
	res, err := d.q.Enqueue(ctx, item)
	if err != nil {
		return nil, d.done("enqueue", err)
	}
	return &EnqueueResponse{
		Stats:      QueueCounts{PendingCount: res.Stats.PendingCount, ActiveLeaseCount: res.Stats.ActiveLeaseCount},
		SequenceID: res.SequenceID,
		Duplicate:  res.Duplicate,
		NotBefore:  res.NotBefore,
	}, nil
}

// delay gives it the NotBefore of an enqueue with the given delay: now +
// delay, unless its own NotBefore is later. A delay beyond MaxDuration is
// left for the queue to refuse.
func (d *LocalDispatcher) delay(it *Item, delay time.Duration) {
	if delay <= 0 {
		return
	}
	nb := d.clock.Now().Add(min(delay, MaxDuration+time.Second))
	if nb.After(it.NotBefore) {
		it.NotBefore = nb
	}
}

// admit asks backpressure to admit an enqueue. While backpressure is active,
// a Close wakes a waiting Admit with ErrClosed. While it is off, Admit gets
// the caller's context as is, which saves two allocations per enqueue; an
// enqueue that races with an activation then waits bounded by its context
// and the controller's own Close, but not the Dispatcher's.
func (d *LocalDispatcher) admit(ctx context.Context) error {
	if d.bp == nil {
		return nil
	}
	if d.closeCtx.Err() != nil {
		return ErrClosed
	}
	if !d.bp.Active() {
		if err := d.bp.Admit(ctx); err != nil {
			return AsError(err)
		}
		return nil
	}
	actx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(d.closeCtx, cancel)
	err := d.bp.Admit(actx)
	stop()
	cancel()
	if err == nil {
		return nil
	}
	if ctx.Err() == nil && d.closeCtx.Err() != nil {
		return ErrClosed
	}
	return AsError(err)
}

// Lease implements Dispatcher. The peer is req.PeerID, else the peer id of the
// CallInfo in ctx, else its caller (ResolvePeerID). Wait is capped at
// MaxLeaseWait; it returns (nil, nil) when nothing was available in time.
// With RefuseUnhealthyPeers, a peer PeerHealth does not admit is refused with
// ErrPeerIneligible, whose Metadata says when to come back.
func (d *LocalDispatcher) Lease(ctx context.Context, req *LeaseRequest) (*Lease, error) {
	ctx = orBackground(ctx)
	var r LeaseRequest
	if req != nil {
		r = *req
	}
	if r.Wait < 0 {
		return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "waitMs must not be negative, got %d", msCeil(r.Wait))
	}
	peer := ResolvePeerID(r.PeerID, CallInfoFrom(ctx))
	admitted, err := d.admitPeer(peer)
	if err != nil {
		return nil, err
	}
	wait := min(r.Wait, d.maxWait)
	if d.metrics != nil && wait > 0 {
		d.metrics.waiters.Inc()
	}
	l, err := d.q.Lease(ctx, peer, wait)
	if d.metrics != nil && wait > 0 {
		d.metrics.waiters.Dec()
	}
	d.leaseEnded(peer, admitted, l != nil)
	if err != nil {
		return nil, d.done("lease", err)
	}
	if l != nil {
		ownPayload(&l.Payload) // the caller may modify it; the engine's copy stays as it is
	}
	return l, nil
}

// admitPeer asks peer health whether peer may lease now: every lease request
// is proof of life, and with RefuseUnhealthyPeers a peer whose breaker is
// open is refused. admitted reports whether peer health counts this request,
// so that leaseEnded must tell it how the request ended.
func (d *LocalDispatcher) admitPeer(peer string) (admitted bool, err error) {
	if d.health == nil || peer == "" {
		return false, nil
	}
	retry := d.health.AdmitLease(peer, d.clock.Now())
	if retry > 0 && d.refuse {
		return false, d.refusePeer(peer, retry)
	}
	return retry == 0, nil
}

// leaseEnded tells peer health that an admitted lease request got nothing.
func (d *LocalDispatcher) leaseEnded(peer string, admitted, leased bool) {
	if admitted && !leased {
		d.health.RecordLeaseMiss(peer, d.clock.Now())
	}
}

// refusePeer is the refusal of a lease request from peer, told to come back
// after wait (in whole seconds, at least one).
func (d *LocalDispatcher) refusePeer(peer string, wait time.Duration) *Error {
	secs := int64((wait + time.Second - 1) / time.Second)
	d.log.Debug("resourcelease: lease refused to a peer whose leases keep expiring", "peer", peer, "retryAfterSeconds", secs)
	return &Error{Status: ErrPeerIneligible.Status, Code: ErrPeerIneligible.Code,
		Message:  fmt.Sprintf("peer %q is refused leases for %ds: its recent leases expired without being settled", peer, secs),
		Metadata: map[string]string{MetadataRetryAfterSeconds: strconv.FormatInt(secs, 10)}}
}

// Heartbeat implements Dispatcher.
func (d *LocalDispatcher) Heartbeat(ctx context.Context, req *HeartbeatRequest) (*HeartbeatResponse, error) {
	var token OwnershipToken
	if req != nil {
		token = req.OwnershipToken
	}
	if err := validateToken(&token); err != nil {
		return nil, err
	}
	resp, err := d.q.Heartbeat(orBackground(ctx), token)
	if err != nil {
		return nil, d.done("heartbeat", err)
	}
	return &resp, nil
}

// Complete implements Dispatcher.
func (d *LocalDispatcher) Complete(ctx context.Context, req *CompleteRequest) error {
	var token OwnershipToken
	if req != nil {
		token = req.OwnershipToken
	}
	if err := validateToken(&token); err != nil {
		return err
	}
	return d.done("complete", d.q.Complete(orBackground(ctx), token))
}

// Fail implements Dispatcher: the item is requeued unless req.DeadLetter.
func (d *LocalDispatcher) Fail(ctx context.Context, req *FailRequest) error {
	var r FailRequest
	if req != nil {
		r = *req
	}
	if err := validateToken(&r.OwnershipToken); err != nil {
		return err
	}
	opts := FailOptions{Reason: r.Reason, ErrorCode: r.ErrorCode, DeadLetter: r.DeadLetter, Metadata: maps.Clone(r.Metadata)}
	return d.done("fail", d.q.Fail(orBackground(ctx), r.OwnershipToken, opts))
}

// Release implements Dispatcher. A negative delay is invalid-argument.
func (d *LocalDispatcher) Release(ctx context.Context, req *ReleaseRequest) error {
	var r ReleaseRequest
	if req != nil {
		r = *req
	}
	if err := validateToken(&r.OwnershipToken); err != nil {
		return err
	}
	if r.Delay < 0 {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "delayMs must not be negative, got %d", msCeil(r.Delay))
	}
	opts := ReleaseOptions{Delay: min(r.Delay, MaxDuration)}
	return d.done("release", d.q.Release(orBackground(ctx), r.OwnershipToken, opts))
}

// Drain implements Dispatcher.
// With Limit or MaxBytes it drains one page (see DrainRequest); negative
// limits are invalid-argument.
func (d *LocalDispatcher) Drain(ctx context.Context, req *DrainRequest) (*DrainResponse, error) {
	var limit, maxBytes int
	if req != nil {
		if req.Limit < 0 || req.MaxBytes < 0 {
			return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "drain limit and maxBytes must not be negative, got %d and %d", req.Limit, req.MaxBytes)
		}
		limit = req.Limit
		maxBytes = int(min(req.MaxBytes, int64(math.MaxInt)))
	}
	items, more, err := d.q.DrainN(orBackground(ctx), limit, maxBytes)
	if err != nil {
		return nil, d.done("drain", err)
	}
	if items == nil {
		items = []PendingItem{}
	}
	for i := range items {
		ownPayload(&items[i].Payload)
	}
	return &DrainResponse{Items: items, More: more}, nil
}

// Restore implements Dispatcher. It needs at least one item, each with a
// payload; it restores all of them or none.
func (d *LocalDispatcher) Restore(ctx context.Context, req *RestoreRequest) (*RestoreResponse, error) {
	if req == nil || len(req.Items) == 0 {
		return nil, Errorf(StatusInvalidArgument, CodePendingItemRequired, "restore needs at least one pending item")
	}
	for i := range req.Items {
		if isZeroItem(&req.Items[i].Payload) {
			return nil, Errorf(StatusInvalidArgument, CodePendingItemRequired, "items[%d]: payload is required", i)
		}
	}
	items := slices.Clone(req.Items) // kept by the queue: the caller may reuse its own
	for i := range items {
		ownPayload(&items[i].Payload)
	}
	n, err := d.q.Restore(orBackground(ctx), items)
	if err != nil {
		return nil, d.done("restore", err)
	}
	return &RestoreResponse{RestoredCount: n}, nil
}

func isZeroItem(it *Item) bool {
	return it.ResourceType == "" && it.ResourceID == "" && it.PartitionKey == "" &&
		it.PayloadEncoding == "" && len(it.Body) == 0 && len(it.Attributes) == 0 && it.RequestID == ""
}

// Stats implements Dispatcher, with BackpressureActive from the
// BackpressureController.
func (d *LocalDispatcher) Stats(ctx context.Context, _ *StatsRequest) (*Stats, error) {
	s, err := d.q.Stats(orBackground(ctx))
	if err != nil {
		return nil, d.done("stats", err)
	}
	s.BackpressureActive = d.bp != nil && d.bp.Active()
	return &s, nil
}

// DeadLetters implements Dispatcher. Limit 0 lists all; negative is invalid.
func (d *LocalDispatcher) DeadLetters(ctx context.Context, req *DeadLettersRequest) (*DeadLettersResponse, error) {
	limit := 0
	if req != nil {
		limit = req.Limit
	}
	if limit < 0 {
		return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "limit must not be negative, got %d", limit)
	}
	items, err := d.q.DeadLetters(orBackground(ctx), limit)
	if err != nil {
		return nil, d.done("deadletters", err)
	}
	for i := range items {
		ownPayload(&items[i].Payload)
	}
	return &DeadLettersResponse{Items: items}, nil
}

// Redrive implements Dispatcher: the selected dead letters go back to
// pending with attempt 1. A request with neither SequenceIDs nor All (a nil
// one included), or with both, is invalid-argument. Unknown ids are ignored.
func (d *LocalDispatcher) Redrive(ctx context.Context, req *RedriveRequest) (*RedriveResponse, error) {
	var sel DeadLetterSelection
	if req != nil {
		sel = DeadLetterSelection{SequenceIDs: req.SequenceIDs, All: req.All}
	}
	n, err := d.q.Redrive(orBackground(ctx), sel)
	if err != nil {
		return nil, d.done("redrive", err)
	}
	return &RedriveResponse{RedrivenCount: n}, nil
}

// Purge implements Dispatcher: the selected dead letters are deleted. A
// request with neither SequenceIDs nor All (a nil one included), or with
// both, is invalid-argument. Unknown ids are ignored.
func (d *LocalDispatcher) Purge(ctx context.Context, req *PurgeRequest) (*PurgeResponse, error) {
	var sel DeadLetterSelection
	if req != nil {
		sel = DeadLetterSelection{SequenceIDs: req.SequenceIDs, All: req.All}
	}
	n, err := d.q.Purge(orBackground(ctx), sel)
	if err != nil {
		return nil, d.done("purge", err)
	}
	return &PurgeResponse{PurgedCount: n}, nil
}

// ownPayload gives it its own Body and Attributes. The engine keeps the items
// it holds and hands them to the replicator's writer, so a payload crossing
// the Dispatcher boundary, in or out, is copied: a caller that modifies what it
// passed in or got back can neither change a stored item nor race the writer
// encoding its events.
func ownPayload(it *Item) {
	it.Body = bytes.Clone(it.Body)
	it.Attributes = maps.Clone(it.Attributes)
}
