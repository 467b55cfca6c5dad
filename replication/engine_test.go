package replication_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// engineHarness is a Engine journaled to a SQLite replicator on a file
// that can be "restarted": closed and rebuilt from LoadState.
type engineHarness struct {
	t     *testing.T
	path  string
	clock *leasetest.ManualClock
	cfg   resourcelease.QueueConfig
	db    *dbCloser
	r     *replication.SQLiteReplicator
	q     *resourcelease.Engine
	st    *resourcelease.QueueState // what the last start loaded
}

type dbCloser struct{ close func() }

func newEngineHarness(t *testing.T, cfg resourcelease.QueueConfig) *engineHarness {
	t.Helper()
	h := &engineHarness{t: t, path: filepath.Join(t.TempDir(), "replication.db"), clock: leasetest.NewManualClock(time.Time{}), cfg: cfg}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *engineHarness) start() {
	h.t.Helper()
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, h.path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		h.t.Fatal(err)
	}
	h.db = &dbCloser{close: func() { db.Close() }}
	h.r, err = replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: h.path, Clock: h.clock, DedupeWindow: h.cfg.DedupeWindow, Logger: quiet})
	if err != nil {
		h.t.Fatal(err)
	}
	if h.st, err = h.r.LoadState(ctx); err != nil {
		h.t.Fatal(err)
	}
	cfg := h.cfg
	cfg.Clock, cfg.Journal, cfg.InitialState = h.clock, h.r, h.st
	if h.q, err = resourcelease.NewEngine(cfg); err != nil {
		h.t.Fatal(err)
	}
}

func (h *engineHarness) stop() {
	if h.q == nil {
		return
	}
	h.q.Close()
	if err := h.r.Close(); err != nil {
		h.t.Errorf("replicator Close: %v", err)
	}
	h.db.close()
	h.q = nil
}

func (h *engineHarness) restart() {
	h.t.Helper()
	h.stop()
	h.start()
}

func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func item(id, req string) resourcelease.Item {
	return resourcelease.Item{
		ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-2", PayloadEncoding: "application/json",
		Body: []byte(`{"id":"` + id + `"}`), Attributes: map[string]string{"tenant": "tenant-2", "quote": `"<&>"`}, RequestID: req,
	}
}

func mustLease(t *testing.T, q resourcelease.Queue, peer string) *resourcelease.Lease {
	t.Helper()
	l, err := q.Lease(context.Background(), peer, 0)
	if err != nil || l == nil {
		t.Fatalf("Lease = %v, %v; want a lease", l, err)
	}
	return l
}

// snapshot is what the queue reports about itself, in a comparable form:
// pending items (drained and restored, which also exercises both), dead
// letters and counts.
func snapshot(t *testing.T, q *resourcelease.Engine) string {
	t.Helper()
	ctx := context.Background()
	pending, err := q.Drain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) > 0 {
		if _, err := q.Restore(ctx, pending); err != nil {
			t.Fatal(err)
		}
	}
	dead, err := q.DeadLetters(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	return jsonOf(t, map[string]any{"pending": pending, "dead": dead, "stats": engineStats(q)})
}

// TestEngineStateSurvivesRestart drives the real engine through each kind of
// transition and checks that a restart from the database rebuilds the same
// queue: pending items (attempt, lastError, readyAt, last token, payload),
// live leases (token, peer, leasedAt), dead letters and counts.
func TestEngineStateSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cfg  resourcelease.QueueConfig
		run  func(t *testing.T, h *engineHarness)
	}{
		{"enqueued", resourcelease.QueueConfig{}, func(t *testing.T, h *engineHarness) {
			for _, id := range []string{"a", "b", "c"} {
				if _, err := h.q.Enqueue(ctx, item(id, "req-"+id)); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"leased and heartbeated", resourcelease.QueueConfig{}, func(t *testing.T, h *engineHarness) {
			h.q.Enqueue(ctx, item("a", ""))
			h.q.Enqueue(ctx, item("b", ""))
			l := mustLease(t, h.q, "worker-7")
			h.clock.Advance(time.Second)
			if _, err := h.q.Heartbeat(ctx, l.OwnershipToken); err != nil {
				t.Fatal(err)
			}
		}},
		{"requeued with delay and backoff", resourcelease.QueueConfig{RequeueDelay: time.Minute, MaxRequeueDelay: time.Hour}, func(t *testing.T, h *engineHarness) {
			h.q.Enqueue(ctx, item("a", ""))
			l := mustLease(t, h.q, "w")
			if err := h.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "db timeout", ErrorCode: "e.timeout"}); err != nil {
				t.Fatal(err)
			}
		}},
		{"dead-lettered without requeue", resourcelease.QueueConfig{}, func(t *testing.T, h *engineHarness) {
			h.q.Enqueue(ctx, item("a", ""))
			l := mustLease(t, h.q, "w")
			h.clock.Advance(3 * time.Second)
			if err := h.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "bad input", ErrorCode: "e.bad", DeadLetter: true}); err != nil {
				t.Fatal(err)
			}
		}},
		{"dead letters keep their order when their times tie", resourcelease.QueueConfig{}, func(t *testing.T, h *engineHarness) {
			var leases []*resourcelease.Lease
			for _, id := range []string{"a", "b", "c"} {
				h.q.Enqueue(ctx, item(id, ""))
				leases = append(leases, mustLease(t, h.q, "w"))
			}
			for i := len(leases) - 1; i >= 0; i-- { // dead-lettered c, b, a at one instant
				if err := h.q.Fail(ctx, leases[i].OwnershipToken, resourcelease.FailOptions{Reason: "no", DeadLetter: true}); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"expired then dead after max attempts", resourcelease.QueueConfig{MaxDeliveryAttempts: 2, LeaseDuration: 10 * time.Second}, func(t *testing.T, h *engineHarness) {
			h.q.Enqueue(ctx, item("a", ""))
			h.q.Enqueue(ctx, item("b", ""))
			mustLease(t, h.q, "w")
			h.clock.Advance(11 * time.Second)
			h.q.Sweep() // a: attempt 2, lastError lease_expired
			for range 2 {
				l := mustLease(t, h.q, "w")
				if l.Attempt == 2 {
					h.clock.Advance(11 * time.Second)
					h.q.Sweep() // a: dead (max attempts)
				}
			}
		}},
		{"completed items never come back and ids are not reused", resourcelease.QueueConfig{}, func(t *testing.T, h *engineHarness) {
			for _, id := range []string{"a", "b"} {
				h.q.Enqueue(ctx, item(id, ""))
				l := mustLease(t, h.q, "w")
				if err := h.q.Complete(ctx, l.OwnershipToken); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"drained", resourcelease.QueueConfig{}, func(t *testing.T, h *engineHarness) {
			h.q.Enqueue(ctx, item("a", ""))
			h.q.Enqueue(ctx, item("b", ""))
			if items, err := h.q.Drain(ctx); err != nil || len(items) != 2 {
				t.Fatalf("Drain = %d, %v", len(items), err)
			}
		}},
		{"restored with history", resourcelease.QueueConfig{}, func(t *testing.T, h *engineHarness) {
			at := time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC)
			if _, err := h.q.Restore(ctx, []resourcelease.PendingItem{
				{Payload: item("x", ""), Attempt: 3, EnqueuedAt: at, SequenceID: 900, LastError: &resourcelease.ErrorInfo{Message: "earlier", Code: "e.x"}},
				{Payload: item("y", ""), Attempt: 1, EnqueuedAt: at, SequenceID: 901, ReadyAt: h.clock.Now().Add(time.Hour)},
			}); err != nil {
				t.Fatal(err)
			}
		}},
		{"redriven and purged", resourcelease.QueueConfig{}, func(t *testing.T, h *engineHarness) {
			var seqs []int64
			for _, id := range []string{"a", "b", "c"} {
				h.q.Enqueue(ctx, item(id, ""))
				l := mustLease(t, h.q, "w")
				h.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "no", DeadLetter: true})
				seqs = append(seqs, l.SequenceID)
			}
			if n, err := h.q.Redrive(ctx, resourcelease.DeadLetterSelection{SequenceIDs: seqs[:1]}); err != nil || n != 1 {
				t.Fatalf("Redrive = %d, %v", n, err)
			}
			if n, err := h.q.Purge(ctx, resourcelease.DeadLetterSelection{SequenceIDs: seqs[1:2]}); err != nil || n != 1 {
				t.Fatalf("Purge = %d, %v", n, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newEngineHarness(t, tc.cfg)
			tc.run(t, h)
			leases := jsonOf(t, h.leases())
			before := snapshot(t, h.q)
			lastSeq := h.r.LastSequence()
			h.restart()
			if got := snapshot(t, h.q); got != before {
				t.Fatalf("after restart the queue is\n %s\nwant\n %s", got, before)
			}
			if got := jsonOf(t, h.st.Leased); got != leases {
				t.Fatalf("leases after restart\n %s\nwant\n %s", got, leases)
			}
			// New ids continue above every issued one, events continue the log.
			res, err := h.q.Enqueue(ctx, item("after", ""))
			if err != nil {
				t.Fatal(err)
			}
			if res.SequenceID < h.st.NextSequenceID || res.SequenceID <= lastSeqID(h.st) {
				t.Fatalf("enqueue after restart got sequence id %d, NextSequenceID %d", res.SequenceID, h.st.NextSequenceID)
			}
			evs, err := h.r.ReadEvents(ctx, lastSeq, 0)
			if err != nil || len(evs) == 0 || evs[0].SequenceNumber != lastSeq+1 {
				t.Fatalf("events after restart = %v, %v; want to start at %d", evs, err, lastSeq+1)
			}
		})
	}
}

// leases is what the harness's queue would persist for its live leases,
// read back from the database through LoadState.
func (h *engineHarness) leases() []resourcelease.LeasedItem {
	h.t.Helper()
	st, err := h.r.LoadState(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return st.Leased
}

func lastSeqID(st *resourcelease.QueueState) int64 {
	m := int64(0)
	for _, p := range st.Pending {
		m = max(m, p.SequenceID)
	}
	for _, l := range st.Leased {
		m = max(m, l.SequenceID)
	}
	for _, d := range st.DeadLetters {
		m = max(m, d.SequenceID)
	}
	return m
}

// TestEngineLeaseSurvivesRestart: a lease taken before a restart keeps its
// token, peer and grant time; the worker can heartbeat and complete it; a
// lease nobody heartbeats expires to the next attempt.
func TestEngineLeaseSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	h := newEngineHarness(t, resourcelease.QueueConfig{LeaseDuration: 30 * time.Second})
	h.q.Enqueue(ctx, item("kept", ""))
	h.q.Enqueue(ctx, item("abandoned", ""))
	kept := mustLease(t, h.q, "worker-1")
	abandoned := mustLease(t, h.q, "worker-2")
	grantedAt := h.clock.Now()
	h.restart()
	if len(h.st.Leased) != 2 {
		t.Fatalf("loaded %d leases, want 2", len(h.st.Leased))
	}
	for _, l := range h.st.Leased {
		want := map[int64]string{kept.SequenceID: "worker-1", abandoned.SequenceID: "worker-2"}[l.SequenceID]
		if l.PeerID != want || !l.LeasedAt.Equal(grantedAt) {
			t.Fatalf("loaded lease %+v: want peer %s leased at %v", l, want, grantedAt)
		}
	}
	h.clock.Advance(20 * time.Second)
	if _, err := h.q.Heartbeat(ctx, kept.OwnershipToken); err != nil {
		t.Fatalf("heartbeat with the pre-restart token: %v", err)
	}
	h.clock.Advance(20 * time.Second) // abandoned: 40 s without a heartbeat
	h.q.Sweep()
	if err := h.q.Complete(ctx, kept.OwnershipToken); err != nil {
		t.Fatalf("complete with the pre-restart token: %v", err)
	}
	if _, err := h.q.Heartbeat(ctx, abandoned.OwnershipToken); !errors.Is(err, resourcelease.ErrUnknownToken) {
		t.Fatalf("heartbeat of the expired lease: %v, want unknown_token", err)
	}
	again := mustLease(t, h.q, "worker-3")
	if again.SequenceID != abandoned.SequenceID || again.Attempt != 2 || again.LastError == nil || again.LastError.Code != resourcelease.CodeLeaseExpired {
		t.Fatalf("re-lease = %+v; want item %d attempt 2 with lastError lease_expired", again, abandoned.SequenceID)
	}
	h.restart() // and the requeue itself was durable
	if len(h.st.Leased) != 1 || h.st.Leased[0].Token != again.OwnershipToken {
		t.Fatalf("after a second restart leases are %+v, want the attempt-2 lease", h.st.Leased)
	}
}

// TestEngineReleaseSurvivesRestart: a released item is pending after a
// restart with its attempt uncounted, its delay and its count of releases in
// a row, so the release that goes over MaxReleases after the restart still
// counts as an attempt.
func TestEngineReleaseSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	h := newEngineHarness(t, resourcelease.QueueConfig{MaxReleases: 2, RequeueDelay: time.Minute})
	h.q.Enqueue(ctx, item("first", ""))
	h.q.Enqueue(ctx, item("second", ""))
	l := mustLease(t, h.q, "worker-1")
	if err := h.q.Release(ctx, l.OwnershipToken, resourcelease.ReleaseOptions{}); err != nil {
		t.Fatal(err)
	}
	l = mustLease(t, h.q, "worker-1")
	if l.Payload.ResourceID != "first" || l.Attempt != 1 {
		t.Fatalf("after a release: leased %q attempt %d, want first attempt 1 (its old place)", l.Payload.ResourceID, l.Attempt)
	}
	if err := h.q.Release(ctx, l.OwnershipToken, resourcelease.ReleaseOptions{Delay: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	h.restart()
	if len(h.st.Pending) != 2 || len(h.st.Leased) != 0 {
		t.Fatalf("after the restart: pending %d, leased %d; want 2 pending", len(h.st.Pending), len(h.st.Leased))
	}
	p := h.st.Pending[0]
	if p.Payload.ResourceID != "first" || p.Attempt != 1 || p.Releases != 2 || !p.ReadyAt.Equal(h.clock.Now().Add(10*time.Second)) {
		t.Fatalf("released item after the restart: %+v; want attempt 1, 2 releases, ready in 10 s", p)
	}
	if l := mustLease(t, h.q, "worker-2"); l.Payload.ResourceID != "second" {
		t.Fatalf("leased %q during the release delay, want second", l.Payload.ResourceID)
	}
	h.clock.Advance(10 * time.Second)
	l = mustLease(t, h.q, "worker-2")
	if l.Payload.ResourceID != "first" || l.Attempt != 1 {
		t.Fatalf("after the delay: leased %q attempt %d, want first attempt 1", l.Payload.ResourceID, l.Attempt)
	}
	// The third release in a row is over MaxReleases: a failed attempt.
	if err := h.q.Release(ctx, l.OwnershipToken, resourcelease.ReleaseOptions{}); err != nil {
		t.Fatal(err)
	}
	h.restart()
	p = h.st.Pending[len(h.st.Pending)-1]
	if p.Payload.ResourceID != "first" || p.Attempt != 2 || p.Releases != 0 || p.LastError == nil || p.LastError.Code != resourcelease.CodeReleaseLimit {
		t.Fatalf("after the release over the limit: %+v; want attempt 2, no releases, lastError release_limit", p)
	}
}

// TestEngineDedupeWindowSurvivesRestart: a request id seen before a restart
// still deduplicates after it, until the window passes; then the dedupe row
// is trimmed from the database.
func TestEngineDedupeWindowSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	h := newEngineHarness(t, resourcelease.QueueConfig{DedupeWindow: 5 * time.Minute})
	first, err := h.q.Enqueue(ctx, item("a", "order-42"))
	if err != nil {
		t.Fatal(err)
	}
	l := mustLease(t, h.q, "w")
	if err := h.q.Complete(ctx, l.OwnershipToken); err != nil { // the dedupe row outlives its item
		t.Fatal(err)
	}
	h.restart()
	h.clock.Advance(4 * time.Minute)
	again, err := h.q.Enqueue(ctx, item("a", "order-42"))
	if err != nil || !again.Duplicate || again.SequenceID != first.SequenceID {
		t.Fatalf("re-enqueue inside the window = %+v, %v; want duplicate of %d", again, err, first.SequenceID)
	}
	h.clock.Advance(2 * time.Minute)
	h.restart()
	if len(h.st.Dedupe) != 0 {
		t.Fatalf("loaded dedupe entries %+v after the window", h.st.Dedupe)
	}
	fresh, err := h.q.Enqueue(ctx, item("a", "order-42"))
	if err != nil || fresh.Duplicate || fresh.SequenceID == first.SequenceID {
		t.Fatalf("enqueue after the window = %+v, %v; want a new item", fresh, err)
	}
}

// TestEngineWithMemoryReplicator runs the engine on the in-memory replicator
// with a RecentLog and a synchronous sink: every mutation has its event, in
// order, and the Ack waits for the synchronous sink.
func TestEngineWithMemoryReplicator(t *testing.T) {
	ctx := context.Background()
	r := newMemory(t, replication.MemoryConfig{})
	recent, err := replication.NewRecentLog(4)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.AddSink("recent", recent, resourcelease.SinkOptions{Synchronous: true}); err != nil {
		t.Fatal(err)
	}
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Journal: r, Clock: leasetest.NewManualClock(time.Time{})})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	q.Enqueue(ctx, item("a", ""))
	l := mustLease(t, q, "w")
	q.Heartbeat(ctx, l.OwnershipToken)
	q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "x"})
	l = mustLease(t, q, "w")
	q.Complete(ctx, l.OwnershipToken) // its Ack returned: the synchronous sink has it
	var types []resourcelease.EventType
	for _, ev := range recent.Events() {
		types = append(types, ev.EventType)
	}
	want := []resourcelease.EventType{resourcelease.EventHeartbeat, resourcelease.EventFailed, resourcelease.EventLeaseGranted, resourcelease.EventCompleted}
	if jsonOf(t, types) != jsonOf(t, want) {
		t.Fatalf("recent events %v, want %v", types, want)
	}
	if r.LastSequence() != 6 {
		t.Fatalf("LastSequence = %d, want 6", r.LastSequence())
	}
}
