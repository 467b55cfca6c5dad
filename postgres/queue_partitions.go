package postgres

// Partition rules on PostgreSQL (MaxActivePerPartition, partitions
// fairness): the partitions table.
//
// A queue with partition rules keeps one row per partition key that has
// pending or leased items: its oldest ready item (head_seq), for a strict
// partition its oldest scheduled item (delayed_head, which holds the
// partition while it is older than the head), its live leases
// (active_count), whether it is leasable now, and when it was last served
// (last_served, the round-robin order). Two partial indexes hold the
// leasable rows only: by head_seq (fifo) and by last_served (partitions
// fairness).
//
// A lease takes the first leasable partitions in that order, locking their
// rows FOR UPDATE SKIP LOCKED (so no two dispatchers lease from one
// partition at once, and none waits for another), then up to the
// partition's room of its oldest ready items from items_ready_partition,
// FOR UPDATE without SKIP LOCKED: a pending item another transaction holds
// (a drain, a failing lease that has just made it pending) is waited for,
// never stepped over, or a strict partition would hand out its second item
// before its first. That wait cannot close a cycle: the partition row
// already keeps other leases out of the partition, and a transaction
// holding item rows never waits for a partition row (it recomputes rows
// FOR UPDATE SKIP LOCKED, and creates new rows ON CONFLICT DO NOTHING
// only after its own lease step).
// That is a bounded index scan of each, whatever the depth of the queue or
// the number of partitions: EXPLAIN shows a Limit over an Index Scan using
// partitions_fifo (or partitions_fair), then per partition a Limit over an
// Index Scan using items_ready_partition, and no scan of delayed rows
// (those are in items_scheduled, which only the promotion timer reads).
//
// A lease marks its row with its partition (leased_partition, cleared when
// the lease ends), so a partition's live leases are counted through an
// index that holds those leases alone (a queue without rules never writes
// it). Every transaction that changed a partition's items recomputes its
// row after it took the counter row (the serialization point), from a few
// index probes (the oldest pending and scheduled item, the live leases),
// so the rows follow commit order and are exact once the transaction
// commits. Rows another transaction holds (a lease in progress, which
// recomputes them itself before it commits, after this one) are skipped,
// never waited for, so no two transactions can deadlock on them. The
// skipping transaction marks them in partition_dirty (in the transaction,
// so the mark commits or rolls back with the change): the holder may roll
// back, or not recompute a row it locked (a lease whose recheck rejected
// the row). Every later transaction of any process that recomputes rows,
// and every sweep, recomputes a bounded number of marked rows and removes
// their marks, so a mark outlives the process that wrote it.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// serveSpan is the room in last_served one transaction has for the order of
// the partitions it served.
const serveSpan = 1 << 20

// dirtyDrain is how many marked partitions (partition_dirty) one
// transaction recomputes besides its own.
const dirtyDrain = 64

// partitionSQL holds the statements of a queue with partition rules.
type partitionSQL struct {
	// lease and leaseSized are the lease statements for the rules.
	lease, leaseSized string
	// ensure creates the rows of partitions new to the table; update
	// recomputes rows from the items; prune deletes those left with
	// nothing pending or leased.
	ensure, update, prune string
	// rebuild recomputes the whole table (at open, when the rules changed),
	// after markLeases marks the live leases with their partitions.
	rebuild, markLeases string
}

// replacerFunc fills in a statement's placeholders (in two passes: the
// rules' parts name tables too).
type replacerFunc func(string) string

func (f replacerFunc) Replace(s string) string { return f(s) }

// partitionRules names a configuration's partition rules ("" for none),
// as the counter row records them.
func partitionRules(c *QueueConfig) string {
	if c.MaxActivePerPartition == 0 && c.Fairness != resourcelease.FairnessPartitions {
		return ""
	}
	return fmt.Sprintf("max=%d fairness=%s", c.MaxActivePerPartition, c.Fairness)
}

func newPartitionSQL(s *Store, c *QueueConfig) partitionSQL {
	limit := c.MaxActivePerPartition
	rr := c.Fairness == resourcelease.FairnessPartitions
	order, rank := "head_seq", "sequence_id"
	if rr {
		order, rank = "last_served, partition_key", "round, last_served, partition_key"
	}
	room := "$2"
	if limit > 0 {
		room = fmt.Sprintf("least(greatest(%d - p.active_count, 0), $2)", limit)
	}
	dhead := "NULL::int8"
	if limit == 1 {
		dhead = "(SELECT min(sequence_id) FROM {items} WHERE partition_key = k.key AND state = 'scheduled')"
	}
	active := "0::int8"
	if limit > 0 {
		active = "(SELECT count(*) FROM {items} WHERE leased_partition = k.key)"
	}
	leasable := "c.head IS NOT NULL AND (c.dhead IS NULL OR c.dhead > c.head)"
	if limit > 0 {
		leasable += fmt.Sprintf(" AND c.active < %d", limit)
	}
	rules := strings.NewReplacer("{order}", order, "{rank}", rank, "{room}", room,
		"{dhead}", dhead, "{active}", active, "{leasable}", leasable, "{span}", fmt.Sprint(serveSpan))
	tables := strings.NewReplacer("{items}", s.table("items"), "{partitions}", s.table("partitions"),
		"{serve}", s.table("partition_serve"), "{dirty}", s.table("partition_dirty"), "{now}", nowExpr,
		"{drain}", fmt.Sprint(dirtyDrain))
	r := replacerFunc(func(sql string) string { return tables.Replace(rules.Replace(sql)) })
	ranked := r.Replace(`parts AS MATERIALIZED (
				SELECT partition_key, active_count, last_served FROM {partitions} WHERE leasable
				ORDER BY {order} LIMIT $2 FOR UPDATE SKIP LOCKED
			), cand AS MATERIALIZED (
				SELECT i.sequence_id, p.partition_key, p.last_served,
					row_number() OVER (PARTITION BY p.partition_key ORDER BY i.sequence_id) AS round
				FROM parts p CROSS JOIN LATERAL (
					SELECT sequence_id FROM {items} WHERE partition_key = p.partition_key AND state = 'pending'
					ORDER BY sequence_id LIMIT {room} FOR UPDATE) i
			), ranked AS (
				SELECT sequence_id, row_number() OVER (ORDER BY {rank}) AS rn FROM cand
			)`)
	lease, leaseSized := leaseStatements(s, ranked, ", leased_partition = i.partition_key")
	return partitionSQL{
		lease: lease, leaseSized: leaseSized,
		ensure: r.Replace(`INSERT INTO {partitions} (partition_key)
			SELECT k FROM unnest($1::text[]) AS k ORDER BY k ON CONFLICT DO NOTHING`),
		update: r.Replace(`WITH own AS (
				SELECT * FROM unnest($2::text[], $3::int8[]) AS k(key, served)
			), marked AS (
				SELECT partition_key AS key, 0::int8 AS served FROM {dirty}
				WHERE $4::bool AND partition_key <> ALL($2::text[]) ORDER BY partition_key LIMIT {drain}
			), k AS (
				SELECT * FROM own UNION ALL SELECT * FROM marked
			), tgt AS MATERIALIZED (
				SELECT partition_key FROM {partitions} WHERE partition_key IN (SELECT key FROM k) FOR UPDATE SKIP LOCKED
			), mark AS (
				INSERT INTO {dirty} (partition_key)
				SELECT key FROM own WHERE key NOT IN (SELECT partition_key FROM tgt) ORDER BY key ON CONFLICT DO NOTHING
			), unmark AS (
				DELETE FROM {dirty} WHERE partition_key IN (
					SELECT partition_key FROM {dirty} d WHERE partition_key IN (SELECT key FROM k)
						AND (partition_key IN (SELECT partition_key FROM tgt)
							OR NOT EXISTS (SELECT 1 FROM {partitions} p WHERE p.partition_key = d.partition_key))
					FOR UPDATE SKIP LOCKED)
			), c AS (
				SELECT k.key, k.served,
					(SELECT min(sequence_id) FROM {items} WHERE partition_key = k.key AND state = 'pending') AS head,
					{dhead} AS dhead, {active} AS active
				FROM k JOIN tgt ON tgt.partition_key = k.key
			), cur AS MATERIALIZED (
				SELECT nextval('{serve}') * {span} AS base
			)
			UPDATE {partitions} p SET head_seq = c.head, delayed_head = c.dhead, active_count = c.active,
				leasable = ({leasable}),
				last_served = CASE WHEN c.served > 0 THEN cur.base + c.served
					WHEN NOT p.leasable THEN cur.base + {span} - 1 ELSE p.last_served END,
				updated_at = {now}
			FROM c, cur WHERE p.partition_key = c.key
			RETURNING p.partition_key, p.leasable`),
		prune: r.Replace(`DELETE FROM {partitions} WHERE partition_key IN (
				SELECT partition_key FROM {partitions} WHERE partition_key = ANY($1::text[])
					AND head_seq IS NULL AND delayed_head IS NULL AND active_count = 0
				FOR UPDATE SKIP LOCKED)`),
		markLeases: r.Replace(`UPDATE {items} SET leased_partition = partition_key
			WHERE state = 'leased' AND leased_partition IS DISTINCT FROM partition_key`),
		rebuild: r.Replace(`INSERT INTO {partitions} (partition_key, active_count, head_seq, delayed_head, leasable, last_served, updated_at)
			SELECT c.key, c.active, c.head, c.dhead, ({leasable}), row_number() OVER (ORDER BY c.head NULLS LAST, c.key), {now}
			FROM (
				SELECT partition_key AS key,
					min(sequence_id) FILTER (WHERE state = 'pending') AS head,
					CASE WHEN $2 THEN min(sequence_id) FILTER (WHERE state = 'scheduled') END AS dhead,
					CASE WHEN $3 THEN count(*) FILTER (WHERE state = 'leased') ELSE 0 END AS active
				FROM {items} WHERE state <> 'dead' GROUP BY partition_key
			) c`),
	}
}

// touch notes that key's partition changed; served marks a lease taken from
// it (its round-robin place goes to the back, after those served before).
func (l *changeLog) touch(key string, served bool) {
	if l.touched == nil {
		l.touched = map[string]int64{}
	}
	if served {
		l.served++
		l.touched[key] = l.served
	} else if _, ok := l.touched[key]; !ok {
		l.touched[key] = 0
	}
}

// queuePartitions adds to p, after the final statement, the statements
// that bring the rows of the partitions the transaction touched up to date,
// and with drain those of partitions other transactions marked
// (partition_dirty, a bounded number). It returns the keys it asks for.
func (q *Queue) queuePartitions(p *pgx.Batch, now any, l *changeLog, drain bool) []string {
	if !q.parted || len(l.touched) == 0 {
		return nil
	}
	keys := slices.Sorted(maps.Keys(l.touched))
	served := make([]int64, len(keys))
	for i, k := range keys {
		served[i] = l.touched[k]
	}
	p.Queue(q.psql.ensure, keys)
	p.Queue(q.psql.update, now, keys, served, drain)
	p.Queue(q.psql.prune, keys)
	return keys
}

// partitionsDone reads the update's rows: leasable reports whether a
// partition the transaction did not lease from is leasable now (waiters
// should look). The keys it skipped (held by another transaction) it has
// marked in partition_dirty, in the transaction, so whoever recomputes
// partitions next retries them, whether this transaction's process lives
// on or not, and a rollback takes the marks back with the change.
func (q *Queue) partitionsDone(br pgx.BatchResults, keys []string, l *changeLog) (leasable bool, err error) {
	rows, err := br.Query()
	if err != nil {
		return false, err
	}
	return partitionRows(rows, l)
}

func partitionRows(rows pgx.Rows, l *changeLog) (leasable bool, err error) {
	defer rows.Close()
	for rows.Next() {
		var k string
		var ok bool
		if err := rows.Scan(&k, &ok); err != nil {
			return false, err
		}
		if ok && l.touched[k] == 0 {
			leasable = true
		}
	}
	return leasable, rows.Err()
}

// healPartitions recomputes the rows of marked partitions (partition_dirty)
// in a transaction of its own: the sweep's share, so that a mark is acted on
// even when no transaction touches partitions after it. It reports whether
// one of them is leasable now.
func (q *Queue) healPartitions(ctx context.Context) (leasable bool, err error) {
	if !q.parted {
		return false, nil
	}
	var marked bool
	if err := q.store.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+q.store.table("partition_dirty")+`)`).Scan(&marked); err != nil || !marked {
		return false, err
	}
	tx, err := q.store.pool.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	// The counter row first, as every commit of the queue takes it before
	// it recomputes partitions: a commit in flight (holding it) could
	// otherwise add an item to a partition this recompute finds empty and
	// prunes, and heal would write values older than that commit's. Held,
	// it means a commit is in progress, which drains marks itself: skip
	// this round rather than wait (a caller's QueueTx may hold it long).
	var one int
	err = tx.QueryRow(ctx, `SELECT 1 FROM `+q.store.table("queue_state")+` FOR UPDATE SKIP LOCKED`).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// The writer's statements, planned as the writer plans them (see
	// queueFinal): a connection keeps one plan per statement, and a
	// generic plan made here with the session's settings (auto mode turns
	// to one after five runs) would be the writer's too.
	for _, set := range []string{setGenericPlans, setNoSeqScans} {
		if _, err := tx.Exec(ctx, set); err != nil {
			return false, err
		}
	}
	now := q.store.nowArg()
	rows, err := tx.Query(ctx, q.psql.update, now, []string{}, []int64{}, true)
	if err != nil {
		return false, err
	}
	var keys []string
	for rows.Next() {
		var k string
		var ok bool
		if err := rows.Scan(&k, &ok); err != nil {
			rows.Close()
			return false, err
		}
		keys = append(keys, k)
		leasable = leasable || ok
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return false, err
	}
	if len(keys) > 0 {
		if _, err := tx.Exec(ctx, q.psql.prune, keys); err != nil {
			return false, err
		}
	}
	if leasable {
		if _, err := tx.Exec(ctx, q.sql.notify, q.channel, "r:"+q.instance); err != nil {
			return false, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return false, err
	}
	return leasable, nil
}

// partitionsTx is queuePartitions for a transaction run statement by
// statement (a caller's own pgx.Tx): after the final statement, it brings
// the rows of the partitions l touched up to date. A call that changes
// items in a queue with partition rules must touch their partitions
// (l.touch) and call it before the caller commits, or their rows miss the
// change until another commit touches them.
//
// It leaves other transactions' marks (partition_dirty) alone: the caller's
// transaction is the caller's, and gets no work of the queue's besides its
// own. The statements run in mode (see perCallMode).
func (q *Queue) partitionsTx(ctx context.Context, tx pgx.Tx, mode, now any, l *changeLog) (leasable bool, err error) {
	var p pgx.Batch
	keys := q.queuePartitions(&p, now, l, false)
	if len(keys) == 0 {
		return false, nil
	}
	for _, qq := range p.QueuedQueries {
		if qq.SQL != q.psql.update {
			if _, err := tx.Exec(ctx, qq.SQL, withMode(mode, qq.Arguments...)...); err != nil {
				return false, err
			}
			continue
		}
		rows, err := tx.Query(ctx, qq.SQL, withMode(mode, qq.Arguments...)...)
		if err != nil {
			return false, err
		}
		if leasable, err = partitionRows(rows, l); err != nil {
			return false, err
		}
	}
	return leasable, nil
}

// syncPartitions makes the partitions table fit the queue's rules at open:
// when the counter row records other rules (or none), the table is rebuilt
// from the items in one transaction (a scan of the queue, once), and the
// change is logged, since every process serving the schema must use the
// same rules. A queue without rules records none (leaving the rows, which
// nobody reads then), so that the next queue with rules rebuilds them.
func (q *Queue) syncPartitions(ctx context.Context) error {
	rules := partitionRules(&q.cfg)
	var stored string
	qs := q.store.table("queue_state")
	if err := q.store.pool.QueryRow(ctx, `SELECT partition_rules FROM `+qs).Scan(&stored); err != nil {
		return q.store.fail(ctx, "new queue", err)
	}
	if stored == rules {
		return nil
	}
	tx, err := q.store.pool.Begin(ctx)
	if err != nil {
		return q.store.fail(ctx, "new queue", err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if rules != "" {
		if _, err := tx.Exec(ctx, `DELETE FROM `+q.store.table("partitions")); err != nil {
			return q.store.fail(ctx, "new queue", err)
		}
		if _, err := tx.Exec(ctx, q.psql.markLeases); err != nil {
			return q.store.fail(ctx, "new queue", err)
		}
		if _, err := tx.Exec(ctx, q.psql.rebuild, q.store.nowArg(), q.cfg.MaxActivePerPartition == 1, q.cfg.MaxActivePerPartition > 0); err != nil {
			return q.store.fail(ctx, "new queue", err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE `+qs+` SET partition_rules = $1`, rules); err != nil {
		return q.store.fail(ctx, "new queue", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return q.store.fail(ctx, "new queue", err)
	}
	if stored == "" {
		q.cfg.Logger.Info("postgres queue: built the partitions table for the partition rules", "schema", q.store.cfg.Schema, "rules", rules)
		return nil
	}
	q.cfg.Logger.Warn("postgres queue: the partition rules changed; every dispatcher of the schema must use the same MaxActivePerPartition and Fairness",
		"schema", q.store.cfg.Schema, "was", stored, "now", rules, "rebuilt", rules != "")
	return nil
}
