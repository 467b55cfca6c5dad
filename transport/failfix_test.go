package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// oldMember answers every batch procedure as a dispatcher that predates
// them, and serves the rest with h: the old half of a mesh being upgraded.
func oldMember(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get(transport.HeaderProcedure), "Batch") {
			_, _ = io.Copy(io.Discard, r.Body)
			transport.WriteError(w, resourcelease.Errorf(resourcelease.StatusNotFound, transport.CodeUnknownProcedure, "unknown procedure"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// TestClientMixedVersionBatchFallback: in a mesh of an old dispatcher and a
// new one, a batch call whose answer the new one lost and whose retry lands
// on the old one falls back to per-item calls without applying anything
// twice, with what is left of its wait, and reporting possibly settled
// leases; and the old one does not send the new one's calls to per-item.
func TestClientMixedVersionBatchFallback(t *testing.T) {
	ctx := context.Background()
	// The first call of a new Client goes to its second URL: the new one.
	setup := func(t *testing.T, newWrap func(http.Handler) http.Handler, oldWrap func(http.Handler) http.Handler) (*resourcelease.LocalDispatcher, *transport.Client) {
		d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
		t.Cleanup(closeD)
		h := newHandler(t, d, transport.HandlerConfig{})
		if oldWrap == nil {
			oldWrap = func(h http.Handler) http.Handler { return h }
		}
		old := httptest.NewServer(oldWrap(oldMember(h)))
		t.Cleanup(old.Close)
		cur := httptest.NewServer(newWrap(h))
		t.Cleanup(cur.Close)
		return d, newMeshClient(t, []string{old.URL, cur.URL}, transport.ClientConfig{})
	}

	t.Run("enqueueBatch enqueues once", func(t *testing.T) {
		drop := newDropper(transport.VerbEnqueueBatch, 1)
		d, c := setup(t, drop.wrap, nil)
		resp, err := c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{plainItem, plainItem}})
		require.NoError(t, err)
		require.Equal(t, int32(1), drop.seen.Load(), "the first try went to the new dispatcher")
		require.Len(t, resp.Results, 2)
		for _, r := range resp.Results {
			require.NoError(t, r.Err)
			require.False(t, r.Duplicate, "the caller enqueued once")
		}
		st, err := d.Stats(ctx, nil)
		require.NoError(t, err)
		require.Equal(t, 2, st.PendingCount, "two payloads, enqueued once each")

		// The old dispatcher's answer does not send the new one's batches
		// to per-item calls.
		before := drop.seen.Load()
		for range 6 {
			_, err := c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{plainItem}})
			require.NoError(t, err)
		}
		require.Greater(t, drop.seen.Load(), before, "the new dispatcher still gets enqueueBatch")
	})

	t.Run("completeBatch is possibly settled", func(t *testing.T) {
		drop := newDropper(transport.VerbCompleteBatch, 1)
		d, c := setup(t, drop.wrap, nil)
		_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &plainItem})
		require.NoError(t, err)
		l, err := d.Lease(ctx, &resourcelease.LeaseRequest{})
		require.NoError(t, err)
		require.NotNil(t, l)
		errs, err := c.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: []resourcelease.OwnershipToken{l.OwnershipToken}})
		require.NoError(t, err)
		require.Equal(t, int32(1), drop.seen.Load())
		require.ErrorIs(t, errs[0], resourcelease.ErrPossiblySettled, "the lost batch completed it")
	})

	t.Run("leaseBatch keeps what is left of its wait", func(t *testing.T) {
		const hold = 300 * time.Millisecond
		dying := func(h http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(hold) // dies mid long-poll
				panic(http.ErrAbortHandler)
			})
		}
		waits := make(chan int64, 4) // the waitMs of the old one's lease calls
		_, c := setup(t, dying, func(h http.Handler) http.Handler { return recordLeaseWaits(waits, h) })
		leases, err := c.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{MaxItems: 2, Wait: time.Second})
		require.NoError(t, err)
		require.Empty(t, leases)
		wait := <-waits
		require.Positive(t, wait)
		require.LessOrEqual(t, wait, int64(1000-hold/time.Millisecond), "the per-item lease waits only what was left")
	})
}

// hangingConnect is a TLS "dispatcher" on a host that is gone: it takes
// connections but never completes a handshake, so a client's connect
// hangs, as with a host that drops packets instead of refusing them.
func hangingConnect(t *testing.T) (url string, conns *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	conns = new(atomic.Int64)
	var mu sync.Mutex
	var held []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			_ = c.Close()
		}
	})
	return "https://" + ln.Addr().String() + "/yarpc/v1", conns
}

// TestClientAvoidsAHangingDispatcher: with default settings but a short
// dial timeout, concurrent calls over a dispatcher whose connect hangs and
// a healthy one all succeed: a try that gets no connection in time fails
// over, and afterwards only one call at a time probes the hanging one.
func TestClientAvoidsAHangingDispatcher(t *testing.T) {
	d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeD()
	ok := httptest.NewTLSServer(newHandler(t, d, transport.HandlerConfig{}))
	defer ok.Close()
	hang, conns := hangingConnect(t)
	tlsCfg := ok.Client().Transport.(*http.Transport).TLSClientConfig
	c := newMeshClient(t, []string{hang, ok.URL}, transport.ClientConfig{TLS: tlsCfg.Clone(), DialTimeout: time.Second}) // the TLS handshakes of 20 calls at once on a loaded machine fit well within it
	wave := func() time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, 20)
		for range 20 {
			wg.Go(func() {
				_, err := c.Stats(context.Background(), nil)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		return time.Since(start)
	}
	took := wave()
	require.Less(t, took, 5*time.Second, "the calls failed over after the dial timeout, not the call's")
	first := conns.Load()
	require.Positive(t, first, "some calls went to the hanging dispatcher")
	for range 3 {
		wave()
	}
	require.LessOrEqual(t, conns.Load()-first, int64(3), "at most one probe per wave, not one per call")
}

// TestClientDeadlineDoesNotBackOffAHealthyDispatcher: a slow call that the
// caller's deadline cuts leaves its dispatcher, which it connected to, in
// the rotation; and
// when one dispatcher was backed off and the other fails, a call still
// fails over to the first.
func TestClientDeadlineDoesNotBackOffAHealthyDispatcher(t *testing.T) {
	d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeD()
	var sickA, sickB, slowA atomic.Bool
	var na, nb atomic.Int64
	h := newHandler(t, d, transport.HandlerConfig{})
	member := func(sick, slow *atomic.Bool, n *atomic.Int64) *httptest.Server {
		s := httptest.NewServer(counting(n, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if slow != nil && slow.Load() {
				time.Sleep(200 * time.Millisecond) // a slow query
			}
			if sick.Load() {
				transport.WriteError(w, resourcelease.ErrStorageUnavailable)
				return
			}
			h.ServeHTTP(w, r)
		})))
		t.Cleanup(s.Close)
		return s
	}
	b, a := member(&sickB, nil, &nb), member(&sickA, &slowA, &na) // the first call goes to a
	c := newMeshClient(t, []string{b.URL, a.URL}, transport.ClientConfig{EndpointMinBackoff: time.Hour, EndpointMaxBackoff: time.Hour})
	slowA.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := c.Stats(ctx, nil)
	cancel()
	slowA.Store(false)
	require.Equal(t, resourcelease.StatusDeadlineExceeded, resourcelease.StatusOf(err), "%v", err)
	require.Equal(t, int64(1), na.Load())
	for range 10 {
		_, err := c.Stats(context.Background(), nil)
		require.NoError(t, err)
	}
	require.Equal(t, int64(6), na.Load(), "a is still used half of the time")

	// a answers unavailable once: backed off for an hour, though it is
	// fine again at once. Then b fails: its calls go to a all the same.
	sickA.Store(true)
	for na.Load() == 6 {
		_, err := c.Stats(context.Background(), nil)
		require.NoError(t, err)
	}
	sickA.Store(false)
	sickB.Store(true)
	_, err = c.Stats(context.Background(), nil)
	require.NoError(t, err, "b's failure fails over to a, backed off or not")
}

// TestClientExpiredDeadline: a deadline that passed before the call was
// sent, though the context does not say so yet, is deadline-exceeded and
// marks no dispatcher down.
func TestClientExpiredDeadline(t *testing.T) {
	d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeD()
	var na, nb atomic.Int64
	h := newHandler(t, d, transport.HandlerConfig{})
	a := httptest.NewServer(counting(&na, h))
	defer a.Close()
	b := httptest.NewServer(counting(&nb, h))
	defer b.Close()
	c := newMeshClient(t, []string{a.URL, b.URL}, transport.ClientConfig{EndpointMinBackoff: time.Hour, EndpointMaxBackoff: time.Hour})
	_, err := c.Stats(staleCtx{context.Background()}, nil)
	require.Equal(t, resourcelease.StatusDeadlineExceeded, resourcelease.StatusOf(err), "%v", err)
	require.ErrorIs(t, err, transport.ErrNotConnected, "nothing was sent")
	require.Zero(t, na.Load()+nb.Load())
	for range 10 {
		_, err := c.Stats(context.Background(), nil)
		require.NoError(t, err)
	}
	require.Equal(t, int64(5), na.Load(), "no dispatcher was backed off")
	require.Equal(t, int64(5), nb.Load(), "no dispatcher was backed off")
}

// staleCtx has a deadline in the past but is not done yet: the moment
// between a deadline passing and its timer firing.
type staleCtx struct{ context.Context }

func (staleCtx) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }

// TestClientDoesNotRetryRedriveAndPurge: a redrive or purge whose answer was
// lost is not sent again (its retry would report 0, or act on dead letters
// that arrived since).
func TestClientDoesNotRetryRedriveAndPurge(t *testing.T) {
	for _, verb := range []string{transport.VerbRedrive, transport.VerbPurge} {
		t.Run(verb, func(t *testing.T) {
			d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
			defer closeD()
			drop := newDropper(verb, 1)
			var urls []string
			for range 2 {
				s := httptest.NewServer(drop.wrap(newHandler(t, d, transport.HandlerConfig{})))
				defer s.Close()
				urls = append(urls, s.URL)
			}
			c := newMeshClient(t, urls, transport.ClientConfig{})
			var err error
			if verb == transport.VerbRedrive {
				_, err = c.Redrive(context.Background(), &resourcelease.RedriveRequest{All: true})
			} else {
				_, err = c.Purge(context.Background(), &resourcelease.PurgeRequest{All: true})
			}
			require.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err), "%v", err)
			require.NotErrorIs(t, err, transport.ErrNotConnected, "it was sent")
			require.Equal(t, int32(1), drop.seen.Load(), "not sent again")
		})
	}
}

// TestClientNotConnected: a call refused at connect matches ErrNotConnected
// (nothing was applied); one whose answer was lost does not.
func TestClientNotConnected(t *testing.T) {
	for _, n := range []int{1, 2} {
		urls := []string{deadURL(t)}
		if n == 2 {
			urls = append(urls, deadURL(t))
		}
		c := newMeshClient(t, urls, transport.ClientConfig{})
		err := c.Complete(context.Background(), &resourcelease.CompleteRequest{OwnershipToken: resourcelease.OwnershipToken{SequenceID: 1}})
		require.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err), "%v", err)
		require.Equal(t, transport.CodeTransportUnavailable, resourcelease.CodeOf(err))
		require.ErrorIs(t, err, transport.ErrNotConnected, "%d URLs", n)
	}
	cut := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) }))
	defer cut.Close()
	dead := deadURL(t)
	for _, urls := range [][]string{{dead, cut.URL}, {cut.URL, dead}} { // whichever is tried first
		c := newMeshClient(t, urls, transport.ClientConfig{})
		_, err := c.Stats(context.Background(), nil)
		require.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err), "%v", err)
		require.NotErrorIs(t, err, transport.ErrNotConnected, "the cut one was sent the call")
	}
}

// recordLeaseWaits serves with h and sends the waitMs of every lease call
// it passes on to waits.
func recordLeaseWaits(waits chan<- int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get(transport.HeaderProcedure), "::"+transport.VerbLease) {
			body, _ := io.ReadAll(r.Body)
			var req struct {
				WaitMs int64 `json:"waitMs"`
			}
			_ = json.Unmarshal(body, &req)
			waits <- req.WaitMs
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h.ServeHTTP(w, r)
	})
}
