package resourcelease

import (
	"cmp"
	"slices"
)

func (q *Engine) rebuild(st *QueueState) error {
	// The rebuild is the first change: later change times start from it, so
	// the restored leases' expiries stay in order with later ones (see
	// expiryList) even under a clock that steps back.
	now := q.stamp(q.clock.Now())
	seen := make(map[int64]bool, len(st.Pending)+len(st.Leased)+len(st.DeadLetters))
	maxSeq := int64(0)
	check := func(p *PendingItem) error {
		if p.SequenceID <= 0 || seen[p.SequenceID] {
			return Errorf(StatusInternal, CodeInternal, "resourcelease: initial state has a bad or repeated sequence id %d", p.SequenceID)
		}
		seen[p.SequenceID] = true
		maxSeq = max(maxSeq, p.SequenceID)
		return nil
	}
	pending := slices.Clone(st.Pending)
	slices.SortFunc(pending, func(a, b PendingItem) int { return cmp.Compare(a.SequenceID, b.SequenceID) })
	for i := range pending {
		if err := check(&pending[i]); err != nil {
			return err
		}
		e := newEntryFrom(&pending[i])
		if e.readyAt > now {
			q.pushDelayed(e)
		} else {
			e.readyAt = 0
			q.pushNew(e) // ascending, and below every future sequence id
		}
	}
	for i := range st.Leased {
		l := &st.Leased[i]
		if err := check(&l.PendingItem); err != nil {
			return err
		}
		e := newEntryFrom(&l.PendingItem)
		e.setLastToken(l.Token)
		e.peer = l.PeerID
		e.leasedAt = l.LeasedAt.UnixNano()
		// A fresh lease duration from the restart: heartbeats are not persisted,
		// so the worker gets a full period to reconnect and heartbeat.
		e.expiresAt = now + int64(q.cfg.LeaseDuration)
		q.leases[e.seq] = e
		q.expiry.PushBack(e)
		if q.parts != nil {
			q.parts.leased(e.item.PartitionKey)
		}
	}
	dead := slices.Clone(st.DeadLetters)
	slices.SortStableFunc(dead, func(a, b DeadLetter) int { return a.DeadLetteredAt.Compare(b.DeadLetteredAt) })
	for i := range dead {
		d := &dead[i]
		if err := check(&d.PendingItem); err != nil {
			return err
		}
		q.dead[d.SequenceID] = q.deadLst.PushBack(&deadEntry{e: newEntryFrom(&d.PendingItem), at: d.DeadLetteredAt.UnixNano(), reason: d.Reason})
	}
	if q.cfg.DedupeWindow > 0 {
		dd := slices.Clone(st.Dedupe)
		slices.SortStableFunc(dd, func(a, b DedupeEntry) int { return a.SeenAt.Compare(b.SeenAt) })
		for i := range dd {
			if now-dd[i].SeenAt.UnixNano() >= int64(q.cfg.DedupeWindow) {
				continue
			}
			d := dd[i]
			if d.SeenAt.UnixNano() > now {
				// Seen "later" than now: the clock of the process that saved
				// it was ahead. Count its window from now, or it would sit at
				// the back of a list trimmed from the front by age, blocking
				// the trim of everything behind it.
				d.SeenAt = fromNanos(now)
			}
			q.dedupe[d.RequestID] = dedupeRecord{seq: d.SequenceID, seenAt: d.SeenAt.UnixNano()}
			q.dedupeOrder.PushBack(&d)
			q.boundDedupe()
		}
	}
	q.nextSeq = max(st.NextSequenceID, maxSeq+1, 1)
	return nil
}

// newEntryFrom rebuilds an entry from a pending item. Its ready time is the
// later of ReadyAt and the payload's NotBefore, so that a scheduled item
// restored without its ReadyAt still waits for its time.
func newEntryFrom(p *PendingItem) *entry {
	e := &entry{
		item:       p.Payload,
		seq:        p.SequenceID,
		attempt:    max(p.Attempt, 1),
		enqueuedAt: nanos(p.EnqueuedAt),
		readyAt:    max(notBeforeNanos(p.ReadyAt), notBeforeNanos(p.Payload.NotBefore)),
		lastError:  p.LastError,
		releases:   max(p.Releases, 0),
	}
	if p.LastOwnershipToken != nil {
		e.setLastToken(*p.LastOwnershipToken)
	}
	return e
}
