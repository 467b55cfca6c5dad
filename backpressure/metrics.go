package backpressure

import (
	"github.com/prometheus/client_golang/prometheus"
)

// monitorDescs are the Monitor's metric descriptors, built once.
type monitorDescs struct {
	active      *prometheus.Desc
	pending     *prometheus.Desc
	high        *prometheus.Desc
	low         *prometheus.Desc
	transitions *prometheus.Desc
	dropped     *prometheus.Desc
	panics      *prometheus.Desc
}

func newMonitorDescs() monitorDescs {
	return monitorDescs{
		active: prometheus.NewDesc("backpressure_active",
			"1 while backpressure is active, 0 otherwise.", nil, nil),
		pending: prometheus.NewDesc("backpressure_pending_count",
			"Last pending count observed by the backpressure monitor.", nil, nil),
		high: prometheus.NewDesc("backpressure_high_watermark",
			"Pending count at which backpressure turns on.", nil, nil),
		low: prometheus.NewDesc("backpressure_low_watermark",
			"Pending count at which backpressure clears.", nil, nil),
		transitions: prometheus.NewDesc("backpressure_transitions_total",
			"Backpressure transitions, by the state entered (active or cleared).", []string{"state"}, nil),
		dropped: prometheus.NewDesc("backpressure_signals_dropped_total",
			"Backpressure signals dropped because the listeners' delivery buffer was full.", nil, nil),
		panics: prometheus.NewDesc("backpressure_listener_panics_total",
			"Backpressure listener calls that panicked (recovered).", nil, nil),
	}
}

// Describe sends the descriptors of the Monitor's metrics (see the package doc).
func (m *Monitor) Describe(ch chan<- *prometheus.Desc) {
	d := m.descs
	for _, desc := range []*prometheus.Desc{d.active, d.pending, d.high, d.low, d.transitions, d.dropped, d.panics} {
		ch <- desc
	}
}

// Collect sends the current values of the Monitor's metrics.
func (m *Monitor) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	active, pending := m.active, m.pending
	activations, clears, dropped, panics := m.activations, m.clears, m.dropped, m.panics
	m.mu.Unlock()

	var a float64
	if active {
		a = 1
	}
	d := m.descs
	ch <- prometheus.MustNewConstMetric(d.active, prometheus.GaugeValue, a)
	ch <- prometheus.MustNewConstMetric(d.pending, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(d.high, prometheus.GaugeValue, float64(m.cfg.HighWatermark))
	ch <- prometheus.MustNewConstMetric(d.low, prometheus.GaugeValue, float64(m.cfg.LowWatermark))
	ch <- prometheus.MustNewConstMetric(d.transitions, prometheus.CounterValue, float64(activations), "active")
	ch <- prometheus.MustNewConstMetric(d.transitions, prometheus.CounterValue, float64(clears), "cleared")
	ch <- prometheus.MustNewConstMetric(d.dropped, prometheus.CounterValue, float64(dropped))
	ch <- prometheus.MustNewConstMetric(d.panics, prometheus.CounterValue, float64(panics))
}
