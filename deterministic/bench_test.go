package deterministic_test

import (
	"context"
	"path/filepath"
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
	db, err := sqlitedb.Open(context.Background(), filepath.Join(b.TempDir(), deterministic.DefaultFileName), sqlitedb.Options{Synchronous: sync})
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
