package transport_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// dropper cuts the connection of the first left calls of procedure verb
// after the handler applied them, so that their answer is lost: what a
// dispatcher that dies mid-call, or a proxy that drops a response, does.
// One dropper shared by several servers drops the first such call
// whichever server it reaches.
type dropper struct {
	verb string
	left atomic.Int32
	seen atomic.Int32 // calls of verb, dropped or not
}

func newDropper(verb string, n int32) *dropper {
	d := &dropper{verb: verb}
	d.left.Store(n)
	return d
}

func (d *dropper) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d == nil || !strings.HasSuffix(r.Header.Get(transport.HeaderProcedure), "::"+d.verb) {
			h.ServeHTTP(w, r)
			return
		}
		d.seen.Add(1)
		if d.left.Add(-1) < 0 {
			h.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(httptest.NewRecorder(), r) // applied, answer thrown away
		panic(http.ErrAbortHandler)            // the connection is cut
	})
}

// plainItem is item without a requestId, as most producers send it.
var plainItem = func() resourcelease.Item { it := item; it.RequestID = ""; return it }()

// counting counts the calls a server gets.
func counting(n *atomic.Int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	})
}

// deadURL is the URL of a loopback port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "http://" + addr + "/yarpc/v1"
}

func newMeshClient(t *testing.T, urls []string, cfg transport.ClientConfig) *transport.Client {
	t.Helper()
	cfg.URLs = urls
	c, err := transport.NewClient("", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestNewClientURLs(t *testing.T) {
	const u1, u2 = "http://127.0.0.1:1/yarpc/v1", "http://127.0.0.1:2/yarpc/v1"
	tests := []struct {
		name    string
		raw     string
		cfg     transport.ClientConfig
		want    []string
		wantErr string
	}{
		{name: "one", raw: u1, want: []string{u1}},
		{name: "raw and list", raw: u1, cfg: transport.ClientConfig{URLs: []string{u2}}, want: []string{u1, u2}},
		{name: "list only", cfg: transport.ClientConfig{URLs: []string{u2, u1}}, want: []string{u2, u1}},
		{name: "none", wantErr: "invalid URL"},
		{name: "twice", raw: u1, cfg: transport.ClientConfig{URLs: []string{u1}}, wantErr: "given twice"},
		{name: "bad in list", raw: u1, cfg: transport.ClientConfig{URLs: []string{"ftp://x"}}, wantErr: "want http:// or https://"},
		{name: "negative backoff", raw: u1, cfg: transport.ClientConfig{EndpointMinBackoff: -1}, wantErr: "must not be negative"},
		{name: "min above max", raw: u1, cfg: transport.ClientConfig{EndpointMinBackoff: time.Second, EndpointMaxBackoff: time.Millisecond}, wantErr: "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := transport.NewClient(tt.raw, tt.cfg)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, c.URLs())
		})
	}
}

// TestClientSpreadsAndFailsOver: calls go to both dispatchers in turn; with
// one dead every call still succeeds, and the dead one is not tried on
// every call.
func TestClientSpreadsAndFailsOver(t *testing.T) {
	d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeD()
	var na, nb atomic.Int64
	a := httptest.NewServer(counting(&na, newHandler(t, d, transport.HandlerConfig{})))
	defer a.Close()
	b := httptest.NewServer(counting(&nb, newHandler(t, d, transport.HandlerConfig{})))
	defer b.Close()
	ctx := context.Background()

	c := newMeshClient(t, []string{a.URL, b.URL}, transport.ClientConfig{})
	for range 10 {
		_, err := c.Stats(ctx, nil)
		require.NoError(t, err)
	}
	require.Equal(t, int64(5), na.Load(), "round-robin")
	require.Equal(t, int64(5), nb.Load(), "round-robin")

	// One of two dead: 40 calls all succeed, and the dead one gets a try
	// per back-off, not one per call.
	var nDead atomic.Int64
	dead := httptest.NewServer(counting(&nDead, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler) // accepts, then cuts every call
	})))
	defer dead.Close()
	c2 := newMeshClient(t, []string{dead.URL, a.URL}, transport.ClientConfig{EndpointMinBackoff: time.Hour, EndpointMaxBackoff: time.Hour})
	before := na.Load()
	for range 40 {
		_, err := c2.Stats(ctx, nil)
		require.NoError(t, err)
	}
	require.Equal(t, int64(1), nDead.Load(), "a failed dispatcher is left alone for its back-off")
	require.Equal(t, int64(40), na.Load()-before)

	// A port nobody listens on: the connection is refused, the call goes on.
	c3 := newMeshClient(t, []string{deadURL(t), a.URL}, transport.ClientConfig{})
	for range 4 {
		_, err := c3.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &plainItem})
		require.NoError(t, err)
	}
	st, err := d.Stats(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, 4, st.PendingCount)

	// Everything dead: unavailable, promptly.
	c4 := newMeshClient(t, []string{deadURL(t), deadURL(t)}, transport.ClientConfig{})
	_, err = c4.Stats(ctx, nil)
	require.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err), "%v", err)
}

// TestClientReturnsToRecoveredDispatcher: a dispatcher that answered
// unavailable is used again once its back-off has passed and it answers.
func TestClientReturnsToRecoveredDispatcher(t *testing.T) {
	d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeD()
	var sick atomic.Bool
	sick.Store(true)
	var nb atomic.Int64
	h := newHandler(t, d, transport.HandlerConfig{})
	a := httptest.NewServer(h)
	defer a.Close()
	b := httptest.NewServer(counting(&nb, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sick.Load() {
			w.Header().Set(transport.HeaderStatus, "unavailable")
			w.Header().Set(transport.HeaderErrorCode, "unavailable")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})))
	defer b.Close()
	c := newMeshClient(t, []string{a.URL, b.URL}, transport.ClientConfig{EndpointMinBackoff: 5 * time.Millisecond, EndpointMaxBackoff: 20 * time.Millisecond})
	ctx := context.Background()
	for range 20 {
		_, err := c.Stats(ctx, nil)
		require.NoError(t, err)
	}
	sick.Store(false)
	before := nb.Load()
	require.Eventually(t, func() bool {
		_, err := c.Stats(ctx, nil)
		return err == nil && nb.Load() > before+3
	}, 10*time.Second, time.Millisecond, "the recovered dispatcher is used again")
}

// TestClientRetriesWithoutApplyingTwice: a call whose answer is lost goes to
// the other dispatcher without applying anything twice.
func TestClientRetriesWithoutApplyingTwice(t *testing.T) {
	ctx := context.Background()
	setup := func(t *testing.T, drop *dropper) (*resourcelease.LocalDispatcher, *transport.Client) {
		d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
		t.Cleanup(closeD)
		var urls []string
		for range 2 {
			s := httptest.NewServer(drop.wrap(newHandler(t, d, transport.HandlerConfig{})))
			t.Cleanup(s.Close)
			urls = append(urls, s.URL)
		}
		return d, newMeshClient(t, urls, transport.ClientConfig{})
	}
	lease := func(t *testing.T, c *transport.Client) *resourcelease.Lease {
		t.Helper()
		l, err := c.Lease(ctx, nil)
		require.NoError(t, err)
		require.NotNil(t, l)
		return l
	}
	stats := func(t *testing.T, d *resourcelease.LocalDispatcher) *resourcelease.Stats {
		t.Helper()
		st, err := d.Stats(ctx, nil)
		require.NoError(t, err)
		return st
	}

	t.Run("enqueue dedupes with a generated requestId", func(t *testing.T) {
		drop := newDropper(transport.VerbEnqueue, 1)
		d, c := setup(t, drop)
		resp, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &plainItem})
		require.NoError(t, err)
		require.False(t, resp.Duplicate, "the caller enqueued once")
		require.Equal(t, int32(2), drop.seen.Load(), "the lost answer was retried")
		require.Equal(t, 1, stats(t, d).PendingCount, "applied once")
		require.Empty(t, plainItem.RequestID, "the caller's payload is not changed")
	})
	t.Run("enqueueBatch dedupes too", func(t *testing.T) {
		drop := newDropper(transport.VerbEnqueueBatch, 1)
		d, c := setup(t, drop)
		own := plainItem
		own.RequestID = "mine"
		resp, err := c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{plainItem, own}})
		require.NoError(t, err)
		require.Len(t, resp.Results, 2)
		require.False(t, resp.Results[0].Duplicate)
		require.True(t, resp.Results[1].Duplicate, "the caller's own requestId: the retry is a duplicate, and says so")
		require.Equal(t, 2, stats(t, d).PendingCount)
	})
	t.Run("complete is possibly settled", func(t *testing.T) {
		drop := newDropper(transport.VerbComplete, 1)
		d, c := setup(t, drop)
		_, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &plainItem})
		require.NoError(t, err)
		l := lease(t, c)
		err = c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
		require.ErrorIs(t, err, resourcelease.ErrPossiblySettled)
		require.ErrorIs(t, err, resourcelease.ErrUnknownToken, "it is an unknown_token answer too")
		st := stats(t, d)
		require.Equal(t, 0, st.PendingCount+st.ActiveLeaseCount, "the first try completed it")
		// A plain unknown token, with no lost answer before, stays that.
		err = c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
		require.ErrorIs(t, err, resourcelease.ErrUnknownToken)
		require.NotErrorIs(t, err, resourcelease.ErrPossiblySettled)
	})
	t.Run("completeBatch results are possibly settled", func(t *testing.T) {
		drop := newDropper(transport.VerbCompleteBatch, 1)
		_, c := setup(t, drop)
		_, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &plainItem})
		require.NoError(t, err)
		l := lease(t, c)
		errs, err := c.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: []resourcelease.OwnershipToken{l.OwnershipToken}})
		require.NoError(t, err)
		require.ErrorIs(t, errs[0], resourcelease.ErrPossiblySettled)
	})
	t.Run("fail is possibly settled", func(t *testing.T) {
		drop := newDropper(transport.VerbFail, 1)
		d, c := setup(t, drop)
		_, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &plainItem})
		require.NoError(t, err)
		l := lease(t, c)
		err = c.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, Reason: "x", DeadLetter: true})
		require.ErrorIs(t, err, resourcelease.ErrPossiblySettled)
		require.Equal(t, 1, stats(t, d).DeadLetterCount, "failed once")
	})
	t.Run("drain is not retried after a lost answer", func(t *testing.T) {
		drop := newDropper(transport.VerbDrain, 1)
		_, c := setup(t, drop)
		_, err := c.Drain(ctx, nil)
		require.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err), "%v", err)
		require.Equal(t, int32(1), drop.seen.Load(), "not sent again")
	})
	t.Run("heartbeat is retried", func(t *testing.T) {
		drop := newDropper(transport.VerbHeartbeat, 1)
		_, c := setup(t, drop)
		_, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &plainItem})
		require.NoError(t, err)
		l := lease(t, c)
		_, err = c.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: l.OwnershipToken})
		require.NoError(t, err)
		require.Equal(t, int32(2), drop.seen.Load())
	})
}

// TestClientLeaseRetryKeepsItsDeadline: a long-poll that failed over waits
// only what was left of its wait, and one whose wait is spent is not sent
// again.
func TestClientLeaseRetryKeepsItsDeadline(t *testing.T) {
	d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeD()
	h := newHandler(t, d, transport.HandlerConfig{})
	var cut atomic.Int32
	const hold = 300 * time.Millisecond
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cut.Add(1)
		time.Sleep(hold) // a dispatcher that dies mid long-poll
		panic(http.ErrAbortHandler)
	}))
	defer a.Close()
	waits := make(chan int64, 4) // the waitMs b was asked for
	b := httptest.NewServer(recordLeaseWaits(waits, h))
	defer b.Close()
	c := newMeshClient(t, []string{a.URL, b.URL}, transport.ClientConfig{EndpointMinBackoff: time.Millisecond, EndpointMaxBackoff: time.Millisecond})
	ctx := context.Background()

	// Round-robin sends one call of two to a; the one that does fails
	// over to b with what is left of its second.
	for cut.Load() == 0 {
		l, err := c.Lease(ctx, &resourcelease.LeaseRequest{Wait: time.Second})
		require.NoError(t, err)
		require.Nil(t, l)
		wait := <-waits
		if cut.Load() == 0 {
			require.Equal(t, int64(1000), wait, "a first try asks for the whole wait")
			continue
		}
		require.LessOrEqual(t, wait, int64(1000-hold/time.Millisecond), "the retry waits only what was left")
		require.Positive(t, wait)
	}

	// A wait spent on a is not sent to b.
	for cut.Store(0); cut.Load() == 0; {
		l, err := c.Lease(ctx, &resourcelease.LeaseRequest{Wait: hold / 3})
		if cut.Load() == 0 {
			require.NoError(t, err)
			<-waits
			continue
		}
		require.Nil(t, l)
		require.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err), "%v", err)
	}
	select {
	case w := <-waits:
		t.Fatalf("a long-poll whose wait was spent went to the other dispatcher (waitMs %d)", w)
	default:
	}
}
