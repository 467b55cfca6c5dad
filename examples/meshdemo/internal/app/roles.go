package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/tracing"
	"github.com/leasemesh/leasemesh/transport"
	"github.com/leasemesh/leasemesh/worker"
)

// CodeSimulatedFailure is the error code of the failures workers simulate.
const CodeSimulatedFailure = "meshdemo.simulated_failure"

// clientMetrics instrument the RPC clients of a process (seeder, workers,
// /demo/enqueue): requests by procedure and status, and their latency.
type clientMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	m := &clientMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rpc_client_requests_total",
			Help: "RPC calls made by this process's clients, by procedure and status (ok for success).",
		}, []string{"procedure", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rpc_client_request_duration_seconds",
			Help:    "Latency of RPC calls made by this process's clients (lease long-polls included), by procedure.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"procedure"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// roundTrip records each call by its Rpc-Procedure header and its outcome:
// "ok", the status of an error response (transport.ResponseStatus: from its
// headers, else its HTTP code), or "unavailable" when the dispatcher could
// not be reached.
func (m *clientMetrics) roundTripper(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		proc := r.Header.Get(transport.HeaderProcedure)
		start := time.Now()
		resp, err := next.RoundTrip(r)
		status := "ok"
		switch {
		case err != nil:
			status = string(resourcelease.StatusUnavailable)
		case resp.StatusCode != http.StatusOK:
			// The headers are the server's to fill: only a protocol status
			// becomes a label value, so a misbehaving server cannot grow
			// the series without bound.
			status = string(transport.ResponseStatus(resp))
		}
		m.requests.WithLabelValues(proc, status).Inc()
		m.duration.WithLabelValues(proc).Observe(time.Since(start).Seconds())
		return resp, err
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// newClient returns an RPC client of the dispatchers at urls (spreading its
// calls over them and failing over from one that is down), calling as
// caller with the bearer token (none when "") and, for an https url,
// tlsCfg; with tracing on, each call is a client span whose context goes
// out in its headers.
func newClient(urls []string, cfg *config.Config, caller, token string, tlsCfg *tls.Config, m *clientMetrics, tc tracing.Config) (*transport.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = transport.DefaultMaxIdleConnsPerHost
	tr.TLSClientConfig = tlsCfg.Clone() // each Transport adds its own ALPN protocols to it
	return transport.NewClient("", transport.ClientConfig{
		URLs:    urls,
		Service: cfg.ServiceName, Namespace: cfg.Namespace, Caller: caller, PeerID: caller, BearerToken: token,
		HTTPClient: &http.Client{Transport: tracing.Transport(tc, m.roundTripper(tr))},
	})
}

// seeder enqueues demo.order items through the RPC client.
type seeder struct {
	client   resourcelease.Dispatcher
	interval time.Duration
	logger   *slog.Logger
	runID    string

	enqueued, errors atomic.Int64
}

func newSeeder(client resourcelease.Dispatcher, cfg *config.Config, logger *slog.Logger, reg prometheus.Registerer) (*seeder, error) {
	s := &seeder{client: client, interval: cfg.SeederInterval, logger: logger, runID: uuid.NewString()[:8]}
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshdemo_seeder_enqueued_total", Help: "Items the seeder enqueued (acknowledged by the dispatcher)."},
			func() float64 { return float64(s.enqueued.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshdemo_seeder_errors_total", Help: "Enqueue attempts of the seeder that failed (and were retried)."},
			func() float64 { return float64(s.errors.Load()) }),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// SeedItem returns the n-th demo item (n from 1): order-0001..., partitions
// tenant-1..3, priority high for every fifth.
func SeedItem(n int, runID string) *resourcelease.Item {
	tenant := "tenant-" + strconv.Itoa((n-1)%3+1)
	prio := "normal"
	if n%5 == 0 {
		prio = "high"
	}
	id := fmt.Sprintf("order-%04d", n)
	return &resourcelease.Item{
		ResourceType: "demo.order", ResourceID: id, PartitionKey: tenant, PayloadEncoding: "application/json",
		Body:       fmt.Appendf(nil, `{"orderId":%q,"tenant":%q,"amount":%d}`, id, tenant, 10+n%90),
		Attributes: map[string]string{"tenant": tenant, "priority": prio},
		// The same request id on every retry of one item: a retry after a
		// lost acknowledgement is deduplicated, never enqueued twice.
		RequestID: "seed-" + runID + "-" + id,
	}
}

// run enqueues one item every interval until ctx ends. A failed enqueue is
// retried (same item, same request id) with backoff until it is acknowledged.
func (s *seeder) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for n := 1; ; n++ {
		item := SeedItem(n, s.runID)
		backoff := 100 * time.Millisecond
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := s.client.Enqueue(cctx, &resourcelease.EnqueueRequest{Payload: item})
			cancel()
			if err == nil {
				s.enqueued.Add(1)
				s.logger.Info("seeded", "resourceId", item.ResourceID, "partition", item.PartitionKey,
					"priority", item.Attributes["priority"], "sequenceId", resp.SequenceID, "duplicate", resp.Duplicate, "pending", resp.Stats.PendingCount)
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.errors.Add(1)
			s.logger.Warn("seeding failed; retrying", "resourceId", item.ResourceID, "err", err, "retryIn", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sleep waits d or until ctx ends; it reports whether it waited the full d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// workerRole is one worker.Worker with its own client (its peer id is its
// Rpc-Caller).
type workerRole struct {
	logger *slog.Logger
	peer   string
	client *transport.Client
	worker *worker.Worker
}

func newWorkerRole(urls []string, peer string, cfg *config.Config, tlsCfg *tls.Config, logger *slog.Logger, m *clientMetrics, reg prometheus.Registerer, tc tracing.Config) (*workerRole, error) {
	client, err := newClient(urls, cfg, peer, cfg.WorkerToken, tlsCfg, m, tc)
	if err != nil {
		return nil, err
	}
	wl := logger.With("peer", peer)
	failRate, processing := cfg.WorkerFailureRate, cfg.WorkerProcessing
	w, err := worker.New(client, worker.Config{
		PeerID:      peer,
		Concurrency: cfg.WorkerConcurrency,
		LeaseWait:   5 * time.Second,
		MaxBackoff:  2 * time.Second,
		Logger:      logger,
		// With tracing on, each delivery is a span in the producer's trace.
		Handler: tracing.Work(tc, func(ctx context.Context, l *resourcelease.Lease) error {
			if !sleep(ctx, processing) {
				return ctx.Err()
			}
			if rand.Float64() < failRate {
				wl.Debug("failing (simulated)", "resourceId", l.Payload.ResourceID, "attempt", l.Attempt)
				return &resourcelease.Error{Status: resourcelease.StatusInternal, Code: CodeSimulatedFailure, Message: "simulated failure"}
			}
			wl.Debug("completing", "resourceId", l.Payload.ResourceID, "attempt", l.Attempt)
			return nil
		}),
	})
	if err != nil {
		_ = client.Close()
		return nil, err
	}
	wr := &workerRole{logger: logger, peer: peer, client: client, worker: w}
	labels := prometheus.Labels{"peer": peer}
	stat := func(name, help string, f func(worker.Stats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(f(w.Stats())) })
	}
	for _, c := range []prometheus.Collector{
		stat("meshdemo_worker_leased_total", "Leases this worker received.", func(s worker.Stats) int64 { return s.Leased }),
		stat("meshdemo_worker_completed_total", "Leases this worker completed.", func(s worker.Stats) int64 { return s.Completed }),
		stat("meshdemo_worker_failed_total", "Leases this worker failed with requeue.", func(s worker.Stats) int64 { return s.Failed }),
		stat("meshdemo_worker_lost_total", "Leases this worker lost (expired or taken over).", func(s worker.Stats) int64 { return s.Lost }),
		stat("meshdemo_worker_possibly_settled_total", "Leases whose settle was retried after a lost answer and found the token unknown: most likely settled by the first try (not lost).", func(s worker.Stats) int64 { return s.PossiblySettled }),
		stat("meshdemo_worker_errors_total", "Dispatcher calls of this worker that failed.", func(s worker.Stats) int64 { return s.Errors }),
	} {
		if err := reg.Register(c); err != nil {
			_ = client.Close()
			return nil, err
		}
	}
	return wr, nil
}

// run works leases until ctx ends; the Worker then requeues what it holds.
func (w *workerRole) run(ctx context.Context) {
	if err := w.worker.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		w.logger.Error("worker stopped", "peer", w.peer, "err", err)
	}
}
