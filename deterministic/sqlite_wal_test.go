package deterministic_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestSQLiteConfigCheckpoints(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "config.db"))
	for _, tc := range []struct {
		name string
		cfg  deterministic.SQLiteConfig
	}{
		{"negative checkpoint pages", deterministic.SQLiteConfig{CheckpointPages: -1}},
		{"negative max WAL pages", deterministic.SQLiteConfig{MaxWALPages: -1}},
		{"max WAL pages below checkpoint pages", deterministic.SQLiteConfig{CheckpointPages: 100, MaxWALPages: 99}},
		{"max WAL pages below the default checkpoint pages", deterministic.SQLiteConfig{MaxWALPages: deterministic.DefaultCheckpointPages - 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := deterministic.NewSQLiteStore(ctx, db, tc.cfg)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, resourcelease.ErrInvalidArgument) {
				t.Fatalf("NewSQLiteStore(%+v) err = %v, want invalid-argument", tc.cfg, err)
			}
		})
	}
}

// walStore is a store on a fresh database, and the size of its -wal file.
func walStore(t *testing.T, cfg deterministic.SQLiteConfig) (*deterministic.SQLiteStore, func() int64) {
	t.Helper()
	path := filepath.Join(t.TempDir(), deterministic.DefaultFileName)
	db := openDB(t, path)
	s, err := deterministic.NewSQLiteStore(context.Background(), db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	var pageSize int64
	if err := db.QueryRow("PRAGMA page_size").Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	return s, func() int64 {
		fi, err := os.Stat(path + "-wal")
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size() / (pageSize + 24)
	}
}

// writeBatches writes n batches of 8 records with TryAddMany and one Set
// (what a synchronous Coordinator does per replicator batch) from workers
// goroutines, and returns the largest -wal file it saw, in frames.
func writeBatches(t *testing.T, s *deterministic.SQLiteStore, walFrames func() int64, workers, n int) int64 {
	t.Helper()
	ctx := context.Background()
	payload := []byte(strings.Repeat("p", 200))
	var (
		mu      sync.Mutex
		largest int64
		wg      sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := range n {
				recs := make([]deterministic.KeyedRecord, 8)
				for j := range recs {
					recs[j] = deterministic.KeyedRecord{Key: fmt.Sprintf("w%d/b%d/r%d", w, i, j), Record: resourcelease.Record{Kind: "k", Payload: payload, RecordedAt: t0}}
				}
				if _, err := s.TryAddMany(ctx, recs); err != nil {
					t.Error(err)
					return
				}
				if err := s.Set(ctx, fmt.Sprintf("w%d/checkpoint", w), resourcelease.Record{Kind: "c", Version: int64(i), RecordedAt: t0}); err != nil {
					t.Error(err)
					return
				}
				f := walFrames()
				mu.Lock()
				largest = max(largest, f)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return largest
}

// TestSQLiteStoreWritesDoNotCheckpoint: with the store's own checkpoints
// pushed out of reach, the WAL grows far past SQLite's automatic threshold
// of 1000 pages: no write ran a checkpoint inside its commit.
func TestSQLiteStoreWritesDoNotCheckpoint(t *testing.T) {
	s, walFrames := walStore(t, deterministic.SQLiteConfig{CheckpointPages: 1 << 30})
	if largest := writeBatches(t, s, walFrames, 2, 400); largest < 2000 {
		t.Fatalf("the -wal file reached only %d frames; a write ran a checkpoint (SQLite's automatic one, at 1000 pages?)", largest)
	}
}

// TestSQLiteStoreWALStaysBounded: under sustained writes from several
// goroutines the store's checkpointer keeps the -wal file near its bound,
// twice MaxWALPages (the test allows walSlack times it for checkpoints
// slowed by a loaded machine or the race detector: 1,252 frames were seen
// once with both cores busy, 1,660 under -race), though the writes append
// far more than that without checkpoints.
func TestSQLiteStoreWALStaysBounded(t *testing.T) {
	const maxPages = 256
	s, walFrames := walStore(t, deterministic.SQLiteConfig{CheckpointPages: 64, MaxWALPages: maxPages})
	if largest := writeBatches(t, s, walFrames, 4, 400); largest > walSlack*maxPages {
		t.Fatalf("the -wal file reached %d frames, want at most %d (MaxWALPages %d)", largest, walSlack*maxPages, maxPages)
	}
}
