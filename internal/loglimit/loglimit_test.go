package loglimit

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := &Limiter{Interval: 10 * time.Second, Now: func() time.Time { return now }}
	steps := []struct {
		advance    time.Duration
		key        string
		ok         bool
		suppressed int
	}{
		{0, "a", true, 0},
		{time.Second, "a", false, 0},
		{time.Second, "a", false, 0},
		{0, "b", true, 0}, // another kind is not held back
		{9 * time.Second, "a", true, 2},
		{time.Second, "a", false, 0},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		ok, n := l.Allow(s.key)
		if ok != s.ok || n != s.suppressed {
			t.Fatalf("step %d: Allow(%q) = %v, %d; want %v, %d", i, s.key, ok, n, s.ok, s.suppressed)
		}
	}
	l.Reset("a")
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("after Reset the next line must be logged")
	}
}
