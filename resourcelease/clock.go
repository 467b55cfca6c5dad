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

// SystemClock is the real clock. Its readings are the wall clock as read once,
// when the process started, advanced by the monotonic clock: lease expiry,
// requeue backoff and dedupe windows measure real elapsed time even when the
// system clock is stepped (an NTP correction, an operator), which would
// otherwise expire every lease at once (a step forward) or freeze expiry for
// the length of the step (a step back). The price is that a step after start
// is not reflected in the times the queue records until the process restarts.
// A reading also costs one clock read instead of the two of time.Now.
var SystemClock Clock = newSystemClock(time.Now())

// systemClock advances wall, read at the same instant as mono (which carries
// Go's monotonic reading), by the monotonic time elapsed since mono.
type systemClock struct{ wall, mono time.Time }

func newSystemClock(now time.Time) systemClock {
	return systemClock{wall: now.Round(0), mono: now}
}

func (c systemClock) Now() time.Time { return c.wall.Add(time.Since(c.mono)) }

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
