package control_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// plainDispatcher hides every method but resourcelease.Dispatcher's.
type plainDispatcher struct{ resourcelease.Dispatcher }

func TestControlItemsQuery(t *testing.T) {
	t.Parallel()
	var (
		mu  sync.Mutex
		got *resourcelease.ListItemsRequest
	)
	d := &controlFakeDispatcher{t: t,
		listItems: func(_ context.Context, r *resourcelease.ListItemsRequest) (*resourcelease.ListItemsResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			got = r
			if r.After == 99 {
				return &resourcelease.ListItemsResponse{}, nil // no items: served as []
			}
			return &resourcelease.ListItemsResponse{
				Items:     []resourcelease.ItemInfo{{SequenceID: r.After + 1, State: r.State, Attempt: 1}},
				NextAfter: r.After + 1,
			}, nil
		},
	}
	h := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Logger: controlQuietLogger})
	tests := []struct {
		name, query string
		want        resourcelease.ListItemsRequest
		wantBody    string
	}{
		{"defaults", "", resourcelease.ListItemsRequest{State: "pending", Limit: 50},
			`{"items":[{"sequenceId":1,"state":"pending","payload":{"resourceType":"","resourceId":"","partitionKey":"","payloadEncoding":""},"bodySize":0,"attempt":1,"enqueuedAt":"0001-01-01T00:00:00Z"}],"nextAfter":1}`},
		{"leased page", "?state=leased&after=10&limit=5", resourcelease.ListItemsRequest{State: "leased", After: 10, Limit: 5}, ""},
		{"dead with filters", "?state=dead&resourceType=demo.order&partitionKey=tenant-1&resourceId=o%2F1", resourcelease.ListItemsRequest{
			State: "dead", ResourceType: "demo.order", PartitionKey: "tenant-1", ResourceID: "o/1", Limit: 50}, ""},
		{"limit is cut", "?limit=100000", resourcelease.ListItemsRequest{State: "pending", Limit: resourcelease.MaxListLimit}, ""},
		{"empty page is []", "?after=99", resourcelease.ListItemsRequest{State: "pending", After: 99, Limit: 50}, `{"items":[]}`},
		{"unknown parameters ignored", "?state=pending&color=blue", resourcelease.ListItemsRequest{State: "pending", Limit: 50}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := controlDo(t, h, "GET", "/omnirelay/control/items"+tt.query, "")
			require.Equal(t, 200, rec.Code, "body %s", rec.Body)
			mu.Lock()
			defer mu.Unlock()
			require.NotNil(t, got)
			assert.Equal(t, tt.want, *got)
			if tt.wantBody != "" {
				assert.JSONEq(t, tt.wantBody, rec.Body.String())
			}
		})
	}

	for _, q := range []string{
		"?state=done", "?state=PENDING", "?after=-1", "?after=x", "?limit=0", "?limit=-5", "?limit=ten",
	} {
		t.Run("bad "+q, func(t *testing.T) {
			rec := controlDo(t, h, "GET", "/omnirelay/control/items"+q, "")
			controlWireError(t, rec, 400, resourcelease.StatusInvalidArgument, control.CodeInvalidQuery)
		})
	}
	for _, path := range []string{"/items/abc", "/items/0", "/items/-3", "/items/", "/items/1.5"} {
		t.Run("bad "+path, func(t *testing.T) {
			rec := controlDo(t, h, "GET", "/omnirelay/control"+path, "")
			controlWireError(t, rec, 400, resourcelease.StatusInvalidArgument, control.CodeInvalidQuery)
		})
	}
	rec := controlDo(t, h, "GET", "/omnirelay/control/items/1/events", "")
	controlWireError(t, rec, 404, resourcelease.StatusNotFound, control.CodeUnknownEndpoint)
	rec = controlDo(t, h, "POST", "/omnirelay/control/items/1", "")
	controlWireError(t, rec, 405, resourcelease.StatusInvalidArgument, transport.CodeMethodNotAllowed)
}

func TestControlItemDetail(t *testing.T) {
	t.Parallel()
	body := []byte("\x00\x01binary")
	d := &controlFakeDispatcher{t: t,
		item: func(_ context.Context, seq int64) (*resourcelease.ItemInfo, error) {
			if seq != 7 {
				return nil, resourcelease.ErrItemNotFound
			}
			return &resourcelease.ItemInfo{SequenceID: 7, State: resourcelease.ItemDead, Attempt: 3,
				Payload: resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", PayloadEncoding: "e", Body: body}}, nil
		},
	}
	// 1,500 events; item 7 appears in three of the newest 1,000, by its
	// token or its sequenceId metadata, and once in an older one.
	log := &controlFakeLog{last: 1500}
	for i := int64(1); i <= 1500; i++ {
		e := resourcelease.Event{SequenceNumber: i, EventType: resourcelease.EventHeartbeat,
			Ownership: &resourcelease.OwnershipToken{SequenceID: 1000 + i}, Metadata: map[string]string{}}
		switch i {
		case 100, 600:
			e.Ownership.SequenceID = 7
		case 700:
			e.Ownership = nil
			e.EventType = resourcelease.EventEnqueue
			e.Metadata[resourcelease.MetaSequenceID] = "7"
			e.Payload = &resourcelease.Item{ResourceID: "r", Body: body}
		case 1500:
			e.Ownership.SequenceID = 7
			e.EventType = resourcelease.EventDeadLettered
		}
		log.events = append(log.events, e)
	}
	h := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Events: log, Logger: controlQuietLogger})
	rec := controlDo(t, h, "GET", "/omnirelay/control/items/7", "")
	require.Equal(t, 200, rec.Code, "body %s", rec.Body)
	var detail control.ItemDetail
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &detail))
	assert.Equal(t, body, detail.Item.Payload.Body, "the detail carries the body")
	assert.Equal(t, &control.SequenceRange{From: 501, To: 1500}, detail.EventWindow)
	var seqs []int64
	for _, e := range detail.Events {
		seqs = append(seqs, e.SequenceNumber)
		if e.Payload != nil {
			assert.Nil(t, e.Payload.Body, "events carry no body")
			assert.Equal(t, "r", e.Payload.ResourceID)
		}
	}
	assert.Equal(t, []int64{600, 700, 1500}, seqs)
	after, limit := log.args()
	assert.Equal(t, int64(500), after)
	assert.Equal(t, control.DefaultItemEventWindow, limit)
	assert.NotNil(t, log.events[699].Payload.Body, "the log's own event is not modified")

	rec = controlDo(t, h, "GET", "/omnirelay/control/items/8", "")
	controlWireError(t, rec, 404, resourcelease.StatusNotFound, resourcelease.CodeItemNotFound)

	small := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Events: log, ItemEventWindow: 10, Logger: controlQuietLogger})
	rec = controlDo(t, small, "GET", "/omnirelay/control/items/7", "")
	require.Equal(t, 200, rec.Code)
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &detail))
	assert.Equal(t, &control.SequenceRange{From: 1491, To: 1500}, detail.EventWindow)
	assert.Len(t, detail.Events, 1)

	// Without a LastSequence there is no window to search.
	noLast := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Events: &log.controlFakeEvents, Logger: controlQuietLogger})
	rec = controlDo(t, noLast, "GET", "/omnirelay/control/items/7", "")
	require.Equal(t, 200, rec.Code)
	assert.JSONEq(t, `[]`, string(mustField(t, rec.Body.Bytes(), "events")))
	assert.Nil(t, mustField(t, rec.Body.Bytes(), "eventWindow"))
}

// mustField returns the raw JSON of one field of a JSON object (nil when absent).
func mustField(t *testing.T, doc []byte, name string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(doc, &m))
	return m[name]
}

func TestControlPauseResume(t *testing.T) {
	t.Parallel()
	var (
		mu    sync.Mutex
		calls []string
	)
	d := &controlFakeDispatcher{t: t,
		pause: func(context.Context) error { mu.Lock(); defer mu.Unlock(); calls = append(calls, "pause"); return nil },
		resume: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, "resume")
			return resourcelease.ErrClosed
		},
	}
	h := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Logger: controlQuietLogger})
	rec := controlDo(t, h, "POST", "/omnirelay/control/pause", "")
	require.Equal(t, 200, rec.Code)
	assert.JSONEq(t, `{"paused":true}`, rec.Body.String())
	rec = controlDo(t, h, "POST", "/omnirelay/control/resume", "{}")
	controlWireError(t, rec, 503, resourcelease.StatusUnavailable, resourcelease.CodeClosed)
	rec = controlDo(t, h, "GET", "/omnirelay/control/pause", "")
	controlWireError(t, rec, 405, resourcelease.StatusInvalidArgument, transport.CodeMethodNotAllowed)
	mu.Lock()
	assert.Equal(t, []string{"pause", "resume"}, calls)
	mu.Unlock()

	plain := newControlHandler(t, control.HandlerConfig{Dispatcher: plainDispatcher{d}, Logger: controlQuietLogger})
	for _, c := range []struct{ method, path string }{
		{"POST", "/pause"}, {"POST", "/resume"}, {"GET", "/items"}, {"GET", "/items/1"},
	} {
		rec := controlDo(t, plain, c.method, "/omnirelay/control"+c.path, "")
		controlWireError(t, rec, 501, resourcelease.StatusUnimplemented, control.CodeNotConfigured)
	}
}

func TestControlOrigin(t *testing.T) {
	t.Parallel()
	d := &controlFakeDispatcher{t: t,
		pause: func(context.Context) error { return nil },
		stats: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
			return &resourcelease.Stats{}, nil
		},
	}
	h := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Logger: controlQuietLogger,
		TrustedOrigins: []string{"https://console.example.net"}})
	// httptest.NewRequest's Host is example.com.
	tests := []struct {
		name      string
		method    string
		hdr       []string
		wantAllow bool
	}{
		{"no origin (a CLI client)", "POST", nil, true},
		{"same origin", "POST", []string{"Origin", "http://example.com"}, true},
		{"same origin by fetch metadata", "POST", []string{"Sec-Fetch-Site", "same-origin", "Origin", "http://example.com"}, true},
		{"typed into the address bar", "POST", []string{"Sec-Fetch-Site", "none"}, true},
		{"trusted origin", "POST", []string{"Origin", "https://console.example.net"}, true},
		{"trusted origin, cross-site by fetch metadata", "POST", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://console.example.net"}, true},
		{"cross origin", "POST", []string{"Origin", "https://evil.example"}, false},
		{"cross site by fetch metadata", "POST", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, false},
		{"same site, other port", "POST", []string{"Sec-Fetch-Site", "same-site", "Origin", "http://example.com:8080"}, false},
		{"null origin", "POST", []string{"Origin", "null"}, false},
		{"reads are never refused", "GET", []string{"Origin", "https://evil.example"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := "/omnirelay/control/pause"
			if tt.method == "GET" {
				path = "/omnirelay/control/stats"
			}
			rec := controlDo(t, h, tt.method, path, "", tt.hdr...)
			if tt.wantAllow {
				assert.Equal(t, 200, rec.Code, "body %s", rec.Body)
				return
			}
			msg := controlWireError(t, rec, 403, resourcelease.StatusPermissionDenied, control.CodeCrossOrigin)
			assert.Contains(t, msg, "cross-origin request refused")
		})
	}

	// The origin check comes before Authorize: a forged request learns nothing.
	authorized := newControlHandler(t, control.HandlerConfig{Dispatcher: d, Logger: controlQuietLogger,
		Authorize: func(*http.Request, transport.Role) error {
			t.Error("Authorize ran for a cross-origin request")
			return nil
		}})
	rec := controlDo(t, authorized, "POST", "/omnirelay/control/pause", "", "Origin", "https://evil.example")
	controlWireError(t, rec, 403, resourcelease.StatusPermissionDenied, control.CodeCrossOrigin)
}

func TestControlItemConfigErrors(t *testing.T) {
	t.Parallel()
	for _, cfg := range []control.HandlerConfig{
		{ItemEventWindow: -1},
		{ItemEventWindow: control.MaxItemEventWindow + 1},
		{TrustedOrigins: []string{"console.example.net"}},
		{TrustedOrigins: []string{"https://console.example.net/path"}},
	} {
		_, err := control.NewHandler(cfg)
		assert.ErrorIs(t, err, resourcelease.ErrInvalidArgument, "%+v", cfg)
	}
}

// TestControlItemsOnADispatcher drives the item endpoints and pause through
// the Client against a real dispatcher.
func TestControlItemsOnADispatcher(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, err := leasemesh.Open(ctx, leasemesh.Config{Storage: leasemesh.Memory(), Logger: controlQuietLogger,
		Queue: resourcelease.QueueConfig{MaxDeliveryAttempts: 1}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	for _, id := range []string{"a", "b", "c"} {
		_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
			ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-1", PayloadEncoding: "text/plain", Body: []byte("body " + id)}})
		require.NoError(t, err)
	}
	l, err := d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	err = d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, Reason: "poison"})
	require.NoError(t, err)

	c := controlServer(t, control.HandlerConfig{Dispatcher: d.LocalDispatcher, Events: d.Replicator()}, control.ClientConfig{})
	page, err := c.Items(ctx, &resourcelease.ListItemsRequest{Limit: 1})
	require.NoError(t, err)
	require.Len(t, page.Items, 1)
	assert.Equal(t, "b", page.Items[0].Payload.ResourceID)
	assert.Equal(t, int64(2), page.NextAfter)
	page, err = c.Items(ctx, &resourcelease.ListItemsRequest{After: page.NextAfter, Limit: 1})
	require.NoError(t, err)
	assert.Equal(t, "c", page.Items[0].Payload.ResourceID)
	assert.Zero(t, page.NextAfter)

	dead, err := c.Items(ctx, &resourcelease.ListItemsRequest{State: resourcelease.ItemDead, ResourceID: "a"})
	require.NoError(t, err)
	require.Len(t, dead.Items, 1)
	detail, err := c.Item(ctx, dead.Items[0].SequenceID)
	require.NoError(t, err)
	assert.Equal(t, "body a", string(detail.Item.Payload.Body))
	assert.Contains(t, detail.Item.DeadLetterReason, "poison")
	var types []resourcelease.EventType
	for _, e := range detail.Events {
		types = append(types, e.EventType)
	}
	assert.Equal(t, []resourcelease.EventType{resourcelease.EventEnqueue, resourcelease.EventLeaseGranted,
		resourcelease.EventFailed, resourcelease.EventDeadLettered}, types)
	_, err = c.Item(ctx, 99)
	assert.ErrorIs(t, err, resourcelease.ErrItemNotFound)

	ps, err := c.Pause(ctx)
	require.NoError(t, err)
	assert.True(t, ps.Paused)
	st, err := c.Stats(ctx)
	require.NoError(t, err)
	assert.True(t, st.Paused)
	lctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	l, err = d.Lease(lctx, &resourcelease.LeaseRequest{PeerID: "w", Wait: 10 * time.Second})
	cancel()
	require.NoError(t, err)
	assert.Nil(t, l, "no lease while paused")
	ps, err = c.Resume(ctx)
	require.NoError(t, err)
	assert.False(t, ps.Paused)
	l, err = d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	require.NotNil(t, l)

	n, err := c.RedriveAll(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n.RedrivenCount)
}
