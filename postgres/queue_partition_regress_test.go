package postgres_test

import (
	"testing"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func partItem(p, id string) resourcelease.Item {
	it := qitem(id)
	it.PartitionKey = p
	return it
}

func leaseNow(t *testing.T, q *postgres.Queue) *resourcelease.Lease {
	t.Helper()
	l, err := q.Lease(bg, "w", 0)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestPartitionStrictOrderStaleLock: a stale token's row lock (lockItems FOR UPDATE, here through QueueTx)
// on a strict partition's pending head makes another dispatcher's lease
// skip it (cand SKIP LOCKED) and lease the next item: out of order.
func TestPartitionStrictOrderStaleLock(t *testing.T) {
	url := pgtest.NewDatabase(t)
	cfg := postgres.QueueConfig{MaxActivePerPartition: 1}
	q1, q2 := openQueue(t, url, nil, cfg), openQueue(t, url, nil, cfg)
	for _, id := range []string{"a1", "a2"} {
		if _, err := q1.Enqueue(bg, partItem("a", id)); err != nil {
			t.Fatal(err)
		}
	}
	l := leaseNow(t, q1)
	if l.Payload.ResourceID != "a1" {
		t.Fatalf("leased %s", l.Payload.ResourceID)
	}
	if err := q1.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	// a1 pending again (attempt 2). A late Complete with the old token:
	tx, err := q1.Store().Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(bg)
	qt, err := q1.Tx(bg, tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := qt.Complete(bg, l.OwnershipToken); err != resourcelease.ErrUnknownToken {
		t.Fatalf("stale complete: %v", err)
	}
	got := leaseNow(t, q2)
	if got == nil {
		t.Fatal("nothing leased")
	}
	t.Logf("leased %s attempt %d while a1 is pending", got.Payload.ResourceID, got.Attempt)
	if got.Payload.ResourceID != "a1" {
		t.Errorf("strict partition leased %s before a1", got.Payload.ResourceID)
	}
}
