package app

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestRunProcessesItems(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithCancel(context.Background())
	var out syncBuf
	done := make(chan *Counters)
	go func() {
		c, err := run(ctx, Options{SeedInterval: 5 * time.Millisecond, StatusInterval: 50 * time.Millisecond, WorkTime: 2 * time.Millisecond, Out: &out})
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "status:") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	c := <-done
	if c.Enqueued.Load() == 0 || c.Completed.Load() == 0 {
		t.Fatalf("enqueued=%d completed=%d, want both > 0", c.Enqueued.Load(), c.Completed.Load())
	}
	if !strings.Contains(out.String(), "status: pending=") {
		t.Fatalf("no status line in %q", out.String())
	}
}
