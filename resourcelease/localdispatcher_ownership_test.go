package resourcelease_test

import (
	"context"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/stretchr/testify/require"
)

// TestDispatcherPayloadsAreCopies: what a caller gets from Lease, Drain and
// DeadLetters, and what it passed to Enqueue and Restore, can be modified
// without changing the stored item (and so without racing the replication
// writer that encodes its events).
func TestDispatcherPayloadsAreCopies(t *testing.T) {
	ctx := context.Background()
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{})
	require.NoError(t, err)
	defer d.Close()
	scribble := func(it *resourcelease.Item) {
		it.Attributes["tenant"] = "changed"
		it.Body[0] = 'X'
	}
	want := map[string]string{"tenant": "t1"}
	in := &resourcelease.Item{ResourceType: "t", ResourceID: "a", PartitionKey: "p", PayloadEncoding: "json",
		Body: []byte("{}"), Attributes: map[string]string{"tenant": "t1"}}
	_, err = d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: in})
	require.NoError(t, err)
	scribble(in)

	l, err := d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	scribble(&l.Payload)
	err = d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, DeadLetter: true})
	require.NoError(t, err)

	dead, err := d.DeadLetters(ctx, &resourcelease.DeadLettersRequest{})
	require.NoError(t, err)
	require.Equal(t, want, dead.Items[0].Payload.Attributes, "lease handed out the stored attributes")
	require.Equal(t, "{}", string(dead.Items[0].Payload.Body))
	scribble(&dead.Items[0].Payload)

	_, err = d.Redrive(ctx, &resourcelease.RedriveRequest{All: true})
	require.NoError(t, err)
	drained, err := d.Drain(ctx, &resourcelease.DrainRequest{})
	require.NoError(t, err)
	require.Equal(t, want, drained.Items[0].Payload.Attributes, "dead letters handed out the stored attributes")
	scribble(&drained.Items[0].Payload)

	restore := []resourcelease.PendingItem{drained.Items[0]}
	restore[0].Payload.Attributes = map[string]string{"tenant": "t1"}
	restore[0].Payload.Body = []byte("{}")
	_, err = d.Restore(ctx, &resourcelease.RestoreRequest{Items: restore})
	require.NoError(t, err)
	scribble(&restore[0].Payload)

	l, err = d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	require.Equal(t, want, l.Payload.Attributes, "restore kept the caller's attributes map")
	require.Equal(t, "{}", string(l.Payload.Body))
}
