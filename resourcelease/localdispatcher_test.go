package resourcelease_test

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ldFixture is a LocalDispatcher on a manual clock whose sweeper never runs
// on its own (tests call Queue().Sweep()).
type ldFixture struct {
	d     *resourcelease.LocalDispatcher
	clock *leasetest.ManualClock
}

func newLD(t *testing.T, cfg resourcelease.DispatcherConfig) ldFixture {
	t.Helper()
	clock, ok := cfg.Clock.(*leasetest.ManualClock)
	if !ok {
		clock = leasetest.NewManualClock(time.Time{})
		cfg.Clock = clock
	}
	if cfg.Queue.SweepInterval == 0 {
		cfg.Queue.SweepInterval = time.Hour
	}
	d, err := resourcelease.NewDispatcher(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, d.Close()) })
	return ldFixture{d: d, clock: clock}
}

func ldItem(id string) *resourcelease.Item {
	return &resourcelease.Item{
		ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-1", PayloadEncoding: "application/json",
		Body: []byte(`{"id":"` + id + `"}`), Attributes: map[string]string{"tenant": "tenant-1"},
	}
}

func (f ldFixture) enqueue(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		_, err := f.d.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: ldItem(id)})
		require.NoError(t, err)
	}
}

func (f ldFixture) lease(t *testing.T, peer string) *resourcelease.Lease {
	t.Helper()
	l, err := f.d.Lease(context.Background(), &resourcelease.LeaseRequest{PeerID: peer})
	require.NoError(t, err)
	require.NotNil(t, l, "a lease")
	return l
}

func ldBool(b bool) *bool { return &b }

func TestNewDispatcherConfigErrors(t *testing.T) {
	tracker, err := peerhealth.New(peerhealth.Config{})
	require.NoError(t, err)
	tests := []struct {
		name string
		cfg  resourcelease.DispatcherConfig
		want string
	}{
		{"journal is the dispatcher's", resourcelease.DispatcherConfig{Queue: resourcelease.QueueConfig{Journal: resourcelease.JournalFunc(func(*resourcelease.Change) resourcelease.Ack { return nil })}}, "Queue.Journal must be nil"},
		{"deterministic needs a replicator", resourcelease.DispatcherConfig{Deterministic: ldSinkFunc(nil)}, "Deterministic requires a Replicator"},
		{"refusing needs peer health", resourcelease.DispatcherConfig{RefuseUnhealthyPeers: true}, "RefuseUnhealthyPeers requires PeerHealth"},
		{"negative max lease wait", resourcelease.DispatcherConfig{MaxLeaseWait: -time.Second}, "MaxLeaseWait must not be negative"},
		{"bad queue config", resourcelease.DispatcherConfig{Queue: resourcelease.QueueConfig{Capacity: -5}}, "Capacity"},
		{"bad queue lease duration", resourcelease.DispatcherConfig{PeerHealth: tracker, Queue: resourcelease.QueueConfig{LeaseDuration: -time.Second}}, "LeaseDuration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := resourcelease.NewDispatcher(tt.cfg)
			require.Error(t, err)
			assert.Nil(t, d)
			assert.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestNewDispatcherZeroConfig(t *testing.T) {
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{})
	require.NoError(t, err)
	cfg := d.Queue().Config()
	assert.Equal(t, resourcelease.DefaultCapacity, cfg.Capacity)
	assert.Equal(t, resourcelease.DefaultLeaseDuration, cfg.LeaseDuration)
	require.NoError(t, d.Close())
	require.NoError(t, d.Close(), "Close twice")
	_, err = d.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: ldItem("a")})
	assert.ErrorIs(t, err, resourcelease.ErrClosed)
	_, err = d.Lease(context.Background(), nil)
	assert.ErrorIs(t, err, resourcelease.ErrClosed)
}

// TestDispatcherRequestValidation: every malformed request gets its status
// and code, and none reaches the queue.
func TestDispatcherRequestValidation(t *testing.T) {
	f := newLD(t, resourcelease.DispatcherConfig{})
	d := f.d
	ctx := context.Background()
	var zero resourcelease.OwnershipToken
	blank := func(mut func(it *resourcelease.Item)) *resourcelease.Item {
		it := ldItem("x")
		mut(it)
		return it
	}
	pending := func(it resourcelease.Item) resourcelease.PendingItem {
		return resourcelease.PendingItem{Payload: it, SequenceID: 99, Attempt: 1}
	}
	tests := []struct {
		name   string
		call   func() error
		status resourcelease.Status
		code   string
	}{
		{"enqueue nil request", func() error { _, err := d.Enqueue(ctx, nil); return err }, resourcelease.StatusInvalidArgument, resourcelease.CodePayloadRequired},
		{"enqueue nil payload", func() error { _, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{}); return err }, resourcelease.StatusInvalidArgument, resourcelease.CodePayloadRequired},
		{"enqueue blank resourceType", func() error {
			_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: blank(func(it *resourcelease.Item) { it.ResourceType = " " })})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodeResourceTypeRequired},
		{"enqueue no resourceId", func() error {
			_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: blank(func(it *resourcelease.Item) { it.ResourceID = "" })})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodeResourceIDRequired},
		{"enqueue no partitionKey", func() error {
			_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: blank(func(it *resourcelease.Item) { it.PartitionKey = "" })})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodePartitionKeyRequired},
		{"enqueue no encoding", func() error {
			_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: blank(func(it *resourcelease.Item) { it.PayloadEncoding = "" })})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodeEncodingRequired},
		{"lease negative wait", func() error {
			_, err := d.Lease(ctx, &resourcelease.LeaseRequest{Wait: -1 * time.Millisecond})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument},
		{"heartbeat nil request", func() error { _, err := d.Heartbeat(ctx, nil); return err }, resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired},
		{"heartbeat nil token", func() error { _, err := d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{}); return err }, resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired},
		{"heartbeat zero token", func() error {
			_, err := d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: zero})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired},
		{"heartbeat unknown token", func() error {
			_, err := d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: resourcelease.OwnershipToken{SequenceID: 1, Attempt: 1, LeaseID: uuid.New()}})
			return err
		}, resourcelease.StatusNotFound, resourcelease.CodeUnknownToken},
		{"complete nil request", func() error { err := d.Complete(ctx, nil); return err }, resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired},
		{"complete zero token", func() error {
			err := d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: zero})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired},
		{"fail nil request", func() error { err := d.Fail(ctx, nil); return err }, resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired},
		{"fail nil token", func() error { err := d.Fail(ctx, &resourcelease.FailRequest{Reason: "x"}); return err }, resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired},
		{"restore nil request", func() error { _, err := d.Restore(ctx, nil); return err }, resourcelease.StatusInvalidArgument, resourcelease.CodePendingItemRequired},
		{"restore no items", func() error { _, err := d.Restore(ctx, &resourcelease.RestoreRequest{}); return err }, resourcelease.StatusInvalidArgument, resourcelease.CodePendingItemRequired},
		{"restore item without payload", func() error {
			_, err := d.Restore(ctx, &resourcelease.RestoreRequest{Items: []resourcelease.PendingItem{pending(*ldItem("a")), {SequenceID: 5, Attempt: 1}}})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodePendingItemRequired},
		{"restore item with a blank field", func() error {
			_, err := d.Restore(ctx, &resourcelease.RestoreRequest{Items: []resourcelease.PendingItem{pending(*blank(func(it *resourcelease.Item) { it.PartitionKey = "" }))}})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodePartitionKeyRequired},
		{"deadletters negative limit", func() error {
			_, err := d.DeadLetters(ctx, &resourcelease.DeadLettersRequest{Limit: -1})
			return err
		}, resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			require.Error(t, err)
			var e *resourcelease.Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, tt.status, e.Status)
			assert.Equal(t, tt.code, e.Code)
		})
	}
	st, err := d.Stats(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, resourcelease.Stats{}, *st, "nothing reached the queue")
}

// TestDispatcherNilAndHugeRequests: requests that are valid but extreme
// behave, and nil requests of the optional kinds mean empty ones.
func TestDispatcherNilAndHugeRequests(t *testing.T) {
	f := newLD(t, resourcelease.DispatcherConfig{MaxLeaseWait: 2 * time.Second})
	ctx := context.Background()
	d := f.d

	st, err := d.Stats(ctx, nil)
	require.NoError(t, err)
	assert.False(t, st.BackpressureActive)
	dr, err := d.Drain(ctx, nil)
	require.NoError(t, err)
	assert.NotNil(t, dr.Items, "an empty drain is [] on the wire, not null")
	dl, err := d.DeadLetters(ctx, &resourcelease.DeadLettersRequest{Limit: math.MaxInt})
	require.NoError(t, err)
	assert.Empty(t, dl.Items)
	_, err = d.Redrive(ctx, nil)
	require.ErrorIs(t, err, &resourcelease.Error{Code: resourcelease.CodeSelectionRequired}, "a nil redrive selects nothing, and is refused")
	rd, err := d.Redrive(ctx, &resourcelease.RedriveRequest{All: true})
	require.NoError(t, err)
	assert.Zero(t, rd.RedrivenCount)
	pg, err := d.Purge(ctx, &resourcelease.PurgeRequest{SequenceIDs: []int64{-1, 0, math.MaxInt64}})
	require.NoError(t, err)
	assert.Zero(t, pg.PurgedCount)

	// A nil lease request leases anonymously without waiting.
	l, err := d.Lease(ctx, nil)
	require.NoError(t, err)
	assert.Nil(t, l)

	// A huge waitMs does not overflow: it is capped at MaxLeaseWait.
	done := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w", Wait: math.MaxInt64})
		assert.NoError(t, err)
		done <- l
	}()
	require.True(t, f.clock.WaitForTimers(2, 5*time.Second), "the long-poll is waiting") // sweeper + long-poll
	f.clock.Advance(2 * time.Second)
	assert.Nil(t, <-done, "nothing arrived within the capped wait")

	// With an item there, the same request returns at once.
	f.enqueue(t, "a")
	l, err = d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w", Wait: math.MaxInt64})
	require.NoError(t, err)
	require.NotNil(t, l)
	assert.Equal(t, "w", l.OwnerPeerID)

	// Fail with requeue absent means requeue.
	err = d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, Reason: "boom"})
	require.NoError(t, err)
	l = f.lease(t, "w")
	assert.Equal(t, 2, l.Attempt)
	require.NotNil(t, l.LastError)
	assert.Equal(t, "boom", l.LastError.Message)
	err = d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, DeadLetter: true})
	require.NoError(t, err)
	st, _ = d.Stats(ctx, nil)
	assert.Equal(t, 1, st.DeadLetterCount, "requeue=false dead-letters")
}

// TestDispatcherCopiesEnqueuedPayload: a caller reusing its buffers after
// Enqueue does not change the queued item.
func TestDispatcherCopiesEnqueuedPayload(t *testing.T) {
	f := newLD(t, resourcelease.DispatcherConfig{})
	it := ldItem("a")
	_, err := f.d.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: it})
	require.NoError(t, err)
	it.Body[0] = 'X'
	it.Attributes["tenant"] = "changed"
	l := f.lease(t, "w")
	assert.Equal(t, `{"id":"a"}`, string(l.Payload.Body))
	assert.Equal(t, "tenant-1", l.Payload.Attributes["tenant"])
}

func TestDispatcherLeasePeerID(t *testing.T) {
	tests := []struct {
		name     string
		explicit string
		ci       resourcelease.CallInfo
		want     string
	}{
		{"explicit wins", "w1", resourcelease.CallInfo{Caller: "caller", PeerID: "header"}, "w1"},
		{"then the peer id header", "", resourcelease.CallInfo{Caller: "caller", PeerID: "header"}, "header"},
		{"then Rpc-Caller", "", resourcelease.CallInfo{Caller: "caller"}, "caller"},
		{"else anonymous", "", resourcelease.CallInfo{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newLD(t, resourcelease.DispatcherConfig{})
			f.enqueue(t, "a")
			ctx := resourcelease.WithCallInfo(context.Background(), tt.ci)
			l, err := f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: tt.explicit})
			require.NoError(t, err)
			require.NotNil(t, l)
			assert.Equal(t, tt.want, l.OwnerPeerID)
		})
	}
}

// TestDispatcherFullCycleResponses drives every procedure once and checks
// the response shapes.
func TestDispatcherFullCycleResponses(t *testing.T) {
	f := newLD(t, resourcelease.DispatcherConfig{Queue: resourcelease.QueueConfig{LeaseDuration: 10 * time.Second, HeartbeatInterval: 2 * time.Second}})
	ctx := context.Background()
	d := f.d

	er, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ldItem("a")})
	require.NoError(t, err)
	assert.Equal(t, resourcelease.EnqueueResponse{Stats: resourcelease.QueueCounts{PendingCount: 1}, SequenceID: 1}, *er)
	dup := ldItem("b")
	dup.RequestID = "req-1"
	_, err = d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: dup})
	require.NoError(t, err)
	er, err = d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: dup})
	require.NoError(t, err)
	assert.True(t, er.Duplicate)
	assert.Equal(t, int64(2), er.SequenceID)

	l := f.lease(t, "w1")
	assert.Equal(t, 2*time.Second, l.HeartbeatInterval)
	assert.Equal(t, 10*time.Second, l.TTL)
	assert.Equal(t, f.clock.Now().Add(10*time.Second), l.LeaseExpiresAt)
	f.clock.Advance(3 * time.Second)
	hb, err := d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: l.OwnershipToken})
	require.NoError(t, err)
	assert.Equal(t, resourcelease.HeartbeatResponse{LeaseExpiresAt: f.clock.Now().Add(10 * time.Second), TTL: 10 * time.Second}, *hb)
	err = d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
	require.NoError(t, err)
	err = d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
	assert.ErrorIs(t, err, resourcelease.ErrUnknownToken, "fenced")

	drained, err := d.Drain(ctx, &resourcelease.DrainRequest{})
	require.NoError(t, err)
	require.Len(t, drained.Items, 1)
	assert.Equal(t, "b", drained.Items[0].Payload.ResourceID)
	rr, err := d.Restore(ctx, &resourcelease.RestoreRequest{Items: drained.Items})
	require.NoError(t, err)
	assert.Equal(t, 1, rr.RestoredCount)

	l = f.lease(t, "w1")
	err = d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, Reason: "bad", ErrorCode: "app.bad", DeadLetter: true})
	require.NoError(t, err)
	dl, err := d.DeadLetters(ctx, &resourcelease.DeadLettersRequest{})
	require.NoError(t, err)
	require.Len(t, dl.Items, 1)
	assert.Contains(t, dl.Items[0].Reason, "bad")
	rv, err := d.Redrive(ctx, &resourcelease.RedriveRequest{All: true})
	require.NoError(t, err)
	assert.Equal(t, 1, rv.RedrivenCount)
	l = f.lease(t, "w1")
	assert.Equal(t, 1, l.Attempt, "redriven with attempt 1")
	err = d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, DeadLetter: true})
	require.NoError(t, err)
	pg, err := d.Purge(ctx, &resourcelease.PurgeRequest{SequenceIDs: []int64{l.SequenceID}})
	require.NoError(t, err)
	assert.Equal(t, 1, pg.PurgedCount)
	st, err := d.Stats(ctx, &resourcelease.StatsRequest{})
	require.NoError(t, err)
	assert.Equal(t, resourcelease.Stats{}, *st)
}

// TestDispatcherCloseWakesWaiters: Close ends a long-poll with ErrClosed.
func TestDispatcherCloseWakesWaiters(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Clock: clock, Queue: resourcelease.QueueConfig{SweepInterval: time.Hour}})
	require.NoError(t, err)
	errs := make(chan error, 1)
	go func() {
		_, err := d.Lease(context.Background(), &resourcelease.LeaseRequest{PeerID: "w", Wait: 60_000 * time.Millisecond})
		errs <- err
	}()
	require.True(t, clock.WaitForTimers(2, 5*time.Second))
	require.NoError(t, d.Close())
	assert.ErrorIs(t, <-errs, resourcelease.ErrClosed)
}

// FuzzDispatcherRequests decodes arbitrary JSON into each request type and
// calls the procedure: nothing may panic, and every error is an *Error with a
// valid wire status.
func FuzzDispatcherRequests(f *testing.F) {
	for _, seed := range []string{
		`{}`, `null`, `{"payload":null}`, `{"payload":{"resourceType":"t","resourceId":"r","partitionKey":"p","payloadEncoding":"raw"}}`,
		`{"peerId":"w","waitMs":-5}`, `{"waitMs":9223372036854775807}`, `{"ownershipToken":null}`,
		`{"ownershipToken":{"sequenceId":1,"attempt":1,"leaseId":"00000000-0000-0000-0000-000000000000"}}`,
		`{"ownershipToken":{"sequenceId":1,"attempt":1,"leaseId":"9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"},"requeue":false}`,
		`{"items":[{}]}`, `{"items":[{"payload":{"resourceType":"t","resourceId":"r","partitionKey":"p","payloadEncoding":"raw"},"sequenceId":-1}]}`,
		`{"items":[{"payload":{"resourceType":"t","resourceId":"r","partitionKey":"p","payloadEncoding":"raw"},"sequenceId":7,"attempt":-3}]}`,
		`{"limit":-1}`, `{"limit":9223372036854775807}`, `{"sequenceIds":[-1,0,1,9223372036854775807]}`,
	} {
		for proc := range uint8(11) {
			f.Add(proc, []byte(seed))
		}
	}
	// The real clock: a long-poll is capped at a millisecond of real time.
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{MaxLeaseWait: time.Millisecond,
		Queue: resourcelease.QueueConfig{SweepInterval: time.Hour, Capacity: 64, FullMode: resourcelease.FullReject}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { d.Close() })
	f.Fuzz(func(t *testing.T, proc uint8, body []byte) {
		call := func(req any, do func() error) {
			if json.Unmarshal(body, req) != nil {
				return
			}
			ldCheckErr(t, do())
		}
		bg := context.Background()
		switch proc % 12 {
		case 0:
			var r *resourcelease.EnqueueRequest
			call(&r, func() error { _, err := d.Enqueue(bg, r); return err })
		case 1:
			var r *resourcelease.LeaseRequest
			call(&r, func() error { _, err := d.Lease(bg, r); return err })
		case 2:
			var r *resourcelease.HeartbeatRequest
			call(&r, func() error { _, err := d.Heartbeat(bg, r); return err })
		case 3:
			var r *resourcelease.CompleteRequest
			call(&r, func() error { err := d.Complete(bg, r); return err })
		case 4:
			var r *resourcelease.FailRequest
			call(&r, func() error { err := d.Fail(bg, r); return err })
		case 5:
			var r *resourcelease.DrainRequest
			call(&r, func() error { _, err := d.Drain(bg, r); return err })
		case 6:
			var r *resourcelease.RestoreRequest
			call(&r, func() error { _, err := d.Restore(bg, r); return err })
		case 7:
			var r *resourcelease.StatsRequest
			call(&r, func() error { _, err := d.Stats(bg, r); return err })
		case 8:
			var r *resourcelease.DeadLettersRequest
			call(&r, func() error { _, err := d.DeadLetters(bg, r); return err })
		case 9:
			var r *resourcelease.RedriveRequest
			call(&r, func() error { _, err := d.Redrive(bg, r); return err })
		case 10:
			var r *resourcelease.PurgeRequest
			call(&r, func() error { _, err := d.Purge(bg, r); return err })
		case 11:
			var r *resourcelease.ReleaseRequest
			call(&r, func() error { return d.Release(bg, r) })
		}
	})
}

func ldCheckErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var e *resourcelease.Error
	if !assert.ErrorAs(t, err, &e) {
		return
	}
	assert.True(t, e.Status.Valid(), "status %q", e.Status)
	assert.NotEqual(t, resourcelease.StatusInternal, e.Status, "no internal errors from caller input: %v", err)
}

// ldSinkFunc adapts a function to resourcelease.EventSink.
type ldSinkFunc func(ctx context.Context, e resourcelease.Event) error

func (f ldSinkFunc) ApplyEvent(ctx context.Context, e resourcelease.Event) error { return f(ctx, e) }

// TestDispatcherAfterClose: every procedure but Stats returns ErrClosed
// (status unavailable) once the Dispatcher is closed.
func TestDispatcherAfterClose(t *testing.T) {
	f := newLD(t, resourcelease.DispatcherConfig{})
	f.enqueue(t, "a")
	l := f.lease(t, "w")
	require.NoError(t, f.d.Close())
	ctx := context.Background()
	var nilCtx context.Context // tolerated: treated as context.Background()
	tok := l.OwnershipToken
	calls := map[string]func() error{
		"enqueue": func() error {
			_, err := f.d.Enqueue(nilCtx, &resourcelease.EnqueueRequest{Payload: ldItem("b")})
			return err
		},
		"lease": func() error {
			_, err := f.d.Lease(nilCtx, &resourcelease.LeaseRequest{Wait: 10 * time.Millisecond})
			return err
		},
		"heartbeat": func() error {
			_, err := f.d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: tok})
			return err
		},
		"complete": func() error {
			err := f.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: tok})
			return err
		},
		"fail":  func() error { err := f.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: tok}); return err },
		"drain": func() error { _, err := f.d.Drain(ctx, nil); return err },
		"restore": func() error {
			_, err := f.d.Restore(ctx, &resourcelease.RestoreRequest{Items: []resourcelease.PendingItem{{Payload: *ldItem("c"), SequenceID: 50}}})
			return err
		},
		"redrive": func() error { _, err := f.d.Redrive(ctx, &resourcelease.RedriveRequest{All: true}); return err },
		"purge":   func() error { _, err := f.d.Purge(ctx, &resourcelease.PurgeRequest{All: true}); return err },
		"release": func() error { return f.d.Release(ctx, &resourcelease.ReleaseRequest{OwnershipToken: tok}) },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call()
			assert.ErrorIs(t, err, resourcelease.ErrClosed)
			assert.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err))
		})
	}
	st, err := f.d.Stats(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, st.ActiveLeaseCount, "Stats still reads the closed queue")
}
