package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

var bg = context.Background()

func qitem(id string) resourcelease.Item {
	return resourcelease.Item{ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"id":"` + id + `"}`)}
}

func TestQueueConfigValidation(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	for _, tc := range []struct {
		name string
		cfg  postgres.QueueConfig
	}{
		{"negative lease", postgres.QueueConfig{LeaseDuration: -time.Second}},
		{"lease below a millisecond", postgres.QueueConfig{LeaseDuration: time.Microsecond}},
		{"capacity", postgres.QueueConfig{Capacity: -2}},
		{"full mode", postgres.QueueConfig{FullMode: 9}},
		{"attempts", postgres.QueueConfig{MaxDeliveryAttempts: -1}},
		{"releases", postgres.QueueConfig{MaxReleases: -2}},
		{"dedupe", postgres.QueueConfig{DedupeWindow: -2}},
		{"retention", postgres.QueueConfig{EventRetention: -2}},
		{"batch", postgres.QueueConfig{MaxBatch: -1}},
		{"poll", postgres.QueueConfig{PollInterval: -time.Second}},
		{"heartbeat not shorter than lease", postgres.QueueConfig{LeaseDuration: time.Second, HeartbeatInterval: time.Second}},
		{"max delay below delay", postgres.QueueConfig{RequeueDelay: time.Minute, MaxRequeueDelay: time.Second}},
		{"overflowing duration", postgres.QueueConfig{SweepInterval: resourcelease.MaxDuration + 1}},
		{"delayed capacity", postgres.QueueConfig{DelayedCapacity: -2}},
		{"partition limit", postgres.QueueConfig{MaxActivePerPartition: -1}},
		{"fairness", postgres.QueueConfig{Fairness: "lottery"}},
		{"dead-letter retention", postgres.QueueConfig{DeadLetterRetention: -time.Second}},
		{"dead-letter retention overflowing", postgres.QueueConfig{DeadLetterRetention: resourcelease.MaxDuration + 1}},
		{"max dead letters", postgres.QueueConfig{MaxDeadLetters: -2}},
	} {
		q, err := postgres.NewQueue(bg, s, tc.cfg)
		if q != nil || resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
			t.Errorf("%s: NewQueue = %v, %v; want invalid-argument", tc.name, q, err)
		}
	}
	if _, err := postgres.NewQueue(bg, nil, postgres.QueueConfig{}); resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
		t.Errorf("NewQueue(nil store): %v", err)
	}
	q, err := postgres.NewQueue(bg, s, postgres.QueueConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	c := q.Config()
	if c.Capacity != 512 || c.LeaseDuration != 30*time.Second || c.HeartbeatInterval != 5*time.Second ||
		c.SweepInterval != time.Second || c.MaxDeliveryAttempts != 5 || c.MaxReleases != 10 ||
		c.DedupeWindow != 10*time.Minute || c.EventRetention != postgres.DefaultEventRetention ||
		c.PollInterval != time.Second || c.MaxBatch != postgres.DefaultMaxBatch ||
		c.DelayedCapacity != resourcelease.DefaultDelayedCapacity || c.Fairness != resourcelease.FairnessFIFO ||
		c.MaxActivePerPartition != 0 || c.DeadLetterRetention != 0 || c.MaxDeadLetters != resourcelease.DefaultMaxDeadLetters {
		t.Fatalf("defaults %+v", c)
	}
}

// TestQueueRefusesTextPostgresCannotHold: an item with NUL or invalid UTF-8
// in a text field is refused before it joins a transaction shared with
// other callers; the others commit.
func TestQueueRefusesTextPostgresCannotHold(t *testing.T) {
	t.Parallel()
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{})
	for _, bad := range []func(*resourcelease.Item){
		func(it *resourcelease.Item) { it.ResourceID = "a\x00b" },
		func(it *resourcelease.Item) { it.PartitionKey = "\xff" },
		func(it *resourcelease.Item) { it.Attributes = map[string]string{"k": "v\x00"} },
		func(it *resourcelease.Item) { it.RequestID = "\xc3" },
	} {
		it := qitem("x")
		bad(&it)
		if _, err := q.Enqueue(bg, it); resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
			t.Errorf("Enqueue(%+v): %v, want invalid-argument", it, err)
		}
	}
	out, err := q.EnqueueBatch(bg, []resourcelease.Item{qitem("a"), {ResourceType: "t", ResourceID: "\x00", PartitionKey: "p", PayloadEncoding: "e"}, qitem("c")})
	if err != nil || out[0].Err != nil || out[1].Err == nil || out[2].Err != nil {
		t.Fatalf("EnqueueBatch = %+v, %v; want the middle item refused alone", out, err)
	}
	// Free text a worker sends (a failure's reason) is stored with the bad
	// bytes replaced rather than failing the call.
	l, err := q.Lease(bg, "peer\x00", 0)
	if err != nil || l == nil {
		t.Fatalf("Lease: %v, %v", l, err)
	}
	if err := q.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{Reason: "bad \xff\x00 bytes"}); err != nil {
		t.Fatalf("Fail with bad text: %v", err)
	}
}

func TestQueueBatchCalls(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var commits [][]postgres.Committed
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{Capacity: 5, FullMode: resourcelease.FullReject,
		OnCommit: func(cs []postgres.Committed) { mu.Lock(); commits = append(commits, cs); mu.Unlock() }})
	dup := qitem("dup")
	dup.RequestID = "r-1"
	items := []resourcelease.Item{qitem("a"), {}, dup, qitem("b"), dup, qitem("c"), qitem("d"), qitem("e")}
	out, err := q.EnqueueBatch(bg, items)
	if err != nil {
		t.Fatal(err)
	}
	wantErr := []string{"", resourcelease.CodePayloadRequired, "", "", "", "", "", resourcelease.CodeQueueFull}
	if len(out) != len(items) {
		t.Fatalf("%d outcomes for %d items", len(out), len(items))
	}
	for i, o := range out {
		if resourcelease.CodeOf(o.Err) != wantErr[i] && !(wantErr[i] == resourcelease.CodePayloadRequired && resourcelease.StatusOf(o.Err) == resourcelease.StatusInvalidArgument) {
			t.Fatalf("item %d: %v, want %q", i, o.Err, wantErr[i])
		}
	}
	if !out[4].Duplicate || out[4].SequenceID != out[2].SequenceID || out[2].Duplicate {
		t.Fatalf("the repeated request id: %+v and %+v; want the second a duplicate of the first", out[2], out[4])
	}
	mu.Lock()
	if len(commits) != 1 || len(commits[0]) != 5 {
		t.Fatalf("commits %d (first of %d changes); want the batch in one commit of 5 enqueues", len(commits), len(commits[0]))
	}
	commits = nil
	mu.Unlock()

	// Lease a batch: at most maxItems, within maxBytes but at least one.
	ls, err := q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 3})
	if err != nil || len(ls) != 3 || ls[0].Payload.ResourceID != "a" || ls[1].Payload.ResourceID != "dup" || ls[2].Payload.ResourceID != "b" {
		t.Fatalf("LeaseBatch(3) = %+v, %v; want a, dup, b", ls, err)
	}
	one, err := q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 10, MaxBytes: 1})
	if err != nil || len(one) != 1 || one[0].Payload.ResourceID != "c" {
		t.Fatalf("LeaseBatch(10, 1 byte) = %+v, %v; want just c", one, err)
	}
	if _, err := q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: postgres.MaxLeaseBatch + 1}); resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
		t.Fatalf("LeaseBatch(MaxLeaseBatch+1): %v", err)
	}
	stale := ls[0].OwnershipToken
	stale.Attempt = 9
	hbs, err := q.HeartbeatBatch(bg, []resourcelease.OwnershipToken{ls[0].OwnershipToken, stale, ls[1].OwnershipToken})
	if err != nil || hbs[0].Err != nil || !errors.Is(hbs[1].Err, resourcelease.ErrUnknownToken) || hbs[2].Err != nil || hbs[0].LeaseExpiresAt.IsZero() {
		t.Fatalf("HeartbeatBatch = %+v, %v", hbs, err)
	}
	errs, err := q.CompleteBatch(bg, []resourcelease.OwnershipToken{ls[0].OwnershipToken, ls[1].OwnershipToken, ls[0].OwnershipToken, ls[2].OwnershipToken})
	if err != nil || errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], resourcelease.ErrUnknownToken) || errs[3] != nil {
		t.Fatalf("CompleteBatch = %v, %v; want the repeated token refused", errs, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n := len(commits); n != 4 || len(commits[3]) != 3 {
		t.Fatalf("%d commits (last %d changes), want one per batch call and 3 completions in the last", n, len(commits[n-1]))
	}
	st, err := q.Stats(bg)
	if err != nil || st != (resourcelease.Stats{PendingCount: 1, ActiveLeaseCount: 1}) {
		t.Fatalf("stats %+v, %v", st, err)
	}
}

// queueCounts checks the counter row against count(*) of the items table.
func queueCounts(t *testing.T, pool interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}) {
	t.Helper()
	var ok bool
	var detail string
	err := pool.QueryRow(bg, `SELECT
			(SELECT pending_count FROM leasemesh.queue_state) = (SELECT count(*) FROM leasemesh.items WHERE state = 'pending')
			AND (SELECT delayed_count FROM leasemesh.queue_state) = (SELECT count(*) FROM leasemesh.items WHERE state = 'scheduled')
			AND (SELECT active_count FROM leasemesh.queue_state) = (SELECT count(*) FROM leasemesh.items WHERE state = 'leased')
			AND (SELECT dead_letter_count FROM leasemesh.queue_state) = (SELECT count(*) FROM leasemesh.items WHERE state = 'dead')
			AND (SELECT next_event_sequence - 1 FROM leasemesh.queue_state) = (SELECT coalesce(max(sequence_number), 0) FROM leasemesh.events),
		(SELECT row_to_json(s)::text FROM leasemesh.queue_state s) || ' items ' ||
			(SELECT coalesce(json_object_agg(state, n), '{}')::text FROM (SELECT state, count(*) n FROM leasemesh.items GROUP BY state) x)`).Scan(&ok, &detail)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		t.Fatalf("the counter row disagrees with the tables: %s", detail)
	}
}

// TestQueueGroupCommit: concurrent callers share transactions, the log
// stays gap-free and in step with the tables, and the counter row's counts
// equal count(*).
func TestQueueGroupCommit(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	most := 0
	url := pgtest.NewDatabase(t)
	q := openQueue(t, url, nil, postgres.QueueConfig{Capacity: -1, OnCommit: func(cs []postgres.Committed) {
		mu.Lock()
		most = max(most, len(cs))
		mu.Unlock()
	}})
	const workers, rounds = 24, 15
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				it := qitem(fmt.Sprint(w, "-", i))
				it.RequestID = it.ResourceID
				if _, err := q.Enqueue(bg, it); err != nil {
					t.Error(err)
					return
				}
				l, err := q.Lease(bg, fmt.Sprint("w", w), 5*time.Second)
				if err != nil || l == nil {
					t.Errorf("Lease: %v, %v", l, err)
					return
				}
				switch i % 3 {
				case 0:
					err = q.Complete(bg, l.OwnershipToken)
				case 1:
					_, err = q.Heartbeat(bg, l.OwnershipToken)
					if err == nil {
						err = q.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{Reason: "again"})
					}
				case 2:
					err = q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if most < 2 {
		t.Errorf("at most %d changes per commit: concurrent callers did not share transactions", most)
	}
	evs := readAll(t, q)
	for i, e := range evs {
		if e.SequenceNumber != int64(i+1) {
			t.Fatalf("event %d has number %d", i, e.SequenceNumber)
		}
	}
	queueCounts(t, q.Store().Pool())
	st, _ := q.Stats(bg)
	// Each round adds an item and completes one, or fails or releases
	// one (an item failed five times, by whichever workers leased it, is
	// dead).
	if want := workers * rounds * 2 / 3; st.PendingCount+st.DeadLetterCount != want || st.ActiveLeaseCount != 0 {
		t.Fatalf("stats %+v, want %d pending or dead", st, want)
	}
}

// TestQueueAcrossProcesses: two queues on one schema (two dispatchers) share
// one queue: FIFO across them, tokens honoured by either, a long-poll on one
// woken by an enqueue on the other through NOTIFY, one gap-free log, and an
// expiry swept once when both sweep.
func TestQueueAcrossProcesses(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	clock := leasetest.NewManualClock(time.Time{})
	// Hour-long poll intervals: only a notification can wake a waiter.
	cfg := postgres.QueueConfig{LeaseDuration: 10 * time.Second, PollInterval: time.Hour, SweepInterval: time.Hour}
	a := openQueue(t, url, clock, cfg)
	b := openQueue(t, url, clock, cfg)
	waitListening(t, b)

	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := b.Lease(bg, "on-b", time.Hour)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitFor(t, "the waiter on b", func() bool { return b.Waiters() == 1 })
	start := time.Now()
	if _, err := a.Enqueue(bg, qitem("x")); err != nil {
		t.Fatal(err)
	}
	var l *resourcelease.Lease
	select {
	case l = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("an enqueue on a did not wake the long-poll on b")
	}
	t.Logf("woken across queues in %v", time.Since(start))
	if l == nil || l.Payload.ResourceID != "x" {
		t.Fatalf("b's waiter got %+v", l)
	}
	// The token works on the other queue.
	if _, err := a.Heartbeat(bg, l.OwnershipToken); err != nil {
		t.Fatalf("heartbeat on a of b's lease: %v", err)
	}
	if err := a.Complete(bg, l.OwnershipToken); err != nil {
		t.Fatalf("complete on a of b's lease: %v", err)
	}
	if err := b.Complete(bg, l.OwnershipToken); !errors.Is(err, resourcelease.ErrUnknownToken) {
		t.Fatalf("second complete on b: %v, want unknown_token", err)
	}
	// FIFO across both.
	for i, q := range []*postgres.Queue{a, b, a, b} {
		if _, err := q.Enqueue(bg, qitem(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	var held []*resourcelease.Lease
	for i, q := range []*postgres.Queue{b, a, b, a} {
		l, err := q.Lease(bg, "w", 0)
		if err != nil || l == nil || l.Payload.ResourceID != fmt.Sprint(i) {
			t.Fatalf("lease %d = %+v, %v; want item %d", i, l, err, i)
		}
		held = append(held, l)
	}
	// Both sweep at once: each expiry happens once.
	clock.Advance(11 * time.Second)
	var wg sync.WaitGroup
	var na, nb int
	wg.Add(2)
	go func() { defer wg.Done(); na, _ = a.Sweep(bg) }()
	go func() { defer wg.Done(); nb, _ = b.Sweep(bg) }()
	wg.Wait()
	if na+nb != len(held) {
		t.Fatalf("the sweeps expired %d + %d leases, want %d in all", na, nb, len(held))
	}
	evs := readAll(t, b)
	expired := 0
	for i, e := range evs {
		if e.SequenceNumber != int64(i+1) {
			t.Fatalf("event %d has number %d", i, e.SequenceNumber)
		}
		if e.EventType == resourcelease.EventLeaseExpired {
			expired++
		}
	}
	if expired != len(held) {
		t.Fatalf("%d LeaseExpired events, want %d", expired, len(held))
	}
	if ea := readAll(t, a); len(ea) != len(evs) {
		t.Fatalf("a reads %d events, b %d: the log is one", len(ea), len(evs))
	}
	// A drain on one drains the queue for both.
	items, more, err := a.DrainN(bg, 0, 0)
	if err != nil || more || len(items) != len(held) {
		t.Fatalf("DrainN = %d items, %v, %v", len(items), more, err)
	}
	if st, _ := b.Stats(bg); st != (resourcelease.Stats{}) {
		t.Fatalf("b's stats after a's drain: %+v", st)
	}
	queueCounts(t, a.Store().Pool())
}

// TestQueuePollsWhenNoNotificationCame: an item that became ready without a
// notification (one lost while the listener was reconnecting, say) reaches
// a parked long-poll through the poll fallback.
func TestQueuePollsWhenNoNotificationCame(t *testing.T) {
	t.Parallel()
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{PollInterval: 100 * time.Millisecond})
	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := q.Lease(bg, "w", 30*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitFor(t, "the waiter", func() bool { return q.Waiters() == 1 })
	// What another dispatcher's enqueue writes, without its NOTIFY.
	if _, err := q.Store().Pool().Exec(bg, `WITH c AS (
			UPDATE leasemesh.queue_state SET next_sequence_id = next_sequence_id + 1, pending_count = pending_count + 1
			RETURNING next_sequence_id - 1 AS seq)
		INSERT INTO leasemesh.items (sequence_id, state, resource_type, resource_id, partition_key, payload_encoding, enqueued_at)
		SELECT seq, 'pending', 't', 'silent', 'p', 'e', now() FROM c`); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if l == nil || l.Payload.ResourceID != "silent" {
			t.Fatalf("the waiter got %+v", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the poll fallback did not serve the waiter")
	}
}

// TestQueueCommitHook: what a CommitHook writes commits with the changes;
// a hook that fails rolls the whole transaction back.
func TestQueueCommitHook(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	s := openStore(t, url, postgres.Config{})
	var fail bool
	var mu sync.Mutex
	hook := func(ctx context.Context, tx pgx.Tx, events []resourcelease.Event) error {
		mu.Lock()
		f := fail
		mu.Unlock()
		recs := make([]deterministic.KeyedRecord, len(events))
		for i, e := range events {
			recs[i] = deterministic.KeyedRecord{Key: fmt.Sprintf("effects/seq/%d", e.SequenceNumber),
				Record: resourcelease.Record{Kind: string(e.EventType), Version: e.SequenceNumber, Payload: []byte(e.EventType)}}
		}
		if _, err := s.StateStore().TryAddManyTx(ctx, tx, recs); err != nil {
			return err
		}
		if f {
			return errors.New("hook refuses")
		}
		return nil
	}
	q, err := postgres.NewQueue(bg, s, postgres.QueueConfig{CommitHook: hook})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Enqueue(bg, qitem("a")); err != nil {
		t.Fatal(err)
	}
	l, err := q.Lease(bg, "w", 0)
	if err != nil || l == nil {
		t.Fatal(l, err)
	}
	if _, _, err := q.DrainN(bg, 0, 0); err != nil { // nothing pending: no event, no hook
		t.Fatal(err)
	}
	for seq := int64(1); seq <= 2; seq++ {
		rec, ok, err := s.StateStore().Get(bg, fmt.Sprintf("effects/seq/%d", seq))
		if err != nil || !ok || rec.Version != seq {
			t.Fatalf("effect of event %d: %+v, %v, %v", seq, rec, ok, err)
		}
	}
	mu.Lock()
	fail = true
	mu.Unlock()
	if err := q.Complete(bg, l.OwnershipToken); err == nil {
		t.Fatal("Complete with a failing hook succeeded")
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	if _, ok, _ := s.StateStore().Get(bg, "effects/seq/3"); ok {
		t.Fatal("the failed transaction's effect was kept")
	}
	if st, _ := q.Stats(bg); st.ActiveLeaseCount != 1 {
		t.Fatalf("stats %+v: the failed complete was kept", st)
	}
	if err := q.Complete(bg, l.OwnershipToken); err != nil {
		t.Fatalf("Complete after the hook recovered: %v", err)
	}
	if rec, ok, _ := s.StateStore().Get(bg, "effects/seq/3"); !ok || rec.Kind != string(resourcelease.EventCompleted) {
		t.Fatalf("effect of the completion: %+v %v", rec, ok)
	}
}

// TestQueueEventRetention: the sweeper trims the log to the newest
// EventRetention events; a reader from before the trim gets the oldest kept
// one first (the gap says what was trimmed).
func TestQueueEventRetention(t *testing.T) {
	t.Parallel()
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{EventRetention: 5, Capacity: -1})
	for i := range 12 {
		if _, err := q.Enqueue(bg, qitem(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	evs, err := q.ReadEvents(bg, 0, 100)
	if err != nil || len(evs) != 5 || evs[0].SequenceNumber != 8 || evs[4].SequenceNumber != 12 {
		t.Fatalf("ReadEvents(0) after the trim: %d events from %v, %v; want 8..12", len(evs), evs, err)
	}
	if n := q.LastSequence(); n != 12 {
		t.Fatalf("LastSequence = %d, want 12", n)
	}
	if _, err := q.ReadEvents(bg, -1, 1); resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
		t.Fatalf("ReadEvents(-1): %v", err)
	}
	evs, err = q.ReadEvents(bg, 10, 1)
	if err != nil || len(evs) != 1 || evs[0].SequenceNumber != 11 {
		t.Fatalf("ReadEvents(10, 1): %v, %v", evs, err)
	}
}

// TestQueueCapacityCountsLeasedAcrossProcesses: a lease does not make room;
// a completion does, and its notification wakes a capacity wait in another
// queue of the same schema.
func TestQueueCapacityWakesAcrossProcesses(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	cfg := postgres.QueueConfig{Capacity: 1, PollInterval: time.Hour}
	a := openQueue(t, url, nil, cfg)
	b := openQueue(t, url, nil, cfg)
	waitListening(t, b)
	if _, err := a.Enqueue(bg, qitem("a")); err != nil {
		t.Fatal(err)
	}
	l, err := a.Lease(bg, "w", 0)
	if err != nil || l == nil {
		t.Fatal(l, err)
	}
	done := make(chan error, 1)
	go func() { _, err := b.Enqueue(bg, qitem("b")); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("an enqueue at capacity returned %v while the lease held the room", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := a.Complete(bg, l.OwnershipToken); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a completion on a did not wake the capacity wait on b")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQueueLeasesWhatItEnqueues: a parked long-poll gets an item in the
// transaction that enqueues it; the lease's events and row are those of
// any other lease.
func TestQueueLeasesWhatItEnqueues(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var commits [][]postgres.Committed
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{PollInterval: time.Hour,
		OnCommit: func(cs []postgres.Committed) { mu.Lock(); commits = append(commits, cs); mu.Unlock() }})
	waitListening(t, q) // its first round, after it connects, is over before the waiter parks
	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := q.Lease(bg, "w", time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitFor(t, "the waiter", func() bool { return q.Waiters() == 1 })
	res, err := q.Enqueue(bg, qitem("a"))
	if err != nil {
		t.Fatal(err)
	}
	l := <-got
	if l == nil || l.SequenceID != res.SequenceID || l.OwnershipToken.SequenceID != res.SequenceID || l.Attempt != 1 || l.OwnerPeerID != "w" {
		t.Fatalf("lease %+v for enqueue %+v", l, res)
	}
	mu.Lock()
	last := commits[len(commits)-1]
	mu.Unlock()
	if len(last) != 2 || last[0].Event.EventType != resourcelease.EventEnqueue || last[1].Event.EventType != resourcelease.EventLeaseGranted {
		t.Fatalf("the enqueue's commit: %+v; want Enqueue and LeaseGranted together", last)
	}
	evs := readAll(t, q)
	lg := evs[len(evs)-1]
	if lg.EventType != resourcelease.EventLeaseGranted || lg.Ownership == nil || *lg.Ownership != l.OwnershipToken ||
		lg.Metadata[resourcelease.MetaSequenceID] != fmt.Sprint(res.SequenceID) || lg.Metadata[resourcelease.MetaQueueActive] != "1" ||
		lg.Metadata[resourcelease.MetaQueuePending] != "0" || lg.PeerID != "w" {
		t.Fatalf("stored LeaseGranted event %+v; want the lease %+v", lg, l.OwnershipToken)
	}
	if last[1].Event.Ownership == nil || *last[1].Event.Ownership != l.OwnershipToken {
		t.Fatalf("reported LeaseGranted ownership %+v, want %+v", last[1].Event.Ownership, l.OwnershipToken)
	}
	if _, err := q.Heartbeat(bg, l.OwnershipToken); err != nil {
		t.Fatal(err)
	}
	if err := q.Complete(bg, l.OwnershipToken); err != nil {
		t.Fatal(err)
	}
	queueCounts(t, q.Store().Pool())
}
