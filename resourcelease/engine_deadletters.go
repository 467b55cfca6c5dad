package resourcelease

import "context"

// DeadLetters implements Queue.
func (q *Engine) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	if err := ctxError(ctx); err != nil {
		return nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	n := q.deadLst.Len()
	if limit > 0 && limit < n {
		n = limit
	}
	out := make([]DeadLetter, 0, n)
	for el := q.deadLst.Front(); el != nil && len(out) < n; el = el.Next() {
		d := el.Value.(*deadEntry)
		out = append(out, DeadLetter{PendingItem: d.e.pendingItem(), DeadLetteredAt: fromNanos(d.at), Reason: d.reason})
	}
	return out, nil
}

// takeDead returns the dead entries sel names, in dead-letter order, and
// removes them. Unknown ids are ignored. Callers hold q.mu.
func (q *Engine) takeDead(sel DeadLetterSelection) []*entry {
	var out []*entry
	if sel.All {
		for el := q.deadLst.Front(); el != nil; el = el.Next() {
			out = append(out, el.Value.(*deadEntry).e)
		}
		q.deadLst.Init()
		clear(q.dead)
		return out
	}
	for _, id := range sel.SequenceIDs {
		if el, ok := q.dead[id]; ok {
			out = append(out, el.Value.(*deadEntry).e)
			q.deadLst.Remove(el)
			delete(q.dead, id)
		}
	}
	return out
}

// Redrive implements Queue.
func (q *Engine) Redrive(ctx context.Context, sel DeadLetterSelection) (int, error) {
	if err := sel.validate("redrive"); err != nil {
		return 0, err
	}
	return q.deadLetterOp(ctx, sel, func(moved []*entry, now int64) Ack {
		items := make([]PendingItem, len(moved))
		for i, e := range moved {
			e.attempt, e.releases = 1, 0
			q.pushReady(e)
			items[i] = e.pendingItem()
		}
		ack := q.record(ChangeRedriven, now, func(c *Change) {
			c.Items = items
			c.PeerID = CallInfoFrom(ctx).Caller
		})
		q.handOff(now)
		return ack
	})
}

// Purge implements Queue.
func (q *Engine) Purge(ctx context.Context, sel DeadLetterSelection) (int, error) {
	if err := sel.validate("purge"); err != nil {
		return 0, err
	}
	return q.deadLetterOp(ctx, sel, func(gone []*entry, now int64) Ack {
		seqs := make([]int64, len(gone))
		for i, e := range gone {
			seqs[i] = e.seq
		}
		return q.record(ChangePurged, now, func(c *Change) {
			c.SequenceIDs = seqs
			c.PeerID = CallInfoFrom(ctx).Caller
		})
	})
}

// deadLetterOp takes the dead letters sel names out of the dead-letter list
// and hands them to apply, under the lock; it returns how many there were
// once apply's change is acknowledged.
func (q *Engine) deadLetterOp(ctx context.Context, sel DeadLetterSelection, apply func(taken []*entry, now int64) Ack) (int, error) {
	now, err := q.begin(ctx)
	if err != nil {
		return 0, err
	}
	taken := q.takeDead(sel)
	if len(taken) == 0 {
		q.mu.Unlock()
		return 0, nil
	}
	ack := apply(taken, now)
	q.mu.Unlock()
	return len(taken), waitAck(ack)
}
