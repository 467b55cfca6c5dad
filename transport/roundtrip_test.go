package transport_test

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
	"github.com/leasemesh/leasemesh/transport"
)

// TestRoundTripLocalDispatcher drives the whole lifecycle of an item
// through Client → handler → the real resourcelease.LocalDispatcher: every
// procedure, fencing with unknown_token across the wire, dead letters,
// drain/restore and a long-poll woken by an enqueue.
func TestRoundTripLocalDispatcher(t *testing.T) {
	t.Parallel()
	for _, storage := range []string{"memory", "sqlite"} {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			roundTripLifecycle(t, newStorageDispatcher(t, storage))
		})
	}
}

// newStorageDispatcher returns a LocalDispatcher on memory or on a SQLite
// replicator in t.TempDir(), closed (dispatcher, replicator, database) when
// the test ends.
func newStorageDispatcher(t *testing.T, storage string) *resourcelease.LocalDispatcher {
	t.Helper()
	cfg := resourcelease.DispatcherConfig{}
	if storage == "sqlite" {
		ctx := context.Background()
		path := filepath.Join(t.TempDir(), "replication.db")
		db, err := sqlitedb.Open(ctx, path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
		require.NoError(t, err)
		t.Cleanup(func() { db.Close() })
		repl, err := replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: path})
		require.NoError(t, err)
		t.Cleanup(func() { repl.Close() })
		cfg.Replicator = repl
	}
	d, err := resourcelease.NewDispatcher(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func roundTripLifecycle(t *testing.T, local *resourcelease.LocalDispatcher) {
	c := newClientServer(t, local, transport.HandlerConfig{Service: "mesh", Namespace: "resourcelease.mesh"},
		transport.ClientConfig{Service: "mesh", Namespace: "resourcelease.mesh", Caller: "worker-a"})
	ctx := context.Background()
	enqueue := func(id, requestID string) *resourcelease.EnqueueResponse {
		t.Helper()
		it := item
		it.ResourceID, it.RequestID = id, requestID
		resp, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &it})
		require.NoError(t, err)
		return resp
	}

	// Enqueue, with requestId dedupe.
	first := enqueue("order-1", "req-1")
	require.False(t, first.Duplicate)
	again := enqueue("order-1", "req-1")
	require.True(t, again.Duplicate)
	require.Equal(t, first.SequenceID, again.SequenceID)
	enqueue("order-2", "")
	stats, err := c.Stats(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, resourcelease.Stats{PendingCount: 2}, *stats)

	// Lease: the peer is the caller; a first delivery has no lastError.
	l1, err := c.Lease(ctx, &resourcelease.LeaseRequest{})
	require.NoError(t, err)
	require.Equal(t, "order-1", l1.Payload.ResourceID)
	require.Equal(t, item.Body, l1.Payload.Body)
	require.Equal(t, 1, l1.Attempt)
	require.Nil(t, l1.LastError)
	require.Equal(t, "worker-a", l1.OwnerPeerID)
	require.Equal(t, resourcelease.DefaultHeartbeatInterval, l1.HeartbeatInterval)
	require.Equal(t, resourcelease.DefaultLeaseDuration, l1.TTL)

	hb, err := c.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: l1.OwnershipToken})
	require.NoError(t, err)
	require.Equal(t, resourcelease.DefaultLeaseDuration, hb.TTL)
	require.False(t, hb.LeaseExpiresAt.Before(l1.LeaseExpiresAt))

	// Fail with requeue: the next lease is attempt 2 and carries the error.
	err = c.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l1.OwnershipToken, Reason: "db timeout", ErrorCode: "app.db"})
	require.NoError(t, err)
	_, err = c.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: l1.OwnershipToken})
	require.ErrorIs(t, err, resourcelease.ErrUnknownToken, "fenced after fail")
	l1b, err := c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "worker-b"})
	require.NoError(t, err)
	require.Equal(t, "order-1", l1b.Payload.ResourceID, "the oldest ready item, by sequence id")
	l2, err := c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "worker-b"})
	require.NoError(t, err)
	require.Equal(t, "order-2", l2.Payload.ResourceID)
	require.Equal(t, 2, l1b.Attempt)
	require.Equal(t, &resourcelease.ErrorInfo{Message: "db timeout", Code: "app.db"}, l1b.LastError)
	require.Equal(t, "worker-b", l1b.OwnerPeerID)

	// Complete; the token is dead afterwards.
	err = c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l1b.OwnershipToken})
	require.NoError(t, err)
	err = c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l1b.OwnershipToken})
	require.ErrorIs(t, err, resourcelease.ErrUnknownToken)
	require.Equal(t, resourcelease.StatusNotFound, resourcelease.StatusOf(err))

	// Fail without requeue: dead letter, redrive, dead letter again, purge.
	err = c.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l2.OwnershipToken, Reason: "poison", DeadLetter: true})
	require.NoError(t, err)
	dl, err := c.DeadLetters(ctx, &resourcelease.DeadLettersRequest{})
	require.NoError(t, err)
	require.Len(t, dl.Items, 1)
	require.Equal(t, "order-2", dl.Items[0].Payload.ResourceID)
	require.Contains(t, dl.Items[0].Reason, "poison")
	_, err = c.Redrive(ctx, &resourcelease.RedriveRequest{})
	require.ErrorIs(t, err, resourcelease.ErrInvalidArgument, "an empty redrive is refused")
	redriven, err := c.Redrive(ctx, &resourcelease.RedriveRequest{All: true})
	require.NoError(t, err)
	require.Equal(t, 1, redriven.RedrivenCount)
	l2b, err := c.Lease(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, 1, l2b.Attempt, "redrive resets the attempt")
	err = c.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l2b.OwnershipToken, Reason: "poison", DeadLetter: true})
	require.NoError(t, err)
	purged, err := c.Purge(ctx, &resourcelease.PurgeRequest{SequenceIDs: []int64{l2b.SequenceID}})
	require.NoError(t, err)
	require.Equal(t, 1, purged.PurgedCount)
	dl, err = c.DeadLetters(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, dl.Items)

	// Nothing left: an immediate lease is null.
	none, err := c.Lease(ctx, nil)
	require.NoError(t, err)
	require.Nil(t, none)

	// Drain and restore keep sequence ids; restoring twice is already-exists.
	enqueue("order-3", "")
	enqueue("order-4", "")
	drained, err := c.Drain(ctx, nil)
	require.NoError(t, err)
	require.Len(t, drained.Items, 2)
	stats, err = c.Stats(ctx, nil)
	require.NoError(t, err)
	require.Zero(t, stats.PendingCount)
	restored, err := c.Restore(ctx, &resourcelease.RestoreRequest{Items: drained.Items})
	require.NoError(t, err)
	require.Equal(t, 2, restored.RestoredCount)
	_, err = c.Restore(ctx, &resourcelease.RestoreRequest{Items: drained.Items})
	require.ErrorIs(t, err, resourcelease.ErrDuplicateSequence)
	l3, err := c.Lease(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, drained.Items[0].SequenceID, l3.SequenceID)
	err = c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l3.OwnershipToken})
	require.NoError(t, err)
	_, err = c.Drain(ctx, nil)
	require.NoError(t, err)

	// Validation errors come back with their codes.
	_, err = c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{ResourceID: "x", PartitionKey: "p", PayloadEncoding: "e"}})
	require.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
	require.Equal(t, resourcelease.CodeResourceTypeRequired, resourcelease.CodeOf(err))

	// A long-poll is woken by an enqueue.
	got := make(chan *resourcelease.Lease, 1)
	go func() {
		l, err := c.Lease(ctx, &resourcelease.LeaseRequest{Wait: 30000 * time.Millisecond})
		if err != nil {
			got <- nil
			return
		}
		got <- l
	}()
	deadline := time.Now().Add(10 * time.Second)
	for local.Queue().Waiters() == 0 { // the long-poll is registered
		require.True(t, time.Now().Before(deadline), "the long-poll never arrived")
		runtime.Gosched()
	}
	enqueue("order-5", "")
	woken := <-got
	require.NotNil(t, woken)
	require.Equal(t, "order-5", woken.Payload.ResourceID)
	err = c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: woken.OwnershipToken})
	require.NoError(t, err)
}
