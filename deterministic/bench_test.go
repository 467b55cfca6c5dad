package deterministic_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// BenchmarkCoordinatorApplyEvent measures one ApplyEvent per iteration:
// "new" records a fresh sequence number each time (a TryAdd that inserts),
// "replay" redelivers already recorded ones (a TryAdd that does nothing).
// SQLite runs in WAL mode with synchronous NORMAL or FULL, one implicit
// transaction per event.
func BenchmarkCoordinatorApplyEvent(b *testing.B) {
	stores := []struct {
		name string
		new  func(b *testing.B) resourcelease.StateStore
	}{
		{"memory", func(*testing.B) resourcelease.StateStore { return deterministic.NewMemoryStore() }},
		{"sqlite-normal", func(b *testing.B) resourcelease.StateStore { return benchSQLite(b, sqlitedb.SynchronousNormal) }},
		{"sqlite-full", func(b *testing.B) resourcelease.StateStore { return benchSQLite(b, sqlitedb.SynchronousFull) }},
	}
	const replayed = 1000
	for _, st := range stores {
		b.Run(st.name+"/new", func(b *testing.B) {
			c, err := deterministic.NewCoordinator(deterministic.Config{Store: st.new(b)})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			e := testEvent(1, resourcelease.EventEnqueue, 0)
			b.ReportAllocs()
			var seq int64
			for b.Loop() {
				seq++
				e.SequenceNumber = seq
				if err := c.ApplyEvent(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
			if c.Replayed() != 0 {
				b.Fatalf("replayed %d, want 0", c.Replayed())
			}
		})
		b.Run(st.name+"/replay", func(b *testing.B) {
			c, err := deterministic.NewCoordinator(deterministic.Config{Store: st.new(b)})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			e := testEvent(1, resourcelease.EventEnqueue, 0)
			for seq := int64(1); seq <= replayed; seq++ {
				e.SequenceNumber = seq
				if err := c.ApplyEvent(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			var i int64
			for b.Loop() {
				e.SequenceNumber = i%replayed + 1
				i++
				if err := c.ApplyEvent(ctx, e); err != nil {
					b.Fatal(err)
				}
			}
			if c.Recorded() != replayed {
				b.Fatalf("recorded %d, want %d", c.Recorded(), replayed)
			}
		})
	}
}

func benchSQLite(b *testing.B, sync sqlitedb.Synchronous) resourcelease.StateStore {
	b.Helper()
	db, err := sqlitedb.Open(context.Background(), filepath.Join(b.TempDir(), deterministic.DefaultFileName), sqlitedb.Config{Synchronous: sync})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	s, err := deterministic.NewSQLiteStore(context.Background(), db, deterministic.SQLiteConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkCoordinatorApplyEvents measures ApplyEvents with batches of 1, 64
// and 512 new events per iteration (what a synchronous Coordinator costs per
// replicator commit batch). ns/op is per batch; ns/event, events/s and
// allocs/event are per event. SQLite runs in WAL mode with synchronous
// NORMAL or FULL: one transaction, so one commit, per batch.
func BenchmarkCoordinatorApplyEvents(b *testing.B) {
	stores := []struct {
		name string
		new  func(b *testing.B) resourcelease.StateStore
	}{
		{"memory", func(*testing.B) resourcelease.StateStore { return deterministic.NewMemoryStore() }},
		{"sqlite-normal", func(b *testing.B) resourcelease.StateStore { return benchSQLite(b, sqlitedb.SynchronousNormal) }},
		{"sqlite-full", func(b *testing.B) resourcelease.StateStore { return benchSQLite(b, sqlitedb.SynchronousFull) }},
	}
	for _, st := range stores {
		for _, size := range []int{1, 64, 512} {
			b.Run(fmt.Sprintf("%s/batch=%d", st.name, size), func(b *testing.B) {
				c, err := deterministic.NewCoordinator(deterministic.Config{Store: st.new(b)})
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				batch := make([]resourcelease.Event, size)
				for i := range batch {
					batch[i] = testEvent(int64(i+1), allEventTypes[i%len(allEventTypes)], 0)
				}
				var (
					seq    int64
					before runtime.MemStats
					after  runtime.MemStats
				)
				b.ReportAllocs()
				runtime.ReadMemStats(&before)
				for b.Loop() {
					for i := range batch {
						seq++
						batch[i].SequenceNumber = seq
					}
					if err := c.ApplyEvents(ctx, batch); err != nil {
						b.Fatal(err)
					}
				}
				runtime.ReadMemStats(&after)
				if c.Recorded() != seq || c.Replayed() != 0 {
					b.Fatalf("recorded/replayed = %d/%d, want %d/0", c.Recorded(), c.Replayed(), seq)
				}
				perEvent := float64(b.Elapsed().Nanoseconds()) / float64(seq)
				b.ReportMetric(perEvent, "ns/event")
				b.ReportMetric(1e9/perEvent, "events/s")
				b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(seq), "allocs/event")
			})
		}
	}
}
