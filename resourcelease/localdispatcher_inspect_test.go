package resourcelease_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestLocalDispatcherInspectCopies(t *testing.T) {
	f := newLD(t, resourcelease.DispatcherConfig{})
	f.enqueue(t, "a", "b")
	ctx := context.Background()

	_, err := f.d.ListItems(ctx, nil)
	assert.ErrorIs(t, err, resourcelease.ErrInvalidArgument, "a listing names its state")
	page, err := f.d.ListItems(ctx, &resourcelease.ListItemsRequest{State: resourcelease.ItemPending, Limit: 1})
	require.NoError(t, err)
	require.Len(t, page.Items, 1)
	assert.Equal(t, int64(1), page.NextAfter)
	page.Items[0].Payload.Attributes["tenant"] = "changed"

	it, err := f.d.Item(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, "tenant-1", it.Payload.Attributes["tenant"], "a listed payload is a copy")
	it.Payload.Body[0] = 'X'
	again, err := f.d.Item(ctx, 1)
	require.NoError(t, err)
	assert.Equal(t, `{"id":"a"}`, string(again.Payload.Body), "an item's body is a copy")

	_, err = f.d.Item(ctx, 0)
	assert.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
	_, err = f.d.Item(ctx, 99)
	assert.ErrorIs(t, err, resourcelease.ErrItemNotFound)
}

func TestLocalDispatcherPause(t *testing.T) {
	f := newLD(t, resourcelease.DispatcherConfig{})
	f.enqueue(t, "a")
	ctx := context.Background()
	require.NoError(t, f.d.Pause(ctx))
	st, err := f.d.Stats(ctx, nil)
	require.NoError(t, err)
	assert.True(t, st.Paused)
	l, err := f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	assert.Nil(t, l)
	_, err = f.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ldItem("b")})
	require.NoError(t, err, "enqueue works while paused")

	require.NoError(t, f.d.Resume(ctx))
	st, err = f.d.Stats(ctx, nil)
	require.NoError(t, err)
	assert.False(t, st.Paused)
	assert.Equal(t, int64(1), f.lease(t, "w").SequenceID)
	require.NoError(t, f.d.Close())
	assert.ErrorIs(t, f.d.Pause(ctx), resourcelease.ErrClosed)
}
