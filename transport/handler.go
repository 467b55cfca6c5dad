package transport

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Defaults of HandlerConfig.
const (
	// DefaultMaxBodyBytes is the default request body limit: 4 MiB.
	DefaultMaxBodyBytes = wire.DefaultMaxBodyBytes
	// DefaultMaxWait is the default cap on a lease long-poll: 60 s.
	DefaultMaxWait = 60 * time.Second
	// DefaultMaxTTL is the default cap on a request's deadline: 10 min.
	DefaultMaxTTL = 10 * time.Minute
)

// HandlerConfig configures NewHandler. The zero value of every field means its
// documented default; a bad value makes NewHandler return an error.
type HandlerConfig struct {
	// Service is the service name. When set, a request whose Rpc-Service
	// header is present and different gets not-found. Defaults to "": any
	// Rpc-Service is accepted.
	Service string
	// Namespace is the procedure namespace: the handler serves
	// "<Namespace>::<verb>" and answers any other procedure with not-found.
	// Defaults to DefaultNamespace ("resourcelease"). It must not contain
	// "::" or white space.
	Namespace string
	// MaxBodyBytes limits the request body; a larger one gets
	// resource-exhausted. Defaults to DefaultMaxBodyBytes (4 MiB); negative is
	// an error.
	MaxBodyBytes int64
	// MaxWait caps a lease's long-poll: a larger waitMs is cut to it. Defaults
	// to DefaultMaxWait (60 s); negative is an error.
	MaxWait time.Duration
	// MaxTTL caps every request's deadline: a TTL or deadline header further
	// away is cut to it, and a request without one gets it. Defaults to
	// DefaultMaxTTL (10 min); negative is an error.
	MaxTTL time.Duration
	// Authorize, when set, is called for every POST with the Role its
	// procedure requires (RoleOf: producer, worker, observer or admin; a
	// procedure the handler does not serve asks for RoleObserver and, let
	// through, gets not-found), before the headers are parsed and the
	// middleware runs. A non-nil result refuses the request and is sent as
	// Authorizer documents. BearerTokens gives each role its tokens.
	// Defaults to nil: every procedure but the admin ones (drain, restore,
	// redrive, purge, ...) is served to anyone, and those are refused to
	// everyone (permission-denied, code CodeAdminNotConfigured), so a handler
	// mounted without thinking about it serves producers, workers and reads
	// only. AllowAll opens them too.
	Authorize Authorizer
	// Middleware wraps the protocol handler, Middleware[0] outermost. It runs
	// after the method check and Authorize and before the headers are
	// parsed; the backpressure rate limiter plugs in here (see
	// OnlyProcedures and WriteError). Requests it refuses are still counted
	// in the metrics.
	Middleware []func(http.Handler) http.Handler
	// Logger receives internal errors (with their cause, which never goes on
	// the wire), recovered panics and, at debug level, refused requests.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// Registerer, when set, receives the metrics rpc_requests_total{procedure,
	// status} and rpc_request_duration_seconds{procedure}. Handlers sharing a
	// registry share the metrics; handlers on different registries are
	// independent. Defaults to nil: no metrics.
	Registerer prometheus.Registerer
}

// handler serves the wire protocol for one Dispatcher. It is immutable after
// NewHandler and safe for concurrent use.
type handler struct {
	d         resourcelease.Dispatcher
	bd        resourcelease.BatchDispatcher // d, or d's per-item calls (resourcelease.PerItem)
	service   string
	maxBody   int64
	maxWait   time.Duration
	maxTTL    time.Duration
	authorize Authorizer
	roles     map[string]Role // by full procedure name: what each route requires
	logger    *slog.Logger
	metrics   *rpcMetrics
	routes    map[string]route // by full procedure name
	inner     http.Handler     // Middleware around serveRPC
}

// route is one procedure: serve decodes the body, checks it, calls the
// Dispatcher and encodes the result.
type route struct {
	procedure string
	serve     func(h *handler, ctx context.Context, body []byte) ([]byte, error)
}

// NewHandler returns the http.Handler that serves d over yarpc's HTTP
// transport with the JSON encoding. It answers every path it is given, so
// mount it at the path of your choice (the demo uses "/yarpc/v1").
//
// A request is a POST whose Rpc-Procedure header names "<namespace>::<verb>"
// and whose body is the JSON request of that verb (empty means {}; unknown
// fields are ignored). yarpc's other request headers (Rpc-Caller,
// Rpc-Encoding json or application/json, Rpc-Shard-Key, Rpc-Routing-Key,
// Rpc-Routing-Delegate, Rpc-Caller-Procedure, application headers
// Rpc-Header-<name>) are accepted and never an error. A present Rpc-Service
// is echoed in the response, as yarpc servers do.
//
// A success is HTTP 200 with Rpc-Status: success and the JSON response (the
// lease verb answers null when nothing was available). An error has the HTTP
// status of its resourcelease.Status (yarpc's table), the headers Rpc-Status
// and Rpc-Error-Code (the status), Rpc-Error-Name (the stable code),
// Rpc-Error-Message, Rpc-Both-Response-Error: true when the request carried
// Rpc-Accepts-Both-Response-Error: true, and the body
// {"message","status","code","metadata"}. Errors that are not
// *resourcelease.Error, and panics in d, are sent as internal with a generic
// message and logged. A method other than POST gets 405 with "Allow: POST"
// (status invalid-argument, code CodeMethodNotAllowed).
//
// The request's deadline (Context-TTL-MS, Rpc-Ttl-Ms or Rpc-Deadline, the
// earliest if several, capped by MaxTTL) bounds the context given to d, which
// also ends when the client goes away. The context carries a
// resourcelease.CallInfo with the Rpc-Caller, the peer id header
// (Rpc-Header-Peer-Id, else x-peer-id) and Rpc-Service.
func NewHandler(d resourcelease.Dispatcher, opts HandlerConfig) (http.Handler, error) {
	if d == nil {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewHandler: nil Dispatcher")
	}
	h := &handler{
		d:         d,
		bd:        resourcelease.PerItem(d),
		service:   opts.Service,
		maxBody:   opts.MaxBodyBytes,
		maxWait:   opts.MaxWait,
		maxTTL:    opts.MaxTTL,
		authorize: opts.Authorize,
		logger:    opts.Logger,
	}
	ns := opts.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	if strings.Contains(ns, "::") || strings.IndexFunc(ns, isSpaceOrControl) >= 0 {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewHandler: invalid Namespace %q: it must not contain \"::\" or white space", ns)
	}
	if strings.IndexFunc(h.service, isSpaceOrControl) >= 0 {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewHandler: invalid Service %q: it must not contain white space", h.service)
	}
	switch {
	case h.maxBody < 0:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewHandler: MaxBodyBytes must not be negative, got %d", h.maxBody)
	case h.maxWait < 0:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewHandler: MaxWait must not be negative, got %v", h.maxWait)
	case h.maxTTL < 0:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewHandler: MaxTTL must not be negative, got %v", h.maxTTL)
	}
	if h.maxBody == 0 {
		h.maxBody = DefaultMaxBodyBytes
	}
	if h.maxWait == 0 {
		h.maxWait = DefaultMaxWait
	}
	if h.maxTTL == 0 {
		h.maxTTL = DefaultMaxTTL
	}
	if h.logger == nil {
		h.logger = slog.Default()
	}
	for i, mw := range opts.Middleware {
		if mw == nil {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewHandler: Middleware[%d] is nil", i)
		}
	}
	if opts.Registerer != nil {
		m, err := newRPCMetrics(opts.Registerer)
		if err != nil {
			return nil, err
		}
		h.metrics = m
	}
	h.routes = make(map[string]route)
	add := func(verb string, serve func(*handler, context.Context, []byte) ([]byte, error)) {
		p := Procedure(ns, verb)
		h.routes[p] = route{procedure: p, serve: serve}
	}
	add(VerbEnqueue, unary(resourcelease.Dispatcher.Enqueue, false, checkEnqueue))
	add(VerbLease, serveLease)
	add(VerbHeartbeat, unary(resourcelease.Dispatcher.Heartbeat, false, func(_ *handler, r *resourcelease.HeartbeatRequest) error {
		return checkToken(&r.OwnershipToken)
	}))
	add(VerbComplete, settle(resourcelease.Dispatcher.Complete, func(r *resourcelease.CompleteRequest) error {
		return checkToken(&r.OwnershipToken)
	}))
	add(VerbFail, settle(resourcelease.Dispatcher.Fail, func(r *resourcelease.FailRequest) error {
		return checkToken(&r.OwnershipToken)
	}))
	add(VerbRelease, settle(resourcelease.Dispatcher.Release, func(r *resourcelease.ReleaseRequest) error {
		if r.Delay < 0 {
			return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
				"delayMs must not be negative")
		}
		return checkToken(&r.OwnershipToken)
	}))
	add(VerbEnqueueBatch, batchRoute(serveEnqueueBatch, checkEnqueueBatch))
	add(VerbLeaseBatch, batchRoute(serveLeaseBatch, checkLeaseBatch))
	add(VerbHeartbeatBatch, batchRoute(serveHeartbeatBatch, func(_ *handler, r *resourcelease.HeartbeatBatchRequest) error {
		return checkBatchSize(VerbHeartbeatBatch, len(r.OwnershipTokens))
	}))
	add(VerbCompleteBatch, batchRoute(serveCompleteBatch, func(_ *handler, r *resourcelease.CompleteBatchRequest) error {
		return checkBatchSize(VerbCompleteBatch, len(r.OwnershipTokens))
	}))
	add(VerbDrain, unary(resourcelease.Dispatcher.Drain, false, nil))
	add(VerbRestore, unary(resourcelease.Dispatcher.Restore, false, nil))
	add(VerbStats, unary(resourcelease.Dispatcher.Stats, false, nil))
	add(VerbDeadLetters, unary(resourcelease.Dispatcher.DeadLetters, false, nil))
	add(VerbRedrive, unary(resourcelease.Dispatcher.Redrive, false, func(_ *handler, r *resourcelease.RedriveRequest) error {
		return r.Validate()
	}))
	add(VerbPurge, unary(resourcelease.Dispatcher.Purge, false, func(_ *handler, r *resourcelease.PurgeRequest) error {
		return r.Validate()
	}))
	h.roles = make(map[string]Role, len(h.routes))
	for p := range h.routes {
		_, verb, _ := SplitProcedure(p)
		h.roles[p] = RoleOf(verb)
	}

	var inner http.Handler = http.HandlerFunc(h.serveRPC)
	for i := len(opts.Middleware) - 1; i >= 0; i-- {
		inner = opts.Middleware[i](inner)
		if inner == nil {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: NewHandler: Middleware[%d] returned a nil handler", i)
		}
	}
	h.inner = inner
	return h, nil
}

func isSpaceOrControl(r rune) bool { return r <= ' ' || r == 0x7f }

// leaseOrGiveBack leases, and releases the lease at once when the request's
// context ended while it was being granted: nobody will read the response,
// and otherwise the item would sit leased to nobody until it expired,
// costing an attempt.
func leaseOrGiveBack(d resourcelease.Dispatcher, ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
	l, err := d.Lease(ctx, r)
	if err != nil || l == nil || ctx.Err() == nil {
		return l, err
	}
	if rerr := d.Release(context.WithoutCancel(ctx), &resourcelease.ReleaseRequest{OwnershipToken: l.OwnershipToken}); rerr != nil {
		return l, nil // could not give it back: deliver it if anyone is still listening
	}
	return nil, ctx.Err()
}

// serveLease is the lease route: the lease in its wire shape (see
// wireLease), or null when nothing came within the wait.
func serveLease(h *handler, ctx context.Context, body []byte) ([]byte, error) {
	req := new(resourcelease.LeaseRequest)
	if err := wire.DecodeRequest(body, req); err != nil {
		return nil, err
	}
	if err := checkLease(h, req); err != nil {
		return nil, err
	}
	l, err := leaseOrGiveBack(h.d, ctx, req)
	if err != nil {
		return nil, err
	}
	if l == nil {
		return []byte("null"), nil
	}
	w := toWireLease(l)
	return json.Marshal(&w)
}

// successBody is the response of the procedures that only report success
// (complete, fail, release).
var successBody = []byte(`{"success":true}`)

// settle adapts a Dispatcher method that only succeeds or fails to a route
// answering {"success":true}.
func settle[Req any](
	call func(resourcelease.Dispatcher, context.Context, *Req) error,
	check func(*Req) error,
) func(*handler, context.Context, []byte) ([]byte, error) {
	return func(h *handler, ctx context.Context, body []byte) ([]byte, error) {
		req := new(Req)
		if err := wire.DecodeRequest(body, req); err != nil {
			return nil, err
		}
		if err := check(req); err != nil {
			return nil, err
		}
		if err := call(h.d, ctx, req); err != nil {
			return nil, err
		}
		return successBody, nil
	}
}

// unary adapts one Dispatcher method to a route. allowNull lets the method
// answer (nil, nil), encoded as null (lease); for the others it is a bug in
// the Dispatcher, reported as internal.

func unary[Req, Resp any](
	call func(resourcelease.Dispatcher, context.Context, *Req) (*Resp, error),
	allowNull bool,
	check func(*handler, *Req) error,
) func(*handler, context.Context, []byte) ([]byte, error) {
	return func(h *handler, ctx context.Context, body []byte) ([]byte, error) {
		req := new(Req)
		if err := wire.DecodeRequest(body, req); err != nil {
			return nil, err
		}
		if check != nil {
			if err := check(h, req); err != nil {
				return nil, err
			}
		}
		resp, err := call(h.d, ctx, req)
		if err != nil {
			return nil, err
		}
		if resp == nil {
			if allowNull {
				return []byte("null"), nil
			}
			return nil, fmt.Errorf("dispatcher returned neither a response nor an error")
		}
		return json.Marshal(resp)
	}
}

func checkEnqueue(_ *handler, r *resourcelease.EnqueueRequest) error {
	if err := r.Payload.Validate(); err != nil {
		return err
	}
	return checkDelay(r.Delay)
}

// checkDelay refuses a negative delayMs.
func checkDelay(d time.Duration) error {
	if d < 0 {
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"delayMs must not be negative, got %d", d.Milliseconds())
	}
	return nil
}

func checkLease(h *handler, r *resourcelease.LeaseRequest) error {
	if err := checkPeerID("peerId", r.PeerID); err != nil {
		return err
	}
	if r.Wait < 0 {
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"waitMs must not be negative, got %d", r.Wait.Milliseconds())
	}
	r.Wait = min(r.Wait, h.maxWait)
	return nil
}

func checkToken(t *resourcelease.OwnershipToken) error {
	if t == nil || t.IsZero() {
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired, "ownershipToken is required")
	}
	return nil
}

// ServeHTTP records metrics, recovers panics, checks the method and
// authorization, then runs the middleware chain and the protocol.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	proc := r.Header.Get(HeaderProcedure)
	label := unknownProcedureLabel
	if _, ok := h.routes[proc]; ok {
		label = proc
	}
	rec := &statusRecorder{ResponseWriter: w, acceptsBoth: wire.AcceptsBothResponseError(r.Header)}
	if svc := r.Header.Get(HeaderService); svc != "" {
		// yarpc servers echo the service on every response; a yarpc client
		// refuses a response naming another one.
		rec.Header().Set(HeaderService, svc)
	}
	defer func() {
		p := recover()
		if p != nil && p != http.ErrAbortHandler { // ErrAbortHandler is net/http's own way to abort: let it through
			h.logger.Error("transport: panic serving request", "procedure", label, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if rec.status == 0 {
				wire.WriteNormalized(rec, internalError())
			}
		}
		if h.metrics != nil {
			h.metrics.requests.WithLabelValues(label, rec.statusLabel()).Inc()
			h.metrics.duration.WithLabelValues(label).Observe(time.Since(start).Seconds())
		}
		if p == http.ErrAbortHandler {
			panic(p)
		}
	}()
	if r.Method != http.MethodPost {
		rec.Header().Set("Allow", http.MethodPost)
		h.logger.Debug("transport: refused request", "method", r.Method, "reason", "method not allowed")
		wire.WriteNormalizedStatus(rec, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeMethodNotAllowed,
			"method %s is not allowed; use POST", wire.HeaderSafe(r.Method, 32)), http.StatusMethodNotAllowed)
		return
	}
	role, served := h.roles[proc]
	if !served {
		role = RoleObserver // to be told not-found, a caller need only be known
	}
	switch {
	case h.authorize != nil:
		if !h.authorized(rec, r, label, role) {
			return
		}
	case role == RoleAdmin:
		h.logger.Debug("transport: refused request", "procedure", label, "reason", "admin procedures are not configured")
		wire.WriteNormalized(rec, resourcelease.Errorf(resourcelease.StatusPermissionDenied, CodeAdminNotConfigured,
			"%s is an admin procedure and this handler serves none (see transport.HandlerConfig.Authorize)", proc))
		return
	}
	h.inner.ServeHTTP(rec, r)
}

// authorized runs the Authorizer for role, writing its refusal. A refused
// credential is logged at warn level (someone holds a token and tried
// beyond it); a missing one at debug level (anyone can send those).
func (h *handler) authorized(w http.ResponseWriter, r *http.Request, label string, role Role) bool {
	err := h.authorize(r, role)
	if err == nil {
		return true
	}
	e := wire.AuthError(err)
	level := slog.LevelDebug
	if e.Status == resourcelease.StatusPermissionDenied {
		level = slog.LevelWarn
	}
	h.logger.Log(r.Context(), level, "transport: unauthorized request", "procedure", label, "role", string(role),
		"status", string(e.Status), "remote", r.RemoteAddr, "error", err)
	if e.Status == resourcelease.StatusUnauthenticated {
		w.Header().Set("WWW-Authenticate", "Bearer")
	}
	wire.WriteNormalized(w, e)
	return false
}

func internalError() *resourcelease.Error {
	return &resourcelease.Error{Status: resourcelease.StatusInternal, Code: resourcelease.CodeInternal, Message: "internal error"}
}

// call is what the headers of a request say.
type call struct {
	route    route
	deadline time.Time
	info     resourcelease.CallInfo
}

// parseCall applies the header rules of the protocol (docs/protocol.md).
func (h *handler) parseCall(r *http.Request, now time.Time) (call, *resourcelease.Error) {
	proc := r.Header.Get(HeaderProcedure)
	if strings.TrimSpace(proc) == "" {
		return call{}, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeProcedureRequired, "the %s header is required", HeaderProcedure)
	}
	svc := r.Header.Get(HeaderService)
	if h.service != "" && svc != "" && svc != h.service {
		return call{}, resourcelease.Errorf(resourcelease.StatusNotFound, CodeUnknownService,
			"unknown service %q (this is %q)", wire.HeaderSafe(svc, 128), h.service)
	}
	rt, ok := h.routes[proc]
	if !ok {
		return call{}, resourcelease.Errorf(resourcelease.StatusNotFound, CodeUnknownProcedure,
			"unknown procedure %q", wire.HeaderSafe(proc, 128))
	}
	if err := checkEncoding(r.Header.Get(HeaderEncoding)); err != nil {
		return call{}, err
	}
	deadline, err := requestDeadline(r.Header, now, h.maxTTL)
	if err != nil {
		return call{}, err
	}
	for _, name := range [...]string{HeaderCaller, HeaderApplicationPeerID, HeaderPeerID} {
		if err := checkPeerID(name, r.Header.Get(name)); err != nil {
			return call{}, err
		}
	}
	return call{
		route:    rt,
		deadline: deadline,
		info: resourcelease.CallInfo{
			Caller:  r.Header.Get(HeaderCaller),
			PeerID:  cmp.Or(r.Header.Get(HeaderApplicationPeerID), r.Header.Get(HeaderPeerID)),
			Service: svc,
		},
	}, nil
}

// MaxPeerIDBytes bounds a caller or peer id (Rpc-Caller, Rpc-Header-Peer-Id,
// x-peer-id, a lease's peerId). Peer ids are kept by peer health and written into every event, so
// a client must not be able to make the dispatcher hold megabytes per id.
const MaxPeerIDBytes = 256

func checkPeerID(field, id string) *resourcelease.Error {
	if len(id) > MaxPeerIDBytes {
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodePeerIDTooLong,
			"%s is %d bytes; at most %d are allowed", field, len(id), MaxPeerIDBytes)
	}
	return nil
}

// serveRPC is the protocol proper: headers, body, dispatch, response.
func (h *handler) serveRPC(w http.ResponseWriter, r *http.Request) {
	c, perr := h.parseCall(r, time.Now())
	if perr != nil {
		h.logger.Debug("transport: refused request", "procedure", r.Header.Get(HeaderProcedure), "status", string(perr.Status), "code", perr.Code)
		wire.WriteNormalized(w, perr)
		return
	}
	body, err := h.readBody(w, r)
	if err != nil {
		if code := resourcelease.CodeOf(err); code == CodeBodyTooLarge || code == CodeBodyTimeout {
			// Do not read the rest of an oversized body to keep the
			// connection: close it. (MaxBytesReader cannot tell the server
			// itself through the writers that wrap its own.)
			w.Header().Set("Connection", "close")
		}
		h.writeError(w, c.route.procedure, err)
		return
	}
	ctx, cancel := context.WithDeadline(resourcelease.WithCallInfo(r.Context(), c.info), c.deadline)
	defer cancel()
	if err := ctx.Err(); err != nil { // a deadline already past, or a client already gone
		h.writeError(w, c.route.procedure, err)
		return
	}
	out, err := h.invoke(ctx, c.route, body)
	if err != nil {
		h.writeError(w, c.route.procedure, err)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(out)))
	hdr.Set(HeaderStatus, wire.StatusSuccess)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
}

// readBody reads the whole body (which lets net/http notice a client that
// goes away during a long-poll) within the size limit.
func (h *handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.ContentLength > h.maxBody {
		return nil, wire.BodyTooLarge(h.maxBody)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.maxBody))
	if err == nil {
		return body, nil
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, wire.BodyTooLarge(h.maxBody)
	}
	if terr := wire.BodyTimeout(err); terr != nil {
		return nil, terr
	}
	if ctxErr := r.Context().Err(); ctxErr != nil {
		return nil, ctxErr
	}
	return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "could not read the request body")
}

// invoke runs a route, turning a panic in the Dispatcher into an internal
// error.
func (h *handler) invoke(ctx context.Context, rt route, body []byte) (out []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			h.logger.Error("transport: panic in dispatcher", "procedure", rt.procedure, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			out, err = nil, internalError()
		}
	}()
	return rt.serve(h, ctx, body)
}

// writeError logs internal errors (with their cause) and writes err.
func (h *handler) writeError(w http.ResponseWriter, procedure string, err error) {
	e := wire.Normalize(err)
	switch {
	case e.Status == resourcelease.StatusInternal:
		h.logger.Error("transport: internal error", "procedure", procedure, "code", e.Code, "error", err)
	default:
		h.logger.Debug("transport: request failed", "procedure", procedure, "status", string(e.Status), "code", e.Code)
	}
	wire.WriteNormalized(w, e)
}

// statusRecorder remembers the status of the response for the metrics, and
// marks the errors written through it for a client that accepts both
// response and error.
type statusRecorder struct {
	http.ResponseWriter
	acceptsBoth bool
	status      int
	rpcStatus   resourcelease.Status
}

// WriteHeader records the first final status and the error's status.
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
		if code >= 300 {
			wire.MarkBothResponseError(s.Header(), s.acceptsBoth)
			s.rpcStatus = wire.ResponseStatus(&http.Response{StatusCode: code, Header: s.Header()})
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

// Write writes b, recording an implicit 200.
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

// Flush lets middleware that streams flush through the recorder.
func (s *statusRecorder) Flush() {
	if s.status == 0 {
		s.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// statusLabel is the status label of the metrics: "ok" for success, else the
// wire status.
func (s *statusRecorder) statusLabel() string {
	if s.rpcStatus != "" {
		return string(s.rpcStatus)
	}
	return okStatusLabel
}
