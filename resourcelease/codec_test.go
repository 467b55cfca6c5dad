package resourcelease_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestEncodeItem(t *testing.T) {
	base := resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", RequestID: "req"}
	it, err := resourcelease.EncodeItem(base, map[string]int{"a": 1}, nil)
	require.NoError(t, err)
	require.Equal(t, "application/json", it.PayloadEncoding)
	require.JSONEq(t, `{"a":1}`, string(it.Body))
	require.Equal(t, "req", it.RequestID)

	_, err = resourcelease.EncodeItem(base, make(chan int), nil)
	require.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.AsError(err).Status)
	require.Equal(t, resourcelease.CodeUnencodable, resourcelease.AsError(err).Code)
}

func TestJSONCodecAccepts(t *testing.T) {
	for enc, want := range map[string]bool{
		"application/json": true, "json": true, "Application/JSON; charset=utf-8": true,
		"": false, "text/plain": false, "application/jsonx": false,
	} {
		require.Equal(t, want, resourcelease.JSON.Accepts(enc), enc)
	}
}

func TestEnqueueValue(t *testing.T) {
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{})
	require.NoError(t, err)
	defer d.Close()
	ctx := context.Background()
	_, err = resourcelease.Enqueue(ctx, d, resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p"}, struct{ N int }{7})
	require.NoError(t, err)
	l, err := d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	require.Equal(t, "application/json", l.Payload.PayloadEncoding)
	require.JSONEq(t, `{"N":7}`, string(l.Payload.Body))

	_, err = resourcelease.Enqueue(ctx, d, resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p"}, func() {})
	require.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.AsError(err).Status)
	_, err = resourcelease.Enqueue(ctx, d, resourcelease.Item{ResourceID: "r", PartitionKey: "p"}, 1)
	require.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.AsError(err).Status, "the item is still validated")
}
