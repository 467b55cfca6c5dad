package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// The benchmarks measure enqueue → lease → complete cycles per second in
// process, on the test server (fsync on; synchronous_commit on or off by
// URL), next to two yardsticks measured in the same run: a naive queue that
// runs every operation in a transaction of its own with SKIP LOCKED, and
// bare one-round-trip commits per second. Run them with
//
//	go test ./postgres -run '^$' -bench . -benchtime 5s
//
// and read cycles/s, changes/commit and the yardstick figures.

func benchItem(i int) resourcelease.Item {
	return resourcelease.Item{
		ResourceType: "bench.order", ResourceID: fmt.Sprint("order-", i), PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"id":42,"sku":"abc-123","qty":3}`),
	}
}

func syncURL(url string, on bool) string {
	if on {
		return url
	}
	if strings.Contains(url, "?") {
		return url + "&synchronous_commit=off"
	}
	return url + "?synchronous_commit=off"
}

// commitCounter counts the writer's commits and the changes they carry.
type commitCounter struct{ commits, changes atomic.Int64 }

func (c *commitCounter) onCommit(cs []postgres.Committed) {
	c.commits.Add(1)
	c.changes.Add(int64(len(cs)))
}

func (c *commitCounter) perCommit() float64 {
	if n := c.commits.Load(); n > 0 {
		return float64(c.changes.Load()) / float64(n)
	}
	return 0
}

// runWorkers runs n cycles split over workers goroutines.
func runWorkers(b *testing.B, workers int, cycle func(ctx context.Context, w, i int) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	ctx := context.Background()
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := cycle(ctx, w, int(i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cycles/s")
}

func leaseOne(ctx context.Context, q *postgres.Queue, peer string) (*resourcelease.Lease, error) {
	for {
		l, err := q.Lease(ctx, peer, time.Second)
		if err != nil || l != nil {
			return l, err
		}
	}
}

// BenchmarkCycle is the Postgres queue's enqueue → lease → complete cycle,
// each worker a closed loop of single-item calls, group-committed.
func BenchmarkCycle(b *testing.B) {
	for _, on := range []bool{true, false} {
		for _, workers := range []int{8, 64} {
			for _, inFlight := range []int{1, 2} {
				b.Run(fmt.Sprintf("sync=%v/workers=%d/inflight=%d", onOff(on), workers, inFlight), func(b *testing.B) {
					url := syncURL(pgtest.NewDatabase(b), on)
					var cc commitCounter
					q := openQueue(b, url, nil, postgres.QueueConfig{Capacity: -1, DedupeWindow: -1, OnCommit: cc.onCommit, InFlight: inFlight})
					mark := walMark(b, q.Store().Pool())
					b.ResetTimer()
					runWorkers(b, workers, func(ctx context.Context, w, i int) error {
						if _, err := q.Enqueue(ctx, benchItem(i)); err != nil {
							return err
						}
						l, err := leaseOne(ctx, q, fmt.Sprint("w", w))
						if err != nil {
							return err
						}
						return q.Complete(ctx, l.OwnershipToken)
					})
					b.StopTimer()
					b.ReportMetric(cc.perCommit(), "changes/commit")
					if n := cc.commits.Load(); n > 0 {
						b.ReportMetric(walSince(b, q.Store().Pool(), mark)/float64(n), "wal-bytes/commit")
					}
					if on {
						measuredPerCommit.Store(cycleShape{workers, inFlight}, cc.perCommit())
					}
				})
			}
		}
	}
}

// BenchmarkCycleBatch is the same cycle with the batch calls: each worker
// enqueues, leases and completes 16 items per call.
func BenchmarkCycleBatch(b *testing.B) {
	const per = 16
	for _, on := range []bool{true, false} {
		b.Run(fmt.Sprintf("sync=%v/workers=8/batch=%d", onOff(on), per), func(b *testing.B) {
			url := syncURL(pgtest.NewDatabase(b), on)
			var cc commitCounter
			q := openQueue(b, url, nil, postgres.QueueConfig{Capacity: -1, DedupeWindow: -1, OnCommit: cc.onCommit})
			var done atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx := context.Background()
					for done.Add(per) <= int64(b.N)+per-1 {
						items := make([]resourcelease.Item, per)
						for i := range items {
							items[i] = benchItem(i)
						}
						if _, err := q.EnqueueBatch(ctx, items); err != nil {
							errs <- err
							return
						}
						var tokens []resourcelease.OwnershipToken
						for len(tokens) < per {
							ls, err := q.LeaseBatch(ctx, fmt.Sprint("w", w), resourcelease.LeaseBatchOptions{MaxItems: per - len(tokens), Wait: time.Second})
							if err != nil {
								errs <- err
								return
							}
							for _, l := range ls {
								tokens = append(tokens, l.OwnershipToken)
							}
						}
						if _, err := q.CompleteBatch(ctx, tokens); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			close(errs)
			if err := <-errs; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(done.Load()-(per-1)*8)/elapsed.Seconds(), "cycles/s")
			b.ReportMetric(cc.perCommit(), "changes/commit")
			if on {
				measuredPerCommit.Store(batchShape, cc.perCommit())
			}
		})
	}
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// naiveQueue is the yardstick of the issue: a SKIP LOCKED queue that runs
// each operation in a transaction of its own (River's, graphile-worker's
// and pgmq's shape, without a log).
type naiveQueue struct{ pool *pgxpool.Pool }

func newNaiveQueue(b *testing.B, url string, conns int) *naiveQueue {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if _, err := pool.Exec(context.Background(), `CREATE TABLE naive_jobs (
		id bigserial PRIMARY KEY, state text NOT NULL DEFAULT 'ready', payload bytea,
		attempt int NOT NULL DEFAULT 0, lease_id uuid, lease_expires_at timestamptz)`); err != nil {
		b.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `CREATE INDEX naive_ready ON naive_jobs (id) WHERE state = 'ready'`); err != nil {
		b.Fatal(err)
	}
	return &naiveQueue{pool: pool}
}

func (n *naiveQueue) enqueue(ctx context.Context, body []byte) error {
	_, err := n.pool.Exec(ctx, `INSERT INTO naive_jobs (payload) VALUES ($1)`, body)
	return err
}

func (n *naiveQueue) lease(ctx context.Context) (int64, error) {
	var id int64
	err := n.pool.QueryRow(ctx, `UPDATE naive_jobs SET state = 'leased', attempt = attempt + 1, lease_id = gen_random_uuid(),
			lease_expires_at = now() + interval '30 seconds'
		WHERE id = (SELECT id FROM naive_jobs WHERE state = 'ready' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING id`).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return id, err
}

func (n *naiveQueue) complete(ctx context.Context, id int64) error {
	_, err := n.pool.Exec(ctx, `DELETE FROM naive_jobs WHERE id = $1 AND state = 'leased'`, id)
	return err
}

// BenchmarkNaiveCycle is the naive queue's cycle, one connection per worker.
func BenchmarkNaiveCycle(b *testing.B) {
	for _, on := range []bool{true, false} {
		for _, workers := range []int{8, 64} {
			b.Run(fmt.Sprintf("sync=%v/workers=%d", onOff(on), workers), func(b *testing.B) {
				n := newNaiveQueue(b, syncURL(pgtest.NewDatabase(b), on), workers)
				body := benchItem(0).Body
				b.ResetTimer()
				runWorkers(b, workers, func(ctx context.Context, w, i int) error {
					if err := n.enqueue(ctx, body); err != nil {
						return err
					}
					for {
						id, err := n.lease(ctx)
						if err != nil {
							return err
						}
						if id != 0 {
							return n.complete(ctx, id)
						}
					}
				})
			})
		}
	}
}

// BenchmarkCommitRoundTrip is the yardstick's first factor: commits per
// second of a one-statement transaction that writes a row, one connection,
// one round trip each (what a transaction costs when it carries a single
// change and nothing else). The yardstick for a group-committing queue is
// this × changes per commit ÷ 3 (a cycle is three changes).
func BenchmarkCommitRoundTrip(b *testing.B) {
	for _, on := range []bool{true, false} {
		b.Run("sync="+onOff(on), func(b *testing.B) {
			url := syncURL(pgtest.NewDatabase(b), on)
			conn, err := pgx.Connect(context.Background(), url)
			if err != nil {
				b.Fatal(err)
			}
			defer conn.Close(context.Background())
			ctx := context.Background()
			if _, err := conn.Exec(ctx, `CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL)`); err != nil {
				b.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `INSERT INTO counter VALUES (1, 0)`); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				if _, err := conn.Exec(ctx, `UPDATE counter SET n = n + 1 WHERE id = 1`); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "commits/s")
		})
	}
}

// BenchmarkLongPollWakeup measures how long a parked long-poll takes to
// return once an item is enqueued: through this process's writer (local),
// and through another process's enqueue, which reaches this one by NOTIFY
// (notify: two Queues on two stores, as two dispatchers).
func BenchmarkLongPollWakeup(b *testing.B) {
	for _, mode := range []string{"local", "notify"} {
		b.Run(mode, func(b *testing.B) {
			url := pgtest.NewDatabase(b)
			waiter := openQueue(b, url, nil, postgres.QueueConfig{Capacity: -1, DedupeWindow: -1})
			producer := waiter
			if mode == "notify" {
				producer = openQueue(b, url, nil, postgres.QueueConfig{Capacity: -1, DedupeWindow: -1})
				waitListening(b, waiter)
			}
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := range b.N {
				got := make(chan *resourcelease.Lease, 1)
				go func() {
					l, err := waiter.Lease(ctx, "w", 10*time.Second)
					if err != nil {
						b.Error(err)
					}
					got <- l
				}()
				for waiter.Waiters() == 0 {
					time.Sleep(50 * time.Microsecond)
				}
				start := time.Now()
				if _, err := producer.Enqueue(ctx, benchItem(i)); err != nil {
					b.Fatal(err)
				}
				l := <-got
				lat = append(lat, time.Since(start))
				if l == nil {
					b.Fatal("the waiter got nothing")
				}
				if err := waiter.Complete(ctx, l.OwnershipToken); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkLeaseAtDepthPartitioned: lease → complete → enqueue (into the
// leased item's partition, keeping the shape) with partition rules, at 1k
// pending in one partition and at 100k pending over 10k partitions (1M, the
// engine's benchmark, takes too long to fill on the test server), one call
// at a time, synchronous_commit off so that the statements' cost is not
// hidden under the fsync. lease-ns/op is the time of the Lease call alone
// (round trips and the load of a shared machine included); lease-exec-µs
// the server's execution time of the lease statement after the run (the
// median of 101 EXPLAIN ANALYZE, each rolled back), which the machine's
// noise touches least. Both must stay flat across the two shapes in every
// mode. disk-bytes/item is the items and partitions tables with their
// indexes after the fill, per pending item. Run it with
//
//	go test ./postgres -run '^$' -bench LeaseAtDepthPartitioned -benchtime 3s
func BenchmarkLeaseAtDepthPartitioned(b *testing.B) {
	modes := []struct {
		name string
		cfg  postgres.QueueConfig
	}{
		{"fairness=fifo/maxActive=0", postgres.QueueConfig{}}, // no partition rules: the plain lease, for reference
		{"fairness=fifo/maxActive=1", postgres.QueueConfig{Fairness: resourcelease.FairnessFIFO, MaxActivePerPartition: 1}},
		{"fairness=partitions/maxActive=0", postgres.QueueConfig{Fairness: resourcelease.FairnessPartitions}},
		{"fairness=partitions/maxActive=1", postgres.QueueConfig{Fairness: resourcelease.FairnessPartitions, MaxActivePerPartition: 1}},
	}
	shapes := []struct {
		name                string
		pending, partitions int
	}{{"1k-in-1-partition", 1_000, 1}, {"100k-over-10k-partitions", 100_000, 10_000}}
	for _, mode := range modes {
		for _, shape := range shapes {
			b.Run(mode.name+"/depth="+shape.name, func(b *testing.B) {
				cfg := mode.cfg
				cfg.Capacity, cfg.DedupeWindow = -1, -1
				q := openQueue(b, syncURL(pgtest.NewDatabase(b), false), nil, cfg)
				ctx := context.Background()
				batch := make([]resourcelease.Item, 0, 1000)
				for i := range shape.pending {
					it := benchItem(i)
					it.PartitionKey = fmt.Sprint("tenant-", i%shape.partitions)
					if batch = append(batch, it); len(batch) == cap(batch) || i == shape.pending-1 {
						res, err := q.EnqueueBatch(ctx, batch)
						if err != nil {
							b.Fatal(err)
						}
						for _, r := range res {
							if r.Err != nil {
								b.Fatal(r.Err)
							}
						}
						batch = batch[:0]
					}
				}
				// Fresh statistics, as autovacuum would have them by now.
				if _, err := q.Store().Pool().Exec(ctx, "ANALYZE"); err != nil {
					b.Fatal(err)
				}
				// What a pending item costs on disk: the items table and
				// its indexes, and the partitions table, per item.
				var size int64
				if err := q.Store().Pool().QueryRow(ctx, `SELECT pg_total_relation_size('leasemesh.items') +
					pg_total_relation_size('leasemesh.partitions')`).Scan(&size); err != nil {
					b.Fatal(err)
				}

				var leasing time.Duration
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					start := time.Now()
					l, err := q.Lease(ctx, "bench", 0)
					leasing += time.Since(start)
					if err != nil || l == nil {
						b.Fatal("lease: ", l, err)
					}
					if err := q.Complete(ctx, l.OwnershipToken); err != nil {
						b.Fatal(err)
					}
					it := benchItem(i)
					it.PartitionKey = l.Payload.PartitionKey
					if _, err := q.Enqueue(ctx, it); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(leasing.Nanoseconds())/float64(b.N), "lease-ns/op")
				b.StopTimer()
				b.ReportMetric(leaseExecMicros(b, q), "lease-exec-µs")
				b.ReportMetric(float64(size)/float64(shape.pending), "disk-bytes/item") // after ResetTimer, which drops metrics
			})
		}
	}
}

// leaseExecMicros is the median server execution time of q's lease
// statement for one slot, in microseconds, over 101 runs of EXPLAIN ANALYZE
// each rolled back.
func leaseExecMicros(b *testing.B, q *postgres.Queue) float64 {
	b.Helper()
	ctx := context.Background()
	var times []float64
	for range 101 {
		tx, err := q.Store().Pool().Begin(ctx)
		if err != nil {
			b.Fatal(err)
		}
		rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, TIMING OFF) "+q.LeaseSQL(), nil, 1,
			[]string{"6ba7b810-9dad-11d1-80b4-00c04fd430c8"}, []string{"bench"}, int64(30e6))
		if err != nil {
			b.Fatal(err)
		}
		for rows.Next() {
			var line string
			if err := rows.Scan(&line); err != nil {
				b.Fatal(err)
			}
			if v, ok := strings.CutPrefix(line, "Execution Time: "); ok {
				var ms float64
				if _, err := fmt.Sscanf(v, "%f ms", &ms); err != nil {
					b.Fatal(err)
				}
				times = append(times, ms*1000)
			}
		}
		rows.Close()
		if err := tx.Rollback(ctx); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(times)
	return times[len(times)/2]
}
