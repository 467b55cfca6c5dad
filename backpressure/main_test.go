package backpressure_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is a listener that forwards every signal to a channel.
type recorder chan resourcelease.BackpressureSignal

func newRecorder() recorder { return make(recorder, 1024) }

func (r recorder) OnBackpressure(s resourcelease.BackpressureSignal) { r <- s }

// next returns the next recorded signal; the timeout only turns a hang into
// a failure.
func (r recorder) next(t *testing.T) resourcelease.BackpressureSignal {
	t.Helper()
	select {
	case s := <-r:
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no backpressure signal delivered")
		return resourcelease.BackpressureSignal{}
	}
}

// syncBuffer is a bytes.Buffer safe for a logger on another goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
