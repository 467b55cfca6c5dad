package deterministic

import (
	"context"
	"sync"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// keyedMutex is a set of mutexes, one per key, created on demand and dropped
// when nobody holds or waits for them. Waiting can be abandoned with ctx.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock // guarded by mu
}

type keyLock struct {
	held chan struct{} // a token in the channel means the lock is held
	refs int           // holders and waiters; guarded by keyedMutex.mu
}

// lock acquires key's mutex, or returns ctx's error if ctx is done first.
// The returned function releases it and must be called exactly once.
func (m *keyedMutex) lock(ctx context.Context, key string) (unlock func(), err error) {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = make(map[string]*keyLock)
	}
	l := m.locks[key]
	if l == nil {
		l = &keyLock{held: make(chan struct{}, 1)}
		m.locks[key] = l
	}
	l.refs++
	m.mu.Unlock()

	select {
	case l.held <- struct{}{}:
		return func() {
			<-l.held
			m.release(key, l)
		}, nil
	case <-ctx.Done():
		m.release(key, l)
		return nil, resourcelease.AsError(ctx.Err())
	}
}

func (m *keyedMutex) release(key string, l *keyLock) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l.refs--
	if l.refs == 0 {
		delete(m.locks, key)
	}
}

// size returns the number of keys with holders or waiters (for tests).
func (m *keyedMutex) size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.locks)
}

// now returns c.Now(), or the real time when c is nil.
func now(c resourcelease.Clock) time.Time {
	if c == nil {
		return time.Now()
	}
	return c.Now()
}
