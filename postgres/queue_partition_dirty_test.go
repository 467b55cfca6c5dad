package postgres_test

import (
	"testing"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
)

// TestPartitionDirtyKeptOnTxRollback: the dirty partitions a QueueTx folds in are forgotten although the
// caller's transaction rolls back.
func TestPartitionDirtyKeptOnTxRollback(t *testing.T) {
	url := pgtest.NewDatabase(t)
	cfg := postgres.QueueConfig{MaxActivePerPartition: 1}
	q1, q2 := openQueue(t, url, nil, cfg), openQueue(t, url, nil, cfg)
	for _, id := range []string{"a1", "a2"} {
		if _, err := q1.Enqueue(bg, partItem("a", id)); err != nil {
			t.Fatal(err)
		}
	}
	l := leaseNow(t, q2)
	hold, err := q1.Store().Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hold.Exec(bg, `SELECT 1 FROM `+q1.Store().Schema()+`.partitions WHERE partition_key = 'a' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	if err := q1.Complete(bg, l.OwnershipToken); err != nil {
		t.Fatal(err)
	}
	if err := hold.Commit(bg); err != nil {
		t.Fatal(err)
	}
	// q1 skipped 'a'. A QueueTx on q1 that rolls back:
	tx, err := q1.Store().Pool().Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	qt, err := q1.Tx(bg, tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := qt.Enqueue(bg, partItem("b", "b1")); err != nil {
		t.Fatal(err)
	}
	if _, err := qt.Finish(bg); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(bg); err != nil {
		t.Fatal(err)
	}
	// q1 commits more work, in another partition.
	if _, err := q1.Enqueue(bg, partItem("c", "c1")); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 3 {
		if got := leaseNow(t, q1); got != nil {
			seen[got.Payload.ResourceID] = true
		}
	}
	if !seen["a2"] {
		t.Errorf("a2 never leased; leased %v", seen)
	}
}
