package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// ratioRounds and ratioSlice shape BenchmarkCycleRatios: rounds of one
// slice of each contender.
const (
	ratioRounds = 6
	ratioSlice  = 500 * time.Millisecond
	// ratioBoundBacklog is the bound's backlog of ready items ÷ 4: more
	// than a transaction of any shape here leases.
	ratioBoundBacklog = 64
)

// BenchmarkCycleRatios measures the queue's cycle against the yardsticks
// of the same run in alternating half-second slices, and reports the median
// of the per-round ratios: on a machine whose disk and CPU speed drift over
// tens of seconds, separate benchmarks one after another compare different
// machines, and their ratios scatter by 2× where these do not. Per shape:
// the queue (synchronous_commit on, the default InFlight), the naive queue
// with as many workers (one transaction per operation, one connection per
// worker), bare one-round-trip commits and the bound with the queue's log
// (BenchmarkCycleSQLBound's log=full transactions on one connection, each
// as many cycles as the queue's commits of that round carried), each against
// a database of its own, in that order every round. Reported: the medians
// of queue, naive and bound cycles/s, queue ÷ naive, queue ÷ bound, bound ÷
// naive (how far the machine lets any queue with this log go past the naive
// one) and, at 8 single-item workers, queue ÷ "commits/s × changes per
// commit ÷ 3". It runs its rounds once whatever b.N:
//
//	go test ./postgres -run '^$' -bench CycleRatios -benchtime 1x
func BenchmarkCycleRatios(b *testing.B) {
	for _, sh := range []struct {
		name           string
		workers, batch int
	}{{"workers=8", 8, 1}, {"workers=64", 64, 1}, {"workers=8/batch=16", 8, 16}} {
		b.Run(sh.name, func(b *testing.B) {
			var cc commitCounter
			q := openQueue(b, pgtest.NewDatabase(b), nil, postgres.QueueConfig{Capacity: -1, DedupeWindow: -1, OnCommit: cc.onCommit})
			naive := newNaiveQueue(b, pgtest.NewDatabase(b), sh.workers)
			bare, err := pgx.Connect(context.Background(), pgtest.NewDatabase(b))
			if err != nil {
				b.Fatal(err)
			}
			defer bare.Close(context.Background())
			ctx := context.Background()
			for _, sql := range []string{`CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)`, `INSERT INTO counter VALUES (1, 0)`} {
				if _, err := bare.Exec(ctx, sql); err != nil {
					b.Fatal(err)
				}
			}
			queueCycle := func(ctx context.Context, w, i int) (int, error) {
				if _, err := q.Enqueue(ctx, benchItem(i)); err != nil {
					return 0, err
				}
				l, err := leaseOne(ctx, q, fmt.Sprint("w", w))
				if err != nil {
					return 0, err
				}
				return 1, q.Complete(ctx, l.OwnershipToken)
			}
			if sh.batch > 1 {
				queueCycle = func(ctx context.Context, w, i int) (int, error) {
					return sh.batch, batchCycle(ctx, q, fmt.Sprint("w", w), sh.batch)
				}
			}
			body := benchItem(0).Body
			naiveCycle := func(ctx context.Context, w, i int) (int, error) {
				if err := naive.enqueue(ctx, body); err != nil {
					return 0, err
				}
				for {
					id, err := naive.lease(ctx)
					if err != nil || id != 0 {
						if err == nil {
							err = naive.complete(ctx, id)
						}
						return 1, err
					}
				}
			}
			bareCommit := func(ctx context.Context, w, i int) (int, error) {
				_, err := bare.Exec(ctx, `UPDATE counter SET n = n + 1 WHERE id = 1`)
				return 1, err
			}
			// The bound with the queue's log (one transaction in flight, as
			// the queue's writer keeps), sized at each round to the changes
			// per commit the queue's slice achieved.
			boundPool := boundSchema(b, pgtest.NewDatabase(b), 1, ratioBoundBacklog)
			boundConn, err := boundPool.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer boundConn.Release()
			boundLeased, boundBody := []int64{}, benchItem(0).Body
			var boundK, boundAcc float64
			boundDone := 0
			boundCycle := func(ctx context.Context, w, i int) (int, error) {
				boundAcc += boundK
				n := min(int(boundAcc)-boundDone, ratioBoundBacklog)
				if n == 0 {
					return 0, nil
				}
				boundDone += n
				return n, boundTx(ctx, boundConn.Conn(), boundCycleFullSQL, false, &boundLeased, n, boundBody, boundPayload)
			}
			var qRate, nRate, bRate, vsNaive, vsYard, vsBound, boundVsNaive []float64
			b.ResetTimer()
			for range ratioRounds {
				commits, changes := cc.commits.Load(), cc.changes.Load()
				qr := runSlice(b, sh.workers, queueCycle)
				perCommit := float64(cc.changes.Load()-changes) / float64(max(cc.commits.Load()-commits, 1))
				nr := runSlice(b, sh.workers, naiveCycle)
				cr := runSlice(b, 1, bareCommit)
				boundK = max(1, perCommit/3)
				br := runSlice(b, 1, boundCycle)
				qRate, nRate, bRate = append(qRate, qr), append(nRate, nr), append(bRate, br)
				vsNaive = append(vsNaive, qr/nr)
				vsYard = append(vsYard, qr/(cr*perCommit/3))
				vsBound, boundVsNaive = append(vsBound, qr/br), append(boundVsNaive, br/nr)
			}
			b.StopTimer()
			b.ReportMetric(median(qRate), "cycles/s")
			b.ReportMetric(median(nRate), "naive-cycles/s")
			b.ReportMetric(median(vsNaive), "×naive")
			b.ReportMetric(median(bRate), "bound-cycles/s")
			b.ReportMetric(median(vsBound), "×bound")
			b.ReportMetric(median(boundVsNaive), "bound×naive")
			if sh.batch == 1 {
				b.ReportMetric(median(vsYard), "×commits·changes/3")
			}
			b.Logf("per round: queue %.0f, naive %.0f, bound %.0f cycles/s, queue÷naive %.2f, queue÷bound %.2f, bound÷naive %.2f",
				qRate, nRate, bRate, vsNaive, vsBound, boundVsNaive)
		})
	}
}

// batchCycle enqueues, leases and completes per items with the batch calls.
func batchCycle(ctx context.Context, q *postgres.Queue, peer string, per int) error {
	items := make([]resourcelease.Item, per)
	for i := range items {
		items[i] = benchItem(i)
	}
	if _, err := q.EnqueueBatch(ctx, items); err != nil {
		return err
	}
	var tokens []resourcelease.OwnershipToken
	for len(tokens) < per {
		ls, err := q.LeaseBatch(ctx, peer, resourcelease.LeaseBatchOptions{MaxItems: per - len(tokens), Wait: time.Second})
		if err != nil {
			return err
		}
		for _, l := range ls {
			tokens = append(tokens, l.OwnershipToken)
		}
	}
	_, err := q.CompleteBatch(ctx, tokens)
	return err
}

// runSlice runs cycle on workers goroutines for ratioSlice and returns the
// cycles per second they completed (cycle returns how many one call did).
func runSlice(b *testing.B, workers int, cycle func(ctx context.Context, w, i int) (int, error)) float64 {
	b.Helper()
	ctx := context.Background()
	var done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	start := time.Now()
	stop := start.Add(ratioSlice)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				n, err := cycle(ctx, w, i)
				if err != nil {
					errs <- err
					return
				}
				done.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return float64(done.Load()) / elapsed.Seconds()
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
