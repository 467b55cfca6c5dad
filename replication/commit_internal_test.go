package replication

import (
	"context"
	"database/sql"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// BenchmarkCommitBatch measures the writer's cost of one group commit of
// nine changes (three each of enqueue, lease, complete) in the steady state of the enqueue → lease → complete
// workload (items enqueued, leased and completed in different batches),
// without goroutines: the part of a cycle no scheduling can hide.
func BenchmarkCommitBatch(b *testing.B) {
	ctx := context.Background()
	db, err := sqlitedb.Open(ctx, filepath.Join(b.TempDir(), "r.db"), sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	s := newTestStore(b, db)
	defer s.close()
	item := resourcelease.Item{ResourceType: "demo.order", ResourceID: "order-0001", PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"order":"0001","amount":42}`),
		Attributes: map[string]string{"tenant": "tenant-1", "priority": "high"}}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seq, evSeq := int64(0), int64(0)
	var leased, enqueued []int64
	mk := func(c *resourcelease.Change) *entry {
		evSeq++
		ev := resourcelease.NewEvent(c)
		ev.SequenceNumber = evSeq
		return &entry{change: c, event: ev}
	}
	pending := func(s int64, attempt int) *resourcelease.PendingItem {
		return &resourcelease.PendingItem{Payload: item, Attempt: attempt, EnqueuedAt: at, SequenceID: s}
	}
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	defer func() {
		var ru1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		cpu := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}()
	for range b.N {
		var batch []*entry
		for range 3 {
			seq++
			enqueued = append(enqueued, seq)
			batch = append(batch, mk(&resourcelease.Change{Kind: resourcelease.ChangeEnqueued, At: at, Item: pending(seq, 1)}))
		}
		for range 3 {
			if len(enqueued) > 3 { // leases trail enqueues by a batch
				s := enqueued[0]
				enqueued = enqueued[1:]
				tok := resourcelease.OwnershipToken{SequenceID: s, Attempt: 1, LeaseID: uuid.New()}
				p := pending(s, 1)
				p.LastOwnershipToken = &tok
				leased = append(leased, s)
				batch = append(batch, mk(&resourcelease.Change{Kind: resourcelease.ChangeLeased, At: at, Item: p, Token: tok, PeerID: "w", LeasedAt: at}))
			}
		}
		for range 3 {
			if len(leased) > 3 { // completions trail leases by a batch
				s := leased[0]
				leased = leased[1:]
				batch = append(batch, mk(&resourcelease.Change{Kind: resourcelease.ChangeCompleted, At: at, Item: pending(s, 1),
					Token: resourcelease.OwnershipToken{SequenceID: s, Attempt: 1, LeaseID: uuid.New()}}))
			}
		}
		if err := s.commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
}

func newTestStore(tb testing.TB, db *sql.DB) *sqliteStore {
	tb.Helper()
	ctx := context.Background()
	s := &sqliteStore{
		sqliteReads: sqliteReads{db: db, path: "test.db", dedupeWindow: time.Minute, clock: resourcelease.SystemClock},
		retention:   -1,
		opIdx:       make(map[int64]int),
		pin:         func() int64 { return 0 },
		reserved:    1,
	}
	if err := s.open(ctx); err != nil {
		tb.Fatal(err)
	}
	return s
}
