package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/diagnostics"
	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
	"github.com/leasemesh/leasemesh/transport"
)

// replicator is what the demo needs of either replicator.
type replicator interface {
	resourcelease.Replicator
	SinkStatuses() []replication.SinkStatus
}

// dispatcherRole is the dispatcher and everything it is composed of.
type dispatcherRole struct {
	dataDir  string
	dbs      []*sql.DB
	repl     replicator
	detStore *deterministic.SQLiteStore // nil with memory storage
	coord    *deterministic.Coordinator
	tracker  *peerhealth.Tracker
	monitor  *backpressure.Monitor
	bpDiag   *backpressure.DiagnosticsListener
	limiter  *backpressure.RateLimiter
	recent   *replication.RecentLog
	totals   *totalsSink
	disp     *resourcelease.LocalDispatcher
	dispDone atomic.Bool
}

// startDispatcher opens storage and composes the dispatcher. On error what
// was opened is closed again.
func startDispatcher(ctx context.Context, cfg *config.Config, logger *slog.Logger, reg prometheus.Registerer) (d *dispatcherRole, err error) {
	d = &dispatcherRole{totals: &totalsSink{}}
	defer func() {
		if err != nil {
			d.closeDispatcher()
			d.closeStorage()
		}
	}()

	var store resourcelease.StateStore
	switch cfg.Storage {
	case config.StorageSQLite:
		if d.dataDir, err = filepath.Abs(cfg.DataDirectory); err != nil {
			return d, &config.ConfigValidationError{Field: config.Section + ":dataDirectory", Err: fmt.Errorf("invalid value %q: %w", cfg.DataDirectory, err)}
		}
		if err = os.MkdirAll(d.dataDir, 0o755); err != nil {
			return d, &config.ConfigValidationError{Field: config.Section + ":dataDirectory", Err: fmt.Errorf("invalid value %q: %w", cfg.DataDirectory, err)}
		}
		replPath := filepath.Join(d.dataDir, "replication.db")
		replDB, oerr := sqlitedb.Open(ctx, replPath, sqlitedb.Options{Synchronous: sqlitedb.SynchronousFull})
		if oerr != nil {
			return d, oerr
		}
		d.dbs = append(d.dbs, replDB)
		sr, rerr := replication.NewSQLiteReplicator(ctx, replDB, replication.SQLiteOptions{Path: replPath, Logger: logger})
		if rerr != nil {
			return d, rerr
		}
		d.repl = sr
		// NORMAL survives a killed process; the deterministic records are
		// derived from replication.db's events, which are FULL.
		detPath := filepath.Join(d.dataDir, deterministic.DefaultFileName)
		detDB, oerr := sqlitedb.Open(ctx, detPath, sqlitedb.Options{Synchronous: sqlitedb.SynchronousNormal})
		if oerr != nil {
			return d, oerr
		}
		d.dbs = append(d.dbs, detDB)
		if d.detStore, err = deterministic.NewSQLiteStore(ctx, detDB, deterministic.SQLiteConfig{}); err != nil {
			return d, err
		}
		store = d.detStore
	case config.StorageMemory:
		mr, merr := replication.NewMemoryReplicator(replication.MemoryOptions{Logger: logger})
		if merr != nil {
			return d, merr
		}
		d.repl = mr
		store = deterministic.NewMemoryStore()
	}
	if d.coord, err = deterministic.NewCoordinator(deterministic.Config{Store: store}); err != nil {
		return d, err
	}
	if err = reg.Register(d.coord.Collector()); err != nil {
		return d, err
	}

	// The recent-events log starts with the newest stored events, so a
	// restarted dispatcher's page is not empty.
	if d.recent, err = replication.NewRecentLog(replication.DefaultRecentLogSize); err != nil {
		return d, err
	}
	if last := d.repl.LastSequence(); last > 0 {
		evs, rerr := d.repl.ReadEvents(ctx, max(0, last-replication.DefaultRecentLogSize), replication.DefaultRecentLogSize)
		if rerr != nil {
			return d, rerr
		}
		for _, e := range evs {
			_ = d.recent.ApplyEvent(ctx, e)
		}
	}
	if err = d.repl.AddSink("recent-log", d.recent, resourcelease.SinkOptions{}); err != nil {
		return d, err
	}
	if err = d.repl.AddSink("demo-totals", d.totals, resourcelease.SinkOptions{}); err != nil {
		return d, err
	}

	if d.tracker, err = peerhealth.New(peerhealth.Config{GracePeriod: cfg.LeaseDuration}); err != nil {
		return d, err
	}
	if d.bpDiag, err = backpressure.NewDiagnosticsListener(backpressure.DiagnosticsConfig{}); err != nil {
		return d, err
	}
	if d.limiter, err = backpressure.NewRateLimiter(backpressure.RateLimiterConfig{
		NormalLimit:       limit(cfg.RateLimitPerSecond),
		BackpressureLimit: limit(cfg.BackpressureRateLimitPerSecond),
		BackpressureBurst: burst(cfg.BackpressureRateLimitPerSecond),
	}); err != nil {
		return d, err
	}
	if err = reg.Register(d.limiter); err != nil {
		return d, err
	}
	mode := backpressure.ModeWait
	if cfg.BackpressureMode == config.BackpressureReject {
		mode = backpressure.ModeReject
	}
	if d.monitor, err = backpressure.NewMonitor(backpressure.Config{
		HighWatermark: cfg.HighWatermark, LowWatermark: cfg.LowWatermark, Cooldown: cfg.BackpressureCooldown, Mode: mode,
		Listeners: []resourcelease.BackpressureListener{d.bpDiag, d.limiter, backpressure.NewLogListener(logger)},
		Logger:    logger,
	}); err != nil {
		return d, err
	}

	d.disp, err = resourcelease.NewDispatcher(resourcelease.DispatcherConfig{
		Queue: resourcelease.QueueConfig{
			Capacity: cfg.Capacity, LeaseDuration: cfg.LeaseDuration, HeartbeatInterval: cfg.HeartbeatInterval,
			RequeueDelay: cfg.RequeueDelay, MaxDeliveryAttempts: cfg.MaxDeliveryAttempts,
		},
		Replicator:           d.repl,
		Deterministic:        d.coord,
		PeerHealth:           d.tracker,
		RefuseUnhealthyPeers: cfg.RefuseUnhealthyPeers,
		Backpressure:         d.monitor,
		Registerer:           reg,
		Logger:               logger,
	})
	if err != nil {
		return d, err
	}
	return d, nil
}

// limit converts a configured rate (0 = unlimited) for the rate limiter.
func limit(perSecond float64) rate.Limit {
	if perSecond <= 0 {
		return rate.Inf
	}
	return rate.Limit(perSecond)
}

// burst is the backpressure burst: 10 (DESIGN §8), or the rate when lower.
func burst(perSecond float64) int {
	if perSecond <= 0 {
		return 0
	}
	return max(1, min(10, int(perSecond)))
}

func (d *dispatcherRole) stats(ctx context.Context) (*resourcelease.Stats, error) {
	return d.disp.Stats(ctx, &resourcelease.StatsRequest{})
}

// rpcHandler serves the dispatcher over the wire protocol: enqueue goes
// through the backpressure-aware rate limiter, and with a token the
// destructive procedures need it.
func (d *dispatcherRole) rpcHandler(cfg *config.Config, token string, logger *slog.Logger, reg prometheus.Registerer) (http.Handler, error) {
	mws := []func(http.Handler) http.Handler{d.limiter.Middleware}
	if token != "" {
		mws = append(mws, transport.OnlyProcedures(requireToken(token),
			transport.Procedure(cfg.Namespace, transport.VerbDrain), transport.Procedure(cfg.Namespace, transport.VerbRestore),
			transport.Procedure(cfg.Namespace, transport.VerbRedrive), transport.Procedure(cfg.Namespace, transport.VerbPurge)))
	}
	return transport.NewHandler(d.disp, transport.HandlerOptions{
		Service: cfg.ServiceName, Namespace: cfg.Namespace, Middleware: mws, Registerer: reg, Logger: logger,
	})
}

// requireToken is middleware refusing requests without the bearer token.
func requireToken(token string) func(http.Handler) http.Handler {
	auth := transport.BearerToken(token)
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := auth(r); err != nil {
				transport.WriteError(w, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// controlHandler serves /omnirelay/control/*; with a token the destructive
// endpoints need it.
func (d *dispatcherRole) controlHandler(token string, logger *slog.Logger) http.Handler {
	opts := transport.ControlOptions{
		Dispatcher:   d.disp,
		Peers:        func(context.Context) (any, error) { return d.tracker.Diagnostics(), nil },
		Backpressure: func() (any, bool) { return d.bpDiag.Latest() },
		Events:       d.repl,
		Logger:       logger,
	}
	if token != "" {
		opts.Authorize = transport.BearerToken(token)
	}
	return transport.NewControlHandler(opts)
}

// sources feeds the diagnostics page from the dispatcher's pieces;
// /demo/enqueue goes through the RPC client.
func (d *dispatcherRole) sources(client *transport.Client) diagnostics.Sources {
	return diagnostics.Sources{
		Stats:               d.stats,
		Enqueue:             client.Enqueue,
		Peers:               func() any { return d.tracker.Diagnostics() },
		Backpressure:        d.bpDiag.Latest,
		BackpressureHistory: d.bpDiag.History,
		BackpressureState:   func() any { return d.monitor.State() },
		Recent:              d.recent.Events,
		LastSequence:        d.repl.LastSequence,
		Sinks:               func() any { return d.repl.SinkStatuses() },
		Totals:              d.totals.Totals,
	}
}

// closeDispatcher closes the dispatcher (waking its long-polls) and the
// backpressure monitor. Safe to call twice.
func (d *dispatcherRole) closeDispatcher() error {
	if !d.dispDone.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	if d.disp != nil {
		errs = append(errs, d.disp.Close())
	}
	if d.monitor != nil {
		errs = append(errs, d.monitor.Close())
	}
	return errors.Join(errs...)
}

// closeStorage flushes and closes the replicator, then the deterministic
// store it delivers to (stopping its checkpointer), then the databases.
func (d *dispatcherRole) closeStorage() error {
	var errs []error
	if d.repl != nil {
		errs = append(errs, d.repl.Close())
		d.repl = nil
	}
	if d.detStore != nil {
		errs = append(errs, d.detStore.Close())
		d.detStore = nil
	}
	for _, db := range d.dbs {
		errs = append(errs, db.Close())
	}
	d.dbs = nil
	return errors.Join(errs...)
}

// totalsSink counts replication events by type (an asynchronous sink).
type totalsSink struct {
	enqueued, leased, completed, failed, expired, deadLettered atomic.Int64
}

// ApplyEvent implements resourcelease.EventSink.
func (t *totalsSink) ApplyEvent(_ context.Context, e resourcelease.Event) error {
	switch e.EventType {
	case resourcelease.EventEnqueue:
		t.enqueued.Add(1)
	case resourcelease.EventLeaseGranted:
		t.leased.Add(1)
	case resourcelease.EventCompleted:
		t.completed.Add(1)
	case resourcelease.EventFailed:
		t.failed.Add(1)
	case resourcelease.EventLeaseExpired:
		t.expired.Add(1)
	case resourcelease.EventDeadLettered:
		t.deadLettered.Add(1)
	}
	return nil
}

// Totals returns the counts.
func (t *totalsSink) Totals() diagnostics.Totals {
	return diagnostics.Totals{
		Enqueued: t.enqueued.Load(), Leased: t.leased.Load(), Completed: t.completed.Load(),
		Failed: t.failed.Load(), Expired: t.expired.Load(), DeadLettered: t.deadLettered.Load(),
	}
}
