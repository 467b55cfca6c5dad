package resourcelease_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// stallingJournal records nothing durable (every Ack is done at once) and
// says it is stalled while stall is set.
type stallingJournal struct {
	mu      sync.Mutex
	stall   error
	records atomic.Int64
}

func (j *stallingJournal) Record(*resourcelease.Change) resourcelease.Ack {
	j.records.Add(1)
	return nil
}

func (j *stallingJournal) StorageStalled() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.stall
}

func (j *stallingJournal) set(err error) {
	j.mu.Lock()
	j.stall = err
	j.mu.Unlock()
}

// TestStalledJournalRefusesGrantsAndHeartbeats: while the journal reports
// a stall, lease, lease batch, heartbeat and heartbeat batch are refused
// unavailable up front, recording nothing, so that they do not use up the
// stalled journal's backlog; once it clears they work again.
func TestStalledJournalRefusesGrantsAndHeartbeats(t *testing.T) {
	j := &stallingJournal{}
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Journal: j})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if _, err := q.Enqueue(ctx, resourcelease.Item{ResourceType: "t", ResourceID: id, PartitionKey: "p", PayloadEncoding: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := q.Lease(ctx, "w", 0)
	if err != nil || l == nil {
		t.Fatalf("lease: %v, %v", l, err)
	}
	stall := &resourcelease.Error{Status: resourcelease.StatusUnavailable, Code: resourcelease.CodeStorageUnavailable, Message: "disk full"}
	j.set(stall)
	before := j.records.Load()
	for name, call := range map[string]func() error{
		"lease": func() error { _, err := q.Lease(ctx, "w", 0); return err },
		"lease batch": func() error {
			_, err := q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{MaxItems: 2})
			return err
		},
		"heartbeat": func() error { _, err := q.Heartbeat(ctx, l.OwnershipToken); return err },
		"heartbeat batch": func() error {
			res, err := q.HeartbeatBatch(ctx, []resourcelease.OwnershipToken{l.OwnershipToken})
			if err == nil {
				err = res[0].Err
			}
			return err
		},
	} {
		if err := call(); resourcelease.CodeOf(err) != resourcelease.CodeStorageUnavailable {
			t.Errorf("%s while the journal is stalled: %v, want %s", name, err, resourcelease.CodeStorageUnavailable)
		}
	}
	if n := j.records.Load() - before; n != 0 {
		t.Errorf("%d changes recorded while the journal is stalled, want 0", n)
	}
	j.set(nil)
	if _, err := q.Heartbeat(ctx, l.OwnershipToken); err != nil {
		t.Fatalf("heartbeat once the stall cleared: %v", err)
	}
	if l2, err := q.Lease(ctx, "w", 0); err != nil || l2 == nil {
		t.Fatalf("lease once the stall cleared: %v, %v", l2, err)
	}
}
