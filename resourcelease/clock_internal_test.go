package resourcelease

import (
	"testing"
	"time"
)

// TestSystemClockFollowsTheMonotonicClock: a reading is the wall time taken
// at start plus the monotonic time since, so it does not follow the system
// clock. A clock whose start wall reading is in 2020 (as if the system clock
// had since been stepped by six years) still reads 2020, advancing.
func TestSystemClockFollowsTheMonotonicClock(t *testing.T) {
	start := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	c := systemClock{wall: start, mono: time.Now()}
	prev := c.Now()
	for range 1000 {
		now := c.Now()
		if now.Before(prev) {
			t.Fatalf("reading %v after %v: went backwards", now, prev)
		}
		prev = now
	}
	if elapsed := prev.Sub(start); elapsed < 0 || elapsed > time.Minute {
		t.Fatalf("reading %v is %v from the start wall time %v; want it to advance from it by the elapsed time only", prev, elapsed, start)
	}
}

// TestSystemClockStartsAtTheWallClock: a clock started now reads the wall
// clock (to within scheduling noise) until the system clock is stepped.
func TestSystemClockStartsAtTheWallClock(t *testing.T) {
	c := newSystemClock(time.Now())
	if d := time.Since(c.Now()); d < -time.Second || d > time.Second {
		t.Fatalf("a fresh system clock reads %v off the wall clock", d)
	}
	if d := time.Since(SystemClock.Now()); d < -time.Second || d > time.Second {
		t.Fatalf("SystemClock reads %v off the wall clock", d)
	}
}
