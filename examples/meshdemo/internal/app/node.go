package app

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/diagnostics"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/tracing"
	"github.com/leasemesh/leasemesh/transport"
)

// StatusInterval is how often a node prints its status line.
const StatusInterval = 5 * time.Second

// shutdownGrace bounds each shutdown step so the process exits within a few
// seconds even when a peer misbehaves.
const shutdownGrace = 3 * time.Second

// Node is a running demo process: its roles, listeners and the resources
// they hold. Create it with Start and stop it with Close.
type Node struct {
	cfg    *config.Config
	logger *slog.Logger
	reg    *prometheus.Registry

	// Token is the admin role's bearer token, guarding the admin procedures
	// and the destructive control-plane calls ("" when they are open, on a
	// loopback-only node).
	Token string
	// TokenGenerated reports whether Token was generated at start.
	TokenGenerated bool
	// Warnings are the security warnings logged at start (a dispatcher
	// reachable beyond loopback with open roles or without TLS).
	Warnings []string

	auth *demoAuth // nil without the dispatcher role

	// tracing is the process's tracing (off without otlpEndpoint);
	// stopTracing flushes and stops its exporter (nil when off).
	tracing     tracing.Config
	stopTracing func(context.Context) error

	rpcLn   net.Listener
	httpLns []net.Listener
	servers []*http.Server
	// serveCtx ends the long-lived requests (SSE streams) at shutdown.
	serveCtx    context.Context
	serveCancel context.CancelFunc
	serveErr    chan error

	disp    *dispatcherRole // nil without the dispatcher role
	history *diagnostics.History
	seeder  *seeder
	workers []*workerRole
	client  *transport.Client // the RPC client of the seeder and /demo/enqueue
	metrics *clientMetrics
	// clientURLs are what the seeder and workers dial.
	clientURLs []string

	rolesCtx    context.Context
	rolesCancel context.CancelFunc
	rolesWG     sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
}

// RPCURL returns the URL the dispatcher serves RPC on (with the port actually
// bound), or "" without the dispatcher role.
func (n *Node) RPCURL() string {
	if n.rpcLn == nil {
		return ""
	}
	return n.cfg.RPC.Scheme() + "://" + displayAddr(n.cfg.RPC.Addr, n.rpcLn.Addr()) + n.cfg.RPCPath
}

// HTTPURLs returns the base URLs of the diagnostics / metrics listeners, with
// the ports actually bound.
func (n *Node) HTTPURLs() []string {
	out := make([]string, len(n.httpLns))
	for i, ln := range n.httpLns {
		host := displayAddr(n.cfg.URLs[i].Addr, ln.Addr())
		if u := n.cfg.URLs[i].URL; strings.HasPrefix(u, "http://localhost") || strings.HasPrefix(u, "https://localhost") {
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			host = "localhost:" + port
		}
		out[i] = n.cfg.URLs[i].Scheme() + "://" + host
	}
	return out
}

// displayAddr is the host:port to show for a listener: the configured host
// (or 127.0.0.1 for a wildcard bind, which is what a local browser dials)
// and the bound port.
func displayAddr(configured string, bound net.Addr) string {
	host, _, _ := net.SplitHostPort(configured)
	_, port, _ := net.SplitHostPort(bound.String())
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// unusable wraps a listen failure as the configuration mistake it is.
func unusable(field, value string, err error) error {
	if inner := errors.Unwrap(err); inner != nil {
		err = inner // "bind: address already in use" rather than the whole *net.OpError
	}
	return &config.ConfigValidationError{Field: field, Err: fmt.Errorf("invalid value %q: cannot listen: %w", value, err)}
}

// Start binds the listeners, opens storage and starts every configured role.
// On error everything already started is stopped again.
func Start(ctx context.Context, cfg *config.Config, logger *slog.Logger) (n *Node, err error) {
	n = &Node{cfg: cfg, logger: logger, reg: prometheus.NewRegistry(), serveErr: make(chan error, 4)}
	n.serveCtx, n.serveCancel = context.WithCancel(context.WithoutCancel(ctx))
	n.rolesCtx, n.rolesCancel = context.WithCancel(context.WithoutCancel(ctx))
	defer func() {
		if err != nil {
			n.Close()
			n = nil
		}
	}()
	n.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// Bind first: an unusable address is a configuration mistake, reported
	// before anything is opened.
	var lc net.ListenConfig
	if cfg.Has(config.RoleDispatcher) {
		if n.rpcLn, err = lc.Listen(ctx, "tcp", cfg.RPC.Addr); err != nil {
			return n, unusable(config.Section+":rpcUrl", cfg.RPC.Raw, err)
		}
	}
	for _, l := range cfg.URLs {
		ln, lerr := lc.Listen(ctx, "tcp", l.Addr)
		if lerr != nil {
			return n, unusable("urls", l.Raw, lerr)
		}
		n.httpLns = append(n.httpLns, ln)
	}

	// The admin token guards the dispatcher's destructive calls; it is
	// generated when a dispatcher process listens beyond loopback without
	// one. Producer and worker tokens are the operator's to give: a
	// generated one would lock out the seeders and workers of other
	// processes, so an open role on a public bind is a loud warning instead.
	if cfg.Has(config.RoleDispatcher) {
		n.Token = cfg.ControlToken
		if n.Token == "" && cfg.Public() {
			b := make([]byte, 16)
			_, _ = rand.Read(b)
			n.Token, n.TokenGenerated = hex.EncodeToString(b), true
		}
		n.auth = newDemoAuth(cfg.ProducerToken, cfg.WorkerToken, n.Token)
		n.Warnings = securityWarnings(cfg, n.auth)
		for _, w := range n.Warnings {
			logger.Warn("meshdemo: SECURITY: " + w)
		}
	}
	rpcTLS, err := cfg.ServerTLS(true)
	if err != nil {
		return n, &config.ConfigValidationError{Field: config.Section + ":tlsCertFile", Err: err}
	}
	httpTLS, err := cfg.ServerTLS(false)
	if err != nil {
		return n, &config.ConfigValidationError{Field: config.Section + ":tlsCertFile", Err: err}
	}
	clientTLS, err := cfg.ClientTLS()
	if err != nil {
		return n, &config.ConfigValidationError{Field: config.Section + ":tlsCaFile", Err: err}
	}

	if n.tracing, n.stopTracing, err = newTracing(ctx, cfg); err != nil {
		return n, err
	}

	n.clientURLs = cfg.RPCClientURLs
	if n.rpcLn != nil && strings.HasSuffix(cfg.RPC.Addr, ":0") && cfg.Sources["rpcClientUrl"] == config.SourceDerived {
		// A free port was asked for: dial the one we got.
		n.clientURLs = []string{n.RPCURL()}
	}
	if cfg.Has(config.RoleSeeder) || cfg.Has(config.RoleWorker) || cfg.Has(config.RoleDiagnostics) {
		if n.metrics, err = newClientMetrics(n.reg); err != nil {
			return n, err
		}
		caller := "mesh-seeder"
		if !cfg.Has(config.RoleSeeder) {
			caller = "mesh-diagnostics"
		}
		// The seeder and /demo/enqueue produce; a worker-only node uses it
		// for the status line's stats, which any role's token may read.
		token := cmp.Or(cfg.ProducerToken, cfg.WorkerToken)
		if n.client, err = newClient(n.clientURLs, cfg, caller, token, clientTLS, n.metrics, n.tracing); err != nil {
			return n, err
		}
	}

	var controlH http.Handler
	if cfg.Has(config.RoleDispatcher) {
		if n.disp, err = startDispatcher(ctx, cfg, n.auth, logger, n.reg, n.tracing); err != nil {
			return n, err
		}
		controlH = n.disp.ControlHandler()
		rpc := n.disp.Handler()
		mux, rerr := newMux([]route{
			{cfg.RPCPath, rpc},
			{control.DefaultPrefix + "/", controlH},
			{"GET /metrics", n.metricsHandler()},
			{"GET /healthz", http.HandlerFunc(n.healthz)},
			{"GET /readyz", http.HandlerFunc(n.readyz)},
		})
		if rerr != nil {
			// config.Load rejects such paths; this keeps a gap in that check
			// from panicking the process with storage open.
			return n, &config.ConfigValidationError{Field: config.Section + ":rpcUrl", Err: fmt.Errorf("invalid value %q: cannot serve RPC there: %w", cfg.RPC.Raw, rerr)}
		}
		n.serve(n.rpcLn, mux, rpcTLS, true)
	}

	metrics := n.metricsHandler()
	var httpHandler http.Handler
	if cfg.Has(config.RoleDiagnostics) {
		n.history = diagnostics.NewHistory(300)
		httpHandler, err = diagnostics.NewHandler(diagnostics.Options{
			Sources: n.disp.sources(n.client),
			Info: diagnostics.Info{
				ServiceName: cfg.ServiceName, Namespace: cfg.Namespace, RPCURL: n.RPCURL(),
				Roles: strings.Split(cfg.Roles.String(), ","), Storage: string(cfg.Storage),
				DataDirectory: n.disp.dataDir, StartedAt: time.Now().UTC(),
				ControlProtected: n.Token != "",
				Fairness:         string(cfg.Fairness), MaxActivePerPartition: cfg.MaxActivePerPartition,
			},
			History: n.history, Control: controlH, Metrics: metrics, Logger: logger,
		})
		if err != nil {
			return n, err
		}
		httpHandler = n.auth.guardEnqueue(httpHandler)
		n.rolesWG.Go(func() { n.history.Run(n.rolesCtx, time.Second, n.disp.stats) })
	} else {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", metrics)
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "meshdemo node (roles %s): metrics at /metrics\n", cfg.Roles)
		})
		httpHandler = mux
	}
	for _, ln := range n.httpLns {
		n.serve(ln, httpHandler, httpTLS, cfg.Has(config.RoleDiagnostics))
	}

	if cfg.Has(config.RoleSeeder) {
		if n.seeder, err = newSeeder(n.client, cfg, logger, n.reg); err != nil {
			return n, err
		}
		n.rolesWG.Go(func() { n.seeder.run(n.rolesCtx) })
	}
	if cfg.Has(config.RoleWorker) {
		for _, peer := range cfg.WorkerPeerIDs {
			w, werr := newWorkerRole(n.clientURLs, peer, cfg, clientTLS, logger, n.metrics, n.reg, n.tracing)
			if werr != nil {
				return n, werr
			}
			n.workers = append(n.workers, w)
			n.rolesWG.Go(func() { w.run(n.rolesCtx) })
		}
	}
	return n, nil
}

// route is one pattern of an http.ServeMux and its handler.
type route struct {
	pattern string
	handler http.Handler
}

// newMux registers routes on a new http.ServeMux, turning the panic
// ServeMux.Handle raises on an invalid or conflicting pattern into an error.
func newMux(routes []route) (mux *http.ServeMux, err error) {
	mux = http.NewServeMux()
	defer func() {
		if p := recover(); p != nil {
			// The conflict description spans lines; keep the error on one.
			mux, err = nil, errors.New(strings.Join(strings.Fields(fmt.Sprint(p)), " "))
		}
	}()
	for _, r := range routes {
		mux.Handle(r.pattern, r.handler)
	}
	return mux, nil
}

func (n *Node) metricsHandler() http.Handler {
	return promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg})
}

// sideTimeout bounds whole requests and responses on a server that serves
// no long-poll or stream (a node without the diagnostics role: /metrics).
const sideTimeout = 30 * time.Second

// serve runs an HTTP server on ln until Close, with transport.NewServer's
// protections (header, body and write deadlines that spare long-polls,
// header size, connection count) and, when tlsCfg is set, TLS. long says
// whether the server carries long-polls or streams; one that does not also
// gets whole-request read and write timeouts.
func (n *Node) serve(ln net.Listener, h http.Handler, tlsCfg *tls.Config, long bool) {
	srv, err := transport.NewServer(h, transport.ServerConfig{TLS: tlsCfg, Logger: n.logger})
	if err != nil { // only for a negative setting, and the demo sets none
		n.serveErr <- fmt.Errorf("serving %s: %w", ln.Addr(), err)
		return
	}
	srv.BaseContext = func(net.Listener) context.Context { return n.serveCtx }
	if !long {
		srv.ReadTimeout, srv.WriteTimeout = sideTimeout, sideTimeout
	}
	n.servers = append(n.servers, srv)
	go func() {
		var err error
		if tlsCfg != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.serveErr <- fmt.Errorf("serving %s: %w", ln.Addr(), err)
		}
	}()
}

// Wait blocks until ctx ends (nil) or a server fails (its error), printing
// a status line every StatusInterval to out.
func (n *Node) Wait(ctx context.Context, out io.Writer) error {
	t := time.NewTicker(StatusInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-n.serveErr:
			return err
		case <-t.C:
			fmt.Fprintln(out, n.StatusLine(ctx))
		}
	}
}

// StatusLine is the one-line summary printed every few seconds: the queue's
// counts (from the local dispatcher, or over RPC), then what this node's
// dispatcher, seeder and workers did.
func (n *Node) StatusLine(ctx context.Context) string {
	var b strings.Builder
	b.WriteString("status:")
	var st *resourcelease.Stats
	var err error
	if n.disp != nil {
		st, err = n.disp.stats(ctx)
	} else if n.client != nil {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err = n.client.Stats(sctx, &resourcelease.StatsRequest{})
		cancel()
	}
	switch {
	case err != nil:
		fmt.Fprintf(&b, " dispatcher unreachable (%s)", resourcelease.CodeOf(err))
	case st != nil:
		bp := "off"
		if st.BackpressureActive {
			bp = "ON"
		}
		fmt.Fprintf(&b, " pending=%d active=%d dead-lettered=%d backpressure=%s", st.PendingCount, st.ActiveLeaseCount, st.DeadLetterCount, bp)
	}
	if n.disp != nil && n.disp.PeerHealth() != nil {
		s := n.disp.PeerHealth().Summary()
		fmt.Fprintf(&b, " | peers: eligible=%d unhealthy=%d pending-reassignments=%d", s.EligiblePeers, s.UnhealthyPeers, s.PendingReassignments)
	}
	n.writeActivity(&b, " | ")
	return b.String()
}

// FinalStatusLine is the status line printed after Close: what this node's
// dispatcher, seeder and workers did (the queue itself is gone or remote).
func (n *Node) FinalStatusLine() string {
	var b strings.Builder
	b.WriteString("final:")
	n.writeActivity(&b, " ")
	return b.String()
}

// writeActivity writes what this node's dispatcher, seeder and workers did,
// the part StatusLine and FinalStatusLine share. sep goes before the
// dispatcher's events: " | " after the queue's counts, " " after "final:".
func (n *Node) writeActivity(b *strings.Builder, sep string) {
	if n.disp != nil {
		t := n.disp.totals.Totals()
		fmt.Fprintf(b, "%sevents: enqueued=%d completed=%d failed=%d expired=%d dead-lettered=%d", sep, t.Enqueued, t.Completed, t.Failed, t.Expired, t.DeadLettered)
	}
	if n.seeder != nil {
		fmt.Fprintf(b, " | seeder: enqueued=%d errors=%d", n.seeder.enqueued.Load(), n.seeder.errors.Load())
	}
	for _, w := range n.workers {
		s := w.worker.Stats()
		fmt.Fprintf(b, " | %s: completed=%d failed=%d lost=%d", w.peer, s.Completed, s.Failed, s.Lost)
	}
}

// PrintBanner says where everything is.
func (n *Node) PrintBanner(out io.Writer) {
	c := n.cfg
	fmt.Fprintf(out, "meshdemo: roles %s\n", c.Roles)
	row := func(k, format string, args ...any) { fmt.Fprintf(out, "  %-16s %s\n", k, fmt.Sprintf(format, args...)) }
	if n.disp != nil {
		row("RPC endpoint", "%s (service %s, procedures %s::*)", n.RPCURL(), c.ServiceName, c.Namespace)
		switch c.Storage {
		case config.StorageSQLite:
			row("Storage", "sqlite: %s, %s", filepath.Join(n.disp.dataDir, "replication.db"), filepath.Join(n.disp.dataDir, "deterministic.db"))
		case config.StoragePostgres:
			row("Storage", "%s (shared by every dispatcher on it)", n.disp.Location())
		default:
			row("Storage", "memory (nothing survives a restart)")
		}
		row("Backpressure", "high %d / low %d, cooldown %s, mode %s; enqueue limit %s (%s under backpressure)",
			c.HighWatermark, c.LowWatermark, c.BackpressureCooldown, c.BackpressureMode, perSecond(c.RateLimitPerSecond), perSecond(c.BackpressureRateLimitPerSecond))
	}
	for _, u := range n.HTTPURLs() {
		if n.cfg.Has(config.RoleDiagnostics) {
			row("Diagnostics UI", "%s/", u)
			row("Demo helpers", "%s/demo/{enqueue,lease-health,backpressure,replication}", u)
			row("Control plane", "%s%s/", u, control.DefaultPrefix)
		}
		row("Metrics", "%s/metrics", u)
	}
	if n.disp != nil && !n.cfg.Has(config.RoleDiagnostics) {
		row("Control plane", "%s%s/ (on the RPC port)", strings.TrimSuffix(n.RPCURL(), c.RPCPath), control.DefaultPrefix)
	}
	if n.seeder != nil {
		row("Seeder", "demo.order every %s via %s", c.SeederInterval, strings.Join(n.clientURLs, ", "))
	}
	if len(n.workers) > 0 {
		row("Workers", "%s via %s (lease %s, heartbeat %s, ~%.0f%% failures)", strings.Join(c.WorkerPeerIDs, ", "), strings.Join(n.clientURLs, ", "), c.LeaseDuration, c.HeartbeatInterval, c.WorkerFailureRate*100)
	}
	if c.OTLPEndpoint != "" {
		row("Tracing", "OTLP/HTTP to %s (service.name %s)", otlpTarget(c.OTLPEndpoint), c.ServiceName)
	}
	switch {
	case n.TokenGenerated:
		row("Admin token", "%s (generated: a listener is not loopback-only; send Authorization: Bearer <token> to drain/restore/redrive/purge)", n.Token)
	case n.Token != "":
		row("Admin token", "configured (admin calls need Authorization: Bearer <token>)")
	}
	if n.auth != nil {
		switch o := n.auth.openRoles(); len(o) {
		case 0:
			row("Open roles", "none: every call needs its role's bearer token")
		case len(transport.Roles()):
			row("Open roles", "all (no token is set, and every listener is loopback-only)")
		default:
			row("Open roles", "%s (need no token; the others need their role's)", strings.Join(o, ", "))
		}
	}
	if n.disp != nil && c.RPC.TLS {
		mode := "TLS"
		if c.TLSClientCAFile != "" {
			mode = "mutual TLS (client certificates from " + c.TLSClientCAFile + ")"
		}
		row("RPC security", "%s, certificate %s", mode, c.TLSCertFile)
	}
	for _, w := range n.Warnings {
		fmt.Fprintf(out, "  WARNING: %s\n", w)
	}
	fmt.Fprintln(out, "  Ctrl-C to stop.")
}

func perSecond(r float64) string {
	if r <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%g/s", r)
}

// Close stops the node: seeder and workers first (workers requeue their
// in-flight leases through the still-running dispatcher), then the dispatcher,
// the servers and storage. It is safe to call twice.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		n.rolesCancel()
		n.rolesWG.Wait()
		if n.disp != nil {
			// Wakes long-polls with unavailable, so the servers drain
			// quickly, then flushes and closes storage.
			errs = append(errs, n.disp.Close())
		}
		n.serveCancel()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		for _, srv := range n.servers {
			if err := srv.Shutdown(sctx); err != nil {
				_ = srv.Close()
			}
		}
		cancel()
		for _, ln := range n.httpLns {
			_ = ln.Close()
		}
		if n.rpcLn != nil {
			_ = n.rpcLn.Close()
		}
		for _, w := range n.workers {
			_ = w.client.Close()
		}
		if n.client != nil {
			_ = n.client.Close()
		}
		if n.stopTracing != nil {
			// Last: the spans of everything above are flushed too.
			tctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			if err := n.stopTracing(tctx); err != nil {
				n.logger.Warn("meshdemo: flushing traces", "endpoint", n.cfg.OTLPEndpoint, "err", err)
			}
			cancel()
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// healthz is the liveness endpoint of the dispatcher's listener: the
// process serves HTTP (a load balancer restarts it when this fails).
func (n *Node) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyz is the readiness endpoint: 200 while the dispatcher can serve
// (on postgres: the database answers, within two seconds), 503 with the
// reason otherwise, so a load balancer sends calls elsewhere while this
// dispatcher's database connection is down.
func (n *Node) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := n.disp.Ready(ctx); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", strings.Join(strings.Fields(err.Error()), " "))
		return
	}
	fmt.Fprintln(w, "ready")
}
