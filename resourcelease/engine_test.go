package resourcelease_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recorder is a Journal that keeps every change, for assertions.
type recorder struct {
	mu      sync.Mutex
	changes []resourcelease.Change
	fail    error
}

func (r *recorder) Record(c *resourcelease.Change) resourcelease.Ack {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, *c)
	if r.fail != nil {
		return failedAck{r.fail}
	}
	return nil
}

func (r *recorder) kinds() []resourcelease.ChangeKind {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]resourcelease.ChangeKind, len(r.changes))
	for i, c := range r.changes {
		out[i] = c.Kind
	}
	return out
}

type failedAck struct{ err error }

func (a failedAck) Wait() error { return a.err }

type fixture struct {
	q     *resourcelease.Engine
	clock *leasetest.ManualClock
	rec   *recorder
}

func newQueue(t *testing.T, cfg resourcelease.QueueConfig) fixture {
	t.Helper()
	clock := leasetest.NewManualClock(time.Time{})
	rec := &recorder{}
	if cfg.Clock == nil {
		cfg.Clock = clock
	}
	if cfg.Journal == nil {
		cfg.Journal = rec
	}
	q, err := resourcelease.NewEngine(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { q.Close() })
	return fixture{q: q, clock: clock, rec: rec}
}

func item(id string) resourcelease.Item {
	return resourcelease.Item{ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-1", PayloadEncoding: "application/json", Body: []byte(`{"id":"` + id + `"}`)}
}

func mustEnqueue(t *testing.T, q resourcelease.Queue, ids ...string) {
	t.Helper()
	for _, id := range ids {
		_, err := q.Enqueue(context.Background(), item(id))
		require.NoError(t, err)
	}
}

func mustLease(t *testing.T, q resourcelease.Queue, peer string) *resourcelease.Lease {
	t.Helper()
	l, err := q.Lease(context.Background(), peer, 0)
	require.NoError(t, err)
	require.NotNil(t, l, "expected a lease")
	return l
}

var ctx = context.Background()

func TestEnqueueValidation(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	ok := item("a")
	for _, tc := range []struct {
		name   string
		mutate func(*resourcelease.Item)
		code   string
	}{
		{"resource type", func(i *resourcelease.Item) { i.ResourceType = "" }, resourcelease.CodeResourceTypeRequired},
		{"blank resource type", func(i *resourcelease.Item) { i.ResourceType = "  \t" }, resourcelease.CodeResourceTypeRequired},
		{"resource id", func(i *resourcelease.Item) { i.ResourceID = "" }, resourcelease.CodeResourceIDRequired},
		{"partition key", func(i *resourcelease.Item) { i.PartitionKey = " " }, resourcelease.CodePartitionKeyRequired},
		{"encoding", func(i *resourcelease.Item) { i.PayloadEncoding = "" }, resourcelease.CodeEncodingRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			it := ok
			tc.mutate(&it)
			_, err := f.q.Enqueue(ctx, it)
			require.Error(t, err)
			assert.Equal(t, tc.code, resourcelease.CodeOf(err))
			assert.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.StatusOf(err))
			assert.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
		})
	}
	var nilItem *resourcelease.Item
	assert.Equal(t, resourcelease.CodePayloadRequired, resourcelease.CodeOf(nilItem.Validate()))
	assert.Equal(t, 0, engineStats(f.q).PendingCount)
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  resourcelease.QueueConfig
	}{
		{"negative lease", resourcelease.QueueConfig{LeaseDuration: -time.Second}},
		{"negative sweep", resourcelease.QueueConfig{SweepInterval: -1}},
		{"negative requeue delay", resourcelease.QueueConfig{RequeueDelay: -1}},
		{"capacity", resourcelease.QueueConfig{Capacity: -2}},
		{"attempts", resourcelease.QueueConfig{MaxDeliveryAttempts: -1}},
		{"dedupe", resourcelease.QueueConfig{DedupeWindow: -2}},
		{"dedupe entries", resourcelease.QueueConfig{MaxDedupeEntries: -2}},
		{"full mode", resourcelease.QueueConfig{FullMode: 7}},
		{"max delay below delay", resourcelease.QueueConfig{RequeueDelay: time.Minute, MaxRequeueDelay: time.Second}},
		{"heartbeat not shorter than lease", resourcelease.QueueConfig{LeaseDuration: time.Second, HeartbeatInterval: time.Second}},
		{"lease that would overflow", resourcelease.QueueConfig{LeaseDuration: 200 * 365 * 24 * time.Hour}},
		{"backoff cap that would overflow", resourcelease.QueueConfig{RequeueDelay: time.Second, MaxRequeueDelay: 1<<63 - 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := resourcelease.NewEngine(tc.cfg)
			require.Error(t, err)
			assert.Nil(t, q)
			assert.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.StatusOf(err))
		})
	}
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{})
	require.NoError(t, err)
	defer q.Close()
	c := q.Config()
	assert.Equal(t, 512, c.Capacity)
	assert.Equal(t, 30*time.Second, c.LeaseDuration)
	assert.Equal(t, 5*time.Second, c.HeartbeatInterval)
	assert.Equal(t, time.Second, c.SweepInterval)
	assert.Equal(t, time.Duration(0), c.RequeueDelay)
	assert.Equal(t, 5, c.MaxDeliveryAttempts)
	assert.Equal(t, 10*time.Minute, c.DedupeWindow)
	assert.Equal(t, 1_000_000, c.MaxDedupeEntries)

	short, err := resourcelease.NewEngine(resourcelease.QueueConfig{LeaseDuration: 600 * time.Millisecond})
	require.NoError(t, err)
	defer short.Close()
	assert.Equal(t, 200*time.Millisecond, short.Config().HeartbeatInterval, "a short lease gets a heartbeat that can keep it")
}

// TestHugeRestoredAttemptDeadLetters: an attempt beyond the maximum (as a
// restore from elsewhere may carry) dead-letters on its next failure rather
// than overflowing.
func TestHugeRestoredAttemptDeadLetters(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	_, err := f.q.Restore(ctx, []resourcelease.PendingItem{{Payload: item("a"), Attempt: 1<<63 - 1, SequenceID: 7}})
	require.NoError(t, err)
	l := mustLease(t, f.q, "w")
	require.NoError(t, f.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{}))
	assert.Equal(t, resourcelease.Stats{DeadLetterCount: 1}, engineStats(f.q))
}

func TestLeaseOldestReadyFirst(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a", "b", "c")
	la := mustLease(t, f.q, "w")
	lb := mustLease(t, f.q, "w")
	assert.Equal(t, "a", la.Payload.ResourceID)
	assert.Equal(t, "b", lb.Payload.ResourceID)
	// a failed with requeue is older than c, so it comes back first.
	require.NoError(t, f.q.Fail(ctx, la.OwnershipToken, resourcelease.FailOptions{Reason: "boom", ErrorCode: "demo.boom"}))
	again := mustLease(t, f.q, "w")
	assert.Equal(t, "a", again.Payload.ResourceID)
	assert.Equal(t, 2, again.Attempt)
	assert.Equal(t, 2, again.OwnershipToken.Attempt)
	assert.Equal(t, &resourcelease.ErrorInfo{Message: "boom", Code: "demo.boom"}, again.LastError)
	assert.NotEqual(t, la.OwnershipToken.LeaseID, again.OwnershipToken.LeaseID)
	lc := mustLease(t, f.q, "w")
	assert.Equal(t, "c", lc.Payload.ResourceID)
	assert.Nil(t, lc.LastError, "first delivery carries no lastError")
	none, err := f.q.Lease(ctx, "w", 0)
	require.NoError(t, err)
	assert.Nil(t, none)
}

func TestLeaseFields(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{LeaseDuration: 10 * time.Second, HeartbeatInterval: 2 * time.Second})
	start := f.clock.Now()
	res, err := f.q.Enqueue(ctx, item("a"))
	require.NoError(t, err)
	assert.Equal(t, int64(1), res.SequenceID)
	assert.Equal(t, 1, res.Stats.PendingCount)
	f.clock.Advance(time.Second)
	l := mustLease(t, f.q, "peer-1")
	assert.Equal(t, int64(1), l.SequenceID)
	assert.Equal(t, 1, l.Attempt)
	assert.Equal(t, "peer-1", l.OwnerPeerID)
	assert.True(t, l.EnqueuedAt.Equal(start))
	assert.True(t, l.LeaseExpiresAt.Equal(start.Add(11*time.Second)))
	assert.Equal(t, 2*time.Second, l.HeartbeatInterval)
	assert.Equal(t, 10*time.Second, l.TTL, "the lease duration: granted at once")
	assert.Equal(t, resourcelease.OwnershipToken{SequenceID: 1, Attempt: 1, LeaseID: l.OwnershipToken.LeaseID}, l.OwnershipToken)
	assert.Equal(t, byte(4), l.OwnershipToken.LeaseID[6]>>4, "lease ids are version-4 UUIDs")
	assert.Equal(t, resourcelease.Stats{PendingCount: 0, ActiveLeaseCount: 1}, engineStats(f.q))
}

func TestHeartbeatExtendsLease(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{LeaseDuration: 10 * time.Second})
	mustEnqueue(t, f.q, "a")
	l := mustLease(t, f.q, "w")
	f.clock.Advance(8 * time.Second)
	hb, err := f.q.Heartbeat(ctx, l.OwnershipToken)
	require.NoError(t, err)
	assert.True(t, hb.LeaseExpiresAt.Equal(f.clock.Now().Add(10*time.Second)))
	assert.Equal(t, 10*time.Second, hb.TTL)
	f.clock.Advance(8 * time.Second) // 16 s after the lease: alive thanks to the heartbeat
	_, err = f.q.Heartbeat(ctx, l.OwnershipToken)
	require.NoError(t, err)
	require.NoError(t, f.q.Complete(ctx, l.OwnershipToken))
	assert.Equal(t, resourcelease.Stats{}, engineStats(f.q))
}

// TestSweepExpiresInExpiryOrder: leases expire in the order of their expiry,
// not of their grant: a heartbeat moves a lease behind later grants, and
// ending a lease in the middle of the order leaves the rest in order.
func TestSweepExpiresInExpiryOrder(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{LeaseDuration: 10 * time.Second})
	for _, id := range []string{"a", "b", "c", "d"} {
		mustEnqueue(t, f.q, id)
	}
	start := f.clock.Now()
	a := mustLease(t, f.q, "w") // expires at 10 s
	f.clock.Advance(time.Second)
	mustLease(t, f.q, "w")      // b: 11 s
	c := mustLease(t, f.q, "w") // 11 s
	f.clock.Advance(time.Second)
	mustLease(t, f.q, "w") // d: 12 s
	f.clock.Advance(time.Second)
	_, err := f.q.Heartbeat(ctx, a.OwnershipToken) // a: now 13 s, after d
	require.NoError(t, err)
	require.NoError(t, f.q.Complete(ctx, c.OwnershipToken)) // out of the middle

	expired := func() []string {
		f.rec.mu.Lock()
		defer f.rec.mu.Unlock()
		var out []string
		for _, ch := range f.rec.changes {
			if ch.Kind == resourcelease.ChangeExpired {
				out = append(out, ch.Item.Payload.ResourceID)
			}
		}
		return out
	}
	steps := []struct {
		at   time.Duration // since the first lease
		want []string
	}{
		{10*time.Second + time.Millisecond, nil}, // a's first expiry: the heartbeat moved it
		{11*time.Second + time.Millisecond, []string{"b"}},
		{12*time.Second + time.Millisecond, []string{"b", "d"}},
		{13*time.Second + time.Millisecond, []string{"b", "d", "a"}},
	}
	for _, st := range steps {
		f.clock.Advance(start.Add(st.at).Sub(f.clock.Now()))
		f.q.Sweep()
		assert.Equal(t, st.want, expired(), "after %v", st.at)
		assert.Equal(t, 3-len(st.want), engineStats(f.q).ActiveLeaseCount, "after %v", st.at)
	}
}

// TestFencing: after complete, fail, expiry, drain-and-restore or a newer
// lease, every use of the old token is unknown_token.
func TestFencing(t *testing.T) {
	type step func(f fixture, l *resourcelease.Lease)
	complete := func(f fixture, l *resourcelease.Lease) { require.NoError(t, f.q.Complete(ctx, l.OwnershipToken)) }
	failRequeue := func(f fixture, l *resourcelease.Lease) {
		require.NoError(t, f.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{}))
	}
	failDead := func(f fixture, l *resourcelease.Lease) {
		require.NoError(t, f.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{DeadLetter: true}))
	}
	expire := func(f fixture, l *resourcelease.Lease) { f.clock.Advance(31 * time.Second) }
	expireThenRelease := func(f fixture, l *resourcelease.Lease) {
		f.clock.Advance(31 * time.Second)
		f.q.Sweep()
		mustLease(t, f.q, "other") // a newer lease of the same item
	}
	for _, tc := range []struct {
		name string
		end  step
	}{
		{"complete", complete}, {"fail requeue", failRequeue}, {"fail dead-letter", failDead},
		{"expiry (lazy)", expire}, {"expiry then newer lease", expireThenRelease},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newQueue(t, resourcelease.QueueConfig{})
			mustEnqueue(t, f.q, "a")
			l := mustLease(t, f.q, "w")
			tc.end(f, l)
			_, err := f.q.Heartbeat(ctx, l.OwnershipToken)
			assert.ErrorIs(t, err, resourcelease.ErrUnknownToken)
			assert.ErrorIs(t, f.q.Complete(ctx, l.OwnershipToken), resourcelease.ErrUnknownToken)
			assert.ErrorIs(t, f.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{}), resourcelease.ErrUnknownToken)
			assert.Equal(t, resourcelease.StatusNotFound, resourcelease.StatusOf(f.q.Complete(ctx, l.OwnershipToken)))
		})
	}
}

func TestBadTokens(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	other := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a")
	mustEnqueue(t, other.q, "a")
	foreign := mustLease(t, other.q, "w")
	mine := mustLease(t, f.q, "w")
	forged := mine.OwnershipToken
	forged.Attempt++
	for _, tc := range []struct {
		name  string
		token resourcelease.OwnershipToken
		code  string
	}{
		{"zero token", resourcelease.OwnershipToken{}, resourcelease.CodeTokenRequired},
		{"another queue's token", foreign.OwnershipToken, resourcelease.CodeUnknownToken},
		{"wrong attempt", forged, resourcelease.CodeUnknownToken},
		{"unknown sequence", resourcelease.OwnershipToken{SequenceID: 99, Attempt: 1, LeaseID: mine.OwnershipToken.LeaseID}, resourcelease.CodeUnknownToken},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.code, resourcelease.CodeOf(f.q.Complete(ctx, tc.token)))
			_, err := f.q.Heartbeat(ctx, tc.token)
			assert.Equal(t, tc.code, resourcelease.CodeOf(err))
		})
	}
	require.NoError(t, f.q.Complete(ctx, mine.OwnershipToken), "the real token still works")
}

func TestExpirySweeperRequeues(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{LeaseDuration: 5 * time.Second})
	mustEnqueue(t, f.q, "a")
	l := mustLease(t, f.q, "w")
	f.clock.Advance(5 * time.Second)
	f.q.Sweep()
	st := engineStats(f.q)
	assert.Equal(t, 1, st.PendingCount)
	assert.Equal(t, 0, st.ActiveLeaseCount)
	again := mustLease(t, f.q, "w2")
	assert.Equal(t, 2, again.Attempt)
	require.NotNil(t, again.LastError)
	assert.Equal(t, resourcelease.CodeLeaseExpired, again.LastError.Code)
	assert.Equal(t, []resourcelease.ChangeKind{resourcelease.ChangeEnqueued, resourcelease.ChangeLeased, resourcelease.ChangeExpired, resourcelease.ChangeLeased}, f.rec.kinds())
	exp := f.rec.changes[2]
	assert.Equal(t, "w", exp.PeerID)
	assert.Equal(t, l.OwnershipToken, exp.Token)
}

// TestSweeperGoroutine shows the background sweeper expires leases by itself
// when the clock moves: no call into the queue is needed.
func TestSweeperGoroutine(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{LeaseDuration: 5 * time.Second, SweepInterval: time.Second})
	mustEnqueue(t, f.q, "a")
	mustLease(t, f.q, "w")
	expired := make(chan struct{})
	var once sync.Once
	go func() {
		for engineStats(f.q).PendingCount == 0 {
			require.True(t, f.clock.WaitForTimers(1, 5*time.Second), "sweeper timer")
			f.clock.Advance(time.Second)
		}
		once.Do(func() { close(expired) })
	}()
	select {
	case <-expired:
	case <-time.After(10 * time.Second):
		t.Fatal("sweeper did not expire the lease")
	}
	assert.Equal(t, resourcelease.ChangeExpired, f.rec.kinds()[2])
}

func TestMaxDeliveryAttemptsDeadLetters(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{MaxDeliveryAttempts: 3, LeaseDuration: time.Second})
	mustEnqueue(t, f.q, "a")
	for attempt := 1; attempt <= 3; attempt++ {
		l := mustLease(t, f.q, "w")
		require.Equal(t, attempt, l.Attempt)
		if attempt == 2 {
			f.clock.Advance(time.Second) // expiry counts as a failed attempt
			f.q.Sweep()
			continue
		}
		require.NoError(t, f.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: fmt.Sprint("fail ", attempt)}))
	}
	assert.Equal(t, resourcelease.Stats{DeadLetterCount: 1}, engineStats(f.q))
	dl, err := f.q.DeadLetters(ctx, 0)
	require.NoError(t, err)
	require.Len(t, dl, 1)
	assert.Equal(t, 3, dl[0].Attempt)
	assert.Contains(t, dl[0].Reason, "max delivery attempts (3) exceeded")
	assert.Equal(t, &resourcelease.ErrorInfo{Message: "fail 3"}, dl[0].LastError)
	last := f.rec.changes[len(f.rec.changes)-1]
	assert.Equal(t, resourcelease.ChangeDeadLettered, last.Kind)
	assert.Equal(t, resourcelease.CodeDeliveryAttemptsExceed, last.Error.Code)
	failed := f.rec.changes[len(f.rec.changes)-2]
	assert.Equal(t, resourcelease.ChangeFailed, failed.Kind, "the worker's last fail is reported before the dead letter")
	assert.Equal(t, "fail 3", failed.Error.Message)
	assert.Equal(t, "false", resourcelease.NewEvent(&failed).Metadata[resourcelease.MetaFailureRequeued])
}

// TestExpiryOnLastAttemptIsNotAFail: an expiry that dead-letters reports
// LeaseExpired's dead letter only; no worker failed.
func TestExpiryOnLastAttemptIsNotAFail(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{MaxDeliveryAttempts: 1, LeaseDuration: time.Second})
	mustEnqueue(t, f.q, "a")
	mustLease(t, f.q, "w")
	f.clock.Advance(time.Second)
	f.q.Sweep()
	assert.Equal(t, []resourcelease.ChangeKind{resourcelease.ChangeEnqueued, resourcelease.ChangeLeased, resourcelease.ChangeDeadLettered}, f.rec.kinds())
}

func TestDeadLetterListRedrivePurge(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a", "b", "c")
	for range 3 {
		l := mustLease(t, f.q, "w")
		require.NoError(t, f.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "poison", ErrorCode: "demo.poison", DeadLetter: true}))
	}
	dl, err := f.q.DeadLetters(ctx, 2)
	require.NoError(t, err)
	require.Len(t, dl, 2)
	assert.Equal(t, []int64{1, 2}, []int64{dl[0].SequenceID, dl[1].SequenceID})
	assert.Equal(t, "failed without requeue: poison", dl[0].Reason)
	assert.True(t, dl[0].DeadLetteredAt.Equal(f.clock.Now()))

	n, err := f.q.Redrive(ctx, resourcelease.DeadLetterSelection{SequenceIDs: []int64{2, 42}})
	require.NoError(t, err)
	assert.Equal(t, 1, n, "unknown ids are ignored")
	l := mustLease(t, f.q, "w")
	assert.Equal(t, int64(2), l.SequenceID)
	assert.Equal(t, 1, l.Attempt, "redrive resets the attempt")

	n, err = f.q.Purge(ctx, resourcelease.DeadLetterSelection{SequenceIDs: []int64{1}})
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	n, err = f.q.Redrive(ctx, resourcelease.DeadLetterSelection{All: true})
	require.NoError(t, err)
	assert.Equal(t, 1, n, "all redrives every dead letter")
	n, err = f.q.Purge(ctx, resourcelease.DeadLetterSelection{All: true})
	require.NoError(t, err)
	assert.Equal(t, 0, n)
	assert.Equal(t, resourcelease.Stats{PendingCount: 1, ActiveLeaseCount: 1}, engineStats(f.q))
}

func TestRequeueDelayAndBackoff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    resourcelease.QueueConfig
		delays []time.Duration // after failed attempt 1, 2, 3
	}{
		{"fixed", resourcelease.QueueConfig{RequeueDelay: 2 * time.Second}, []time.Duration{2 * time.Second, 2 * time.Second, 2 * time.Second}},
		{"exponential capped", resourcelease.QueueConfig{RequeueDelay: time.Second, MaxRequeueDelay: 3 * time.Second}, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.MaxDeliveryAttempts = 10
			f := newQueue(t, tc.cfg)
			mustEnqueue(t, f.q, "a")
			for _, d := range tc.delays {
				l := mustLease(t, f.q, "w")
				require.NoError(t, f.q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{}))
				f.clock.Advance(d - time.Millisecond)
				none, err := f.q.Lease(ctx, "w", 0)
				require.NoError(t, err)
				require.Nil(t, none, "leased before its requeue delay of %v", d)
				f.clock.Advance(time.Millisecond)
			}
			mustLease(t, f.q, "w")
		})
	}
}

func TestDrainAndRestoreKeepBookkeeping(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a", "b", "c")
	la := mustLease(t, f.q, "w")
	require.NoError(t, f.q.Fail(ctx, la.OwnershipToken, resourcelease.FailOptions{Reason: "x"}))
	lb := mustLease(t, f.q, "w") // a again (oldest)
	require.Equal(t, "a", lb.Payload.ResourceID)

	items, err := f.q.Drain(ctx)
	require.NoError(t, err)
	require.Len(t, items, 2, "leased items are not drained")
	assert.Equal(t, []string{"b", "c"}, []string{items[0].Payload.ResourceID, items[1].Payload.ResourceID})
	assert.Equal(t, resourcelease.Stats{ActiveLeaseCount: 1}, engineStats(f.q))

	// Move the drained items to another queue: bookkeeping is kept.
	g := newQueue(t, resourcelease.QueueConfig{})
	n, err := g.q.Restore(ctx, items)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	l := mustLease(t, g.q, "w")
	assert.Equal(t, items[0].SequenceID, l.SequenceID)
	assert.True(t, l.EnqueuedAt.Equal(items[0].EnqueuedAt))
	res, err := g.q.Enqueue(ctx, item("d"))
	require.NoError(t, err)
	assert.Greater(t, res.SequenceID, items[1].SequenceID, "new ids stay above restored ones")

	// A failed-then-drained item keeps attempt, lastError and last token.
	require.NoError(t, f.q.Fail(ctx, lb.OwnershipToken, resourcelease.FailOptions{Reason: "again"}))
	items, err = f.q.Drain(ctx)
	require.NoError(t, err)
	require.Len(t, items, 1)
	assert.Equal(t, 3, items[0].Attempt)
	assert.Equal(t, "again", items[0].LastError.Message)
	assert.Equal(t, lb.OwnershipToken, *items[0].LastOwnershipToken)
	_, err = f.q.Restore(ctx, items)
	require.NoError(t, err)
	l = mustLease(t, f.q, "w")
	assert.Equal(t, 3, l.Attempt)
	assert.Equal(t, "again", l.LastError.Message)
}

func TestRestoreRejectsBadItems(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a")
	good := resourcelease.PendingItem{Payload: item("x"), Attempt: 1, SequenceID: 10}
	bad := good
	bad.Payload.PartitionKey = ""
	for _, tc := range []struct {
		name  string
		items []resourcelease.PendingItem
		code  string
	}{
		{"invalid payload", []resourcelease.PendingItem{good, bad}, resourcelease.CodePartitionKeyRequired},
		{"zero sequence", []resourcelease.PendingItem{{Payload: item("x"), Attempt: 1}}, resourcelease.CodePendingItemRequired},
		{"negative attempt", []resourcelease.PendingItem{{Payload: item("x"), Attempt: -1, SequenceID: 3}}, resourcelease.CodePendingItemRequired},
		{"duplicate in batch", []resourcelease.PendingItem{good, good}, resourcelease.CodeDuplicateSequence},
		{"already queued", []resourcelease.PendingItem{{Payload: item("x"), Attempt: 1, SequenceID: 1}}, resourcelease.CodeDuplicateSequence},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := f.q.Restore(ctx, tc.items)
			assert.Equal(t, 0, n)
			assert.Equal(t, tc.code, resourcelease.CodeOf(err))
			assert.Equal(t, 1, engineStats(f.q).PendingCount, "nothing restored")
		})
	}
}

func TestRequestIDDedupe(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{DedupeWindow: time.Minute})
	it := item("a")
	it.RequestID = "req-1"
	first, err := f.q.Enqueue(ctx, it)
	require.NoError(t, err)
	f.clock.Advance(59 * time.Second)
	dup, err := f.q.Enqueue(ctx, it)
	require.NoError(t, err)
	assert.True(t, dup.Duplicate)
	assert.Equal(t, first.SequenceID, dup.SequenceID)
	assert.Equal(t, 1, engineStats(f.q).PendingCount)
	// Completing the item does not reopen the window.
	l := mustLease(t, f.q, "w")
	require.NoError(t, f.q.Complete(ctx, l.OwnershipToken))
	dup, err = f.q.Enqueue(ctx, it)
	require.NoError(t, err)
	assert.True(t, dup.Duplicate)
	f.clock.Advance(time.Second) // the window has passed
	again, err := f.q.Enqueue(ctx, it)
	require.NoError(t, err)
	assert.False(t, again.Duplicate)
	assert.NotEqual(t, first.SequenceID, again.SequenceID)
}

// TestMaxDedupeEntries: past MaxDedupeEntries the oldest request id is
// forgotten before its window ends, so unique ids cannot grow memory without
// bound; the newer ones are still deduplicated, also after a rebuild.
func TestMaxDedupeEntries(t *testing.T) {
	withID := func(id string) resourcelease.Item {
		it := item(id)
		it.RequestID = id
		return it
	}
	for _, tc := range []struct {
		name    string
		max     int
		enqueue []string
		wantDup map[string]bool // a second enqueue of each id: duplicate?
	}{
		{"bound of 2 forgets the oldest", 2, []string{"r1", "r2", "r3"}, map[string]bool{"r1": false, "r2": true, "r3": true}},
		{"bound of 1", 1, []string{"r1", "r2"}, map[string]bool{"r1": false, "r2": true}},
		{"within the bound", 3, []string{"r1", "r2", "r3"}, map[string]bool{"r1": true, "r2": true, "r3": true}},
		{"unbounded", -1, []string{"r1", "r2", "r3"}, map[string]bool{"r1": true, "r2": true, "r3": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newQueue(t, resourcelease.QueueConfig{MaxDedupeEntries: tc.max, Capacity: -1})
			for _, id := range tc.enqueue {
				res, err := f.q.Enqueue(ctx, withID(id))
				require.NoError(t, err)
				require.False(t, res.Duplicate, id)
			}
			for _, id := range tc.enqueue { // in order: a re-enqueue may evict the next oldest
				res, err := f.q.Enqueue(ctx, withID(id))
				require.NoError(t, err)
				assert.Equal(t, tc.wantDup[id], res.Duplicate, "second enqueue of %s", id)
				if !res.Duplicate {
					break // it took a dedupe slot of its own: later answers change
				}
			}
		})
	}
	t.Run("rebuild keeps the newest", func(t *testing.T) {
		at := time.Unix(1_700_000_000, 0)
		st := &resourcelease.QueueState{Dedupe: []resourcelease.DedupeEntry{
			{RequestID: "r1", SequenceID: 1, SeenAt: at},
			{RequestID: "r3", SequenceID: 3, SeenAt: at.Add(2 * time.Second)},
			{RequestID: "r2", SequenceID: 2, SeenAt: at.Add(time.Second)},
		}, NextSequenceID: 4}
		clock := leasetest.NewManualClock(at.Add(3 * time.Second))
		q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Clock: clock, MaxDedupeEntries: 2, InitialState: st})
		require.NoError(t, err)
		defer q.Close()
		for id, want := range map[string]bool{"r2": true, "r3": true} {
			res, err := q.Enqueue(ctx, withID(id))
			require.NoError(t, err)
			assert.Equal(t, want, res.Duplicate, id)
		}
		res, err := q.Enqueue(ctx, withID("r1"))
		require.NoError(t, err)
		assert.False(t, res.Duplicate, "r1 was the oldest beyond the bound")
	})
}

func TestCapacity(t *testing.T) {
	t.Run("reject", func(t *testing.T) {
		f := newQueue(t, resourcelease.QueueConfig{Capacity: 2, FullMode: resourcelease.FullReject})
		mustEnqueue(t, f.q, "a", "b")
		_, err := f.q.Enqueue(ctx, item("c"))
		assert.ErrorIs(t, err, resourcelease.ErrQueueFull)
		assert.Equal(t, resourcelease.StatusResourceExhausted, resourcelease.StatusOf(err))
	})
	t.Run("wait bounded by context", func(t *testing.T) {
		f := newQueue(t, resourcelease.QueueConfig{Capacity: 1})
		mustEnqueue(t, f.q, "a")
		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { _, err := f.q.Enqueue(c, item("b")); done <- err }()
		cancel()
		err := <-done
		assert.Equal(t, resourcelease.StatusCancelled, resourcelease.StatusOf(err))
		assert.Equal(t, 1, engineStats(f.q).PendingCount)
	})
	t.Run("wait until room", func(t *testing.T) {
		f := newQueue(t, resourcelease.QueueConfig{Capacity: 1})
		mustEnqueue(t, f.q, "a")
		done := make(chan error, 1)
		go func() { _, err := f.q.Enqueue(ctx, item("b")); done <- err }()
		l := mustLease(t, f.q, "w") // a leased item still counts
		select {
		case err := <-done:
			t.Fatalf("a lease made room (enqueue returned %v), but leased items count against capacity", err)
		default:
		}
		require.NoError(t, f.q.Complete(ctx, l.OwnershipToken)) // makes room
		require.NoError(t, <-done)
		assert.Equal(t, "a", l.Payload.ResourceID)
		assert.Equal(t, 1, engineStats(f.q).PendingCount)
	})
}

func TestLongPoll(t *testing.T) {
	t.Run("wait ends empty", func(t *testing.T) {
		f := newQueue(t, resourcelease.QueueConfig{})
		done := make(chan *resourcelease.Lease, 1)
		go func() {
			l, err := f.q.Lease(ctx, "w", 5*time.Second)
			assert.NoError(t, err)
			done <- l
		}()
		require.True(t, f.clock.WaitForTimers(2, 5*time.Second)) // sweeper + our wait
		f.clock.Advance(5 * time.Second)
		assert.Nil(t, <-done)
	})
	t.Run("first come first served, one item each", func(t *testing.T) {
		f := newQueue(t, resourcelease.QueueConfig{})
		got := make([]chan *resourcelease.Lease, 3)
		for i := range got {
			got[i] = make(chan *resourcelease.Lease, 1)
			go func() {
				l, err := f.q.Lease(ctx, fmt.Sprint("w", i), time.Hour)
				assert.NoError(t, err)
				got[i] <- l
			}()
			require.True(t, f.clock.WaitForTimers(2+i, 5*time.Second)) // waiter i is queued
		}
		mustEnqueue(t, f.q, "a")
		l0 := <-got[0]
		assert.Equal(t, "w0", l0.OwnerPeerID)
		select {
		case l := <-got[1]:
			t.Fatalf("second waiter woke without an item: %+v", l)
		default:
		}
		mustEnqueue(t, f.q, "b", "c")
		assert.Equal(t, "b", (<-got[1]).Payload.ResourceID)
		assert.Equal(t, "c", (<-got[2]).Payload.ResourceID)
	})
	t.Run("cancelled waiter leaves the item leasable", func(t *testing.T) {
		f := newQueue(t, resourcelease.QueueConfig{})
		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { _, err := f.q.Lease(c, "gone", time.Hour); done <- err }()
		require.True(t, f.clock.WaitForTimers(2, 5*time.Second))
		cancel()
		assert.Equal(t, resourcelease.StatusCancelled, resourcelease.StatusOf(<-done))
		mustEnqueue(t, f.q, "a")
		l := mustLease(t, f.q, "other")
		assert.Equal(t, 1, l.Attempt)
	})
	t.Run("deadline ends the wait with nothing", func(t *testing.T) {
		f := newQueue(t, resourcelease.QueueConfig{})
		c, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		defer cancel()
		l, err := f.q.Lease(c, "w", time.Hour)
		assert.NoError(t, err)
		assert.Nil(t, l)
	})
	t.Run("close wakes waiters", func(t *testing.T) {
		q, err := resourcelease.NewEngine(resourcelease.QueueConfig{})
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { _, err := q.Lease(ctx, "w", time.Hour); done <- err }()
		for q.Waiters() == 0 {
			runtime.Gosched()
		}
		require.NoError(t, q.Close())
		assert.ErrorIs(t, <-done, resourcelease.ErrClosed)
		require.NoError(t, q.Close(), "Close twice is fine")
		_, err = q.Enqueue(ctx, item("a"))
		assert.ErrorIs(t, err, resourcelease.ErrClosed)
		assert.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err))
	})
	t.Run("negative wait", func(t *testing.T) {
		f := newQueue(t, resourcelease.QueueConfig{})
		_, err := f.q.Lease(ctx, "w", -time.Second)
		assert.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.StatusOf(err))
	})
}

func TestJournalFailureReachesCaller(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	f.rec.fail = resourcelease.Errorf(resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, "disk on fire")
	_, err := f.q.Enqueue(ctx, item("a"))
	assert.ErrorIs(t, err, resourcelease.ErrStorageUnavailable)
}

func TestChangesCarryCounts(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a", "b")
	l := mustLease(t, f.q, "w")
	require.NoError(t, f.q.Complete(ctx, l.OwnershipToken))
	got := f.rec.changes
	require.Len(t, got, 4)
	assert.Equal(t, [2]int{1, 0}, [2]int{got[0].Pending, got[0].Active})
	assert.Equal(t, [2]int{2, 0}, [2]int{got[1].Pending, got[1].Active})
	assert.Equal(t, [2]int{1, 1}, [2]int{got[2].Pending, got[2].Active})
	assert.Equal(t, [2]int{1, 0}, [2]int{got[3].Pending, got[3].Active})
	assert.Equal(t, l.OwnershipToken, got[3].Token)
	assert.Equal(t, "a", got[3].Item.Payload.ResourceID)
}

func TestErrorsMatchAcrossTheWire(t *testing.T) {
	// What a client decodes from the wire: same code, other message.
	remote := &resourcelease.Error{Status: resourcelease.StatusNotFound, Code: resourcelease.CodeUnknownToken, Message: "from afar"}
	assert.ErrorIs(t, remote, resourcelease.ErrUnknownToken)
	assert.NotErrorIs(t, remote, resourcelease.ErrQueueFull)
	wrapped := fmt.Errorf("op: %w", remote)
	assert.Equal(t, resourcelease.CodeUnknownToken, resourcelease.CodeOf(wrapped))
	assert.Equal(t, resourcelease.StatusDeadlineExceeded, resourcelease.StatusOf(context.DeadlineExceeded))
	assert.Equal(t, resourcelease.StatusInternal, resourcelease.StatusOf(errors.New("x")))
	// yarpc's table (transport/http codes.go).
	for s, code := range map[resourcelease.Status]int{
		resourcelease.StatusInvalidArgument: 400, resourcelease.StatusNotFound: 404, resourcelease.StatusResourceExhausted: 429,
		resourcelease.StatusDeadlineExceeded: 504, resourcelease.StatusCancelled: 499, resourcelease.StatusUnavailable: 503,
		resourcelease.StatusInternal: 500, resourcelease.StatusAlreadyExists: 409, resourcelease.StatusFailedPrecondition: 400,
		resourcelease.StatusPermissionDenied: 403, resourcelease.StatusUnauthenticated: 401, resourcelease.StatusUnimplemented: 501,
		resourcelease.StatusUnknown: 500, resourcelease.StatusAborted: 409, resourcelease.StatusOutOfRange: 400,
		resourcelease.StatusDataLoss: 500,
	} {
		assert.Equal(t, code, s.HTTPStatus(), s)
		assert.True(t, s.Valid(), s)
	}
	assert.False(t, resourcelease.Status("success").Valid())
	assert.Equal(t, http.StatusInternalServerError, resourcelease.Status("bogus").HTTPStatus())
	// A bare HTTP status: yarpc's first choice where several share it.
	for code, s := range map[int]resourcelease.Status{
		400: resourcelease.StatusInvalidArgument, 401: resourcelease.StatusUnauthenticated, 403: resourcelease.StatusPermissionDenied,
		404: resourcelease.StatusNotFound, 409: resourcelease.StatusAborted, 422: resourcelease.StatusInvalidArgument,
		429: resourcelease.StatusResourceExhausted, 499: resourcelease.StatusCancelled, 500: resourcelease.StatusUnknown,
		501: resourcelease.StatusUnimplemented, 503: resourcelease.StatusUnavailable, 504: resourcelease.StatusDeadlineExceeded,
		302: resourcelease.StatusInvalidArgument, 418: resourcelease.StatusInvalidArgument, 502: resourcelease.StatusUnknown,
	} {
		assert.Equal(t, s, resourcelease.StatusFromHTTP(code), code)
	}
}

// failFirstLease is a journal whose acknowledgement of the first lease grant
// fails, as a synchronous sink failing after the commit does.
type failFirstLease struct {
	recorder
	failed bool // guarded by the queue's lock (Record runs under it)
}

func (f *failFirstLease) Record(c *resourcelease.Change) resourcelease.Ack {
	f.recorder.Record(c)
	if c.Kind == resourcelease.ChangeLeased && !f.failed {
		f.failed = true
		return failedAck{resourcelease.Errorf(resourcelease.StatusUnavailable, resourcelease.CodeReplicationFailed, "sink down")}
	}
	return nil
}

// TestFailedLeaseAckReleasesTheItem: a lease whose change could not be
// acknowledged is not given out, and the item is leasable again at once with
// its attempt unchanged, not held by nobody until the lease expires.
func TestFailedLeaseAckReleasesTheItem(t *testing.T) {
	for _, wait := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("wait=", wait), func(t *testing.T) {
			j := &failFirstLease{}
			f := newQueue(t, resourcelease.QueueConfig{Journal: j})
			if wait == 0 {
				mustEnqueue(t, f.q, "a")
				_, err := f.q.Lease(ctx, "w", 0)
				require.ErrorIs(t, err, &resourcelease.Error{Code: resourcelease.CodeReplicationFailed})
			} else {
				done := make(chan error, 1)
				go func() { _, err := f.q.Lease(ctx, "w", wait); done <- err }()
				require.True(t, f.clock.WaitForTimers(2, 5*time.Second)) // parked
				mustEnqueue(t, f.q, "a")                                 // handed to the waiter, ack fails
				require.ErrorIs(t, <-done, &resourcelease.Error{Code: resourcelease.CodeReplicationFailed})
			}
			assert.Equal(t, resourcelease.Stats{PendingCount: 1}, engineStats(f.q), "released, not stranded")
			l := mustLease(t, f.q, "w")
			assert.Equal(t, 1, l.Attempt, "the failed grant did not count as an attempt")
			kinds := j.kinds()
			assert.Equal(t, resourcelease.ChangeReleased, kinds[2])
		})
	}
}

// TestRelease: a released lease's item is pending again at once with the same
// attempt, and the token is dead.
func TestRelease(t *testing.T) {
	f := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a")
	l := mustLease(t, f.q, "w")
	require.NoError(t, f.q.Release(ctx, l.OwnershipToken, resourcelease.ReleaseOptions{}))
	assert.Equal(t, resourcelease.Stats{PendingCount: 1}, engineStats(f.q))
	assert.ErrorIs(t, f.q.Release(ctx, l.OwnershipToken, resourcelease.ReleaseOptions{}), resourcelease.ErrUnknownToken)
	assert.ErrorIs(t, f.q.Complete(ctx, l.OwnershipToken), resourcelease.ErrUnknownToken)
	again := mustLease(t, f.q, "w2")
	assert.Equal(t, 1, again.Attempt, "a released lease does not count as an attempt")
	assert.Equal(t, resourcelease.ChangeReleased, f.rec.kinds()[2])
}

// TestRebuildUnderAClockThatStepsBack: the rebuild counts as the first
// change, so a lease granted after it, under a clock read earlier than the
// rebuild, does not expire before the restored leases: a sweep leaves no
// lease whose expiry has passed.
func TestRebuildUnderAClockThatStepsBack(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	clock := &settableClock{ManualClock: leasetest.NewManualClock(at), now: at}
	rec := &recorder{}
	restored := resourcelease.LeasedItem{
		PendingItem: resourcelease.PendingItem{Payload: item("a"), SequenceID: 1, Attempt: 1, EnqueuedAt: at},
		Token:       resourcelease.OwnershipToken{SequenceID: 1, Attempt: 1, LeaseID: uuid.New()},
		PeerID:      "w",
		LeasedAt:    at,
	}
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{
		Clock: clock, Journal: rec, LeaseDuration: 30 * time.Second, SweepInterval: time.Hour,
		InitialState: &resourcelease.QueueState{Leased: []resourcelease.LeasedItem{restored}, NextSequenceID: 2},
	})
	require.NoError(t, err)
	defer q.Close()

	clock.Set(at.Add(-20 * time.Second)) // the clock steps back
	mustEnqueue(t, q, "b")
	b := mustLease(t, q, "w")
	clock.Set(at.Add(15 * time.Second))
	q.Sweep()

	live := 0
	for _, exp := range []time.Time{at.Add(30 * time.Second), b.LeaseExpiresAt} {
		if exp.After(clock.Now()) {
			live++
		}
	}
	assert.Equal(t, live, engineStats(q).ActiveLeaseCount, "after a sweep, exactly the leases whose expiry is still ahead are live (b expires %v)", b.LeaseExpiresAt)
}

// settableClock is a clock that can be set backwards (ManualClock never
// goes back); its timers are the ManualClock's.
type settableClock struct {
	*leasetest.ManualClock
	mu  sync.Mutex
	now time.Time
}

func (c *settableClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *settableClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// TestRebuildWithDedupeFromTheFuture: a dedupe record saved by a process
// whose clock was ahead counts its window from the rebuild; it must not block
// the age-ordered trim of the records behind it.
func TestRebuildWithDedupeFromTheFuture(t *testing.T) {
	at := time.Unix(1_700_000_000, 0)
	clock := leasetest.NewManualClock(at)
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{
		Clock: clock, DedupeWindow: 10 * time.Minute, Capacity: -1,
		InitialState: &resourcelease.QueueState{NextSequenceID: 2, Dedupe: []resourcelease.DedupeEntry{
			{RequestID: "future", SequenceID: 1, SeenAt: at.Add(5 * time.Minute)},
		}},
	})
	require.NoError(t, err)
	defer q.Close()
	x := item("x")
	x.RequestID = "x"
	first, err := q.Enqueue(ctx, x)
	require.NoError(t, err)
	require.False(t, first.Duplicate)

	clock.Advance(11 * time.Minute) // past the window of both records
	again, err := q.Enqueue(ctx, x)
	require.NoError(t, err)
	assert.False(t, again.Duplicate, "request x seen 11 min ago with a 10 min window")
}

// TestReleaseSemantics: a released item goes back to its old place (ahead of
// items enqueued after it), at once or after its delay, without counting an
// attempt or applying the requeue delay; the release beyond MaxReleases in a
// row counts as a failed attempt (lastError CodeReleaseLimit, the requeue
// delay applies), and the count restarts once the attempt changes.
func TestReleaseSemantics(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		maxReleases int
		delay       time.Duration
		releases    int // releases in a row of the first item
		wantAttempt int
		wantReady   time.Duration // after the last release, from then
		wantCode    string
	}{
		{"one release", 0, 0, 1, 1, 0, ""},
		{"delayed", 0, 5 * time.Second, 1, 1, 5 * time.Second, ""},
		{"up to the limit", 3, 0, 3, 1, 0, ""},
		{"one over the limit", 3, 0, 4, 2, time.Minute, resourcelease.CodeReleaseLimit},
		{"over the limit with a delay", 1, 5 * time.Second, 2, 2, time.Minute, resourcelease.CodeReleaseLimit},
		{"no limit", -1, 0, 25, 1, 0, ""},
		{"the default limit", 0, 0, resourcelease.DefaultMaxReleases + 1, 2, time.Minute, resourcelease.CodeReleaseLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newQueue(t, resourcelease.QueueConfig{MaxReleases: tt.maxReleases, RequeueDelay: time.Minute})
			mustEnqueue(t, f.q, "a", "b")
			for i := range tt.releases {
				l := mustLease(t, f.q, "w")
				require.Equal(t, "a", l.Payload.ResourceID, "release %d: the released item is back in its old place", i)
				require.NoError(t, f.q.Release(ctx, l.OwnershipToken, resourcelease.ReleaseOptions{Delay: tt.delay}))
				f.clock.Advance(tt.delay)
			}
			items, err := f.q.Drain(ctx)
			require.NoError(t, err)
			require.Len(t, items, 2)
			a := items[0]
			require.Equal(t, "a", a.Payload.ResourceID)
			assert.Equal(t, tt.wantAttempt, a.Attempt)
			if tt.wantCode == "" {
				assert.Nil(t, a.LastError)
				assert.Equal(t, tt.releases, a.Releases)
			} else {
				require.NotNil(t, a.LastError)
				assert.Equal(t, tt.wantCode, a.LastError.Code)
				assert.Zero(t, a.Releases, "the count restarts with the attempt")
			}
			if tt.wantReady > 0 && tt.wantCode != "" {
				assert.True(t, a.ReadyAt.After(f.clock.Now()), "the requeue delay applies: ready at %v", a.ReadyAt)
			}
		})
	}
}

// TestReleaseDelayKeepsTheItemBack: during its delay a released item is not
// leased (the next one is), and it is once the delay has passed.
func TestReleaseDelayKeepsTheItemBack(t *testing.T) {
	t.Parallel()
	f := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a", "b")
	l := mustLease(t, f.q, "w")
	require.NoError(t, f.q.Release(ctx, l.OwnershipToken, resourcelease.ReleaseOptions{Delay: 3 * time.Second}))
	assert.Equal(t, "b", mustLease(t, f.q, "w").Payload.ResourceID)
	none, err := f.q.Lease(ctx, "w", 0)
	require.NoError(t, err)
	assert.Nil(t, none, "a is held back by its delay")
	f.clock.Advance(3 * time.Second)
	again := mustLease(t, f.q, "w")
	assert.Equal(t, "a", again.Payload.ResourceID)
	assert.Equal(t, 1, again.Attempt)
}

// TestReleaseRefusesBadInput: a negative or huge delay, a zero token and a
// stale token.
func TestReleaseRefusesBadInput(t *testing.T) {
	t.Parallel()
	f := newQueue(t, resourcelease.QueueConfig{})
	mustEnqueue(t, f.q, "a")
	l := mustLease(t, f.q, "w")
	for _, tt := range []struct {
		name  string
		token resourcelease.OwnershipToken
		delay time.Duration
		want  error
	}{
		{"negative delay", l.OwnershipToken, -time.Second, resourcelease.ErrInvalidArgument},
		{"delay past MaxDuration", l.OwnershipToken, resourcelease.MaxDuration + 1, resourcelease.ErrInvalidArgument},
		{"zero token", resourcelease.OwnershipToken{}, 0, &resourcelease.Error{Code: resourcelease.CodeTokenRequired}},
		{"stale token", resourcelease.OwnershipToken{SequenceID: l.SequenceID, Attempt: 1, LeaseID: uuid.New()}, 0, resourcelease.ErrUnknownToken},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := f.q.Release(ctx, tt.token, resourcelease.ReleaseOptions{Delay: tt.delay})
			require.ErrorIs(t, err, tt.want)
		})
	}
	require.NoError(t, f.q.Complete(ctx, l.OwnershipToken), "the lease is untouched by the refused releases")
}

// TestQueueConfigMaxReleases: -1 and positive values are accepted, below -1
// is refused.
func TestQueueConfigMaxReleases(t *testing.T) {
	t.Parallel()
	for _, v := range []int{-1, 0, 1, 100} {
		q, err := resourcelease.NewEngine(resourcelease.QueueConfig{MaxReleases: v})
		require.NoError(t, err, "MaxReleases %d", v)
		want := v
		if v == 0 {
			want = resourcelease.DefaultMaxReleases
		}
		assert.Equal(t, want, q.Config().MaxReleases)
		require.NoError(t, q.Close())
	}
	_, err := resourcelease.NewEngine(resourcelease.QueueConfig{MaxReleases: -2})
	require.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
}
