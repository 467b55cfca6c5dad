package replication

import (
	"sync"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// eventLog is an in-memory run of consecutive committed events: the whole log
// of a MemoryReplicator, the recent-events cache of a SQLiteReplicator. It is
// appended to by one goroutine at a time (the caller serialises appends) and
// read by many.
type eventLog struct {
	mu     sync.RWMutex
	events []resourcelease.Event // events[head:] are live, consecutive sequence numbers
	head   int
	next   int64 // sequence number the next appended event will carry
	keep   int   // live events kept beyond the pin
}

func newEventLog(keep int, next int64) *eventLog {
	return &eventLog{keep: keep, next: next}
}

// append adds events (which must continue the sequence) and trims the oldest
// while more than keep are live and their sequence number is at or below pin.
func (l *eventLog) append(pin int64, evs ...resourcelease.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, evs...)
	if n := len(evs); n > 0 {
		l.next = evs[n-1].SequenceNumber + 1
	}
	for len(l.events)-l.head > l.keep && l.events[l.head].SequenceNumber <= pin {
		l.events[l.head] = resourcelease.Event{} // let the GC have its maps
		l.head++
	}
	// Compact once the dead prefix dominates, so the backing array stays
	// proportional to what is live (amortised O(1) per event).
	if l.head > 1024 && l.head*2 > len(l.events) {
		n := copy(l.events, l.events[l.head:])
		clear(l.events[n:])
		l.events = l.events[:n]
		l.head = 0
	}
}

// read returns up to limit events with SequenceNumber > after, oldest first.
// covered is false when the log no longer holds event after+1 (it was trimmed,
// or the log started later), in which case the returned events start at the
// oldest one it holds.
func (l *eventLog) read(after int64, limit int) (evs []resourcelease.Event, covered bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	live := l.events[l.head:]
	first := l.next - int64(len(live))
	covered = after+1 >= first
	start := int64(0)
	if covered {
		start = after + 1 - first
	}
	if start >= int64(len(live)) {
		return nil, covered
	}
	end := min(int64(len(live)), start+int64(limit))
	return append([]resourcelease.Event(nil), live[start:end]...), covered
}

// len returns how many events are live.
func (l *eventLog) len() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.events) - l.head
}
