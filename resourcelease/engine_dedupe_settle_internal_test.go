package resourcelease

import (
	"context"
	"errors"
	"testing"
)

// laterAck fails its first Wait (storage stalled) and succeeds after (the
// stalled write landed), as a stalled replicator's Ack does.
type laterAck struct{ waits int }

func (a *laterAck) Wait() error {
	a.waits++
	if a.waits == 1 {
		return &Error{Status: StatusUnavailable, Code: CodeStorageUnavailable, Message: "stalled"}
	}
	return nil
}

// TestDuplicateSettlesDedupe: an original whose Ack failed keeps it in its
// dedupe record; a duplicate that then finds it durable drops it, so the
// record stops holding the original's journal batch.
func TestDuplicateSettlesDedupe(t *testing.T) {
	ack := &laterAck{}
	first := true
	q, err := NewEngine(QueueConfig{Journal: JournalFunc(func(*Change) Ack {
		if first {
			first = false
			return ack
		}
		return nil
	})})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	it := Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", PayloadEncoding: "e", RequestID: "req-1"}
	if _, err := q.Enqueue(context.Background(), it); !errors.Is(err, ErrStorageUnavailable) {
		t.Fatalf("original: %v, want storage unavailable", err)
	}
	q.mu.Lock()
	kept := q.dedupe["req-1"].ack != nil
	q.mu.Unlock()
	if !kept {
		t.Fatal("the failed original's Ack was dropped: a retry would be acknowledged without asking it")
	}
	res, err := q.Enqueue(context.Background(), it)
	if err != nil || !res.Duplicate {
		t.Fatalf("duplicate: %+v, %v", res, err)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.dedupe["req-1"].ack != nil {
		t.Fatal("the dedupe record still holds the original's Ack after a duplicate found it durable")
	}
}
