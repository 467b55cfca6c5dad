package app

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/diagnostics"
	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/pgstore"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitestore"
	"github.com/leasemesh/leasemesh/tracing"
	"github.com/leasemesh/leasemesh/transport"
)

// dispatcherRole is the wired dispatcher and the demo's own event totals.
type dispatcherRole struct {
	*leasemesh.Dispatcher
	dataDir string // "" on memory storage
	totals  *totalsSink
}

// startDispatcher opens the dispatcher on the configured storage, with the
// demo's settings and auth guarding the RPC procedures and the control
// plane's destructive endpoints by role.
func startDispatcher(ctx context.Context, cfg *config.Config, auth *demoAuth, logger *slog.Logger, reg prometheus.Registerer, tc tracing.Config) (*dispatcherRole, error) {
	d := &dispatcherRole{totals: &totalsSink{}}
	storage := leasemesh.Memory()
	switch cfg.Storage {
	case config.StorageSQLite:
		dir, err := filepath.Abs(cfg.DataDirectory)
		if err != nil {
			return nil, &config.ConfigValidationError{Field: config.Section + ":dataDirectory", Err: fmt.Errorf("invalid value %q: %w", cfg.DataDirectory, err)}
		}
		d.dataDir = dir
		storage = sqlitestore.Dir(dir)
	case config.StoragePostgres:
		if cfg.DataDirectoryIgnored() {
			logger.Warn("meshdemo: dataDirectory is ignored with storage=postgres: the queue lives in the database", "dataDirectory", cfg.DataDirectory)
		}
		storage = pgstore.URL(cfg.PostgresURL)
	}
	mode := backpressure.ModeWait
	if cfg.BackpressureMode == config.BackpressureReject {
		mode = backpressure.ModeReject
	}
	var err error
	d.Dispatcher, err = leasemesh.Open(ctx, leasemesh.Config{
		Storage: storage,
		Queue: resourcelease.QueueConfig{
			Capacity: cfg.Capacity, LeaseDuration: cfg.LeaseDuration, HeartbeatInterval: cfg.HeartbeatInterval,
			RequeueDelay: cfg.RequeueDelay, MaxDeliveryAttempts: cfg.MaxDeliveryAttempts,
			MaxActivePerPartition: cfg.MaxActivePerPartition, Fairness: cfg.Fairness,
			DeadLetterRetention: cfg.DeadLetterRetention, MaxDeadLetters: cfg.MaxDeadLetters,
		},
		PeerHealth: peerhealth.Config{
			GracePeriod: cfg.LeaseDuration, BreakerThreshold: cfg.BreakerThreshold, BreakerCooldown: cfg.BreakerCooldown,
		},
		RefuseUnhealthyPeers: cfg.RefuseUnhealthyPeers,
		Backpressure: backpressure.Config{
			HighWatermark: cfg.HighWatermark, LowWatermark: cfg.LowWatermark, Cooldown: cfg.BackpressureCooldown, Mode: mode,
		},
		RateLimit: backpressure.RateLimiterConfig{
			NormalLimit:       limit(cfg.RateLimitPerSecond),
			BackpressureLimit: limit(cfg.BackpressureRateLimitPerSecond),
			BackpressureBurst: burst(cfg.BackpressureRateLimitPerSecond),
		},
		Handler:    transport.HandlerConfig{Service: cfg.ServiceName, Namespace: cfg.Namespace, Authorize: auth.authorize},
		Control:    control.HandlerConfig{Authorize: auth.authorize},
		Tracing:    tc,
		Sinks:      []leasemesh.Sink{{Name: "demo-totals", Sink: d.totals}},
		Registerer: reg,
		Logger:     logger,
	})
	if err != nil {
		if cfg.Storage == config.StoragePostgres {
			return nil, postgresOpenError(cfg, err)
		}
		return nil, err
	}
	return d, nil
}

// postgresOpenError is a setting to fix, one line, exit 2: the database
// that cannot be reached or used at start (any other error is reported as
// it is).
func postgresOpenError(cfg *config.Config, err error) error {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	e := resourcelease.AsError(err)
	if e.Status != resourcelease.StatusUnavailable && !strings.HasPrefix(e.Message, "postgres:") {
		return err // not the database's: report it as it is
	}
	return &config.ConfigValidationError{Field: config.Section + ":postgresUrl",
		Err: fmt.Errorf("cannot use %q: %s", cfg.RedactedPostgresURL(), msg)}
}

// limit converts a configured rate (0 = unlimited) for the rate limiter.
func limit(perSecond float64) rate.Limit {
	if perSecond <= 0 {
		return rate.Inf
	}
	return rate.Limit(perSecond)
}

// burst is the backpressure burst: 10, or the rate when lower.
func burst(perSecond float64) int {
	if perSecond <= 0 {
		return 0
	}
	return max(1, min(10, int(perSecond)))
}

func (d *dispatcherRole) stats(ctx context.Context) (*resourcelease.Stats, error) {
	return d.Stats(ctx, &resourcelease.StatsRequest{})
}

// sources feeds the diagnostics page from the dispatcher's pieces;
// /demo/enqueue goes through the RPC client.
func (d *dispatcherRole) sources(client *transport.Client) diagnostics.Sources {
	repl := d.Replicator() // nil on postgres, whose log is the database's
	bp := d.BackpressureDiagnostics()
	return diagnostics.Sources{
		Stats:               d.stats,
		Enqueue:             client.Enqueue,
		Peers:               func() any { return d.PeerHealth().Diagnostics() },
		Backpressure:        bp.Latest,
		BackpressureHistory: bp.History,
		BackpressureState:   func() any { return d.Backpressure().State() },
		Recent:              d.RecentEvents().Events,
		LastSequence:        d.Events().LastSequence,
		Sinks: func() any {
			if repl == nil {
				return []any{}
			}
			return repl.SinkStatuses()
		},
		Totals: d.totals.Totals,
		Backlog: func(ctx context.Context) (*resourcelease.Backlog, error) {
			return d.Backlog(ctx, diagnostics.BacklogPartitions)
		},
	}
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
