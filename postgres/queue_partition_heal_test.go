package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
)

// TestPartitionSkippedRowHealed: a commit that changes a partition's items
// while another transaction holds its row (one that does not recompute it:
// a lease whose recheck rejected the row it locked, say) marks the row for
// recomputation in partition_dirty, durably: the partition becomes leasable
// again although the marking process goes away, whether the other process
// stays idle or a new one opens after it went away too.
func TestPartitionSkippedRowHealed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fresh bool // the healer is a queue opened after every other closed
	}{{"idle process", false}, {"process opened later", true}} {
		t.Run(tc.name, func(t *testing.T) {
			url := pgtest.NewDatabase(t)
			cfg := postgres.QueueConfig{MaxActivePerPartition: 1, PollInterval: 50 * time.Millisecond, SweepInterval: 200 * time.Millisecond}
			q1, q2 := openQueue(t, url, nil, cfg), openQueue(t, url, nil, cfg)
			for _, id := range []string{"a1", "a2"} {
				if _, err := q1.Enqueue(bg, partItem("a", id)); err != nil {
					t.Fatal(err)
				}
			}
			l := leaseNow(t, q1)
			hold, err := q1.Store().Pool().Begin(bg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := hold.Exec(bg, `SELECT 1 FROM `+q1.Store().Schema()+`.partitions WHERE partition_key = 'a' FOR UPDATE`); err != nil {
				t.Fatal(err)
			}
			if err := q2.Complete(bg, l.OwnershipToken); err != nil {
				t.Fatal(err)
			}
			if err := hold.Commit(bg); err != nil {
				t.Fatal(err)
			}
			q2.Close() // the skipping process goes away
			healer := q1
			if tc.fresh {
				q1.Close()
				healer = openQueue(t, url, nil, cfg)
			}
			ctx, cancel := context.WithTimeout(bg, 5*time.Second)
			got, err := healer.Lease(ctx, "w", 4*time.Second)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || got.Payload.ResourceID != "a2" {
				var active int
				var leasable bool
				if err := healer.Store().Pool().QueryRow(bg, `SELECT active_count, leasable FROM `+healer.Store().Schema()+`.partitions WHERE partition_key = 'a'`).Scan(&active, &leasable); err != nil {
					t.Fatal(err)
				}
				t.Fatalf("leased %v: a2 never leasable; row a: active_count=%d leasable=%v with no live lease", got, active, leasable)
			}
			var marks int
			if err := healer.Store().Pool().QueryRow(bg, `SELECT count(*) FROM `+healer.Store().Schema()+`.partition_dirty`).Scan(&marks); err != nil {
				t.Fatal(err)
			}
			if marks != 0 {
				t.Errorf("%d marks left in partition_dirty after the recompute", marks)
			}
		})
	}
}
