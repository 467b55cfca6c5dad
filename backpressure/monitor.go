package backpressure

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// DefaultSignalBuffer is the default of Config.SignalBuffer.
const DefaultSignalBuffer = 64

// Config configures a Monitor. The zero value of every field but
// HighWatermark means its documented default; bad values are an error.
type Config struct {
	// HighWatermark is the pending count at which backpressure turns on
	// (pending >= HighWatermark). Required; must be > 0.
	HighWatermark int
	// LowWatermark is the pending count at which it clears (pending <=
	// LowWatermark). Defaults to HighWatermark/2; -1 means 0 (clear only
	// when nothing is pending). Must be below HighWatermark.
	LowWatermark int
	// Cooldown is the least time between two transitions. A transition it
	// holds back happens when it ends (if the last observed pending count
	// still calls for it). Defaults to 0: no cooldown.
	Cooldown time.Duration
	// Mode is what Admit does while backpressure is active. Defaults to
	// ModeWait.
	Mode Mode
	// SignalBuffer is the most signals waiting for delivery to the listeners
	// (see the package doc for what happens when it fills). Defaults to 64;
	// must be at least 2.
	SignalBuffer int
	// Clock is the source of time. Nil means resourcelease.SystemClock.
	Clock resourcelease.Clock
	// Listeners are told about every transition, in order, from the
	// Monitor's goroutine. Nil entries are ignored.
	Listeners []resourcelease.BackpressureListener
	// Logger receives recovered listener panics and dropped signals. Nil
	// means slog.Default().
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	switch {
	case c.HighWatermark <= 0:
		return c, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: HighWatermark must be > 0, got %d", c.HighWatermark)
	case c.LowWatermark < -1:
		return c, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: LowWatermark must be -1 (meaning 0) or more, got %d", c.LowWatermark)
	case c.LowWatermark >= c.HighWatermark:
		return c, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: LowWatermark (%d) must be below HighWatermark (%d)", c.LowWatermark, c.HighWatermark)
	case c.Cooldown < 0:
		return c, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: Cooldown must not be negative, got %v", c.Cooldown)
	case !c.Mode.valid():
		return c, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: invalid Mode %d", int(c.Mode))
	case c.SignalBuffer < 0 || c.SignalBuffer == 1:
		return c, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: SignalBuffer must be 0 (default) or at least 2, got %d", c.SignalBuffer)
	}
	switch c.LowWatermark {
	case 0:
		c.LowWatermark = c.HighWatermark / 2
	case -1:
		c.LowWatermark = 0
	}
	if c.SignalBuffer == 0 {
		c.SignalBuffer = DefaultSignalBuffer
	}
	if c.Clock == nil {
		c.Clock = resourcelease.SystemClock
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	ls := make([]resourcelease.BackpressureListener, 0, len(c.Listeners))
	for _, l := range c.Listeners {
		if l != nil {
			ls = append(ls, l)
		}
	}
	c.Listeners = ls
	return c, nil
}

// Monitor decides backpressure from the queue's pending count with a high and
// a low watermark and a cooldown, tells its listeners about each transition,
// and admits or holds back enqueues. It implements
// resourcelease.BackpressureController and prometheus.Collector.
//
// NewMonitor starts one goroutine that delivers signals to the listeners and
// runs deferred transitions; Close stops it. Methods are safe for concurrent
// use.
type Monitor struct {
	cfg Config

	mu      sync.Mutex
	active  bool
	pending int
	// lastTransition is when the last transition happened; zero before the
	// first, which no cooldown holds back.
	lastTransition time.Time
	latest         resourcelease.BackpressureSignal
	hasLatest      bool
	// timer re-evaluates once the cooldown ends; nil when none is due. Only
	// evaluate sets it and only run (on firing) and Close clear it.
	timer resourcelease.Timer
	// queue holds the signals not yet taken by run, at most SignalBuffer.
	queue []resourcelease.BackpressureSignal
	// cleared is closed (and replaced) when backpressure clears; Admit waits
	// on it.
	cleared     chan struct{}
	closed      bool
	activations uint64
	clears      uint64
	dropped     uint64
	// unlogged counts drops not yet reported in the log (run logs them).
	unlogged uint64
	panics   uint64

	kick     chan struct{} // wakes run: new signals or a new timer
	done     chan struct{} // closed by Close
	finished chan struct{} // closed when run returns
	once     sync.Once

	descs monitorDescs
}

var (
	_ resourcelease.BackpressureController = (*Monitor)(nil)
	_ prometheus.Collector                 = (*Monitor)(nil)
)

// NewMonitor returns a Monitor configured by cfg and starts its delivery
// goroutine. Backpressure starts cleared.
func NewMonitor(cfg Config) (*Monitor, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Monitor{
		cfg:      cfg,
		cleared:  make(chan struct{}),
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		finished: make(chan struct{}),
		descs:    newMonitorDescs(),
	}
	go m.run()
	return m, nil
}

// Observe records the queue's pending count at at (the clock's now when
// zero) and makes the transition it calls for, unless the cooldown holds it
// back. It never blocks: it is called with the queue's lock held. After
// Close it only records the count.
func (m *Monitor) Observe(pending int, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pending = pending
	if at.IsZero() {
		at = m.cfg.Clock.Now()
	}
	m.evaluate(at)
}

// Admit is called before each enqueue. It returns nil while backpressure is
// off. While it is on, in ModeReject it returns an error matching
// resourcelease.ErrBackpressure; in ModeWait it waits until backpressure
// clears (nil), ctx ends (a deadline-exceeded or cancelled
// *resourcelease.Error), or the Monitor is closed (an error matching
// resourcelease.ErrClosed).
func (m *Monitor) Admit(ctx context.Context) error {
	for {
		m.mu.Lock()
		if !m.active {
			m.mu.Unlock()
			return nil
		}
		if m.cfg.Mode == ModeReject {
			err := m.rejection()
			m.mu.Unlock()
			return err
		}
		if m.closed {
			m.mu.Unlock()
			return &resourcelease.Error{Status: resourcelease.StatusUnavailable, Code: resourcelease.CodeClosed,
				Message: "backpressure monitor is closed while backpressure is active"}
		}
		cleared := m.cleared
		m.mu.Unlock()

		if ctx.Err() != nil {
			return waitError(ctx)
		}
		select {
		case <-cleared:
		case <-m.done:
		case <-ctx.Done():
			return waitError(ctx)
		}
	}
}

// rejection is the ModeReject error. m.mu must be held.
func (m *Monitor) rejection() error {
	return &resourcelease.Error{
		Status: resourcelease.StatusResourceExhausted,
		Code:   resourcelease.CodeBackpressure,
		Message: fmt.Sprintf("backpressure is active: %d pending (high watermark %d, clears at %d)",
			m.pending, m.cfg.HighWatermark, m.cfg.LowWatermark),
		Metadata: map[string]string{
			"pendingCount":  strconv.Itoa(m.pending),
			"highWatermark": strconv.Itoa(m.cfg.HighWatermark),
			"lowWatermark":  strconv.Itoa(m.cfg.LowWatermark),
		},
	}
}

// waitError is the error of a wait that ctx ended.
func waitError(ctx context.Context) error {
	e := resourcelease.AsError(ctx.Err())
	return &resourcelease.Error{Status: e.Status, Code: e.Code, Message: "waiting for backpressure to clear: " + e.Message, Err: e.Err}
}

// Active reports whether backpressure is on.
func (m *Monitor) Active() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.active
}

// Latest returns the signal of the last transition, and false before the
// first.
func (m *Monitor) Latest() (resourcelease.BackpressureSignal, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.latest, m.hasLatest
}

// State is a Monitor's current state, for the control plane and diagnostics.
type State struct {
	// IsActive reports whether backpressure is on.
	IsActive bool `json:"isActive"`
	// PendingCount is the last observed pending count.
	PendingCount int `json:"pendingCount"`
	// HighWatermark is the pending count at which backpressure turns on.
	HighWatermark int `json:"highWatermark"`
	// LowWatermark is the pending count at which it clears.
	LowWatermark int `json:"lowWatermark"`
	// Mode is "wait" or "reject".
	Mode Mode `json:"mode"`
	// CooldownMs is the cooldown in milliseconds.
	CooldownMs int64 `json:"cooldownMs"`
	// Latest is the signal of the last transition, nil before the first.
	Latest *resourcelease.BackpressureSignal `json:"latest"`
}

// State returns the current state.
func (m *Monitor) State() State {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := State{
		IsActive:      m.active,
		PendingCount:  m.pending,
		HighWatermark: m.cfg.HighWatermark,
		LowWatermark:  m.cfg.LowWatermark,
		Mode:          m.cfg.Mode,
		CooldownMs:    m.cfg.Cooldown.Milliseconds(),
	}
	if m.hasLatest {
		l := m.latest
		s.Latest = &l
	}
	return s
}

// Close stops the delivery goroutine and any pending cooldown timer, and
// wakes the Admit calls waiting for backpressure to clear (they return an
// error matching resourcelease.ErrClosed). It waits for a listener call in
// progress to return; signals not yet delivered are discarded. It is safe to
// call more than once and always returns nil.
func (m *Monitor) Close() error {
	m.once.Do(func() {
		m.mu.Lock()
		m.closed = true
		if m.timer != nil {
			m.timer.Stop()
			m.timer = nil
		}
		m.queue = nil
		m.mu.Unlock()
		close(m.done)
	})
	<-m.finished
	return nil
}

// evaluate makes the transition the last observed pending count calls for,
// or schedules a re-evaluation when the cooldown holds it back. m.mu must be
// held.
func (m *Monitor) evaluate(now time.Time) {
	if m.closed {
		return
	}
	want := m.active
	switch {
	case !m.active && m.pending >= m.cfg.HighWatermark:
		want = true
	case m.active && m.pending <= m.cfg.LowWatermark:
		want = false
	}
	if want == m.active {
		return
	}
	if m.cfg.Cooldown > 0 && !m.lastTransition.IsZero() {
		if wait := m.lastTransition.Add(m.cfg.Cooldown).Sub(now); wait > 0 {
			if m.timer == nil {
				m.timer = m.cfg.Clock.NewTimer(wait)
				m.wake()
			}
			return
		}
	}
	m.active = want
	m.lastTransition = now
	sig := resourcelease.BackpressureSignal{
		IsActive:      want,
		PendingCount:  m.pending,
		ObservedAt:    now,
		HighWatermark: m.cfg.HighWatermark,
		LowWatermark:  m.cfg.LowWatermark,
	}
	m.latest, m.hasLatest = sig, true
	if want {
		m.activations++
	} else {
		m.clears++
		close(m.cleared)
		m.cleared = make(chan struct{})
	}
	if len(m.cfg.Listeners) == 0 {
		return
	}
	if len(m.queue) >= m.cfg.SignalBuffer {
		// Drop the oldest pair: the rest still alternates (see the package doc).
		n := copy(m.queue, m.queue[2:])
		clear(m.queue[n:])
		m.queue = m.queue[:n]
		m.dropped += 2
		m.unlogged += 2
	}
	m.queue = append(m.queue, sig)
	m.wake()
}

// wake nudges run without blocking. m.mu must be held.
func (m *Monitor) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// run is the Monitor's goroutine: it delivers signals and fires deferred
// transitions until Close.
func (m *Monitor) run() {
	defer close(m.finished)
	for {
		m.mu.Lock()
		batch := m.queue
		m.queue = nil
		dropped := m.unlogged
		m.unlogged = 0
		var timerC <-chan time.Time
		if m.timer != nil {
			timerC = m.timer.C()
		}
		m.mu.Unlock()

		if dropped > 0 {
			m.cfg.Logger.Warn("backpressure: signal buffer full, dropped the oldest undelivered signals",
				"dropped", dropped, "buffer", m.cfg.SignalBuffer)
		}
		for _, s := range batch {
			select {
			case <-m.done:
				return
			default:
			}
			m.deliver(s)
		}
		if len(batch) > 0 {
			continue // more may have arrived while delivering
		}

		select {
		case <-m.done:
			return
		case <-m.kick:
		case <-timerC:
			m.mu.Lock()
			m.timer = nil
			m.evaluate(m.cfg.Clock.Now())
			m.mu.Unlock()
		}
	}
}

// deliver calls every listener with s, recovering and logging panics.
func (m *Monitor) deliver(s resourcelease.BackpressureSignal) {
	for _, l := range m.cfg.Listeners {
		m.call(l, s)
	}
}

func (m *Monitor) call(l resourcelease.BackpressureListener, s resourcelease.BackpressureSignal) {
	defer func() {
		if p := recover(); p != nil {
			m.mu.Lock()
			m.panics++
			m.mu.Unlock()
			m.cfg.Logger.Error("backpressure: listener panicked",
				"listener", fmt.Sprintf("%T", l), "panic", fmt.Sprint(p),
				"isActive", s.IsActive, "stack", string(debug.Stack()))
		}
	}()
	l.OnBackpressure(s)
}
