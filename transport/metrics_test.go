package transport_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

// TestHandlerMetrics checks rpc_requests_total and
// rpc_request_duration_seconds, including refusals by middleware and
// requests whose procedure is not served.
func TestHandlerMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewPedanticRegistry()
	refuseEnqueue := transport.OnlyProcedures(func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { transport.WriteError(w, resourcelease.ErrRateLimited) })
	}, transport.Procedure("", transport.VerbEnqueue))
	h := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{Registerer: reg,
		Middleware: []func(http.Handler) http.Handler{refuseEnqueue}})

	requireOK(t, call(h, transport.VerbStats, ""))
	requireOK(t, call(h, transport.VerbStats, ""))
	requireOK(t, call(h, transport.VerbLease, ""))
	call(h, transport.VerbLease, `{"waitMs":-1}`)
	call(h, transport.VerbEnqueue, `{}`)
	serve(h, http.MethodPost, hdr{transport.HeaderProcedure: "attacker::" + strings.Repeat("x", 100)}, "")
	serve(h, http.MethodGet, hdr{}, "")

	const want = `
# HELP rpc_requests_total RPC requests handled, by procedure and wire status (ok for success).
# TYPE rpc_requests_total counter
rpc_requests_total{procedure="resourcelease::enqueue",status="resource-exhausted"} 1
rpc_requests_total{procedure="resourcelease::lease",status="invalid-argument"} 1
rpc_requests_total{procedure="resourcelease::lease",status="ok"} 1
rpc_requests_total{procedure="resourcelease::stats",status="ok"} 2
rpc_requests_total{procedure="unknown",status="invalid-argument"} 1
rpc_requests_total{procedure="unknown",status="not-found"} 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want), transport.MetricRequests))
	require.Equal(t, 4, testutil.CollectAndCount(reg, transport.MetricRequestDuration), "one histogram per procedure label")
	mfs, err := reg.Gather()
	require.NoError(t, err)
	var statsCount uint64
	for _, mf := range mfs {
		if mf.GetName() != transport.MetricRequestDuration {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == "resourcelease::stats" {
				statsCount = m.GetHistogram().GetSampleCount()
			}
		}
	}
	require.EqualValues(t, 2, statsCount)
}

// TestHandlerMetricsRegistries checks that handlers on two registries do not
// collide, that handlers on one registry share its metrics, and that a
// conflicting metric is an error.
func TestHandlerMetricsRegistries(t *testing.T) {
	t.Parallel()
	reg1, reg2 := prometheus.NewPedanticRegistry(), prometheus.NewPedanticRegistry()
	a := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{Registerer: reg1})
	b := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{Registerer: reg2})
	c := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{Registerer: reg1})
	requireOK(t, call(a, transport.VerbStats, ""))
	requireOK(t, call(b, transport.VerbStats, ""))
	requireOK(t, call(b, transport.VerbStats, ""))
	requireOK(t, call(c, transport.VerbStats, ""))
	count := func(reg *prometheus.Registry) float64 {
		mfs, err := reg.Gather()
		require.NoError(t, err)
		for _, mf := range mfs {
			if mf.GetName() == transport.MetricRequests {
				return mf.GetMetric()[0].GetCounter().GetValue()
			}
		}
		return 0
	}
	require.Equal(t, 2.0, count(reg1), "a and c share reg1")
	require.Equal(t, 2.0, count(reg2))

	reg3 := prometheus.NewRegistry()
	reg3.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: transport.MetricRequests, Help: "something else"}))
	_, err := transport.NewHandler(&leasetest.FakeDispatcher{}, transport.HandlerConfig{Registerer: reg3, Logger: quietLogger})
	require.ErrorContains(t, err, "register metrics")
}
