package transport

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names exported by a handler given a Registerer.
const (
	// MetricRequests counts requests by procedure and status ("ok" for success).
	MetricRequests = "rpc_requests_total"
	// MetricRequestDuration is the request latency histogram by procedure.
	MetricRequestDuration = "rpc_request_duration_seconds"
)

// unknownProcedureLabel is the procedure label of requests whose procedure is
// missing or not served, so that arbitrary header values cannot blow up the
// metrics' cardinality.
const unknownProcedureLabel = "unknown"

// okStatusLabel is the status label of successful requests.
const okStatusLabel = "ok"

type rpcMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// newRPCMetrics registers the RPC metrics with reg. When reg already holds
// metrics of the same names and shape (a second handler on the same registry),
// they are shared.
func newRPCMetrics(reg prometheus.Registerer) (*rpcMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricRequests,
		Help: "RPC requests handled, by procedure and wire status (ok for success).",
	}, []string{"procedure", "status"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricRequestDuration,
		Help:    "RPC request latency in seconds, by procedure.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"procedure"})
	var err error
	if requests, err = register(reg, requests); err != nil {
		return nil, err
	}
	if duration, err = register(reg, duration); err != nil {
		return nil, err
	}
	return &rpcMetrics{requests: requests, duration: duration}, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	var zero C
	return zero, fmt.Errorf("transport: register metrics: %w", err)
}
