package leasemesh_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitestore"
	"github.com/leasemesh/leasemesh/transport"
)

var quiet = slog.New(slog.DiscardHandler)

func item(id string) resourcelease.Item {
	return resourcelease.Item{ResourceType: "order", ResourceID: id, PartitionKey: "tenant-1"}
}

func TestOpenDurableSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	cfg := leasemesh.Config{Storage: sqlitestore.Dir(dir), Logger: quiet,
		Queue: resourcelease.QueueConfig{DedupeWindow: time.Hour}}

	d, err := leasemesh.Open(ctx, cfg)
	require.NoError(t, err)
	for _, id := range []string{"a", "b"} {
		it := item(id)
		it.RequestID = "req-" + id
		_, err := resourcelease.Enqueue(ctx, d, it, map[string]string{"id": id})
		require.NoError(t, err)
	}
	l, err := d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w1"})
	require.NoError(t, err)
	require.Equal(t, dir, d.Location())
	require.NoError(t, d.Close())
	require.NoError(t, d.Close(), "a second Close returns the first's result")

	d, err = leasemesh.Open(ctx, cfg)
	require.NoError(t, err)
	defer d.Close()
	st, err := d.Stats(ctx, &resourcelease.StatsRequest{})
	require.NoError(t, err)
	require.Equal(t, 1, st.PendingCount)
	require.Equal(t, 1, st.ActiveLeaseCount, "the lease survives the restart")
	err = d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
	require.NoError(t, err, "the token issued before the restart is honoured")

	// The dedupe window reached the store: a retry of "a" after the restart adds nothing.
	it := item("a")
	it.RequestID = "req-a"
	resp, err := resourcelease.Enqueue(ctx, d, it, map[string]string{"id": "a"})
	require.NoError(t, err)
	require.True(t, resp.Duplicate)

	// The recent events were reloaded from disk.
	require.NotEmpty(t, d.RecentEvents().Events())
}

func TestOpenMemoryServesHandlers(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	d, err := leasemesh.Open(context.Background(), leasemesh.Config{Storage: leasemesh.Memory(), Registerer: reg, Logger: quiet,
		Handler: transport.HandlerConfig{Service: "orders"}})
	require.NoError(t, err)
	defer d.Close()
	require.Equal(t, "memory", d.Location())
	require.Nil(t, d.Backpressure(), "off unless a HighWatermark is set")

	mux := http.NewServeMux()
	mux.Handle("/yarpc/v1", d.Handler())
	mux.Handle("/omnirelay/control/", d.ControlHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := transport.NewClient(srv.URL+"/yarpc/v1", transport.ClientConfig{Service: "orders"})
	require.NoError(t, err)
	defer c.Close()
	_, err = resourcelease.Enqueue(context.Background(), c, item("x"), 1)
	require.NoError(t, err)

	resp, err := http.Get(srv.URL + "/omnirelay/control/stats")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	mfs, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"resourcelease_enqueued_total", "replication_events_total", "rpc_requests_total"} {
		require.True(t, names[want], "metric %s registered (have %v)", want, names)
	}
}

func TestOpenBackpressure(t *testing.T) {
	d, err := leasemesh.Open(context.Background(), leasemesh.Config{Storage: leasemesh.Memory(), Logger: quiet,
		Backpressure: backpressureConfig(2)})
	require.NoError(t, err)
	defer d.Close()
	require.NotNil(t, d.Backpressure())
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		_, err := resourcelease.Enqueue(ctx, d, item(id), 1)
		require.NoError(t, err)
	}
	_, err = resourcelease.Enqueue(ctx, d, item("c"), 1)
	require.Equal(t, resourcelease.StatusResourceExhausted, resourcelease.AsError(err).Status, "reject mode refuses while active")
}

func TestOpenRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  leasemesh.Config
		want string
	}{
		{"no storage", leasemesh.Config{}, "Storage is required"},
		{"journal given", leasemesh.Config{Storage: leasemesh.Memory(), Queue: resourcelease.QueueConfig{InitialState: &resourcelease.QueueState{}}}, "set by Open"},
		{"negative recent events", leasemesh.Config{Storage: leasemesh.Memory(), RecentEvents: -1}, "RecentEvents"},
		{"bad queue option", leasemesh.Config{Storage: leasemesh.Memory(), Queue: resourcelease.QueueConfig{LeaseDuration: -time.Second}}, ""},
		{"empty data directory", leasemesh.Config{Storage: sqlitestore.Dir("")}, "data directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = quiet
			d, err := leasemesh.Open(context.Background(), tt.cfg)
			require.Nil(t, d)
			require.Error(t, err)
			require.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.AsError(err).Status, "%v", err)
			require.True(t, strings.Contains(err.Error(), tt.want), "%v", err)
		})
	}
}

func TestOpenIsCancelledByItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	d, err := leasemesh.Open(ctx, leasemesh.Config{Storage: sqlitestore.Dir(t.TempDir()), Logger: quiet})
	require.Nil(t, d)
	require.True(t, errors.Is(err, context.Canceled) || resourcelease.AsError(err).Status == resourcelease.StatusCancelled, "%v", err)
}

// A registry outlives a Dispatcher: Close, or a failed Open, leaves nothing
// registered that would make the next Open on it fail.
func TestReopenOnTheSameRegistry(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	cfg := leasemesh.Config{Storage: leasemesh.Memory(), Registerer: reg, Logger: quiet}
	d, err := leasemesh.Open(context.Background(), cfg)
	require.NoError(t, err)
	require.NoError(t, d.Close())

	bad := cfg
	bad.Handler = transport.HandlerConfig{Namespace: "bad ns"}
	_, err = leasemesh.Open(context.Background(), bad)
	require.Error(t, err)

	d, err = leasemesh.Open(context.Background(), cfg)
	require.NoError(t, err, "the second Open on the registry")
	require.NoError(t, d.Close())
}

// Over HTTP the enqueue rate limit charges a batch per item: a batch larger
// than the tokens left enqueues what they cover and refuses each of the
// rest with rate_limited and its retry hint.
func TestRateLimitChargesABatchPerItem(t *testing.T) {
	clock := leasetest.NewManualClock(time.Unix(1_700_000_000, 0))
	d, err := leasemesh.Open(context.Background(), leasemesh.Config{Storage: leasemesh.Memory(), Logger: quiet, Clock: clock,
		Queue:     resourcelease.QueueConfig{Capacity: -1},
		RateLimit: backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 5}})
	require.NoError(t, err)
	defer d.Close()
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	c, err := transport.NewClient(srv.URL, transport.ClientConfig{})
	require.NoError(t, err)
	defer c.Close()

	payloads := make([]resourcelease.Item, 8)
	for i := range payloads {
		payloads[i] = item(fmt.Sprint("b-", i))
		payloads[i].PayloadEncoding, payloads[i].Body = "application/json", []byte(`{}`)
	}
	ctx := context.Background()
	resp, err := c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: payloads})
	require.NoError(t, err, "a partly admitted batch is not refused whole")
	require.Len(t, resp.Results, 8)
	for i, r := range resp.Results {
		if i < 5 {
			require.NoError(t, r.Err, "item %d is within the burst", i)
			require.NotZero(t, r.SequenceID)
			continue
		}
		e := resourcelease.AsError(r.Err)
		require.Equal(t, resourcelease.CodeRateLimited, e.Code, "item %d is past the tokens", i)
		require.Equal(t, "1", e.Metadata["retryAfterSeconds"], "item %d", i)
	}
	st, err := d.Stats(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, 5, st.PendingCount, "only the admitted items were enqueued")

	_, err = resourcelease.Enqueue(ctx, c, item("single"), 1)
	require.Equal(t, resourcelease.CodeRateLimited, resourcelease.AsError(err).Code, "the batch spent the tokens")
	clock.Advance(2 * time.Second)
	resp, err = c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: payloads[5:]})
	require.NoError(t, err)
	require.NoError(t, resp.Results[0].Err)
	require.NoError(t, resp.Results[1].Err)
	require.Equal(t, resourcelease.CodeRateLimited, resourcelease.AsError(resp.Results[2].Err).Code, "two seconds gave two tokens")
}
