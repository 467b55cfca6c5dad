package leasemesh_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// queueStorage is a Storage whose queue keeps its own state, as pgstore's
// does: an engine journaled to a memory replicator, which is its log.
// afterFirstRead runs once, after the first read of the log answered
// (another process committing just then); closeGate, when set, holds Close.
type queueStorage struct {
	afterFirstRead func(q resourcelease.Queue)
	closeGate      chan struct{}
}

type queueLog struct {
	*replication.MemoryReplicator
	once  sync.Once
	after func()
}

func (l *queueLog) ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	evs, err := l.MemoryReplicator.ReadEvents(ctx, after, limit)
	l.once.Do(l.after)
	return evs, err
}

// loggedQueue is the queue with its log, as a pgstore queue is both.
type loggedQueue struct {
	*resourcelease.Engine
	log *queueLog
}

func (q loggedQueue) ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	return q.log.ReadEvents(ctx, after, limit)
}

func (q loggedQueue) LastSequence() int64 { return q.log.MemoryReplicator.LastSequence() }

func (s queueStorage) OpenStorage(_ context.Context, opts leasemesh.StorageOptions) (*leasemesh.Stores, error) {
	repl, err := replication.NewMemoryReplicator(replication.MemoryConfig{})
	if err != nil {
		return nil, err
	}
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Journal: repl})
	if err != nil {
		return nil, err
	}
	if _, err := q.Enqueue(context.Background(), rawItem("before")); err != nil {
		return nil, err
	}
	log := &queueLog{MemoryReplicator: repl, after: func() {
		if s.afterFirstRead != nil {
			s.afterFirstRead(q)
		}
	}}
	return &leasemesh.Stores{Queue: loggedQueue{q, log}, Events: log, Location: "test", Close: func() error {
		if s.closeGate != nil {
			<-s.closeGate
		}
		return repl.Close()
	}}, nil
}

func rawItem(id string) resourcelease.Item {
	it := item(id)
	it.PayloadEncoding = "raw"
	return it
}

// TestOpenOnAQueueStorageMissesNoEvent: an event committed by another
// process between Open's read of the log (to fill the recent events) and
// the dispatcher's start reaches the recent events.
func TestOpenOnAQueueStorageMissesNoEvent(t *testing.T) {
	ctx := context.Background()
	d, err := leasemesh.Open(ctx, leasemesh.Config{Logger: quiet, Storage: queueStorage{afterFirstRead: func(q resourcelease.Queue) {
		if _, err := q.Enqueue(context.Background(), rawItem("meanwhile")); err != nil {
			t.Error(err)
		}
	}}})
	require.NoError(t, err)
	defer d.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs := d.RecentEvents().Events()
		if len(evs) == 2 {
			require.Equal(t, []int64{1, 2}, []int64{evs[0].SequenceNumber, evs[1].SequenceNumber})
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("recent events = %+v, want events 1 and 2", evs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReadyAnswersAtOnceDuringClose: /readyz must not hang while Close
// runs (it holds its lock until the storage is closed).
func TestReadyAnswersAtOnceDuringClose(t *testing.T) {
	gate := make(chan struct{})
	d, err := leasemesh.Open(context.Background(), leasemesh.Config{Logger: quiet, Storage: queueStorage{closeGate: gate}})
	require.NoError(t, err)
	require.NoError(t, d.Ready(context.Background()))
	closed := make(chan error, 1)
	var release sync.Once
	defer release.Do(func() { close(gate) })
	go func() { closed <- d.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	// Close may not have begun yet: ask until it has.
	go func() {
		for {
			if err := d.Ready(ctx); err != nil || ctx.Err() != nil {
				errc <- err
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	select {
	case err := <-errc:
		require.True(t, errors.Is(err, resourcelease.ErrClosed), "Ready during Close = %v", err)
	case <-ctx.Done():
		t.Fatal("Ready hung while Close ran")
	}
	release.Do(func() { close(gate) })
	require.NoError(t, <-closed)
}
