package postgres_test

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/leasemesh/leasemesh/internal/pgtest"
)

// cycleShape is one BenchmarkCycle configuration the bound is matched to.
type cycleShape struct {
	workers, inFlight int
}

// measuredPerCommit holds the changes per commit BenchmarkCycle
// (synchronous_commit on) measured in this run, by shape, so that
// BenchmarkCycleSQLBound sizes its transactions like the queue's.
var measuredPerCommit sync.Map // cycleShape → float64

// defaultPerCommit is what a run of BenchmarkCycle measured when the bound
// runs without it (-bench CycleSQLBound alone).
var defaultPerCommit = map[cycleShape]float64{
	{8, 1}: 7, {64, 1}: 44, {8, 2}: 3.5, {64, 2}: 24, batchShape: 102,
}

// batchShape is BenchmarkCycleBatch's (synchronous_commit on) key: its
// calls carry 16 items each, on the default one transaction in flight.
var batchShape = cycleShape{workers: 8, inFlight: -16}

// walMark is the server's WAL insert position, to measure the WAL a run
// writes.
func walMark(b *testing.B, pool *pgxpool.Pool) string {
	b.Helper()
	var lsn string
	if err := pool.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		b.Fatal(err)
	}
	return lsn
}

// walSince is the WAL written since mark, in bytes: every database's on the
// server, which during a benchmark is the benchmark's own.
func walSince(b *testing.B, pool *pgxpool.Pool, mark string) float64 {
	b.Helper()
	var n float64
	if err := pool.QueryRow(context.Background(),
		`SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)::float8`, mark).Scan(&n); err != nil {
		b.Fatal(err)
	}
	return n
}

// boundCycleSQL is all one transaction of k cycles needs, as one statement:
// complete (delete) the k items the connection leased in its previous
// transaction, lease k ready items with SKIP LOCKED, then take the counter
// row (last: its new values need the counts of the two above, so no
// transaction holds it while it locks items) for k new item ids and a
// gap-free range of events, insert the k new items and one event per
// change — the completions' and leases' with their ownership token, the
// enqueues' with the item. It returns the ids it leased. The rows to lease
// are a materialized CTE: as an IN (subquery) the planner may run the
// subquery again for each row it joins, and each run of LIMIT … SKIP
// LOCKED finds other rows (it leased the whole backlog at times).
const boundCycleSQL = `WITH d AS (
	DELETE FROM b_items WHERE id = ANY($1::bigint[]) AND state = 'leased'
	RETURNING id, attempt, lease_id
), r AS MATERIALIZED (
	SELECT id FROM b_items WHERE state = 'ready' ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
), l AS (
	UPDATE b_items i SET state = 'leased', attempt = i.attempt + 1, lease_id = gen_random_uuid(),
		lease_expires_at = now() + interval '30 seconds'
	FROM r WHERE i.id = r.id
	RETURNING i.id, i.attempt, i.lease_id
), m AS (
	SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM l) + $2::bigint AS n
), c AS (
	UPDATE b_counter SET next_item = next_item + $2::bigint, next_event = next_event + m.n
	FROM m WHERE b_counter.id = 1
	RETURNING next_item - $2::bigint AS fi, next_event - m.n AS fe
), ni AS (
	INSERT INTO b_items (id, state, body) SELECT c.fi + g, 'ready', $3::bytea FROM c, generate_series(0, $2::bigint - 1) g
), e AS (
	SELECT 1 AS o, id, 'completed' AS t, '{"sequenceId":' || id || ',"attempt":' || attempt || ',"leaseId":"' || lease_id || '"}' AS own, NULL::text AS payload FROM d
	UNION ALL
	SELECT 2, id, 'leased', '{"sequenceId":' || id || ',"attempt":' || attempt || ',"leaseId":"' || lease_id || '"}', NULL FROM l
	UNION ALL
	SELECT 3, c.fi + g, 'enqueued', NULL, $4::text FROM c, generate_series(0, $2::bigint - 1) g
), ev AS (
	INSERT INTO b_events (sequence_number, event_type, ts, item_sequence_id, ownership, payload)
	SELECT c.fe + row_number() OVER (ORDER BY e.o, e.id) - 1, e.t, now(), e.id, e.own, e.payload FROM c, e
)
SELECT coalesce(array_agg(id), '{}') FROM l`

// boundPayload is the item the bound's events carry, as the queue's carry
// benchItem's: without its body, which they carry in a column of its own.
const boundPayload = `{"resourceType":"bench.order","resourceId":"order-0","partitionKey":"tenant-1","payloadEncoding":"application/json"}`

// boundCycleFullSQL is boundCycleSQL writing the events the queue's log
// holds: every event of an item carries the item and its body (copied from
// its row, where the enqueue put them), the peer and the metadata the queue's events
// carry (attempt, sequence id, the counts after the change), built as the
// queue's final statement builds it.
const boundCycleFullSQL = `WITH d AS (
	DELETE FROM b_items WHERE id = ANY($1::bigint[]) AND state = 'leased'
	RETURNING id, attempt, lease_id, payload, body
), r AS MATERIALIZED (
	SELECT id FROM b_items WHERE state = 'ready' ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED
), l AS (
	UPDATE b_items i SET state = 'leased', attempt = i.attempt + 1, lease_id = gen_random_uuid(),
		lease_expires_at = now() + interval '30 seconds'
	FROM r WHERE i.id = r.id
	RETURNING i.id, i.attempt, i.lease_id, i.payload, i.body
), m AS (
	SELECT (SELECT count(*) FROM d) + (SELECT count(*) FROM l) + $2::bigint AS n
), c AS (
	UPDATE b_counter SET next_item = next_item + $2::bigint, next_event = next_event + m.n
	FROM m WHERE b_counter.id = 1
	RETURNING next_item - $2::bigint AS fi, next_event - m.n AS fe
), ni AS (
	INSERT INTO b_items (id, state, body, payload) SELECT c.fi + g, 'ready', $3::bytea, $4::text FROM c, generate_series(0, $2::bigint - 1) g
), e AS (
	SELECT 1 AS o, id, 'completed' AS t, attempt, '{"sequenceId":' || id || ',"attempt":' || attempt || ',"leaseId":"' || lease_id || '"}' AS own, payload, body FROM d
	UNION ALL
	SELECT 2, id, 'leased', attempt, '{"sequenceId":' || id || ',"attempt":' || attempt || ',"leaseId":"' || lease_id || '"}', payload, body FROM l
	UNION ALL
	SELECT 3, c.fi + g, 'enqueued', 1, NULL, $4::text, $3::bytea FROM c, generate_series(0, $2::bigint - 1) g
), ev AS (
	INSERT INTO b_events (sequence_number, event_type, ts, item_sequence_id, ownership, payload, body, peer_id, metadata)
	SELECT c.fe + row_number() OVER (ORDER BY e.o, e.id) - 1, e.t, now(), e.id, e.own, e.payload, e.body, 'worker-1',
		'{"attempt":"' || e.attempt || '","sequenceId":"' || e.id || '","queue.pending":"1000","queue.active":"64"}'
	FROM c, e
)
SELECT coalesce(array_agg(id), '{}') FROM l`

// BenchmarkCycleSQLBound is what this machine can do for the queue's work:
// transactions holding only the SQL a batch of k cycles needs (see
// boundCycleSQL), each one round trip (BEGIN, the statement and COMMIT
// pipelined), on as many connections as the queue keeps transactions in
// flight, synchronous_commit on. k is the changes per commit the queue
// achieved at that shape in this run's BenchmarkCycle, ÷ 3 (a cycle is three
// changes); run both in one command to compare,
//
//	go test ./postgres -run '^$' -bench 'Cycle/sync=on|CycleSQLBound' -benchtime 3s
//
// and read the queue's cycles/s against this one's. Each shape runs twice:
// with the lean log above, and with log=full, the events the queue writes
// (boundCycleFullSQL): the WAL per commit of log=full is the queue's.
func BenchmarkCycleSQLBound(b *testing.B) {
	type shape struct {
		name  string
		key   cycleShape
		conns int
	}
	var shapes []shape
	for _, workers := range []int{8, 64} {
		for _, inFlight := range []int{1, 2} {
			shapes = append(shapes, shape{fmt.Sprintf("workers=%d/inflight=%d", workers, inFlight), cycleShape{workers, inFlight}, inFlight})
		}
	}
	shapes = append(shapes, shape{"workers=8/batch=16", batchShape, 1})
	for _, sh := range shapes {
		perCommit := defaultPerCommit[sh.key]
		if v, ok := measuredPerCommit.Load(sh.key); ok {
			perCommit = v.(float64)
		}
		k := max(1, perCommit/3)
		b.Run(fmt.Sprintf("%s/k=%.1f", sh.name, k), func(b *testing.B) {
			runBound(b, sh.conns, k, false, false)
		})
		b.Run(fmt.Sprintf("%s/k=%.1f/log=full", sh.name, k), func(b *testing.B) {
			runBound(b, sh.conns, k, false, true)
		})
		if sh.conns == 1 && sh.key != batchShape {
			// The queue's shape: the leases' rows locked in a first round
			// trip, the rest in a second.
			b.Run(fmt.Sprintf("%s/k=%.1f/roundtrips=2", sh.name, k), func(b *testing.B) {
				runBound(b, sh.conns, k, true, false)
			})
		}
	}
}

// boundLockSQL locks the next transaction's leases ahead of it, as the
// queue's first round trip does (the statement then leases the same rows:
// SKIP LOCKED does not skip a transaction's own locks).
const boundLockSQL = `SELECT id FROM b_items WHERE state = 'ready' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`

// runBound runs bound transactions of k cycles on average (a fractional k
// alternates between the integers either side) on conns connections; split
// takes two round trips per transaction instead of one (boundLockSQL
// first); full writes the queue's event content (boundCycleFullSQL).
func runBound(b *testing.B, conns int, k float64, split, full bool) {
	cycleSQL := boundCycleSQL
	if full {
		cycleSQL = boundCycleFullSQL
	}
	maxK := int(math.Ceil(k))
	pool := boundSchema(b, pgtest.NewDatabase(b), conns, maxK)
	body := benchItem(0).Body
	payload := boundPayload
	var cycles, txns atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	mark := walMark(b, pool)
	b.ResetTimer()
	start := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			conn, err := pool.Acquire(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Release()
			leased := []int64{}
			acc, done := 0.0, 0
			for cycles.Load() < int64(b.N) {
				acc += k
				n := int(acc) - done
				if n == 0 {
					continue
				}
				if err := boundTx(ctx, conn.Conn(), cycleSQL, split, &leased, n, body, payload); err != nil {
					errs <- err
					return
				}
				done += n
				cycles.Add(int64(n))
				txns.Add(1)
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
	n := txns.Load()
	b.ReportMetric(float64(cycles.Load())/elapsed.Seconds(), "cycles/s")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(3*float64(cycles.Load())/float64(max(n, 1)), "changes/commit")
	if n > 0 {
		b.ReportMetric(walSince(b, pool, mark)/float64(n), "wal-bytes/commit")
	}
}

// boundTx runs one bound transaction of n cycles on c: it completes the
// items in leased and leaves there the ones it leased.
func boundTx(ctx context.Context, c *pgx.Conn, cycleSQL string, split bool, leased *[]int64, n int, body []byte, payload string) error {
	var p pgx.Batch
	p.Queue("BEGIN")
	if split {
		p.Queue(boundLockSQL, n)
		if err := c.SendBatch(ctx, &p).Close(); err != nil {
			return err
		}
		p = pgx.Batch{}
	}
	p.Queue(cycleSQL, *leased, n, body, payload)
	p.Queue("COMMIT")
	br := c.SendBatch(ctx, &p)
	var err error
	if !split {
		_, err = br.Exec()
	}
	if err == nil {
		err = br.QueryRow().Scan(leased)
	}
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && len(*leased) != n {
		err = fmt.Errorf("leased %d items, want %d", len(*leased), n)
	}
	return err
}

// boundSchema creates the bound's tables (the columns the queue's items and
// events need for these changes, the same partial ready index and a counter
// row with room for HOT updates) with a backlog of ready items, so that
// every lease finds k, and returns a pool of conns connections.
func boundSchema(b *testing.B, url string, conns, k int) *pgxpool.Pool {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = int32(conns)
	ctx := context.Background()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	for _, sql := range []string{
		`CREATE TABLE b_counter (id int PRIMARY KEY, next_item bigint NOT NULL, next_event bigint NOT NULL) WITH (fillfactor = 50)`,
		`CREATE TABLE b_items (id bigint PRIMARY KEY, state text NOT NULL, body bytea, attempt int NOT NULL DEFAULT 0,
			lease_id uuid, lease_expires_at timestamptz, payload text)`,
		`CREATE INDEX b_items_ready ON b_items (id) WHERE state = 'ready'`,
		`CREATE TABLE b_events (sequence_number bigint PRIMARY KEY, event_type text NOT NULL, ts timestamptz NOT NULL,
			item_sequence_id bigint, ownership text, payload text, body bytea, peer_id text, metadata text)`,
		fmt.Sprintf(`INSERT INTO b_items (id, state, body, payload) SELECT g, 'ready', '\x00', %s FROM generate_series(1, %d) g`, "'"+boundPayload+"'", 4*conns*k),
		fmt.Sprintf(`INSERT INTO b_counter VALUES (1, %d, 1)`, 4*conns*k+1),
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			b.Fatal(err)
		}
	}
	return pool
}
