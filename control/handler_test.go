package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// controlFakeDispatcher is a resourcelease.Dispatcher made of func fields;
// a method whose field is nil fails the test that calls it.
type controlFakeDispatcher struct {
	t           *testing.T
	stats       func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error)
	drain       func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error)
	restore     func(context.Context, *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error)
	deadLetters func(context.Context, *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error)
	redrive     func(context.Context, *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error)
	purge       func(context.Context, *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error)
	listItems   func(context.Context, *resourcelease.ListItemsRequest) (*resourcelease.ListItemsResponse, error)
	item        func(context.Context, int64) (*resourcelease.ItemInfo, error)
	pause       func(context.Context) error
	resume      func(context.Context) error
}

func (f *controlFakeDispatcher) unexpected(name string) error {
	f.t.Errorf("unexpected Dispatcher.%s call", name)
	return errors.New("unexpected call")
}

func (f *controlFakeDispatcher) Enqueue(context.Context, *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
	return nil, f.unexpected("Enqueue")
}

func (f *controlFakeDispatcher) Lease(context.Context, *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
	return nil, f.unexpected("Lease")
}

func (f *controlFakeDispatcher) Heartbeat(context.Context, *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
	return nil, f.unexpected("Heartbeat")
}

func (f *controlFakeDispatcher) Complete(context.Context, *resourcelease.CompleteRequest) error {
	return f.unexpected("Complete")
}

func (f *controlFakeDispatcher) Fail(context.Context, *resourcelease.FailRequest) error {
	return f.unexpected("Fail")
}

func (f *controlFakeDispatcher) Release(context.Context, *resourcelease.ReleaseRequest) error {
	return f.unexpected("Release")
}

func (f *controlFakeDispatcher) Drain(ctx context.Context, r *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
	if f.drain == nil {
		return nil, f.unexpected("Drain")
	}
	return f.drain(ctx, r)
}

func (f *controlFakeDispatcher) Restore(ctx context.Context, r *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
	if f.restore == nil {
		return nil, f.unexpected("Restore")
	}
	return f.restore(ctx, r)
}

func (f *controlFakeDispatcher) Stats(ctx context.Context, r *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
	if f.stats == nil {
		return nil, f.unexpected("Stats")
	}
	return f.stats(ctx, r)
}

func (f *controlFakeDispatcher) DeadLetters(ctx context.Context, r *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
	if f.deadLetters == nil {
		return nil, f.unexpected("DeadLetters")
	}
	return f.deadLetters(ctx, r)
}

func (f *controlFakeDispatcher) Redrive(ctx context.Context, r *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
	if f.redrive == nil {
		return nil, f.unexpected("Redrive")
	}
	return f.redrive(ctx, r)
}

func (f *controlFakeDispatcher) Purge(ctx context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
	if f.purge == nil {
		return nil, f.unexpected("Purge")
	}
	return f.purge(ctx, r)
}

func (f *controlFakeDispatcher) ListItems(ctx context.Context, r *resourcelease.ListItemsRequest) (*resourcelease.ListItemsResponse, error) {
	if f.listItems == nil {
		return nil, f.unexpected("ListItems")
	}
	return f.listItems(ctx, r)
}

func (f *controlFakeDispatcher) Item(ctx context.Context, seq int64) (*resourcelease.ItemInfo, error) {
	if f.item == nil {
		return nil, f.unexpected("Item")
	}
	return f.item(ctx, seq)
}

func (f *controlFakeDispatcher) Pause(ctx context.Context) error {
	if f.pause == nil {
		return f.unexpected("Pause")
	}
	return f.pause(ctx)
}

func (f *controlFakeDispatcher) Resume(ctx context.Context) error {
	if f.resume == nil {
		return f.unexpected("Resume")
	}
	return f.resume(ctx)
}

var (
	_ resourcelease.Dispatcher = (*controlFakeDispatcher)(nil)
	_ control.ItemReader       = (*controlFakeDispatcher)(nil)
	_ control.LeasingPauser    = (*controlFakeDispatcher)(nil)
)

// controlFakeEvents is an EventReader over a slice; with last set it also
// reports LastSequence.
type controlFakeEvents struct {
	mu     sync.Mutex
	events []resourcelease.Event
	err    error
	after  int64
	limit  int
}

func (f *controlFakeEvents) ReadEvents(_ context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.after, f.limit = after, limit
	if f.err != nil {
		return nil, f.err
	}
	var out []resourcelease.Event
	for _, e := range f.events {
		if e.SequenceNumber > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *controlFakeEvents) args() (int64, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.after, f.limit
}

type controlFakeLog struct {
	controlFakeEvents
	last int64
}

func (f *controlFakeLog) LastSequence() int64 { return f.last }

var controlQuietLogger = slog.New(slog.DiscardHandler)

// controlDo sends one request to h and returns the recorded response.
func controlDo(t *testing.T, h http.Handler, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// controlWireError checks that rec is a wire error with the given HTTP
// status, wire status and code, and returns its message.
func controlWireError(t *testing.T, rec *httptest.ResponseRecorder, httpStatus int, status resourcelease.Status, code string) string {
	t.Helper()
	require.Equal(t, httpStatus, rec.Code, "HTTP status; body %s", rec.Body)
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	assert.Equal(t, string(status), rec.Header().Get(transport.HeaderStatus))
	assert.Equal(t, string(status), rec.Header().Get(transport.HeaderErrorCode))
	assert.Equal(t, code, rec.Header().Get(transport.HeaderErrorName))
	var body struct {
		Message  *string           `json:"message"`
		Status   string            `json:"status"`
		Code     string            `json:"code"`
		Metadata map[string]string `json:"metadata"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), "body %s", rec.Body)
	require.NotNil(t, body.Message, "message missing from %s", rec.Body)
	assert.Equal(t, string(status), body.Status)
	assert.Equal(t, code, body.Code)
	assert.NotNil(t, body.Metadata, "metadata must be an object")
	assert.Equal(t, *body.Message, rec.Header().Get(transport.HeaderErrorMessage))
	assert.NotContains(t, rec.Body.String(), "goroutine ", "stack trace on the wire")
	return *body.Message
}

func TestControlRouting(t *testing.T) {
	t.Parallel()
	d := &controlFakeDispatcher{t: t,
		stats: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
			return &resourcelease.Stats{}, nil
		},
		deadLetters: func(context.Context, *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
			return &resourcelease.DeadLettersResponse{}, nil
		},
	}
	h := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Logger: controlQuietLogger})
	tests := []struct {
		method, path string
		wantHTTP     int
		wantAllow    string
		wantCode     string
	}{
		{http.MethodGet, "/omnirelay/control/stats", 200, "", ""},
		{http.MethodHead, "/omnirelay/control/stats", 200, "", ""},
		{http.MethodGet, "/omnirelay/control/deadletters", 200, "", ""},
		{http.MethodPost, "/omnirelay/control/stats", 405, "GET, HEAD", transport.CodeMethodNotAllowed},
		{http.MethodPost, "/omnirelay/control/peers", 405, "GET, HEAD", transport.CodeMethodNotAllowed},
		{http.MethodPost, "/omnirelay/control/backpressure", 405, "GET, HEAD", transport.CodeMethodNotAllowed},
		{http.MethodPost, "/omnirelay/control/replication", 405, "GET, HEAD", transport.CodeMethodNotAllowed},
		{http.MethodGet, "/omnirelay/control/drain", 405, "POST", transport.CodeMethodNotAllowed},
		{http.MethodGet, "/omnirelay/control/restore", 405, "POST", transport.CodeMethodNotAllowed},
		{http.MethodGet, "/omnirelay/control/deadletters/redrive", 405, "POST", transport.CodeMethodNotAllowed},
		{http.MethodGet, "/omnirelay/control/deadletters/purge", 405, "POST", transport.CodeMethodNotAllowed},
		{http.MethodDelete, "/omnirelay/control/deadletters", 405, "GET, HEAD, POST", transport.CodeMethodNotAllowed},
		{http.MethodPut, "/omnirelay/control/drain", 405, "POST", transport.CodeMethodNotAllowed},
		{http.MethodGet, "/omnirelay/control/nope", 404, "", control.CodeUnknownEndpoint},
		{http.MethodGet, "/omnirelay/control/stats/", 404, "", control.CodeUnknownEndpoint},
		{http.MethodGet, "/omnirelay/control", 404, "", control.CodeUnknownEndpoint},
		{http.MethodGet, "/omnirelay/controlstats", 404, "", control.CodeUnknownEndpoint},
		{http.MethodGet, "/stats", 404, "", control.CodeUnknownEndpoint},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			t.Parallel()
			rec := controlDo(t, h, tt.method, tt.path, "")
			switch {
			case tt.wantHTTP == 200:
				assert.Equal(t, 200, rec.Code, "body %s", rec.Body)
			case tt.wantHTTP == 405:
				controlWireError(t, rec, 405, resourcelease.StatusInvalidArgument, tt.wantCode)
				assert.Equal(t, tt.wantAllow, rec.Header().Get("Allow"))
			default:
				controlWireError(t, rec, tt.wantHTTP, resourcelease.StatusNotFound, tt.wantCode)
			}
		})
	}
}

func TestControlPrefix(t *testing.T) {
	t.Parallel()
	d := &controlFakeDispatcher{t: t, stats: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
		return &resourcelease.Stats{PendingCount: 7}, nil
	}}
	tests := []struct {
		prefix, path string
		want         int
	}{
		{"", "/omnirelay/control/stats", 200},
		{"/ops", "/ops/stats", 200},
		{"/ops/", "/ops/stats", 200},
		{"ops", "/ops/stats", 200},
		{"/ops", "/omnirelay/control/stats", 404},
		{"/", "/stats", 200},
	}
	for _, tt := range tests {
		t.Run(tt.prefix+tt.path, func(t *testing.T) {
			t.Parallel()
			h := newControlHandler(t, control.HandlerConfig{Prefix: tt.prefix, Dispatcher: d, Logger: controlQuietLogger})
			rec := controlDo(t, h, http.MethodGet, tt.path, "")
			require.Equal(t, tt.want, rec.Code, "body %s", rec.Body)
			if tt.want == 200 {
				assert.JSONEq(t, `{"pendingCount":7,"activeLeaseCount":0,"deadLetterCount":0,"backpressureActive":false}`, rec.Body.String())
			}
		})
	}
}

func TestControlNotConfigured(t *testing.T) {
	t.Parallel()
	h := newControlHandler(t, control.HandlerConfig{Logger: controlQuietLogger})
	for _, tt := range []struct{ method, path string }{
		{http.MethodGet, "/omnirelay/control/peers"},
		{http.MethodGet, "/omnirelay/control/backpressure"},
		{http.MethodGet, "/omnirelay/control/replication"},
		{http.MethodGet, "/omnirelay/control/stats"},
		{http.MethodPost, "/omnirelay/control/drain"},
		{http.MethodPost, "/omnirelay/control/restore"},
		{http.MethodGet, "/omnirelay/control/deadletters"},
		{http.MethodPost, "/omnirelay/control/deadletters"},
		{http.MethodPost, "/omnirelay/control/deadletters/redrive"},
		{http.MethodPost, "/omnirelay/control/deadletters/purge"},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := controlDo(t, h, tt.method, tt.path, "")
			controlWireError(t, rec, http.StatusNotImplemented, resourcelease.StatusUnimplemented, control.CodeNotConfigured)
		})
	}
}

func TestControlPeers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		peers      func(context.Context) (any, error)
		wantHTTP   int
		wantBody   string
		wantStatus resourcelease.Status
		wantCode   string
	}{
		{
			name: "value",
			peers: func(context.Context) (any, error) {
				return map[string]any{"peers": []any{map[string]any{"peerId": "w1", "isHealthy": true}}, "summary": map[string]int{"eligiblePeers": 1}}, nil
			},
			wantHTTP: 200,
			wantBody: `{"peers":[{"peerId":"w1","isHealthy":true}],"summary":{"eligiblePeers":1}}`,
		},
		{
			name:       "wire error",
			peers:      func(context.Context) (any, error) { return nil, resourcelease.ErrStorageUnavailable },
			wantHTTP:   503,
			wantStatus: resourcelease.StatusUnavailable,
			wantCode:   resourcelease.CodeStorageUnavailable,
		},
		{
			name:       "foreign error is internal without its text",
			peers:      func(context.Context) (any, error) { return nil, errors.New("secret path /var/db") },
			wantHTTP:   500,
			wantStatus: resourcelease.StatusInternal,
			wantCode:   resourcelease.CodeInternal,
		},
		{
			name:       "unencodable value is internal",
			peers:      func(context.Context) (any, error) { return func() {}, nil },
			wantHTTP:   500,
			wantStatus: resourcelease.StatusInternal,
			wantCode:   resourcelease.CodeInternal,
		},
		{
			name:       "panic is internal",
			peers:      func(context.Context) (any, error) { panic("boom") },
			wantHTTP:   500,
			wantStatus: resourcelease.StatusInternal,
			wantCode:   resourcelease.CodeInternal,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newControlHandler(t, control.HandlerConfig{Peers: tt.peers, Logger: controlQuietLogger})
			rec := controlDo(t, h, http.MethodGet, "/omnirelay/control/peers", "")
			if tt.wantHTTP == 200 {
				require.Equal(t, 200, rec.Code)
				assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
				assert.JSONEq(t, tt.wantBody, rec.Body.String())
				return
			}
			msg := controlWireError(t, rec, tt.wantHTTP, tt.wantStatus, tt.wantCode)
			assert.NotContains(t, msg, "secret")
			assert.NotContains(t, msg, "boom")
		})
	}
}

func TestControlBackpressure(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	var (
		mu     sync.Mutex
		signal *resourcelease.BackpressureSignal
	)
	h := newControlHandler(t, control.HandlerConfig{Logger: controlQuietLogger, Backpressure: func() (any, bool) {
		mu.Lock()
		defer mu.Unlock()
		if signal == nil {
			return nil, false
		}
		return signal, true
	}})

	rec := controlDo(t, h, http.MethodGet, "/omnirelay/control/backpressure", "")
	assert.Equal(t, http.StatusNoContent, rec.Code)
	assert.Empty(t, rec.Body.String())

	mu.Lock()
	signal = &resourcelease.BackpressureSignal{IsActive: true, PendingCount: 70, ObservedAt: at, HighWatermark: 64, LowWatermark: 16}
	mu.Unlock()
	rec = controlDo(t, h, http.MethodGet, "/omnirelay/control/backpressure", "")
	require.Equal(t, 200, rec.Code)
	assert.JSONEq(t, `{"isActive":true,"pendingCount":70,"observedAt":"2025-01-02T03:04:05.000000006Z","highWatermark":64,"lowWatermark":16}`, rec.Body.String())
}

func controlEvents(n int) []resourcelease.Event {
	out := make([]resourcelease.Event, n)
	for i := range out {
		out[i] = resourcelease.Event{
			SequenceNumber: int64(i + 1),
			EventType:      resourcelease.EventEnqueue,
			Timestamp:      time.Date(2025, 1, 1, 0, 0, i, 0, time.UTC),
			Metadata:       map[string]string{resourcelease.MetaQueuePending: "1", resourcelease.MetaQueueActive: "0"},
		}
	}
	return out
}

func TestControlReplication(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		query         string
		wantAfter     int64
		wantLimit     int
		wantSeqs      []int64
		wantNextSince int64
	}{
		{"defaults", "", 0, 100, controlSeqRange(1, 100), 100},
		{"since", "?since=1495", 1495, 100, controlSeqRange(1496, 1500), 1500},
		{"since and limit", "?since=3&limit=2", 3, 2, []int64{4, 5}, 5},
		{"limit cut to max", "?limit=5000", 0, 1000, controlSeqRange(1, 1000), 1000},
		{"limit at max", "?limit=1000", 0, 1000, controlSeqRange(1, 1000), 1000},
		{"nothing new keeps since", "?since=1500", 1500, 100, nil, 1500},
		{"unknown parameters ignored", "?since=10&limit=1&follow=yes", 10, 1, []int64{11}, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &controlFakeEvents{events: controlEvents(1500)}
			h := newControlHandler(t, control.HandlerConfig{Events: src, Logger: controlQuietLogger})
			rec := controlDo(t, h, http.MethodGet, "/omnirelay/control/replication"+tt.query, "")
			require.Equal(t, 200, rec.Code, "body %s", rec.Body)
			after, limit := src.args()
			assert.Equal(t, tt.wantAfter, after)
			assert.Equal(t, tt.wantLimit, limit)
			var page map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &page))
			assert.NotContains(t, page, "lastSequence", "a reader without LastSequence reports none")
			assert.NotEqual(t, "null", string(page["events"]), "events must be an array")
			var got control.ReplicationPage
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
			var seqs []int64
			for _, e := range got.Events {
				seqs = append(seqs, e.SequenceNumber)
			}
			assert.Equal(t, tt.wantSeqs, seqs)
			assert.Equal(t, tt.wantNextSince, got.NextSince)
		})
	}
}

func controlSeqRange(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestControlReplicationLastSequence(t *testing.T) {
	t.Parallel()
	src := &controlFakeLog{controlFakeEvents: controlFakeEvents{events: controlEvents(5)}, last: 5}
	h := newControlHandler(t, control.HandlerConfig{Events: src, Logger: controlQuietLogger})
	rec := controlDo(t, h, http.MethodGet, "/omnirelay/control/replication?since=1&limit=2", "")
	require.Equal(t, 200, rec.Code)
	var got control.ReplicationPage
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	require.NotNil(t, got.LastSequence)
	assert.Equal(t, int64(5), *got.LastSequence)
	assert.Equal(t, int64(3), got.NextSince)
	assert.Len(t, got.Events, 2)
}

// TestControlReplicationReportsTrimmedEvents: when retention has deleted
// events a reader had not read yet, the page says which, instead of the
// reader skipping them silently; a page without a jump says nothing.
func TestControlReplicationReportsTrimmedEvents(t *testing.T) {
	t.Parallel()
	all := controlEvents(20)
	tests := []struct {
		name  string
		query string
		want  *control.SequenceRange
	}{
		{"from the start, log trimmed to 11", "?since=0", &control.SequenceRange{From: 1, To: 10}},
		{"partly read, rest trimmed", "?since=4", &control.SequenceRange{From: 5, To: 10}},
		{"exactly at the trim point", "?since=10", nil},
		{"past the trim point", "?since=15", nil},
		{"nothing new", "?since=20", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := &controlFakeEvents{events: all[10:]} // 11..20: 1..10 trimmed
			h := newControlHandler(t, control.HandlerConfig{Events: src, Logger: controlQuietLogger})
			rec := controlDo(t, h, http.MethodGet, "/omnirelay/control/replication"+tt.query, "")
			require.Equal(t, 200, rec.Code, "body %s", rec.Body)
			var got control.ReplicationPage
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
			assert.Equal(t, tt.want, got.Trimmed)
			if tt.want == nil {
				assert.NotContains(t, rec.Body.String(), `"trimmed"`)
			}
		})
	}
}

func TestControlReplicationBadQuery(t *testing.T) {
	t.Parallel()
	src := &controlFakeEvents{events: controlEvents(3)}
	h := newControlHandler(t, control.HandlerConfig{Events: src, Logger: controlQuietLogger})
	for _, q := range []string{
		"since=-1", "since=abc", "since=1.5", "since=99999999999999999999",
		"limit=0", "limit=-5", "limit=ten", "limit=1e3",
	} {
		t.Run(q, func(t *testing.T) {
			rec := controlDo(t, h, http.MethodGet, "/omnirelay/control/replication?"+q, "")
			msg := controlWireError(t, rec, 400, resourcelease.StatusInvalidArgument, control.CodeInvalidQuery)
			assert.Contains(t, msg, strings.SplitN(q, "=", 2)[0])
		})
	}
}

func TestControlReplicationReadError(t *testing.T) {
	t.Parallel()
	src := &controlFakeEvents{err: resourcelease.ErrStorageUnavailable}
	h := newControlHandler(t, control.HandlerConfig{Events: src, Logger: controlQuietLogger})
	rec := controlDo(t, h, http.MethodGet, "/omnirelay/control/replication", "")
	controlWireError(t, rec, 503, resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable)
}

func TestControlDispatcherEndpoints(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 2, 3, 4, 5, 6, 7, time.UTC)
	item := resourcelease.PendingItem{
		Payload:    resourcelease.Item{ResourceType: "demo.order", ResourceID: "o-1", PartitionKey: "tenant-1", PayloadEncoding: "application/json", Body: []byte(`{"a":1}`)},
		Attempt:    2,
		EnqueuedAt: at,
		LastError:  &resourcelease.ErrorInfo{Message: "boom", Code: "x"},
		SequenceID: 42,
	}
	const itemJSON = `{"payload":{"resourceType":"demo.order","resourceId":"o-1","partitionKey":"tenant-1","payloadEncoding":"application/json","body":"eyJhIjoxfQ=="},"attempt":2,"enqueuedAt":"2025-02-03T04:05:06.000000007Z","lastError":{"message":"boom","code":"x"},"sequenceId":42}`
	var (
		mu  sync.Mutex
		got []string // what the Dispatcher saw
	)
	saw := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, s)
	}
	d := &controlFakeDispatcher{t: t,
		stats: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
			return &resourcelease.Stats{PendingCount: 3, ActiveLeaseCount: 1, DeadLetterCount: 2, BackpressureActive: true}, nil
		},
		drain: func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
			return &resourcelease.DrainResponse{Items: []resourcelease.PendingItem{item}}, nil
		},
		restore: func(_ context.Context, r *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
			b, _ := json.Marshal(r.Items)
			saw("restore " + string(b))
			return &resourcelease.RestoreResponse{RestoredCount: len(r.Items)}, nil
		},
		deadLetters: func(_ context.Context, r *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
			saw("deadletters " + controlJSON(r))
			if r.Limit == 7 {
				return &resourcelease.DeadLettersResponse{}, nil
			}
			return &resourcelease.DeadLettersResponse{Items: []resourcelease.DeadLetter{{PendingItem: item, DeadLetteredAt: at, Reason: "gave up"}}}, nil
		},
		redrive: func(_ context.Context, r *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
			saw("redrive " + controlJSON(r))
			return &resourcelease.RedriveResponse{RedrivenCount: max(len(r.SequenceIDs), 5)}, nil
		},
		purge: func(_ context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
			saw("purge " + controlJSON(r))
			return &resourcelease.PurgeResponse{PurgedCount: max(len(r.SequenceIDs), 5)}, nil
		},
	}
	h := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Logger: controlQuietLogger})
	tests := []struct {
		name, method, path, body string
		wantBody                 string
		wantSaw                  string
	}{
		{"stats", "GET", "/stats", "", `{"pendingCount":3,"activeLeaseCount":1,"deadLetterCount":2,"backpressureActive":true}`, ""},
		{"drain", "POST", "/drain", "", `{"items":[` + itemJSON + `]}`, ""},
		{"drain with {}", "POST", "/drain", "{}", `{"items":[` + itemJSON + `]}`, ""},
		{"restore", "POST", "/restore", `{"items":[` + itemJSON + `],"extra":true}`, `{"restoredCount":1}`, "restore [" + itemJSON + "]"},
		{"deadletters", "GET", "/deadletters", "", `{"items":[` + strings.TrimSuffix(itemJSON, "}") + `,"deadLetteredAt":"2025-02-03T04:05:06.000000007Z","reason":"gave up"}]}`, `deadletters {}`},
		{"deadletters empty is []", "GET", "/deadletters?limit=7", "", `{"items":[]}`, `deadletters {"limit":7}`},
		{"action redrive", "POST", "/deadletters", `{"action":"redrive","sequenceIds":[4,5]}`, `{"redrivenCount":5}`, `redrive {"sequenceIds":[4,5]}`},
		{"action redrive all", "POST", "/deadletters", `{"action":"Redrive","all":true}`, `{"redrivenCount":5}`, `redrive {"all":true}`},
		{"action purge all", "POST", "/deadletters", `{"action":"purge","all":true}`, `{"purgedCount":5}`, `purge {"all":true}`},
		{"action purge", "POST", "/deadletters", `{"action":"purge","sequenceIds":[9]}`, `{"purgedCount":5}`, `purge {"sequenceIds":[9]}`},
		{"redrive path", "POST", "/deadletters/redrive", `{"sequenceIds":[1,2,3]}`, `{"redrivenCount":5}`, `redrive {"sequenceIds":[1,2,3]}`},
		{"redrive path all", "POST", "/deadletters/redrive", `{"all":true}`, `{"redrivenCount":5}`, `redrive {"all":true}`},
		{"purge path all", "POST", "/deadletters/purge", `{"all":true}`, `{"purgedCount":5}`, `purge {"all":true}`},
		{"purge path", "POST", "/deadletters/purge", `{"sequenceIds":[8]}`, `{"purgedCount":5}`, `purge {"sequenceIds":[8]}`},
		{"purge path all", "POST", "/deadletters/purge", `{"all":true}`, `{"purgedCount":5}`, `purge {"all":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			rec := controlDo(t, h, tt.method, "/omnirelay/control"+tt.path, tt.body)
			require.Equal(t, 200, rec.Code, "body %s", rec.Body)
			assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			assert.JSONEq(t, tt.wantBody, rec.Body.String())
			mu.Lock()
			defer mu.Unlock()
			if tt.wantSaw == "" {
				assert.Empty(t, got)
				return
			}
			require.Len(t, got, 1)
			assert.Equal(t, tt.wantSaw, got[0])
		})
	}
}

func controlJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestControlRequestErrors(t *testing.T) {
	t.Parallel()
	d := &controlFakeDispatcher{t: t,
		drain: func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
			return nil, errors.New("disk on fire at /var/lib/x")
		},
		restore: func(context.Context, *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
			return nil, resourcelease.ErrDuplicateSequence
		},
		stats: func(ctx context.Context, _ *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
			return nil, resourcelease.ErrClosed
		},
	}
	h := newControlHandler(t, control.HandlerConfig{Dispatcher: d, MaxBodyBytes: 64, Logger: controlQuietLogger})
	tests := []struct {
		name, method, path, body string
		wantHTTP                 int
		wantStatus               resourcelease.Status
		wantCode                 string
	}{
		{"bad json", "POST", "/restore", `{"items":`, 400, resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument},
		{"wrong json type", "POST", "/restore", `{"items":{}}`, 400, resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument},
		{"body too large", "POST", "/restore", `{"items":[` + strings.Repeat(" ", 100) + `]}`, 429, resourcelease.StatusResourceExhausted, transport.CodeBodyTooLarge},
		{"missing action", "POST", "/deadletters", `{"sequenceIds":[1]}`, 400, resourcelease.StatusInvalidArgument, control.CodeInvalidAction},
		{"unknown action", "POST", "/deadletters", `{"action":"explode"}`, 400, resourcelease.StatusInvalidArgument, control.CodeInvalidAction},
		{"action without a selection", "POST", "/deadletters", `{"action":"purge"}`, 400, resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired},
		{"action with an empty selection", "POST", "/deadletters", `{"action":"redrive","sequenceIds":[]}`, 400, resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired},
		{"action with ids and all", "POST", "/deadletters", `{"action":"redrive","sequenceIds":[1],"all":true}`, 400, resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired},
		{"action with a bad id", "POST", "/deadletters", `{"action":"redrive","sequenceIds":[0]}`, 400, resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument},
		{"redrive empty body", "POST", "/deadletters/redrive", ``, 400, resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired},
		{"purge empty object", "POST", "/deadletters/purge", `{}`, 400, resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired},
		{"purge all false", "POST", "/deadletters/purge", `{"all":false}`, 400, resourcelease.StatusInvalidArgument, resourcelease.CodeSelectionRequired},
		{"bad deadletters limit", "GET", "/deadletters?limit=-1", "", 400, resourcelease.StatusInvalidArgument, control.CodeInvalidQuery},
		{"dispatcher wire error", "POST", "/restore", `{"items":[]}`, 409, resourcelease.StatusAlreadyExists, resourcelease.CodeDuplicateSequence},
		{"dispatcher closed", "GET", "/stats", "", 503, resourcelease.StatusUnavailable, resourcelease.CodeClosed},
		{"dispatcher foreign error", "POST", "/drain", "", 500, resourcelease.StatusInternal, resourcelease.CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := controlDo(t, h, tt.method, "/omnirelay/control"+tt.path, tt.body)
			msg := controlWireError(t, rec, tt.wantHTTP, tt.wantStatus, tt.wantCode)
			assert.NotContains(t, msg, "/var/lib")
		})
	}
}

func TestControlAuthorize(t *testing.T) {
	t.Parallel()
	d := &controlFakeDispatcher{t: t,
		stats: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
			return &resourcelease.Stats{}, nil
		},
		drain: func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
			return &resourcelease.DrainResponse{}, nil
		},
		restore: func(context.Context, *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
			return &resourcelease.RestoreResponse{}, nil
		},
		deadLetters: func(context.Context, *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
			return &resourcelease.DeadLettersResponse{}, nil
		},
		redrive: func(context.Context, *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
			return &resourcelease.RedriveResponse{}, nil
		},
		purge: func(context.Context, *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
			return &resourcelease.PurgeResponse{}, nil
		},
		listItems: func(context.Context, *resourcelease.ListItemsRequest) (*resourcelease.ListItemsResponse, error) {
			return &resourcelease.ListItemsResponse{}, nil
		},
		item: func(_ context.Context, seq int64) (*resourcelease.ItemInfo, error) {
			return &resourcelease.ItemInfo{SequenceID: seq}, nil
		},
		pause:  func(context.Context) error { return nil },
		resume: func(context.Context) error { return nil },
	}
	// authorize accepts "Bearer good", refuses "Bearer bad" as permission
	// denied, a missing header as unauthenticated, and anything else with a
	// plain error.
	var mu sync.Mutex
	var asked []transport.Role
	authorize := func(r *http.Request, role transport.Role) error {
		mu.Lock()
		asked = append(asked, role)
		mu.Unlock()
		switch r.Header.Get("Authorization") {
		case "Bearer good":
			return nil
		case "Bearer bad":
			return resourcelease.Errorf(resourcelease.StatusPermissionDenied, transport.CodePermissionDenied, "token may not drain")
		case "":
			return resourcelease.Errorf(resourcelease.StatusUnauthenticated, transport.CodeUnauthenticated, "token required")
		}
		return errors.New("secret reason")
	}
	writes := []struct{ path, body string }{
		{"/drain", ""},
		{"/restore", `{"items":[]}`},
		{"/deadletters", `{"action":"purge","all":true}`},
		{"/deadletters/redrive", `{"sequenceIds":[1]}`},
		{"/deadletters/purge", `{"all":true}`},
		{"/pause", ""},
		{"/resume", ""},
	}
	reads := []string{"/stats", "/deadletters", "/peers", "/backpressure", "/replication", "/items", "/items/7"}
	opts := control.HandlerConfig{
		Dispatcher:   d,
		Authorize:    authorize,
		Peers:        func(context.Context) (any, error) { return []string{}, nil },
		Backpressure: func() (any, bool) { return nil, false },
		Events:       &controlFakeEvents{},
		Logger:       controlQuietLogger,
	}
	open := newControlHandler(t, opts)
	opts.AuthorizeReads = true
	closed := newControlHandler(t, opts)

	for _, w := range writes {
		t.Run("write "+w.path, func(t *testing.T) {
			for _, h := range []http.Handler{open, closed} {
				rec := controlDo(t, h, "POST", "/omnirelay/control"+w.path, w.body)
				controlWireError(t, rec, 401, resourcelease.StatusUnauthenticated, transport.CodeUnauthenticated)
				assert.Equal(t, "Bearer", rec.Header().Get("WWW-Authenticate"))

				rec = controlDo(t, h, "POST", "/omnirelay/control"+w.path, w.body, "Authorization", "Bearer bad")
				controlWireError(t, rec, 403, resourcelease.StatusPermissionDenied, transport.CodePermissionDenied)

				rec = controlDo(t, h, "POST", "/omnirelay/control"+w.path, w.body, "Authorization", "Basic x")
				msg := controlWireError(t, rec, 401, resourcelease.StatusUnauthenticated, transport.CodeUnauthenticated)
				assert.NotContains(t, msg, "secret")

				mu.Lock()
				asked = nil
				mu.Unlock()
				rec = controlDo(t, h, "POST", "/omnirelay/control"+w.path, w.body, "Authorization", "Bearer good")
				assert.Equal(t, 200, rec.Code, "body %s", rec.Body)
				mu.Lock()
				assert.Equal(t, []transport.Role{transport.RoleAdmin}, asked, "a write asks for the admin role")
				mu.Unlock()
			}
		})
	}
	for _, path := range reads {
		t.Run("read "+path, func(t *testing.T) {
			rec := controlDo(t, open, "GET", "/omnirelay/control"+path, "")
			assert.Less(t, rec.Code, 300, "reads are open by default; body %s", rec.Body)

			rec = controlDo(t, closed, "GET", "/omnirelay/control"+path, "")
			controlWireError(t, rec, 401, resourcelease.StatusUnauthenticated, transport.CodeUnauthenticated)
			mu.Lock()
			asked = nil
			mu.Unlock()
			rec = controlDo(t, closed, "GET", "/omnirelay/control"+path, "", "Authorization", "Bearer good")
			assert.Less(t, rec.Code, 300, "body %s", rec.Body)
			mu.Lock()
			assert.Equal(t, []transport.Role{transport.RoleObserver}, asked, "a read asks for the observer role")
			mu.Unlock()
		})
	}
}

// TestControlRequestContext checks that the Dispatcher gets the request's
// context, so a client that goes away cancels the call.
func TestControlRequestContext(t *testing.T) {
	t.Parallel()
	type key struct{}
	d := &controlFakeDispatcher{t: t, stats: func(ctx context.Context, _ *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
		if ctx.Value(key{}) != "here" {
			return nil, errors.New("not the request's context")
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	h := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Logger: controlQuietLogger})
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, "here"))
	cancel()
	req := httptest.NewRequestWithContext(ctx, "GET", "/omnirelay/control/stats", nil)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	controlWireError(t, rec, 499, resourcelease.StatusCancelled, resourcelease.CodeCancelled)
}

func TestControlOverHTTP(t *testing.T) {
	t.Parallel()
	d := &controlFakeDispatcher{t: t, purge: func(_ context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
		return &resourcelease.PurgeResponse{PurgedCount: len(r.SequenceIDs)}, nil
	}}
	mux := http.NewServeMux()
	mux.Handle("/omnirelay/control/", newControlHandler(t, control.HandlerConfig{Dispatcher: d, Logger: controlQuietLogger}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/omnirelay/control/deadletters", "application/json",
		strings.NewReader(`{"action":"purge","sequenceIds":[1,2]}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	assert.JSONEq(t, `{"purgedCount":2}`, string(b))
}

// TestControlChunkedBodyTooLarge checks the limit on a body without a
// Content-Length.
func TestControlChunkedBodyTooLarge(t *testing.T) {
	t.Parallel()
	h := newControlHandler(t, control.HandlerConfig{Dispatcher: &controlFakeDispatcher{t: t}, MaxBodyBytes: 16, Logger: controlQuietLogger})
	req := httptest.NewRequest("POST", "/omnirelay/control/restore", io.MultiReader(strings.NewReader(`{"items":[`), strings.NewReader(strings.Repeat(" ", 32)+`]}`)))
	req.ContentLength = -1
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	controlWireError(t, rec, 429, resourcelease.StatusResourceExhausted, transport.CodeBodyTooLarge)
}

// newControlHandler builds a control-plane handler, failing the test on a
// configuration error.
//
// Tests of everything but authorization get transport.AllowAll when they set
// no Authorize: without one, the admin endpoints are refused
// (TestControlAdminRefusedWithoutAuthorize).
func newControlHandler(t testing.TB, cfg control.HandlerConfig) http.Handler {
	t.Helper()
	if cfg.Authorize == nil {
		cfg.Authorize = transport.AllowAll
	}
	h, err := control.NewHandler(cfg)
	require.NoError(t, err)
	return h
}

// TestControlAdminRefusedWithoutAuthorize: with no Authorize the control
// plane serves its reads but refuses every admin action, as the RPC handler
// refuses its admin procedures, so mounting it never hands the queue to
// whoever can reach it.
func TestControlAdminRefusedWithoutAuthorize(t *testing.T) {
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{})
	require.NoError(t, err)
	defer d.Close()
	h, err := control.NewHandler(control.HandlerConfig{Dispatcher: d, Logger: controlQuietLogger})
	require.NoError(t, err)
	for _, path := range []string{"/drain", "/restore", "/deadletters/purge", "/deadletters/redrive", "/pause", "/resume"} {
		req := httptest.NewRequest(http.MethodPost, control.DefaultPrefix+path, strings.NewReader(`{"all":true}`))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		require.Equal(t, http.StatusForbidden, rec.Code, path)
		require.Equal(t, transport.CodeAdminNotConfigured, rec.Header().Get("Rpc-Error-Name"), path)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, control.DefaultPrefix+"/stats", nil))
	require.Equal(t, http.StatusOK, rec.Code, "reads stay open")
}
