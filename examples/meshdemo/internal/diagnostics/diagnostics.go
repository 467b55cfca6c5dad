// Package diagnostics serves the mesh demo's diagnostics port: the /demo/*
// helper endpoints layered over the dispatcher, and the live page at "/".
//
//	POST /demo/enqueue        enqueue through the RPC client; payloadEncoding
//	                          defaults to application/json and body to a small
//	                          JSON document
//	GET  /demo/lease-health   peer health ({"peers":[...],"summary":{...}})
//	GET  /demo/backpressure   the latest backpressure signal; 204 before the first
//	GET  /demo/replication    the recent replication events, oldest first
//	GET  /demo/snapshot       everything the page shows, as one JSON document
//	GET  /demo/stream         the same snapshot as server-sent events, every second
//	GET  /                    the live page and operator console (embedded; no
//	                          CDN, no build step)
//
// The page's console lists pending, leased and dead-lettered items and acts
// on them through the control plane mounted at /omnirelay/control (Options.Control):
// it sends the control token as a bearer header (asked for once, kept in the
// tab's sessionStorage), never a cookie, and the control plane refuses
// cross-origin POSTs, so another site's page cannot forge an action. The page
// is served with a Content-Security-Policy that allows only its own inline
// script (by hash) and same-origin requests, and forbids framing.
//
// The handler reads its data through Sources, a set of functions, so it can be
// tested without a dispatcher and composed by the demo from the real pieces.
package diagnostics

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

//go:embed page.html
var page []byte

// pageCSP is the page's Content-Security-Policy: its one inline script by
// hash (so an injected one would not run), inline styles, requests to its
// own origin only, no framing (clickjacking the console's buttons).
var pageCSP = func() string {
	start := bytes.Index(page, []byte("<script>"))
	end := bytes.LastIndex(page, []byte("</script>"))
	if start < 0 || end < start || bytes.Count(page, []byte("<script")) != 1 {
		panic("diagnostics: page.html must have exactly one inline <script>") // the embedded file is fixed at build time
	}
	sum := sha256.Sum256(page[start+len("<script>") : end])
	return "default-src 'none'; script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; " +
		"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

// CodeNoEnqueue is the error code of POST /demo/enqueue on a handler built
// without Sources.Enqueue.
const CodeNoEnqueue = "meshdemo.diagnostics.enqueue_unavailable"

// Info describes the node, for the page header.
type Info struct {
	ServiceName   string    `json:"serviceName"`
	Namespace     string    `json:"namespace"`
	RPCURL        string    `json:"rpcUrl"`
	Roles         []string  `json:"roles"`
	Storage       string    `json:"storage"`
	DataDirectory string    `json:"dataDirectory,omitempty"`
	StartedAt     time.Time `json:"startedAt"`
	// ControlProtected says that the control plane's actions need a bearer
	// token, so the page can say so before the first refusal.
	ControlProtected bool `json:"controlProtected,omitempty"`
	// Fairness and MaxActivePerPartition are the queue's leasing rules.
	Fairness              string `json:"fairness,omitempty"`
	MaxActivePerPartition int    `json:"maxActivePerPartition,omitempty"`
}

// Totals are running counts of what happened since the dispatcher started,
// as replication events (so they include expiries nobody asked for).
type Totals struct {
	Enqueued     int64 `json:"enqueued"`
	Leased       int64 `json:"leased"`
	Completed    int64 `json:"completed"`
	Failed       int64 `json:"failed"`
	Expired      int64 `json:"expired"`
	DeadLettered int64 `json:"deadLettered"`
}

// Sources are where the handler reads its data. Every field is optional
// except Stats; an absent source is served as empty.
type Sources struct {
	// Stats returns the queue's counts.
	Stats func(ctx context.Context) (*resourcelease.Stats, error)
	// Enqueue forwards a /demo/enqueue (the demo passes its RPC client).
	Enqueue func(ctx context.Context, req *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error)
	// Peers returns the peer-health payload.
	Peers func() any
	// Backpressure returns the latest signal, and false before the first.
	Backpressure func() (resourcelease.BackpressureSignal, bool)
	// BackpressureHistory returns the recent transitions, oldest first.
	BackpressureHistory func() []resourcelease.BackpressureSignal
	// BackpressureState returns the monitor's current state (watermarks, mode).
	BackpressureState func() any
	// Recent returns the recent replication events, oldest first.
	Recent func() []resourcelease.Event
	// LastSequence returns the newest replication sequence number.
	LastSequence func() int64
	// Sinks returns the replication sinks' delivery status.
	Sinks func() any
	// Totals returns the running counts.
	Totals func() Totals
	// Backlog returns the top partitions by ready items and the oldest
	// ready item's time.
	Backlog func(ctx context.Context) (*resourcelease.Backlog, error)
}

// BacklogPartitions is how many partitions the page lists.
const BacklogPartitions = 10

// Options configures NewHandler.
type Options struct {
	Sources Sources
	Info    Info
	// History feeds the page's chart; nil shows no history.
	History *History
	// Control, when set, is mounted at /omnirelay/control/.
	Control http.Handler
	// Metrics, when set, is mounted at /metrics.
	Metrics http.Handler
	// StreamInterval is how often /demo/stream sends a snapshot. Defaults to 1s.
	StreamInterval time.Duration
	// MaxBodyBytes limits a /demo/enqueue body. Defaults to 1 MiB.
	MaxBodyBytes int64
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

type handler struct {
	o Options
}

// NewHandler returns the diagnostics handler. It fails when Sources.Stats is nil.
func NewHandler(o Options) (http.Handler, error) {
	if o.Sources.Stats == nil {
		return nil, errors.New("diagnostics: Sources.Stats is required")
	}
	if o.StreamInterval <= 0 {
		o.StreamInterval = time.Second
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	h := &handler{o: o}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.page)
	mux.HandleFunc("POST /demo/enqueue", h.enqueue)
	mux.HandleFunc("GET /demo/lease-health", h.leaseHealth)
	mux.HandleFunc("GET /demo/backpressure", h.backpressure)
	mux.HandleFunc("GET /demo/replication", h.replication)
	mux.HandleFunc("GET /demo/snapshot", h.snapshotJSON)
	mux.HandleFunc("GET /demo/stream", h.stream)
	if o.Control != nil {
		mux.Handle(control.DefaultPrefix+"/", o.Control)
	}
	if o.Metrics != nil {
		mux.Handle("GET /metrics", o.Metrics)
	}
	return mux, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (h *handler) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", pageCSP)
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(page)
}

// EnqueueBody is the body of POST /demo/enqueue. Body is any JSON value and is
// stored as its JSON text; it defaults to {"resourceId":"<resourceId>"}.
// PayloadEncoding defaults to application/json. NotBefore or DelayMs delay
// the item, as on the enqueue procedure.
type EnqueueBody struct {
	ResourceType    string            `json:"resourceType"`
	ResourceID      string            `json:"resourceId"`
	PartitionKey    string            `json:"partitionKey"`
	PayloadEncoding string            `json:"payloadEncoding,omitempty"`
	Body            json.RawMessage   `json:"body,omitempty"`
	Attributes      map[string]string `json:"attributes,omitempty"`
	RequestID       string            `json:"requestId,omitempty"`
	NotBefore       time.Time         `json:"notBefore,omitzero"`
	DelayMs         int64             `json:"delayMs,omitempty"`
}

// Item returns the work item the body asks for, with the defaults filled in.
func (b *EnqueueBody) Item() *resourcelease.Item {
	it := &resourcelease.Item{
		ResourceType: b.ResourceType, ResourceID: b.ResourceID, PartitionKey: b.PartitionKey,
		PayloadEncoding: b.PayloadEncoding, Attributes: b.Attributes, RequestID: b.RequestID,
		NotBefore: b.NotBefore,
	}
	if strings.TrimSpace(it.PayloadEncoding) == "" {
		it.PayloadEncoding = "application/json"
	}
	if len(b.Body) == 0 || string(b.Body) == "null" {
		it.Body, _ = json.Marshal(map[string]string{"resourceId": b.ResourceID})
	} else {
		it.Body = []byte(b.Body)
	}
	return it
}

func (h *handler) enqueue(w http.ResponseWriter, r *http.Request) {
	if h.o.Sources.Enqueue == nil {
		transport.WriteError(w, resourcelease.Errorf(resourcelease.StatusUnimplemented, CodeNoEnqueue, "this node has no RPC client to enqueue with"))
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.o.MaxBodyBytes))
	if err != nil {
		transport.WriteError(w, resourcelease.Errorf(resourcelease.StatusResourceExhausted, transport.CodeBodyTooLarge, "request body is larger than %d bytes", h.o.MaxBodyBytes))
		return
	}
	var body EnqueueBody
	if len(strings.TrimSpace(string(raw))) > 0 {
		if err := json.Unmarshal(raw, &body); err != nil {
			transport.WriteError(w, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "request body is not a JSON object: %v", err))
			return
		}
	}
	resp, err := h.o.Sources.Enqueue(r.Context(), &resourcelease.EnqueueRequest{Payload: body.Item(), Delay: time.Duration(body.DelayMs) * time.Millisecond})
	if err != nil {
		transport.WriteError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (h *handler) peers() any {
	if h.o.Sources.Peers == nil {
		return map[string]any{"peers": []any{}, "summary": map[string]int{"eligiblePeers": 0, "unhealthyPeers": 0, "pendingReassignments": 0}}
	}
	return h.o.Sources.Peers()
}

func (h *handler) leaseHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.peers())
}

func (h *handler) backpressure(w http.ResponseWriter, _ *http.Request) {
	if h.o.Sources.Backpressure != nil {
		if s, ok := h.o.Sources.Backpressure(); ok {
			writeJSON(w, http.StatusOK, s)
			return
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) recent() []resourcelease.Event {
	if h.o.Sources.Recent == nil {
		return []resourcelease.Event{}
	}
	ev := h.o.Sources.Recent()
	if ev == nil {
		ev = []resourcelease.Event{}
	}
	return ev
}

func (h *handler) replication(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.recent())
}

// Snapshot is everything the page shows, at one instant.
type Snapshot struct {
	Time         time.Time            `json:"time"`
	Info         Info                 `json:"info"`
	Stats        *resourcelease.Stats `json:"stats"`
	StatsError   string               `json:"statsError,omitempty"`
	Totals       *Totals              `json:"totals,omitempty"`
	Series       []Sample             `json:"series"`
	Peers        any                  `json:"peers"`
	Backpressure BackpressureView     `json:"backpressure"`
	Replication  ReplicationView      `json:"replication"`
	Backlog      *BacklogView         `json:"backlog,omitempty"`
}

// BacklogView is the by-partition part of a Snapshot.
type BacklogView struct {
	resourcelease.Backlog
	// OldestReadyAgeSeconds is how long the oldest ready item has waited
	// (0 when none is ready).
	OldestReadyAgeSeconds float64 `json:"oldestReadyAgeSeconds"`
}

// BackpressureView is the backpressure part of a Snapshot.
type BackpressureView struct {
	State   any                                `json:"state,omitempty"`
	Latest  *resourcelease.BackpressureSignal  `json:"latest"`
	History []resourcelease.BackpressureSignal `json:"history"`
}

// ReplicationView is the replication part of a Snapshot.
type ReplicationView struct {
	LastSequence int64                 `json:"lastSequence"`
	Events       []resourcelease.Event `json:"events"`
	Sinks        any                   `json:"sinks,omitempty"`
}

func (h *handler) snapshot(ctx context.Context) Snapshot {
	s := Snapshot{Time: time.Now().UTC(), Info: h.o.Info, Peers: h.peers(), Series: []Sample{}}
	st, err := h.o.Sources.Stats(ctx)
	if err != nil {
		s.StatsError = err.Error()
	}
	s.Stats = st
	if h.o.Sources.Totals != nil {
		t := h.o.Sources.Totals()
		s.Totals = &t
	}
	if h.o.History != nil {
		s.Series = h.o.History.Samples()
	}
	src := h.o.Sources
	if src.BackpressureState != nil {
		s.Backpressure.State = src.BackpressureState()
	}
	if src.Backpressure != nil {
		if sig, ok := src.Backpressure(); ok {
			s.Backpressure.Latest = &sig
		}
	}
	s.Backpressure.History = []resourcelease.BackpressureSignal{}
	if src.BackpressureHistory != nil {
		if hist := src.BackpressureHistory(); hist != nil {
			s.Backpressure.History = hist
		}
	}
	s.Replication.Events = h.recent()
	if src.LastSequence != nil {
		s.Replication.LastSequence = src.LastSequence()
	}
	if src.Sinks != nil {
		s.Replication.Sinks = src.Sinks()
	}
	if src.Backlog != nil {
		if b, err := src.Backlog(ctx); err == nil && b != nil {
			v := &BacklogView{Backlog: *b}
			if !b.OldestReadySince.IsZero() {
				v.OldestReadyAgeSeconds = max(s.Time.Sub(b.OldestReadySince).Seconds(), 0)
			}
			s.Backlog = v
		}
	}
	return s
}

func (h *handler) snapshotJSON(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.snapshot(r.Context()))
}

// stream sends a snapshot as a server-sent event every StreamInterval until
// the client goes away or the server shuts down (the request context ends).
func (h *handler) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	t := time.NewTicker(h.o.StreamInterval)
	defer t.Stop()
	for {
		b, err := json.Marshal(h.snapshot(r.Context()))
		if err != nil {
			h.o.Logger.Error("diagnostics: encoding snapshot", "err", err)
			return
		}
		if _, err := fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b); err != nil {
			return
		}
		fl.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-t.C:
		}
	}
}

// Sample is one point of the page's chart.
type Sample struct {
	// T is the sample time in Unix milliseconds.
	T            int64 `json:"t"`
	Pending      int   `json:"pending"`
	Active       int   `json:"active"`
	DeadLettered int   `json:"deadLettered"`
}

// History is a bounded ring of samples of the queue's counts, for the chart.
// It is safe for concurrent use.
type History struct {
	mu      sync.Mutex
	samples []Sample
	next    int
	full    bool
}

// NewHistory returns a History keeping the newest n samples (n >= 1).
func NewHistory(n int) *History {
	if n < 1 {
		n = 1
	}
	return &History{samples: make([]Sample, n)}
}

// Add records a sample.
func (h *History) Add(s Sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples[h.next] = s
	h.next = (h.next + 1) % len(h.samples)
	if h.next == 0 {
		h.full = true
	}
}

// Samples returns the samples, oldest first.
func (h *History) Samples() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		return slices.Clone(h.samples[:h.next])
	}
	return slices.Concat(h.samples[h.next:], h.samples[:h.next])
}

// Sample records the counts of stats at time at.
func (h *History) Sample(at time.Time, st resourcelease.Stats) {
	h.Add(Sample{T: at.UnixMilli(), Pending: st.PendingCount, Active: st.ActiveLeaseCount, DeadLettered: st.DeadLetterCount})
}

// Run samples stats every interval until ctx ends.
func (h *History) Run(ctx context.Context, interval time.Duration, stats func(ctx context.Context) (*resourcelease.Stats, error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if st, err := stats(ctx); err == nil && st != nil {
			h.Sample(time.Now(), *st)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
