package replication

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/prometheus/client_golang/prometheus"
)

// SinkStatus is the delivery state of one sink, for diagnostics.
type SinkStatus struct {
	// Name is the name the sink was registered under.
	Name string `json:"name"`
	// Synchronous reports whether the sink runs in the commit path.
	Synchronous bool `json:"synchronous"`
	// AppliedSequence is the newest event the sink applied.
	AppliedSequence int64 `json:"appliedSequence"`
	// Lag is how many committed events the sink has not applied yet.
	Lag int64 `json:"lag"`
	// Healthy is false while the sink's latest attempt failed (it is being
	// retried with backoff).
	Healthy bool `json:"healthy"`
	// Failures counts every failed attempt since the sink was added.
	Failures int64 `json:"failures"`
	// LastError is the latest failure's message ("" if it never failed).
	LastError string `json:"lastError,omitempty"`
	// LastErrorStage is "apply" (the sink returned an error) or "read"
	// (reading the log for it failed).
	LastErrorStage string `json:"lastErrorStage,omitempty"`
	// LastErrorSequence is the event the latest failure happened on.
	LastErrorSequence int64 `json:"lastErrorSequence,omitempty"`
	// LastErrorAt is when the latest failure happened.
	LastErrorAt time.Time `json:"lastErrorAt,omitzero"`
}

// sink is a registered EventSink and its cursor.
type sink struct {
	name     string
	sink     resourcelease.EventSink
	sync     bool
	notify   chan struct{} // async only, capacity 1
	lag      prometheus.Observer
	failures prometheus.Counter
	applied  atomic.Int64 // newest applied event
	// backoff is the next retry delay, 0 while healthy. It is owned by the
	// goroutine that delivers to the sink (the writer for synchronous sinks).
	backoff time.Duration

	mu sync.Mutex
	st SinkStatus // the failure fields
}

func newSink(r *core, name string, es resourcelease.EventSink, sync bool) *sink {
	s := &sink{
		name:     name,
		sink:     es,
		sync:     sync,
		lag:      r.m.lag.WithLabelValues(name),
		failures: r.m.sinkFailures.WithLabelValues(name),
		st:       SinkStatus{Name: name, Synchronous: sync, Healthy: true},
	}
	if !sync {
		s.notify = make(chan struct{}, 1)
	}
	return s
}

// noteFailure records a failed attempt and doubles the retry delay. The first
// failure after a success is logged; repeats are counted, not logged.
func (s *sink) noteFailure(r *core, stage string, seq int64, err error) {
	s.failures.Inc()
	if s.backoff == 0 {
		s.backoff = r.retryMin
	} else {
		s.backoff = min(2*s.backoff, r.retryMax)
	}
	s.mu.Lock()
	wasHealthy := s.st.Healthy
	s.st.Healthy = false
	s.st.Failures++
	s.st.LastError = err.Error()
	s.st.LastErrorStage = stage
	s.st.LastErrorSequence = seq
	s.st.LastErrorAt = r.clock.Now()
	s.mu.Unlock()
	if wasHealthy {
		r.logger.Warn("replication: sink failed; the event will be redelivered",
			"sink", s.name, "stage", stage, "sequence", seq, "error", err)
	}
}

// noteSuccess clears the retry delay after a failure.
func (s *sink) noteSuccess(r *core) {
	if s.backoff == 0 {
		return
	}
	s.backoff = 0
	s.mu.Lock()
	s.st.Healthy = true
	s.mu.Unlock()
	r.logger.Info("replication: sink recovered", "sink", s.name, "sequence", s.applied.Load())
}

func (s *sink) status(last int64) SinkStatus {
	s.mu.Lock()
	st := s.st
	s.mu.Unlock()
	st.AppliedSequence = s.applied.Load()
	st.Lag = max(last-st.AppliedSequence, 0)
	return st
}

func errMissingEvent(seq int64) error {
	return fmt.Errorf("event %d is no longer in the log", seq)
}
