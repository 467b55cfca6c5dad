package resourcelease

import "time"

// maintain promotes delayed items whose time has come, expires overdue
// leases, purges the dead letters past their retention and hands ready items
// to waiting long-polls. Callers hold q.mu; it returns the last ack it
// produced.
func (q *Engine) maintain(now int64) Ack {
	var last Ack
	promoted := false
	for {
		e, ok := q.delayed.Peek()
		if !ok || e.readyAt > now {
			break
		}
		q.delayed.Pop()
		q.promote(e)
		promoted = true
	}
	if promoted {
		q.signalSpace() // room for delayed items
	}
	for {
		e := q.expiry.Front()
		if e == nil || e.expiresAt > now {
			break
		}
		if a := q.expire(e, now); a != nil {
			last = a
		}
	}
	if q.deadLst.Len() > 0 {
		if a := q.trimDeadLetters(now, maxPurgesPerSweep); a != nil {
			last = a
		}
	}
	q.handOff(now)
	return last
}

// expire ends e's lease because it passed its expiry. Callers hold q.mu.
func (q *Engine) expire(e *entry, now int64) Ack {
	reason := &ErrorInfo{Message: "lease expired without a heartbeat", Code: CodeLeaseExpired}
	return q.endLease(e, now, ChangeExpired, reason, true, nil)
}

func (q *Engine) kickSweeper() {
	select {
	case q.sweepKick <- struct{}{}:
	default:
	}
}

// Sweep promotes delayed items that are due, requeues expired leases and hands
// ready items to waiting long-polls. The sweeper calls it every SweepInterval;
// it is exported for callers that drive time themselves.
func (q *Engine) Sweep() {
	read := q.clock.Now() // before the lock: reading the clock can be slow
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	now := q.stamp(read)
	ack := q.maintain(now)
	q.mu.Unlock()
	// A failed Ack needs nothing here: the journal tells the calls that
	// depend on it (it refuses them, or answers them unavailable while its
	// storage is stalled), and the next sweep records afresh.
	_ = waitAck(ack)
}

// nextSweep is how long the sweeper sleeps: the sweep interval, or less when a
// delayed item becomes ready sooner.
func (q *Engine) nextSweep() time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	d := q.cfg.SweepInterval
	if e, ok := q.delayed.Peek(); ok {
		until := time.Duration(e.readyAt - q.clock.Now().UnixNano())
		d = max(min(d, until), 0)
	}
	return d
}

func (q *Engine) sweepLoop() {
	defer close(q.sweepDone)
	for {
		t := q.clock.NewTimer(q.nextSweep())
		select {
		case <-q.stop:
			t.Stop()
			return
		case <-q.sweepKick:
			t.Stop()
			continue
		case <-t.C():
		}
		q.Sweep()
	}
}
