package postgres_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// TestListItemsScanBound checks on a table larger than MaxListScan that a
// filter matching little stops after MaxListScan pending rows with a cursor
// to go on from, and that the next page finds the matches past it, ready
// and delayed alike (the shared suite runs on a few items only).
func TestListItemsScanBound(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	q := openQueue(t, pgtest.NewDatabase(t), clock, postgres.QueueConfig{Capacity: -1, DedupeWindow: -1})
	n := resourcelease.MaxListScan + 10
	for start := 0; start < n; start += resourcelease.MaxBatchItems {
		items := make([]resourcelease.Item, min(resourcelease.MaxBatchItems, n-start))
		for i := range items {
			items[i] = qitem(fmt.Sprint("a-", start+i))
		}
		if _, err := q.EnqueueBatch(bg, items); err != nil {
			t.Fatal(err)
		}
	}
	rare := qitem("rare-ready")
	rare.PartitionKey = "rare"
	later := qitem("rare-delayed")
	later.PartitionKey, later.NotBefore = "rare", clock.Now().Add(time.Hour)
	var want []int64
	for _, it := range []resourcelease.Item{rare, later} {
		res, err := q.Enqueue(bg, it)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, res.SequenceID)
	}

	req := resourcelease.ListItemsRequest{State: resourcelease.ItemPending, PartitionKey: "rare"}
	first, err := q.ListItems(bg, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Items) != 0 || first.NextAfter != int64(resourcelease.MaxListScan) {
		t.Fatalf("first page %v next %d; want nothing within the scan bound, next %d", first.Items, first.NextAfter, resourcelease.MaxListScan)
	}
	req.After = first.NextAfter
	second, err := q.ListItems(bg, req)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(second.Items); !slices.Equal(got, want) || second.NextAfter != 0 {
		t.Fatalf("second page %v next %d; want %v, the end", got, second.NextAfter, want)
	}
	if d := second.Items[1]; !d.ReadyAt.Equal(later.NotBefore) {
		t.Fatalf("the delayed item is ready at %v, want %v", d.ReadyAt, later.NotBefore)
	}
	// Unfiltered pages are full pages of the state in sequence order.
	all, err := q.ListItems(bg, resourcelease.ListItemsRequest{State: resourcelease.ItemPending, After: int64(n - 2), Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(all.Items); !slices.Equal(got, []int64{int64(n - 1), int64(n), want[0]}) || all.NextAfter != want[0] {
		t.Fatalf("page after %d: %v next %d", n-2, got, all.NextAfter)
	}

	// On a table of 10k rows every state's page reads through an index,
	// never the whole table, with the custom and the generic plan.
	for range 3 {
		l, err := q.Lease(bg, "w", 0)
		if err != nil || l == nil {
			t.Fatalf("Lease = %v, %v", l, err)
		}
		if err := q.Fail(bg, l.OwnershipToken, resourcelease.FailOptions{Reason: "x", DeadLetter: true}); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if l, err := q.Lease(bg, "w", 0); err != nil || l == nil {
			t.Fatalf("Lease = %v, %v", l, err)
		}
	}
	pool := q.Store().Pool()
	if _, err := pool.Exec(bg, `ANALYZE leasemesh.items`); err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(bg)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(bg)
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		if _, err := tx.Exec(bg, "SET LOCAL plan_cache_mode = "+mode); err != nil {
			t.Fatal(err)
		}
		for state, index := range map[resourcelease.ItemState]string{
			resourcelease.ItemPending: "items_ready", resourcelease.ItemDead: "items_dead", resourcelease.ItemLeased: "items_leased_expiry",
		} {
			text := explain(t, tx, q.ListSQL(state), int64(0), resourcelease.MaxListScan+1, "rare", nil, nil, 51, resourcelease.MaxListScan)
			if strings.Contains(text, "Seq Scan on items") || !strings.Contains(text, "using "+index) {
				t.Errorf("%s: listing %s: want no sequential scan of items, an index scan using %s:\n%s", mode, state, index, text)
			}
		}
	}
}

func seqs(items []resourcelease.ItemInfo) []int64 {
	out := []int64{}
	for _, it := range items {
		out = append(out, it.SequenceID)
	}
	return out
}
