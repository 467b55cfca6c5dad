package transport_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

var update = flag.Bool("update", false, "rewrite transport/testdata/golden/*.json from the current encoding")

// TestGoldenWireFormat pins the JSON of every request and response type, the
// null lease and the error body in testdata/golden. A change to the wire
// format shows up as a diff there; run `go test ./transport -run Golden
// -update` to accept it.
func TestGoldenWireFormat(t *testing.T) {
	t.Parallel()
	first := resourcelease.PendingItem{Payload: item, Attempt: 1, EnqueuedAt: t0, SequenceID: 7}
	retriedToken := resourcelease.OwnershipToken{SequenceID: 8, Attempt: 2, LeaseID: leaseID}
	retried := resourcelease.PendingItem{Payload: item, Attempt: 3, EnqueuedAt: t0, SequenceID: 8,
		LastError:          &resourcelease.ErrorInfo{Message: "db timeout", Code: "app.db_timeout"},
		LastOwnershipToken: &retriedToken, ReadyAt: t0.Add(1500 * time.Millisecond)}
	lease := resourcelease.Lease{Payload: item, SequenceID: 7, Attempt: 2, EnqueuedAt: t0,
		LastError:      &resourcelease.ErrorInfo{Message: "lease expired without a heartbeat", Code: resourcelease.CodeLeaseExpired},
		OwnershipToken: token, OwnerPeerID: "worker-1", LeaseExpiresAt: t0.Add(30 * time.Second),
		TTL: 30 * time.Second, HeartbeatInterval: 5 * time.Second}
	firstLease := lease
	firstLease.Attempt, firstLease.LastError = 1, nil
	firstLease.OwnershipToken.Attempt = 1
	scheduled := item
	scheduled.NotBefore = t0.Add(time.Hour)
	scheduledLease := firstLease
	scheduledLease.Payload = scheduled
	delayed := resourcelease.PendingItem{Payload: scheduled, Attempt: 1, EnqueuedAt: t0, SequenceID: 9, ReadyAt: scheduled.NotBefore}

	tests := []struct {
		name  string
		value any // encoded with encoding/json, as the handler and client do
	}{
		{"enqueue_request", &resourcelease.EnqueueRequest{Payload: &item}},
		{"enqueue_response", &resourcelease.EnqueueResponse{Stats: resourcelease.QueueCounts{PendingCount: 3, ActiveLeaseCount: 1}, SequenceID: 7}},
		{"enqueue_response_duplicate", &resourcelease.EnqueueResponse{Stats: resourcelease.QueueCounts{PendingCount: 3}, SequenceID: 7, Duplicate: true}},
		{"enqueue_request_delayed", &resourcelease.EnqueueRequest{Payload: &scheduled, Delay: 90 * time.Second}},
		{"enqueue_response_delayed", &resourcelease.EnqueueResponse{Stats: resourcelease.QueueCounts{PendingCount: 3}, SequenceID: 9, NotBefore: scheduled.NotBefore}},
		{"enqueue_batch_request_delayed", &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{scheduled, item}, Delay: 5 * time.Second}},
		{"enqueue_batch_response_delayed", &resourcelease.EnqueueBatchResponse{Results: []resourcelease.EnqueueItemResult{
			{SequenceID: 9, NotBefore: scheduled.NotBefore}, {SequenceID: 10, NotBefore: t0.Add(5 * time.Second)},
		}, Stats: resourcelease.QueueCounts{PendingCount: 2}}},
		{"lease_response_scheduled", &scheduledLease},
		{"drain_response_delayed", &resourcelease.DrainResponse{Items: []resourcelease.PendingItem{delayed}}},
		{"stats_response_delayed", &resourcelease.Stats{PendingCount: 12, DelayedCount: 4, ActiveLeaseCount: 3}},
		{"lease_request", &resourcelease.LeaseRequest{PeerID: "worker-1", Wait: 10 * time.Second}},
		{"lease_request_empty", &resourcelease.LeaseRequest{}},
		{"lease_response", &lease},
		{"lease_response_first_delivery", &firstLease},
		{"heartbeat_request", &resourcelease.HeartbeatRequest{OwnershipToken: token}},
		{"heartbeat_response", &resourcelease.HeartbeatResponse{LeaseExpiresAt: t0.Add(30 * time.Second), TTL: 30 * time.Second}},
		{"complete_request", &resourcelease.CompleteRequest{OwnershipToken: token}},
		{"fail_request", &resourcelease.FailRequest{OwnershipToken: token, Reason: "db timeout", ErrorCode: "app.db_timeout",
			Metadata: map[string]string{"host": "db-2"}}},
		{"fail_request_dead_letter", &resourcelease.FailRequest{OwnershipToken: token, Reason: "poison", DeadLetter: true}},
		{"release_request", &resourcelease.ReleaseRequest{OwnershipToken: token}},
		{"release_request_delayed", &resourcelease.ReleaseRequest{OwnershipToken: token, Delay: 30 * time.Second}},
		{"enqueue_batch_request", &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{item, item}}},
		{"enqueue_batch_response", &resourcelease.EnqueueBatchResponse{Results: []resourcelease.EnqueueItemResult{
			{SequenceID: 7}, {SequenceID: 3, Duplicate: true},
			{Err: &resourcelease.Error{Status: resourcelease.StatusInvalidArgument, Code: resourcelease.CodePartitionKeyRequired, Message: "payload.partitionKey is required"}},
			{Err: &resourcelease.Error{Status: resourcelease.StatusResourceExhausted, Code: resourcelease.CodeQueueFull, Message: "queue is at capacity (512 pending)"}},
		}, Stats: resourcelease.QueueCounts{PendingCount: 4, ActiveLeaseCount: 1}}},
		{"lease_batch_request", &resourcelease.LeaseBatchRequest{PeerID: "worker-1", Wait: 10 * time.Second, MaxItems: 32, MaxBytes: 1 << 20}},
		{"lease_batch_response", &resourcelease.LeaseBatchResponse{Items: []*resourcelease.Lease{&firstLease, &lease}}},
		{"lease_batch_response_empty", &resourcelease.LeaseBatchResponse{Items: []*resourcelease.Lease{}}},
		{"heartbeat_batch_request", &resourcelease.HeartbeatBatchRequest{OwnershipTokens: []resourcelease.OwnershipToken{token, retriedToken}}},
		{"heartbeat_batch_response", &resourcelease.HeartbeatBatchResponse{Results: []resourcelease.HeartbeatResult{
			{HeartbeatResponse: resourcelease.HeartbeatResponse{LeaseExpiresAt: t0.Add(30 * time.Second), TTL: 30 * time.Second}},
			{Err: &resourcelease.Error{Status: resourcelease.StatusNotFound, Code: resourcelease.CodeUnknownToken, Message: "unknown or expired ownership token"}},
		}}},
		{"complete_batch_request", &resourcelease.CompleteBatchRequest{OwnershipTokens: []resourcelease.OwnershipToken{token, retriedToken}}},
		{"complete_batch_response", &resourcelease.CompleteBatchResponse{Results: []error{
			nil, &resourcelease.Error{Status: resourcelease.StatusNotFound, Code: resourcelease.CodeUnknownToken, Message: "unknown or expired ownership token"},
		}}},
		{"drain_request", &resourcelease.DrainRequest{}},
		{"drain_response", &resourcelease.DrainResponse{Items: []resourcelease.PendingItem{first, retried}}},
		{"drain_response_empty", &resourcelease.DrainResponse{Items: []resourcelease.PendingItem{}}},
		{"drain_request_paged", &resourcelease.DrainRequest{Limit: 100, MaxBytes: 3 << 20}},
		{"drain_response_paged", &resourcelease.DrainResponse{Items: []resourcelease.PendingItem{first}, More: true}},
		{"restore_request", &resourcelease.RestoreRequest{Items: []resourcelease.PendingItem{first, retried}}},
		{"restore_response", &resourcelease.RestoreResponse{RestoredCount: 2}},
		{"stats_request", &resourcelease.StatsRequest{}},
		{"stats_response", &resourcelease.Stats{PendingCount: 12, ActiveLeaseCount: 3, DeadLetterCount: 1, BackpressureActive: true}},
		{"deadletters_request", &resourcelease.DeadLettersRequest{Limit: 50}},
		{"deadletters_response", &resourcelease.DeadLettersResponse{Items: []resourcelease.DeadLetter{
			{PendingItem: retried, DeadLetteredAt: t0.Add(time.Minute), Reason: "max delivery attempts exceeded"}}}},
		{"redrive_request", &resourcelease.RedriveRequest{SequenceIDs: []int64{8, 9}}},
		{"redrive_request_all", &resourcelease.RedriveRequest{All: true}},
		{"redrive_response", &resourcelease.RedriveResponse{RedrivenCount: 2}},
		{"purge_request", &resourcelease.PurgeRequest{SequenceIDs: []int64{8}}},
		{"purge_request_all", &resourcelease.PurgeRequest{All: true}},
		{"purge_response", &resourcelease.PurgeResponse{PurgedCount: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			raw, err := json.Marshal(tt.value)
			require.NoError(t, err)
			checkGolden(t, tt.name, raw)
			requireWireConventions(t, raw)
			// The golden file decodes back to the same value.
			back := reflect.New(reflect.TypeOf(tt.value).Elem()).Interface()
			require.NoError(t, json.Unmarshal(readGolden(t, tt.name), back))
			require.Equal(t, tt.value, back)
		})
	}

	// The shapes only the handler produces.
	t.Run("lease_response_none", func(t *testing.T) {
		t.Parallel()
		rec := call(newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{}), transport.VerbLease, `{"waitMs":1}`)
		checkGolden(t, "lease_response_none", []byte(requireOK(t, rec)))
	})
	// The handler encodes leases on a path of its own (not through
	// Lease.MarshalJSON): the bytes must be the golden ones all the same, and
	// the Client must decode them back to the same leases.
	t.Run("lease_response_from_the_handler", func(t *testing.T) {
		t.Parallel()
		for name, l := range map[string]*resourcelease.Lease{"lease_response": &lease, "lease_response_first_delivery": &firstLease} {
			f := &leasetest.FakeDispatcher{LeaseFn: func(context.Context, *resourcelease.LeaseRequest) (*resourcelease.Lease, error) { return l, nil }}
			checkGolden(t, name, []byte(requireOK(t, call(newHandler(t, f, transport.HandlerConfig{}), transport.VerbLease, `{}`))))
			got, err := newClientServer(t, f, transport.HandlerConfig{}, transport.ClientConfig{}).Lease(context.Background(), nil)
			require.NoError(t, err)
			require.Equal(t, l, got)
		}
	})
	t.Run("lease_batch_response_from_the_handler", func(t *testing.T) {
		t.Parallel()
		f := &leasetest.FakeDispatcher{LeaseBatchFn: func(context.Context, *resourcelease.LeaseBatchRequest) ([]*resourcelease.Lease, error) {
			return []*resourcelease.Lease{&firstLease, &lease}, nil
		}}
		checkGolden(t, "lease_batch_response", []byte(requireOK(t, call(newHandler(t, f, transport.HandlerConfig{}), transport.VerbLeaseBatch, `{"maxItems":2}`))))
		got, err := newClientServer(t, f, transport.HandlerConfig{}, transport.ClientConfig{}).LeaseBatch(context.Background(), &resourcelease.LeaseBatchRequest{MaxItems: 2})
		require.NoError(t, err)
		require.Equal(t, []*resourcelease.Lease{&firstLease, &lease}, got)
	})
	for _, verb := range []string{transport.VerbComplete, transport.VerbFail, transport.VerbRelease} {
		t.Run(verb+"_response", func(t *testing.T) {
			t.Parallel()
			rec := call(newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{}), verb, string(readGolden(t, verb+"_request")))
			checkGolden(t, verb+"_response", []byte(requireOK(t, rec)))
		})
	}
	t.Run("error", func(t *testing.T) {
		t.Parallel()
		rec := httptest.NewRecorder()
		transport.WriteError(rec, &resourcelease.Error{Status: resourcelease.StatusNotFound, Code: resourcelease.CodeUnknownToken,
			Message: "unknown or expired ownership token", Metadata: map[string]string{"sequenceId": "7"}})
		checkGolden(t, "error", rec.Body.Bytes())
		requireWireConventions(t, rec.Body.Bytes())
	})
	t.Run("error_without_metadata", func(t *testing.T) {
		t.Parallel()
		rec := httptest.NewRecorder()
		transport.WriteError(rec, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeResourceTypeRequired, "payload.resourceType is required"))
		checkGolden(t, "error_without_metadata", rec.Body.Bytes())
	})
}

func goldenPath(name string) string { return filepath.Join("testdata", "golden", name+".json") }

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(goldenPath(name))
	require.NoError(t, err, "run with -update to create it")
	return b
}

// checkGolden compares raw (indented) with the golden file, or rewrites the
// file under -update.
func checkGolden(t *testing.T, name string, raw []byte) {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, json.Indent(&buf, raw, "", "  "))
	buf.WriteByte('\n')
	if *update {
		require.NoError(t, os.MkdirAll(filepath.Dir(goldenPath(name)), 0o755))
		require.NoError(t, os.WriteFile(goldenPath(name), buf.Bytes(), 0o644))
		return
	}
	require.Equal(t, string(readGolden(t, name)), buf.String(), "wire format of %s changed; rerun with -update if intended", name)
}

var (
	camelCase   = regexp.MustCompile(`^[a-z][a-zA-Z0-9]*$`)
	rfc3339Nano = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z$`)
	timeKey     = regexp.MustCompile(`At$`)
)

// requireWireConventions checks the protocol's JSON conventions on an encoded
// value: camelCase names, times in RFC 3339 with (up to nano) fractions, body
// in base64.
func requireWireConventions(t *testing.T, raw []byte) {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(raw, &v))
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, child := range v {
				require.Regexp(t, camelCase, k, "name at %s", path)
				if s, ok := child.(string); ok && timeKey.MatchString(k) {
					require.Regexp(t, rfc3339Nano, s, "time %s.%s", path, k)
				}
				if k == "body" {
					require.Equal(t, "eyJhIjoxfQ==", child, "base64 body at %s", path)
				}
				walk(path+"."+k, child)
			}
		case []any:
			for _, child := range v {
				walk(path+"[]", child)
			}
		}
	}
	walk("$", v)
}
