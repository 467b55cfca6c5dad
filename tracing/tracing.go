// Package tracing follows one piece of work through leasemesh with
// OpenTelemetry: the producer's call, the dispatcher's handling of it, and
// the worker's processing of the item, as one trace.
//
//   - Middleware wraps the RPC handler: a server span per call, named after
//     the procedure, continuing the caller's W3C trace context (traceparent
//     header).
//   - Transport wraps a client's http.RoundTripper: a client span per call,
//     whose context goes out in the traceparent header.
//   - Dispatcher wraps a resourcelease.Dispatcher: an enqueue stores the
//     current trace context with the item, in its attributes "traceparent"
//     and "tracestate" (W3C names), so it survives storage, restarts and
//     every hop of the mesh.
//   - Work wraps a worker's handler: each delivery gets a consumer span whose
//     parent is the trace context stored at enqueue, so producer →
//     dispatcher → worker is one trace; the worker's own context (its lease
//     call) is added as a link.
//
// Why a parent and not only a link: a work item is produced once and
// processed (perhaps several times) as part of the same request, and an
// operator looking at the producer's trace wants to see the processing in
// it. Each attempt is its own child span, with its attempt number, so
// retries show up as siblings. The worker's lease-poll context is only a
// link because one long-poll may return work of many unrelated traces.
//
// Nothing is traced unless a TracerProvider is given: with a nil provider
// every wrapper returns what it was given, unchanged, and costs nothing.
package tracing

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// ScopeName is the instrumentation scope of leasemesh's spans.
const ScopeName = "github.com/leasemesh/leasemesh/tracing"

// Attribute keys under which an item carries the trace context of its
// enqueue: W3C Trace Context's header names.
const (
	AttributeTraceParent = "traceparent"
	AttributeTraceState  = "tracestate"
)

// rpcSystem is the rpc.system attribute of leasemesh's calls: its protocol is
// yarpc's HTTP transport.
const rpcSystem = "yarpc"

// Config says where spans go. The zero value traces nothing.
type Config struct {
	// TracerProvider creates the tracer. Nil means no tracing at all.
	TracerProvider trace.TracerProvider
	// Propagator carries trace context in headers and item attributes.
	// Defaults to W3C Trace Context with baggage.
	Propagator propagation.TextMapPropagator
}

func (c Config) enabled() bool { return c.TracerProvider != nil }

func (c Config) tracer() trace.Tracer {
	return c.TracerProvider.Tracer(ScopeName, trace.WithSchemaURL(semconv.SchemaURL))
}

func (c Config) propagator() propagation.TextMapPropagator {
	if c.Propagator != nil {
		return c.Propagator
	}
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// procedureParts splits "<namespace>::<verb>".
func procedureParts(proc string) (ns, verb string) {
	if i := strings.LastIndex(proc, "::"); i >= 0 {
		return proc[:i], proc[i+2:]
	}
	return "", proc
}

// spanName is "<namespace>/<verb>", the rpc convention's "{service}/{method}"
// with the procedure's own namespace.
func spanName(proc string) string {
	if proc == "" {
		return "yarpc"
	}
	ns, verb := procedureParts(proc)
	if ns == "" {
		return verb
	}
	return ns + "/" + verb
}

// Middleware returns middleware that traces each call of the handler it
// wraps (give it to transport.HandlerConfig.Middleware, or wrap the handler).
// With tracing off it returns next unchanged.
func Middleware(cfg Config) func(http.Handler) http.Handler {
	if !cfg.enabled() {
		return func(next http.Handler) http.Handler { return next }
	}
	tracer, prop := cfg.tracer(), cfg.propagator()
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
			proc := r.Header.Get("Rpc-Procedure")
			_, verb := procedureParts(proc)
			ctx, span := tracer.Start(ctx, spanName(proc), trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
				semconv.HTTPRequestMethodKey.String(r.Method),
				semconv.URLPath(r.URL.Path),
				semconv.RPCSystemKey.String(rpcSystem),
				semconv.RPCService(r.Header.Get("Rpc-Service")),
				semconv.RPCMethod(verb),
			))
			defer span.End()
			rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			next.ServeHTTP(rec, r.WithContext(ctx))
			span.SetAttributes(semconv.HTTPResponseStatusCode(rec.status))
			if rec.status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(rec.status))
			}
			if st := rec.Header().Get("Rpc-Status"); st != "" && rec.status >= 400 {
				span.SetAttributes(semconv.ErrorTypeKey.String(st))
			}
		})
	}
}

// statusRecorder remembers the response status for the span.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Flush lets a handler behind the middleware stream (server-sent events, a
// long-poll's early headers) with a plain http.Flusher assertion.
func (r *statusRecorder) Flush() {
	r.wrote = true
	_ = http.NewResponseController(r.ResponseWriter).Flush()
}

// Transport returns a RoundTripper that traces each call made through base
// (http.DefaultTransport when nil) and sends the span's context in the
// request's headers. Use it as the Transport of the *http.Client given to
// transport.ClientConfig.HTTPClient. With tracing off it returns base.
func Transport(cfg Config, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if !cfg.enabled() {
		return base
	}
	return &roundTripper{base: base, tracer: cfg.tracer(), prop: cfg.propagator()}
}

type roundTripper struct {
	base   http.RoundTripper
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

func (t *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	proc := req.Header.Get("Rpc-Procedure")
	_, verb := procedureParts(proc)
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(req.Method),
		semconv.URLFull(req.URL.Redacted()),
		semconv.ServerAddress(req.URL.Hostname()),
		semconv.RPCSystemKey.String(rpcSystem),
		semconv.RPCService(req.Header.Get("Rpc-Service")),
		semconv.RPCMethod(verb),
	}
	if p, err := strconv.Atoi(req.URL.Port()); err == nil {
		attrs = append(attrs, semconv.ServerPort(p))
	}
	ctx, span := t.tracer.Start(req.Context(), spanName(proc), trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	defer span.End()
	req = req.Clone(ctx) // a RoundTripper must not modify the caller's request
	t.prop.Inject(ctx, propagation.HeaderCarrier(req.Header))
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return resp, err
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(resp.StatusCode))
	if resp.StatusCode >= 400 {
		span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
		if st := resp.Header.Get("Rpc-Status"); st != "" {
			span.SetAttributes(semconv.ErrorTypeKey.String(st))
		}
	}
	return resp, nil
}

// attributeCarrier is a TextMapCarrier over an item's attributes, holding
// only the trace keys the propagator asks for.
type attributeCarrier map[string]string

func (c attributeCarrier) Get(key string) string { return c[key] }
func (c attributeCarrier) Set(key, value string) { c[key] = value }
func (c attributeCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject returns item with the trace context of ctx stored in its
// attributes (a copy; the caller's map is not changed). With tracing off, or
// no span in ctx, item is returned as is.
func Inject(ctx context.Context, cfg Config, item resourcelease.Item) resourcelease.Item {
	if !cfg.enabled() || !trace.SpanContextFromContext(ctx).IsValid() {
		return item
	}
	carrier := attributeCarrier{}
	itemPropagator.Inject(ctx, carrier)
	if len(carrier) == 0 {
		return item
	}
	attrs := make(map[string]string, len(item.Attributes)+len(carrier))
	for k, v := range item.Attributes {
		attrs[k] = v
	}
	for k, v := range carrier {
		attrs[k] = v
	}
	item.Attributes = attrs
	return item
}

// Extract returns ctx with the trace context stored in item's attributes.
func Extract(ctx context.Context, cfg Config, item resourcelease.Item) context.Context {
	return itemPropagator.Extract(ctx, attributeCarrier(item.Attributes))
}

// itemPropagator is what an item carries: W3C trace context only. Baggage
// stays on the wire: it is the producer's to send, and storing it would put
// whatever a client sends (up to kilobytes) into every item and overwrite a
// user's own "baggage" attribute.
var itemPropagator propagation.TextMapPropagator = propagation.TraceContext{}

// Dispatcher returns d with Enqueue and EnqueueBatch storing the caller's
// trace context with each item. Wrap the dispatcher the RPC handler serves
// (the trace context then comes from the producer's request) or a
// producer's client. The result is a resourcelease.BatchDispatcher: d's own
// batch methods when it has them, per-item calls otherwise. With tracing off
// it returns d.
func Dispatcher(d resourcelease.Dispatcher, cfg Config) resourcelease.Dispatcher {
	if !cfg.enabled() {
		return d
	}
	return &tracingDispatcher{BatchDispatcher: resourcelease.PerItem(d), cfg: cfg}
}

type tracingDispatcher struct {
	resourcelease.BatchDispatcher
	cfg Config
}

func (t *tracingDispatcher) EnqueueBatch(ctx context.Context, req *resourcelease.EnqueueBatchRequest) (*resourcelease.EnqueueBatchResponse, error) {
	if req != nil && len(req.Payloads) > 0 && trace.SpanContextFromContext(ctx).IsValid() {
		items := make([]resourcelease.Item, len(req.Payloads))
		for i, it := range req.Payloads {
			items[i] = Inject(ctx, t.cfg, it)
		}
		r := *req // keep the rest of the request (its delay)
		r.Payloads = items
		req = &r
	}
	return t.BatchDispatcher.EnqueueBatch(ctx, req)
}

func (t *tracingDispatcher) Enqueue(ctx context.Context, req *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
	if req != nil && req.Payload != nil {
		item := Inject(ctx, t.cfg, *req.Payload)
		r := *req // keep the rest of the request (its delay)
		r.Payload = &item
		req = &r
	}
	return t.BatchDispatcher.Enqueue(ctx, req)
}

// Work wraps a worker's handler: each lease runs in a consumer span whose
// parent is the trace context stored with the item at enqueue (see the
// package doc), linked to the worker's own context. The handler's error is
// recorded on the span. With tracing off it returns h.
func Work(cfg Config, h func(context.Context, *resourcelease.Lease) error) func(context.Context, *resourcelease.Lease) error {
	if !cfg.enabled() {
		return h
	}
	tracer := cfg.tracer()
	return func(ctx context.Context, l *resourcelease.Lease) error {
		opts := []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(
				semconv.MessagingSystemKey.String("leasemesh"),
				semconv.MessagingOperationTypeKey.String("process"),
				semconv.MessagingOperationName("process"),
				semconv.MessagingDestinationName(l.Payload.ResourceType),
				semconv.MessagingMessageID(strconv.FormatInt(l.SequenceID, 10)),
				attribute.Int("leasemesh.attempt", l.Attempt),
				attribute.String("leasemesh.resource_id", l.Payload.ResourceID),
				attribute.String("leasemesh.partition_key", l.Payload.PartitionKey),
			),
		}
		if own := trace.SpanContextFromContext(ctx); own.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: own}))
		}
		parent := Extract(ctx, cfg, l.Payload)
		if !trace.SpanContextFromContext(parent).IsValid() {
			parent = ctx
		}
		// parent derives from ctx, so the handler keeps ctx's cancellation
		// and its cause (lease lost, Run ended).
		spanCtx, span := tracer.Start(parent, "process "+l.Payload.ResourceType, opts...)
		defer span.End()
		err := h(spanCtx, l)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		return err
	}
}
