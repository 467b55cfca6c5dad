package peerhealth_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{})
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(tr))

	tr.RecordAssignment("a", token(1), nil, clk.Now())
	tr.RecordAssignment("b", token(2), nil, clk.Now())
	tr.RecordAssignment("b", token(3), nil, clk.Now())
	tr.RecordHeartbeat("a", token(1), 3, clk.Now())
	tr.RecordHeartbeat("a", token(1), 3, clk.Now())
	tr.RecordRelease("a", token(1), resourcelease.ReleaseCompleted, clk.Now())
	tr.RecordRelease("b", token(2), resourcelease.ReleaseRequeued, clk.Now())
	tr.RecordDisconnect("b", token(3), "lease expired", clk.Now())
	tr.RecordDisconnect("c", token(4), "", clk.Now())
	tr.RecordAssignment("d", token(7), nil, clk.Now())
	tr.RecordRelease("d", token(7), resourcelease.ReleaseDeadLettered, clk.Now())
	tr.RecordRelease("d", token(8), resourcelease.ReleaseGivenBack, clk.Now())
	for i := range 3 { // e's breaker opens
		tr.RecordDisconnect("e", token(int64(10+i)), "lease expired", clk.Now().Add(time.Duration(i)*time.Second))
	}

	const want = `
# HELP peerhealth_assignments_total Leases granted to peers.
# TYPE peerhealth_assignments_total counter
peerhealth_assignments_total 4
# HELP peerhealth_breaker_trips_total Times a peer's circuit breaker opened: after consecutive lease expiries, or on an expiry while half-open.
# TYPE peerhealth_breaker_trips_total counter
peerhealth_breaker_trips_total 1
# HELP peerhealth_breakers Number of known peers by the state of their circuit breaker (closed, open or half-open).
# TYPE peerhealth_breakers gauge
peerhealth_breakers{state="closed"} 4
peerhealth_breakers{state="half-open"} 0
peerhealth_breakers{state="open"} 1
# HELP peerhealth_disconnects_total Leases that expired without being settled, by reason.
# TYPE peerhealth_disconnects_total counter
peerhealth_disconnects_total{reason="lease expired"} 4
peerhealth_disconnects_total{reason="unspecified"} 1
# HELP peerhealth_evictions_total Peers evicted to stay within MaxPeers, by state (idle or holding leases).
# TYPE peerhealth_evictions_total counter
peerhealth_evictions_total{state="holding"} 0
peerhealth_evictions_total{state="idle"} 0
# HELP peerhealth_heartbeats_total Lease heartbeats received from peers.
# TYPE peerhealth_heartbeats_total counter
peerhealth_heartbeats_total 2
# HELP peerhealth_peers_healthy Number of known peers that are healthy.
# TYPE peerhealth_peers_healthy gauge
peerhealth_peers_healthy 2
# HELP peerhealth_peers_unhealthy Number of known peers that are unhealthy.
# TYPE peerhealth_peers_unhealthy gauge
peerhealth_peers_unhealthy 3
# HELP peerhealth_releases_total Leases that ended without expiring, by outcome (completed, requeued, dead_lettered or given_back).
# TYPE peerhealth_releases_total counter
peerhealth_releases_total{outcome="completed"} 1
peerhealth_releases_total{outcome="dead_lettered"} 1
peerhealth_releases_total{outcome="given_back"} 1
peerhealth_releases_total{outcome="requeued"} 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want)))

	// Gauges are evaluated at scrape time: "a" and "d" are idle (still
	// healthy) and "b" and "c" heal when heard from again.
	tr.RecordAssignment("b", token(5), nil, clk.Now())
	tr.RecordAssignment("c", token(6), nil, clk.Now())
	assert.Equal(t, 4.0, testutil.ToFloat64(gauge(tr, "peerhealth_peers_healthy")))
	clk.Advance(time.Minute)
	assert.Equal(t, 2.0, testutil.ToFloat64(gauge(tr, "peerhealth_peers_healthy")), "b and c stopped heartbeating")
	assert.Equal(t, 3.0, testutil.ToFloat64(gauge(tr, "peerhealth_peers_unhealthy")))
}

func TestDisconnectReasonLabelsAreBounded(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{})
	for i := range 100 {
		tr.RecordDisconnect("p", token(int64(i+1)), fmt.Sprintf("reason %d", i), clk.Now())
	}
	tr.RecordDisconnect("p", token(1000), "bad \xff utf-8", clk.Now())

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(tr))
	mfs, err := reg.Gather()
	require.NoError(t, err, "every label value must be valid")
	for _, mf := range mfs {
		if mf.GetName() != "peerhealth_disconnects_total" {
			continue
		}
		assert.LessOrEqual(t, len(mf.GetMetric()), 33)
		var total float64
		for _, m := range mf.GetMetric() {
			total += m.GetCounter().GetValue()
		}
		assert.Equal(t, 101.0, total, "no disconnect goes uncounted")
		return
	}
	t.Fatal("peerhealth_disconnects_total not gathered")
}

// gauge wraps one of tr's gauges as a collector for testutil.ToFloat64.
func gauge(tr *peerhealth.Tracker, name string) prometheus.Collector {
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		all := make(chan prometheus.Metric, 64)
		tr.Collect(all)
		close(all)
		for m := range all {
			if strings.Contains(m.Desc().String(), `"`+name+`"`) {
				ch <- m
			}
		}
	})
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(f, ch) }
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }
