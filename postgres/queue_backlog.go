package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// OldestReady returns when the oldest ready item (the lowest sequence id in
// state pending, the next one a FIFO lease takes) became ready: its enqueue,
// or its own notBefore when that was later (not_before is cleared when a
// delayed row is promoted, item_not_before keeps the item's time); zero
// when nothing is ready.
// One row read through the ready index, so a metrics scrape can ask for it
// (the age-of-oldest-ready-item gauge). An item requeued by a fail or an
// expiry without a delay keeps its enqueue time: its age counts from when
// it first came.
func (q *Queue) OldestReady(ctx context.Context) (time.Time, error) {
	if err := q.checkOpen("oldest ready"); err != nil {
		return time.Time{}, err
	}
	var t time.Time
	err := q.store.pool.QueryRow(ctx, `SELECT greatest(enqueued_at, item_not_before) FROM `+q.store.table("items")+
		` WHERE state = 'pending' ORDER BY sequence_id LIMIT 1`).Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, q.store.fail(ctx, "oldest ready", err)
	}
	return t.UTC(), nil
}
