package resourcelease

import "time"

// Clock is the engine's source of time. Tests inject leasetest.ManualClock; a
// nil Clock in any Config means SystemClock.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
}

// Timer is a Clock's one-shot timer.
type Timer interface {
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it stopped it.
	Stop() bool
}

// SystemClock is the real clock: time.Now. It is the wall clock, not a
// monotonic one anchored at start, on purpose: lease expiries travel to
// workers as absolute times (leaseExpiresAt) that they compare with their own
// wall clocks, so the dispatcher's readings must follow the host's clock,
// corrections included. A monotonic clock would carry a correction made after
// start (NTP at boot, a host suspend) as a permanent offset, and workers would
// lose every lease when it exceeds the lease duration.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

func clockOrSystem(c Clock) Clock {
	if c == nil {
		return SystemClock
	}
	return c
}
