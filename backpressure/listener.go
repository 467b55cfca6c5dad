package backpressure

import (
	"log/slog"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// ListenerFunc adapts a function to resourcelease.BackpressureListener.
type ListenerFunc func(resourcelease.BackpressureSignal)

var _ resourcelease.BackpressureListener = ListenerFunc(nil)

// OnBackpressure calls f(s).
func (f ListenerFunc) OnBackpressure(s resourcelease.BackpressureSignal) { f(s) }

// Listeners returns a listener that tells each of ls, in order, about every
// signal. Nil entries are skipped. If one panics the rest are still called,
// and then the first panic is raised again (the Monitor recovers and logs
// it).
func Listeners(ls ...resourcelease.BackpressureListener) resourcelease.BackpressureListener {
	out := make(listeners, 0, len(ls))
	for _, l := range ls {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

type listeners []resourcelease.BackpressureListener

func (ls listeners) OnBackpressure(s resourcelease.BackpressureSignal) {
	var (
		first    any
		panicked bool
	)
	for _, l := range ls {
		func() {
			defer func() {
				if p := recover(); p != nil && !panicked {
					first, panicked = p, true
				}
			}()
			l.OnBackpressure(s)
		}()
	}
	if panicked {
		panic(first)
	}
}

// LogListener logs every transition at Info level: "backpressure activated"
// or "backpressure cleared", with the pending count and the watermarks. The
// zero value logs to slog.Default().
type LogListener struct {
	logger *slog.Logger
}

var _ resourcelease.BackpressureListener = (*LogListener)(nil)

// NewLogListener returns a LogListener that logs to logger (slog.Default()
// when nil).
func NewLogListener(logger *slog.Logger) *LogListener {
	return &LogListener{logger: logger}
}

// OnBackpressure logs s.
func (l *LogListener) OnBackpressure(s resourcelease.BackpressureSignal) {
	logger := l.logger
	if logger == nil {
		logger = slog.Default()
	}
	msg := "backpressure cleared"
	if s.IsActive {
		msg = "backpressure activated"
	}
	logger.Info(msg,
		"pendingCount", s.PendingCount,
		"highWatermark", s.HighWatermark,
		"lowWatermark", s.LowWatermark,
		"observedAt", s.ObservedAt)
}
