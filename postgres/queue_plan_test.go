package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
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

// TestLeasePlanIsFlat checks, with EXPLAIN ANALYZE on a queue of 20k
// pending items over 2k partitions (and as many delayed ones), that a lease
// under partition rules reads a bounded number of rows: a Limit over an
// index scan of the leasable partitions (partitions_fifo or
// partitions_fair, LIMIT the slots), then per partition a Limit over
// items_ready_partition, never a sequential scan and never the delayed
// rows. Both the custom and the generic plan are checked (the writer's
// prepared statements switch to the generic one after a few runs).
func TestLeasePlanIsFlat(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   postgres.QueueConfig
		index string
	}{
		{"fifo strict", postgres.QueueConfig{MaxActivePerPartition: 1}, "partitions_fifo"},
		{"partitions fairness", postgres.QueueConfig{Fairness: resourcelease.FairnessPartitions}, "partitions_fair"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := tc.cfg
			cfg.Capacity, cfg.DelayedCapacity, cfg.DedupeWindow = -1, -1, -1
			q := openQueue(t, syncURL(pgtest.NewDatabase(t), false), nil, cfg)
			ctx := context.Background()
			now, err := q.Store().Now(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for n := range 40 {
				batch := make([]resourcelease.Item, 1000)
				for i := range batch {
					batch[i] = benchItem(n*1000 + i)
					batch[i].PartitionKey = fmt.Sprint("tenant-", i%2000)
					if n%2 == 1 {
						batch[i].NotBefore = now.Add(24 * time.Hour)
					}
				}
				if _, err := q.EnqueueBatch(ctx, batch); err != nil {
					t.Fatal(err)
				}
			}
			pool := q.Store().Pool()
			if _, err := pool.Exec(ctx, "ANALYZE"); err != nil {
				t.Fatal(err)
			}
			tx := beginTx(t, pool)
			for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
				if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = "+mode); err != nil {
					t.Fatal(err)
				}
				text := explain(t, tx, q.LeaseSQL(), nil, 1, []string{"6ba7b810-9dad-11d1-80b4-00c04fd430c8"}, []string{"w"}, int64(30e6))
				for _, want := range []string{"Index Scan using " + tc.index, "Index Scan using items_ready_partition", "rows=1 loops=1"} {
					if !strings.Contains(text, want) {
						t.Errorf("%s: the plan has no %q:\n%s", mode, want, text)
					}
				}
				// queue_state is one row (the pause flag, read once per
				// statement): a sequential scan reads its one page.
				for _, bad := range []string{"Seq Scan", "items_scheduled"} {
					if strings.Contains(strings.ReplaceAll(text, "Seq Scan on queue_state", ""), bad) {
						t.Errorf("%s: the plan has %q:\n%s", mode, bad, text)
					}
				}
				// The recompute of a partition's row after a commit: index
				// probes (its oldest ready item; its oldest scheduled one and
				// its leases under a limit), never a scan. The writer runs it
				// generic, without sequential scans or JIT; a caller's
				// transaction (QueueTx) with its own settings, mostly custom.
				writer := mode == "force_generic_plan"
				if writer {
					if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
						t.Fatal(err)
					}
				}
				text = explain(t, tx, q.PartitionUpdateSQL(), nil, []string{"tenant-7"}, []int64{0}, true)
				if writer {
					if _, err := tx.Exec(ctx, "SET LOCAL enable_seqscan TO DEFAULT"); err != nil {
						t.Fatal(err)
					}
					// A node left no index would be priced as disabled, and
					// the plan compiled at every run.
					if strings.Contains(text, "JIT:") {
						t.Errorf("%s: the partition update's plan is JIT-compiled:\n%s", mode, text)
					}
				}
				want := []string{"items_ready_partition", "partitions_pkey"}
				if cfg.MaxActivePerPartition == 1 {
					want = append(want, "items_scheduled_partition", "items_leased_partition")
				}
				for _, w := range want {
					if !strings.Contains(text, w) {
						t.Errorf("%s: the partition update's plan has no %q:\n%s", mode, w, text)
					}
				}
				// partition_dirty holds the marks of rows skipped by
				// transactions in flight, removed as soon as recomputed: a
				// few rows whatever the queue's size, which a sequential
				// scan reads at once (in a custom plan; the writer's finds
				// them by key).
				if writer && strings.Contains(text, "Seq Scan") ||
					strings.Contains(strings.ReplaceAll(text, "Seq Scan on partition_dirty", ""), "Seq Scan") {
					t.Errorf("%s: the partition update's plan has a sequential scan:\n%s", mode, text)
				}
			}
		})
	}
}

// explain runs EXPLAIN ANALYZE of sql in tx and returns the plan.
func explain(t *testing.T, tx pgx.Tx, sql string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	// Through a prepared statement, so that plan_cache_mode decides the
	// plan as it does for the queue's own: the parameters of an EXPLAIN
	// sent with values are planned as constants (a custom plan) whatever
	// the setting.
	name := fmt.Sprint("explained_", explained.Add(1))
	if _, err := tx.Exec(ctx, "PREPARE "+name+" AS "+sql); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			return // the transaction may be aborted: DEALLOCATE would fail too
		}
		if _, err := tx.Exec(ctx, "DEALLOCATE "+name); err != nil {
			t.Error(err)
		}
	}()
	params := make([]string, len(args))
	for i := range args {
		params[i] = fmt.Sprint("$", i+1)
	}
	// The values as literals (pgx's simple protocol): a utility statement's
	// parameters are not typed when it is prepared.
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE "+name+"("+strings.Join(params, ", ")+")",
		append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(plan, "\n")
}

// explained numbers explain's prepared statements.
var explained atomic.Int64

// beginTx begins a transaction on pool that is rolled back when the test
// ends, so that a test failing inside it does not leave its row locks to
// the queue's Close (which would wait for them).
func beginTx(t *testing.T, pool *pgxpool.Pool) pgx.Tx {
	t.Helper()
	tx, err := pool.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// TestKeyWritesPlannedPerCall checks that the writes by key in a batch's
// last round trip (heartbeat, end of lease, complete, a dead-letter purge,
// a refused enqueue's request id given back) are planned at each call, for
// the table as it is then, while the final statement keeps its generic
// plan. A generic plan made while a new queue's table is small scans the
// table whole and stays cached after the table has grown, until the next
// ANALYZE: on a busy new queue that scan cost more than the rest of the
// transaction.
func TestKeyWritesPlannedPerCall(t *testing.T) {
	t.Parallel()
	// Full at two items, so that an enqueue with a request id is refused
	// (its claim given back); one dead letter kept, so that each new one
	// purges the last. No sweeps: AcquireAllIdle below must find every
	// connection idle.
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{Capacity: 2, FullMode: resourcelease.FullReject, MaxDeadLetters: 1, SweepInterval: time.Hour})
	ctx := context.Background()
	for i := range 12 { // past the five custom plans after which a cached plan may turn generic
		for n := 0; ; n++ {
			if _, err := q.Enqueue(ctx, benchItem(n)); err != nil {
				if !errors.Is(err, resourcelease.ErrQueueFull) {
					t.Fatal(err)
				}
				break
			}
		}
		it := benchItem(i)
		it.RequestID = fmt.Sprint("refused-", i)
		if _, err := q.Enqueue(ctx, it); !errors.Is(err, resourcelease.ErrQueueFull) {
			t.Fatalf("enqueue into a full queue: %v, want queue full", err)
		}
		l, err := leaseOne(ctx, q, "w")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Heartbeat(ctx, l.OwnershipToken); err != nil {
			t.Fatal(err)
		}
		switch i % 3 {
		case 0:
			err = q.Complete(ctx, l.OwnershipToken)
		case 1:
			err = q.Release(ctx, l.OwnershipToken, resourcelease.ReleaseOptions{})
		default:
			err = q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "poison", DeadLetter: true})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	type plans struct{ generic, custom int64 }
	counted := map[string]*plans{}
	conns := q.Store().Pool().AcquireAllIdle(ctx)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for _, c := range conns {
		rows, err := c.Query(ctx, `SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var sql string
			var p plans
			if err := rows.Scan(&sql, &p.generic, &p.custom); err != nil {
				t.Fatal(err)
			}
			if counted[sql] == nil {
				counted[sql] = &plans{}
			}
			counted[sql].generic += p.generic
			counted[sql].custom += p.custom
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	for _, sql := range q.KeyWriteSQL() {
		p := counted[sql]
		if p == nil {
			t.Errorf("%.40q… never ran", sql)
			continue
		}
		if p.generic != 0 || p.custom == 0 {
			t.Errorf("%.40q…: %d generic plans and %d custom ones, want custom plans only", sql, p.generic, p.custom)
		}
	}
	if p := counted[q.FinalSQL()]; p == nil || p.custom != 0 || p.generic == 0 {
		t.Errorf("final statement: plans %+v, want generic plans only", p)
	}
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.DeadLetterCount != 1 {
		t.Errorf("%d dead letters, want 1 (each new one purges the last)", st.DeadLetterCount)
	}
}

// TestLockItemsPlanProbesByKey: the statement that locks the rows a
// batch's heartbeats and settles name looks each up by its key, in the
// custom and the generic plan, with many leases outstanding, before and
// after ANALYZE; so does the one that locks chosen dead letters, with many
// of them. (A plan over the index of leased rows, which also selects by
// state, read every lease in the queue on every commit.)
func TestLockItemsPlanProbesByKey(t *testing.T) {
	t.Parallel()
	q := openQueue(t, syncURL(pgtest.NewDatabase(t), false), nil,
		postgres.QueueConfig{Capacity: -1, DedupeWindow: -1, LeaseDuration: time.Hour, SweepInterval: time.Hour})
	ctx := context.Background()
	pool := q.Store().Pool()
	// The writer runs the lock without sequential scans and keeps the plan
	// it gets: made on a new queue's table of a page or two, it must be the
	// key's.
	small := make([]resourcelease.Item, 60)
	for i := range small {
		small[i] = benchItem(i)
	}
	if _, err := q.EnqueueBatch(ctx, small); err != nil {
		t.Fatal(err)
	}
	ls, err := q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{MaxItems: 40})
	if err != nil || len(ls) != 40 {
		t.Fatalf("LeaseBatch: %d leases, %v", len(ls), err)
	}
	var smallIDs []int64
	for _, l := range ls {
		smallIDs = append(smallIDs, l.SequenceID)
	}
	tx := beginTx(t, pool)
	for _, set := range []string{"SET LOCAL enable_seqscan = off", "SET LOCAL plan_cache_mode = force_generic_plan"} {
		if _, err := tx.Exec(ctx, set); err != nil {
			t.Fatal(err)
		}
	}
	if text := explain(t, tx, q.LockItemsSQL(), nil, smallIDs); !strings.Contains(text, "items_pkey") || strings.Contains(text, "Seq Scan") {
		t.Errorf("60 rows, generic plan without sequential scans: the plan does not probe items_pkey:\n%s", text)
	}
	tx.Rollback(ctx) //nolint:errcheck // nothing to keep
	var ids []int64
	for range 20 {
		batch := make([]resourcelease.Item, 1000)
		for i := range batch {
			batch[i] = benchItem(i)
		}
		if _, err := q.EnqueueBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		ls, err := q.LeaseBatch(ctx, "w", resourcelease.LeaseBatchOptions{MaxItems: 1000})
		if err != nil || len(ls) != 1000 {
			t.Fatalf("LeaseBatch: %d leases, %v", len(ls), err)
		}
		ids = append(ids, ls[0].SequenceID, ls[999].SequenceID)
	}
	// Half the leases made dead letters by hand (the queue's own way is one
	// failed lease at a time).
	if _, err := pool.Exec(ctx, `UPDATE leasemesh.items SET state = 'dead', dead_lettered_at = now(), lease_id = NULL,
		lease_expires_at = NULL, leased_at = NULL, owner_peer_id = NULL WHERE sequence_id % 2 = 1`); err != nil {
		t.Fatal(err)
	}
	for _, analyze := range []bool{false, true} {
		if analyze {
			if _, err := pool.Exec(ctx, "ANALYZE"); err != nil {
				t.Fatal(err)
			}
		}
		tx := beginTx(t, pool)
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = "+mode); err != nil {
				t.Fatal(err)
			}
			for _, stmt := range []struct {
				name, sql string
				args      []any
			}{{"lock leased", q.LockItemsSQL(), []any{nil, ids}}, {"lock dead", q.DeadLockSQL(), []any{ids}}} {
				text := explain(t, tx, stmt.sql, stmt.args...)
				if !strings.Contains(text, "items_pkey") || strings.Contains(text, "items_leased_expiry") ||
					strings.Contains(text, "items_dead") || strings.Contains(text, "Seq Scan") {
					t.Errorf("%s, analyzed %v, %s: the plan does not only probe items_pkey:\n%s", stmt.name, analyze, mode, text)
				}
			}
		}
		tx.Rollback(ctx) //nolint:errcheck // nothing to keep
	}
}

// TestWriterGivesBackSeqScans: the writer turns sequential scans off around
// its lock of settled rows and its final statements, and runs the latter
// with generic plans; what a CommitHook runs in its transaction, after
// them, has the settings of the role, database or URL again.
func TestWriterGivesBackSeqScans(t *testing.T) {
	t.Parallel()
	type reading struct{ name, setting, session string }
	var mu sync.Mutex
	var seen [][]reading
	hook := func(ctx context.Context, tx pgx.Tx, _ []resourcelease.Event) error {
		rows, err := tx.Query(ctx, `SELECT name, setting, reset_val FROM pg_settings WHERE name IN ('enable_seqscan', 'plan_cache_mode') ORDER BY name`)
		if err != nil {
			return err
		}
		var rs []reading
		for rows.Next() {
			var r reading
			if err := rows.Scan(&r.name, &r.setting, &r.session); err != nil {
				rows.Close()
				return err
			}
			rs = append(rs, r)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		mu.Lock()
		seen = append(seen, rs)
		mu.Unlock()
		return nil
	}
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{CommitHook: hook})
	ctx := context.Background()
	if _, err := q.Enqueue(ctx, benchItem(1)); err != nil {
		t.Fatal(err)
	}
	l, err := leaseOne(ctx, q, "w")
	if err != nil {
		t.Fatal(err)
	}
	// A heartbeat and a complete each lock their row first (the enqueue
	// and the lease do not: they show the hook's reading).
	if _, err := q.Heartbeat(ctx, l.OwnershipToken); err != nil {
		t.Fatal(err)
	}
	if err := q.Complete(ctx, l.OwnershipToken); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 4 {
		t.Fatalf("the hook ran in %d transactions, want 4 (enqueue, lease, heartbeat, complete)", len(seen))
	}
	for i, rs := range seen {
		if len(rs) != 2 {
			t.Fatalf("transaction %d: read %v, want enable_seqscan and plan_cache_mode", i+1, rs)
		}
		for _, r := range rs {
			if r.setting != r.session {
				t.Errorf("transaction %d: %s = %s after the final statement, want %s (the session's own setting)", i+1, r.name, r.setting, r.session)
			}
		}
	}
}

// TestQueueTxPlansKeyWritesPerCall: a QueueTx's statements by key (see
// TxKeySQL) run in the caller's transaction as unnamed statements, planned
// at each call, where the caller's connection would prepare them (pgx's
// default mode: a generic plan made there while the queue was small would
// keep scanning its tables whole once they have grown), with the binary
// formats of that mode, so that results do not depend on the session's
// DateStyle or bytea_output. A connection in another mode (the simple
// protocol, unnamed statements: as behind a pooler) keeps its mode. The
// claim of a request id (INSERT … ON CONFLICT, by the primary key in any
// plan) runs in the connection's mode: prepared in the default one.
func TestQueueTxPlansKeyWritesPerCall(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		params   string
		override bool // the QueueTx picks the mode of its statements by key
		parted   bool // with partition rules: the partition recompute too
	}{
		{"default_query_exec_mode=cache_statement", true, false},
		{"default_query_exec_mode=cache_statement", true, true},
		{"default_query_exec_mode=cache_statement&description_cache_capacity=0", true, false},
		{"default_query_exec_mode=cache_describe", false, false},
		{"default_query_exec_mode=describe_exec", false, false},
		{"default_query_exec_mode=exec", false, false},
		{"default_query_exec_mode=simple_protocol", false, true},
	} {
		name := tc.params
		if tc.parted {
			name += "/partitions"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			queueTxPlansPerCall(t, tc.params, tc.override, tc.parted)
		})
	}
}

// modeTracer counts, per statement, the runs that named a QueryExecMode
// (as their first argument) and those that did not.
type modeTracer struct {
	mu       sync.Mutex
	withMode map[string]int
	without  map[string]int
}

func (m *modeTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(d.Args) > 0 {
		if _, ok := d.Args[0].(pgx.QueryExecMode); ok {
			m.withMode[d.SQL]++
			return ctx
		}
	}
	m.without[d.SQL]++
	return ctx
}

func (m *modeTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func queueTxPlansPerCall(t *testing.T, params string, override, parted bool) {
	url := pgtest.NewDatabase(t)
	qcfg := postgres.QueueConfig{Capacity: 2, FullMode: resourcelease.FullReject, SweepInterval: time.Hour}
	if parted {
		qcfg.Fairness = resourcelease.FairnessPartitions
	}
	q := openQueue(t, url, nil, qcfg)
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(url + "&" + params)
	if err != nil {
		t.Fatal(err)
	}
	tracer := &modeTracer{withMode: map[string]int{}, without: map[string]int{}}
	cfg.Tracer = tracer
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if cfg.DefaultQueryExecMode != pgx.QueryExecModeSimpleProtocol && cfg.DefaultQueryExecMode != pgx.QueryExecModeExec {
		// Results in binary, as the default mode reads them: text ones
		// follow these settings, which pgx cannot parse.
		if _, err := conn.Exec(ctx, `SET DateStyle = 'SQL, DMY'; SET bytea_output = 'escape'`); err != nil {
			t.Fatal(err)
		}
	}
	// A body that text results in bytea_output=escape would not give back.
	body := []byte{0, 1, '\\', 'x', 0xfe, 0xff}
	item := func(i int) resourcelease.Item {
		it := benchItem(i)
		it.Body = body
		return it
	}
	inTx := func(f func(qt *postgres.QueueTx) error) error {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx) //nolint:errcheck // after Commit, a no-op
		qt, err := q.Tx(ctx, tx)
		if err != nil {
			t.Fatal(err)
		}
		if err := f(qt); err != nil {
			return err
		}
		if _, err := qt.Finish(ctx); err != nil {
			t.Fatal(err)
		}
		// The caller's planner settings are the caller's still.
		var seqscan, plans string
		if err := tx.QueryRow(ctx, `SELECT current_setting('enable_seqscan'), current_setting('plan_cache_mode')`).Scan(&seqscan, &plans); err != nil {
			t.Fatal(err)
		}
		if seqscan != "on" || plans != "auto" {
			t.Fatalf("after the QueueTx: enable_seqscan %s, plan_cache_mode %s in the caller's transaction; want on, auto", seqscan, plans)
		}
		return tx.Commit(ctx)
	}
	for i := range 8 { // past the five custom plans after which a prepared statement may turn generic
		if _, err := q.Enqueue(ctx, item(i)); err != nil {
			t.Fatal(err)
		}
		l, err := leaseOne(ctx, q, "w")
		if err != nil {
			t.Fatal(err)
		}
		req := fmt.Sprint("follow-up-", i)
		// Complete the job and enqueue its follow-up (a request id claimed).
		if err := inTx(func(qt *postgres.QueueTx) error {
			it := item(i)
			it.RequestID = req
			if err := qt.Enqueue(ctx, it); err != nil {
				return err
			}
			return qt.Complete(ctx, l.OwnershipToken)
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := q.Enqueue(ctx, item(i)); err != nil { // the queue is full now
			t.Fatal(err)
		}
		// A duplicate (the request id read), then a refused enqueue (a claim
		// given back).
		if err := inTx(func(qt *postgres.QueueTx) error {
			dup := item(i)
			dup.RequestID = req
			if err := qt.Enqueue(ctx, dup); err != nil {
				return fmt.Errorf("duplicate: %w", err)
			}
			refused := item(i)
			refused.RequestID = fmt.Sprint("refused-", i)
			if err := qt.Enqueue(ctx, refused); !errors.Is(err, resourcelease.ErrQueueFull) {
				return fmt.Errorf("enqueue into a full queue: %v, want queue full", err)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			l, err := leaseOne(ctx, q, "w")
			if err != nil {
				t.Fatal(err)
			}
			if l.Payload.ResourceID != item(i).ResourceID {
				t.Fatalf("leased %q, want %q", l.Payload.ResourceID, item(i).ResourceID)
			}
			if err := q.Complete(ctx, l.OwnershipToken); err != nil {
				t.Fatal(err)
			}
		}
	}
	st, err := q.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.PendingCount != 0 || st.ActiveLeaseCount != 0 {
		t.Fatalf("stats %+v, want an empty queue", st)
	}
	followUps, completed := 0, 0
	for _, e := range readAll(t, q) {
		if e.Payload == nil {
			continue
		}
		if e.EventType == resourcelease.EventEnqueue && strings.HasPrefix(e.Payload.RequestID, "follow-up-") {
			followUps++
		}
		if e.EventType == resourcelease.EventCompleted {
			completed++
			if !bytes.Equal(e.Payload.Body, body) {
				t.Errorf("completed event %d carries body %q, want %q", e.SequenceNumber, e.Payload.Body, body)
			}
		}
	}
	if followUps != 8 || completed != 24 {
		t.Fatalf("%d enqueues of a follow-up and %d completions in the log, want 8 and 24", followUps, completed)
	}
	cached := map[string]bool{}
	rows, err := conn.Query(ctx, `SELECT statement FROM pg_prepared_statements`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var sql string
		if err := rows.Scan(&sql); err != nil {
			t.Fatal(err)
		}
		cached[sql] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	tracer.mu.Lock()
	defer tracer.mu.Unlock()
	for _, sql := range q.TxKeySQL() {
		if cached[sql] {
			t.Errorf("%.50q… is a prepared statement of the caller's connection, want it planned per call", sql)
		}
		with, without := tracer.withMode[sql], tracer.without[sql]
		switch {
		case override && (with == 0 || without > 0):
			t.Errorf("%.50q…: %d runs in a mode of the QueueTx's, %d in the connection's; want them all in the QueueTx's", sql, with, without)
		case !override && (without == 0 || with > 0):
			t.Errorf("%.50q…: %d runs in the connection's mode, %d in another; want them all in the connection's", sql, without, with)
		}
	}
	prepares := cfg.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement
	if claim := q.TxClaimSQL(); cached[claim] != prepares || tracer.without[claim] == 0 {
		t.Errorf("the claim of a request id: ran %d times in the connection's mode, prepared %v; want it run, and prepared %v",
			tracer.without[claim], cached[claim], prepares)
	}
}

// TestWriterProbesByKeyOnGrownTables: the writer's plans of the statements
// that find dedupe and item rows by key (the final statement's updates of
// the request ids it claimed and of the items it dead-lettered; the read of
// request ids held already, planned per call in practice, is counted too)
// are the primary keys' even when they
// were made while the tables were small and the tables have grown since,
// unanalyzed: no transaction of the writer scans either table whole. A
// generic plan made on a small table joins over a sequential scan of it and
// stays cached; the final statement runs holding the counter row, so such a
// scan would hold every commit of the mesh. Counted by seqScanCounter.
func TestWriterProbesByKeyOnGrownTables(t *testing.T) {
	t.Parallel()
	scans := &seqScanCounter{tables: []string{"dedupe", "items"}}
	url := pgtest.NewDatabase(t)
	q := openQueue(t, url, nil, postgres.QueueConfig{Capacity: -1, DelayedCapacity: -1, SweepInterval: time.Hour, CommitHook: scans.hook})
	ctx := context.Background()
	pool := q.Store().Pool()
	// No ANALYZE behind the test's back: it would replan the cached
	// statements for the grown tables.
	for _, sql := range []string{`ALTER TABLE leasemesh.dedupe SET (autovacuum_enabled = off)`, `ALTER TABLE leasemesh.items SET (autovacuum_enabled = off)`} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	round := func(i int) {
		t.Helper()
		it := benchItem(i)
		it.RequestID = fmt.Sprint("req-", i)
		if _, err := q.Enqueue(ctx, it); err != nil {
			t.Fatal(err)
		}
		if res, err := q.Enqueue(ctx, it); err != nil || !res.Duplicate {
			t.Fatalf("enqueue again: %+v, %v; want a duplicate", res, err)
		}
		l, err := leaseOne(ctx, q, "w")
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Fail(ctx, l.OwnershipToken, resourcelease.FailOptions{Reason: "poison", DeadLetter: true}); err != nil {
			t.Fatal(err)
		}
	}
	// Every connection of the pool makes its plans on the small tables.
	for i := range 3 * int(pool.Config().MaxConns) {
		round(i)
	}
	// The tables grow: delayed items (out of the leases' way) and request
	// ids of other enqueues, 20,000 each.
	later := time.Now().Add(24 * time.Hour)
	for n := range 20 {
		batch := make([]resourcelease.Item, 1000)
		for i := range batch {
			batch[i] = benchItem(10_000 + n*1000 + i)
			batch[i].NotBefore = later
		}
		if _, err := q.EnqueueBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO leasemesh.dedupe (request_id, sequence_id, created_at, expires_at)
		SELECT 'other-' || g, g, now(), now() + interval '1 hour' FROM generate_series(1, 20000) g`); err != nil {
		t.Fatal(err)
	}
	// A baseline reading of every backend (an enqueue, no request id).
	for i := range 2 * int(pool.Config().MaxConns) {
		if _, err := q.Enqueue(ctx, benchItem(i)); err != nil {
			t.Fatal(err)
		}
		leaseAndComplete(t, q)
	}
	scans.start()
	for i := 1000; i < 1000+2*int(pool.Config().MaxConns); i++ {
		round(i)
	}
	scans.checkNone(t)
}

// seqScanCounter counts the sequential scans of tables (of the leasemesh
// schema) in the writer's transactions, read by its hook, a CommitHook,
// once start has been called. pg_stat_xact_user_tables counts a backend's
// scans not yet flushed to the server's statistics (a flush, at most once
// a second and never inside a transaction, starts it from zero again), so
// the scans between two readings of one backend are the difference, or the
// second reading after a flush: it may count too few, never too many.
type seqScanCounter struct {
	tables []string

	mu       sync.Mutex
	last     map[int32][]int64 // by backend
	counting bool
	commits  int
	scans    []int64 // per table, since start
}

func (c *seqScanCounter) hook(ctx context.Context, tx pgx.Tx, _ []resourcelease.Event) error {
	var pid int32
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		return err
	}
	now := make([]int64, len(c.tables))
	for i, table := range c.tables {
		if err := tx.QueryRow(ctx, `SELECT coalesce(sum(seq_scan), 0) FROM pg_stat_xact_user_tables
			WHERE schemaname = 'leasemesh' AND relname = $1`, table).Scan(&now[i]); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		c.last = map[int32][]int64{}
		c.scans = make([]int64, len(c.tables))
	}
	prev, seen := c.last[pid]
	c.last[pid] = now
	if !c.counting || !seen {
		return nil
	}
	c.commits++
	flushed := false
	for i := range now {
		flushed = flushed || now[i] < prev[i]
	}
	for i := range now {
		if flushed {
			c.scans[i] += now[i]
		} else {
			c.scans[i] += now[i] - prev[i]
		}
	}
	return nil
}

// start counts from the next reading of each backend on.
func (c *seqScanCounter) start() {
	c.mu.Lock()
	c.counting = true
	c.mu.Unlock()
}

// checkNone fails t unless commits were counted and none scanned a table.
func (c *seqScanCounter) checkNone(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.commits == 0 {
		t.Fatal("no commit was counted")
	}
	for i, table := range c.tables {
		if c.scans[i] != 0 {
			t.Errorf("%d sequential scans of %s in %d commits on grown tables, want none", c.scans[i], table, c.commits)
		}
	}
}

// leaseAndComplete leases the oldest ready item of q and completes it.
func leaseAndComplete(t *testing.T, q *postgres.Queue) {
	t.Helper()
	ctx := context.Background()
	l, err := leaseOne(ctx, q, "w")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Complete(ctx, l.OwnershipToken); err != nil {
		t.Fatal(err)
	}
}

// TestFinalPlanProbesByKey: the generic plan the writer makes of its final
// statement (without sequential scans, as it runs it) reaches every table
// by its primary key, and costs less than the server's JIT threshold. A node
// that had no other way than a sequential scan (the counter row's update had
// no key condition) would be priced as disabled, which made the plan look
// expensive enough to compile on every run: 0.3 s a commit.
func TestFinalPlanProbesByKey(t *testing.T) {
	t.Parallel()
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{})
	ctx := context.Background()
	tx := beginTx(t, q.Store().Pool())
	// PREPARE and EXPLAIN EXECUTE: the parameters of an EXPLAIN sent with
	// values are planned as constants, in a custom plan. (A prepared
	// statement outlives the transaction: DEALLOCATE at the end.)
	for _, sql := range []string{"SET LOCAL plan_cache_mode = force_generic_plan", "SET LOCAL enable_seqscan = off", "PREPARE final AS " + q.FinalSQL()} {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	var jitAbove float64
	if err := tx.QueryRow(ctx, `SELECT current_setting('jit_above_cost')::float8`).Scan(&jitAbove); err != nil {
		t.Fatal(err)
	}
	params := 0
	for _, m := range regexp.MustCompile(`\$(\d+)`).FindAllStringSubmatch(q.FinalSQL(), -1) {
		n, _ := strconv.Atoi(m[1])
		params = max(params, n)
	}
	rows, err := tx.Query(ctx, "EXPLAIN EXECUTE final(NULL"+strings.Repeat(", NULL", params-1)+")")
	if err != nil {
		t.Fatal(err)
	}
	plan, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "DEALLOCATE final"); err != nil {
		t.Fatal(err)
	}
	if len(plan) == 0 {
		t.Fatal("EXPLAIN returned no plan")
	}
	text := strings.Join(plan, "\n")
	for _, want := range []string{"Index Scan using queue_state_pkey", "Index Scan using dedupe_pkey", "Index Scan using items_pkey"} {
		if !strings.Contains(text, want) {
			t.Errorf("the plan has no %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "Seq Scan") {
		t.Errorf("the plan scans a table whole:\n%s", text)
	}
	var total float64
	if _, err := fmt.Sscanf(plan[0][strings.Index(plan[0], "..")+2:], "%f", &total); err != nil {
		t.Fatalf("no total cost in %q: %v", plan[0], err)
	}
	if total >= jitAbove {
		t.Errorf("the plan costs %.0f, at least jit_above_cost (%.0f): it would be compiled at every run:\n%s", total, jitAbove, text)
	}
}

// TestPartitionPlansStayByKey: with partition rules, the writer's
// recompute of the partitions a commit touched finds their rows by key
// once the partitions table has grown, whoever made the plan the writer's
// connection keeps: the sweeper's heal of marked partitions and the admin
// operations run the same statements on the same pooled connections (one
// plan per statement and connection, whatever the settings it runs under
// later), and a generic plan made there with the session's settings (auto
// mode turns to one after five runs) joined over a sequential scan of the
// small table and kept it. One connection in the pool, so that the heal,
// the admin operation and the writer share it; scans counted by
// seqScanCounter.
func TestPartitionPlansStayByKey(t *testing.T) {
	t.Parallel()
	for _, first := range []string{"heal", "redrive"} {
		t.Run(first, func(t *testing.T) {
			t.Parallel()
			partitionPlansStayByKey(t, first)
		})
	}
}

// partitionPlansStayByKey runs first (the sweeper's heal, past five runs,
// or an admin operation) on a small partitions table, grows it, and counts
// the writer's sequential scans of it.
func partitionPlansStayByKey(t *testing.T, first string) {
	scans := &seqScanCounter{tables: []string{"partitions"}}
	url := pgtest.NewDatabase(t) + "&pool_max_conns=1"
	q := openQueue(t, url, nil, postgres.QueueConfig{Capacity: -1, DedupeWindow: -1, SweepInterval: time.Hour,
		Fairness: resourcelease.FairnessPartitions, CommitHook: scans.hook})
	ctx := context.Background()
	pool := q.Store().Pool()
	if _, err := pool.Exec(ctx, `ALTER TABLE leasemesh.partitions SET (autovacuum_enabled = off)`); err != nil {
		t.Fatal(err)
	}
	// Plans made on a small table, by first.
	switch first {
	case "heal":
		for i := range 8 {
			if _, err := pool.Exec(ctx, `INSERT INTO leasemesh.partition_dirty VALUES ($1)`, fmt.Sprint("tenant-", i)); err != nil {
				t.Fatal(err)
			}
			if _, err := q.HealPartitions(ctx); err != nil {
				t.Fatal(err)
			}
		}
	case "redrive":
		// The dead letter from a partition the writer's commits never
		// touched: its plan is made by the redrive.
		if _, err := pool.Exec(ctx, `UPDATE leasemesh.queue_state SET next_sequence_id = next_sequence_id + 1, dead_letter_count = 1`); err != nil {
			t.Fatal(err)
		}
		if _, err := pool.Exec(ctx, `INSERT INTO leasemesh.items (sequence_id, state, resource_type, resource_id, partition_key,
				payload_encoding, attempt, enqueued_at, dead_lettered_at) VALUES (1, 'dead', 'bench.order', 'poison', 'poison', '', 1, now(), now())`); err != nil {
			t.Fatal(err)
		}
		if n, err := q.Redrive(ctx, resourcelease.DeadLetterSelection{All: true}); err != nil || n != 1 {
			t.Fatalf("redrive: %d, %v; want 1", n, err)
		}
	}
	// The table grows: 5,000 partitions with an item each.
	for n := range 5 {
		batch := make([]resourcelease.Item, 1000)
		for i := range batch {
			batch[i] = benchItem(n*1000 + i)
			batch[i].PartitionKey = fmt.Sprint("grown-", n*1000+i)
		}
		if _, err := q.EnqueueBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	scans.start()
	for range 8 {
		leaseAndComplete(t, q)
	}
	scans.checkNone(t)
}
