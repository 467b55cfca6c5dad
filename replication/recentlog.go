package replication

import (
	"context"
	"sync"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// DefaultRecentLogSize is how many events a RecentLog keeps by default.
const DefaultRecentLogSize = 32

// RecentLog is an EventSink that keeps the newest events in a fixed ring, for
// diagnostics (it backs /demo/replication). Register it as an asynchronous
// sink. Redelivered events (at or below the newest kept) are ignored. Create
// it with NewRecentLog; it is safe for concurrent use.
type RecentLog struct {
	mu   sync.Mutex
	ring []resourcelease.Event
	next int // where the next event goes
	n    int // events held
	last int64
}

var _ resourcelease.EventSink = (*RecentLog)(nil)

// NewRecentLog returns a RecentLog holding up to size events (0 means
// DefaultRecentLogSize; negative is an error).
func NewRecentLog(size int) (*RecentLog, error) {
	if size < 0 {
		return nil, invalidArg("NewRecentLog: size must not be negative, got %d", size)
	}
	if size == 0 {
		size = DefaultRecentLogSize
	}
	return &RecentLog{ring: make([]resourcelease.Event, size)}, nil
}

// ApplyEvent implements resourcelease.EventSink. It never fails.
func (l *RecentLog) ApplyEvent(_ context.Context, e resourcelease.Event) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n > 0 && e.SequenceNumber <= l.last {
		return nil
	}
	l.ring[l.next] = e
	l.next = (l.next + 1) % len(l.ring)
	l.n = min(l.n+1, len(l.ring))
	l.last = e.SequenceNumber
	return nil
}

// Events returns the events held, oldest first (never nil).
func (l *RecentLog) Events() []resourcelease.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]resourcelease.Event, 0, l.n)
	start := (l.next - l.n + len(l.ring)) % len(l.ring)
	for i := range l.n {
		out = append(out, l.ring[(start+i)%len(l.ring)])
	}
	return out
}

// Len returns how many events are held.
func (l *RecentLog) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}
