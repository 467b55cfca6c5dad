package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Backlog returns what is waiting, as resourcelease's Engine.Backlog does:
// the top partitions by ready items (at most top; top <= 0 returns none),
// how many partitions have a ready item, the ready and delayed counts (the
// counter row's) and when the oldest ready item became ready. It groups the
// ready items by partition, a scan of items_ready_partition, so call it now
// and then (a metrics scrape), not per operation.
func (q *Queue) Backlog(ctx context.Context, top int) (resourcelease.Backlog, error) {
	if err := q.checkOpen("backlog"); err != nil {
		return resourcelease.Backlog{}, err
	}
	c, err := q.readCounts(ctx)
	if err != nil {
		return resourcelease.Backlog{}, err
	}
	b := resourcelease.Backlog{Ready: int(c.ready), Delayed: int(c.delayed)}
	items := q.store.table("items")
	rows, err := q.store.pool.Query(ctx, `WITH g AS (
			SELECT partition_key, count(*) AS ready FROM `+items+` WHERE state = 'pending' GROUP BY partition_key
		)
		SELECT n.total, g.partition_key, g.ready
		FROM (SELECT count(*) AS total FROM g) n LEFT JOIN LATERAL (
			SELECT * FROM g ORDER BY ready DESC, partition_key LIMIT greatest($1::int8, 0)) g ON true`, top)
	if err != nil {
		return b, q.store.fail(ctx, "backlog", err)
	}
	at := map[string]int{}
	for rows.Next() {
		var total int64
		var key *string
		var ready *int64
		if err := rows.Scan(&total, &key, &ready); err != nil {
			rows.Close()
			return b, q.store.fail(ctx, "backlog", err)
		}
		b.PartitionCount = int(total)
		if key != nil {
			at[*key] = len(b.Partitions)
			b.Partitions = append(b.Partitions, resourcelease.PartitionBacklog{PartitionKey: *key, Ready: int(*ready)})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return b, q.store.fail(ctx, "backlog", err)
	}
	if len(at) > 0 {
		keys := make([]string, len(b.Partitions))
		for i, p := range b.Partitions {
			keys[i] = p.PartitionKey
		}
		rows, err := q.store.pool.Query(ctx, `SELECT partition_key, count(*) FROM `+items+`
			WHERE state = 'leased' AND partition_key = ANY($1::text[]) GROUP BY partition_key`, keys)
		if err != nil {
			return b, q.store.fail(ctx, "backlog", err)
		}
		for rows.Next() {
			var key string
			var n int64
			if err := rows.Scan(&key, &n); err != nil {
				rows.Close()
				return b, q.store.fail(ctx, "backlog", err)
			}
			b.Partitions[at[key]].Leased = int(n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return b, q.store.fail(ctx, "backlog", err)
		}
	}
	var since *time.Time
	err = q.store.pool.QueryRow(ctx, `SELECT greatest(enqueued_at, item_not_before) FROM `+items+`
		WHERE state = 'pending' ORDER BY sequence_id LIMIT 1`).Scan(&since)
	switch {
	case err == nil:
		b.OldestReadySince = since.UTC()
	case !errors.Is(err, pgx.ErrNoRows):
		return b, q.store.fail(ctx, "backlog", err)
	}
	return b, nil
}
