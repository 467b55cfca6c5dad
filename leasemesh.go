// Package leasemesh opens a fully wired work-queue dispatcher in one call:
// the queue engine on a Storage (sqlitestore.Dir for a durable data
// directory, pgstore.URL for a PostgreSQL database that several
// dispatchers share, Memory for tests), its ordered replication log, deterministic
// capture of every event's effect, peer health with a lease breaker,
// backpressure with an enqueue rate limiter, Prometheus metrics on the
// registry you give it, and the yarpc HTTP/JSON handler and control plane to
// mount in your own mux.
//
//	d, err := leasemesh.Open(ctx, leasemesh.Config{Storage: sqlitestore.Dir("data")})
//	if err != nil { ... }
//	defer d.Close()
//	mux.Handle("/yarpc/v1", d.Handler())
//
// A *Dispatcher is itself a resourcelease.Dispatcher, so producers and
// workers in the same process use it directly (resourcelease.Enqueue,
// worker.New), and those elsewhere use a transport.Client of its handler:
// the same code runs in process or over the network.
//
// The packages it composes stay usable on their own (resourcelease for the
// engine, replication, deterministic, peerhealth, backpressure, transport,
// control, worker); this package only wires them the way a production
// dispatcher needs, with each setting given once.
package leasemesh

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/tracing"
	"github.com/leasemesh/leasemesh/transport"
)

// Config configures Open. Only Storage is required; every other zero field
// means its documented default, and a bad value makes Open return an
// invalid-argument *resourcelease.Error.
type Config struct {
	// Storage is where the queue lives: sqlitestore.Dir(path) for a durable
	// data directory, pgstore.URL(url) for a PostgreSQL database that any
	// number of dispatchers share as one queue, Memory() for one that a
	// restart forgets. Required.
	Storage Storage

	// Queue configures the engine: capacity, lease duration, heartbeat
	// interval, requeue delay and backoff, delivery attempts, dedupe window.
	// Its Journal and InitialState must be nil (Open supplies them); its
	// DedupeWindow also reaches the durable store. A storage that builds its
	// own queue (pgstore) is handed all of it, translates what applies and
	// refuses what it cannot honour. See resourcelease.QueueConfig for the
	// defaults.
	Queue resourcelease.QueueConfig

	// PeerHealth configures the peer-health tracker (grace period, breaker
	// threshold and cool-down, bounds). See peerhealth.Config.
	PeerHealth peerhealth.Config
	// RefuseUnhealthyPeers turns the lease breaker on: a peer whose leases
	// keep expiring unsettled is refused leases for a cool-down (see
	// peerhealth). Defaults to false.
	RefuseUnhealthyPeers bool

	// Backpressure turns backpressure on when its HighWatermark is set:
	// enqueue waits or is refused (by Mode) while the queue is deep, and the
	// rate limiter switches to RateLimit.BackpressureLimit. Its Listeners are
	// told of every transition, after the dispatcher's own. Defaults to off.
	Backpressure backpressure.Config
	// RateLimit limits enqueue requests through Handler (lease, heartbeat,
	// complete and fail are never limited). Defaults to unlimited.
	RateLimit backpressure.RateLimiterConfig

	// Handler configures the RPC handler that Handler returns: service name,
	// namespace, authorization, limits. Its Authorize is asked for the role
	// of each procedure (producer, worker, observer, admin; see
	// transport.RoleOf and transport.BearerTokens); left nil, the admin
	// procedures are refused and the others open. Open adds the rate limiter
	// to its Middleware, after authorization, so refused callers spend no
	// tokens. See transport.HandlerConfig.
	Handler transport.HandlerConfig
	// Control configures the control plane that ControlHandler returns: its
	// prefix and authorization. Its Authorize defaults to Handler.Authorize
	// (asked for RoleAdmin on the destructive endpoints); with neither set,
	// the control plane is open, so mount it only where operators alone
	// reach it. Its sources (Dispatcher, Peers, Backpressure, Events) are
	// filled in by Open.
	Control control.HandlerConfig

	// Tracing, when its TracerProvider is set, traces every RPC the handler
	// serves and stores each enqueue's trace context with its item, so a
	// worker wrapped with tracing.Work continues the producer's trace.
	// Defaults to off.
	Tracing tracing.Config

	// Sinks are extra replication sinks, attached in order before the queue
	// starts, so that they see every event from the first. On a storage
	// whose queue keeps its own state (pgstore) each follows the shared log
	// from its own goroutine, after each commit: from the newest event at
	// Open, or a ResumableSink from its LastApplied; an event it refuses is
	// retried with backoff until it takes it (see
	// resourcelease.DispatcherConfig.LogSinks). A Synchronous one is refused
	// there, and Options other than Synchronous do not apply.
	Sinks []Sink
	// RecentEvents is how many of the newest events RecentEvents keeps for
	// diagnostics. Defaults to 32; at most 10,000.
	RecentEvents int

	// Registerer receives every metric of the dispatcher and its parts.
	// Nothing is registered anywhere else; nil means no metrics.
	Registerer prometheus.Registerer
	// Logger receives the dispatcher's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Clock is the source of time. Defaults to resourcelease.SystemClock.
	Clock resourcelease.Clock
}

// Sink is a replication sink attached by Open.
type Sink struct {
	// Name appears in errors, metrics and SinkStatuses.
	Name string
	// Sink receives the events.
	Sink resourcelease.EventSink
	// Options say whether it is synchronous, and so on.
	Options resourcelease.SinkOptions
}

// Dispatcher is a wired dispatcher: a resourcelease.Dispatcher (its methods
// are the protocol's procedures) with its parts and its HTTP handlers. It is
// safe for concurrent use. Close it when done.
type Dispatcher struct {
	*resourcelease.LocalDispatcher

	stores  *Stores
	tracker *peerhealth.Tracker
	monitor *backpressure.Monitor // nil without backpressure
	bpDiag  *backpressure.DiagnosticsListener
	limiter *backpressure.RateLimiter
	recent  *replication.RecentLog
	events  resourcelease.EventLog // the replicator, or the storage's own log
	rpc     http.Handler
	control http.Handler
	logger  *slog.Logger
	// unregister undoes what Open registered itself (the dispatcher and the
	// replicator undo their own), so that a registry outlives a Dispatcher.
	unregister func()
	closeMu    sync.Mutex
	closed     bool
	closeErr   error
	// closing is set first thing by Close, which holds closeMu for its
	// whole run, so that Ready answers at once during a shutdown.
	closing atomic.Bool
}

// Open opens cfg.Storage, rebuilds the queue from it (cancelled with ctx: a
// rebuild of a deep queue can take seconds) and wires the dispatcher. On
// error, whatever was opened is closed again.
func Open(ctx context.Context, cfg Config) (d *Dispatcher, err error) {
	if cfg.Storage == nil {
		return nil, invalid("Storage is required: sqlitestore.Dir(path) for a durable queue, or leasemesh.Memory()")
	}
	if cfg.Queue.Journal != nil || cfg.Queue.InitialState != nil {
		return nil, invalid("Queue.Journal and Queue.InitialState are set by Open; leave them nil")
	}
	if cfg.RecentEvents < 0 || cfg.RecentEvents > maxRecentEvents {
		return nil, invalid(fmt.Sprintf("RecentEvents must be from 0 (default) to %d, got %d", maxRecentEvents, cfg.RecentEvents))
	}
	logger := cmp.Or(cfg.Logger, slog.Default())
	clock := cfg.Clock
	if clock == nil {
		clock = resourcelease.SystemClock
	}
	if cfg.Queue.Clock == nil {
		cfg.Queue.Clock = clock
	}

	d = &Dispatcher{logger: logger}
	defer func() {
		if err != nil {
			_ = d.Close()
			d = nil
		}
	}()
	if d.stores, err = cfg.Storage.OpenStorage(ctx, StorageOptions{
		DedupeWindow: cfg.Queue.DedupeWindow, Clock: clock, Logger: logger, Queue: cfg.Queue, Registerer: cfg.Registerer,
	}); err != nil {
		return d, err
	}
	repl := d.stores.Replicator
	onStore := d.stores.Queue != nil
	switch {
	case onStore && (repl != nil || d.stores.Events == nil):
		return d, invalid("a Storage with a Queue must give its Events and no Replicator")
	case !onStore && repl == nil:
		return d, invalid("the Storage gave neither a Replicator nor a Queue")
	}
	var elog resourcelease.EventLog = d.stores.Events
	if !onStore {
		elog = repl
	}
	d.events = elog

	var coord *deterministic.Coordinator
	if !onStore {
		// A storage with its own Queue records each event's effect in the
		// event's transaction itself.
		if coord, err = deterministic.NewCoordinator(deterministic.Config{Store: d.stores.State}); err != nil {
			return d, err
		}
	}
	if d.recent, err = replication.NewRecentLog(cmp.Or(cfg.RecentEvents, replication.DefaultRecentLogSize)); err != nil {
		return d, err
	}
	// A restarted dispatcher's recent events start with the newest stored
	// ones, not empty. On a storage with its own queue the dispatcher's
	// reading of the log starts right after them (logAfter), so that
	// nothing another process commits meanwhile is missed.
	last := elog.LastSequence()
	if last > 0 {
		n := int64(cmp.Or(cfg.RecentEvents, replication.DefaultRecentLogSize))
		evs, rerr := elog.ReadEvents(ctx, max(0, last-n), int(n))
		if rerr != nil {
			return d, rerr
		}
		for _, e := range evs {
			if e.SequenceNumber <= last {
				_ = d.recent.ApplyEvent(ctx, e)
			}
		}
	}
	logAfter := last
	if logAfter == 0 {
		logAfter = -1 // the start of an empty log
	}
	var logSinks []resourcelease.EventSink
	if onStore {
		logSinks = append(logSinks, d.recent)
		for _, s := range cfg.Sinks {
			if s.Options.Synchronous {
				return d, invalid(fmt.Sprintf("sink %q is synchronous, which a storage with its own queue cannot honour: its sinks follow the shared log after the commit", s.Name))
			}
			logSinks = append(logSinks, s.Sink)
		}
	} else {
		if err = repl.AddSink("recent-events", d.recent, resourcelease.SinkOptions{}); err != nil {
			return d, err
		}
		for _, s := range cfg.Sinks {
			if err = repl.AddSink(s.Name, s.Sink, s.Options); err != nil {
				return d, err
			}
		}
	}

	if cfg.PeerHealth.Clock == nil {
		cfg.PeerHealth.Clock = clock
	}
	if d.tracker, err = peerhealth.New(cfg.PeerHealth); err != nil {
		return d, err
	}
	if d.bpDiag, err = backpressure.NewDiagnosticsListener(backpressure.DiagnosticsConfig{}); err != nil {
		return d, err
	}
	if cfg.RateLimit.Clock == nil {
		cfg.RateLimit.Clock = clock
	}
	if d.limiter, err = backpressure.NewRateLimiter(cfg.RateLimit); err != nil {
		return d, err
	}
	var bp resourcelease.BackpressureController
	if cfg.Backpressure.HighWatermark != 0 {
		bc := cfg.Backpressure
		bc.Listeners = append([]resourcelease.BackpressureListener{d.bpDiag, d.limiter, backpressure.NewLogListener(logger)}, bc.Listeners...)
		bc.Logger = cmp.Or(bc.Logger, logger)
		if bc.Clock == nil {
			bc.Clock = clock
		}
		if d.monitor, err = backpressure.NewMonitor(bc); err != nil {
			return d, err
		}
		bp = d.monitor
	}

	dc := resourcelease.DispatcherConfig{
		PeerHealth:           d.tracker,
		RefuseUnhealthyPeers: cfg.RefuseUnhealthyPeers,
		Backpressure:         bp,
		Registerer:           cfg.Registerer,
		Logger:               logger,
		Clock:                clock,
	}
	if onStore {
		dc.Store, dc.LogSinks, dc.LogAfter = d.stores.Queue, logSinks, logAfter
	} else {
		// The rebuild reads every pending item, lease, dead letter and
		// dedupe record: it is the one step of Open that can take long, so
		// it takes ctx.
		if loader, ok := repl.(resourcelease.StateLoader); ok {
			st, lerr := loader.LoadState(ctx)
			if lerr != nil {
				return d, lerr
			}
			cfg.Queue.InitialState = st
		}
		dc.Queue, dc.Replicator, dc.Deterministic = cfg.Queue, repl, coord
	}
	if d.LocalDispatcher, err = resourcelease.NewDispatcher(dc); err != nil {
		if onStore {
			_ = d.stores.Queue.Close() // NewDispatcher closes it only once it made the Dispatcher
		}
		return d, err
	}
	if cfg.Registerer != nil {
		if err = cfg.Registerer.Register(d.limiter); err != nil {
			return d, err
		}
		d.unregister = func() { cfg.Registerer.Unregister(d.limiter) }
	}

	hc := cfg.Handler
	hc.Middleware = append([]func(http.Handler) http.Handler{tracing.Middleware(cfg.Tracing), d.limiter.Middleware}, hc.Middleware...)
	hc.Logger = cmp.Or(hc.Logger, logger)
	if hc.Registerer == nil {
		hc.Registerer = cfg.Registerer
	}
	if d.rpc, err = transport.NewHandler(tracing.Dispatcher(d.LocalDispatcher, cfg.Tracing), hc); err != nil {
		return d, err
	}
	cc := cfg.Control
	if cc.Authorize == nil {
		cc.Authorize = hc.Authorize // one Authorizer: the control plane asks it for RoleAdmin
	}
	cc.Dispatcher = d.LocalDispatcher
	cc.Peers = func(context.Context) (any, error) { return d.tracker.Diagnostics(), nil }
	cc.Backpressure = func() (any, bool) { return d.bpDiag.Latest() }
	cc.Events = elog
	cc.Logger = cmp.Or(cc.Logger, logger)
	if d.control, err = control.NewHandler(cc); err != nil {
		return d, err
	}
	if st, serr := d.LocalDispatcher.Stats(ctx, nil); serr == nil {
		logger.Info("leasemesh: dispatcher open", "storage", d.stores.Location, "pending", st.PendingCount)
	}
	return d, nil
}

// maxRecentEvents bounds Config.RecentEvents by what one read of the log
// returns, so that a restart fills the recent events with the newest ones.
const maxRecentEvents = 10_000

func invalid(msg string) error {
	return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "leasemesh: %s", msg)
}

// Handler returns the RPC handler (yarpc's HTTP transport with the JSON
// encoding) to mount in a mux, e.g. at "/yarpc/v1". Enqueue requests pass
// through the rate limiter first.
func (d *Dispatcher) Handler() http.Handler { return d.rpc }

// ControlHandler returns the control plane (peers, backpressure, replication
// log, stats, drain, restore, dead letters) to mount at its prefix, by
// default "/omnirelay/control/".
func (d *Dispatcher) ControlHandler() http.Handler { return d.control }

// PeerHealth returns the peer-health tracker.
func (d *Dispatcher) PeerHealth() *peerhealth.Tracker { return d.tracker }

// Backpressure returns the backpressure monitor, or nil when
// Config.Backpressure was off.
func (d *Dispatcher) Backpressure() *backpressure.Monitor { return d.monitor }

// BackpressureDiagnostics returns the latest signal and history of
// backpressure transitions.
func (d *Dispatcher) BackpressureDiagnostics() *backpressure.DiagnosticsListener { return d.bpDiag }

// RateLimiter returns the enqueue rate limiter.
func (d *Dispatcher) RateLimiter() *backpressure.RateLimiter { return d.limiter }

// RecentEvents returns the bounded log of the newest replication events.
func (d *Dispatcher) RecentEvents() *replication.RecentLog { return d.recent }

// Replicator returns the replication log, to read or tail it. It is nil on
// a storage whose queue keeps its own state (Stores.Queue, as on
// Postgres): read Events instead.
func (d *Dispatcher) Replicator() Replicator { return d.stores.Replicator }

// Events returns the replication log to read or tail: the Replicator's, or
// the storage's own (on Postgres, the one log of every dispatcher on the
// database).
func (d *Dispatcher) Events() resourcelease.EventLog { return d.events }

// Ready reports whether the dispatcher can serve now: nil when its storage
// answers (a database ping, bounded by ctx), for a readiness endpoint. A
// storage without a health check is always ready once open. Once Close has
// begun it answers ErrClosed at once, without waiting for Close to end.
func (d *Dispatcher) Ready(ctx context.Context) error {
	if d.closing.Load() {
		return resourcelease.ErrClosed
	}
	if d.stores == nil || d.stores.Health == nil {
		return nil
	}
	return d.stores.Health(ctx)
}

// Location says where the storage keeps its data (a directory, or "memory").
func (d *Dispatcher) Location() string { return d.stores.Location }

// Close stops the dispatcher and closes everything Open opened, in order:
// the dispatcher (long-polls are woken with unavailable, later calls are
// refused), the backpressure monitor, the replicator (which commits what is
// in flight and waits for its sinks, each bounded by its own timeout), then
// the storage. Live leases are not ended: with durable storage they are
// honoured again after a restart until they expire. It returns the first
// error; calling it again returns the same.
func (d *Dispatcher) Close() error {
	d.closing.Store(true)
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.closed {
		return d.closeErr
	}
	d.closed = true
	var errs []error
	if d.LocalDispatcher != nil {
		errs = append(errs, d.LocalDispatcher.Close())
	}
	if d.monitor != nil {
		errs = append(errs, d.monitor.Close())
	}
	if d.stores != nil {
		if d.stores.Replicator != nil {
			errs = append(errs, d.stores.Replicator.Close())
		}
		if d.stores.Close != nil {
			errs = append(errs, d.stores.Close())
		}
	}
	if d.unregister != nil {
		d.unregister()
	}
	d.closeErr = errors.Join(errs...)
	return d.closeErr
}
