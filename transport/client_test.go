package transport_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

// newClientServer serves d over a real HTTP server and returns a Client of
// it; both are closed when the test ends.
func newClientServer(t *testing.T, d resourcelease.Dispatcher, hopts transport.HandlerConfig, copts transport.ClientConfig) *transport.Client {
	t.Helper()
	srv := httptest.NewServer(newHandler(t, d, hopts))
	c, err := transport.NewClient(srv.URL+"/yarpc/v1", copts)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = c.Close()
		srv.Close()
	})
	return c
}

// newRawServer serves fn and returns a Client of it.
func newRawServer(t *testing.T, copts transport.ClientConfig, fn http.HandlerFunc) *transport.Client {
	t.Helper()
	srv := httptest.NewServer(fn)
	c, err := transport.NewClient(srv.URL, copts)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = c.Close()
		srv.Close()
	})
	return c
}

// TestClientRoundTrips sends every procedure through Client → handler →
// Dispatcher and back, checking that the request and the response arrive
// intact.
func TestClientRoundTrips(t *testing.T) {
	t.Parallel()
	pending := resourcelease.PendingItem{Payload: item, Attempt: 3, EnqueuedAt: t0, SequenceID: 7,
		LastError: &resourcelease.ErrorInfo{Message: "boom", Code: "app.boom"}, LastOwnershipToken: &token, ReadyAt: t0.Add(time.Second)}
	lease := &resourcelease.Lease{Payload: item, SequenceID: 7, Attempt: 2, EnqueuedAt: t0,
		OwnershipToken: token, OwnerPeerID: "w1", LeaseExpiresAt: t0.Add(30 * time.Second), TTL: 29_999 * time.Millisecond, HeartbeatInterval: 5 * time.Second}
	tests := []struct {
		name string
		// run calls the client and returns the request it sent and the response it got.
		run func(ctx context.Context, c *transport.Client) (req, resp any, err error)
		// serve installs a fake method that records the request it gets and answers wantResp.
		serve    func(f *leasetest.FakeDispatcher, got chan<- any, resp any)
		wantResp any
	}{
		{
			name: "enqueue",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.EnqueueRequest{Payload: &item}
				resp, err := c.Enqueue(ctx, req)
				return req, resp, err
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, resp any) {
				f.EnqueueFn = func(_ context.Context, r *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
					got <- r
					return resp.(*resourcelease.EnqueueResponse), nil
				}
			},
			wantResp: &resourcelease.EnqueueResponse{Stats: resourcelease.QueueCounts{PendingCount: 1}, SequenceID: 9, Duplicate: true},
		},
		{
			name: "lease",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.LeaseRequest{PeerID: "w1", Wait: 10 * time.Millisecond}
				resp, err := c.Lease(ctx, req)
				return req, resp, err
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, resp any) {
				f.LeaseFn = func(_ context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
					got <- r
					return resp.(*resourcelease.Lease), nil
				}
			},
			wantResp: lease,
		},
		{
			name: "heartbeat",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.HeartbeatRequest{OwnershipToken: token}
				resp, err := c.Heartbeat(ctx, req)
				return req, resp, err
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, resp any) {
				f.HeartbeatFn = func(_ context.Context, r *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
					got <- r
					return resp.(*resourcelease.HeartbeatResponse), nil
				}
			},
			wantResp: &resourcelease.HeartbeatResponse{LeaseExpiresAt: t0, TTL: 30 * time.Second},
		},
		{
			name: "complete",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.CompleteRequest{OwnershipToken: token}
				return req, nil, c.Complete(ctx, req)
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, _ any) {
				f.CompleteFn = func(_ context.Context, r *resourcelease.CompleteRequest) error {
					got <- r
					return nil
				}
			},
		},
		{
			name: "fail",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.FailRequest{OwnershipToken: token, Reason: "r", ErrorCode: "c", DeadLetter: true, Metadata: map[string]string{"a": "b"}}
				return req, nil, c.Fail(ctx, req)
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, _ any) {
				f.FailFn = func(_ context.Context, r *resourcelease.FailRequest) error {
					got <- r
					return nil
				}
			},
		},
		{
			name: "release",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.ReleaseRequest{OwnershipToken: token, Delay: 1500 * time.Millisecond}
				return req, nil, c.Release(ctx, req)
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, _ any) {
				f.ReleaseFn = func(_ context.Context, r *resourcelease.ReleaseRequest) error {
					got <- r
					return nil
				}
			},
		},
		{
			name: "drain",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.DrainRequest{}
				resp, err := c.Drain(ctx, req)
				return req, resp, err
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, resp any) {
				f.DrainFn = func(_ context.Context, r *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
					got <- r
					return resp.(*resourcelease.DrainResponse), nil
				}
			},
			wantResp: &resourcelease.DrainResponse{Items: []resourcelease.PendingItem{pending}},
		},
		{
			name: "restore",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.RestoreRequest{Items: []resourcelease.PendingItem{pending, pending}}
				resp, err := c.Restore(ctx, req)
				return req, resp, err
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, resp any) {
				f.RestoreFn = func(_ context.Context, r *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
					got <- r
					return resp.(*resourcelease.RestoreResponse), nil
				}
			},
			wantResp: &resourcelease.RestoreResponse{RestoredCount: 2},
		},
		{
			name: "stats",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.StatsRequest{}
				resp, err := c.Stats(ctx, req)
				return req, resp, err
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, resp any) {
				f.StatsFn = func(_ context.Context, r *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
					got <- r
					return resp.(*resourcelease.Stats), nil
				}
			},
			wantResp: &resourcelease.Stats{PendingCount: 1, ActiveLeaseCount: 2, DeadLetterCount: 3, BackpressureActive: true},
		},
		{
			name: "deadletters",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.DeadLettersRequest{Limit: 5}
				resp, err := c.DeadLetters(ctx, req)
				return req, resp, err
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, resp any) {
				f.DeadLettersFn = func(_ context.Context, r *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
					got <- r
					return resp.(*resourcelease.DeadLettersResponse), nil
				}
			},
			wantResp: &resourcelease.DeadLettersResponse{Items: []resourcelease.DeadLetter{{PendingItem: pending, DeadLetteredAt: t0, Reason: "poison"}}},
		},
		{
			name: "redrive",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.RedriveRequest{SequenceIDs: []int64{4, 5}}
				resp, err := c.Redrive(ctx, req)
				return req, resp, err
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, resp any) {
				f.RedriveFn = func(_ context.Context, r *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
					got <- r
					return resp.(*resourcelease.RedriveResponse), nil
				}
			},
			wantResp: &resourcelease.RedriveResponse{RedrivenCount: 2},
		},
		{
			name: "purge",
			run: func(ctx context.Context, c *transport.Client) (any, any, error) {
				req := &resourcelease.PurgeRequest{SequenceIDs: []int64{6}}
				resp, err := c.Purge(ctx, req)
				return req, resp, err
			},
			serve: func(f *leasetest.FakeDispatcher, got chan<- any, resp any) {
				f.PurgeFn = func(_ context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
					got <- r
					return resp.(*resourcelease.PurgeResponse), nil
				}
			},
			wantResp: &resourcelease.PurgeResponse{PurgedCount: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := &leasetest.FakeDispatcher{}
			got := make(chan any, 1)
			tt.serve(f, got, tt.wantResp)
			c := newClientServer(t, f, transport.HandlerConfig{}, transport.ClientConfig{})
			req, resp, err := tt.run(context.Background(), c)
			require.NoError(t, err)
			require.Equal(t, req, <-got, "the dispatcher got the request the client sent")
			require.Equal(t, tt.wantResp, resp, "the client got the response the dispatcher gave")
		})
	}
}

// TestClientNilRequests checks that nil requests are sent as {}.
func TestClientNilRequests(t *testing.T) {
	t.Parallel()
	c := newClientServer(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{}, transport.ClientConfig{})
	ctx := context.Background()
	l, err := c.Lease(ctx, nil)
	require.NoError(t, err)
	require.Nil(t, l, "null lease")
	_, err = c.Drain(ctx, nil)
	require.NoError(t, err)
	_, err = c.Stats(ctx, nil)
	require.NoError(t, err)
	_, err = c.DeadLetters(ctx, nil)
	require.NoError(t, err)
	_, err = c.Redrive(ctx, nil)
	require.ErrorIs(t, err, &resourcelease.Error{Code: resourcelease.CodeSelectionRequired}, "refused before it is sent")
	_, err = c.Purge(ctx, nil)
	require.ErrorIs(t, err, &resourcelease.Error{Code: resourcelease.CodeSelectionRequired}, "refused before it is sent")
	_, err = c.Restore(ctx, nil)
	require.NoError(t, err)
	_, err = c.Enqueue(ctx, nil)
	require.ErrorIs(t, err, &resourcelease.Error{Code: resourcelease.CodePayloadRequired})
	_, err = c.Heartbeat(ctx, nil)
	require.ErrorIs(t, err, &resourcelease.Error{Code: resourcelease.CodeTokenRequired})
	err = c.Complete(ctx, nil)
	require.ErrorIs(t, err, &resourcelease.Error{Code: resourcelease.CodeTokenRequired})
	err = c.Fail(ctx, nil)
	require.ErrorIs(t, err, &resourcelease.Error{Code: resourcelease.CodeTokenRequired})
}

// TestClientErrors checks that errors cross the wire with status, code,
// message and metadata, so that errors.Is works against the sentinels.
func TestClientErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		err        error
		sentinel   error
		wantStatus resourcelease.Status
		wantCode   string
		wantMsg    string
	}{
		{"unknown token", resourcelease.ErrUnknownToken, resourcelease.ErrUnknownToken, resourcelease.StatusNotFound, resourcelease.CodeUnknownToken, resourcelease.ErrUnknownToken.Message},
		{"wrapped unknown token", &resourcelease.Error{Status: resourcelease.StatusNotFound, Code: resourcelease.CodeUnknownToken, Message: "lease 7/2 expired"},
			resourcelease.ErrUnknownToken, resourcelease.StatusNotFound, resourcelease.CodeUnknownToken, "lease 7/2 expired"},
		{"backpressure", resourcelease.ErrBackpressure, resourcelease.ErrBackpressure, resourcelease.StatusResourceExhausted, resourcelease.CodeBackpressure, resourcelease.ErrBackpressure.Message},
		{"queue full", resourcelease.ErrQueueFull, resourcelease.ErrQueueFull, resourcelease.StatusResourceExhausted, resourcelease.CodeQueueFull, resourcelease.ErrQueueFull.Message},
		{"closed", resourcelease.ErrClosed, resourcelease.ErrClosed, resourcelease.StatusUnavailable, resourcelease.CodeClosed, resourcelease.ErrClosed.Message},
		{"storage", resourcelease.ErrStorageUnavailable, resourcelease.ErrStorageUnavailable, resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, resourcelease.ErrStorageUnavailable.Message},
		{"peer ineligible", resourcelease.ErrPeerIneligible, resourcelease.ErrPeerIneligible, resourcelease.StatusFailedPrecondition, resourcelease.CodePeerIneligible, resourcelease.ErrPeerIneligible.Message},
		{"duplicate", resourcelease.ErrDuplicateSequence, resourcelease.ErrDuplicateSequence, resourcelease.StatusAlreadyExists, resourcelease.CodeDuplicateSequence, resourcelease.ErrDuplicateSequence.Message},
		{"invalid argument by status", resourcelease.Errorf(resourcelease.StatusInvalidArgument, "x.y", "bad"), resourcelease.ErrInvalidArgument,
			resourcelease.StatusInvalidArgument, "x.y", "bad"},
		{"foreign", errors.New("secret"), &resourcelease.Error{Code: resourcelease.CodeInternal}, resourcelease.StatusInternal, resourcelease.CodeInternal, "internal error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newClientServer(t, &leasetest.FakeDispatcher{HeartbeatFn: func(context.Context, *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
				return nil, tt.err
			}}, transport.HandlerConfig{}, transport.ClientConfig{})
			_, err := c.Heartbeat(context.Background(), &resourcelease.HeartbeatRequest{OwnershipToken: token})
			require.ErrorIs(t, err, tt.sentinel)
			var e *resourcelease.Error
			require.ErrorAs(t, err, &e)
			require.Equal(t, tt.wantStatus, e.Status)
			require.Equal(t, tt.wantCode, e.Code)
			require.Equal(t, tt.wantMsg, e.Message)
		})
	}
	t.Run("metadata", func(t *testing.T) {
		t.Parallel()
		md := map[string]string{"retryAfterMs": "250"}
		c := newClientServer(t, &leasetest.FakeDispatcher{EnqueueFn: func(context.Context, *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
			return nil, &resourcelease.Error{Status: resourcelease.StatusResourceExhausted, Code: resourcelease.CodeRateLimited, Message: "slow", Metadata: md}
		}}, transport.HandlerConfig{}, transport.ClientConfig{})
		_, err := c.Enqueue(context.Background(), &resourcelease.EnqueueRequest{Payload: &item})
		require.ErrorIs(t, err, resourcelease.ErrRateLimited)
		require.Equal(t, md, resourcelease.AsError(err).Metadata)
	})
}

// TestClientErrorFallbacks checks responses that are not the protocol's own
// (a proxy, an older server): headers, then the body, then the HTTP status,
// fill the gaps. (yarpc-go's layouts: TestYARPCServerErrors.)
func TestClientErrorFallbacks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		headers    hdr
		body       string
		wantStatus resourcelease.Status
		wantCode   string
		wantMsg    string
	}{
		{"bare 503", 503, nil, "", resourcelease.StatusUnavailable, "", "HTTP 503 Service Unavailable"},
		{"bare 503, a plain-text message", 503, hdr{"Content-Type": "text/plain"}, "upstream down\n", resourcelease.StatusUnavailable, "", "upstream down"},
		{"bare 404, an HTML page", 404, nil, "<html>nope</html>", resourcelease.StatusNotFound, "", "HTTP 404 Not Found"},
		{"bare 499", 499, nil, "", resourcelease.StatusCancelled, "", "HTTP 499"},
		{"bare 502 is unknown", 502, hdr{"Content-Type": "text/html"}, "bad gateway", resourcelease.StatusUnknown, "", "HTTP 502 Bad Gateway"},
		{"bare 409 is aborted", 409, nil, "", resourcelease.StatusAborted, "", "HTTP 409 Conflict"},
		{"an older leasemesh server's headers: the code in Rpc-Error-Code", 404,
			hdr{transport.HeaderStatus: "not-found", transport.HeaderErrorCode: resourcelease.CodeUnknownToken, transport.HeaderErrorMessage: "gone"},
			"", resourcelease.StatusNotFound, resourcelease.CodeUnknownToken, "gone"},
		{"yarpc's headers", 404,
			hdr{transport.HeaderErrorCode: "not-found", transport.HeaderErrorName: resourcelease.CodeUnknownToken, transport.HeaderErrorMessage: "gone"},
			"", resourcelease.StatusNotFound, resourcelease.CodeUnknownToken, "gone"},
		{"Rpc-Error-Code is case-insensitive, as yarpc's", 400, hdr{transport.HeaderErrorCode: "Failed-Precondition"},
			"", resourcelease.StatusFailedPrecondition, "", "HTTP 400 Bad Request"},
		{"Rpc-Error-Code wins over Rpc-Status and the HTTP status", 500, hdr{transport.HeaderErrorCode: "unavailable", transport.HeaderStatus: "internal"},
			"", resourcelease.StatusUnavailable, "", "HTTP 500 Internal Server Error"},
		{"a body naming another status is not an error body", 404,
			hdr{transport.HeaderErrorCode: "not-found", transport.HeaderErrorName: "n", transport.HeaderErrorMessage: "from the header"},
			`{"status":"internal","code":"c","message":"from the body"}`, resourcelease.StatusNotFound, "n", "from the header"},
		{"header status wins over HTTP status", 500, hdr{transport.HeaderStatus: "unavailable"}, "", resourcelease.StatusUnavailable, "", "HTTP 500 Internal Server Error"},
		{"bad status everywhere", 429, hdr{transport.HeaderStatus: "bogus"}, `{"status":"bogus","code":"c","message":"m"}`, resourcelease.StatusResourceExhausted, "c", "m"},
		{"body wins over headers", 404, hdr{transport.HeaderErrorMessage: "cut short"}, `{"status":"not-found","code":"c","message":"the whole message","metadata":{}}`,
			resourcelease.StatusNotFound, "c", "the whole message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newRawServer(t, transport.ClientConfig{}, func(w http.ResponseWriter, _ *http.Request) {
				for k, v := range tt.headers {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			})
			_, err := c.Stats(context.Background(), nil)
			e := resourcelease.AsError(err)
			require.Equal(t, tt.wantStatus, e.Status)
			require.Equal(t, tt.wantCode, e.Code)
			require.Equal(t, tt.wantMsg, e.Message)
			require.Nil(t, e.Metadata)
		})
	}
}

// TestClientUnavailable checks the error of a server that cannot be reached.
func TestClientUnavailable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, err := transport.NewClient(url, transport.ClientConfig{})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Stats(context.Background(), nil)
	var e *resourcelease.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, resourcelease.StatusUnavailable, e.Status)
	require.Equal(t, transport.CodeTransportUnavailable, e.Code)
	var opErr *net.OpError
	require.ErrorAs(t, err, &opErr, "the cause is kept")
	require.False(t, errors.Is(err, resourcelease.ErrClosed))
}

// TestClientContext checks that the context's end is reported as such, even
// before anything is sent.
func TestClientContext(t *testing.T) {
	t.Parallel()
	var requests atomic.Int64
	c := newRawServer(t, transport.ClientConfig{}, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		_, _ = io.ReadAll(r.Body) // so that net/http notices the client leaving
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := c.Stats(ctx, nil)
	require.Equal(t, resourcelease.StatusCancelled, resourcelease.StatusOf(err))
	require.ErrorIs(t, err, context.Canceled)

	ctx, cancel = context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	_, err = c.Stats(ctx, nil)
	require.Equal(t, resourcelease.StatusDeadlineExceeded, resourcelease.StatusOf(err))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Zero(t, requests.Load(), "nothing was sent")

	// Long enough for the request to reach the server on a loaded machine
	// (the handler holds it until the client leaves, so this is the test's
	// cost).
	ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err = c.Stats(ctx, nil)
	require.Equal(t, resourcelease.StatusDeadlineExceeded, resourcelease.StatusOf(err))
	require.EqualValues(t, 1, requests.Load(), "the deadline passed while the server held the request")
}

// TestClientHeaders checks what the client sends, including the TTL derived
// from the context or from its timeouts.
func TestClientHeaders(t *testing.T) {
	t.Parallel()
	type sent struct {
		method string
		header http.Header
		body   string
	}
	tests := []struct {
		name    string
		opts    transport.ClientConfig
		timeout time.Duration // of the call's context; 0: none
		call    func(ctx context.Context, c *transport.Client) error
		check   func(t *testing.T, s sent)
	}{
		{
			name: "identity headers",
			opts: transport.ClientConfig{Service: "mesh", Namespace: "resourcelease.mesh", Caller: "seeder", PeerID: "peer-1", BearerToken: "tok"},
			call: func(ctx context.Context, c *transport.Client) error { _, err := c.Stats(ctx, nil); return err },
			check: func(t *testing.T, s sent) {
				require.Equal(t, http.MethodPost, s.method)
				require.Equal(t, "resourcelease.mesh::stats", s.header.Get(transport.HeaderProcedure))
				require.Equal(t, "mesh", s.header.Get(transport.HeaderService))
				require.Equal(t, "seeder", s.header.Get(transport.HeaderCaller))
				require.Equal(t, "peer-1", s.header.Get("x-peer-id"))
				require.Equal(t, "Bearer tok", s.header.Get("Authorization"))
				require.Equal(t, "json", s.header.Get(transport.HeaderEncoding))
				require.Equal(t, "true", s.header.Get(transport.HeaderAcceptsBothResponseError))
				require.Equal(t, "application/json", s.header.Get("Content-Type"))
				require.Equal(t, `{}`, s.body)
			},
		},
		{
			name: "defaults",
			call: func(ctx context.Context, c *transport.Client) error { _, err := c.Stats(ctx, nil); return err },
			check: func(t *testing.T, s sent) {
				require.Equal(t, "resourcelease::stats", s.header.Get(transport.HeaderProcedure))
				require.Equal(t, "transport.test", s.header.Get(transport.HeaderCaller), "the program's name")
				require.Equal(t, "json", s.header.Get(transport.HeaderEncoding))
				require.Equal(t, "true", s.header.Get(transport.HeaderAcceptsBothResponseError))
				for _, h := range []string{transport.HeaderService, "x-peer-id", "Authorization", transport.HeaderTTLMs} {
					require.Empty(t, s.header.Values(h), h)
				}
			},
		},
		{
			name: "the caller defaults to the peer id",
			opts: transport.ClientConfig{PeerID: "worker-3"},
			call: func(ctx context.Context, c *transport.Client) error { _, err := c.Stats(ctx, nil); return err },
			check: func(t *testing.T, s sent) {
				require.Equal(t, "worker-3", s.header.Get(transport.HeaderCaller))
				require.Equal(t, "worker-3", s.header.Get("x-peer-id"))
			},
		},
		{
			name:    "ttl from the context",
			timeout: 2 * time.Second,
			call:    func(ctx context.Context, c *transport.Client) error { _, err := c.Stats(ctx, nil); return err },
			check:   func(t *testing.T, s sent) { requireTTL(t, s.header, time.Second, 2*time.Second) },
		},
		{
			name:  "ttl from the default timeout",
			call:  func(ctx context.Context, c *transport.Client) error { _, err := c.Stats(ctx, nil); return err },
			check: func(t *testing.T, s sent) { requireTTL(t, s.header, 29*time.Second, transport.DefaultClientTimeout) },
		},
		{
			name: "no ttl without a timeout",
			opts: transport.ClientConfig{Timeout: -1},
			call: func(ctx context.Context, c *transport.Client) error { _, err := c.Stats(ctx, nil); return err },
			check: func(t *testing.T, s sent) {
				require.Empty(t, s.header.Get(transport.HeaderContextTTLMs))
				require.Empty(t, s.header.Get(transport.HeaderTTLMs))
			},
		},
		{
			name: "long-poll outlives its wait",
			opts: transport.ClientConfig{Timeout: time.Second, LongPollMargin: 3 * time.Second},
			call: func(ctx context.Context, c *transport.Client) error {
				_, err := c.Lease(ctx, &resourcelease.LeaseRequest{Wait: 10000 * time.Millisecond})
				return err
			},
			check: func(t *testing.T, s sent) { requireTTL(t, s.header, 12*time.Second, 13*time.Second) },
		},
		{
			name: "short long-poll keeps the timeout",
			opts: transport.ClientConfig{Timeout: time.Minute},
			call: func(ctx context.Context, c *transport.Client) error {
				_, err := c.Lease(ctx, &resourcelease.LeaseRequest{Wait: 10 * time.Millisecond})
				return err
			},
			check: func(t *testing.T, s sent) { requireTTL(t, s.header, 59*time.Second, time.Minute) },
		},
		{
			name:    "context deadline beats the long-poll margin",
			timeout: 2 * time.Second,
			call: func(ctx context.Context, c *transport.Client) error {
				_, err := c.Lease(ctx, &resourcelease.LeaseRequest{Wait: 10000 * time.Millisecond})
				return err
			},
			check: func(t *testing.T, s sent) { requireTTL(t, s.header, time.Second, 2*time.Second) },
		},
		{
			name: "raw call",
			call: func(ctx context.Context, c *transport.Client) error {
				_, err := c.Call(ctx, "other.ns::enqueue", []byte(`{"payload":{}}`))
				return err
			},
			check: func(t *testing.T, s sent) {
				require.Equal(t, "other.ns::enqueue", s.header.Get(transport.HeaderProcedure))
				require.Equal(t, `{"payload":{}}`, s.body)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan sent, 1)
			c := newRawServer(t, tt.opts, func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				got <- sent{r.Method, r.Header.Clone(), string(body)}
				_, _ = io.WriteString(w, `{}`)
			})
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			require.NoError(t, tt.call(ctx, c))
			tt.check(t, <-got)
		})
	}
}

func requireTTL(t *testing.T, h http.Header, lo, hi time.Duration) {
	t.Helper()
	ms, err := strconv.ParseInt(h.Get(transport.HeaderContextTTLMs), 10, 64)
	require.NoError(t, err, "Context-TTL-MS %q", h.Get(transport.HeaderContextTTLMs))
	got := time.Duration(ms) * time.Millisecond
	require.True(t, got >= lo && got <= hi, "Context-TTL-MS %v not in [%v, %v]", got, lo, hi)
	require.Empty(t, h.Values(transport.HeaderTTLMs), "only yarpc's TTL header is sent")
}

// TestClientResponses checks bounded and malformed responses.
func TestClientResponses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     transport.ClientConfig
		body     string
		call     func(c *transport.Client) error
		wantCode string
	}{
		{"too large", transport.ClientConfig{MaxResponseBytes: 1024}, `{"pendingCount":1,"x":"` + strings.Repeat("a", 2000) + `"}`,
			func(c *transport.Client) error { _, err := c.Stats(context.Background(), nil); return err }, transport.CodeResponseTooLarge},
		{"at the limit", transport.ClientConfig{MaxResponseBytes: 18}, `{"pendingCount":1}`,
			func(c *transport.Client) error { _, err := c.Stats(context.Background(), nil); return err }, ""},
		{"malformed stats", transport.ClientConfig{}, `<html>`,
			func(c *transport.Client) error { _, err := c.Stats(context.Background(), nil); return err }, transport.CodeMalformedResponse},
		{"malformed lease", transport.ClientConfig{}, `{"attempt":"x"}`,
			func(c *transport.Client) error { _, err := c.Lease(context.Background(), nil); return err }, transport.CodeMalformedResponse},
		{"raw call returns the body as is", transport.ClientConfig{}, `<html>`,
			func(c *transport.Client) error {
				out, err := c.Call(context.Background(), "x::y", nil)
				if string(out) != "<html>" {
					return errors.New("raw body changed: " + string(out))
				}
				return err
			}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newRawServer(t, tt.opts, func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, tt.body) })
			err := tt.call(c)
			if tt.wantCode == "" {
				require.NoError(t, err)
				return
			}
			require.Equal(t, tt.wantCode, resourcelease.CodeOf(err), "error %v", err)
		})
	}
}

// TestClientReusesConnections checks that responses are drained and closed,
// so that sequential calls, errors included, share one connection.
func TestClientReusesConnections(t *testing.T) {
	t.Parallel()
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(newHandler(t, &leasetest.FakeDispatcher{
		DrainFn: func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
			return nil, resourcelease.ErrClosed
		},
	}, transport.HandlerConfig{}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	c, err := transport.NewClient(srv.URL, transport.ClientConfig{})
	require.NoError(t, err)
	defer c.Close()
	for range 20 {
		_, err := c.Stats(context.Background(), nil)
		require.NoError(t, err)
		_, err = c.Drain(context.Background(), nil)
		require.ErrorIs(t, err, resourcelease.ErrClosed)
		_, err = c.Call(context.Background(), "resourcelease::nope", nil)
		require.Equal(t, resourcelease.StatusNotFound, resourcelease.StatusOf(err))
	}
	require.EqualValues(t, 1, conns.Load(), "connections opened")
}

// TestNewClientOptions checks that bad options are errors.
func TestNewClientOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		url     string
		opts    transport.ClientConfig
		wantErr string
	}{
		{name: "defaults", url: "http://127.0.0.1:7420/yarpc/v1"},
		{name: "https", url: "https://mesh.example.com/yarpc/v1", opts: transport.ClientConfig{Service: "mesh", Namespace: "resourcelease.mesh",
			Caller: "w", PeerID: "p", BearerToken: "t", HTTPClient: &http.Client{}, Timeout: time.Second, LongPollMargin: time.Second, MaxResponseBytes: 1}},
		{name: "no timeout", url: "http://h", opts: transport.ClientConfig{Timeout: -1}},
		{name: "empty url", url: "", wantErr: "invalid URL"},
		{name: "no scheme", url: "127.0.0.1:7420", wantErr: "invalid URL"},
		{name: "other scheme", url: "ftp://host/x", wantErr: "invalid URL"},
		{name: "no host", url: "http:///yarpc", wantErr: "invalid URL"},
		{name: "unparsable", url: "http://[::1", wantErr: "invalid URL"},
		{name: "namespace with ::", url: "http://h", opts: transport.ClientConfig{Namespace: "a::b"}, wantErr: "Namespace"},
		{name: "caller with newline", url: "http://h", opts: transport.ClientConfig{Caller: "a\nb"}, wantErr: "Caller"},
		{name: "token with space around", url: "http://h", opts: transport.ClientConfig{BearerToken: " t"}, wantErr: "BearerToken"},
		{name: "negative margin", url: "http://h", opts: transport.ClientConfig{LongPollMargin: -1}, wantErr: "LongPollMargin"},
		{name: "negative response limit", url: "http://h", opts: transport.ClientConfig{MaxResponseBytes: -1}, wantErr: "MaxResponseBytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := transport.NewClient(tt.url, tt.opts)
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.NoError(t, c.Close())
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			require.Nil(t, c)
		})
	}
}
