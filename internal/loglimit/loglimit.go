// Package loglimit keeps a failure that repeats — every call failing while
// a database is down — from flooding the log: the first line of a kind is
// logged, then at most one per interval, saying how many were left out.
package loglimit

import (
	"sync"
	"time"
)

// DefaultInterval is the least time between two lines of one kind.
const DefaultInterval = 10 * time.Second

// Limiter decides which lines of each kind are logged. The zero value uses
// DefaultInterval; it is safe for concurrent use.
type Limiter struct {
	// Interval is the least time between two lines of one kind.
	Interval time.Duration
	// Now defaults to time.Now.
	Now func() time.Time

	mu    sync.Mutex
	kinds map[string]*kind
}

type kind struct {
	last    time.Time
	dropped int
}

// maxKinds bounds the kinds remembered, so that keys built from varying
// text cannot grow the map without bound.
const maxKinds = 256

// Allow reports whether a line of kind key may be logged now and, when it
// may, how many of that kind were suppressed since the previous one.
func (l *Limiter) Allow(key string) (ok bool, suppressed int) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	interval := l.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.kinds == nil || len(l.kinds) >= maxKinds {
		l.kinds = make(map[string]*kind)
	}
	k := l.kinds[key]
	if k == nil {
		l.kinds[key] = &kind{last: t}
		return true, 0
	}
	if t.Sub(k.last) < interval {
		k.dropped++
		return false, 0
	}
	n := k.dropped
	k.last, k.dropped = t, 0
	return true, n
}

// Reset forgets key, so that its next line is logged at once (the failure
// ended, and a new one deserves its line).
func (l *Limiter) Reset(key string) {
	l.mu.Lock()
	delete(l.kinds, key)
	l.mu.Unlock()
}
