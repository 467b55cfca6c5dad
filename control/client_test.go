package control_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

func TestNewControlClientURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{in: "http://127.0.0.1:5158", want: "http://127.0.0.1:5158/omnirelay/control"},
		{in: "http://127.0.0.1:5158/", want: "http://127.0.0.1:5158/omnirelay/control"},
		{in: "https://ops.example/omnirelay/control/", want: "https://ops.example/omnirelay/control"},
		{in: "http://h/ops", want: "http://h/ops"},
		{in: "ftp://h", wantErr: true},
		{in: "127.0.0.1:5158", wantErr: true},
		{in: "http://h/x?since=1", wantErr: true},
		{in: "http://%zz", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			c, err := control.NewClient(tt.in, control.ClientConfig{})
			if tt.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			assert.Equal(t, tt.want, c.URL())
		})
	}
	for _, opts := range []control.ClientConfig{
		{MaxResponseBytes: -1},
		{BearerToken: " x"},
		{BearerToken: "a\nb"},
	} {
		_, err := control.NewClient("http://h", opts)
		assert.Error(t, err, "%+v", opts)
	}
}

// controlServer serves a control plane over a fake dispatcher and event log
// on loopback and returns a client of it.
func controlServer(t *testing.T, opts control.HandlerConfig, copts control.ClientConfig) *control.Client {
	t.Helper()
	opts.Logger = controlQuietLogger
	srv := httptest.NewServer(newControlHandler(t, opts))
	t.Cleanup(srv.Close)
	c, err := control.NewClient(srv.URL, copts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestControlClientRoundTrip(t *testing.T) {
	t.Parallel()
	at := time.Date(2025, 3, 4, 5, 6, 7, 8, time.UTC)
	item := resourcelease.PendingItem{
		Payload:    resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", PayloadEncoding: "application/json"},
		Attempt:    1,
		EnqueuedAt: at,
		SequenceID: 9,
	}
	var (
		mu       sync.Mutex
		restored []resourcelease.PendingItem
		redriven []int64
		purged   []int64
		limit    int
	)
	d := &controlFakeDispatcher{t: t,
		stats: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
			return &resourcelease.Stats{PendingCount: 4, DeadLetterCount: 1}, nil
		},
		drain: func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
			return &resourcelease.DrainResponse{Items: []resourcelease.PendingItem{item}}, nil
		},
		restore: func(_ context.Context, r *resourcelease.RestoreRequest) (*resourcelease.RestoreResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			restored = r.Items
			return &resourcelease.RestoreResponse{RestoredCount: len(r.Items)}, nil
		},
		deadLetters: func(_ context.Context, r *resourcelease.DeadLettersRequest) (*resourcelease.DeadLettersResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			limit = r.Limit
			return &resourcelease.DeadLettersResponse{Items: []resourcelease.DeadLetter{{PendingItem: item, DeadLetteredAt: at, Reason: "r"}}}, nil
		},
		redrive: func(_ context.Context, r *resourcelease.RedriveRequest) (*resourcelease.RedriveResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			redriven = r.SequenceIDs
			return &resourcelease.RedriveResponse{RedrivenCount: 2}, nil
		},
		purge: func(_ context.Context, r *resourcelease.PurgeRequest) (*resourcelease.PurgeResponse, error) {
			mu.Lock()
			defer mu.Unlock()
			purged = r.SequenceIDs
			return &resourcelease.PurgeResponse{PurgedCount: 3}, nil
		},
	}
	signal := resourcelease.BackpressureSignal{IsActive: true, PendingCount: 65, ObservedAt: at, HighWatermark: 64, LowWatermark: 16}
	c := controlServer(t, control.HandlerConfig{
		Dispatcher:   d,
		Peers:        func(context.Context) (any, error) { return map[string]any{"peers": []any{}}, nil },
		Backpressure: func() (any, bool) { return signal, true },
		Events:       &controlFakeLog{controlFakeEvents: controlFakeEvents{events: controlEvents(5)}, last: 5},
	}, control.ClientConfig{})
	ctx := context.Background()

	peers, err := c.Peers(ctx)
	require.NoError(t, err)
	assert.JSONEq(t, `{"peers":[]}`, string(peers))

	bp, err := c.Backpressure(ctx)
	require.NoError(t, err)
	require.NotNil(t, bp)
	assert.Equal(t, signal, *bp)

	page, err := c.Replication(ctx, 2, 2)
	require.NoError(t, err)
	require.Len(t, page.Events, 2)
	assert.Equal(t, int64(3), page.Events[0].SequenceNumber)
	assert.Equal(t, int64(4), page.NextSince)
	require.NotNil(t, page.LastSequence)
	assert.Equal(t, int64(5), *page.LastSequence)
	page, err = c.Replication(ctx, 0, 0)
	require.NoError(t, err)
	assert.Len(t, page.Events, 5)

	st, err := c.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, resourcelease.Stats{PendingCount: 4, DeadLetterCount: 1}, *st)

	dr, err := c.Drain(ctx)
	require.NoError(t, err)
	assert.Equal(t, []resourcelease.PendingItem{item}, dr.Items)

	rr, err := c.Restore(ctx, &resourcelease.RestoreRequest{Items: dr.Items})
	require.NoError(t, err)
	assert.Equal(t, 1, rr.RestoredCount)

	dl, err := c.DeadLetters(ctx, 3)
	require.NoError(t, err)
	require.Len(t, dl.Items, 1)
	assert.Equal(t, "r", dl.Items[0].Reason)

	rd, err := c.Redrive(ctx, []int64{9, 10})
	require.NoError(t, err)
	assert.Equal(t, 2, rd.RedrivenCount)
	pg, err := c.PurgeAll(ctx)
	require.NoError(t, err)
	assert.Equal(t, 3, pg.PurgedCount)
	_, err = c.Purge(ctx, nil)
	assert.Equal(t, resourcelease.CodeSelectionRequired, resourcelease.CodeOf(err), "an empty selection is refused")

	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []resourcelease.PendingItem{item}, restored)
	assert.Equal(t, 3, limit)
	assert.Equal(t, []int64{9, 10}, redriven)
	assert.Empty(t, purged)
}

func TestControlClientErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("no backpressure yet", func(t *testing.T) {
		t.Parallel()
		c := controlServer(t, control.HandlerConfig{Backpressure: func() (any, bool) { return nil, false }}, control.ClientConfig{})
		bp, err := c.Backpressure(ctx)
		require.NoError(t, err)
		assert.Nil(t, bp)
	})
	t.Run("not configured", func(t *testing.T) {
		t.Parallel()
		c := controlServer(t, control.HandlerConfig{}, control.ClientConfig{})
		_, err := c.Peers(ctx)
		assert.Equal(t, resourcelease.StatusUnimplemented, resourcelease.StatusOf(err))
		assert.Equal(t, control.CodeNotConfigured, resourcelease.CodeOf(err))
	})
	t.Run("wire error keeps its code", func(t *testing.T) {
		t.Parallel()
		d := &controlFakeDispatcher{t: t, stats: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) {
			return nil, resourcelease.ErrClosed
		}}
		c := controlServer(t, control.HandlerConfig{Dispatcher: d}, control.ClientConfig{})
		_, err := c.Stats(ctx)
		assert.ErrorIs(t, err, resourcelease.ErrClosed)
	})
	t.Run("bearer token", func(t *testing.T) {
		t.Parallel()
		d := &controlFakeDispatcher{t: t, drain: func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
			return &resourcelease.DrainResponse{}, nil
		}}
		opts := control.HandlerConfig{Dispatcher: d, Authorize: transport.BearerTokens(map[transport.Role][]string{
			transport.RoleAdmin: {"s3cret"}, transport.RoleWorker: {"w-tok"},
		})}
		_, err := controlServer(t, opts, control.ClientConfig{}).Drain(ctx)
		assert.Equal(t, resourcelease.StatusUnauthenticated, resourcelease.StatusOf(err))
		_, err = controlServer(t, opts, control.ClientConfig{BearerToken: "nope"}).Drain(ctx)
		assert.Equal(t, resourcelease.StatusUnauthenticated, resourcelease.StatusOf(err))
		_, err = controlServer(t, opts, control.ClientConfig{BearerToken: "w-tok"}).Drain(ctx)
		assert.Equal(t, resourcelease.StatusPermissionDenied, resourcelease.StatusOf(err), "a worker's token may not drain")
		dr, err := controlServer(t, opts, control.ClientConfig{BearerToken: "s3cret"}).Drain(ctx)
		require.NoError(t, err)
		assert.Empty(t, dr.Items)
	})
	t.Run("response too large", func(t *testing.T) {
		t.Parallel()
		c := controlServer(t, control.HandlerConfig{Peers: func(context.Context) (any, error) {
			return make([]int, 1000), nil
		}}, control.ClientConfig{MaxResponseBytes: 100})
		_, err := c.Peers(ctx)
		assert.Equal(t, transport.CodeResponseTooLarge, resourcelease.CodeOf(err))
	})
	t.Run("malformed response", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("<html>proxy page</html>"))
		}))
		defer srv.Close()
		c, err := control.NewClient(srv.URL, control.ClientConfig{})
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Stats(ctx)
		assert.Equal(t, transport.CodeMalformedResponse, resourcelease.CodeOf(err))
		_, err = c.Peers(ctx)
		assert.Equal(t, transport.CodeMalformedResponse, resourcelease.CodeOf(err))
	})
	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		c, err := control.NewClient(url, control.ClientConfig{})
		require.NoError(t, err)
		defer c.Close()
		_, err = c.Stats(ctx)
		assert.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err))
		assert.Equal(t, transport.CodeTransportUnavailable, resourcelease.CodeOf(err))
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		c := controlServer(t, control.HandlerConfig{}, control.ClientConfig{})
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := c.Stats(cctx)
		assert.Equal(t, resourcelease.StatusCancelled, resourcelease.StatusOf(err))
		assert.True(t, errors.Is(err, context.Canceled), "cause kept: %v", err)
	})
}

// TestControlClientFollow follows a growing log page by page with NextSince.
func TestControlClientFollow(t *testing.T) {
	t.Parallel()
	src := &controlFakeEvents{events: controlEvents(25)}
	c := controlServer(t, control.HandlerConfig{Events: src}, control.ClientConfig{})
	var (
		since int64
		got   []int64
	)
	for range 10 {
		page, err := c.Replication(context.Background(), since, 10)
		require.NoError(t, err)
		if len(page.Events) == 0 {
			break
		}
		for _, e := range page.Events {
			got = append(got, e.SequenceNumber)
		}
		since = page.NextSince
	}
	assert.Equal(t, controlSeqRange(1, 25), got)
}
