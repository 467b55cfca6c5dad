package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

var (
	t0      = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.UTC)
	leaseID = uuid.MustParse("0f8fad5b-d9cb-469f-a165-70867728950e")
	token   = resourcelease.OwnershipToken{SequenceID: 7, Attempt: 2, LeaseID: leaseID}
	item    = resourcelease.Item{
		ResourceType: "demo.order", ResourceID: "order-0001", PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"a":1}`),
		Attributes: map[string]string{"tenant": "tenant-1"}, RequestID: "req-1",
	}
)

const (
	itemJSON  = `{"resourceType":"demo.order","resourceId":"order-0001","partitionKey":"tenant-1","payloadEncoding":"application/json","body":"eyJhIjoxfQ==","attributes":{"tenant":"tenant-1"},"requestId":"req-1"}`
	tokenJSON = `{"sequenceId":7,"attempt":2,"leaseId":"0f8fad5b-d9cb-469f-a165-70867728950e"}`
)

func ptr[T any](v T) *T { return &v }

// TestHandlerProcedures sends every procedure through the handler and checks
// the request the Dispatcher got and the JSON the client gets.
func TestHandlerProcedures(t *testing.T) {
	t.Parallel()
	pending := resourcelease.PendingItem{Payload: item, Attempt: 2, EnqueuedAt: t0, SequenceID: 7,
		LastError: &resourcelease.ErrorInfo{Message: "boom", Code: "app.boom"}, LastOwnershipToken: &token}
	pendingJSON := `{"payload":` + itemJSON + `,"attempt":2,"enqueuedAt":"2026-01-02T03:04:05.123456789Z","lastError":{"message":"boom","code":"app.boom"},"sequenceId":7,"lastOwnershipToken":` + tokenJSON + `}`
	tests := []struct {
		verb     string
		body     string
		setup    func(t *testing.T, f *leasetest.FakeDispatcher)
		wantJSON string
	}{
		{
			verb: transport.VerbEnqueue,
			body: `{"payload":` + itemJSON + `,"someNewField":true}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.EnqueueFn = func(_ context.Context, r *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
					require.Equal(t, &item, r.Payload)
					return &resourcelease.EnqueueResponse{Stats: resourcelease.QueueCounts{PendingCount: 3, ActiveLeaseCount: 1}, SequenceID: 7}, nil
				}
			},
			wantJSON: `{"stats":{"pendingCount":3,"activeLeaseCount":1},"sequenceId":7}`,
		},
		{
			verb: transport.VerbLease,
			body: `{"peerId":"worker-1","waitMs":250}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.LeaseFn = func(_ context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
					require.Equal(t, &resourcelease.LeaseRequest{PeerID: "worker-1", Wait: 250 * time.Millisecond}, r)
					return &resourcelease.Lease{Payload: item, SequenceID: 7, Attempt: 2, EnqueuedAt: t0,
						LastError: &resourcelease.ErrorInfo{Message: "boom"}, OwnershipToken: token, OwnerPeerID: "worker-1",
						LeaseExpiresAt: t0.Add(30 * time.Second), TTL: 30 * time.Second, HeartbeatInterval: 5 * time.Second}, nil
				}
			},
			wantJSON: `{"payload":` + itemJSON + `,"sequenceId":7,"attempt":2,"enqueuedAt":"2026-01-02T03:04:05.123456789Z",
				"lastError":{"message":"boom"},"ownershipToken":` + tokenJSON + `,"ownerPeerId":"worker-1",
				"leaseExpiresAt":"2026-01-02T03:04:35.123456789Z","leaseTtlMs":30000,"heartbeatIntervalMs":5000}`,
		},
		{
			verb:     transport.VerbLease,
			body:     ``,
			setup:    func(*testing.T, *leasetest.FakeDispatcher) {},
			wantJSON: `null`,
		},
		{
			verb: transport.VerbHeartbeat,
			body: `{"ownershipToken":` + tokenJSON + `}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.HeartbeatFn = func(_ context.Context, r *resourcelease.HeartbeatRequest) (*resourcelease.HeartbeatResponse, error) {
					require.Equal(t, token, r.OwnershipToken)
					return &resourcelease.HeartbeatResponse{LeaseExpiresAt: t0}, nil
				}
			},
			wantJSON: `{"success":true,"leaseExpiresAt":"2026-01-02T03:04:05.123456789Z"}`,
		},
		{
			verb: transport.VerbComplete,
			body: `{"ownershipToken":` + tokenJSON + `}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.CompleteFn = func(_ context.Context, r *resourcelease.CompleteRequest) error {
					require.Equal(t, token, r.OwnershipToken)
					return nil
				}
			},
			wantJSON: `{"success":true}`,
		},
		{
			verb: transport.VerbFail,
			body: `{"ownershipToken":` + tokenJSON + `,"reason":"db down","errorCode":"app.db","requeue":false,"metadata":{"k":"v"}}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.FailFn = func(_ context.Context, r *resourcelease.FailRequest) error {
					require.Equal(t, &resourcelease.FailRequest{OwnershipToken: token, Reason: "db down", ErrorCode: "app.db",
						DeadLetter: true, Metadata: map[string]string{"k": "v"}}, r)
					return nil
				}
			},
			wantJSON: `{"success":true}`,
		},
		{
			verb: transport.VerbDrain,
			body: `{}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.DrainFn = func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
					return &resourcelease.DrainResponse{Items: []resourcelease.PendingItem{pending}}, nil
				}
			},
			wantJSON: `{"items":[` + pendingJSON + `]}`,
		},
		{
			verb: transport.VerbRestore,
			body: `{"items":[` + pendingJSON + `]}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.RestoreFn = func(_ context.Context, r *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
					require.Equal(t, []resourcelease.PendingItem{pending}, r.Items)
					return &resourcelease.RestoreResponse{RestoredCount: 1}, nil
				}
			},
			wantJSON: `{"restoredCount":1}`,
		},
		{
			verb: transport.VerbStats,
			body: ``,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.StatsFn = func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
					return &resourcelease.Stats{PendingCount: 4, ActiveLeaseCount: 2, DeadLetterCount: 1, BackpressureActive: true}, nil
				}
			},
			wantJSON: `{"pendingCount":4,"activeLeaseCount":2,"deadLetterCount":1,"backpressureActive":true}`,
		},
		{
			verb: transport.VerbDeadLetters,
			body: `{"limit":2}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.DeadLettersFn = func(_ context.Context, r *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
					require.Equal(t, 2, r.Limit)
					return &resourcelease.DeadLettersResponse{Items: []resourcelease.DeadLetter{{PendingItem: pending, DeadLetteredAt: t0, Reason: "poison"}}}, nil
				}
			},
			wantJSON: `{"items":[` + strings.TrimSuffix(pendingJSON, "}") + `,"deadLetteredAt":"2026-01-02T03:04:05.123456789Z","reason":"poison"}]}`,
		},
		{
			verb: transport.VerbRedrive,
			body: `{"sequenceIds":[1,2]}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.RedriveFn = func(_ context.Context, r *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
					require.Equal(t, []int64{1, 2}, r.SequenceIDs)
					return &resourcelease.RedriveResponse{RedrivenCount: 2}, nil
				}
			},
			wantJSON: `{"redrivenCount":2}`,
		},
		{
			verb: transport.VerbPurge,
			body: `{"all":true}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.PurgeFn = func(_ context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
					require.Equal(t, &resourcelease.PurgeRequest{All: true}, r)
					return &resourcelease.PurgeResponse{PurgedCount: 3}, nil
				}
			},
			wantJSON: `{"purgedCount":3}`,
		},
		{
			verb: transport.VerbRelease,
			body: `{"ownershipToken":` + tokenJSON + `,"delayMs":250}`,
			setup: func(t *testing.T, f *leasetest.FakeDispatcher) {
				f.ReleaseFn = func(_ context.Context, r *resourcelease.ReleaseRequest) error {
					require.Equal(t, &resourcelease.ReleaseRequest{OwnershipToken: token, Delay: 250 * time.Millisecond}, r)
					return nil
				}
			},
			wantJSON: `{"success":true}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.verb+"/"+tt.body, func(t *testing.T) {
			t.Parallel()
			f := &leasetest.FakeDispatcher{}
			tt.setup(t, f)
			rec := call(newHandler(t, f, transport.HandlerConfig{}), tt.verb, tt.body)
			require.JSONEq(t, tt.wantJSON, requireOK(t, rec))
			require.Equal(t, strconv.Itoa(rec.Body.Len()), rec.Header().Get("Content-Length"))
		})
	}
}

// TestHandlerRequestRules covers the method, header and body rules of
// the protocol that refuse a request before (or instead of) the Dispatcher.
func TestHandlerRequestRules(t *testing.T) {
	t.Parallel()
	const (
		badArg  = http.StatusBadRequest
		invalid = resourcelease.StatusInvalidArgument
	)
	stats := transport.Procedure("", transport.VerbStats)
	tests := []struct {
		name       string
		opts       transport.HandlerConfig
		method     string
		headers    hdr
		body       string
		wantHTTP   int // 200 means success
		wantStatus resourcelease.Status
		wantCode   string
	}{
		{name: "GET", method: http.MethodGet, headers: hdr{transport.HeaderProcedure: stats},
			wantHTTP: http.StatusMethodNotAllowed, wantStatus: invalid, wantCode: transport.CodeMethodNotAllowed},
		{name: "PUT", method: http.MethodPut, headers: hdr{transport.HeaderProcedure: stats},
			wantHTTP: http.StatusMethodNotAllowed, wantStatus: invalid, wantCode: transport.CodeMethodNotAllowed},
		{name: "missing procedure", headers: hdr{},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeProcedureRequired},
		{name: "blank procedure", headers: hdr{transport.HeaderProcedure: "  "},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeProcedureRequired},
		{name: "unknown verb", headers: hdr{transport.HeaderProcedure: "resourcelease::nope"},
			wantHTTP: http.StatusNotFound, wantStatus: resourcelease.StatusNotFound, wantCode: transport.CodeUnknownProcedure},
		{name: "other namespace", headers: hdr{transport.HeaderProcedure: "other::stats"},
			wantHTTP: http.StatusNotFound, wantStatus: resourcelease.StatusNotFound, wantCode: transport.CodeUnknownProcedure},
		{name: "verb without namespace", headers: hdr{transport.HeaderProcedure: "stats"},
			wantHTTP: http.StatusNotFound, wantStatus: resourcelease.StatusNotFound, wantCode: transport.CodeUnknownProcedure},
		{name: "custom namespace", opts: transport.HandlerConfig{Namespace: "resourcelease.mesh"},
			headers: hdr{transport.HeaderProcedure: "resourcelease.mesh::stats"}, wantHTTP: 200},
		{name: "default namespace refused under a custom one", opts: transport.HandlerConfig{Namespace: "resourcelease.mesh"},
			headers:  hdr{transport.HeaderProcedure: stats},
			wantHTTP: http.StatusNotFound, wantStatus: resourcelease.StatusNotFound, wantCode: transport.CodeUnknownProcedure},
		{name: "service matches", opts: transport.HandlerConfig{Service: "mesh"},
			headers: hdr{transport.HeaderProcedure: stats, transport.HeaderService: "mesh"}, wantHTTP: 200},
		{name: "service absent", opts: transport.HandlerConfig{Service: "mesh"},
			headers: hdr{transport.HeaderProcedure: stats}, wantHTTP: 200},
		{name: "service differs", opts: transport.HandlerConfig{Service: "mesh"},
			headers:  hdr{transport.HeaderProcedure: stats, transport.HeaderService: "other"},
			wantHTTP: http.StatusNotFound, wantStatus: resourcelease.StatusNotFound, wantCode: transport.CodeUnknownService},
		{name: "any service when none configured",
			headers: hdr{transport.HeaderProcedure: stats, transport.HeaderService: "whatever"}, wantHTTP: 200},
		{name: "encoding json", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderEncoding: "json"}, wantHTTP: 200},
		{name: "encoding application/json", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderEncoding: "application/json"}, wantHTTP: 200},
		{name: "encoding with charset", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderEncoding: "Application/JSON; charset=utf-8"}, wantHTTP: 200},
		{name: "encoding proto", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderEncoding: "proto"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeUnsupportedEncoding},
		{name: "encoding raw", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderEncoding: "raw"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeUnsupportedEncoding},
		{name: "ttl not a number", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderTTLMs: "soon"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeInvalidDeadline},
		{name: "ttl fractional", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderTTLMs: "1.5"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeInvalidDeadline},
		{name: "ttl negative", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderTTLMs: "-5"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeInvalidDeadline},
		{name: "ttl zero", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderTTLMs: "0"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeInvalidDeadline},
		{name: "ttl overflows int64", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderTTLMs: "99999999999999999999"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeInvalidDeadline},
		{name: "ttl overflows a duration", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderTTLMs: "9223372036854775807"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeInvalidDeadline},
		{name: "context ttl negative", headers: hdr{transport.HeaderProcedure: stats, "Context-TTL-MS": "-1"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeInvalidDeadline},
		{name: "context ttl valid", headers: hdr{transport.HeaderProcedure: stats, "Context-TTL-MS": "1000"}, wantHTTP: 200},
		{name: "deadline not RFC 3339", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderDeadline: "tomorrow"},
			wantHTTP: badArg, wantStatus: invalid, wantCode: transport.CodeInvalidDeadline},
		{name: "deadline passed", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderDeadline: "2001-01-01T00:00:00Z"},
			wantHTTP: http.StatusGatewayTimeout, wantStatus: resourcelease.StatusDeadlineExceeded, wantCode: resourcelease.CodeDeadlineExceeded},
		{name: "huge ttl is capped, not refused", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderTTLMs: "9223372036854"}, wantHTTP: 200},
		{name: "far deadline is capped, not refused", headers: hdr{transport.HeaderProcedure: stats, transport.HeaderDeadline: "9999-12-31T23:59:59.999999999Z"}, wantHTTP: 200},
		{name: "empty body is {}", headers: hdr{transport.HeaderProcedure: stats}, body: "", wantHTTP: 200},
		{name: "white space body is {}", headers: hdr{transport.HeaderProcedure: stats}, body: " \n\t", wantHTTP: 200},
		{name: "null body is {}", headers: hdr{transport.HeaderProcedure: stats}, body: "null", wantHTTP: 200},
		{name: "unknown fields ignored", headers: hdr{transport.HeaderProcedure: stats}, body: `{"future":{"x":[1,2]}}`, wantHTTP: 200},
		{name: "malformed JSON", headers: hdr{transport.HeaderProcedure: stats}, body: `{`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeInvalidArgument},
		{name: "trailing garbage", headers: hdr{transport.HeaderProcedure: stats}, body: `{} x`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeInvalidArgument},
		{name: "array body", headers: hdr{transport.HeaderProcedure: stats}, body: `[]`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeInvalidArgument},
		{name: "wrong field type", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbLease)}, body: `{"waitMs":"soon"}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeInvalidArgument},
		{name: "waitMs overflows", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbLease)}, body: `{"waitMs":1e30}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeInvalidArgument},
		{name: "negative waitMs", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbLease)}, body: `{"waitMs":-1}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeInvalidArgument},
		{name: "purge of nothing", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbPurge)}, body: `{}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeSelectionRequired},
		{name: "purge null", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbPurge)}, body: `null`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeSelectionRequired},
		{name: "purge of empty ids", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbPurge)}, body: `{"sequenceIds":[]}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeSelectionRequired},
		{name: "redrive of nothing", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbRedrive)}, body: ``,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeSelectionRequired},
		{name: "redrive of ids and all", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbRedrive)}, body: `{"sequenceIds":[1],"all":true}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeSelectionRequired},
		{name: "redrive all", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbRedrive)}, body: `{"all":true}`, wantHTTP: 200},
		{name: "negative delayMs", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbRelease)},
			body:     `{"ownershipToken":` + tokenJSON + `,"delayMs":-1}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeInvalidArgument},
		{name: "release without a token", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbRelease)}, body: `{}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeTokenRequired},
		{name: "body not base64", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbEnqueue)},
			body:     `{"payload":{"resourceType":"t","resourceId":"i","partitionKey":"p","payloadEncoding":"e","body":"***"}}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeInvalidArgument},
		{name: "enqueue without payload", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbEnqueue)}, body: `{}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodePayloadRequired},
		{name: "enqueue without resourceType", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbEnqueue)},
			body: `{"payload":{"resourceId":"i","partitionKey":"p","payloadEncoding":"e"}}`, wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeResourceTypeRequired},
		{name: "enqueue with blank resourceId", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbEnqueue)},
			body: `{"payload":{"resourceType":"t","resourceId":" ","partitionKey":"p","payloadEncoding":"e"}}`, wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeResourceIDRequired},
		{name: "enqueue without partitionKey", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbEnqueue)},
			body: `{"payload":{"resourceType":"t","resourceId":"i","payloadEncoding":"e"}}`, wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodePartitionKeyRequired},
		{name: "enqueue without payloadEncoding", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbEnqueue)},
			body: `{"payload":{"resourceType":"t","resourceId":"i","partitionKey":"p"}}`, wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeEncodingRequired},
		{name: "heartbeat without token", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbHeartbeat)}, body: `{}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeTokenRequired},
		{name: "complete with zero token", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbComplete)},
			body: `{"ownershipToken":{"sequenceId":0,"attempt":0,"leaseId":"00000000-0000-0000-0000-000000000000"}}`, wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeTokenRequired},
		{name: "fail without token", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbFail)}, body: `{"reason":"x"}`,
			wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeTokenRequired},
		{name: "token with bad lease id", headers: hdr{transport.HeaderProcedure: transport.Procedure("", transport.VerbComplete)},
			body: `{"ownershipToken":{"sequenceId":1,"attempt":1,"leaseId":"nope"}}`, wantHTTP: badArg, wantStatus: invalid, wantCode: resourcelease.CodeInvalidArgument},
		{name: "body over the limit", opts: transport.HandlerConfig{MaxBodyBytes: 16}, headers: hdr{transport.HeaderProcedure: stats},
			body: `{"padding":"0123456789"}`, wantHTTP: http.StatusTooManyRequests, wantStatus: resourcelease.StatusResourceExhausted, wantCode: transport.CodeBodyTooLarge},
		{name: "body at the limit", opts: transport.HandlerConfig{MaxBodyBytes: 16}, headers: hdr{transport.HeaderProcedure: stats},
			body: `{"padding":"01"}`, wantHTTP: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHandler(t, &leasetest.FakeDispatcher{}, tt.opts)
			method := tt.method
			if method == "" {
				method = http.MethodPost
			}
			rec := serve(h, method, tt.headers, tt.body)
			if tt.wantHTTP == http.StatusOK {
				requireOK(t, rec)
				return
			}
			requireError(t, rec, tt.wantHTTP, tt.wantStatus, tt.wantCode)
			if tt.wantHTTP == http.StatusMethodNotAllowed {
				require.Equal(t, http.MethodPost, rec.Header().Get("Allow"))
			}
			if tt.wantCode == transport.CodeBodyTooLarge {
				require.Equal(t, "close", rec.Header().Get("Connection"), "an oversized body is not drained")
			}
		})
	}
}

// TestHandlerBodyLimitUnknownLength checks the limit on a chunked body,
// whose length is not announced.
func TestHandlerBodyLimitUnknownLength(t *testing.T) {
	t.Parallel()
	h := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{MaxBodyBytes: 64})
	req := httptest.NewRequest(http.MethodPost, "/", io.MultiReader(strings.NewReader(`{"x":"`), strings.NewReader(strings.Repeat("a", 100)+`"}`)))
	req.ContentLength = -1
	req.Header.Set(transport.HeaderProcedure, transport.Procedure("", transport.VerbStats))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	requireError(t, rec, http.StatusTooManyRequests, resourcelease.StatusResourceExhausted, transport.CodeBodyTooLarge)
}

// TestHandlerDefaultBodyLimit checks the 4 MiB default.
func TestHandlerDefaultBodyLimit(t *testing.T) {
	t.Parallel()
	h := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{})
	pad := func(n int) string { return `{"x":"` + strings.Repeat("a", n-8) + `"}` }
	requireOK(t, call(h, transport.VerbStats, pad(transport.DefaultMaxBodyBytes)))
	requireError(t, call(h, transport.VerbStats, pad(transport.DefaultMaxBodyBytes+1)),
		http.StatusTooManyRequests, resourcelease.StatusResourceExhausted, transport.CodeBodyTooLarge)
}

// TestHandlerDeadline checks the deadline the Dispatcher's context gets.
func TestHandlerDeadline(t *testing.T) {
	t.Parallel()
	const maxTTL = time.Hour
	tests := []struct {
		name    string
		headers func(now time.Time) hdr
		want    time.Duration // from the request's arrival
	}{
		{"none: MaxTTL", func(time.Time) hdr { return hdr{} }, maxTTL},
		{"Rpc-Ttl-Ms", func(time.Time) hdr { return hdr{transport.HeaderTTLMs: "1500"} }, 1500 * time.Millisecond},
		{"Context-TTL-MS", func(time.Time) hdr { return hdr{"Context-TTL-MS": "2500"} }, 2500 * time.Millisecond},
		{"Rpc-Deadline", func(now time.Time) hdr {
			return hdr{transport.HeaderDeadline: now.Add(3 * time.Second).Format(time.RFC3339Nano)}
		}, 3 * time.Second},
		{"earliest wins", func(now time.Time) hdr {
			return hdr{transport.HeaderTTLMs: "9000", "Context-TTL-MS": "4000", transport.HeaderDeadline: now.Add(5 * time.Second).Format(time.RFC3339Nano)}
		}, 4 * time.Second},
		{"deadline earlier than ttl", func(now time.Time) hdr {
			return hdr{transport.HeaderTTLMs: "9000", transport.HeaderDeadline: now.Add(2 * time.Second).Format(time.RFC3339Nano)}
		}, 2 * time.Second},
		{"ttl capped", func(time.Time) hdr {
			return hdr{transport.HeaderTTLMs: strconv.Itoa(int(3 * maxTTL / time.Millisecond))}
		}, maxTTL},
		{"deadline capped", func(time.Time) hdr { return hdr{transport.HeaderDeadline: "9999-01-01T00:00:00Z"} }, maxTTL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan time.Time, 1)
			h := newHandler(t, &leasetest.FakeDispatcher{StatsFn: func(ctx context.Context, _ *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
				dl, ok := ctx.Deadline()
				require.True(t, ok, "the dispatcher's context has a deadline")
				got <- dl
				return &resourcelease.Stats{}, nil
			}}, transport.HandlerConfig{MaxTTL: maxTTL})
			before := time.Now()
			requireOK(t, call(h, transport.VerbStats, "", tt.headers(before)))
			after := time.Now()
			dl := <-got
			// RFC 3339 deadlines are exact; TTLs count from some instant
			// between before and after.
			require.False(t, dl.Before(before.Add(tt.want).Add(-time.Microsecond)), "deadline %v earlier than %v", dl, before.Add(tt.want))
			require.False(t, dl.After(after.Add(tt.want)), "deadline %v later than %v", dl, after.Add(tt.want))
		})
	}
}

// TestHandlerDeadlineExceededWhileWaiting lets a real deadline pass inside
// the Dispatcher.
func TestHandlerDeadlineExceededWhileWaiting(t *testing.T) {
	t.Parallel()
	h := newHandler(t, &leasetest.FakeDispatcher{LeaseFn: func(ctx context.Context, _ *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}, transport.HandlerConfig{})
	rec := call(h, transport.VerbLease, `{"waitMs":60000}`, hdr{transport.HeaderTTLMs: "20"})
	requireError(t, rec, http.StatusGatewayTimeout, resourcelease.StatusDeadlineExceeded, resourcelease.CodeDeadlineExceeded)
}

// TestHandlerLeaseWait checks that waitMs is cut to MaxWait.
func TestHandlerLeaseWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		maxWait time.Duration
		waitMs  int64
		want    int64
	}{
		{"no wait", 0, 0, 0},
		{"under the default", 0, 1500, 1500},
		{"over the default", 0, 120000, 60000},
		{"under the option", 2 * time.Second, 1999, 1999},
		{"over the option", 2 * time.Second, 1 << 50, 2000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := make(chan int64, 1)
			h := newHandler(t, &leasetest.FakeDispatcher{LeaseFn: func(_ context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
				got <- r.Wait.Milliseconds()
				return nil, nil
			}}, transport.HandlerConfig{MaxWait: tt.maxWait})
			require.Equal(t, "null", requireOK(t, call(h, transport.VerbLease, fmt.Sprintf(`{"waitMs":%d}`, tt.waitMs))))
			require.Equal(t, tt.want, <-got)
		})
	}
}

// TestHandlerCallInfo checks what the Dispatcher learns about the caller.
func TestHandlerCallInfo(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		headers  hdr
		body     string
		want     resourcelease.CallInfo
		wantPeer string
	}{
		{"all headers", hdr{transport.HeaderCaller: "seeder", "rpc-header-peer-id": "peer-7", "x-peer-id": "peer-9", transport.HeaderService: "mesh"}, `{}`,
			resourcelease.CallInfo{Caller: "seeder", PeerID: "peer-7", Service: "mesh"}, "peer-7"},
		{"explicit peer wins", hdr{transport.HeaderCaller: "seeder", transport.HeaderApplicationPeerID: "peer-7", "x-peer-id": "peer-9"}, `{"peerId":"w1"}`,
			resourcelease.CallInfo{Caller: "seeder", PeerID: "peer-7"}, "w1"},
		{"x-peer-id over the caller", hdr{transport.HeaderCaller: "seeder", "X-PEER-ID": "peer-9"}, `{}`,
			resourcelease.CallInfo{Caller: "seeder", PeerID: "peer-9"}, "peer-9"},
		{"the caller last", hdr{transport.HeaderCaller: "seeder"}, `{}`, resourcelease.CallInfo{Caller: "seeder"}, "seeder"},
		{"other application headers are no peer id", hdr{"Rpc-Header-Tenant": "t1", "Rpc-Header-Peer": "p"}, `{}`, resourcelease.CallInfo{}, ""},
		{"nothing", hdr{}, `{}`, resourcelease.CallInfo{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			type seen struct {
				ci   resourcelease.CallInfo
				peer string
			}
			got := make(chan seen, 1)
			h := newHandler(t, &leasetest.FakeDispatcher{LeaseFn: func(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
				ci := resourcelease.CallInfoFrom(ctx)
				got <- seen{ci, resourcelease.ResolvePeerID(r.PeerID, ci)}
				return nil, nil
			}}, transport.HandlerConfig{Service: "mesh"})
			requireOK(t, call(h, transport.VerbLease, tt.body, tt.headers))
			s := <-got
			require.Equal(t, tt.want, s.ci)
			require.Equal(t, tt.wantPeer, s.peer)
		})
	}
}

// TestHandlerErrors checks how each error from the Dispatcher goes on the
// wire.
func TestHandlerErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		err         error
		panicWith   any
		nilResponse bool
		wantHTTP    int
		wantStatus  resourcelease.Status
		wantCode    string
		wantMessage string
		wantMeta    map[string]string
		wantLog     string // in the log; never on the wire
	}{
		{name: "invalid-argument", err: resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodePendingItemRequired, "restore needs items"),
			wantHTTP: 400, wantStatus: resourcelease.StatusInvalidArgument, wantCode: resourcelease.CodePendingItemRequired, wantMessage: "restore needs items"},
		{name: "not-found unknown token", err: resourcelease.ErrUnknownToken,
			wantHTTP: 404, wantStatus: resourcelease.StatusNotFound, wantCode: resourcelease.CodeUnknownToken, wantMessage: resourcelease.ErrUnknownToken.Message},
		{name: "wrapped *Error", err: fmt.Errorf("queue: %w", resourcelease.ErrUnknownToken),
			wantHTTP: 404, wantStatus: resourcelease.StatusNotFound, wantCode: resourcelease.CodeUnknownToken, wantMessage: resourcelease.ErrUnknownToken.Message},
		{name: "resource-exhausted backpressure", err: resourcelease.ErrBackpressure,
			wantHTTP: 429, wantStatus: resourcelease.StatusResourceExhausted, wantCode: resourcelease.CodeBackpressure, wantMessage: resourcelease.ErrBackpressure.Message},
		{name: "resource-exhausted queue full", err: resourcelease.ErrQueueFull,
			wantHTTP: 429, wantStatus: resourcelease.StatusResourceExhausted, wantCode: resourcelease.CodeQueueFull, wantMessage: resourcelease.ErrQueueFull.Message},
		{name: "deadline-exceeded context error", err: context.DeadlineExceeded,
			wantHTTP: 504, wantStatus: resourcelease.StatusDeadlineExceeded, wantCode: resourcelease.CodeDeadlineExceeded, wantMessage: "deadline exceeded"},
		{name: "cancelled context error", err: fmt.Errorf("waiting: %w", context.Canceled),
			wantHTTP: 499, wantStatus: resourcelease.StatusCancelled, wantCode: resourcelease.CodeCancelled, wantMessage: "request cancelled"},
		{name: "unavailable closed", err: resourcelease.ErrClosed,
			wantHTTP: 503, wantStatus: resourcelease.StatusUnavailable, wantCode: resourcelease.CodeClosed, wantMessage: resourcelease.ErrClosed.Message},
		{name: "unavailable storage, cause kept off the wire",
			err:      &resourcelease.Error{Status: resourcelease.StatusUnavailable, Code: resourcelease.CodeStorageUnavailable, Message: "storage unavailable", Err: errors.New("disk I/O error at /var/secret.db")},
			wantHTTP: 503, wantStatus: resourcelease.StatusUnavailable, wantCode: resourcelease.CodeStorageUnavailable, wantMessage: "storage unavailable"},
		{name: "already-exists", err: resourcelease.ErrDuplicateSequence,
			wantHTTP: 409, wantStatus: resourcelease.StatusAlreadyExists, wantCode: resourcelease.CodeDuplicateSequence, wantMessage: resourcelease.ErrDuplicateSequence.Message},
		{name: "failed-precondition", err: resourcelease.ErrPeerIneligible,
			wantHTTP: 400, wantStatus: resourcelease.StatusFailedPrecondition, wantCode: resourcelease.CodePeerIneligible, wantMessage: resourcelease.ErrPeerIneligible.Message},
		{name: "permission-denied", err: resourcelease.Errorf(resourcelease.StatusPermissionDenied, "app.denied", "no"),
			wantHTTP: 403, wantStatus: resourcelease.StatusPermissionDenied, wantCode: "app.denied", wantMessage: "no"},
		{name: "unauthenticated", err: resourcelease.Errorf(resourcelease.StatusUnauthenticated, "app.who", "who are you"),
			wantHTTP: 401, wantStatus: resourcelease.StatusUnauthenticated, wantCode: "app.who", wantMessage: "who are you"},
		{name: "unimplemented", err: resourcelease.Errorf(resourcelease.StatusUnimplemented, "app.later", "not yet"),
			wantHTTP: 501, wantStatus: resourcelease.StatusUnimplemented, wantCode: "app.later", wantMessage: "not yet"},
		{name: "internal *Error keeps its message", err: resourcelease.Errorf(resourcelease.StatusInternal, resourcelease.CodeReplicationFailed, "replication failed at 42"),
			wantHTTP: 500, wantStatus: resourcelease.StatusInternal, wantCode: resourcelease.CodeReplicationFailed, wantMessage: "replication failed at 42"},
		{name: "metadata", err: &resourcelease.Error{Status: resourcelease.StatusResourceExhausted, Code: resourcelease.CodeRateLimited, Message: "slow down", Metadata: map[string]string{"retryAfterMs": "200"}},
			wantHTTP: 429, wantStatus: resourcelease.StatusResourceExhausted, wantCode: resourcelease.CodeRateLimited, wantMessage: "slow down", wantMeta: map[string]string{"retryAfterMs": "200"}},
		{name: "unknown status becomes internal", err: &resourcelease.Error{Status: "weird", Code: "app.weird", Message: "odd"},
			wantHTTP: 500, wantStatus: resourcelease.StatusInternal, wantCode: "app.weird", wantMessage: "odd"},
		{name: "foreign error is generic internal", err: errors.New("pq: password authentication failed for user hunter2"),
			wantHTTP: 500, wantStatus: resourcelease.StatusInternal, wantCode: resourcelease.CodeInternal, wantMessage: "internal error", wantLog: "hunter2"},
		{name: "panic is recovered", panicWith: "nil map write in secret-module",
			wantHTTP: 500, wantStatus: resourcelease.StatusInternal, wantCode: resourcelease.CodeInternal, wantMessage: "internal error", wantLog: "secret-module"},
		{name: "nil response without error", nilResponse: true,
			wantHTTP: 500, wantStatus: resourcelease.StatusInternal, wantCode: resourcelease.CodeInternal, wantMessage: "internal error", wantLog: "neither a response nor an error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logs logBuffer
			h := newHandler(t, &leasetest.FakeDispatcher{StatsFn: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
				if tt.panicWith != nil {
					panic(tt.panicWith)
				}
				if tt.nilResponse {
					return nil, nil
				}
				return nil, tt.err
			}}, transport.HandlerConfig{Logger: logs.logger()})
			rec := call(h, transport.VerbStats, "")
			we := requireError(t, rec, tt.wantHTTP, tt.wantStatus, tt.wantCode)
			require.Equal(t, tt.wantMessage, we.Message)
			if tt.wantMeta != nil {
				require.Equal(t, tt.wantMeta, we.Metadata)
			}
			wire := rec.Body.String() + fmt.Sprint(rec.Header())
			require.NotContains(t, wire, "goroutine", "no stack trace on the wire")
			require.NotContains(t, wire, "/var/secret.db")
			if tt.wantLog != "" {
				require.NotContains(t, wire, tt.wantLog)
				require.Contains(t, logs.String(), tt.wantLog)
			}
		})
	}
}

// TestHandlerErrorMessageHeader checks that a message that is not a valid
// header value is cleaned in Rpc-Error-Message and kept whole in the body.
func TestHandlerErrorMessageHeader(t *testing.T) {
	t.Parallel()
	msg := "line one\r\nline two\x00 " + strings.Repeat("é", 1000)
	h := newHandler(t, &leasetest.FakeDispatcher{StatsFn: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, "app.bad", "%s", msg)
	}}, transport.HandlerConfig{})
	rec := call(h, transport.VerbStats, "")
	require.Equal(t, http.StatusBadRequest, rec.Code)
	got := rec.Header().Get(transport.HeaderErrorMessage)
	require.True(t, strings.HasPrefix(got, "line one  line two  é"), "header %q", got)
	require.LessOrEqual(t, len(got), 1024)
	require.NotContains(t, got, "\n")
	require.Contains(t, rec.Body.String(), `line one\r\nline two\u0000`)
}

// TestHandlerMiddleware checks the order of Middleware, OnlyProcedures and a
// refusal written with WriteError.
func TestHandlerMiddleware(t *testing.T) {
	t.Parallel()
	var order []string
	tag := func(name string) func(http.Handler) http.Handler {
		return func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				order = append(order, name)
				next.ServeHTTP(w, r)
			})
		}
	}
	refuse := func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			transport.WriteError(w, resourcelease.ErrRateLimited)
		})
	}
	h := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{Middleware: []func(http.Handler) http.Handler{
		tag("outer"), transport.OnlyProcedures(refuse, transport.Procedure("", transport.VerbEnqueue)), tag("inner"),
	}})
	requireOK(t, call(h, transport.VerbStats, ""))
	require.Equal(t, []string{"outer", "inner"}, order)
	requireError(t, call(h, transport.VerbEnqueue, `{"payload":`+itemJSON+`}`),
		http.StatusTooManyRequests, resourcelease.StatusResourceExhausted, resourcelease.CodeRateLimited)
	require.Equal(t, []string{"outer", "inner", "outer"}, order, "the refusing middleware stops the chain")

	// A middleware's refusal is marked for a client that accepts both
	// response and error, as the handler's own are; a plain-text one is not.
	rec := call(h, transport.VerbEnqueue, `{}`, hdr{transport.HeaderAcceptsBothResponseError: "true"})
	require.Equal(t, "true", rec.Header().Get(transport.HeaderBothResponseError))
	plain := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{Middleware: []func(http.Handler) http.Handler{
		func(http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "go away", http.StatusTeapot) })
		},
	}})
	rec = call(plain, transport.VerbStats, ``, hdr{transport.HeaderAcceptsBothResponseError: "true"})
	require.Equal(t, http.StatusTeapot, rec.Code)
	require.Empty(t, rec.Header().Get(transport.HeaderBothResponseError), "its body is its message")
}

// TestWriteErrorForeign checks that WriteError hides foreign errors.
func TestWriteErrorForeign(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	transport.WriteError(rec, errors.New("secret detail"))
	we := requireError(t, rec, http.StatusInternalServerError, resourcelease.StatusInternal, resourcelease.CodeInternal)
	require.Equal(t, "internal error", we.Message)
	require.NotContains(t, rec.Body.String(), "secret")
}

// TestNewHandlerOptions checks that bad options are errors, not panics.
func TestNewHandlerOptions(t *testing.T) {
	t.Parallel()
	identity := func(next http.Handler) http.Handler { return next }
	tests := []struct {
		name    string
		d       resourcelease.Dispatcher
		opts    transport.HandlerConfig
		wantErr string
	}{
		{name: "zero options", d: &leasetest.FakeDispatcher{}},
		{name: "all set", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{Service: "mesh", Namespace: "resourcelease.mesh",
			MaxBodyBytes: 1, MaxWait: time.Millisecond, MaxTTL: time.Millisecond, Middleware: []func(http.Handler) http.Handler{identity}}},
		{name: "nil dispatcher", wantErr: "nil Dispatcher"},
		{name: "namespace with ::", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{Namespace: "a::b"}, wantErr: "Namespace"},
		{name: "namespace with space", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{Namespace: "a b"}, wantErr: "Namespace"},
		{name: "service with space", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{Service: "mesh "}, wantErr: "Service"},
		{name: "negative body limit", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{MaxBodyBytes: -1}, wantErr: "MaxBodyBytes"},
		{name: "negative max wait", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{MaxWait: -time.Second}, wantErr: "MaxWait"},
		{name: "negative max ttl", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{MaxTTL: -time.Second}, wantErr: "MaxTTL"},
		{name: "nil middleware", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{Middleware: []func(http.Handler) http.Handler{nil}}, wantErr: "Middleware[0]"},
		{name: "OnlyProcedures(nil)", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{Middleware: []func(http.Handler) http.Handler{
			identity, transport.OnlyProcedures(nil, "x::y")}}, wantErr: "Middleware[1]"},
		{name: "middleware returning nil", d: &leasetest.FakeDispatcher{}, opts: transport.HandlerConfig{Middleware: []func(http.Handler) http.Handler{
			func(http.Handler) http.Handler { return nil }}}, wantErr: "Middleware[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, err := transport.NewHandler(tt.d, tt.opts)
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.NotNil(t, h)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
			require.Nil(t, h)
		})
	}
}

// TestProcedureNames checks Procedure, SplitProcedure and Verbs.
func TestProcedureNames(t *testing.T) {
	t.Parallel()
	require.Equal(t, "resourcelease::lease", transport.Procedure("", transport.VerbLease))
	require.Equal(t, "resourcelease.mesh::enqueue", transport.Procedure("resourcelease.mesh", transport.VerbEnqueue))
	require.Len(t, transport.Verbs(), 16)
	tests := []struct {
		in       string
		ns, verb string
		ok       bool
	}{
		{"resourcelease.mesh::enqueue", "resourcelease.mesh", "enqueue", true},
		{"a::b::c", "a::b", "c", true},
		{"enqueue", "", "", false},
		{"::enqueue", "", "", false},
		{"ns::", "", "", false},
		{"", "", "", false},
	}
	for _, tt := range tests {
		ns, verb, ok := transport.SplitProcedure(tt.in)
		require.Equal(t, []any{tt.ns, tt.verb, tt.ok}, []any{ns, verb, ok}, "SplitProcedure(%q)", tt.in)
	}
}
