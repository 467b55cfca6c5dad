package replication_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/replication/replicatortest"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// statusReplicator is a Replicator that reports sink status (both do).
type statusReplicator interface {
	resourcelease.Replicator
	SinkStatus(name string) (replication.SinkStatus, bool)
	SinkStatuses() []replication.SinkStatus
}

// bothReplicators runs f against a MemoryReplicator and a SQLiteReplicator
// built with the given clock and sink retry delays. (Call it once per test:
// a repeated subtest name gets a '#', which sqlitedb.Open does not escape in
// its file: URI, so the database would land at a truncated, shared path.)
func bothReplicators(t *testing.T, clock resourcelease.Clock, retryMin, retryMax time.Duration, f func(t *testing.T, r statusReplicator)) {
	t.Run("memory", func(t *testing.T) {
		f(t, newMemory(t, replication.MemoryConfig{Clock: clock, SinkRetryMin: retryMin, SinkRetryMax: retryMax}))
	})
	t.Run("sqlite", func(t *testing.T) {
		f(t, newSQLite(t, openDB(t, "", sqlitedb.Config{}), replication.SQLiteConfig{Clock: clock, SinkRetryMin: retryMin, SinkRetryMax: retryMax}))
	})
}

// attemptSink reports every attempt on a channel and fails as told.
type attemptSink struct {
	attempts chan int64
	fail     func(seq int64) error
}

func (s *attemptSink) ApplyEvent(_ context.Context, e resourcelease.Event) error {
	s.attempts <- e.SequenceNumber
	if s.fail != nil {
		return s.fail(e.SequenceNumber)
	}
	return nil
}

func next(t *testing.T, ch <-chan int64) int64 {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no sink attempt within 10 s")
		return 0
	}
}

// TestAsyncSinkRetriesWithBackoff: an asynchronous sink's failure does not
// touch the Acks; the event is retried after a doubling delay on the
// injected clock, before any later event, and the status shows the failure
// until it recovers.
func TestAsyncSinkRetriesWithBackoff(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	bothReplicators(t, clock, time.Second, 4*time.Second, func(t *testing.T, r statusReplicator) {
		failures := 0
		s := &attemptSink{attempts: make(chan int64, 16), fail: func(seq int64) error {
			if seq == 2 && failures < 3 {
				failures++
				return errors.New("search index is down")
			}
			return nil
		}}
		if err := r.AddSink("search", s, resourcelease.SinkOptions{}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+1), i))); err != nil {
				t.Fatalf("Ack with a failing async sink: %v", err)
			}
		}
		if a, b := next(t, s.attempts), next(t, s.attempts); a != 1 || b != 2 {
			t.Fatalf("attempts %d, %d; want 1, 2", a, b)
		}
		for i, delay := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
			if !clock.WaitForTimers(1, 10*time.Second) {
				t.Fatal("no retry timer")
			}
			st, _ := r.SinkStatus("search")
			if st.Healthy || st.Failures != int64(i+1) || st.LastErrorSequence != 2 || st.LastErrorStage != "apply" || st.AppliedSequence != 1 || st.Lag != 2 {
				t.Fatalf("status after failure %d: %+v", i+1, st)
			}
			clock.Advance(delay - time.Millisecond)
			if clock.Timers() != 1 {
				t.Fatalf("retry %d fired before its %v delay", i+1, delay)
			}
			clock.Advance(time.Millisecond)
			if got := next(t, s.attempts); got != 2 {
				t.Fatalf("retry %d delivered %d, want 2 again", i+1, got)
			}
		}
		if got := next(t, s.attempts); got != 3 {
			t.Fatalf("after the recovery the sink got %d, want 3", got)
		}
		r.Close() // flushes: the sink has applied 3
		if st, _ := r.SinkStatus("search"); !st.Healthy || st.AppliedSequence != 3 || st.Failures != 3 || st.LastError == "" {
			t.Fatalf("status after recovery: %+v", st)
		}
	})
}

// TestSyncSinkRetriedWhenIdle: a synchronous sink that failed gets the event
// again from a retry timer even if nothing else is recorded.
func TestSyncSinkRetriedWhenIdle(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	bothReplicators(t, clock, time.Second, time.Minute, func(t *testing.T, r statusReplicator) {
		failed := false
		s := &attemptSink{attempts: make(chan int64, 4), fail: func(int64) error {
			if !failed {
				failed = true
				return errors.New("audit log is down")
			}
			return nil
		}}
		if err := r.AddSink("audit", s, resourcelease.SinkOptions{Synchronous: true}); err != nil {
			t.Fatal(err)
		}
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 1, 0))); resourcelease.CodeOf(err) != resourcelease.CodeReplicationFailed {
			t.Fatalf("Ack = %v, want replication_failed", err)
		}
		next(t, s.attempts)
		if !clock.WaitForTimers(1, 10*time.Second) {
			t.Fatal("the writer armed no retry timer")
		}
		clock.Advance(time.Second)
		if got := next(t, s.attempts); got != 1 {
			t.Fatalf("retry delivered %d, want 1", got)
		}
		r.Close()
		if st, _ := r.SinkStatus("audit"); !st.Healthy || st.AppliedSequence != 1 {
			t.Fatalf("status after the idle retry: %+v", st)
		}
	})
}

// TestMemoryLogKeepsEventsASinkNeeds: the memory log's retention never drops
// an event a sink has not applied; once the sink catches up it trims.
func TestMemoryLogKeepsEventsASinkNeeds(t *testing.T) {
	ctx := context.Background()
	r := newMemory(t, replication.MemoryConfig{Retention: 5})
	release := make(chan struct{})
	s := &attemptSink{attempts: make(chan int64, 64), fail: func(int64) error { <-release; return nil }}
	if err := r.AddSink("slow", s, resourcelease.SinkOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+1), i))); err != nil {
			t.Fatal(err)
		}
	}
	if evs, _ := r.ReadEvents(ctx, 0, 100); len(evs) != 50 {
		t.Fatalf("log holds %d events while the sink has applied none, want 50", len(evs))
	}
	close(release)
	for want := int64(1); want <= 50; want++ {
		if got := next(t, s.attempts); got != want {
			t.Fatalf("sink got %d, want %d", got, want)
		}
	}
	// The sink is applying 50, so it has applied 49: appending 51 may trim
	// everything below 47 and keep the newest five.
	if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 51, 51))); err != nil {
		t.Fatal(err)
	}
	evs, _ := r.ReadEvents(ctx, 0, 100)
	if len(evs) != 5 || evs[0].SequenceNumber != 47 {
		t.Fatalf("after the sink caught up the log holds %d events from %v, want 47..51", len(evs), evs[0].SequenceNumber)
	}
}

func TestSinkStatuses(t *testing.T) {
	r := newMemory(t, replication.MemoryConfig{})
	for _, name := range []string{"b", "a"} {
		if err := r.AddSink(name, &attemptSink{attempts: make(chan int64, 8)}, resourcelease.SinkOptions{Synchronous: name == "a"}); err != nil {
			t.Fatal(err)
		}
	}
	sts := r.SinkStatuses()
	if len(sts) != 2 || sts[0].Name != "b" || sts[1].Name != "a" || sts[0].Synchronous || !sts[1].Synchronous {
		t.Fatalf("SinkStatuses = %+v, want b (async) then a (sync)", sts)
	}
	if _, ok := r.SinkStatus("nope"); ok {
		t.Fatal("SinkStatus of an unknown sink reported ok")
	}
}

func TestMemoryOptionsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts replication.MemoryConfig
	}{
		{"retention", replication.MemoryConfig{Retention: -1}},
		{"max batch", replication.MemoryConfig{MaxBatch: -1}},
		{"retry max", replication.MemoryConfig{SinkRetryMax: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := replication.NewMemoryReplicator(tc.opts); resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
				t.Fatalf("err = %v, want invalid-argument", err)
			}
		})
	}
}

// TestCloseIsBoundedBySlowSinks: Close lets an asynchronous sink deliver its
// backlog for at most the drain timeout, then returns, leaving the rest in
// the log, instead of waiting as long as the sink takes.
func TestCloseIsBoundedBySlowSinks(t *testing.T) {
	defer replication.SetSinkDrainTimeout(50 * time.Millisecond)()
	r := newMemory(t, replication.MemoryConfig{})
	var applied atomic.Int64
	gate := make(chan struct{})
	s := &attemptSink{attempts: make(chan int64, 1024), fail: func(int64) error {
		<-gate
		applied.Add(1)
		time.Sleep(10 * time.Millisecond) // a slow sink: the behaviour under test, not synchronisation
		return nil
	}}
	if err := r.AddSink("slow", s, resourcelease.SinkOptions{}); err != nil {
		t.Fatal(err)
	}
	const backlog = 500
	for i := range backlog {
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+1), i))); err != nil {
			t.Fatal(err)
		}
	}
	close(gate)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := applied.Load(); n >= backlog {
		t.Fatalf("Close waited for the whole backlog (%d events): it is not bounded", n)
	}
}
