package transport_test

// Interoperation with yarpc-go v1.89's HTTP transport, both ways. The yarpc
// side is written from its source (transport/http constants.go, handler.go,
// outbound.go, codes.go, yarpcerrors): the requests its outbound sends, the
// rules its handler applies, the error responses its handler writes, and the
// way its outbound reads them. testdata/golden/yarpc holds the exchanges:
// yarpc_server_*.http and old_leasemesh_*.http are responses as those
// servers write them (inputs), handler_*.http and client_request.http what
// leasemesh sends (outputs, rewritten by -update).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

// yarpcRequest is a request as a yarpc-go client's HTTP outbound sends a
// JSON unary call (outbound.go withCoreHeaders): caller, service, procedure,
// Context-TTL-MS (the context's time left, truncated to milliseconds),
// Rpc-Encoding json and Rpc-Accepts-Both-Response-Error (on by default);
// application headers become Rpc-Header-<name>. No Content-Type.
func yarpcRequest(procedure, body string, extra hdr) *http.Request {
	req := httptest.NewRequest(http.MethodPost, "/yarpc/v1", strings.NewReader(body))
	req.Header = http.Header{}
	for k, v := range map[string]string{
		"Rpc-Caller":                      "orders-api",
		"Rpc-Service":                     "mesh",
		"Rpc-Procedure":                   procedure,
		"Context-TTL-MS":                  "4999",
		"Rpc-Encoding":                    "json",
		"Rpc-Accepts-Both-Response-Error": "true",
	} {
		req.Header.Set(k, v)
	}
	for k, v := range extra {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	return req
}

// yarpcView is what a yarpc-go client makes of a response (outbound.go call
// and getYARPCErrorFromResponse): a service check, then for an error the code
// from Rpc-Error-Code (else the HTTP status's best code), the name from
// Rpc-Error-Name, and the message from Rpc-Error-Message when both sides
// accept both response and error, else the whole body.
type yarpcView struct {
	ok                  bool
	code, name, message string
}

func yarpcClientView(t *testing.T, sentService string, res *http.Response, body []byte) yarpcView {
	t.Helper()
	if svc := res.Header.Get("Rpc-Service"); svc != "" && svc != sentService {
		t.Fatalf("a yarpc client refuses the response: it names service %q, not %q", svc, sentService)
	}
	both := res.Header.Get("Rpc-Both-Response-Error") == "true"
	if !both && res.StatusCode >= 200 && res.StatusCode < 300 {
		return yarpcView{ok: true}
	}
	if both && res.StatusCode < 300 {
		return yarpcView{ok: true}
	}
	v := yarpcView{code: yarpcBestCode(res.StatusCode), name: res.Header.Get("Rpc-Error-Name")}
	if c := strings.ToLower(res.Header.Get("Rpc-Error-Code")); yarpcCodes[c] {
		v.code = c
	}
	if both {
		v.message = res.Header.Get("Rpc-Error-Message")
	} else {
		v.message = strings.TrimSuffix(string(body), "\n")
	}
	return v
}

// yarpcCodes are the names of yarpcerrors.Code (codes.go).
var yarpcCodes = map[string]bool{
	"cancelled": true, "unknown": true, "invalid-argument": true, "deadline-exceeded": true, "not-found": true,
	"already-exists": true, "permission-denied": true, "resource-exhausted": true, "failed-precondition": true,
	"aborted": true, "out-of-range": true, "unimplemented": true, "internal": true, "unavailable": true,
	"data-loss": true, "unauthenticated": true,
}

// yarpcBestCode is transport/http's statusCodeToBestCode.
func yarpcBestCode(status int) string {
	switch status {
	case 400, 422:
		return "invalid-argument"
	case 401:
		return "unauthenticated"
	case 403:
		return "permission-denied"
	case 404:
		return "not-found"
	case 409:
		return "aborted"
	case 429:
		return "resource-exhausted"
	case 499:
		return "cancelled"
	case 500:
		return "unknown"
	case 501:
		return "unimplemented"
	case 503:
		return "unavailable"
	case 504:
		return "deadline-exceeded"
	}
	if status >= 300 && status < 500 {
		return "invalid-argument"
	}
	return "unknown"
}

// TestYARPCClientCalls sends what a yarpc-go client sends to the handler and
// pins the exact response (handler_*.http); a yarpc client must read each
// error's code (our status), name (our code) and message.
func TestYARPCClientCalls(t *testing.T) {
	t.Parallel()
	type seen struct {
		ci       resourcelease.CallInfo
		peer     string
		deadline time.Duration
	}
	got := make(chan seen, 1)
	record := func(ctx context.Context, peerID string) {
		ci := resourcelease.CallInfoFrom(ctx)
		dl, _ := ctx.Deadline()
		got <- seen{ci, resourcelease.ResolvePeerID(peerID, ci), time.Until(dl)}
	}
	breakerOpen := &resourcelease.Error{Status: resourcelease.StatusFailedPrecondition, Code: resourcelease.CodePeerIneligible,
		Message: `peer "w1" is not eligible for leases (open)`, Metadata: map[string]string{"retryAfterSeconds": "30"}}
	d := &leasetest.FakeDispatcher{
		EnqueueFn: func(ctx context.Context, _ *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
			record(ctx, "")
			return &resourcelease.EnqueueResponse{Stats: resourcelease.QueueCounts{PendingCount: 1}, SequenceID: 7}, nil
		},
		LeaseFn: func(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
			record(ctx, r.PeerID)
			if resourcelease.CallInfoFrom(ctx).PeerID == "w1" {
				return nil, breakerOpen
			}
			return nil, nil
		},
		HeartbeatFn: func(ctx context.Context, _ *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
			record(ctx, "")
			return nil, resourcelease.ErrUnknownToken
		},
	}
	h := newHandler(t, d, transport.HandlerConfig{Service: "mesh"})
	enqueueBody := `{"payload":` + itemJSON + `}`
	heartbeatBody := `{"ownershipToken":` + tokenJSON + `}`
	tests := []struct {
		name      string
		procedure string
		body      string
		headers   hdr
		golden    string // "" when the response is the same as another case's
		wantErr   *resourcelease.Error
		wantPeer  string
	}{
		{name: "enqueue", procedure: "resourcelease::enqueue", body: enqueueBody, golden: "handler_success", wantPeer: "orders-api"},
		{name: "routing, tracing and application headers are accepted", procedure: "resourcelease::enqueue", body: enqueueBody,
			headers: hdr{"Rpc-Shard-Key": "tenant-1", "Rpc-Routing-Key": "canary", "Rpc-Routing-Delegate": "mesh-proxy",
				"Rpc-Caller-Procedure": "orders::place", "Rpc-Header-Tenant": "t1", "Uber-Trace-Id": "1:2:3:1", "Uberctx-Team": "orders"},
			wantPeer: "orders-api"},
		{name: "the application header peer-id names the peer", procedure: "resourcelease::lease", body: `{}`,
			headers: hdr{"Rpc-Header-Peer-Id": "worker-7", "X-Peer-Id": "worker-9"}, golden: "handler_lease_none", wantPeer: "worker-7"},
		{name: "unknown token, to a client accepting both response and error", procedure: "resourcelease::heartbeat", body: heartbeatBody,
			golden: "handler_error", wantErr: resourcelease.ErrUnknownToken, wantPeer: "orders-api"},
		{name: "unknown token, to an older yarpc client", procedure: "resourcelease::heartbeat", body: heartbeatBody,
			headers: hdr{"Rpc-Accepts-Both-Response-Error": ""}, golden: "handler_error_older_client", wantErr: resourcelease.ErrUnknownToken, wantPeer: "orders-api"},
		{name: "breaker open: 400 failed-precondition with Retry-After", procedure: "resourcelease::lease", body: `{}`,
			headers: hdr{"Rpc-Header-Peer-Id": "w1"}, golden: "handler_breaker_open", wantErr: breakerOpen, wantPeer: "w1"},
		{name: "another service", procedure: "resourcelease::stats", headers: hdr{"Rpc-Service": "billing"}, golden: "handler_unknown_service",
			wantErr: resourcelease.Errorf(resourcelease.StatusNotFound, transport.CodeUnknownService, `unknown service "billing" (this is "mesh")`)},
		{name: "a TTL of 0 has passed already, as in yarpc", procedure: "resourcelease::stats", headers: hdr{"Context-TTL-MS": "0"},
			wantErr: resourcelease.Errorf(resourcelease.StatusDeadlineExceeded, resourcelease.CodeDeadlineExceeded, "deadline exceeded")},
		{name: "a negative TTL is invalid, as in yarpc", procedure: "resourcelease::stats", headers: hdr{"Context-TTL-MS": "-1"},
			wantErr: resourcelease.Errorf(resourcelease.StatusInvalidArgument, transport.CodeInvalidDeadline, "Context-Ttl-Ms must not be negative, got -1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := yarpcRequest(tt.procedure, tt.body, tt.headers)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			res := rec.Result()
			body := rec.Body.Bytes()
			if tt.golden != "" {
				checkGoldenHTTP(t, tt.golden, dumpResponse(res, body))
			}
			view := yarpcClientView(t, req.Header.Get("Rpc-Service"), res, body)
			if tt.wantErr == nil {
				require.True(t, view.ok, "%d %s", res.StatusCode, body)
				require.Equal(t, "success", res.Header.Get("Rpc-Status"))
				require.Equal(t, "application/json", res.Header.Get("Content-Type"))
			} else {
				want := yarpcView{code: string(tt.wantErr.Status), name: tt.wantErr.Code, message: tt.wantErr.Message}
				if req.Header.Get("Rpc-Accepts-Both-Response-Error") == "" {
					// A client that did not ask for the message header
					// takes the body for the message: ours is JSON (kept
					// for curl and older leasemesh clients).
					var we wireError
					require.NoError(t, json.Unmarshal(body, &we))
					require.Equal(t, tt.wantErr.Message, we.Message)
					want.message = string(body)
				}
				require.Equal(t, want, view)
				require.Equal(t, tt.wantErr.Status.HTTPStatus(), res.StatusCode)
			}
			if tt.wantPeer != "" {
				s := <-got
				require.Equal(t, tt.wantPeer, s.peer)
				require.Equal(t, "orders-api", s.ci.Caller)
				require.InDelta(t, 5*time.Second, s.deadline, float64(time.Second), "Context-TTL-MS bounds the dispatcher's context")
			}
		})
	}
}

// yarpcServer serves like a yarpc-go v1.89 HTTP inbound with one JSON
// procedure (handler.go ServeHTTP and callHandler, api/transport
// ValidateRequest, ttl.go parseTTL, encoding/json's ExpectEncodings): it
// refuses a request that lacks what yarpc requires, in yarpc's own error
// layout, and answers the rest with answer.
func yarpcServer(t *testing.T, answer func(w http.ResponseWriter, r *http.Request)) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Rpc-Status", "success")
		service := r.Header.Get("Rpc-Service")
		w.Header().Set("Rpc-Service", service)
		both := r.Header.Get("Rpc-Accepts-Both-Response-Error") == "true"
		fail := func(code, message string) {
			w.Header().Set("Rpc-Error-Code", code)
			if both {
				w.Header().Set("Rpc-Both-Response-Error", "true")
				w.Header().Set("Rpc-Error-Message", message)
			} else {
				w.Header().Set("Content-Type", "text/plain; charset=utf8")
			}
			w.WriteHeader(map[string]int{"invalid-argument": 400, "not-found": 404}[code])
			if !both {
				_, _ = fmt.Fprintln(w, message)
			}
		}
		if r.Method != http.MethodPost {
			fail("not-found", "request method was "+r.Method+" but only POST is allowed")
			return
		}
		var missing []string
		for _, m := range []struct{ header, what string }{
			{"Rpc-Service", "service name"}, {"Rpc-Procedure", "procedure"}, {"Rpc-Caller", "caller name"}, {"Rpc-Encoding", "encoding"},
		} {
			if r.Header.Get(m.header) == "" {
				missing = append(missing, m.what)
			}
		}
		if len(missing) > 0 {
			fail("invalid-argument", "missing "+strings.Join(missing, ", "))
			return
		}
		ttl := r.Header.Get("Context-TTL-MS")
		if ttl == "" {
			fail("invalid-argument", "missing TTL")
			return
		}
		if ms, err := strconv.Atoi(ttl); err != nil || ms < 0 {
			fail("invalid-argument", fmt.Sprintf("invalid TTL %q for service %q and procedure %q", ttl, service, r.Header.Get("Rpc-Procedure")))
			return
		}
		if enc := r.Header.Get("Rpc-Encoding"); enc != "json" {
			fail("invalid-argument", fmt.Sprintf(`failed to decode "%s" request body for procedure %q of service %q from caller %q: expected encoding "json" but got %q`,
				enc, r.Header.Get("Rpc-Procedure"), service, r.Header.Get("Rpc-Caller"), enc))
			return
		}
		body, _ := io.ReadAll(r.Body)
		if len(strings.TrimSpace(string(body))) == 0 { // json.Decoder.Decode of nothing
			fail("invalid-argument", fmt.Sprintf(`failed to decode "json" request body for procedure %q of service %q from caller %q: EOF`,
				r.Header.Get("Rpc-Procedure"), service, r.Header.Get("Rpc-Caller")))
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		answer(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestClientCallsYARPCServer: every procedure of the Client carries what a
// yarpc-go server requires, and its request is pinned (client_request.http).
func TestClientCallsYARPCServer(t *testing.T) {
	t.Parallel()
	reqs := make(chan *http.Request, len(transport.Verbs())+1)
	srv := yarpcServer(t, func(w http.ResponseWriter, r *http.Request) {
		reqs <- r
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}\n")
	})
	c, err := transport.NewClient(srv.URL+"/yarpc/v1", transport.ClientConfig{Service: "mesh", PeerID: "worker-1"})
	require.NoError(t, err)
	defer c.Close()
	// Raw calls of every procedure: the typed methods share Call's path. An
	// empty body goes as {}: yarpc's JSON decoder refuses nothing.
	ctx := context.Background()
	for _, verb := range transport.Verbs() {
		_, err := c.Call(ctx, transport.Procedure("", verb), nil)
		require.NoError(t, err, verb)
		r := <-reqs
		require.Equal(t, transport.Procedure("", verb), r.Header.Get("Rpc-Procedure"))
	}

	// The exact request, with its TTL's value (time left) checked and masked.
	stats, err := c.Stats(ctx, &resourcelease.StatsRequest{})
	require.NoError(t, err)
	require.NotNil(t, stats)
	r := <-reqs
	ms, err := strconv.Atoi(r.Header.Get("Context-TTL-MS"))
	require.NoError(t, err)
	require.InDelta(t, transport.DefaultClientTimeout.Milliseconds(), ms, 2000)
	checkGoldenHTTP(t, "client_request", dumpRequest(r, "{}", map[string]string{"Context-Ttl-Ms": "<ms>"}))
}

// TestClientCallerDefault: a Client without Caller or PeerID still names a
// caller, which a yarpc server requires.
func TestClientCallerDefault(t *testing.T) {
	t.Parallel()
	srv := yarpcServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, `{"pendingCount":`+strconv.Itoa(len(r.Header.Get("Rpc-Caller")))+`}`)
	})
	c, err := transport.NewClient(srv.URL, transport.ClientConfig{Service: "mesh"})
	require.NoError(t, err)
	defer c.Close()
	stats, err := c.Stats(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, len(filepath.Base(os.Args[0])), stats.PendingCount)
}

// TestClientRefusedByYARPCServer: what a yarpc server says of a request it
// refuses reaches the caller whole, in either of its layouts.
func TestClientRefusedByYARPCServer(t *testing.T) {
	t.Parallel()
	srv := yarpcServer(t, func(http.ResponseWriter, *http.Request) { t.Error("the request should have been refused") })
	for _, tt := range []struct {
		name    string
		opts    transport.ClientConfig
		headers map[string]string // raw headers overriding the Client's, as --header does in leasectl
		want    string
	}{
		{"no service: the one thing the Client cannot make up", transport.ClientConfig{}, nil, "missing service name"},
		{"another encoding, message in the header", transport.ClientConfig{Service: "mesh"}, map[string]string{"Rpc-Encoding": "proto"},
			`failed to decode "proto" request body for procedure "resourcelease::stats" of service "mesh" from caller "transport.test": expected encoding "json" but got "proto"`},
		{"no TTL, message in a text body", transport.ClientConfig{Service: "mesh", Timeout: -1},
			map[string]string{"Rpc-Accepts-Both-Response-Error": "false"}, "missing TTL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := tt.opts
			opts.HTTPClient = &http.Client{Transport: setHeaders(tt.headers)}
			c, err := transport.NewClient(srv.URL, opts)
			require.NoError(t, err)
			defer c.Close()
			_, err = c.Stats(context.Background(), nil)
			e := resourcelease.AsError(err)
			require.NotNil(t, e)
			require.Equal(t, resourcelease.StatusInvalidArgument, e.Status)
			require.Equal(t, "", e.Code)
			require.Equal(t, tt.want, e.Message)
		})
	}
}

// setHeaders is a RoundTripper that overrides request headers.
type setHeaders map[string]string

func (s setHeaders) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	for k, v := range s {
		r.Header.Set(k, v)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestYARPCServerErrors: the Client decodes the error responses of yarpc-go
// servers (both layouts) and of older leasemesh servers to the right status,
// code and message, so errors.Is holds across them.
func TestYARPCServerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		fixture  string
		want     *resourcelease.Error
		sentinel error
	}{
		{"yarpc_server_not_found", &resourcelease.Error{Status: resourcelease.StatusNotFound, Code: resourcelease.CodeUnknownToken,
			Message: "unknown or expired ownership token"}, resourcelease.ErrUnknownToken},
		{"yarpc_server_not_found_text", &resourcelease.Error{Status: resourcelease.StatusNotFound, Code: resourcelease.CodeUnknownToken,
			Message: "unknown or expired ownership token"}, resourcelease.ErrUnknownToken},
		{"yarpc_server_failed_precondition_text", &resourcelease.Error{Status: resourcelease.StatusFailedPrecondition, Code: resourcelease.CodePeerIneligible,
			Message: `peer "w1" is not eligible for leases (open)`}, resourcelease.ErrPeerIneligible},
		{"yarpc_server_missing_ttl", &resourcelease.Error{Status: resourcelease.StatusInvalidArgument, Message: "missing TTL"},
			resourcelease.ErrInvalidArgument},
		{"yarpc_server_unknown_text", &resourcelease.Error{Status: resourcelease.StatusUnknown,
			Message: `error for service "mesh" and procedure "resourcelease::stats": boom`}, nil},
		{"yarpc_server_unrecognized_procedure", &resourcelease.Error{Status: resourcelease.StatusUnimplemented,
			Message: `unrecognized procedure "resourcelease::stats" for service "mesh"`}, nil},
		{"old_leasemesh_unknown_token", &resourcelease.Error{Status: resourcelease.StatusNotFound, Code: resourcelease.CodeUnknownToken,
			Message: "unknown or expired ownership token", Metadata: map[string]string{"sequenceId": "7"}}, resourcelease.ErrUnknownToken},
		{"old_leasemesh_peer_ineligible", &resourcelease.Error{Status: resourcelease.StatusFailedPrecondition, Code: resourcelease.CodePeerIneligible,
			Message: `peer "w1" is not eligible for leases (unhealthy)`}, resourcelease.ErrPeerIneligible},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			t.Parallel()
			status, header, body := readFixture(t, tt.fixture)
			c := newRawServer(t, transport.ClientConfig{Service: "mesh"}, func(w http.ResponseWriter, _ *http.Request) {
				for k, vs := range header {
					if k != "Date" && k != "Content-Length" {
						w.Header()[k] = vs
					}
				}
				w.WriteHeader(status)
				_, _ = w.Write(body)
			})
			_, err := c.Stats(context.Background(), nil)
			var e *resourcelease.Error
			require.True(t, errors.As(err, &e), "%v", err)
			require.Equal(t, tt.want, e)
			if tt.sentinel != nil {
				require.ErrorIs(t, err, tt.sentinel)
			}
			require.Equal(t, tt.want.Status, transport.ResponseStatus(&http.Response{StatusCode: status, Header: header}))
		})
	}
}

// TestClientChecksTheService: a response naming another service than the
// Client's is refused, as a yarpc client refuses it.
func TestClientChecksTheService(t *testing.T) {
	t.Parallel()
	c := newRawServer(t, transport.ClientConfig{Service: "mesh"}, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Rpc-Service", "billing")
		_, _ = io.WriteString(w, `{}`)
	})
	_, err := c.Stats(context.Background(), nil)
	require.Equal(t, transport.CodeServiceMismatch, resourcelease.CodeOf(err), "%v", err)
	require.Equal(t, resourcelease.StatusInternal, resourcelease.StatusOf(err))
}

// TestClientAgainstHandlerEcho: the Client and the handler agree end to end
// (the echoed service passes the Client's check; the error headers decode).
func TestClientAgainstHandlerEcho(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(newHandler(t, &leasetest.FakeDispatcher{
		HeartbeatFn: func(context.Context, *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
			return nil, resourcelease.ErrUnknownToken
		},
	}, transport.HandlerConfig{Service: "mesh"}))
	defer srv.Close()
	c, err := transport.NewClient(srv.URL, transport.ClientConfig{Service: "mesh"})
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Stats(context.Background(), nil)
	require.NoError(t, err)
	_, err = c.Call(context.Background(), transport.Procedure("", transport.VerbHeartbeat), []byte(`{"ownershipToken":`+tokenJSON+`}`))
	require.ErrorIs(t, err, resourcelease.ErrUnknownToken)
	require.Equal(t, resourcelease.StatusNotFound, resourcelease.StatusOf(err))
}

// --- golden HTTP exchanges ---

func goldenHTTPPath(name string) string {
	return filepath.Join("testdata", "golden", "yarpc", name+".http")
}

// checkGoldenHTTP compares a dumped exchange with its golden file, or
// rewrites the file under -update.
func checkGoldenHTTP(t *testing.T, name, dump string) {
	t.Helper()
	if *update {
		require.NoError(t, os.WriteFile(goldenHTTPPath(name), []byte(dump), 0o644))
		return
	}
	want, err := os.ReadFile(goldenHTTPPath(name))
	require.NoError(t, err, "run with -update to create it")
	require.Equal(t, string(want), dump, "the exchange %s changed; rerun with -update if intended", name)
}

// dumpResponse renders a response as its golden file has it: the status
// line, the headers sorted (but Date), a blank line and the body.
func dumpResponse(res *http.Response, body []byte) string {
	return "HTTP/1.1 " + res.Status + "\n" + dumpHeader(res.Header, nil) + "\n" + string(body)
}

// dumpRequest renders a request as its golden file has it; mask replaces the
// values of headers that vary (a TTL). The headers net/http's transport adds
// itself (User-Agent, Accept-Encoding) are left out.
func dumpRequest(r *http.Request, body string, mask map[string]string) string {
	h := r.Header.Clone()
	h.Del("User-Agent")
	h.Del("Accept-Encoding")
	return r.Method + " " + r.URL.RequestURI() + " HTTP/1.1\n" + dumpHeader(h, mask) + "\n" + body
}

func dumpHeader(h http.Header, mask map[string]string) string {
	var b strings.Builder
	keys := make([]string, 0, len(h))
	for k := range h {
		if k != "Date" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		for _, v := range h[k] {
			if m, ok := mask[k]; ok {
				v = m
			}
			b.WriteString(k + ": " + v + "\n")
		}
	}
	return b.String()
}

// readFixture parses a response file: status line, headers, blank line, the
// body byte for byte. Its Content-Length must be the body's.
func readFixture(t *testing.T, name string) (int, http.Header, []byte) {
	t.Helper()
	raw, err := os.ReadFile(goldenHTTPPath(name))
	require.NoError(t, err)
	head, body, ok := strings.Cut(string(raw), "\n\n")
	require.True(t, ok, "no blank line in %s", name)
	lines := strings.Split(head, "\n")
	var status int
	_, err = fmt.Sscanf(lines[0], "HTTP/1.1 %d", &status)
	require.NoError(t, err, "status line %q", lines[0])
	h := http.Header{}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ": ")
		require.True(t, ok, "header line %q", l)
		h.Add(k, v)
	}
	require.Equal(t, strconv.Itoa(len(body)), h.Get("Content-Length"), "Content-Length of %s", name)
	return status, h, []byte(body)
}
