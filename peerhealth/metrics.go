package peerhealth

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// releaseOutcomes are the outcomes peerhealth_releases_total counts, in the
// order of Tracker.releases.
var releaseOutcomes = [...]resourcelease.ReleaseOutcome{
	resourcelease.ReleaseCompleted, resourcelease.ReleaseRequeued,
	resourcelease.ReleaseDeadLettered, resourcelease.ReleaseGivenBack,
}

// descs are the Tracker's metric descriptors, built once in New.
type descs struct {
	healthy     *prometheus.Desc
	unhealthy   *prometheus.Desc
	assignments *prometheus.Desc
	heartbeats  *prometheus.Desc
	releases    *prometheus.Desc
	disconnects *prometheus.Desc
	evictions   *prometheus.Desc
	breakers    *prometheus.Desc
	trips       *prometheus.Desc
}

func newDescs() descs {
	return descs{
		healthy: prometheus.NewDesc("peerhealth_peers_healthy",
			"Number of known peers that are healthy.", nil, nil),
		unhealthy: prometheus.NewDesc("peerhealth_peers_unhealthy",
			"Number of known peers that are unhealthy.", nil, nil),
		assignments: prometheus.NewDesc("peerhealth_assignments_total",
			"Leases granted to peers.", nil, nil),
		heartbeats: prometheus.NewDesc("peerhealth_heartbeats_total",
			"Lease heartbeats received from peers.", nil, nil),
		releases: prometheus.NewDesc("peerhealth_releases_total",
			"Leases that ended without expiring, by outcome (completed, requeued, dead_lettered or given_back).", []string{"outcome"}, nil),
		disconnects: prometheus.NewDesc("peerhealth_disconnects_total",
			"Leases that expired without being settled, by reason.", []string{"reason"}, nil),
		evictions: prometheus.NewDesc("peerhealth_evictions_total",
			"Peers evicted to stay within MaxPeers, by state (idle or holding leases).", []string{"state"}, nil),
		breakers: prometheus.NewDesc("peerhealth_breakers",
			"Number of known peers by the state of their circuit breaker (closed, open or half-open).", []string{"state"}, nil),
		trips: prometheus.NewDesc("peerhealth_breaker_trips_total",
			"Times a peer's circuit breaker opened: after consecutive lease expiries, or on an expiry while half-open.", nil, nil),
	}
}

// Describe sends the descriptors of the Tracker's metrics: the gauges
// peerhealth_peers_healthy, peerhealth_peers_unhealthy and
// peerhealth_breakers{state}, and the counters
// peerhealth_assignments_total, peerhealth_heartbeats_total,
// peerhealth_releases_total{outcome}, peerhealth_disconnects_total{reason},
// peerhealth_breaker_trips_total and peerhealth_evictions_total{state}. The
// last counts the peers evicted
// to stay within Config.MaxPeers: state="idle" for peers that held no leases
// (expected under peer-id churn), state="holding" for peers that held leases
// (every known peer did; MaxPeers is likely too small).
func (t *Tracker) Describe(ch chan<- *prometheus.Desc) {
	ch <- t.descs.healthy
	ch <- t.descs.unhealthy
	ch <- t.descs.assignments
	ch <- t.descs.heartbeats
	ch <- t.descs.releases
	ch <- t.descs.disconnects
	ch <- t.descs.evictions
	ch <- t.descs.breakers
	ch <- t.descs.trips
}

// Collect sends the current values of the Tracker's metrics. Health is
// evaluated at the time of the scrape.
func (t *Tracker) Collect(ch chan<- prometheus.Metric) {
	t.mu.Lock()
	now := t.cfg.Clock.Now()
	t.prune(now)
	var healthy, unhealthy int
	var breakers [len(breakerStates)]int
	for _, p := range t.peers {
		if t.healthy(p, now) {
			healthy++
		} else {
			unhealthy++
		}
		breakers[p.state(now)]++
	}
	assignments, heartbeats, releases, evictions, trips := t.assignments, t.heartbeats, t.releases, t.evictions, t.trips
	disconnects := make(map[string]uint64, len(t.disconnects))
	for k, v := range t.disconnects {
		disconnects[k] = v
	}
	t.mu.Unlock()

	ch <- prometheus.MustNewConstMetric(t.descs.healthy, prometheus.GaugeValue, float64(healthy))
	ch <- prometheus.MustNewConstMetric(t.descs.unhealthy, prometheus.GaugeValue, float64(unhealthy))
	ch <- prometheus.MustNewConstMetric(t.descs.assignments, prometheus.CounterValue, float64(assignments))
	ch <- prometheus.MustNewConstMetric(t.descs.heartbeats, prometheus.CounterValue, float64(heartbeats))
	for i, o := range releaseOutcomes {
		ch <- prometheus.MustNewConstMetric(t.descs.releases, prometheus.CounterValue, float64(releases[i]), o.String())
	}
	for st, n := range breakers {
		ch <- prometheus.MustNewConstMetric(t.descs.breakers, prometheus.GaugeValue, float64(n), string(breakerStates[st]))
	}
	ch <- prometheus.MustNewConstMetric(t.descs.trips, prometheus.CounterValue, float64(trips))
	ch <- prometheus.MustNewConstMetric(t.descs.evictions, prometheus.CounterValue, float64(evictions[0]), "idle")
	ch <- prometheus.MustNewConstMetric(t.descs.evictions, prometheus.CounterValue, float64(evictions[1]), "holding")
	for reason, n := range disconnects {
		ch <- prometheus.MustNewConstMetric(t.descs.disconnects, prometheus.CounterValue, float64(n), reason)
	}
}
