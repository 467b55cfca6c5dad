package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// DefaultPrefix is the path prefix the control plane is served under
// when HandlerConfig.Prefix is empty.
const DefaultPrefix = "/omnirelay/control"

// Defaults and bounds of the control plane.
const (
	// DefaultReplicationLimit is the number of events GET /replication returns
	// when the request has no limit.
	DefaultReplicationLimit = 100
	// MaxReplicationLimit is the most events GET /replication returns; larger
	// limits are cut to it.
	MaxReplicationLimit = 1000
)

// Codes of the errors the control plane itself produces. It also uses those
// of package resourcelease (CodeInvalidArgument for a malformed body) and of
// the RPC handler (wire.CodeMethodNotAllowed, wire.CodeBodyTooLarge, wire.CodeUnauthenticated).
const (
	// CodeUnknownEndpoint: the path is not a control-plane endpoint.
	CodeUnknownEndpoint = "resourcelease.control.unknown_endpoint"
	// CodeNotConfigured: the endpoint's source (Dispatcher, Peers,
	// Backpressure or Events) was not given to NewHandler.
	CodeNotConfigured = "resourcelease.control.not_configured"
	// CodeInvalidQuery: a query parameter is malformed or out of range.
	CodeInvalidQuery = "resourcelease.control.invalid_query"
	// CodeInvalidAction: POST /deadletters named no action, or one
	// other than redrive and purge.
	CodeInvalidAction = "resourcelease.control.invalid_action"
	// CodeCrossOrigin: a POST came from a browser page of another origin
	// (see HandlerConfig.TrustedOrigins); its status is permission-denied.
	CodeCrossOrigin = "resourcelease.control.cross_origin"
)

// EventReader reads the replication log from a sequence number; every
// resourcelease.Replicator is one. When it also has a
// LastSequence() int64 method (as Replicators do), GET /replication reports
// the newest sequence number too.
type EventReader interface {
	// ReadEvents returns up to limit events with SequenceNumber > after,
	// oldest first.
	ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error)
}

// lastSequencer is the optional ability of an EventReader to report the
// newest sequence number, so a tailer knows whether to ask again at once.
type lastSequencer interface {
	LastSequence() int64
}

// HandlerConfig configures NewHandler. The zero value serves every
// endpoint under DefaultPrefix with nothing configured: each endpoint
// then answers unimplemented (HTTP 501, CodeNotConfigured) until its
// source is set.
type HandlerConfig struct {
	// Prefix is the path the endpoints are served under, e.g. GET
	// <Prefix>/stats. Defaults to DefaultPrefix; a trailing slash is
	// ignored, and "/" serves the endpoints at the root.
	Prefix string

	// Dispatcher serves /stats, /drain, /restore and /deadletters with the
	// same request and response types as the RPC procedures. When it is also
	// an ItemReader it serves /items, and when it is a LeasingPauser /pause
	// and /resume (resourcelease.LocalDispatcher and leasemesh.Dispatcher
	// are both).
	Dispatcher resourcelease.Dispatcher

	// Peers returns the peer-health payload served by GET /peers as JSON,
	// typically a peerhealth.Tracker's Diagnostics. An error is written as
	// a wire error.
	Peers func(ctx context.Context) (any, error)

	// Backpressure returns the latest backpressure signal served by GET
	// /backpressure as JSON; ok is false when there has been none yet (the
	// endpoint then answers 204 No Content).
	Backpressure func() (signal any, ok bool)

	// Events is the replication log served by GET /replication, and
	// searched for an item's events by GET /items/{sequenceId}.
	Events EventReader

	// ItemEventWindow is how many of the newest replication events GET
	// /items/{sequenceId} searches for the item's events (it needs an
	// Events that reports LastSequence). Defaults to
	// DefaultItemEventWindow; negative or above MaxItemEventWindow is an
	// error.
	ItemEventWindow int

	// TrustedOrigins are the browser origins ("https://console.example.com")
	// whose pages may POST to the control plane besides its own. A POST
	// whose Sec-Fetch-Site or Origin header says it comes from a page of any
	// other origin is refused with permission-denied (CodeCrossOrigin), so a
	// page elsewhere cannot make a browser that holds credentials drain or
	// purge; requests without those headers (CLI clients) are let through,
	// and left to Authorize. Add the public origin here when a proxy in
	// front rewrites the Host header. Defaults to none; a malformed origin
	// is an error.
	TrustedOrigins []string

	// Authorize, when set, guards the destructive endpoints (every POST:
	// /drain, /restore, /pause, /resume and the /deadletters forms), asked
	// for transport.RoleAdmin, and, with AuthorizeReads, every other
	// endpoint too, asked for transport.RoleObserver; it runs after the path
	// and method are checked and before anything else. Its result is sent as
	// transport.Authorizer documents, so the RPC handler's Authorizer (say
	// transport.BearerTokens) serves here unchanged. Defaults to nil: no
	// authorization.
	Authorize transport.Authorizer

	// AuthorizeReads extends Authorize to the read endpoints. Defaults to
	// false: reads are open.
	AuthorizeReads bool

	// MaxBodyBytes limits request bodies; a larger body is refused with
	// resource-exhausted (code resourcelease.transport.body_too_large).
	// Defaults to 4 MiB; negative is an error.
	MaxBodyBytes int64

	// Logger receives the text of internal errors, which never go on the
	// wire. Defaults to slog.Default().
	Logger *slog.Logger
}

// controlEndpoint is one route of the control plane.
type controlEndpoint struct {
	// allow is the Allow header value: the methods the endpoint serves.
	allow string
	get   func(h *controlHandler, w http.ResponseWriter, r *http.Request)
	post  func(h *controlHandler, w http.ResponseWriter, r *http.Request)
}

// controlRoutes maps the path below the prefix to its endpoint. Every POST is
// destructive; every GET is a read.
var controlRoutes = map[string]controlEndpoint{
	"/peers":               {allow: "GET, HEAD", get: (*controlHandler).peers},
	"/backpressure":        {allow: "GET, HEAD", get: (*controlHandler).backpressure},
	"/replication":         {allow: "GET, HEAD", get: (*controlHandler).replication},
	"/stats":               {allow: "GET, HEAD", get: (*controlHandler).stats},
	"/drain":               {allow: "POST", post: (*controlHandler).drain},
	"/restore":             {allow: "POST", post: (*controlHandler).restore},
	"/deadletters":         {allow: "GET, HEAD, POST", get: (*controlHandler).deadLetters, post: (*controlHandler).deadLetterAction},
	"/deadletters/redrive": {allow: "POST", post: (*controlHandler).redrive},
	"/deadletters/purge":   {allow: "POST", post: (*controlHandler).purge},
	"/items":               {allow: "GET, HEAD", get: (*controlHandler).items},
	"/items/":              {allow: "GET, HEAD", get: (*controlHandler).item}, // /items/{sequenceId}
	"/pause":               {allow: "POST", post: (*controlHandler).pause},
	"/resume":              {allow: "POST", post: (*controlHandler).resume},
}

type controlHandler struct {
	opts    HandlerConfig
	prefix  string
	origins *http.CrossOriginProtection
	log     *slog.Logger
}

// NewHandler returns the control-plane handler. It serves,
// under opts.Prefix (default "/omnirelay/control"):
//
//	GET  /peers                peer health: the JSON of opts.Peers
//	GET  /backpressure         the latest signal; 204 when there is none yet
//	GET  /replication          {"events":[...],"nextSince":N,"lastSequence":M,
//	                           "trimmed":{"from":A,"to":B}}:
//	                           events with sequenceNumber > since (query
//	                           since, default 0), at most limit (query limit,
//	                           default 100, larger than 1000 is cut to 1000)
//	GET  /stats                the stats procedure's response
//	POST /drain                {"items":[...]}, as the drain procedure
//	POST /restore              body {"items":[...]} → {"restoredCount":N}
//	GET  /deadletters          {"items":[...]}; query limit (0 or absent: all)
//	POST /deadletters          body {"action":"redrive"|"purge","sequenceIds":[...]}
//	                           or {"action":...,"all":true}
//	                           → {"redrivenCount":N} or {"purgedCount":N}
//	POST /deadletters/redrive  body {"sequenceIds":[...]} or {"all":true} → {"redrivenCount":N}
//	POST /deadletters/purge    body {"sequenceIds":[...]} or {"all":true} → {"purgedCount":N}
//	GET  /items                {"items":[...],"nextAfter":N}: a page of the
//	                           items in query state (pending, the default;
//	                           leased; dead), filtered by the exact query
//	                           resourceType, partitionKey and resourceId, by
//	                           ascending sequenceId after query after, at most
//	                           query limit (default 50, above 500 cut to 500);
//	                           nextAfter, when present, is the next page's after
//	GET  /items/{sequenceId}   {"item":{...},"events":[...],"eventWindow":{"from":A,"to":B}}:
//	                           the item with its body, and the replication
//	                           events that name it among the newest
//	                           ItemEventWindow (A to B); not-found when no
//	                           pending, leased or dead item has the id
//	POST /pause                stop granting leases → {"paused":true}
//	POST /resume               grant leases again → {"paused":false}
//
// GET endpoints answer HEAD too. Redrive and purge need sequenceIds or
// "all":true; neither (or both) is invalid-argument (resourcelease.CodeSelectionRequired), so an
// empty request never empties the dead letters. An empty POST body counts
// as {}. Unknown JSON fields and query parameters are ignored.
//
// Errors are in the RPC protocol's format (written by the same code): the
// HTTP status of the error's status, the headers Rpc-Status and
// Rpc-Error-Code (the status), Rpc-Error-Name (the stable code) and
// Rpc-Error-Message, and the body {"message","status","code","metadata"}; an error that is not a
// *resourcelease.Error is sent as internal with a generic message (its text
// goes to opts.Logger). A malformed query parameter or body is
// invalid-argument (400); an unknown path not-found (404); a method the
// endpoint does not serve is HTTP 405 with an Allow header (wire status
// invalid-argument, code wire.CodeMethodNotAllowed); an endpoint whose source is
// not configured is unimplemented (501).
//
// The POST endpoints are destructive: they require transport.RoleAdmin from
// opts.Authorize, and without one they are refused (permission-denied,
// transport.CodeAdminNotConfigured; transport.AllowAll opens them on
// purpose), as the RPC handler's admin procedures are. Reads stay open
// unless opts.AuthorizeReads
// (set it when item bodies are sensitive: /items/{sequenceId} and
// /deadletters return them). Before Authorize, a POST from a browser page of
// another origin is refused (see TrustedOrigins), so that a page cannot
// forge an action with the credentials of an operator's browser; the
// control plane never reads cookies.
// The handler can be mounted on its own or in a mux that routes the prefix to
// it.
func NewHandler(opts HandlerConfig) (http.Handler, error) {
	h := &controlHandler{opts: opts, log: opts.Logger}
	h.prefix = strings.TrimRight(opts.Prefix, "/")
	switch {
	case opts.Prefix == "":
		h.prefix = DefaultPrefix
	case strings.ContainsAny(opts.Prefix, " ?#\t\n"):
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"control: Prefix %q is not a URL path", opts.Prefix)
	case !strings.HasPrefix(h.prefix, "/") && h.prefix != "":
		h.prefix = "/" + h.prefix
	}
	switch {
	case h.opts.MaxBodyBytes < 0:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"control: MaxBodyBytes must not be negative, got %d", h.opts.MaxBodyBytes)
	case h.opts.MaxBodyBytes == 0:
		h.opts.MaxBodyBytes = wire.DefaultMaxBodyBytes
	}
	switch {
	case h.opts.ItemEventWindow < 0 || h.opts.ItemEventWindow > MaxItemEventWindow:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"control: ItemEventWindow must be from 0 (default) to %d, got %d", MaxItemEventWindow, h.opts.ItemEventWindow)
	case h.opts.ItemEventWindow == 0:
		h.opts.ItemEventWindow = DefaultItemEventWindow
	}
	h.origins = http.NewCrossOriginProtection()
	for _, o := range opts.TrustedOrigins {
		if err := h.origins.AddTrustedOrigin(o); err != nil {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
				"control: TrustedOrigins: %v", err)
		}
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	return h, nil
}

// ServeHTTP routes r to its endpoint.
func (h *controlHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer h.recoverPanic(w, r)
	rest, ok := strings.CutPrefix(r.URL.Path, h.prefix)
	route := rest
	if id, isItem := strings.CutPrefix(rest, "/items/"); isItem && id != "" && !strings.Contains(id, "/") {
		route = "/items/"
	}
	ep, found := controlRoutes[route]
	if !ok || !found {
		h.writeError(w, resourcelease.Errorf(resourcelease.StatusNotFound, CodeUnknownEndpoint,
			"no control-plane endpoint at %s", wire.HeaderSafe(r.URL.Path, 256)))
		return
	}
	var serve func(*controlHandler, http.ResponseWriter, *http.Request)
	write := false
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		serve = ep.get
	case http.MethodPost:
		serve, write = ep.post, true
	}
	if serve == nil {
		w.Header().Set("Allow", ep.allow)
		wire.WriteNormalizedStatus(w, resourcelease.Errorf(resourcelease.StatusInvalidArgument, wire.CodeMethodNotAllowed,
			"method %s is not allowed on %s; allowed: %s", wire.HeaderSafe(r.Method, 32), rest, ep.allow),
			http.StatusMethodNotAllowed)
		return
	}
	if write {
		if err := h.origins.Check(r); err != nil {
			h.log.DebugContext(r.Context(), "control plane: cross-origin request refused",
				"path", r.URL.Path, "origin", r.Header.Get("Origin"), "secFetchSite", r.Header.Get("Sec-Fetch-Site"))
			wire.WriteNormalized(w, resourcelease.Errorf(resourcelease.StatusPermissionDenied, CodeCrossOrigin,
				"cross-origin request refused: a page of origin %q may not call the control plane of %s (add it to TrustedOrigins to allow it)",
				wire.HeaderSafe(r.Header.Get("Origin"), 128), wire.HeaderSafe(r.Host, 128)))
			return
		}
	}
	if write && h.opts.Authorize == nil {
		// Safe by default, like the RPC handler's admin procedures: nothing
		// destructive is served until someone decides who may (AllowAll
		// opens it on purpose).
		wire.WriteNormalized(w, resourcelease.Errorf(resourcelease.StatusPermissionDenied, transport.CodeAdminNotConfigured,
			"%s is an admin action and this control plane has no Authorize configured (set one, or transport.AllowAll)", wire.HeaderSafe(r.URL.Path, 128)))
		return
	}
	if h.opts.Authorize != nil && (write || h.opts.AuthorizeReads) {
		role := transport.RoleObserver
		if write {
			role = transport.RoleAdmin
		}
		if err := h.opts.Authorize(r, role); err != nil {
			e := wire.AuthError(err)
			h.log.DebugContext(r.Context(), "control plane: unauthorized request",
				"path", r.URL.Path, "status", string(e.Status), "error", err)
			if e.Status == resourcelease.StatusUnauthenticated {
				w.Header().Set("WWW-Authenticate", "Bearer")
			}
			wire.WriteNormalized(w, e)
			return
		}
	}
	serve(h, w, r)
}

// recoverPanic turns a panic in a source or the Dispatcher into an internal
// wire error; the panic value and stack go to the log, never the wire. The
// endpoints write their response only after every call returned, so nothing
// has been written yet when a panic arrives here. http.ErrAbortHandler is
// passed on.
func (h *controlHandler) recoverPanic(w http.ResponseWriter, r *http.Request) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler { //nolint:errorlint // sentinel panic value, compared as net/http does
		panic(v)
	}
	h.log.ErrorContext(r.Context(), "control plane: panic serving request",
		"path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
	wire.WriteError(w, resourcelease.Errorf(resourcelease.StatusInternal, resourcelease.CodeInternal, "internal error"))
}

// writeError writes err as a wire error, logging the text of foreign errors
// (WriteError sends them as a generic internal error).
func (h *controlHandler) writeError(w http.ResponseWriter, err error) {
	if wire.IsForeign(err) {
		h.log.Error("control plane: internal error", "error", err)
	}
	wire.WriteError(w, err)
}

// writeJSON writes v as a 200 JSON response.
func (h *controlHandler) writeJSON(w http.ResponseWriter, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		h.writeError(w, err)
		return
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

// notConfigured is the error of an endpoint whose source is missing.
func notConfigured(what string) *resourcelease.Error {
	return resourcelease.Errorf(resourcelease.StatusUnimplemented, CodeNotConfigured,
		"the control plane has no %s configured", what)
}

// decodeBody reads r's body (at most MaxBodyBytes) into v, as the RPC
// handler does: an empty body leaves v as it is, unknown fields are ignored.
func (h *controlHandler) decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	if r.ContentLength > h.opts.MaxBodyBytes {
		return wire.BodyTooLarge(h.opts.MaxBodyBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return wire.BodyTooLarge(h.opts.MaxBodyBytes)
		}
		if terr := wire.BodyTimeout(err); terr != nil {
			w.Header().Set("Connection", "close")
			return terr
		}
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return ctxErr
		}
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"could not read the request body")
	}
	return wire.DecodeRequest(body, v)
}

// queryInt parses the query parameter name as an integer in [min, max]; def
// is returned when it is absent or empty.
func queryInt(r *http.Request, name string, def, min, max int64) (int64, error) {
	v := strings.TrimSpace(r.URL.Query().Get(name))
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeInvalidQuery,
			"query parameter %s=%q must be an integer from %d to %d", name, wire.HeaderSafe(v, 32), min, max)
	}
	return n, nil
}

func (h *controlHandler) peers(w http.ResponseWriter, r *http.Request) {
	if h.opts.Peers == nil {
		h.writeError(w, notConfigured("peer health source (Peers)"))
		return
	}
	v, err := h.opts.Peers(r.Context())
	if err != nil {
		h.writeError(w, err)
		return
	}
	h.writeJSON(w, v)
}

func (h *controlHandler) backpressure(w http.ResponseWriter, _ *http.Request) {
	if h.opts.Backpressure == nil {
		h.writeError(w, notConfigured("backpressure source (Backpressure)"))
		return
	}
	v, ok := h.opts.Backpressure()
	if !ok {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.writeJSON(w, v)
}

// ReplicationPage is the response of GET /replication.
type ReplicationPage struct {
	// Events are the events with SequenceNumber > since, oldest first;
	// never null.
	Events []resourcelease.Event `json:"events"`
	// NextSince is the since of the next page: the sequence number of the
	// last event returned, or the request's since when there was none.
	NextSince int64 `json:"nextSince"`
	// LastSequence is the newest sequence number in the log when the
	// EventReader can tell (omitted otherwise). NextSince < LastSequence
	// means more events are waiting.
	LastSequence *int64 `json:"lastSequence,omitempty"`
	// Trimmed, when present, names the events after since and before the
	// first event returned that are no longer in the log: retention deleted
	// them before this reader got to them. Sequence numbers have no gaps, so
	// a jump can mean nothing else. A reader that must see every event has
	// lost these and should resynchronise (from the queue's state, a drain,
	// or the sink that applied them) rather than carry on as if it had not.
	Trimmed *SequenceRange `json:"trimmed,omitempty"`
}

// SequenceRange is the replication events From through To, inclusive.
type SequenceRange struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

func (h *controlHandler) replication(w http.ResponseWriter, r *http.Request) {
	if h.opts.Events == nil {
		h.writeError(w, notConfigured("replication log (Events)"))
		return
	}
	since, err := queryInt(r, "since", 0, 0, 1<<62)
	if err != nil {
		h.writeError(w, err)
		return
	}
	limit, err := queryInt(r, "limit", DefaultReplicationLimit, 1, 1<<31-1)
	if err != nil {
		h.writeError(w, err)
		return
	}
	limit = min(limit, MaxReplicationLimit)
	// Read the newest sequence first: events read afterwards are at least as
	// new, so NextSince < LastSequence never claims fewer waiting than there are.
	var last *int64
	if ls, ok := h.opts.Events.(lastSequencer); ok {
		n := ls.LastSequence()
		last = &n
	}
	events, err := h.opts.Events.ReadEvents(r.Context(), since, int(limit))
	if err != nil {
		h.writeError(w, err)
		return
	}
	page := ReplicationPage{Events: events, NextSince: since, LastSequence: last}
	if page.Events == nil {
		page.Events = []resourcelease.Event{}
	}
	if n := len(events); n > 0 {
		if first := events[0].SequenceNumber; first > since+1 {
			page.Trimmed = &SequenceRange{From: since + 1, To: first - 1}
		}
		page.NextSince = events[n-1].SequenceNumber
		if last != nil && *last < page.NextSince {
			*last = page.NextSince
		}
	}
	h.writeJSON(w, page)
}

// dispatcher returns the Dispatcher, or writes unimplemented and returns nil.
func (h *controlHandler) dispatcher(w http.ResponseWriter) resourcelease.Dispatcher {
	if h.opts.Dispatcher == nil {
		h.writeError(w, notConfigured("dispatcher (Dispatcher)"))
	}
	return h.opts.Dispatcher
}

// respond writes the result of a Dispatcher call.
func respond[T any](h *controlHandler, w http.ResponseWriter, resp *T, err error) {
	if err != nil {
		h.writeError(w, err)
		return
	}
	h.writeJSON(w, resp)
}

func (h *controlHandler) stats(w http.ResponseWriter, r *http.Request) {
	if d := h.dispatcher(w); d != nil {
		resp, err := d.Stats(r.Context(), &resourcelease.StatsRequest{})
		respond(h, w, resp, err)
	}
}

func (h *controlHandler) drain(w http.ResponseWriter, r *http.Request) {
	d := h.dispatcher(w)
	if d == nil {
		return
	}
	var req resourcelease.DrainRequest
	if err := h.decodeBody(w, r, &req); err != nil {
		h.writeError(w, err)
		return
	}
	resp, err := d.Drain(r.Context(), &req)
	if err == nil && resp != nil && resp.Items == nil {
		resp.Items = []resourcelease.PendingItem{}
	}
	respond(h, w, resp, err)
}

func (h *controlHandler) restore(w http.ResponseWriter, r *http.Request) {
	d := h.dispatcher(w)
	if d == nil {
		return
	}
	var req resourcelease.RestoreRequest
	if err := h.decodeBody(w, r, &req); err != nil {
		h.writeError(w, err)
		return
	}
	resp, err := d.Restore(r.Context(), &req)
	respond(h, w, resp, err)
}

func (h *controlHandler) deadLetters(w http.ResponseWriter, r *http.Request) {
	d := h.dispatcher(w)
	if d == nil {
		return
	}
	limit, err := queryInt(r, "limit", 0, 0, 1<<31-1)
	if err != nil {
		h.writeError(w, err)
		return
	}
	resp, err := d.DeadLetters(r.Context(), &resourcelease.DeadLettersRequest{Limit: int(limit)})
	if err == nil && resp != nil && resp.Items == nil {
		resp.Items = []resourcelease.DeadLetter{}
	}
	respond(h, w, resp, err)
}

// DeadLetterAction is the body of POST <prefix>/deadletters.
type DeadLetterAction struct {
	// Action is "redrive" or "purge".
	Action string `json:"action"`
	// SequenceIDs selects the dead letters.
	SequenceIDs []int64 `json:"sequenceIds,omitempty"`
	// All selects every dead letter; it may not be given with SequenceIDs.
	// One of the two is required.
	All bool `json:"all,omitempty"`
}

// DeadLetterSelection is the body of POST <prefix>/deadletters/redrive and
// /deadletters/purge: the given dead letters, or all of them. One of the two
// is required, so that an empty request never empties the dead letters.
type DeadLetterSelection struct {
	SequenceIDs []int64 `json:"sequenceIds,omitempty"`
	All         bool    `json:"all,omitempty"`
}

// ids checks the selection and returns the ids to pass to the Dispatcher
// (nil with All).
func (s *DeadLetterSelection) ids() ([]int64, error) {
	switch {
	case s.All && len(s.SequenceIDs) > 0:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired,
			"give sequenceIds or all, not both")
	case s.All:
		return nil, nil
	case len(s.SequenceIDs) == 0:
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired,
			`name the dead letters in sequenceIds, or set "all": true for every one`)
	}
	for _, id := range s.SequenceIDs {
		if id <= 0 {
			return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
				"sequenceIds must be positive, got %d", id)
		}
	}
	return s.SequenceIDs, nil
}

// The actions of POST <prefix>/deadletters.
const (
	// DeadLetterRedrive moves dead letters back to pending with attempt 1.
	DeadLetterRedrive = "redrive"
	// DeadLetterPurge deletes dead letters.
	DeadLetterPurge = "purge"
)

func (h *controlHandler) deadLetterAction(w http.ResponseWriter, r *http.Request) {
	d := h.dispatcher(w)
	if d == nil {
		return
	}
	var req DeadLetterAction
	if err := h.decodeBody(w, r, &req); err != nil {
		h.writeError(w, err)
		return
	}
	action := strings.ToLower(strings.TrimSpace(req.Action))
	if action != DeadLetterRedrive && action != DeadLetterPurge {
		h.writeError(w, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeInvalidAction,
			`action must be %q or %q, got %q`, DeadLetterRedrive, DeadLetterPurge, wire.HeaderSafe(req.Action, 64)))
		return
	}
	sel := DeadLetterSelection{SequenceIDs: req.SequenceIDs, All: req.All}
	if action == DeadLetterRedrive {
		h.redriveSelection(w, r, d, &sel)
	} else {
		h.purgeSelection(w, r, d, &sel)
	}
}

func (h *controlHandler) redriveSelection(w http.ResponseWriter, r *http.Request, d resourcelease.Dispatcher, sel *DeadLetterSelection) {
	ids, err := sel.ids()
	if err != nil {
		h.writeError(w, err)
		return
	}
	resp, err := d.Redrive(r.Context(), &resourcelease.RedriveRequest{SequenceIDs: ids, All: sel.All})
	respond(h, w, resp, err)
}

func (h *controlHandler) purgeSelection(w http.ResponseWriter, r *http.Request, d resourcelease.Dispatcher, sel *DeadLetterSelection) {
	ids, err := sel.ids()
	if err != nil {
		h.writeError(w, err)
		return
	}
	resp, err := d.Purge(r.Context(), &resourcelease.PurgeRequest{SequenceIDs: ids, All: sel.All})
	respond(h, w, resp, err)
}

func (h *controlHandler) redrive(w http.ResponseWriter, r *http.Request) {
	d := h.dispatcher(w)
	if d == nil {
		return
	}
	var sel DeadLetterSelection
	if err := h.decodeBody(w, r, &sel); err != nil {
		h.writeError(w, err)
		return
	}
	h.redriveSelection(w, r, d, &sel)
}

func (h *controlHandler) purge(w http.ResponseWriter, r *http.Request) {
	d := h.dispatcher(w)
	if d == nil {
		return
	}
	var sel DeadLetterSelection
	if err := h.decodeBody(w, r, &sel); err != nil {
		h.writeError(w, err)
		return
	}
	h.purgeSelection(w, r, d, &sel)
}
