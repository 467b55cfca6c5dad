package transport

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Defaults of ClientConfig.
const (
	// DefaultClientTimeout bounds a call whose context has no deadline: 30 s.
	DefaultClientTimeout = wire.DefaultClientTimeout
	// DefaultLongPollMargin is how much longer than its waitMs a lease
	// long-poll may take before the client gives up on it: 5 s.
	DefaultLongPollMargin = 5 * time.Second
	// DefaultMaxResponseBytes bounds a response body: 64 MiB (a drain of a
	// deep queue is the largest response).
	DefaultMaxResponseBytes = wire.DefaultMaxResponseBytes
	// DefaultMaxIdleConnsPerHost is how many idle keep-alive connections the
	// default HTTP client keeps per server: enough for a fleet of concurrent
	// workers in one process to reuse connections instead of redialling.
	DefaultMaxIdleConnsPerHost = wire.DefaultMaxIdleConnsPerHost
)

// ClientConfig configures NewClient. The zero value of every field means its
// documented default; a bad value makes NewClient return an error.
type ClientConfig struct {
	// Service is sent as Rpc-Service; a response naming another service is
	// an error (CodeServiceMismatch), as yarpc clients check. Defaults to ""
	// (not sent): a leasemesh handler takes any service then, a yarpc-go
	// server answers "missing service name".
	Service string
	// Namespace is the procedure namespace of the typed methods. Defaults to
	// DefaultNamespace.
	Namespace string
	// Caller is sent as Rpc-Caller, which yarpc servers require (a lease's
	// peer id of last resort). Defaults to PeerID, else the program's name
	// (the base name of os.Args[0]).
	Caller string
	// PeerID is sent as x-peer-id: a lease's peer id when the LeaseRequest
	// names none. Defaults to "" (not sent).
	PeerID string
	// BearerToken, when set, is sent as "Authorization: Bearer <token>".
	BearerToken string
	// HTTPClient makes the requests. Defaults to a client of the Client's own
	// with a tuned Transport (keep-alive, DefaultMaxIdleConnsPerHost idle
	// connections per host, no overall timeout: contexts bound calls).
	// Its Timeout, if any, must leave room for lease long-polls.
	HTTPClient *http.Client
	// TLS, when set, is the TLS configuration of the Client's own HTTP
	// client (TLSConfig.ClientTLS builds one: the CA to verify the server,
	// the client certificate for mutual TLS). It needs an https:// URL, and
	// cannot be combined with HTTPClient (set your Transport's
	// TLSClientConfig instead). Defaults to nil: an https:// URL is verified
	// against the system's roots.
	TLS *tls.Config
	// Timeout bounds a call whose context has no deadline. Defaults to
	// DefaultClientTimeout; negative means no bound but the context's.
	Timeout time.Duration
	// LongPollMargin is added to a lease's waitMs to bound its request (when
	// that is longer than Timeout). Defaults to DefaultLongPollMargin;
	// negative is an error.
	LongPollMargin time.Duration
	// MaxResponseBytes bounds a response body; a larger one is an error with
	// code CodeResponseTooLarge. Defaults to DefaultMaxResponseBytes; negative
	// is an error.
	MaxResponseBytes int64
	// URLs are more dispatchers of the same mesh (several dispatchers on one
	// database), after NewClient's own URL (which may then be ""): the
	// Client spreads its calls over all of them and fails over from one
	// that cannot be connected to or answers unavailable (see Client). Defaults
	// to none: one dispatcher. A URL given twice is an error.
	URLs []string
	// EndpointMinBackoff and EndpointMaxBackoff bound how long a dispatcher
	// that failed is left alone before a call tries it again (doubling per
	// failure in a row, with jitter), when there are several. They default
	// to DefaultEndpointMinBackoff and DefaultEndpointMaxBackoff; negative,
	// or a minimum above the maximum, is an error.
	EndpointMinBackoff, EndpointMaxBackoff time.Duration
	// DialTimeout bounds how long one try waits for its connection to a
	// dispatcher (including the TLS handshake; a pooled connection is
	// immediate). A try that has none by then fails over to the next
	// dispatcher: a host that is gone without resetting connections is
	// left as a refused one is, rather than taking the call's whole
	// deadline. Defaults to DefaultDialTimeout (2 s) with several URLs,
	// and to none with one (the HTTP client's own, 30 s by default);
	// negative means none.
	DialTimeout time.Duration
}

// DefaultDialTimeout is ClientConfig.DialTimeout's default with several
// dispatcher URLs: 2 s, far above a connect on a working network, far
// below DefaultClientTimeout.
const DefaultDialTimeout = 2 * time.Second

// Client is the Go client of the wire protocol. It implements
// resourcelease.BatchDispatcher, so code written against a Dispatcher (a
// Worker, say) runs over the network unchanged, and it sends raw calls with
// Call. Against a server that predates a batch procedure its batch methods
// fall back to per-item calls (see EnqueueBatch and the others).
//
// Every call carries what a yarpc-go server requires: Rpc-Procedure,
// Rpc-Caller, Rpc-Service (when configured), Rpc-Encoding: json,
// Context-TTL-MS (the context's deadline, else the Client's Timeout) and
// Rpc-Accepts-Both-Response-Error: true.
//
// Errors are *resourcelease.Error rebuilt from the response, whether it came
// from a leasemesh server (new or older) or a yarpc-go one (its error headers,
// or its plain-text message): errors.Is(err, resourcelease.ErrUnknownToken)
// holds across the wire. A server that gives no answer (refused, reset,
// the connection timed out) gives status unavailable with code
// CodeTransportUnavailable and the cause in Err; the caller's deadline
// passing first gives deadline-exceeded.
//
// # Several dispatchers
//
// Given several URLs (ClientConfig.URLs), the Client takes them for
// dispatchers of one mesh and sends each call to the next in turn
// (round-robin), skipping one that failed recently. A dispatcher fails a
// try when it cannot be connected to (refused, no route, or no connection
// within DialTimeout: a host gone without a reset) or answers unavailable;
// it is then left alone for a back-off (EndpointMinBackoff, doubling per
// failed probe up to EndpointMaxBackoff), after which one call at a time
// (the probe) tries it again, so it is used again soon after it is back and
// a dead one costs one failed connect per back-off. A dispatcher that was
// connected to but lets the call's deadline pass is not backed off: it
// cannot be told from a slow one (a long query, a long-poll). A call that
// fails that way goes to the next dispatcher, at most once to each (when
// all are backing off, only one is tried, unless the one that failed had
// been healthy), and only when repeating it cannot apply anything twice:
//
//   - enqueue and enqueueBatch are retried with the same requestId: the
//     Client gives a payload without one a random requestId, so the
//     dispatcher's dedupe window absorbs a retry whose first try was
//     applied (its answer then says duplicate only if the caller's own
//     requestId was seen before); an enqueueBatch that falls back to
//     per-item calls on an older dispatcher sends them with those ids.
//     With dedupe turned off on the dispatchers (DedupeWindow -1) such a
//     retry can enqueue twice.
//   - lease and leaseBatch are retried with what is left of their wait,
//     never past it (a per-item fallback too). A retry after a lost answer
//     may orphan the lease the first try took: nobody works it, and it
//     expires after the lease duration and is delivered again (it costs an
//     attempt).
//   - complete, completeBatch, fail and release are retried; a retry
//     answered unknown_token after an earlier try may have been applied is
//     reported as resourcelease.ErrPossiblySettled (which also matches
//     ErrUnknownToken): most likely the first try settled the lease. The
//     Worker does not count those as lost.
//   - heartbeat, stats and deadletters are retried as they are (repeating
//     them changes nothing).
//   - drain, restore, redrive, purge and Call go to another dispatcher only
//     when no earlier try reached one: a drained page whose answer was lost
//     cannot be asked for again, and a redrive or purge sent again would
//     report 0 or act on dead letters that arrived since.
//
// Batch procedures are remembered per dispatcher: in a mesh being upgraded,
// a batch call goes to one that serves it, and falls back to per-item calls
// only when none of those tried does.
//
// An error after which no try reached any dispatcher matches
// ErrNotConnected: nothing was applied.
//
// With one URL the Client never retries, as before.
//
// A Client is safe for concurrent use; make one per server (or mesh) and
// reuse it.
type Client struct {
	endpoints      []*endpoint
	next           atomic.Uint64 // round-robin position
	epMin, epMax   time.Duration
	dialTimeout    time.Duration // per try; 0: none
	namespace      string
	service        string
	caller         string
	peerID         string
	authorization  string
	hc             *http.Client
	ownsHC         bool
	timeout        time.Duration // 0: none
	longPollMargin time.Duration
	maxResponse    int64
}

var _ resourcelease.Dispatcher = (*Client)(nil)

// NewClient returns a client of the handler at rawURL (for the demo,
// "http://127.0.0.1:7420/yarpc/v1"), and of those in opts.URLs (rawURL may
// then be "").
func NewClient(rawURL string, opts ClientConfig) (*Client, error) {
	raw := opts.URLs
	if rawURL != "" || len(raw) == 0 {
		raw = append([]string{rawURL}, raw...)
	}
	c := &Client{
		namespace:      opts.Namespace,
		service:        opts.Service,
		caller:         cmp.Or(opts.Caller, opts.PeerID, programName()),
		peerID:         opts.PeerID,
		hc:             opts.HTTPClient,
		longPollMargin: opts.LongPollMargin,
	}
	if c.namespace == "" {
		c.namespace = DefaultNamespace
	}
	if strings.Contains(c.namespace, "::") || strings.IndexFunc(c.namespace, isSpaceOrControl) >= 0 {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewClient: invalid Namespace %q: it must not contain \"::\" or white space", c.namespace)
	}
	for name, v := range map[string]string{"Service": opts.Service, "Caller": opts.Caller, "PeerID": opts.PeerID, "BearerToken": opts.BearerToken} {
		if wire.HeaderSafe(v, len(v)) != v || strings.TrimSpace(v) != v {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewClient: %s must be a valid header value without surrounding white space", name)
		}
	}
	seen := make(map[string]bool, len(raw))
	for _, r := range raw {
		u, err := url.Parse(r)
		if err != nil {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewClient: invalid URL %q: %v", r, err)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewClient: invalid URL %q: want http:// or https:// and a host", r)
		}
		if err := wire.CheckClientTLS("transport: NewClient", u, opts.HTTPClient, opts.TLS); err != nil {
			return nil, err
		}
		if seen[u.String()] {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewClient: URL %q is given twice", u.Redacted())
		}
		seen[u.String()] = true
		c.endpoints = append(c.endpoints, &endpoint{url: u.String()})
	}
	var err error
	if c.epMin, c.epMax, err = endpointBackoff(opts.EndpointMinBackoff, opts.EndpointMaxBackoff); err != nil {
		return nil, err
	}
	switch {
	case opts.DialTimeout > 0:
		c.dialTimeout = opts.DialTimeout
	case opts.DialTimeout == 0 && len(c.endpoints) > 1:
		c.dialTimeout = DefaultDialTimeout
	}
	if opts.BearerToken != "" {
		c.authorization = "Bearer " + opts.BearerToken
	}
	switch {
	case c.longPollMargin < 0:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewClient: LongPollMargin must not be negative, got %v", c.longPollMargin)
	case c.longPollMargin == 0:
		c.longPollMargin = DefaultLongPollMargin
	}
	if c.timeout, c.maxResponse, err = wire.CallLimits("NewClient", opts.Timeout, opts.MaxResponseBytes); err != nil {
		return nil, err
	}
	if c.hc == nil {
		c.hc = &http.Client{Transport: wire.NewHTTPTransport(opts.TLS)}
		c.ownsHC = true
	}
	return c, nil
}

// programName is the default caller: the base name of the running program,
// made a valid header value no longer than a server accepts.
func programName() string {
	name := ""
	if len(os.Args) > 0 {
		name = filepath.Base(os.Args[0])
	}
	name = strings.TrimSpace(wire.HeaderSafe(name, MaxPeerIDBytes))
	if name == "" || name == "." || name == string(filepath.Separator) {
		return "leasemesh"
	}
	return name
}

// Close releases the idle connections of the Client's own HTTP client (not
// of one given in ClientConfig.HTTPClient). The Client stays usable. It
// always returns nil.
func (c *Client) Close() error {
	if c.ownsHC {
		c.hc.CloseIdleConnections()
	}
	return nil
}

// Call sends one raw call: body (JSON; nil or empty is sent as {}, which a
// yarpc server's JSON decoder needs) to the full procedure name (for example
// "resourcelease.mesh::enqueue"), and returns the response body of a
// success. It is what `leasectl request` uses.
func (c *Client) Call(ctx context.Context, procedure string, body []byte) ([]byte, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	return c.call(ctx, procedure, body, callOpts{retry: retryUnsent})
}

// call sends one call (see callOpts), to one dispatcher or, failing over,
// to several. A context without a deadline gets the client's timeout,
// stretched to minTimeout for long-polls.
func (c *Client) call(ctx context.Context, procedure string, body []byte, o callOpts) ([]byte, error) {
	out, _, err := c.callMaybeRetried(ctx, procedure, body, o)
	return out, err
}

// callMaybeRetried is call that also says whether an earlier try of the
// call failed after it may have reached a dispatcher (so an unknown_token
// in a batch's results may be that try's doing). An error after which no
// try reached a dispatcher matches ErrNotConnected.
func (c *Client) callMaybeRetried(ctx context.Context, procedure string, body []byte, o callOpts) ([]byte, bool, error) {
	if _, ok := ctx.Deadline(); !ok && c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, max(c.timeout, o.minTimeout))
		defer cancel()
	}
	var (
		out              []byte
		retried, reached bool
		err              error
	)
	if len(c.endpoints) == 1 {
		var ti tryInfo
		out, ti, err = c.sendBatchAware(ctx, c.endpoints[0], procedure, body, o)
		reached = ti.reached
	} else {
		out, retried, reached, err = c.failover(ctx, procedure, body, o)
	}
	if err != nil && !reached {
		err = markNotConnected(err)
	}
	return out, retried, err
}

// sendBatchAware is send, except that a batch procedure the endpoint is
// known not to serve is not sent (the caller falls back to per-item
// calls), and an answer saying it does not serve one is remembered.
func (c *Client) sendBatchAware(ctx context.Context, ep *endpoint, procedure string, body []byte, o callOpts) ([]byte, tryInfo, error) {
	if o.batch != 0 && !ep.batches.known(o.batch) {
		return nil, tryInfo{expired: true}, errBatchUnknown
	}
	out, ti, err := c.send(ctx, ep, procedure, body)
	if o.batch != 0 && isUnknownProcedure(err) {
		ep.batches.unknown(o.batch)
	}
	return out, ti, err
}

// errBatchUnknown stands for the answer of a dispatcher known not to serve
// a batch procedure, when it is not asked again.
var errBatchUnknown = &resourcelease.Error{Status: resourcelease.StatusNotFound, Code: CodeUnknownProcedure,
	Message: "transport: the dispatcher does not serve this batch procedure (it is older than this client)"}

// send sends one call to ep (see tryInfo). With a dial timeout, a try that
// has no connection within it fails as unavailable (a failover error), not
// with the deadline.
func (c *Client) send(ctx context.Context, ep *endpoint, procedure string, body []byte) (out []byte, ti tryInfo, err error) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= 0 {
		// Already expired, though ctx may not say so yet: nothing is sent,
		// and the dispatcher is not to blame.
		return nil, tryInfo{expired: true}, resourcelease.AsError(context.DeadlineExceeded)
	}
	var conn connState
	tryCtx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
		if !conn.set(connMade) {
			conn.late.Store(true) // just after the timeout: it may be sent
		}
	}})
	if c.dialTimeout > 0 {
		var cancel context.CancelCauseFunc
		tryCtx, cancel = context.WithCancelCause(tryCtx)
		defer cancel(nil)
		t := time.AfterFunc(c.dialTimeout, func() {
			if conn.set(connTimedOut) {
				cancel(errConnectTimeout)
			}
		})
		defer t.Stop()
	}
	req, err := http.NewRequestWithContext(tryCtx, http.MethodPost, ep.url, bytes.NewReader(body))
	if err != nil {
		return nil, tryInfo{}, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: %v", err)
	}
	h := req.Header
	h.Set(HeaderProcedure, procedure)
	h.Set(HeaderCaller, c.caller)
	if c.service != "" {
		h.Set(HeaderService, c.service)
	}
	h.Set(HeaderEncoding, "json")
	h.Set(HeaderAcceptsBothResponseError, wire.AcceptTrue)
	h.Set("Content-Type", "application/json")
	if c.peerID != "" {
		h.Set(HeaderPeerID, c.peerID)
	}
	if c.authorization != "" {
		h.Set("Authorization", c.authorization)
	}
	if dl, ok := ctx.Deadline(); ok {
		left := max(time.Until(dl), time.Millisecond)
		ms := (left + time.Millisecond - 1) / time.Millisecond
		h.Set(HeaderContextTTLMs, strconv.FormatInt(int64(ms), 10))
	}
	resp, out, _, err := wire.Do(c.hc, req, c.maxResponse, procedure)
	if err != nil {
		state := conn.get()
		if state == connTimedOut {
			ti := tryInfo{reached: conn.late.Load(), connected: conn.late.Load()}
			if ctx.Err() != nil {
				// The caller's deadline came with the dial timeout: report it.
				return nil, ti, wire.TransportError(ctx, errConnectTimeout)
			}
			e := resourcelease.Errorf(resourcelease.StatusUnavailable, CodeTransportUnavailable,
				"transport: no connection to %s within %v", redacted(ep.url), c.dialTimeout)
			e.Err = errConnectTimeout
			return nil, ti, e
		}
		return nil, tryInfo{reached: !notConnected(err), connected: state == connMade}, err
	}
	ti = tryInfo{reached: true, connected: true}
	if svc := resp.Header.Get(HeaderService); svc != "" && c.service != "" && svc != c.service {
		return nil, ti, resourcelease.Errorf(resourcelease.StatusInternal, CodeServiceMismatch,
			"transport: the response is from service %q, not %q", wire.HeaderSafe(svc, 128), c.service)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, ti, wire.DecodeError(resp, out)
	}
	return out, ti, nil
}

// connState is what became of a try's connection: the trace's GotConn and
// the dial timeout race to set it, and only the first wins, so that a try
// that got its connection is never reported as not connected.
type connState struct {
	v atomic.Int32
	// late: the connection came just after the timeout won, so the
	// request may have been written before the cancel took.
	late atomic.Bool
}

const (
	connPending int32 = iota
	connMade
	connTimedOut
)

func (s *connState) set(v int32) bool { return s.v.CompareAndSwap(connPending, v) }
func (s *connState) get() int32       { return s.v.Load() }

func redacted(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return raw
}

// roundTrip marshals req, calls verb and decodes the response into a new Resp.
func roundTrip[Resp any](ctx context.Context, c *Client, verb string, req any, o callOpts) (*Resp, error) {
	out, err := c.callJSON(ctx, verb, req, o)
	if err != nil {
		return nil, err
	}
	resp := new(Resp)
	if err := json.Unmarshal(out, resp); err != nil {
		return nil, wire.MalformedResponse(verb, err)
	}
	return resp, nil
}

func (c *Client) callJSON(ctx context.Context, verb string, req any, o callOpts) ([]byte, error) {
	body, err := encodeRequest(req)
	if err != nil {
		return nil, err
	}
	return c.call(ctx, Procedure(c.namespace, verb), body, o)
}

func encodeRequest(req any) ([]byte, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, &resourcelease.Error{Status: resourcelease.StatusInvalidArgument, Code: resourcelease.CodeInvalidArgument,
			Message: "transport: cannot encode the request: " + err.Error(), Err: err}
	}
	return body, nil
}

// Enqueue calls the enqueue procedure.
//
// A delayed enqueue (Delay, or a payload NotBefore) whose answer does not
// echo notBefore reached a server that predates delayed enqueue and made
// the item ready at once: Enqueue then returns
// resourcelease.DelayIgnoredError (status unimplemented, code
// CodeDelayIgnored), so that the caller learns it, rather than the item
// running early unnoticed.
func (c *Client) Enqueue(ctx context.Context, req *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
	req = wire.OrEmpty(req)
	sent, generated := req, false
	if len(c.endpoints) > 1 && req.Payload != nil && req.Payload.RequestID == "" {
		// A retry on another dispatcher must dedupe against this try.
		p := *req.Payload
		p.RequestID = newRequestID()
		r := *req
		r.Payload = &p
		sent, generated = &r, true
	}
	resp, err := roundTrip[resourcelease.EnqueueResponse](ctx, c, VerbEnqueue, sent, callOpts{retry: retrySafe})
	if err == nil && delayIgnored(req.Payload, req.Delay, resp.Duplicate, resp.NotBefore) {
		return nil, resourcelease.DelayIgnoredError(resp.SequenceID)
	}
	if err == nil && generated {
		resp.Duplicate = false // our own retry's: the caller enqueued once
	}
	return resp, err
}

// delayIgnored reports whether the answer to the enqueue of it with delay
// lacks the notBefore that a server which delays items echoes (a
// duplicate's answer never has it).
func delayIgnored(it *resourcelease.Item, delay time.Duration, duplicate bool, notBefore time.Time) bool {
	asked := delay > 0 || (it != nil && !it.NotBefore.IsZero())
	return asked && !duplicate && notBefore.IsZero()
}

// Lease calls the lease procedure. It returns (nil, nil) when nothing was
// available within the wait. A long-poll's request is allowed Wait plus
// LongPollMargin when that is longer than the client's Timeout (a context
// deadline, if set, still wins).
func (c *Client) Lease(ctx context.Context, req *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
	req = wire.OrEmpty(req)
	o := callOpts{retry: retrySafe}
	if req.Wait > 0 {
		o.minTimeout = c.longPollTimeout(req.Wait)
		o.rebody = func(spent time.Duration) ([]byte, bool) {
			r := *req
			r.Wait -= spent
			if r.Wait <= 0 {
				return nil, false
			}
			b, err := encodeRequest(&r)
			return b, err == nil
		}
	}
	out, err := c.callJSON(ctx, VerbLease, req, o)
	if err != nil {
		return nil, err
	}
	var w *wireLease
	if err := json.Unmarshal(out, &w); err != nil {
		return nil, wire.MalformedResponse(VerbLease, err)
	}
	if w == nil {
		return nil, nil
	}
	return w.lease(), nil
}

// Heartbeat calls the heartbeat procedure.
func (c *Client) Heartbeat(ctx context.Context, req *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
	return roundTrip[resourcelease.HeartbeatResponse](ctx, c, VerbHeartbeat, wire.OrEmpty(req), callOpts{retry: retrySafe})
}

// longPollTimeout is how long a request that long-polls for wait may take.
func (c *Client) longPollTimeout(wait time.Duration) time.Duration {
	return min(wait, time.Duration(maxTTLMs/2)*time.Millisecond) + c.longPollMargin
}

// Complete calls the complete procedure.
func (c *Client) Complete(ctx context.Context, req *resourcelease.CompleteRequest) error {
	_, err := c.callJSON(ctx, VerbComplete, wire.OrEmpty(req), callOpts{retry: retrySettle})
	return err
}

// Fail calls the fail procedure.
func (c *Client) Fail(ctx context.Context, req *resourcelease.FailRequest) error {
	_, err := c.callJSON(ctx, VerbFail, wire.OrEmpty(req), callOpts{retry: retrySettle})
	return err
}

// Release calls the release procedure. A server that predates it answers
// with status unimplemented (code CodeUnknownProcedure); the caller decides
// what to do instead (the Worker then fails the lease with requeue, which
// counts an attempt).
func (c *Client) Release(ctx context.Context, req *resourcelease.ReleaseRequest) error {
	_, err := c.callJSON(ctx, VerbRelease, wire.OrEmpty(req), callOpts{retry: retrySettle})
	if isUnknownProcedure(err) {
		return &resourcelease.Error{Status: resourcelease.StatusUnimplemented, Code: CodeUnknownProcedure,
			Message: "the server has no " + VerbRelease + " procedure (it is older than this client)", Err: err}
	}
	return err
}

// isUnknownProcedure reports whether err is a server saying it does not
// serve the procedure: an older leasemesh handler (not-found with
// CodeUnknownProcedure, in either error-header layout, which DecodeError
// reads alike) or a yarpc server (unimplemented).
func isUnknownProcedure(err error) bool {
	if err == nil {
		return false
	}
	e := resourcelease.AsError(err)
	switch {
	case e.Status == resourcelease.StatusNotFound && e.Code == CodeUnknownProcedure:
		return true
	case e.Status == resourcelease.StatusUnimplemented && e.Code != CodeTransportUnavailable:
		return true
	}
	return false
}

// Drain calls the drain procedure.
func (c *Client) Drain(ctx context.Context, req *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
	return roundTrip[resourcelease.DrainResponse](ctx, c, VerbDrain, wire.OrEmpty(req), callOpts{retry: retryUnsent})
}

// Restore calls the restore procedure.
func (c *Client) Restore(ctx context.Context, req *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
	return roundTrip[resourcelease.RestoreResponse](ctx, c, VerbRestore, wire.OrEmpty(req), callOpts{retry: retryUnsent})
}

// Stats calls the stats procedure.
func (c *Client) Stats(ctx context.Context, req *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
	return roundTrip[resourcelease.Stats](ctx, c, VerbStats, wire.OrEmpty(req), callOpts{retry: retrySafe})
}

// DeadLetters calls the deadletters procedure.
func (c *Client) DeadLetters(ctx context.Context, req *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
	return roundTrip[resourcelease.DeadLettersResponse](ctx, c, VerbDeadLetters, wire.OrEmpty(req), callOpts{retry: retrySafe})
}

// Redrive calls the redrive procedure. A request that selects nothing is
// refused before it is sent: a server older than the all field would take
// {} for every dead letter.
func (c *Client) Redrive(ctx context.Context, req *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return roundTrip[resourcelease.RedriveResponse](ctx, c, VerbRedrive, wire.OrEmpty(req), callOpts{retry: retryUnsent})
}

// Purge calls the purge procedure. A request that selects nothing is
// refused before it is sent: a server older than the all field would purge
// every dead letter on {}.
func (c *Client) Purge(ctx context.Context, req *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return roundTrip[resourcelease.PurgeResponse](ctx, c, VerbPurge, wire.OrEmpty(req), callOpts{retry: retryUnsent})
}
