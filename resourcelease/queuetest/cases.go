package queuetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leasemesh/leasemesh/resourcelease"
)

func testEnqueueValidation(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
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
		{"notBefore before year 1", func(i *resourcelease.Item) { i.NotBefore = time.Date(-1, 6, 1, 0, 0, 0, 0, time.UTC) },
			resourcelease.CodeInvalidArgument},
		{"notBefore in year 0 by its zone", func(i *resourcelease.Item) {
			i.NotBefore = time.Date(1, 1, 1, 1, 0, 0, 0, time.FixedZone("east", 2*3600))
		}, resourcelease.CodeInvalidArgument},
		{"notBefore after 9999", func(i *resourcelease.Item) { i.NotBefore = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
			resourcelease.CodeInvalidArgument},
	} {
		it := item("a")
		tc.mutate(&it)
		_, err := f.q.Enqueue(bg, it)
		wantCode(t, err, tc.code, tc.name)
		if !errors.Is(err, resourcelease.ErrInvalidArgument) {
			t.Fatalf("%s: %v is not invalid-argument", tc.name, err)
		}
	}
	f.wantStats(resourcelease.Stats{}, "after refused enqueues")
}

func testLeaseOldestReadyFirst(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	f.enqueue("a", "b", "c")
	la, lb := f.lease("w"), f.lease("w")
	if la.Payload.ResourceID != "a" || lb.Payload.ResourceID != "b" {
		t.Fatalf("leased %s, %s; want a, b", la.Payload.ResourceID, lb.Payload.ResourceID)
	}
	// a, failed with requeue, is older than c, so it comes back first.
	f.must(f.q.Fail(bg, la.OwnershipToken, requeue("boom", "demo.boom")), "Fail")
	again := f.lease("w")
	switch {
	case again.Payload.ResourceID != "a" || again.Attempt != 2 || again.OwnershipToken.Attempt != 2:
		t.Fatalf("after the fail leased %s attempt %d (token %d); want a attempt 2", again.Payload.ResourceID, again.Attempt, again.OwnershipToken.Attempt)
	case again.LastError == nil || *again.LastError != (resourcelease.ErrorInfo{Message: "boom", Code: "demo.boom"}):
		t.Fatalf("lastError %+v, want boom/demo.boom", again.LastError)
	case again.OwnershipToken.LeaseID == la.OwnershipToken.LeaseID:
		t.Fatal("a new lease kept the old lease id")
	}
	lc := f.lease("w")
	if lc.Payload.ResourceID != "c" || lc.LastError != nil {
		t.Fatalf("leased %s with lastError %+v; want c with none", lc.Payload.ResourceID, lc.LastError)
	}
	f.noLease("w")
}

func testLeaseFields(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{LeaseDuration: 10 * time.Second, HeartbeatInterval: 2 * time.Second})
	start := f.clock.Now()
	res, err := f.q.Enqueue(bg, item("a"))
	f.must(err, "Enqueue")
	if res.SequenceID <= 0 || res.Duplicate || res.Stats.PendingCount != 1 {
		t.Fatalf("Enqueue = %+v", res)
	}
	f.clock.Advance(time.Second)
	l := f.lease("peer-1")
	switch {
	case l.SequenceID != res.SequenceID || l.Attempt != 1 || l.OwnerPeerID != "peer-1":
		t.Fatalf("lease %+v", l)
	case !l.EnqueuedAt.Equal(start):
		t.Fatalf("enqueuedAt %v, want %v", l.EnqueuedAt, start)
	case !l.LeaseExpiresAt.Equal(start.Add(11 * time.Second)):
		t.Fatalf("leaseExpiresAt %v, want %v", l.LeaseExpiresAt, start.Add(11*time.Second))
	case heartbeatInterval(l) != 2*time.Second:
		t.Fatalf("heartbeat interval %v, want 2s", heartbeatInterval(l))
	case l.OwnershipToken != resourcelease.OwnershipToken{SequenceID: res.SequenceID, Attempt: 1, LeaseID: l.OwnershipToken.LeaseID}:
		t.Fatalf("token %+v", l.OwnershipToken)
	case l.OwnershipToken.LeaseID.Version() != 4:
		t.Fatalf("lease id %v is not a version-4 UUID", l.OwnershipToken.LeaseID)
	case string(l.Payload.Body) != `{"id":"a"}`:
		t.Fatalf("body %q", l.Payload.Body)
	}
	f.wantStats(resourcelease.Stats{ActiveLeaseCount: 1}, "after the lease")
}

func testHeartbeatExtendsLease(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{LeaseDuration: 10 * time.Second})
	f.enqueue("a")
	l := f.lease("w")
	f.clock.Advance(8 * time.Second)
	hb, err := f.q.Heartbeat(bg, l.OwnershipToken)
	f.must(err, "Heartbeat")
	if !hb.LeaseExpiresAt.Equal(f.clock.Now().Add(10 * time.Second)) {
		t.Fatalf("expiry %v, want %v", hb.LeaseExpiresAt, f.clock.Now().Add(10*time.Second))
	}
	if hb.TTL <= 0 || hb.TTL > 10*time.Second {
		t.Fatalf("TTL %v, want within (0, 10s]", hb.TTL)
	}
	f.clock.Advance(8 * time.Second) // 16 s after the lease: alive thanks to the heartbeat
	f.Sweep()
	_, err = f.q.Heartbeat(bg, l.OwnershipToken)
	f.must(err, "second Heartbeat")
	f.must(f.q.Complete(bg, l.OwnershipToken), "Complete")
	f.wantStats(resourcelease.Stats{}, "after complete")
	if evs, ok := f.events(); ok {
		want := []resourcelease.EventType{resourcelease.EventEnqueue, resourcelease.EventLeaseGranted,
			resourcelease.EventHeartbeat, resourcelease.EventHeartbeat, resourcelease.EventCompleted}
		if !slices.Equal(types(evs), want) {
			t.Fatalf("events %v, want %v", types(evs), want)
		}
	}
}

// testFencing: after complete, fail, expiry, a newer lease or a release,
// every use of the old token is unknown_token.
func testFencing(t *testing.T, s suite) {
	for _, tc := range []struct {
		name string
		end  func(f *fixture, l *resourcelease.Lease)
	}{
		{"complete", func(f *fixture, l *resourcelease.Lease) { f.must(f.q.Complete(bg, l.OwnershipToken), "Complete") }},
		{"fail requeue", func(f *fixture, l *resourcelease.Lease) {
			f.must(f.q.Fail(bg, l.OwnershipToken, requeue("x", "")), "Fail")
		}},
		{"fail dead-letter", func(f *fixture, l *resourcelease.Lease) {
			f.must(f.q.Fail(bg, l.OwnershipToken, deadLetter("x", "")), "Fail")
		}},
		{"release", func(f *fixture, l *resourcelease.Lease) {
			f.must(f.q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{}), "Release")
		}},
		{"expiry, not yet swept", func(f *fixture, l *resourcelease.Lease) { f.clock.Advance(31 * time.Second) }},
		{"expiry then a newer lease", func(f *fixture, l *resourcelease.Lease) {
			f.clock.Advance(31 * time.Second)
			f.Sweep()
			f.lease("other")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := s.newQueue(t, resourcelease.QueueConfig{})
			f.enqueue("a")
			l := f.lease("w")
			tc.end(f, l)
			_, err := f.q.Heartbeat(bg, l.OwnershipToken)
			wantCode(t, err, resourcelease.CodeUnknownToken, "Heartbeat")
			wantCode(t, f.q.Complete(bg, l.OwnershipToken), resourcelease.CodeUnknownToken, "Complete")
			wantCode(t, f.q.Fail(bg, l.OwnershipToken, requeue("", "")), resourcelease.CodeUnknownToken, "Fail")
			wantCode(t, f.q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{}), resourcelease.CodeUnknownToken, "Release")
			if st := resourcelease.StatusOf(f.q.Complete(bg, l.OwnershipToken)); st != resourcelease.StatusNotFound {
				t.Fatalf("status %s, want not-found", st)
			}
		})
	}
}

func testBadTokens(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	other := s.newQueue(t, resourcelease.QueueConfig{})
	f.enqueue("a")
	other.enqueue("a")
	foreign := other.lease("w")
	mine := f.lease("w")
	forged := mine.OwnershipToken
	forged.Attempt++
	wrongLease := mine.OwnershipToken
	wrongLease.LeaseID = uuid.New()
	for _, tc := range []struct {
		name  string
		token resourcelease.OwnershipToken
		code  string
	}{
		{"zero token", resourcelease.OwnershipToken{}, resourcelease.CodeTokenRequired},
		{"another queue's token", foreign.OwnershipToken, resourcelease.CodeUnknownToken},
		{"wrong attempt", forged, resourcelease.CodeUnknownToken},
		{"wrong lease id", wrongLease, resourcelease.CodeUnknownToken},
		{"unknown sequence", resourcelease.OwnershipToken{SequenceID: 99, Attempt: 1, LeaseID: mine.OwnershipToken.LeaseID}, resourcelease.CodeUnknownToken},
	} {
		wantCode(t, f.q.Complete(bg, tc.token), tc.code, tc.name+": Complete")
		_, err := f.q.Heartbeat(bg, tc.token)
		wantCode(t, err, tc.code, tc.name+": Heartbeat")
	}
	f.must(f.q.Complete(bg, mine.OwnershipToken), "the real token still works")
}

func testExpirySweepRequeues(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{LeaseDuration: 5 * time.Second})
	f.enqueue("a")
	l := f.lease("w")
	f.clock.Advance(5 * time.Second)
	f.Sweep()
	f.wantStats(resourcelease.Stats{PendingCount: 1}, "after the sweep")
	again := f.lease("w2")
	if again.Attempt != 2 || again.LastError == nil || again.LastError.Code != resourcelease.CodeLeaseExpired {
		t.Fatalf("after expiry leased attempt %d lastError %+v; want 2, lease_expired", again.Attempt, again.LastError)
	}
	f.Sweep() // sweeping again expires nothing more
	if evs, ok := f.events(); ok {
		want := []resourcelease.EventType{resourcelease.EventEnqueue, resourcelease.EventLeaseGranted,
			resourcelease.EventLeaseExpired, resourcelease.EventLeaseGranted}
		if !slices.Equal(types(evs), want) {
			t.Fatalf("events %v, want %v", types(evs), want)
		}
		exp := evs[2]
		if exp.PeerID != "w" || exp.Ownership == nil || *exp.Ownership != l.OwnershipToken || exp.Error == nil || exp.Error.Code != resourcelease.CodeLeaseExpired {
			t.Fatalf("LeaseExpired event %+v; want peer w, the old token, lease_expired", exp)
		}
		if exp.Metadata[resourcelease.MetaAttempt] != "2" || exp.Payload == nil || exp.Payload.ResourceID != "a" {
			t.Fatalf("LeaseExpired event carries attempt %q payload %+v; want the requeued attempt 2 of a", exp.Metadata[resourcelease.MetaAttempt], exp.Payload)
		}
	}
}

// testSweeperRunsByItself: the store's own sweeper expires leases as the
// clock moves; no call into the queue is needed.
func testSweeperRunsByItself(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{LeaseDuration: 5 * time.Second, SweepInterval: time.Second})
	f.enqueue("a")
	f.lease("w")
	for i := 0; f.stats().PendingCount == 0; i++ {
		if i > 30 {
			t.Fatal("the sweeper did not expire the lease within 30 sweep intervals")
		}
		// The sweeper's timer is the only one on the clock: once it is
		// armed again the previous sweep is done.
		if !f.clock.WaitForTimers(1, 10*time.Second) {
			t.Fatal("the sweeper never armed its timer")
		}
		f.clock.Advance(time.Second)
	}
}

func testMaxDeliveryAttempts(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{MaxDeliveryAttempts: 3, LeaseDuration: time.Second})
	f.enqueue("a")
	for attempt := 1; attempt <= 3; attempt++ {
		l := f.lease("w")
		if l.Attempt != attempt {
			t.Fatalf("attempt %d, want %d", l.Attempt, attempt)
		}
		if attempt == 2 {
			f.clock.Advance(time.Second) // an expiry counts as a failed attempt
			f.Sweep()
			continue
		}
		f.must(f.q.Fail(bg, l.OwnershipToken, requeue(fmt.Sprint("fail ", attempt), "")), "Fail")
	}
	f.wantStats(resourcelease.Stats{DeadLetterCount: 1}, "after the last attempt")
	dl, err := f.q.DeadLetters(bg, 0)
	f.must(err, "DeadLetters")
	if len(dl) != 1 || dl[0].Attempt != 3 || !strings.Contains(dl[0].Reason, "max delivery attempts (3) exceeded") ||
		dl[0].LastError == nil || *dl[0].LastError != (resourcelease.ErrorInfo{Message: "fail 3"}) {
		t.Fatalf("dead letters %+v", dl)
	}
	if evs, ok := f.events(); ok {
		n := len(evs)
		failed, dead := evs[n-2], evs[n-1]
		if failed.EventType != resourcelease.EventFailed || failed.Metadata[resourcelease.MetaFailureRequeued] != "false" || failed.Error == nil || failed.Error.Message != "fail 3" {
			t.Fatalf("the worker's last fail should come before the dead letter: %+v", failed)
		}
		if dead.EventType != resourcelease.EventDeadLettered || dead.Error == nil || dead.Error.Code != resourcelease.CodeDeliveryAttemptsExceed {
			t.Fatalf("last event %+v, want DeadLettered with %s", dead, resourcelease.CodeDeliveryAttemptsExceed)
		}
	}
}

// testExpiryOnLastAttempt: an expiry that dead-letters reports the dead
// letter only; no worker failed.
func testExpiryOnLastAttempt(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{MaxDeliveryAttempts: 1, LeaseDuration: time.Second})
	f.enqueue("a")
	f.lease("w")
	f.clock.Advance(time.Second)
	f.Sweep()
	f.wantStats(resourcelease.Stats{DeadLetterCount: 1}, "after the expiry")
	if evs, ok := f.events(); ok {
		want := []resourcelease.EventType{resourcelease.EventEnqueue, resourcelease.EventLeaseGranted, resourcelease.EventDeadLettered}
		if !slices.Equal(types(evs), want) {
			t.Fatalf("events %v, want %v", types(evs), want)
		}
	}
}

// testHugeRestoredAttempt: an attempt far beyond the maximum (as a restore
// from elsewhere may carry) dead-letters on its next failure.
func testHugeRestoredAttempt(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	_, err := f.q.Restore(bg, []resourcelease.PendingItem{{Payload: item("a"), Attempt: math.MaxInt32, SequenceID: 7}})
	f.must(err, "Restore")
	l := f.lease("w")
	f.must(f.q.Fail(bg, l.OwnershipToken, requeue("", "")), "Fail")
	f.wantStats(resourcelease.Stats{DeadLetterCount: 1}, "after the fail")
}

func testDeadLetters(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	seqs := f.enqueue("a", "b", "c")
	for range 3 {
		l := f.lease("w")
		f.must(f.q.Fail(bg, l.OwnershipToken, deadLetter("poison", "demo.poison")), "Fail")
	}
	dl, err := f.q.DeadLetters(bg, 2)
	f.must(err, "DeadLetters")
	if len(dl) != 2 || dl[0].SequenceID != seqs[0] || dl[1].SequenceID != seqs[1] {
		t.Fatalf("first two dead letters %+v, want %v", dl, seqs[:2])
	}
	if dl[0].Reason != "failed without requeue: poison" || !dl[0].DeadLetteredAt.Equal(f.clock.Now()) {
		t.Fatalf("dead letter %+v", dl[0])
	}
	n, err := f.q.Redrive(bg, resourcelease.DeadLetterSelection{SequenceIDs: []int64{seqs[1], 4242}})
	if err != nil || n != 1 {
		t.Fatalf("Redrive = %d, %v; want 1 (unknown ids ignored)", n, err)
	}
	l := f.lease("w")
	if l.SequenceID != seqs[1] || l.Attempt != 1 {
		t.Fatalf("after redrive leased %d attempt %d; want %d attempt 1", l.SequenceID, l.Attempt, seqs[1])
	}
	if n, err = f.q.Purge(bg, resourcelease.DeadLetterSelection{SequenceIDs: []int64{seqs[0]}}); err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v; want 1", n, err)
	}
	if n, err = f.q.Redrive(bg, resourcelease.DeadLetterSelection{All: true}); err != nil || n != 1 {
		t.Fatalf("Redrive(all) = %d, %v; want 1", n, err)
	}
	if n, err = f.q.Purge(bg, resourcelease.DeadLetterSelection{All: true}); err != nil || n != 0 {
		t.Fatalf("Purge(all) = %d, %v; want 0", n, err)
	}
	f.wantStats(resourcelease.Stats{PendingCount: 1, ActiveLeaseCount: 1}, "at the end")
	if evs, ok := f.events(); ok {
		counts := map[resourcelease.EventType]int{}
		for _, e := range evs {
			counts[e.EventType]++
		}
		if counts[resourcelease.EventRedriven] != 2 || counts[resourcelease.EventPurged] != 1 || counts[resourcelease.EventDeadLettered] != 3 {
			t.Fatalf("event counts %v, want 3 DeadLettered, 2 Redriven, 1 Purged (an empty purge logs nothing)", counts)
		}
	}
}

func testDeadLetterSelection(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	f.enqueue("a")
	f.must(f.q.Fail(bg, f.lease("w").OwnershipToken, deadLetter("x", "")), "Fail")
	for _, sel := range []resourcelease.DeadLetterSelection{{}, {All: true, SequenceIDs: []int64{1}}} {
		_, err := f.q.Redrive(bg, sel)
		wantCode(t, err, resourcelease.CodeSelectionRequired, fmt.Sprintf("Redrive(%+v)", sel))
		_, err = f.q.Purge(bg, sel)
		wantCode(t, err, resourcelease.CodeSelectionRequired, fmt.Sprintf("Purge(%+v)", sel))
	}
	f.wantStats(resourcelease.Stats{DeadLetterCount: 1}, "a refused selection changes nothing")
}

func testRequeueDelayAndBackoff(t *testing.T, s suite) {
	for _, tc := range []struct {
		name   string
		cfg    resourcelease.QueueConfig
		delays []time.Duration // after failed attempt 1, 2, 3
	}{
		{"fixed", resourcelease.QueueConfig{RequeueDelay: 2 * time.Second}, []time.Duration{2 * time.Second, 2 * time.Second, 2 * time.Second}},
		{"exponential capped", resourcelease.QueueConfig{RequeueDelay: time.Second, MaxRequeueDelay: 3 * time.Second}, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.MaxDeliveryAttempts = 10
			f := s.newQueue(t, tc.cfg)
			f.enqueue("a")
			for _, d := range tc.delays {
				l := f.lease("w")
				f.must(f.q.Fail(bg, l.OwnershipToken, requeue("", "")), "Fail")
				f.wantStats(resourcelease.Stats{PendingCount: 1, DelayedCount: 1}, "a delayed item is pending")
				f.clock.Advance(d - time.Millisecond)
				f.noLease("w")
				f.clock.Advance(time.Millisecond)
			}
			f.lease("w")
		})
	}
}

func testDrainAndRestore(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	f.enqueue("a", "b", "c")
	la := f.lease("w")
	f.must(f.q.Fail(bg, la.OwnershipToken, requeue("x", "")), "Fail")
	lb := f.lease("w") // a again (oldest)
	if lb.Payload.ResourceID != "a" {
		t.Fatalf("leased %s, want a", lb.Payload.ResourceID)
	}
	items, more, err := f.q.DrainN(bg, 0, 0)
	f.must(err, "DrainN")
	if more || len(items) != 2 || items[0].Payload.ResourceID != "b" || items[1].Payload.ResourceID != "c" {
		t.Fatalf("drained %+v (more %v); want b, c and no more: leases are not drained", items, more)
	}
	f.wantStats(resourcelease.Stats{ActiveLeaseCount: 1}, "after the drain")

	// Move the drained items to another queue: their bookkeeping comes along.
	g := s.newQueue(t, resourcelease.QueueConfig{})
	n, err := g.q.Restore(bg, items)
	if err != nil || n != 2 {
		t.Fatalf("Restore = %d, %v", n, err)
	}
	l := g.lease("w")
	if l.SequenceID != items[0].SequenceID || !l.EnqueuedAt.Equal(items[0].EnqueuedAt) {
		t.Fatalf("restored lease %d enqueued %v; want %d enqueued %v", l.SequenceID, l.EnqueuedAt, items[0].SequenceID, items[0].EnqueuedAt)
	}
	res, err := g.q.Enqueue(bg, item("d"))
	f.must(err, "Enqueue")
	if res.SequenceID <= items[1].SequenceID {
		t.Fatalf("new sequence id %d is not above the restored %d", res.SequenceID, items[1].SequenceID)
	}

	// A failed-then-drained item keeps its attempt, lastError and last token.
	f.must(f.q.Fail(bg, lb.OwnershipToken, requeue("again", "")), "Fail")
	items, _, err = f.q.DrainN(bg, 0, 0)
	f.must(err, "DrainN")
	if len(items) != 1 || items[0].Attempt != 3 || items[0].LastError == nil || items[0].LastError.Message != "again" ||
		items[0].LastOwnershipToken == nil || *items[0].LastOwnershipToken != lb.OwnershipToken {
		t.Fatalf("drained %+v; want attempt 3, lastError again, last token %v", items, lb.OwnershipToken)
	}
	_, err = f.q.Restore(bg, items)
	f.must(err, "Restore")
	l = f.lease("w")
	if l.Attempt != 3 || l.LastError == nil || l.LastError.Message != "again" {
		t.Fatalf("restored lease attempt %d lastError %+v", l.Attempt, l.LastError)
	}
	if evs, ok := f.events(); ok {
		var drains, restores int
		for _, e := range evs {
			switch e.EventType {
			case resourcelease.EventDrainSnapshot:
				drains++
			case resourcelease.EventRestoreSnapshot:
				restores++
				if e.Metadata[resourcelease.MetaRestoreCount] != "1" {
					t.Fatalf("RestoreSnapshot metadata %v", e.Metadata)
				}
			}
		}
		if drains != 2 || restores != 1 {
			t.Fatalf("%d DrainSnapshot and %d RestoreSnapshot events, want 2 and 1", drains, restores)
		}
	}
}

func testDrainPaged(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	seqs := f.enqueue("1", "2", "3", "4", "5")
	l := f.lease("w") // 1 stays leased
	items, more, err := f.q.DrainN(bg, 2, 0)
	f.must(err, "DrainN")
	if !more || len(items) != 2 || items[0].SequenceID != seqs[1] || items[1].SequenceID != seqs[2] {
		t.Fatalf("first page %+v more %v; want %v and more", items, more, seqs[1:3])
	}
	// A byte budget smaller than one item still drains one.
	items, more, err = f.q.DrainN(bg, 0, 1)
	f.must(err, "DrainN")
	if !more || len(items) != 1 || items[0].SequenceID != seqs[3] {
		t.Fatalf("byte-bounded page %+v more %v; want [%d] and more", items, more, seqs[3])
	}
	items, more, err = f.q.DrainN(bg, 10, 1<<20)
	f.must(err, "DrainN")
	if more || len(items) != 1 || items[0].SequenceID != seqs[4] {
		t.Fatalf("last page %+v more %v; want [%d] and no more", items, more, seqs[4])
	}
	items, more, err = f.q.DrainN(bg, 10, 0)
	if err != nil || more || len(items) != 0 {
		t.Fatalf("empty drain = %+v, %v, %v", items, more, err)
	}
	f.must(f.q.Complete(bg, l.OwnershipToken), "the lease is untouched by drains")
}

func testRestoreRejects(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	seqs := f.enqueue("a")
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
		{"already queued", []resourcelease.PendingItem{good, {Payload: item("x"), Attempt: 1, SequenceID: seqs[0]}}, resourcelease.CodeDuplicateSequence},
	} {
		n, err := f.q.Restore(bg, tc.items)
		wantCode(t, err, tc.code, tc.name)
		if n != 0 {
			t.Fatalf("%s: restored %d", tc.name, n)
		}
		f.wantStats(resourcelease.Stats{PendingCount: 1}, tc.name+": nothing restored")
	}
}

func testDedupe(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{DedupeWindow: time.Minute})
	it := item("a")
	it.RequestID = "req-1"
	first, err := f.q.Enqueue(bg, it)
	f.must(err, "Enqueue")
	f.clock.Advance(59 * time.Second)
	dup, err := f.q.Enqueue(bg, it)
	f.must(err, "Enqueue")
	if !dup.Duplicate || dup.SequenceID != first.SequenceID {
		t.Fatalf("second enqueue = %+v; want the duplicate of %d", dup, first.SequenceID)
	}
	f.wantStats(resourcelease.Stats{PendingCount: 1}, "after the duplicate")
	// Completing the item does not reopen the window.
	f.must(f.q.Complete(bg, f.lease("w").OwnershipToken), "Complete")
	dup, err = f.q.Enqueue(bg, it)
	if err != nil || !dup.Duplicate {
		t.Fatalf("enqueue after completion = %+v, %v; want a duplicate", dup, err)
	}
	f.clock.Advance(time.Second) // the window has passed
	again, err := f.q.Enqueue(bg, it)
	f.must(err, "Enqueue")
	if again.Duplicate || again.SequenceID == first.SequenceID {
		t.Fatalf("enqueue after the window = %+v; want a new item", again)
	}
	if evs, ok := f.events(); ok {
		n := 0
		for _, e := range evs {
			if e.EventType == resourcelease.EventEnqueue {
				n++
			}
		}
		if n != 2 {
			t.Fatalf("%d Enqueue events, want 2: a duplicate logs nothing", n)
		}
	}
}

func testCapacity(t *testing.T, s suite) {
	t.Run("reject", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{Capacity: 2, FullMode: resourcelease.FullReject})
		f.enqueue("a", "b")
		_, err := f.q.Enqueue(bg, item("c"))
		if !errors.Is(err, resourcelease.ErrQueueFull) || resourcelease.StatusOf(err) != resourcelease.StatusResourceExhausted {
			t.Fatalf("enqueue at capacity: %v, want queue_full", err)
		}
	})
	t.Run("wait bounded by context", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{Capacity: 1})
		f.enqueue("a")
		c, cancel := context.WithCancel(bg)
		done := make(chan error, 1)
		go func() { _, err := f.q.Enqueue(c, item("b")); done <- err }()
		cancel()
		if err := <-done; resourcelease.StatusOf(err) != resourcelease.StatusCancelled {
			t.Fatalf("cancelled wait for room: %v, want cancelled", err)
		}
		f.wantStats(resourcelease.Stats{PendingCount: 1}, "after the cancelled enqueue")
	})
	t.Run("wait until room", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{Capacity: 1})
		f.enqueue("a")
		done := make(chan error, 1)
		go func() { _, err := f.q.Enqueue(bg, item("b")); done <- err }()
		l := f.lease("w")
		if s.f.CapacityCountsLeased {
			select {
			case err := <-done:
				t.Fatalf("a lease made room (enqueue returned %v), but leased items count against capacity", err)
			default:
			}
		}
		f.must(f.q.Complete(bg, l.OwnershipToken), "Complete") // makes room whatever counts
		f.must(<-done, "the waiting enqueue")
		if l.Payload.ResourceID != "a" {
			t.Fatalf("leased %s, want a", l.Payload.ResourceID)
		}
		f.wantStats(resourcelease.Stats{PendingCount: 1}, "after room was made")
	})
	if s.f.CapacityCountsLeased {
		t.Run("delayed items are not counted", func(t *testing.T) {
			t.Parallel()
			f := s.newQueue(t, resourcelease.QueueConfig{Capacity: 1, FullMode: resourcelease.FullReject, RequeueDelay: time.Hour})
			f.enqueue("a")
			f.must(f.q.Fail(bg, f.lease("w").OwnershipToken, requeue("later", "")), "Fail")
			f.enqueue("b") // a waits for an hour: it takes no room
			_, err := f.q.Enqueue(bg, item("c"))
			if !errors.Is(err, resourcelease.ErrQueueFull) {
				t.Fatalf("enqueue with b ready: %v, want queue_full", err)
			}
		})
	}
}

func testLongPoll(t *testing.T, s suite) {
	t.Run("wait ends empty", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{})
		done := make(chan *resourcelease.Lease, 1)
		errs := make(chan error, 1)
		go func() {
			l, err := f.q.Lease(bg, "w", 5*time.Second)
			errs <- err
			done <- l
		}()
		waitFor(t, "the waiter to park", func() bool { return f.Waiters() == 1 })
		l := f.awaitEmptyWait(5*time.Second, done)
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		if l != nil {
			t.Fatalf("an empty wait returned %+v", l)
		}
	})
	t.Run("first come first served, one item each", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{})
		got := make([]chan *resourcelease.Lease, 3)
		for i := range got {
			got[i] = make(chan *resourcelease.Lease, 1)
			go func() {
				l, err := f.q.Lease(bg, fmt.Sprint("w", i), time.Hour)
				if err != nil {
					t.Errorf("waiter %d: %v", i, err)
				}
				got[i] <- l
			}()
			waitFor(t, fmt.Sprintf("waiter %d to park", i), func() bool { return f.Waiters() == i+1 })
		}
		f.enqueue("a")
		if l0 := <-got[0]; l0 == nil || l0.OwnerPeerID != "w0" || l0.Payload.ResourceID != "a" {
			t.Fatalf("first waiter got %+v, want a", l0)
		}
		select {
		case l := <-got[1]:
			t.Fatalf("the second waiter woke without an item: %+v", l)
		default:
		}
		f.enqueue("b", "c")
		if l := <-got[1]; l == nil || l.Payload.ResourceID != "b" {
			t.Fatalf("second waiter got %+v, want b", l)
		}
		if l := <-got[2]; l == nil || l.Payload.ResourceID != "c" {
			t.Fatalf("third waiter got %+v, want c", l)
		}
	})
	t.Run("cancelled waiter leaves the item leasable", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{})
		c, cancel := context.WithCancel(bg)
		done := make(chan error, 1)
		go func() { _, err := f.q.Lease(c, "gone", time.Hour); done <- err }()
		waitFor(t, "the waiter to park", func() bool { return f.Waiters() == 1 })
		cancel()
		if err := <-done; resourcelease.StatusOf(err) != resourcelease.StatusCancelled {
			t.Fatalf("cancelled long-poll: %v, want cancelled", err)
		}
		f.enqueue("a")
		if l := f.lease("other"); l.Attempt != 1 {
			t.Fatalf("attempt %d, want 1", l.Attempt)
		}
	})
	t.Run("deadline ends the wait with nothing", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{})
		c, cancel := context.WithTimeout(bg, 50*time.Millisecond)
		defer cancel()
		l, err := f.q.Lease(c, "w", time.Hour)
		if err != nil || l != nil {
			t.Fatalf("Lease = %+v, %v; want nothing, no error", l, err)
		}
	})
	t.Run("close wakes waiters", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{})
		done := make(chan error, 1)
		go func() { _, err := f.q.Lease(bg, "w", time.Hour); done <- err }()
		waitFor(t, "the waiter to park", func() bool { return f.Waiters() == 1 })
		f.must(f.q.Close(), "Close")
		if err := <-done; !errors.Is(err, resourcelease.ErrClosed) {
			t.Fatalf("waiter woken by Close: %v, want closed", err)
		}
		f.must(f.q.Close(), "Close twice")
		_, err := f.q.Enqueue(bg, item("a"))
		if !errors.Is(err, resourcelease.ErrClosed) || resourcelease.StatusOf(err) != resourcelease.StatusUnavailable {
			t.Fatalf("Enqueue after Close: %v, want closed (unavailable)", err)
		}
	})
	t.Run("negative wait", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{})
		_, err := f.q.Lease(bg, "w", -time.Second)
		if resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
			t.Fatalf("negative wait: %v, want invalid-argument", err)
		}
	})
}

func testRelease(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	f.enqueue("a", "b")
	l := f.lease("w")
	f.must(f.q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{}), "Release")
	f.wantStats(resourcelease.Stats{PendingCount: 2}, "after the release")
	again := f.lease("w2")
	if again.SequenceID != l.SequenceID || again.Attempt != 1 {
		t.Fatalf("after release leased %d attempt %d; want %d again (its old place), attempt 1", again.SequenceID, again.Attempt, l.SequenceID)
	}
	if evs, ok := f.events(); ok {
		if e := evs[3]; e.EventType != resourcelease.EventLeaseReleased || e.Ownership == nil || *e.Ownership != l.OwnershipToken {
			t.Fatalf("event %+v, want LeaseReleased of %v", e, l.OwnershipToken)
		}
	}
}

func testReleaseOptions(t *testing.T, s suite) {
	t.Run("delay", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{})
		f.enqueue("a")
		l := f.lease("w")
		f.must(f.q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{Delay: 10 * time.Second}), "Release")
		f.wantStats(resourcelease.Stats{PendingCount: 1, DelayedCount: 1}, "a delayed release is pending")
		f.clock.Advance(10*time.Second - time.Millisecond)
		f.noLease("w")
		f.clock.Advance(time.Millisecond)
		if again := f.lease("w"); again.Attempt != 1 {
			t.Fatalf("attempt %d after a delayed release, want 1", again.Attempt)
		}
		wantCode(t, f.q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{Delay: -time.Second}), resourcelease.CodeInvalidArgument, "negative delay")
	})
	t.Run("limit", func(t *testing.T) {
		t.Parallel()
		f := s.newQueue(t, resourcelease.QueueConfig{}) // MaxReleases defaults to DefaultMaxReleases
		f.enqueue("a")
		for range resourcelease.DefaultMaxReleases {
			f.must(f.q.Release(bg, f.lease("w").OwnershipToken, resourcelease.ReleaseOptions{}), "free Release")
		}
		l := f.lease("w")
		if l.Attempt != 1 {
			t.Fatalf("attempt %d after free releases, want 1", l.Attempt)
		}
		f.must(f.q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{}), "counted Release")
		l = f.lease("w")
		if l.Attempt != 2 || l.LastError == nil || l.LastError.Code != resourcelease.CodeReleaseLimit {
			t.Fatalf("after %d releases in a row: attempt %d lastError %+v; want attempt 2 with %s",
				resourcelease.DefaultMaxReleases+1, l.Attempt, l.LastError, resourcelease.CodeReleaseLimit)
		}
		// The count starts again with the new attempt.
		f.must(f.q.Release(bg, l.OwnershipToken, resourcelease.ReleaseOptions{}), "Release")
		if l = f.lease("w"); l.Attempt != 2 {
			t.Fatalf("attempt %d, want 2", l.Attempt)
		}
	})
}

func testEventsCarryCounts(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{})
	f.enqueue("a", "b")
	l := f.lease("w")
	f.must(f.q.Complete(bg, l.OwnershipToken), "Complete")
	evs, _ := f.events()
	want := []struct {
		typ             resourcelease.EventType
		pending, active string
	}{
		{resourcelease.EventEnqueue, "1", "0"}, {resourcelease.EventEnqueue, "2", "0"},
		{resourcelease.EventLeaseGranted, "1", "1"}, {resourcelease.EventCompleted, "1", "0"},
	}
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(evs), len(want), evs)
	}
	for i, w := range want {
		e := evs[i]
		if e.EventType != w.typ || e.Metadata[resourcelease.MetaQueuePending] != w.pending || e.Metadata[resourcelease.MetaQueueActive] != w.active {
			t.Fatalf("event %d: %s pending %s active %s; want %s %s %s", i, e.EventType,
				e.Metadata[resourcelease.MetaQueuePending], e.Metadata[resourcelease.MetaQueueActive], w.typ, w.pending, w.active)
		}
	}
	c := evs[3]
	if c.Ownership == nil || *c.Ownership != l.OwnershipToken || c.Payload == nil || c.Payload.ResourceID != "a" ||
		c.Metadata[resourcelease.MetaSequenceID] != fmt.Sprint(l.SequenceID) || c.PeerID != "w" {
		t.Fatalf("Completed event %+v", c)
	}
	if !evs[0].Timestamp.Equal(f.clock.Now()) {
		t.Fatalf("event time %v, want the clock's %v", evs[0].Timestamp, f.clock.Now())
	}
}

func testStats(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{MaxDeliveryAttempts: 1})
	f.enqueue("a", "b", "c", "d")
	f.lease("w")
	f.must(f.q.Fail(bg, f.lease("w").OwnershipToken, requeue("x", "")), "Fail") // the last attempt: dead
	f.wantStats(resourcelease.Stats{PendingCount: 2, ActiveLeaseCount: 1, DeadLetterCount: 1}, "mixed")
	res, err := f.q.Enqueue(bg, item("e"))
	f.must(err, "Enqueue")
	if res.Stats != (resourcelease.Stats{PendingCount: 3, ActiveLeaseCount: 1, DeadLetterCount: 1}) {
		t.Fatalf("enqueue's stats %+v", res.Stats)
	}
}

func testBatches(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{Capacity: 4, FullMode: resourcelease.FullReject})
	dup := item("dup")
	dup.RequestID = "req-dup"
	out, err := f.q.EnqueueBatch(bg, []resourcelease.Item{item("a"), {}, dup, item("b"), dup, item("c"), item("d")})
	f.must(err, "EnqueueBatch")
	switch {
	case len(out) != 7:
		t.Fatalf("%d results for 7 items", len(out))
	case out[0].Err != nil || out[2].Err != nil || out[3].Err != nil || out[4].Err != nil || out[5].Err != nil:
		t.Fatalf("results %+v: want a, dup, b, dup, c enqueued", out)
	case resourcelease.StatusOf(out[1].Err) != resourcelease.StatusInvalidArgument:
		t.Fatalf("the empty item: %v, want invalid-argument", out[1].Err)
	case !errors.Is(out[6].Err, resourcelease.ErrQueueFull):
		t.Fatalf("the fifth new item at capacity 4: %v, want queue_full", out[6].Err)
	case out[2].Duplicate || !out[4].Duplicate || out[4].SequenceID != out[2].SequenceID:
		t.Fatalf("the repeated request id: %+v then %+v; want the second a duplicate of the first", out[2], out[4])
	case !(out[0].SequenceID < out[2].SequenceID && out[2].SequenceID < out[3].SequenceID && out[3].SequenceID < out[5].SequenceID):
		t.Fatalf("sequence ids %d %d %d %d are not in batch order", out[0].SequenceID, out[2].SequenceID, out[3].SequenceID, out[5].SequenceID)
	}
	f.wantStats(resourcelease.Stats{PendingCount: 4}, "after the batch")

	ls, err := f.q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 2})
	f.must(err, "LeaseBatch")
	if len(ls) != 2 || ls[0].Payload.ResourceID != "a" || ls[1].Payload.ResourceID != "dup" {
		t.Fatalf("LeaseBatch(2) leased %+v; want a, dup", ls)
	}
	one, err := f.q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 10, MaxBytes: 1})
	f.must(err, "LeaseBatch")
	if len(one) != 1 || one[0].Payload.ResourceID != "b" {
		t.Fatalf("LeaseBatch within 1 byte leased %+v; want just b (at least one)", one)
	}
	rest, err := f.q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 10})
	f.must(err, "LeaseBatch")
	if len(rest) != 1 || rest[0].Payload.ResourceID != "c" {
		t.Fatalf("LeaseBatch(10) leased %+v; want c, all that is left", rest)
	}
	none, err := f.q.LeaseBatch(bg, "w", resourcelease.LeaseBatchOptions{MaxItems: 10})
	if err != nil || len(none) != 0 {
		t.Fatalf("LeaseBatch on an empty queue: %+v, %v", none, err)
	}

	stale := ls[0].OwnershipToken
	stale.LeaseID = uuid.New()
	hb, err := f.q.HeartbeatBatch(bg, []resourcelease.OwnershipToken{ls[0].OwnershipToken, stale, ls[1].OwnershipToken})
	f.must(err, "HeartbeatBatch")
	if len(hb) != 3 || hb[0].Err != nil || !errors.Is(hb[1].Err, resourcelease.ErrUnknownToken) || hb[2].Err != nil || hb[0].LeaseExpiresAt.IsZero() {
		t.Fatalf("HeartbeatBatch = %+v", hb)
	}
	errs, err := f.q.CompleteBatch(bg, []resourcelease.OwnershipToken{ls[0].OwnershipToken, stale, ls[0].OwnershipToken, ls[1].OwnershipToken})
	f.must(err, "CompleteBatch")
	if len(errs) != 4 || errs[0] != nil || !errors.Is(errs[1], resourcelease.ErrUnknownToken) || !errors.Is(errs[2], resourcelease.ErrUnknownToken) || errs[3] != nil {
		t.Fatalf("CompleteBatch = %v; want the stale and the repeated token refused", errs)
	}
	f.wantStats(resourcelease.Stats{ActiveLeaseCount: 2}, "after the batches")
}
