package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// The mesh benchmarks measure several dispatchers on one database: each
// postgres.Queue below has a Store (and pool, and LISTEN connection) of its
// own, which is what one dispatcher process holds. Run them with
//
//	go test ./postgres -run '^$' -bench 'Mesh' -benchtime 3s
//
// BenchmarkMeshCycle's cycles/s is the whole mesh's; on a machine with few
// cores it measures what coordination costs (the serialized log append,
// the row locks), not how far the mesh scales. lock-waiters and
// wal-waiters are the average number of backends waiting on a lock and on
// the WAL, sampled every 5 ms.

// BenchmarkMeshCycle runs 8 closed-loop workers per queue, each an
// enqueue → lease → complete cycle of single-item calls on its own queue,
// with 1, 2 and 3 queues on one database (fsync and synchronous_commit on).
// An item one queue enqueued may be leased through another.
//
// The requestIds variants give every item a unique requestId with the
// dedupe window on, as a transport.Client over several dispatchers does
// (so that a retry on another dispatcher dedupes): what that costs.
func BenchmarkMeshCycle(b *testing.B) {
	const perQueue = 8
	type variant struct {
		n          int
		requestIDs bool
	}
	for _, v := range []variant{{1, false}, {2, false}, {3, false}, {1, true}, {3, true}} {
		n := v.n
		name := fmt.Sprintf("dispatchers=%d/workers=%d", n, n*perQueue)
		if v.requestIDs {
			name += "/requestIds"
		}
		b.Run(name, func(b *testing.B) {
			url := pgtest.NewDatabase(b)
			var cc commitCounter
			queues := make([]*postgres.Queue, n)
			window := time.Duration(-1)
			if v.requestIDs {
				window = 0 // the default window
			}
			for i := range queues {
				queues[i] = openQueue(b, url, nil, postgres.QueueConfig{Capacity: -1, DedupeWindow: window, OnCommit: cc.onCommit})
			}
			stopSampling := sampleWaits(b, url)
			b.ResetTimer()
			start := time.Now()
			runWorkers(b, n*perQueue, func(ctx context.Context, w, i int) error {
				q := queues[w%n]
				it := benchItem(i)
				if v.requestIDs {
					it.RequestID = fmt.Sprint("bench-", i)
				}
				if _, err := q.Enqueue(ctx, it); err != nil {
					return err
				}
				l, err := leaseOne(ctx, q, fmt.Sprint("w", w))
				if err != nil {
					return err
				}
				return q.Complete(ctx, l.OwnershipToken)
			})
			elapsed := time.Since(start)
			b.StopTimer()
			lockWaits, walWaits := stopSampling()
			b.ReportMetric(cc.perCommit(), "changes/commit")
			b.ReportMetric(float64(cc.commits.Load())/elapsed.Seconds(), "commits/s")
			b.ReportMetric(lockWaits, "lock-waiters")
			b.ReportMetric(walWaits, "wal-waiters")
		})
	}
}

// sampleWaits samples, every 5 ms until the returned function is called,
// how many of the database's backends wait on a lock (the counter row of
// the serialized log append, item rows) and on the WAL (a commit's flush);
// that function returns the averages. They say where the time goes when
// more dispatchers do not mean more cycles.
func sampleWaits(b *testing.B, url string) func() (lock, wal float64) {
	b.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var samples, locks, wals int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var l, w int64
			err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'),
				count(*) FILTER (WHERE wait_event IN ('WALSync', 'WALWrite', 'WALInsert'))
				FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&l, &w)
			if err != nil {
				return
			}
			samples++
			locks += l
			wals += w
		}
	}()
	return func() (float64, float64) {
		cancel()
		<-done
		_ = conn.Close(context.Background())
		if samples == 0 {
			return 0, 0
		}
		return float64(locks) / float64(samples), float64(wals) / float64(samples)
	}
}

// BenchmarkMeshWakeup measures the cross-dispatcher long-poll wake-up: a
// lease parked on the last queue, and an item enqueued through the first,
// which reaches the waiter by NOTIFY (sent in the enqueue's transaction).
// p50-ms and p99-ms run from the start of the Enqueue call (its commit
// included) to the lease's return; commit-p50-ms from the Enqueue's return
// (the producer knows its item is committed) to the lease's, 0 when the
// lease came first.
func BenchmarkMeshWakeup(b *testing.B) {
	for _, n := range []int{2, 3} {
		b.Run(fmt.Sprintf("dispatchers=%d", n), func(b *testing.B) {
			url := pgtest.NewDatabase(b)
			queues := make([]*postgres.Queue, n)
			for i := range queues {
				queues[i] = openQueue(b, url, nil, postgres.QueueConfig{Capacity: -1, DedupeWindow: -1})
				waitListening(b, queues[i])
			}
			producer, waiter := queues[0], queues[n-1]
			// The queues in between only listen: they hear every NOTIFY
			// too, as the other dispatchers of a mesh do.
			lat := make([]time.Duration, 0, b.N)
			afterCommit := make([]time.Duration, 0, b.N)
			var leasedAt atomic.Int64
			b.ResetTimer()
			for i := range b.N {
				got := make(chan *resourcelease.Lease, 1)
				go func() {
					l, err := waiter.Lease(context.Background(), "w", 10*time.Second)
					leasedAt.Store(time.Now().UnixNano())
					if err != nil {
						b.Error(err)
					}
					got <- l
				}()
				for waiter.Waiters() == 0 {
					time.Sleep(50 * time.Microsecond)
				}
				start := time.Now()
				if _, err := producer.Enqueue(context.Background(), benchItem(i)); err != nil {
					b.Fatal(err)
				}
				committed := time.Now()
				l := <-got
				end := time.Unix(0, leasedAt.Load())
				lat = append(lat, end.Sub(start))
				afterCommit = append(afterCommit, max(end.Sub(committed), 0))
				if l == nil {
					b.Fatal("the waiter got nothing")
				}
				if err := waiter.Complete(context.Background(), l.OwnershipToken); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			slices.Sort(afterCommit)
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
			b.ReportMetric(ms(afterCommit[len(afterCommit)/2]), "commit-p50-ms")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
