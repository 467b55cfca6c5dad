package resourcelease

import "context"

// Pause stops the queue from granting leases until Resume: a lease request
// gets nothing (a long-poll waits, bounded by its wait, and gets the first
// item after Resume if it is still waiting), while enqueue, heartbeat,
// complete, fail, drain, restore and the dead-letter calls keep working and
// leases already granted still expire. Stats reports Paused. Pausing a
// paused queue does nothing.
//
// The paused state lives in memory only: it is not journaled, so a
// restarted dispatcher leases again, and each dispatcher of a mesh is paused
// on its own.
func (q *Engine) Pause(ctx context.Context) error {
	if _, err := q.begin(ctx); err != nil {
		return err
	}
	q.paused = true
	q.mu.Unlock()
	return nil
}

// Resume lets a paused queue grant leases again: the long-polls that waited
// through the pause are served first, first come first served. Resuming a
// queue that is not paused does nothing.
func (q *Engine) Resume(ctx context.Context) error {
	now, err := q.begin(ctx)
	if err != nil {
		return err
	}
	q.paused = false
	// The grants' acknowledgements go to the long-polls that get them, as
	// every handOff's do.
	q.handOff(now)
	q.mu.Unlock()
	return nil
}

// Paused reports whether leasing is paused.
func (q *Engine) Paused() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.paused
}
