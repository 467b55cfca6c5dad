package tracing_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/tracing"
	"github.com/leasemesh/leasemesh/transport"
	"github.com/leasemesh/leasemesh/worker"
)

var quiet = slog.New(slog.DiscardHandler)

// mesh is a dispatcher served over HTTP with tracing on, and clients of it
// whose calls are traced.
type mesh struct {
	cfg      tracing.Config
	recorder *tracetest.SpanRecorder
	producer *transport.Client
	workerC  *transport.Client
	local    *resourcelease.LocalDispatcher
}

func newMesh(t *testing.T) *mesh {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	cfg := tracing.Config{TracerProvider: tp}

	local, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Logger: quiet})
	require.NoError(t, err)
	t.Cleanup(func() { _ = local.Close() })
	h, err := transport.NewHandler(tracing.Dispatcher(local, cfg), transport.HandlerConfig{
		Service: "orders", Logger: quiet, Middleware: []func(http.Handler) http.Handler{tracing.Middleware(cfg)}})
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	client := func() *transport.Client {
		c, err := transport.NewClient(srv.URL, transport.ClientConfig{Service: "orders",
			HTTPClient: &http.Client{Transport: tracing.Transport(cfg, nil)}})
		require.NoError(t, err)
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	return &mesh{cfg: cfg, recorder: rec, producer: client(), workerC: client(), local: local}
}

func (m *mesh) span(t *testing.T, name string, kind ...trace.SpanKind) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range m.recorder.Ended() {
		if s.Name() == name && (len(kind) == 0 || s.SpanKind() == kind[0]) {
			return s
		}
	}
	var names []string
	for _, s := range m.recorder.Ended() {
		names = append(names, s.Name())
	}
	t.Fatalf("no span %q among %v", name, names)
	return nil
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// One trace runs producer → dispatcher → worker: the worker's process span
// is a child of the dispatcher's enqueue span, in the producer's trace.
func TestOneTraceFromProducerToWorker(t *testing.T) {
	m := newMesh(t)
	ctx, root := m.cfg.TracerProvider.Tracer("test").Start(context.Background(), "place order")
	_, err := resourcelease.Enqueue(ctx, m.producer, resourcelease.Item{ResourceType: "order", ResourceID: "o-1", PartitionKey: "t1"}, map[string]int{"total": 42})
	require.NoError(t, err)
	root.End()

	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	var handlerSpan trace.SpanContext
	w, err := worker.New(m.workerC, worker.Config{Logger: quiet, LeaseWait: time.Second,
		Handler: tracing.Work(m.cfg, func(ctx context.Context, l *resourcelease.Lease) error {
			handlerSpan = trace.SpanContextFromContext(ctx)
			stop()
			return nil
		})})
	require.NoError(t, err)
	require.NoError(t, w.Run(runCtx))

	enqueueClient := m.span(t, "resourcelease/enqueue", trace.SpanKindClient)
	enqueueServer := m.span(t, "resourcelease/enqueue", trace.SpanKindServer)
	process := m.span(t, "process order")

	traceID := root.SpanContext().TraceID()
	require.Equal(t, traceID, enqueueClient.SpanContext().TraceID())
	require.Equal(t, enqueueClient.SpanContext().SpanID(), enqueueServer.Parent().SpanID(), "the server continues the client's span")
	require.Equal(t, traceID, process.SpanContext().TraceID(), "the worker's span is in the producer's trace")
	require.Equal(t, enqueueServer.SpanContext().SpanID(), process.Parent().SpanID(), "parent: the enqueue as the dispatcher handled it")
	require.Equal(t, process.SpanContext(), handlerSpan, "the handler runs in the process span")
	require.Equal(t, trace.SpanKindConsumer, process.SpanKind())
	require.Equal(t, int64(1), attr(process, "leasemesh.attempt").AsInt64())
	require.Equal(t, "order", attr(process, "messaging.destination.name").AsString())
	require.Equal(t, "enqueue", attr(enqueueServer, "rpc.method").AsString())
	require.Equal(t, int64(200), attr(enqueueServer, "http.response.status_code").AsInt64())

	// The lease call of the worker is traced too, in its own trace.
	lease := m.span(t, "resourcelease/lease", trace.SpanKindClient)
	require.NotEqual(t, traceID, lease.SpanContext().TraceID())
}

func TestErrorsAreRecorded(t *testing.T) {
	m := newMesh(t)
	err := m.producer.Complete(context.Background(), &resourcelease.CompleteRequest{OwnershipToken: resourcelease.OwnershipToken{SequenceID: 9, Attempt: 1}})
	require.Error(t, err)
	s := m.span(t, "resourcelease/complete", trace.SpanKindClient)
	require.Equal(t, int64(404), attr(s, "http.response.status_code").AsInt64())
	require.Equal(t, "not-found", attr(s, "error.type").AsString())

	h := tracing.Work(m.cfg, func(context.Context, *resourcelease.Lease) error { return context.DeadlineExceeded })
	require.ErrorIs(t, h(context.Background(), &resourcelease.Lease{Payload: resourcelease.Item{ResourceType: "x"}}), context.DeadlineExceeded)
	p := m.span(t, "process x")
	require.Equal(t, "Error", p.Status().Code.String())
}

func TestInjectExtractRoundTrip(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	cfg := tracing.Config{TracerProvider: tp}
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	orig := resourcelease.Item{ResourceType: "t", Attributes: map[string]string{"tenant": "a"}}
	item := tracing.Inject(ctx, cfg, orig)
	require.Equal(t, "a", item.Attributes["tenant"])
	require.NotEmpty(t, item.Attributes[tracing.AttributeTraceParent])
	require.Len(t, orig.Attributes, 1, "the caller's map is not changed")
	got := trace.SpanContextFromContext(tracing.Extract(context.Background(), cfg, item))
	require.Equal(t, span.SpanContext().TraceID(), got.TraceID())
	require.Equal(t, span.SpanContext().SpanID(), got.SpanID())

	require.Equal(t, orig, tracing.Inject(context.Background(), cfg, orig), "no span: nothing stored")
}

// Nothing is traced unless a TracerProvider is given: every wrapper returns
// what it was given.
func TestOffUnlessConfigured(t *testing.T) {
	var off tracing.Config
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Logger: quiet})
	require.NoError(t, err)
	defer d.Close()
	require.Same(t, d, tracing.Dispatcher(d, off).(*resourcelease.LocalDispatcher))
	base := &http.Transport{}
	require.Same(t, base, tracing.Transport(off, base).(*http.Transport))
	h := http.NewServeMux()
	require.Same(t, h, tracing.Middleware(off)(h).(*http.ServeMux))
	item := resourcelease.Item{ResourceType: "t"}
	require.Equal(t, item, tracing.Inject(context.Background(), off, item))
}

// A batch enqueue stores each item's trace context too, and the handler keeps
// serving batches in one call.
func TestEnqueueBatchCarriesTraceContext(t *testing.T) {
	m := newMesh(t)
	ctx, root := m.cfg.TracerProvider.Tracer("test").Start(context.Background(), "import")
	resp, err := m.producer.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{
		{ResourceType: "order", ResourceID: "o-1", PartitionKey: "t", PayloadEncoding: "application/json"},
		{ResourceType: "order", ResourceID: "o-2", PartitionKey: "t", PayloadEncoding: "application/json"},
	}})
	root.End()
	require.NoError(t, err)
	require.Len(t, resp.Results, 2)
	leases, err := m.local.LeaseBatch(context.Background(), &resourcelease.LeaseBatchRequest{PeerID: "w", MaxItems: 2})
	require.NoError(t, err)
	require.Len(t, leases, 2)
	for _, l := range leases {
		got := trace.SpanContextFromContext(tracing.Extract(context.Background(), m.cfg, l.Payload))
		require.Equal(t, root.SpanContext().TraceID(), got.TraceID(), l.Payload.ResourceID)
	}
	m.span(t, "resourcelease/enqueueBatch", trace.SpanKindServer)
}

// An item carries the trace context and nothing else: baggage in the
// producer's context is not stored with it.
func TestInjectStoresNoBaggage(t *testing.T) {
	tp := sdktrace.NewTracerProvider()
	cfg := tracing.Config{TracerProvider: tp}
	m, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	b, err := baggage.New(m)
	require.NoError(t, err)
	ctx, span := tp.Tracer("t").Start(baggage.ContextWithBaggage(context.Background(), b), "s")
	defer span.End()
	item := tracing.Inject(ctx, cfg, resourcelease.Item{Attributes: map[string]string{"baggage": "mine"}})
	require.Equal(t, "mine", item.Attributes["baggage"], "a user's attribute is kept")
	require.NotEmpty(t, item.Attributes[tracing.AttributeTraceParent])
	require.Len(t, item.Attributes, 2)
}

// The middleware keeps http.Flusher working for what it wraps.
func TestMiddlewareKeepsFlusher(t *testing.T) {
	cfg := tracing.Config{TracerProvider: sdktrace.NewTracerProvider()}
	h := tracing.Middleware(cfg)(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		f, ok := w.(http.Flusher)
		require.True(t, ok, "the middleware's writer is an http.Flusher")
		_, _ = w.Write([]byte("event\n"))
		f.Flush()
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	require.True(t, rec.Flushed)
}

// TestTracedEnqueueKeepsTheDelay: the traced dispatcher injects the trace
// context into the payload without dropping the rest of the request.
func TestTracedEnqueueKeepsTheDelay(t *testing.T) {
	m := newMesh(t)
	ctx, root := m.cfg.TracerProvider.Tracer("test").Start(context.Background(), "schedule")
	defer root.End()
	it := resourcelease.Item{ResourceType: "order", ResourceID: "o-1", PartitionKey: "t", PayloadEncoding: "application/json"}
	resp, err := m.producer.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &it, Delay: time.Hour})
	require.NoError(t, err)
	require.False(t, resp.NotBefore.IsZero(), "the delay reached the queue")
	br, err := m.producer.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{it}, Delay: time.Hour})
	require.NoError(t, err)
	require.NoError(t, br.Results[0].Err)
	require.False(t, br.Results[0].NotBefore.IsZero(), "the batch delay reached the queue")
	st, err := m.local.Stats(context.Background(), nil)
	require.NoError(t, err)
	require.Equal(t, 2, st.DelayedCount)
}
