package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

// TestBatchProceduresOverTheWire runs every batch procedure through Client
// → handler → LocalDispatcher, with per-item refusals crossing the wire as
// *resourcelease.Error (errors.Is holds).
func TestBatchProceduresOverTheWire(t *testing.T) {
	t.Parallel()
	local, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	c := newClientServer(t, local, transport.HandlerConfig{}, transport.ClientConfig{Caller: "w"})
	ctx := context.Background()
	bad := item
	bad.ResourceID = ""
	payloads := []resourcelease.Item{item, bad}
	for i := range 3 {
		it := item
		it.ResourceID, it.RequestID = fmt.Sprint("order-", i), ""
		payloads = append(payloads, it)
	}
	er, err := c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: payloads})
	require.NoError(t, err)
	require.Len(t, er.Results, 5)
	assert.NoError(t, er.Results[0].Err)
	assert.ErrorIs(t, er.Results[1].Err, &resourcelease.Error{Code: resourcelease.CodeResourceIDRequired})
	assert.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.StatusOf(er.Results[1].Err))
	assert.Equal(t, 4, er.Stats.PendingCount)

	leases, err := c.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{MaxItems: 3})
	require.NoError(t, err)
	require.Len(t, leases, 3)
	for _, l := range leases {
		assert.Equal(t, "w", l.OwnerPeerID, "the caller is the peer")
		assert.Equal(t, resourcelease.DefaultLeaseDuration, l.TTL)
	}
	tokens := []resourcelease.OwnershipToken{leases[0].OwnershipToken, leases[1].OwnershipToken}
	hb, err := c.HeartbeatBatch(ctx, &resourcelease.HeartbeatBatchRequest{OwnershipTokens: append(tokens, resourcelease.OwnershipToken{})})
	require.NoError(t, err)
	require.Len(t, hb, 3)
	assert.NoError(t, hb[0].Err)
	assert.Equal(t, resourcelease.DefaultLeaseDuration, hb[1].TTL)
	assert.ErrorIs(t, hb[2].Err, &resourcelease.Error{Code: resourcelease.CodeTokenRequired})

	errs, err := c.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: append(tokens, tokens[0])})
	require.NoError(t, err)
	require.Len(t, errs, 3)
	assert.NoError(t, errs[0])
	assert.NoError(t, errs[1])
	assert.ErrorIs(t, errs[2], resourcelease.ErrUnknownToken)
	st, err := local.Stats(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, resourcelease.Stats{PendingCount: 1, ActiveLeaseCount: 1}, *st)
}

// TestBatchRequestRules: batches over the limit and bad leaseBatch fields are
// refused by the handler before the Dispatcher.
func TestBatchRequestRules(t *testing.T) {
	t.Parallel()
	var called atomic.Bool
	f := &leasetest.FakeDispatcher{
		EnqueueBatchFn: func(context.Context, *resourcelease.EnqueueBatchRequest) (*resourcelease.EnqueueBatchResponse, error) {
			called.Store(true)
			return &resourcelease.EnqueueBatchResponse{}, nil
		},
		LeaseBatchFn: func(context.Context, *resourcelease.LeaseBatchRequest) ([]*resourcelease.Lease, error) {
			called.Store(true)
			return nil, nil
		},
	}
	h := newHandler(t, f, transport.HandlerConfig{})
	many := strings.TrimSuffix(strings.Repeat(tokenJSON+",", resourcelease.MaxBatchItems+1), ",")
	for _, tt := range []struct {
		verb, body, code string
	}{
		{transport.VerbEnqueueBatch, `{"payloads":[` + strings.TrimSuffix(strings.Repeat(itemJSON+",", resourcelease.MaxBatchItems+1), ",") + `]}`, resourcelease.CodeBatchTooLarge},
		{transport.VerbLeaseBatch, `{}`, resourcelease.CodeBatchTooLarge},
		{transport.VerbLeaseBatch, `{"maxItems":1001}`, resourcelease.CodeBatchTooLarge},
		{transport.VerbLeaseBatch, `{"maxItems":2,"waitMs":-1}`, resourcelease.CodeInvalidArgument},
		{transport.VerbLeaseBatch, `{"maxItems":2,"maxBytes":-1}`, resourcelease.CodeInvalidArgument},
		{transport.VerbLeaseBatch, `{"maxItems":2,"peerId":"` + strings.Repeat("p", 300) + `"}`, transport.CodePeerIDTooLong},
		{transport.VerbHeartbeatBatch, `{"ownershipTokens":[` + many + `]}`, resourcelease.CodeBatchTooLarge},
		{transport.VerbCompleteBatch, `{"ownershipTokens":[` + many + `]}`, resourcelease.CodeBatchTooLarge},
	} {
		t.Run(tt.verb+"/"+tt.code, func(t *testing.T) {
			rec := call(h, tt.verb, tt.body)
			require.Equal(t, http.StatusBadRequest, rec.Code, rec.Body.String())
			assert.Contains(t, rec.Body.String(), tt.code)
		})
	}
	assert.False(t, called.Load(), "nothing reached the dispatcher")
	// An empty enqueueBatch is fine: no results.
	rec := call(newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{}), transport.VerbEnqueueBatch, `{"payloads":[]}`)
	assert.JSONEq(t, `{"results":[],"stats":{"pendingCount":0,"activeLeaseCount":0}}`, requireOK(t, rec))
}

// TestBatchesOfAPlainDispatcher: a Dispatcher without batch methods is still
// served the batch procedures, with per-item calls (resourcelease.PerItem).
func TestBatchesOfAPlainDispatcher(t *testing.T) {
	t.Parallel()
	local, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	plain := struct{ resourcelease.Dispatcher }{local}
	c := newClientServer(t, plain, transport.HandlerConfig{}, transport.ClientConfig{})
	ctx := context.Background()
	er, err := c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{item, item}})
	require.NoError(t, err)
	assert.True(t, er.Results[1].Duplicate, "the same request id, deduplicated")
	leases, err := c.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{MaxItems: 5})
	require.NoError(t, err)
	require.Len(t, leases, 1)
	errs, err := c.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: []resourcelease.OwnershipToken{leases[0].OwnershipToken}})
	require.NoError(t, err)
	assert.Equal(t, []error{nil}, errs)
}

// oldServer serves h but answers every batch procedure as a server that
// does not know it would: an older leasemesh (not-found, unknown_procedure)
// or a yarpc-go server (unimplemented). It counts the batch calls it got.
func oldServer(t *testing.T, h http.Handler, yarpcStyle bool, batchCalls *atomic.Int64) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get(transport.HeaderProcedure), "Batch") {
			batchCalls.Add(1)
			if yarpcStyle {
				w.Header().Set("Rpc-Status", "unimplemented")
				w.Header().Set("Content-Type", "text/plain")
				w.WriteHeader(http.StatusNotImplemented)
				_, _ = w.Write([]byte(`unrecognized procedure "x" for service "y"`))
				return
			}
			transport.WriteError(w, resourcelease.Errorf(resourcelease.StatusNotFound, transport.CodeUnknownProcedure, "unknown procedure %q", r.Header.Get(transport.HeaderProcedure)))
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestClientFallsBackOnAnOldServer: against a server without the batch
// procedures (either answer), every batch method of the Client falls back
// to per-item calls with the same results, and stops asking for the batch
// procedure for a while.
func TestClientFallsBackOnAnOldServer(t *testing.T) {
	t.Parallel()
	for _, yarpcStyle := range []bool{false, true} {
		t.Run(fmt.Sprint("yarpc=", yarpcStyle), func(t *testing.T) {
			t.Parallel()
			local, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
			defer closeDispatcher()
			var batchCalls atomic.Int64
			srv := oldServer(t, newHandler(t, local, transport.HandlerConfig{}), yarpcStyle, &batchCalls)
			c, err := transport.NewClient(srv.URL, transport.ClientConfig{Caller: "w"})
			require.NoError(t, err)
			defer c.Close()
			ctx := context.Background()
			for round := range 2 {
				payloads := make([]resourcelease.Item, 3)
				for i := range payloads {
					payloads[i] = item
					payloads[i].ResourceID, payloads[i].RequestID = fmt.Sprint("r", round, "-", i), ""
				}
				er, err := c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: payloads})
				require.NoError(t, err)
				require.Len(t, er.Results, 3)
				for i, r := range er.Results {
					require.NoError(t, r.Err)
					if i > 0 {
						assert.Greater(t, r.SequenceID, er.Results[i-1].SequenceID, "in order")
					}
				}
				leases, err := c.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{MaxItems: 5, Wait: time.Second})
				require.NoError(t, err)
				require.Len(t, leases, 3)
				tokens := make([]resourcelease.OwnershipToken, len(leases))
				for i, l := range leases {
					tokens[i] = l.OwnershipToken
				}
				hb, err := c.HeartbeatBatch(ctx, &resourcelease.HeartbeatBatchRequest{OwnershipTokens: tokens})
				require.NoError(t, err)
				for _, r := range hb {
					require.NoError(t, r.Err)
				}
				errs, err := c.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: append(tokens, tokens[0])})
				require.NoError(t, err)
				require.Len(t, errs, 4)
				assert.Equal(t, []error{nil, nil}, errs[1:3])
				// The per-item completes run concurrently: one of the two
				// uses of the first token wins, the other is stale.
				assert.True(t, (errs[0] == nil) != (errs[3] == nil), "exactly one succeeded: %v, %v", errs[0], errs[3])
				assert.ErrorIs(t, errors.Join(errs[0], errs[3]), resourcelease.ErrUnknownToken)
			}
			assert.EqualValues(t, 4, batchCalls.Load(), "each batch procedure was tried once, then not again")
			st, err := local.Stats(ctx, nil)
			require.NoError(t, err)
			assert.Equal(t, resourcelease.Stats{}, *st)
		})
	}
}

// TestClientReleaseOnAnOldServer: a server without release answers with
// status unimplemented (whatever its error layout), so the caller can fail
// the lease instead.
func TestClientReleaseOnAnOldServer(t *testing.T) {
	t.Parallel()
	c := newRawServer(t, transport.ClientConfig{}, func(w http.ResponseWriter, r *http.Request) {
		transport.WriteError(w, resourcelease.Errorf(resourcelease.StatusNotFound, transport.CodeUnknownProcedure, "unknown procedure"))
	})
	err := c.Release(context.Background(), &resourcelease.ReleaseRequest{OwnershipToken: token})
	require.Equal(t, resourcelease.StatusUnimplemented, resourcelease.StatusOf(err))
	require.Equal(t, transport.CodeUnknownProcedure, resourcelease.CodeOf(err))
}
