package postgres_test

import (
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// TestPauseIsTheQueues: a pause on one dispatcher pauses the queue for all
// of them and outlives them, and a resume on one wakes the long-polls
// parked on another through the notification (the poll fallback is an
// hour here, so nothing else could wake them).
func TestPauseIsTheQueues(t *testing.T) {
	url := pgtest.NewDatabase(t)
	cfg := postgres.QueueConfig{PollInterval: time.Hour}
	a, b := openQueue(t, url, nil, cfg), openQueue(t, url, nil, cfg)
	waitListening(t, b)
	if _, err := a.Enqueue(bg, qitem("x")); err != nil {
		t.Fatal(err)
	}
	if err := a.Pause(bg); err != nil {
		t.Fatal(err)
	}
	if l, err := b.Lease(bg, "w", 0); err != nil || l != nil {
		t.Fatalf("lease on b while a paused the queue = %+v, %v; want nothing", l, err)
	}
	if st, err := b.Stats(bg); err != nil || !st.Paused {
		t.Fatalf("b's stats %+v, %v; want paused", st, err)
	}
	// A dispatcher that starts while the queue is paused finds it paused.
	a.Close()
	c := openQueue(t, url, nil, cfg)
	if l, err := c.Lease(bg, "w", 0); err != nil || l != nil {
		t.Fatalf("lease on a new dispatcher of a paused queue = %+v, %v; want nothing", l, err)
	}

	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := b.Lease(bg, "poller", time.Hour)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitFor(t, "the long-poll on b", func() bool { return b.Waiters() == 1 })
	if err := c.Resume(bg); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if l == nil || l.Payload.ResourceID != "x" {
			t.Fatalf("b's long-poll got %+v after the resume, want x", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a resume on c did not wake the long-poll parked on b")
	}
	if st, err := b.Stats(bg); err != nil || st.Paused {
		t.Fatalf("b's stats %+v, %v; want not paused", st, err)
	}
}
