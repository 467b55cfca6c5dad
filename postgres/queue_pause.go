package postgres

import "context"

// Pause stops the queue from granting leases until Resume: a lease gets
// nothing (a long-poll waits, bounded by its wait, and is served after
// Resume if it is still waiting), while enqueue, heartbeat, complete,
// fail, release, drain, restore and the dead-letter calls keep working and
// leases already granted still expire. Stats reports Paused.
//
// Unlike the in-memory engine's pause, the flag is the queue's, kept in the
// database: it pauses every dispatcher of the queue at once, and it
// survives their restarts until one of them resumes. A lease whose
// transaction began before the pause committed may still be granted.
// Pausing a paused queue does nothing.
func (q *Queue) Pause(ctx context.Context) error {
	return q.setPaused(ctx, "pause", true)
}

// Resume lets every dispatcher of the queue grant leases again: the
// long-polls that waited through the pause, on every dispatcher, are served
// first (each dispatcher's first come first served). Resuming a queue that
// is not paused does nothing.
func (q *Queue) Resume(ctx context.Context) error {
	return q.setPaused(ctx, "resume", false)
}

func (q *Queue) setPaused(ctx context.Context, op string, paused bool) error {
	if err := q.checkOpen(op); err != nil {
		return err
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	// A resume wakes the other processes' parked long-polls with the
	// notification a commit that made items ready sends (from no instance:
	// this one's listener pokes its own too); it is sent only when the
	// flag changed, and on commit, so a waiter never looks before the
	// change is visible.
	tag, err := q.store.pool.Exec(ctx, `WITH u AS (
			UPDATE `+q.store.table("queue_state")+` SET paused = $1 WHERE paused <> $1 RETURNING 1
		)
		SELECT CASE WHEN NOT $1 THEN pg_notify($2, 'r:') END FROM u`, paused, q.channel)
	if err != nil {
		return q.store.fail(ctx, op, err)
	}
	if !paused && tag.RowsAffected() > 0 {
		// Without waiting for the notification's round trip (or when the
		// listener is down): this process's waiters look now, and so does a
		// long-poll whose first round is out in a transaction that read the
		// queue paused (it parks after this; the writer serves it then).
		q.mu.Lock()
		q.serveWaiters = true
		q.mu.Unlock()
		q.wake()
	}
	return nil
}
