package replication_test

import (
	"context"
	"runtime"
	"sync"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// blockFirst is a synchronous sink that holds the writer on the first event
// it sees until release is closed, so the changes recorded meanwhile commit
// together in the next batch.
type blockFirst struct {
	once             sync.Once
	blocked, release chan struct{}
}

func (b *blockFirst) ApplyEvent(context.Context, resourcelease.Event) error {
	b.once.Do(func() { close(b.blocked); <-b.release })
	return nil
}

// TestSequenceIDNotReissuedAfterCreateAndDeleteInOneBatch: an item restored
// (or enqueued) and drained in the same group-commit batch writes no row, but
// its sequence id is spent; after a restart the queue must never issue it
// again (sequence ids are unique and increasing).
func TestSequenceIDNotReissuedAfterCreateAndDeleteInOneBatch(t *testing.T) {
	ctx := context.Background()
	h := newEngineHarness(t, resourcelease.QueueConfig{Capacity: -1})
	sink := &blockFirst{blocked: make(chan struct{}), release: make(chan struct{})}
	if err := h.r.AddSink("hold", sink, resourcelease.SinkOptions{Synchronous: true}); err != nil {
		t.Fatal(err)
	}
	const high = 50_000 // far above the ids the replicator has reserved
	done := make(chan error, 3)
	go func() { _, err := h.q.Enqueue(ctx, item("a", "")); done <- err }()
	<-sink.blocked // batch 1 committed; the writer waits in the sink
	go func() {
		_, err := h.q.Restore(ctx, []resourcelease.PendingItem{{Payload: item("r", ""), Attempt: 1, SequenceID: high}})
		done <- err
	}()
	for engineStats(h.q).PendingCount != 2 { // the restore is applied in memory, its commit waits
		runtime.Gosched()
	}
	go func() { _, err := h.q.Drain(ctx); done <- err }()
	for engineStats(h.q).PendingCount != 0 {
		runtime.Gosched()
	}
	close(sink.release) // restore + drain now commit as one batch
	for range 3 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	h.restart()
	if h.st.NextSequenceID <= high {
		t.Fatalf("after restart NextSequenceID = %d: sequence id %d would be issued again", h.st.NextSequenceID, high)
	}
	res, err := h.q.Enqueue(ctx, item("b", ""))
	if err != nil {
		t.Fatal(err)
	}
	if res.SequenceID <= high {
		t.Fatalf("new enqueue got sequence id %d, want > %d", res.SequenceID, high)
	}
}
