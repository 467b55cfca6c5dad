package worker_test

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/leasemesh/leasemesh/worker"
)

// settleLedger is a dispatcher that records every successful complete, by
// sequence id: the ground truth for "completed exactly once".
type settleLedger struct {
	resourcelease.BatchDispatcher
	mu        sync.Mutex
	completed map[int64]int
}

func newSettleLedger(d resourcelease.BatchDispatcher) *settleLedger {
	return &settleLedger{BatchDispatcher: d, completed: map[int64]int{}}
}

func (s *settleLedger) Complete(ctx context.Context, req *resourcelease.CompleteRequest) error {
	err := s.BatchDispatcher.Complete(ctx, req)
	if err == nil {
		s.mu.Lock()
		s.completed[req.OwnershipToken.SequenceID]++
		s.mu.Unlock()
	}
	return err
}

func (s *settleLedger) CompleteBatch(ctx context.Context, req *resourcelease.CompleteBatchRequest) ([]error, error) {
	errs, err := s.BatchDispatcher.CompleteBatch(ctx, req)
	if err == nil {
		s.mu.Lock()
		for i, e := range errs {
			if e == nil {
				s.completed[req.OwnershipTokens[i].SequenceID]++
			}
		}
		s.mu.Unlock()
	}
	return errs, err
}

func (s *settleLedger) counts() map[int64]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int64]int, len(s.completed))
	for k, v := range s.completed {
		out[k] = v
	}
	return out
}

// total is how many settles the ledger holds.
func (s *settleLedger) total() int {
	n := 0
	for _, c := range s.counts() {
		n += c
	}
	return n
}

// killable is a real HTTP server on a fixed loopback port that can be
// killed (listener and every connection closed, in-flight answers lost)
// and started again on the same port: a dispatcher process dying and
// coming back.
type killable struct {
	t     *testing.T
	h     http.Handler
	addr  string
	calls atomic.Int64
	mu    sync.Mutex
	srv   *http.Server
	done  chan struct{}
}

func newKillable(t *testing.T, h http.Handler) *killable {
	t.Helper()
	k := &killable{t: t, addr: "127.0.0.1:0"}
	k.h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.calls.Add(1)
		h.ServeHTTP(w, r)
	})
	k.start()
	t.Cleanup(k.kill)
	return k
}

func (k *killable) url() string { return "http://" + k.addr + "/yarpc/v1" }

func (k *killable) start() {
	k.t.Helper()
	var ln net.Listener
	var err error
	for range 100 { // the port of a killed server can take a moment to free
		if ln, err = net.Listen("tcp", k.addr); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(k.t, err)
	k.addr = ln.Addr().String()
	srv, err := transport.NewServer(k.h, transport.ServerConfig{})
	require.NoError(k.t, err)
	srv.ErrorLog = nil
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	k.mu.Lock()
	k.srv, k.done = srv, done
	k.mu.Unlock()
}

func (k *killable) kill() {
	k.mu.Lock()
	srv, done := k.srv, k.done
	k.srv = nil
	k.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
		<-done
	}
}

// TestWorkerSurvivesADispatcherDying: a worker and a producer over two
// dispatchers of one queue carry on when one dies mid-load, and use it
// again when it is back; every acknowledged enqueue is completed exactly
// once, and nothing is enqueued twice.
func TestWorkerSurvivesADispatcherDying(t *testing.T) {
	for _, batch := range []int{1, 0} {
		t.Run(fmt.Sprintf("leaseBatch=%d", batch), func(t *testing.T) {
			local, closeD := newLocalDispatcher(resourcelease.QueueConfig{LeaseDuration: 3 * time.Second, HeartbeatInterval: time.Second})
			defer closeD()
			ledger := newSettleLedger(local)
			a := newKillable(t, newHandler(t, ledger, transport.HandlerConfig{}))
			b := newKillable(t, newHandler(t, ledger, transport.HandlerConfig{}))
			client, err := transport.NewClient("", transport.ClientConfig{
				URLs:               []string{a.url(), b.url()},
				EndpointMinBackoff: 10 * time.Millisecond, EndpointMaxBackoff: 100 * time.Millisecond,
			})
			require.NoError(t, err)
			defer client.Close()

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			seen := newResourceSeqs()
			w, err := worker.New(client, worker.Config{
				PeerID: "w1", Concurrency: 4, LeaseBatch: batch, LeaseWait: 200 * time.Millisecond,
				MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quietLogger,
				Handler: func(ctx context.Context, l *resourcelease.Lease) error {
					seen.add(l)
					time.Sleep(time.Millisecond)
					return nil
				},
			})
			require.NoError(t, err)
			runDone := make(chan error, 1)
			go func() { runDone <- w.Run(ctx) }()

			// The producer enqueues through the same two dispatchers and
			// keeps every sequence id it was given.
			const total = 600
			var acked sync.Map // sequenceId → true
			var nAcked, prodErrors atomic.Int64
			prodDone := make(chan struct{})
			go func() {
				defer close(prodDone)
				for i := 0; nAcked.Load() < total && ctx.Err() == nil; i++ {
					it := item
					it.ResourceID = fmt.Sprintf("order-%04d", i)
					resp, err := client.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &it})
					if err != nil {
						prodErrors.Add(1) // both briefly unreachable: go on
						continue
					}
					if _, dup := acked.LoadOrStore(resp.SequenceID, true); !dup {
						nAcked.Add(1)
					}
				}
			}()
			completedSoFar := ledger.total
			require.Eventually(t, func() bool { return completedSoFar() >= total/3 }, 20*time.Second, time.Millisecond)
			b.kill()
			atKill := completedSoFar()
			require.Eventually(t, func() bool { return completedSoFar() >= atKill+total/4 }, 20*time.Second, time.Millisecond,
				"the worker carries on with one dispatcher")
			callsBefore := b.calls.Load()
			b.start()
			require.Eventually(t, func() bool { return b.calls.Load() > callsBefore+10 }, 10*time.Second, time.Millisecond,
				"the dispatcher that came back is used again")
			<-prodDone
			// Leases orphaned by the kill expire (3 s) and are delivered again.
			require.Eventually(t, func() bool { return completedSoFar() >= total }, 30*time.Second, 10*time.Millisecond)
			cancel()
			require.NoError(t, <-runDone)

			counts := ledger.counts()
			acked.Range(func(k, _ any) bool {
				require.Equal(t, 1, counts[k.(int64)], "item %d completed once", k)
				return true
			})
			// An enqueue applied twice is two sequence ids for one resource
			// id (the producer gives each payload its own resource id).
			seen.requireOnce(t)
			require.Equal(t, len(counts), seen.resources(), "every completed item is one resource id's")
			st, err := local.Stats(context.Background(), nil)
			require.NoError(t, err)
			require.Zero(t, st.PendingCount+st.ActiveLeaseCount, "nothing left over: no item was enqueued twice")
			ws := w.Stats()
			require.Zero(t, ws.Lost, "no lease lost: %+v", ws)
			require.Zero(t, ws.Errors, "the client's failover hid the dead dispatcher from the worker: %+v", ws)
			require.Equal(t, ws.Completed+ws.PossiblySettled, int64(total), "every lease the worker got completed: %+v", ws)
		})
	}
}

// TestWorkerPossiblySettled: a complete whose answer a proxy drops is
// retried; the retry finds the token unknown, and the worker counts the
// lease possibly settled, not lost. With one dispatcher the worker's own
// retry does it; with two, the client's failover.
func TestWorkerPossiblySettled(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("dispatchers=%d", n), func(t *testing.T) {
			local, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
			defer closeD()
			var dropped atomic.Int32
			h := newHandler(t, local, transport.HandlerConfig{})
			proxy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.Header.Get(transport.HeaderProcedure), "::"+transport.VerbComplete) && dropped.Add(1) == 1 {
					h.ServeHTTP(httptest.NewRecorder(), r) // applied; the answer is lost
					panic(http.ErrAbortHandler)
				}
				h.ServeHTTP(w, r)
			})
			var urls []string
			for range n {
				s := httptest.NewServer(proxy)
				defer s.Close()
				urls = append(urls, s.URL)
			}
			client, err := transport.NewClient("", transport.ClientConfig{URLs: urls})
			require.NoError(t, err)
			defer client.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err = local.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &item})
			require.NoError(t, err)
			w, err := worker.New(client, worker.Config{
				LeaseBatch: 1, CompleteBatch: 1, LeaseWait: 50 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond,
				Logger:  quietLogger,
				Handler: func(context.Context, *resourcelease.Lease) error { return nil },
			})
			require.NoError(t, err)
			runDone := make(chan error, 1)
			go func() { runDone <- w.Run(ctx) }()
			require.Eventually(t, func() bool { return w.Stats().PossiblySettled == 1 }, 10*time.Second, time.Millisecond)
			cancel()
			require.NoError(t, <-runDone)
			ws := w.Stats()
			require.Zero(t, ws.Lost, "%+v", ws)
			require.Zero(t, ws.Completed, "%+v", ws)
			require.GreaterOrEqual(t, dropped.Load(), int32(2), "the complete was sent again")
			st, err := local.Stats(context.Background(), nil)
			require.NoError(t, err)
			require.Zero(t, st.PendingCount+st.ActiveLeaseCount, "the first complete did complete it")
			if n == 2 {
				require.Zero(t, ws.Errors, "the client's failover hid the lost answer from the worker: %+v", ws)
			}
		})
	}
}

// resourceSeqs records, per resource id, the sequence ids the handler was
// given: a payload enqueued twice shows as one resource id with two.
type resourceSeqs struct {
	mu   sync.Mutex
	seqs map[string]map[int64]bool
}

func newResourceSeqs() *resourceSeqs { return &resourceSeqs{seqs: map[string]map[int64]bool{}} }

func (r *resourceSeqs) add(l *resourcelease.Lease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.seqs[l.Payload.ResourceID]
	if m == nil {
		m = map[int64]bool{}
		r.seqs[l.Payload.ResourceID] = m
	}
	m[l.SequenceID] = true
}

func (r *resourceSeqs) resources() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

func (r *resourceSeqs) requireOnce(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, m := range r.seqs {
		require.Len(t, m, 1, "resource %s was enqueued as %d items", id, len(m))
	}
}

// countingTransport notes the failed requests of the settle procedures.
type countingTransport struct {
	http.RoundTripper
	failedSettles chan struct{}
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.RoundTripper.RoundTrip(r)
	p := r.Header.Get(transport.HeaderProcedure)
	if err != nil && (strings.HasSuffix(p, "::"+transport.VerbComplete) || strings.HasSuffix(p, "::"+transport.VerbCompleteBatch)) {
		select {
		case c.failedSettles <- struct{}{}:
		default:
		}
	}
	return resp, err
}

// TestWorkerSettleNeverSentIsLost: a complete that could not even connect
// (the dispatcher was down) applied nothing; when its retry finds the token
// unknown (the lease ended meanwhile), the lease is Lost, not
// PossiblySettled.
func TestWorkerSettleNeverSentIsLost(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("dispatchers=%d", n), func(t *testing.T) {
			local, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
			defer closeD()
			var ks []*killable
			var urls []string
			for range n {
				k := newKillable(t, newHandler(t, local, transport.HandlerConfig{}))
				ks = append(ks, k)
				urls = append(urls, k.url())
			}
			rt := &countingTransport{RoundTripper: http.DefaultTransport.(*http.Transport).Clone(), failedSettles: make(chan struct{}, 1)}
			defer rt.RoundTripper.(*http.Transport).CloseIdleConnections()
			client, err := transport.NewClient("", transport.ClientConfig{URLs: urls, HTTPClient: &http.Client{Transport: rt}})
			require.NoError(t, err)
			defer client.Close()
			_, err = local.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: &item})
			require.NoError(t, err)

			handlerErr := make(chan error, 1)
			w, err := worker.New(client, worker.Config{
				LeaseWait: 50 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
				Logger: quietLogger,
				Handler: func(ctx context.Context, l *resourcelease.Lease) error {
					for _, k := range ks {
						k.kill() // the dispatchers go away before the complete
					}
					// Not on a pooled connection that the kill closed (a write
					// on it may have been read): the complete is refused.
					rt.RoundTripper.(*http.Transport).CloseIdleConnections()
					// Meanwhile the lease ends without this worker (it
					// expired, an operator drained it).
					handlerErr <- local.Complete(context.Background(), &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
					return nil
				},
			})
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			runDone := make(chan error, 1)
			go func() { runDone <- w.Run(ctx) }()
			require.NoError(t, <-handlerErr)
			<-rt.failedSettles // a complete was refused at connect
			for _, k := range ks {
				k.start()
			}
			require.Eventually(t, func() bool { s := w.Stats(); return s.Lost+s.PossiblySettled > 0 }, 10*time.Second, time.Millisecond)
			cancel()
			require.NoError(t, <-runDone)
			ws := w.Stats()
			require.Equal(t, int64(1), ws.Lost, "%+v", ws)
			require.Zero(t, ws.PossiblySettled, "the complete that failed was never sent: %+v", ws)
		})
	}
}

// TestWorkerSurvivesADispatcherHanging: as TestWorkerSurvivesADispatcherDying,
// but the dispatcher's host goes away without resetting anything: a
// connection to it hangs (no refusal). The client's dial timeout fails
// over, the worker sees no error, nothing is lost or enqueued twice, and
// the dispatcher is used again when it answers again, within the default
// back-off.
func TestWorkerSurvivesADispatcherHanging(t *testing.T) {
	local, closeD := newLocalDispatcher(resourcelease.QueueConfig{LeaseDuration: 3 * time.Second, HeartbeatInterval: time.Second})
	defer closeD()
	ledger := newSettleLedger(local)
	a := newKillable(t, newHandler(t, ledger, transport.HandlerConfig{}))
	b := newKillable(t, newHandler(t, ledger, transport.HandlerConfig{}))
	var hung atomic.Bool
	var hungDials atomic.Int64
	unhung := make(chan struct{})
	var unhangOnce sync.Once
	unhang := func() { hung.Store(false); unhangOnce.Do(func() { close(unhung) }) }
	defer unhang()
	dialer := &net.Dialer{Timeout: 30 * time.Second}
	ht := &http.Transport{
		DisableKeepAlives: true, // every call connects: each meets the hang
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if hung.Load() && addr == b.addr {
				hungDials.Add(1)
				select { // a SYN nobody answers
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-unhung:
					return nil, &net.OpError{Op: "dial", Net: network, Err: errHostGone}
				}
			}
			return dialer.DialContext(ctx, network, addr)
		},
	}
	defer ht.CloseIdleConnections()
	client, err := transport.NewClient("", transport.ClientConfig{
		URLs: []string{a.url(), b.url()}, HTTPClient: &http.Client{Transport: ht},
		DialTimeout: 300 * time.Millisecond, // bounded test time (a loaded machine still connects well within it); back-off at its defaults
	})
	require.NoError(t, err)
	defer client.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	seen := newResourceSeqs()
	w, err := worker.New(client, worker.Config{
		PeerID: "w1", Concurrency: 4, LeaseWait: 500 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quietLogger,
		Handler: func(ctx context.Context, l *resourcelease.Lease) error {
			seen.add(l)
			return nil
		},
	})
	require.NoError(t, err)
	runDone := make(chan error, 1)
	go func() { runDone <- w.Run(ctx) }()

	const total = 300
	var nAcked, prodErrors atomic.Int64
	prodDone := make(chan struct{})
	go func() {
		defer close(prodDone)
		for i := 0; nAcked.Load() < total && ctx.Err() == nil; i++ {
			it := item
			it.ResourceID = fmt.Sprintf("order-%04d", i)
			if _, err := client.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &it}); err != nil {
				prodErrors.Add(1)
				continue
			}
			nAcked.Add(1)
		}
	}()
	completed := ledger.total
	require.Eventually(t, func() bool { return completed() >= total/3 }, 20*time.Second, time.Millisecond)
	hung.Store(true)
	atHang := completed()
	require.Eventually(t, func() bool { return completed() >= atHang+total/4 }, 20*time.Second, time.Millisecond,
		"the worker carries on with one dispatcher")
	require.Positive(t, hungDials.Load(), "calls met the hang")
	callsBefore := b.calls.Load()
	unhang()
	unhungAt := time.Now()
	// While it hung it served nothing (every call connects anew); the
	// worker may be idle by now, so one call it serves is the proof.
	require.Eventually(t, func() bool { return b.calls.Load() > callsBefore }, transport.DefaultEndpointMaxBackoff+5*time.Second, time.Millisecond,
		"the dispatcher that answers again is used again within the back-off's cap")
	t.Logf("used again %v after it answered again", time.Since(unhungAt).Round(time.Millisecond))
	<-prodDone
	require.Eventually(t, func() bool { return completed() >= total }, 30*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-runDone)

	seen.requireOnce(t)
	for seq, n := range ledger.counts() {
		require.Equal(t, 1, n, "item %d completed once", seq)
	}
	require.Zero(t, prodErrors.Load(), "every enqueue failed over")
	ws := w.Stats()
	require.Zero(t, ws.Lost, "%+v", ws)
	require.Zero(t, ws.Errors, "the client's failover hid the hanging dispatcher from the worker: %+v", ws)
	require.Equal(t, int64(total), ws.Completed, "%+v", ws)
}

var errHostGone = errors.New("host gone")
