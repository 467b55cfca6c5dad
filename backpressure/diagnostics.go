package backpressure

import (
	"sync"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Defaults of DiagnosticsConfig.
const (
	DefaultHistorySize      = 64
	DefaultSubscriberBuffer = 16
)

// DiagnosticsConfig configures a DiagnosticsListener. The zero value of every
// field means its documented default; negative values are an error.
type DiagnosticsConfig struct {
	// HistorySize is how many signals History keeps. Defaults to 64.
	HistorySize int
	// SubscriberBuffer is the channel capacity of each subscription.
	// Defaults to 16.
	SubscriberBuffer int
}

// DiagnosticsListener keeps what the diagnostics page and the control plane
// show about backpressure: the latest signal, a bounded history, and live
// subscriptions. It never blocks the Monitor's delivery: a subscriber that
// does not keep up loses its oldest undelivered signals (the channel keeps
// the newest ones, so it always ends on the current state). It starts no
// goroutines and is safe for concurrent use.
type DiagnosticsListener struct {
	cfg DiagnosticsConfig

	mu        sync.Mutex
	latest    resourcelease.BackpressureSignal
	hasLatest bool
	// history is a ring of at most cfg.HistorySize signals; start is the
	// oldest.
	history []resourcelease.BackpressureSignal
	start   int
	subs    map[*subscription]struct{}
}

var _ resourcelease.BackpressureListener = (*DiagnosticsListener)(nil)

type subscription struct {
	ch chan resourcelease.BackpressureSignal
}

// NewDiagnosticsListener returns a DiagnosticsListener configured by cfg.
func NewDiagnosticsListener(cfg DiagnosticsConfig) (*DiagnosticsListener, error) {
	if cfg.HistorySize < 0 {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: HistorySize must not be negative, got %d", cfg.HistorySize)
	}
	if cfg.SubscriberBuffer < 0 {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: SubscriberBuffer must not be negative, got %d", cfg.SubscriberBuffer)
	}
	if cfg.HistorySize == 0 {
		cfg.HistorySize = DefaultHistorySize
	}
	if cfg.SubscriberBuffer == 0 {
		cfg.SubscriberBuffer = DefaultSubscriberBuffer
	}
	return &DiagnosticsListener{cfg: cfg, subs: make(map[*subscription]struct{})}, nil
}

// OnBackpressure records s and passes it to every subscriber without
// blocking.
func (d *DiagnosticsListener) OnBackpressure(s resourcelease.BackpressureSignal) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.latest, d.hasLatest = s, true
	if len(d.history) < d.cfg.HistorySize {
		d.history = append(d.history, s)
	} else {
		d.history[d.start] = s
		d.start = (d.start + 1) % len(d.history)
	}
	for sub := range d.subs {
		sub.send(s)
	}
}

// send puts s on the channel, making room by dropping the oldest signal if
// it is full. Only the listener sends, under its lock, so after one receive
// there is room.
func (sub *subscription) send(s resourcelease.BackpressureSignal) {
	select {
	case sub.ch <- s:
		return
	default:
	}
	select {
	case <-sub.ch:
	default:
	}
	select {
	case sub.ch <- s:
	default: // unreachable: the receive above made room
	}
}

// Latest returns the last signal, and false if there was none.
func (d *DiagnosticsListener) Latest() (resourcelease.BackpressureSignal, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.latest, d.hasLatest
}

// History returns the kept signals, oldest first. It is a copy.
func (d *DiagnosticsListener) History() []resourcelease.BackpressureSignal {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]resourcelease.BackpressureSignal, 0, len(d.history))
	out = append(out, d.history[d.start:]...)
	return append(out, d.history[:d.start]...)
}

// Subscribe returns a channel that receives every later signal, preceded by
// the latest one if there is one (so a stream starts from the current state
// without a race between Latest and Subscribe), and a cancel function that
// ends the subscription and closes the channel. A subscriber that falls
// behind by more than DiagnosticsConfig.SubscriberBuffer signals loses the
// oldest ones. Cancel is safe to call more than once; call it when done, or
// the subscription is kept.
func (d *DiagnosticsListener) Subscribe() (<-chan resourcelease.BackpressureSignal, func()) {
	sub := &subscription{ch: make(chan resourcelease.BackpressureSignal, d.cfg.SubscriberBuffer)}
	d.mu.Lock()
	if d.hasLatest {
		sub.ch <- d.latest
	}
	d.subs[sub] = struct{}{}
	d.mu.Unlock()
	var once sync.Once
	return sub.ch, func() {
		once.Do(func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			delete(d.subs, sub)
			close(sub.ch)
		})
	}
}
