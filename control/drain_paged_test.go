package control_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// TestPagedDrainRoundTrip drains, page by page over the wire, more than a
// client with a small MaxResponseBytes could take in one response, and
// restores the pages elsewhere: nothing is lost, each page fits.
func TestPagedDrainRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	newServer := func() (*resourcelease.LocalDispatcher, *httptest.Server) {
		d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{})
		require.NoError(t, err)
		h, err := transport.NewHandler(d, transport.HandlerConfig{Authorize: transport.AllowAll})
		require.NoError(t, err)
		srv := httptest.NewServer(h)
		t.Cleanup(func() { srv.Close(); _ = d.Close() })
		return d, srv
	}
	_, src := newServer()
	dst, dstSrv := newServer()
	c, err := transport.NewClient(src.URL, transport.ClientConfig{MaxResponseBytes: 1 << 20})
	require.NoError(t, err)
	defer c.Close()
	body := []byte(strings.Repeat("b", 100<<10))
	for i := range 20 { // about 2.7 MiB of drain response in all
		_, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{ResourceType: "t",
			ResourceID: fmt.Sprint(i), PartitionKey: "p", PayloadEncoding: "raw", Body: body}})
		require.NoError(t, err)
	}

	// Negative limits are refused on the wire too.
	_, err = c.Drain(ctx, &resourcelease.DrainRequest{Limit: -1})
	assert.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.AsError(err).Status)

	dc, err := transport.NewClient(dstSrv.URL, transport.ClientConfig{})
	require.NoError(t, err)
	defer dc.Close()
	var (
		pages int
		next  int64 = 1
	)
	for {
		resp, err := c.Drain(ctx, &resourcelease.DrainRequest{MaxBytes: 512 << 10})
		require.NoError(t, err)
		pages++
		require.NotEmpty(t, resp.Items)
		for _, p := range resp.Items {
			require.Equal(t, next, p.SequenceID, "oldest first, no gaps")
			next++
		}
		rs, err := dc.Restore(ctx, &resourcelease.RestoreRequest{Items: resp.Items})
		require.NoError(t, err)
		assert.Equal(t, len(resp.Items), rs.RestoredCount)
		if !resp.More {
			break
		}
	}
	assert.Equal(t, int64(21), next)
	assert.Greater(t, pages, 4)
	st, err := dst.Stats(ctx, &resourcelease.StatsRequest{})
	require.NoError(t, err)
	assert.Equal(t, 20, st.PendingCount)

	// The control plane's POST /drain takes the same body.
	cc := controlServer(t, control.HandlerConfig{Dispatcher: dst}, control.ClientConfig{})
	resp, err := cc.DrainPage(ctx, &resourcelease.DrainRequest{Limit: 3})
	require.NoError(t, err)
	assert.Equal(t, []int64{1, 2, 3}, pendingSeqs(resp.Items))
	assert.True(t, resp.More)
	_, err = cc.DrainPage(ctx, &resourcelease.DrainRequest{MaxBytes: -5})
	assert.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.AsError(err).Status)
	resp, err = cc.DrainPage(ctx, nil)
	require.NoError(t, err)
	assert.Len(t, resp.Items, 17)
	assert.False(t, resp.More)
}

func pendingSeqs(items []resourcelease.PendingItem) []int64 {
	out := make([]int64, len(items))
	for i, p := range items {
		out[i] = p.SequenceID
	}
	return out
}
