// Package replicatortest is the conformance suite every
// resourcelease.Replicator must pass: gap-free increasing sequence numbers,
// events shaped by resourcelease.NewEvent, ReadEvents paging, sink ordering,
// synchronous-sink failures reported with stage and sequence and then
// redelivered, batches for a resourcelease.BatchEventSink (redelivered
// whole), once-only application through a replication.CheckpointSink,
// and an idempotent, flushing Close. It is for tests only.
//
// It drives the Replicator as a Journal with hand-built Changes (Change), the
// way the queue engine does: Record calls serialised, Acks waited on after.
package replicatortest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Factory returns a fresh, empty Replicator for one subtest. It should
// register the replicator's Close (and the cleanup of anything it opened)
// with t.Cleanup; the suite may also Close it, so Close must be idempotent.
type Factory func(t *testing.T) resourcelease.Replicator

// Run runs the conformance suite against replicators made by newReplicator.
func Run(t *testing.T, newReplicator Factory) {
	t.Helper()
	cases := []struct {
		name string
		run  func(t *testing.T, r resourcelease.Replicator)
	}{
		{"SequencesAreGapFreeAndIncreasing", testSequences},
		{"EventShapeMatchesNewEvent", testEventShape},
		{"ReadEventsSinceAndLimit", testReadEvents},
		{"SinksReceiveEventsInOrder", testSinkOrder},
		{"SyncSinkFailureNamesStageAndSequenceThenRedelivers", testSyncSinkFailure},
		{"BatchSinkGetsWholeBatchesAndRedeliveries", testBatchSink},
		{"CheckpointSinkAppliesOnceUnderRedelivery", testCheckpointSink},
		{"AddSinkRejectsBadInput", testAddSinkErrors},
		{"CloseFlushesAndIsIdempotent", testClose},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, newReplicator(t))
		})
	}
}

// baseTime is the time of the first change the suite builds.
var baseTime = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// Change returns a realistic change of the given kind about the item with
// sequence id seq (bulk kinds: the items seq and seq+1), as the engine would
// record it: every field the kind documents is set. i spreads the timestamps.
func Change(kind resourcelease.ChangeKind, seq int64, i int) *resourcelease.Change {
	at := baseTime.Add(time.Duration(i) * time.Millisecond)
	item := resourcelease.PendingItem{
		Payload: resourcelease.Item{
			ResourceType: "demo.order", ResourceID: fmt.Sprintf("order-%04d", seq),
			PartitionKey: "tenant-" + strconv.FormatInt(seq%3+1, 10), PayloadEncoding: "application/json",
			Body:       []byte(`{"n":` + strconv.FormatInt(seq, 10) + `}`),
			Attributes: map[string]string{"tenant": "t" + strconv.FormatInt(seq%3, 10)},
			RequestID:  "req-" + strconv.FormatInt(seq, 10),
		},
		Attempt:    1,
		EnqueuedAt: baseTime,
		SequenceID: seq,
	}
	token := resourcelease.OwnershipToken{SequenceID: seq, Attempt: 1, LeaseID: uuid.NewSHA1(uuid.NameSpaceOID, []byte(strconv.FormatInt(seq, 10)))}
	c := &resourcelease.Change{Kind: kind, At: at, Pending: 3, Active: 1, DeadLettered: 0}
	switch kind {
	case resourcelease.ChangeEnqueued:
		c.Item = &item
	case resourcelease.ChangeLeased, resourcelease.ChangeHeartbeat:
		item.LastOwnershipToken = &token
		c.Item, c.Token, c.PeerID, c.LeaseExpiresAt, c.LeasedAt = &item, token, "worker-1", at.Add(30*time.Second), at
	case resourcelease.ChangeCompleted:
		item.LastOwnershipToken = &token
		c.Item, c.Token, c.PeerID, c.LeasedAt = &item, token, "worker-1", at
	case resourcelease.ChangeReleased:
		item.LastOwnershipToken = &token
		item.Releases = 1
		item.ReadyAt = at.Add(10 * time.Second) // a delayed release
		c.Item, c.Token, c.PeerID, c.LeasedAt = &item, token, "worker-1", at
	case resourcelease.ChangeRequeued, resourcelease.ChangeExpired:
		item.Attempt = 2
		item.LastOwnershipToken = &token
		item.LastError = &resourcelease.ErrorInfo{Message: "boom", Code: "e.boom"}
		item.ReadyAt = at.Add(time.Second)
		c.Item, c.Token, c.PeerID, c.LeasedAt, c.Error = &item, token, "worker-1", at, item.LastError
		c.Metadata = map[string]string{"worker.note": "retry <later> & \"soon\""}
	case resourcelease.ChangeDeadLettered:
		item.LastOwnershipToken = &token
		c.Item, c.Token, c.PeerID = &item, token, "worker-1"
		c.Error = &resourcelease.ErrorInfo{Message: "failed without requeue: bad input"}
	case resourcelease.ChangeDrained, resourcelease.ChangeRestored, resourcelease.ChangeRedriven:
		second := item
		second.SequenceID = seq + 1
		c.Items = []resourcelease.PendingItem{item, second}
	case resourcelease.ChangePurged:
		c.SequenceIDs = []int64{seq, seq + 1}
	case resourcelease.ChangeDeadLetterPurged:
		item.LastOwnershipToken = &token
		c.Item = &item
		c.Metadata = map[string]string{resourcelease.MetaPurgeReason: resourcelease.PurgeReasonMaxDeadLetters}
	}
	return c
}

// recorder serialises Records like the engine's lock does.
type recorder struct {
	mu sync.Mutex
	r  resourcelease.Replicator
}

func (rc *recorder) record(c *resourcelease.Change) resourcelease.Ack {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.r.Record(c)
}

func wait(t *testing.T, a resourcelease.Ack) error {
	t.Helper()
	if a == nil {
		return nil
	}
	return a.Wait()
}

func mustWait(t *testing.T, a resourcelease.Ack) {
	t.Helper()
	if err := wait(t, a); err != nil {
		t.Fatalf("Ack: %v", err)
	}
}

func readAll(t *testing.T, r resourcelease.Replicator, after int64) []resourcelease.Event {
	t.Helper()
	var out []resourcelease.Event
	for {
		evs, err := r.ReadEvents(context.Background(), after, 500)
		if err != nil {
			t.Fatalf("ReadEvents(%d): %v", after, err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].SequenceNumber
	}
}

func testSequences(t *testing.T, r resourcelease.Replicator) {
	base := r.LastSequence()
	rc := &recorder{r: r}
	const workers, per = 4, 50
	var mu sync.Mutex
	var order []string // resource ids in Record order
	var wg sync.WaitGroup
	errs := make(chan error, workers*per)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				seq := int64(w*per + i + 1)
				c := Change(resourcelease.ChangeEnqueued, seq, i)
				rc.mu.Lock()
				a := rc.r.Record(c)
				mu.Lock()
				order = append(order, c.Item.Payload.ResourceID)
				mu.Unlock()
				rc.mu.Unlock()
				if a != nil {
					if err := a.Wait(); err != nil {
						errs <- err
					}
				}
				// A concurrent tail must never see a gap or a reordering.
				if _, err := r.ReadEvents(context.Background(), base, 10); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	evs := readAll(t, r, base)
	if len(evs) != workers*per {
		t.Fatalf("read %d events, want %d", len(evs), workers*per)
	}
	for i, ev := range evs {
		if want := base + int64(i) + 1; ev.SequenceNumber != want {
			t.Fatalf("event %d has sequence %d, want %d", i, ev.SequenceNumber, want)
		}
		if ev.Payload == nil || ev.Payload.ResourceID != order[i] {
			t.Fatalf("event %d is not the %dth recorded change (%s)", ev.SequenceNumber, i, order[i])
		}
	}
	if got, want := r.LastSequence(), base+workers*per; got != want {
		t.Fatalf("LastSequence = %d, want %d", got, want)
	}
}

func testEventShape(t *testing.T, r resourcelease.Replicator) {
	base := r.LastSequence()
	// A history a queue could have produced, covering every kind: durable
	// replicators may check that each change fits the state before it.
	type step struct {
		kind resourcelease.ChangeKind
		seq  int64
	}
	steps := []step{
		{resourcelease.ChangeEnqueued, 1}, {resourcelease.ChangeLeased, 1}, {resourcelease.ChangeHeartbeat, 1}, {resourcelease.ChangeCompleted, 1},
		{resourcelease.ChangeEnqueued, 2}, {resourcelease.ChangeLeased, 2}, {resourcelease.ChangeRequeued, 2},
		{resourcelease.ChangeLeased, 2}, {resourcelease.ChangeExpired, 2}, {resourcelease.ChangeLeased, 2}, {resourcelease.ChangeDeadLettered, 2},
		{resourcelease.ChangeEnqueued, 3}, {resourcelease.ChangeLeased, 3}, {resourcelease.ChangeReleased, 3},
		{resourcelease.ChangeEnqueued, 10}, {resourcelease.ChangeEnqueued, 11}, {resourcelease.ChangeDrained, 10}, {resourcelease.ChangeRestored, 10},
		{resourcelease.ChangeLeased, 10}, {resourcelease.ChangeDeadLettered, 10}, {resourcelease.ChangeLeased, 11}, {resourcelease.ChangeDeadLettered, 11},
		{resourcelease.ChangeRedriven, 10},
		{resourcelease.ChangeLeased, 10}, {resourcelease.ChangeDeadLettered, 10}, {resourcelease.ChangeLeased, 11}, {resourcelease.ChangeDeadLettered, 11},
		{resourcelease.ChangePurged, 10},
		{resourcelease.ChangeEnqueued, 12}, {resourcelease.ChangeLeased, 12}, {resourcelease.ChangeDeadLettered, 12},
		{resourcelease.ChangeDeadLetterPurged, 12},
	}
	var want []resourcelease.Event
	for i, st := range steps {
		c := Change(st.kind, st.seq, i)
		ev := resourcelease.NewEvent(c)
		ev.SequenceNumber = base + int64(i) + 1
		want = append(want, ev)
		mustWait(t, r.Record(c))
	}
	got := readAll(t, r, base)
	if len(got) != len(want) {
		t.Fatalf("read %d events, want %d", len(got), len(want))
	}
	for i := range want {
		t.Run(fmt.Sprintf("%02d-%s", i, steps[i].kind), func(t *testing.T) {
			g, w := canonical(t, got[i]), canonical(t, want[i])
			if g != w {
				t.Fatalf("event differs from NewEvent:\n got  %s\n want %s", g, w)
			}
			for _, key := range []string{resourcelease.MetaQueuePending, resourcelease.MetaQueueActive} {
				if _, ok := got[i].Metadata[key]; !ok {
					t.Fatalf("metadata lacks %q: %v", key, got[i].Metadata)
				}
			}
		})
	}
}

// canonical is an event's JSON, the form in which two events compare equal
// regardless of how they were stored.
func canonical(t *testing.T, e resourcelease.Event) string {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testReadEvents(t *testing.T, r resourcelease.Replicator) {
	base := r.LastSequence()
	for i := range 10 {
		mustWait(t, r.Record(Change(resourcelease.ChangeEnqueued, int64(i+1), i)))
	}
	for _, tc := range []struct {
		name         string
		after        int64
		limit        int
		first, count int64
	}{
		{"from the start, limited", base, 3, base + 1, 3},
		{"from the middle, past the end", base + 7, 10, base + 8, 3},
		{"at the end", base + 10, 5, 0, 0},
		{"beyond the end", base + 100, 5, 0, 0},
		{"limit 0 means the default", base, 0, base + 1, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs, err := r.ReadEvents(context.Background(), tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(evs)) != tc.count {
				t.Fatalf("got %d events, want %d", len(evs), tc.count)
			}
			for i, ev := range evs {
				if ev.SequenceNumber != tc.first+int64(i) {
					t.Fatalf("event %d has sequence %d, want %d", i, ev.SequenceNumber, tc.first+int64(i))
				}
			}
		})
	}
	t.Run("negative after is invalid", func(t *testing.T) {
		_, err := r.ReadEvents(context.Background(), -1, 10)
		if resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
			t.Fatalf("err = %v, want invalid-argument", err)
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := r.ReadEvents(ctx, base, 10); err == nil {
			t.Fatal("ReadEvents with a cancelled context succeeded")
		}
	})
}

// seqSink records the sequence numbers it applies, into a shared trace.
type seqSink struct {
	name  string
	trace *trace
	fail  func(seq int64, attempt int) error // nil: never fails
	mu    sync.Mutex
	tries map[int64]int
}

type trace struct {
	mu      sync.Mutex
	entries []string // "name:seq"
	seen    map[string][]int64
	notify  chan struct{}
}

func newTrace() *trace { return &trace{seen: map[string][]int64{}, notify: make(chan struct{}, 1)} }

func (tr *trace) add(name string, seq int64) {
	tr.mu.Lock()
	tr.entries = append(tr.entries, name+":"+strconv.FormatInt(seq, 10))
	tr.seen[name] = append(tr.seen[name], seq)
	tr.mu.Unlock()
	select {
	case tr.notify <- struct{}{}:
	default:
	}
}

func (tr *trace) get(name string) []int64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]int64(nil), tr.seen[name]...)
}

// waitFor waits until name has seen seq (async sinks), failing after 10 s.
func (tr *trace) waitFor(t *testing.T, name string, seq int64) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		s := tr.get(name)
		if len(s) > 0 && s[len(s)-1] >= seq {
			return
		}
		select {
		case <-tr.notify:
		case <-deadline.C:
			t.Fatalf("sink %s did not reach sequence %d (has %v)", name, seq, s)
		}
	}
}

func (s *seqSink) ApplyEvent(_ context.Context, e resourcelease.Event) error {
	s.mu.Lock()
	if s.tries == nil {
		s.tries = map[int64]int{}
	}
	s.tries[e.SequenceNumber]++
	attempt := s.tries[e.SequenceNumber]
	s.mu.Unlock()
	if s.fail != nil {
		if err := s.fail(e.SequenceNumber, attempt); err != nil {
			return err
		}
	}
	s.trace.add(s.name, e.SequenceNumber)
	return nil
}

func (s *seqSink) attempts(seq int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tries[seq]
}

func testSinkOrder(t *testing.T, r resourcelease.Replicator) {
	tr := newTrace()
	for _, s := range []struct {
		name string
		sync bool
	}{{"sync-a", true}, {"sync-b", true}, {"async-c", false}} {
		if err := r.AddSink(s.name, &seqSink{name: s.name, trace: tr}, resourcelease.SinkOptions{Synchronous: s.sync}); err != nil {
			t.Fatal(err)
		}
	}
	base := r.LastSequence()
	rc := &recorder{r: r}
	const n = 60
	var acks []resourcelease.Ack
	for i := range n {
		a := rc.record(Change(resourcelease.ChangeEnqueued, int64(i+1), i))
		acks = append(acks, a)
		if i%10 == 9 { // wait now and then, so batches of several sizes form
			for j, a := range acks {
				mustWait(t, a)
				seq := base + int64(i-len(acks)+j+2)
				for _, name := range []string{"sync-a", "sync-b"} {
					if got := tr.get(name); len(got) == 0 || got[len(got)-1] < seq {
						t.Fatalf("Ack of %d returned before synchronous sink %s applied it (has %v)", seq, name, got)
					}
				}
			}
			acks = acks[:0]
		}
	}
	tr.waitFor(t, "async-c", base+n)
	for _, name := range []string{"sync-a", "sync-b", "async-c"} {
		got := tr.get(name)
		if len(got) != n {
			t.Fatalf("%s got %d events, want %d", name, len(got), n)
		}
		for i, seq := range got {
			if seq != base+int64(i)+1 {
				t.Fatalf("%s got %v, want %d..%d in order", name, got, base+1, base+n)
			}
		}
	}
	// Synchronous sinks run in registration order: a before b, event by event.
	tr.mu.Lock()
	defer tr.mu.Unlock()
	pos := map[string]int{}
	for i, e := range tr.entries {
		pos[e] = i
	}
	for seq := base + 1; seq <= base+n; seq++ {
		a, b := pos["sync-a:"+strconv.FormatInt(seq, 10)], pos["sync-b:"+strconv.FormatInt(seq, 10)]
		if a > b {
			t.Fatalf("sync-b applied %d before sync-a", seq)
		}
	}
}

func testSyncSinkFailure(t *testing.T, r resourcelease.Replicator) {
	tr := newTrace()
	base := r.LastSequence()
	blocked, release := make(chan struct{}), make(chan struct{})
	failAt := base + 3
	s := &seqSink{name: "audit", trace: tr, fail: func(seq int64, attempt int) error {
		switch {
		case seq == base+1 && attempt == 1:
			close(blocked)
			<-release // hold the writer so that the next Records form one batch
		case seq == failAt && attempt == 1:
			return errors.New("audit store is down")
		}
		return nil
	}}
	if err := r.AddSink("audit", s, resourcelease.SinkOptions{Synchronous: true}); err != nil {
		t.Fatal(err)
	}
	rc := &recorder{r: r}
	first := rc.record(Change(resourcelease.ChangeEnqueued, 1, 0))
	<-blocked
	var acks []resourcelease.Ack // base+2 .. base+4, one batch
	for i := 2; i <= 4; i++ {
		acks = append(acks, rc.record(Change(resourcelease.ChangeEnqueued, int64(i), i)))
	}
	close(release)
	mustWait(t, first)
	mustWait(t, acks[0])
	for i, a := range acks[1:] {
		err := wait(t, a)
		var e *resourcelease.Error
		if !errors.As(err, &e) {
			t.Fatalf("Ack of %d: err = %v, want an *resourcelease.Error", failAt+int64(i), err)
		}
		if e.Code != resourcelease.CodeReplicationFailed || e.Status != resourcelease.StatusUnavailable {
			t.Fatalf("Ack of %d: %s/%s, want unavailable/%s", failAt+int64(i), e.Status, e.Code, resourcelease.CodeReplicationFailed)
		}
		for _, part := range []string{"audit", strconv.FormatInt(failAt, 10), "audit store is down"} {
			if !strings.Contains(e.Message, part) {
				t.Fatalf("message %q does not name %q", e.Message, part)
			}
		}
	}
	if got := tr.get("audit"); len(got) != 2 {
		t.Fatalf("sink applied %v, want only %d and %d before the failure", got, base+1, base+2)
	}
	// The next Record redelivers the failed event (and the one blocked behind
	// it) first; its own Ack succeeds.
	mustWait(t, rc.record(Change(resourcelease.ChangeEnqueued, 5, 5)))
	want := []int64{base + 1, base + 2, base + 3, base + 4, base + 5}
	if got := tr.get("audit"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sink applied %v, want %v (each once, in order)", got, want)
	}
	if n := s.attempts(failAt); n != 2 {
		t.Fatalf("event %d was attempted %d times, want 2", failAt, n)
	}
	if st, ok := r.(interface {
		SinkStatus(string) (replication.SinkStatus, bool)
	}); ok {
		status, found := st.SinkStatus("audit")
		if !found || !status.Healthy || status.Failures != 1 || status.LastErrorSequence != failAt || status.AppliedSequence != base+5 {
			t.Fatalf("SinkStatus = %+v, %v; want healthy, 1 failure at %d, applied %d", status, found, failAt, base+5)
		}
	}
}

func testCheckpointSink(t *testing.T, r resourcelease.Replicator) {
	var mu sync.Mutex
	applied := map[int64]int{}
	cp, err := replication.NewCheckpointSink(context.Background(), func(_ context.Context, e resourcelease.Event) error {
		mu.Lock()
		applied[e.SequenceNumber]++
		mu.Unlock()
		return nil
	}, replication.CheckpointOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := r.LastSequence()
	// The checkpointed part applies, then the next stage of the same sink
	// fails once on base+2: the whole sink gets the event again.
	failed := false
	sink := sinkFunc(func(ctx context.Context, e resourcelease.Event) error {
		if err := cp.ApplyEvent(ctx, e); err != nil {
			return err
		}
		if e.SequenceNumber == base+2 && !failed {
			failed = true
			return errors.New("downstream hiccup")
		}
		return nil
	})
	if err := r.AddSink("checkpointed", sink, resourcelease.SinkOptions{Synchronous: true}); err != nil {
		t.Fatal(err)
	}
	kinds := []resourcelease.ChangeKind{resourcelease.ChangeEnqueued, resourcelease.ChangeLeased, resourcelease.ChangeCompleted, resourcelease.ChangeEnqueued}
	var errs []error
	for i, k := range kinds {
		errs = append(errs, wait(t, r.Record(Change(k, 1, i))))
	}
	if errs[0] != nil || errs[1] == nil || errs[2] != nil || errs[3] != nil {
		t.Fatalf("Ack errors = %v, want only the second to fail", errs)
	}
	mu.Lock()
	defer mu.Unlock()
	for seq := base + 1; seq <= base+4; seq++ {
		if applied[seq] != 1 {
			t.Fatalf("event %d applied %d times, want once (all: %v)", seq, applied[seq], applied)
		}
	}
	if got := cp.Checkpoint(); got != base+4 {
		t.Fatalf("Checkpoint = %d, want %d", got, base+4)
	}
	if got := cp.PeerCheckpoint("worker-1"); got != base+3 {
		t.Fatalf("PeerCheckpoint(worker-1) = %d, want %d (the completion)", got, base+3)
	}
	if a, s := cp.Counts(); a != 4 || s != 1 {
		t.Fatalf("Counts = %d applied, %d skipped; want 4, 1", a, s)
	}
}

type sinkFunc func(ctx context.Context, e resourcelease.Event) error

func (f sinkFunc) ApplyEvent(ctx context.Context, e resourcelease.Event) error { return f(ctx, e) }

func testAddSinkErrors(t *testing.T, r resourcelease.Replicator) {
	ok := &seqSink{name: "x", trace: newTrace()}
	if err := r.AddSink("x", ok, resourcelease.SinkOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		sinkName string
		sink     resourcelease.EventSink
	}{
		{"empty name", "", ok},
		{"nil sink", "y", nil},
		{"duplicate name", "x", ok},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.AddSink(tc.sinkName, tc.sink, resourcelease.SinkOptions{}); resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
				t.Fatalf("AddSink err = %v, want invalid-argument", err)
			}
		})
	}
}

func testClose(t *testing.T, r resourcelease.Replicator) {
	tr := newTrace()
	if err := r.AddSink("async", &seqSink{name: "async", trace: tr}, resourcelease.SinkOptions{}); err != nil {
		t.Fatal(err)
	}
	base := r.LastSequence()
	rc := &recorder{r: r}
	var acks []resourcelease.Ack
	for i := range 25 {
		acks = append(acks, rc.record(Change(resourcelease.ChangeEnqueued, int64(i+1), i)))
	}
	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, a := range acks {
		if err := wait(t, a); err != nil {
			t.Fatalf("Ack %d after Close: %v", i, err)
		}
	}
	if got := r.LastSequence(); got != base+25 {
		t.Fatalf("LastSequence after Close = %d, want %d (Close must flush)", got, base+25)
	}
	if got := tr.get("async"); len(got) != 25 {
		t.Fatalf("async sink has %d events after Close, want all 25 (a healthy sink is flushed)", len(got))
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	err := wait(t, r.Record(Change(resourcelease.ChangeEnqueued, 99, 99)))
	if !errors.Is(err, resourcelease.ErrClosed) {
		t.Fatalf("Record after Close: %v, want ErrClosed", err)
	}
	if err := r.AddSink("late", &seqSink{name: "late", trace: tr}, resourcelease.SinkOptions{}); !errors.Is(err, resourcelease.ErrClosed) {
		t.Fatalf("AddSink after Close: %v, want ErrClosed", err)
	}
	if got := r.LastSequence(); got != base+25 {
		t.Fatalf("LastSequence moved after Close: %d", got)
	}
}

// batchSink is a resourcelease.BatchEventSink that records each call.
type batchSink struct {
	mu     sync.Mutex
	calls  [][]int64 // every ApplyEvents call, failed ones included
	ok     []int64   // events of successful calls, in order
	single int       // ApplyEvent calls (must stay 0)
	hook   func(seqs []int64) error
	notify chan struct{}
}

func (b *batchSink) ApplyEvent(context.Context, resourcelease.Event) error {
	b.mu.Lock()
	b.single++
	b.mu.Unlock()
	return errors.New("ApplyEvent called on a batch sink")
}

func (b *batchSink) ApplyEvents(_ context.Context, evs []resourcelease.Event) error {
	seqs := make([]int64, len(evs))
	for i, e := range evs {
		seqs[i] = e.SequenceNumber
	}
	var err error
	if b.hook != nil {
		err = b.hook(seqs)
	}
	b.mu.Lock()
	b.calls = append(b.calls, seqs)
	if err == nil {
		b.ok = append(b.ok, seqs...)
	}
	b.mu.Unlock()
	if b.notify != nil {
		select {
		case b.notify <- struct{}{}:
		default:
		}
	}
	return err
}

func (b *batchSink) snapshot() (calls [][]int64, ok []int64, single int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([][]int64(nil), b.calls...), append([]int64(nil), b.ok...), b.single
}

func testBatchSink(t *testing.T, r resourcelease.Replicator) {
	base := r.LastSequence()
	blocked, release := make(chan struct{}), make(chan struct{})
	failed := false
	sync := &batchSink{hook: func(seqs []int64) error {
		switch {
		case seqs[0] == base+1:
			close(blocked)
			<-release // hold the writer: the next Records form one batch
		case !failed && len(seqs) > 1:
			failed = true
			return errors.New("coordinator store is down")
		}
		return nil
	}}
	async := &batchSink{notify: make(chan struct{}, 1)}
	if err := r.AddSink("coordinator", sync, resourcelease.SinkOptions{Synchronous: true}); err != nil {
		t.Fatal(err)
	}
	if err := r.AddSink("follower", async, resourcelease.SinkOptions{}); err != nil {
		t.Fatal(err)
	}
	rc := &recorder{r: r}
	first := rc.record(Change(resourcelease.ChangeEnqueued, 1, 0))
	<-blocked
	var acks []resourcelease.Ack // base+2 .. base+4: one batch
	for i := 2; i <= 4; i++ {
		acks = append(acks, rc.record(Change(resourcelease.ChangeEnqueued, int64(i), i)))
	}
	close(release)
	mustWait(t, first)
	for i, a := range acks { // the batch failed as a whole
		err := wait(t, a)
		var e *resourcelease.Error
		if !errors.As(err, &e) || e.Code != resourcelease.CodeReplicationFailed ||
			!strings.Contains(e.Message, "coordinator") || !strings.Contains(e.Message, strconv.FormatInt(base+2, 10)) {
			t.Fatalf("Ack of %d = %v; want replication_failed naming the sink and sequence %d", base+2+int64(i), err, base+2)
		}
	}
	mustWait(t, rc.record(Change(resourcelease.ChangeEnqueued, 5, 5)))
	calls, ok, single := sync.snapshot()
	want := fmt.Sprint([]int64{base + 1, base + 2, base + 3, base + 4, base + 5})
	if fmt.Sprint(ok) != want || single != 0 {
		t.Fatalf("synchronous batch sink applied %v (calls %v, %d single calls), want %s", ok, calls, single, want)
	}
	if len(calls) < 4 || fmt.Sprint(calls[1]) != fmt.Sprint(calls[2]) {
		t.Fatalf("calls %v: the failed batch must be redelivered whole", calls)
	}
	// The asynchronous batch sink gets everything, in order, in batches.
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		_, got, single := async.snapshot()
		if single != 0 {
			t.Fatal("ApplyEvent called on an asynchronous batch sink")
		}
		if len(got) == 5 {
			if fmt.Sprint(got) != want {
				t.Fatalf("asynchronous batch sink applied %v, want %s", got, want)
			}
			break
		}
		select {
		case <-async.notify:
		case <-deadline.C:
			t.Fatalf("asynchronous batch sink has %v after 10 s", got)
		}
	}
}
