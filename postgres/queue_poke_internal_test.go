package postgres

import "testing"

// TestPokeWhileServingIsKept checks that a poke arriving while a
// transaction is out serving the parked waiters (or capacity waits) is kept
// for a round after it: that transaction may have read before the change
// the poke stands for, and would park them again for a whole poll interval.
func TestPokeWhileServingIsKept(t *testing.T) {
	for _, tc := range []struct {
		name         string
		ready, space bool
	}{{"waiters", true, false}, {"capacity waits", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			q := &Queue{kick: make(chan struct{}, 1)}
			q.waitersBusy, q.fullBusy = tc.ready, tc.space // both lists are out in a transaction
			q.poke(tc.ready, tc.space)
			if q.serveWaiters != tc.ready || q.serveFull != tc.space {
				t.Errorf("after a poke while serving: serveWaiters %v, serveFull %v; want %v, %v",
					q.serveWaiters, q.serveFull, tc.ready, tc.space)
			}
		})
	}
}

// TestPokeWhileFirstTryInFlight: a poke arriving while a transaction
// carries a new long-poll's first try (which parks it if it finds nothing)
// is kept for a round after it, as for parked waiters being served: that
// try may have read before the change the poke stands for. A transaction
// is counted from when it takes the call to when it parks it.
func TestPokeWhileFirstTryInFlight(t *testing.T) {
	q := &Queue{kick: make(chan struct{}, 1)}
	q.cfg.MaxBatch = 16
	q.pending = []*op{{kind: opLease, wait: true}}
	b := q.takeLocked()
	if b == nil || !b.waitLease || q.waitLeases != 1 {
		t.Fatalf("after taking a long-poll: batch %v, waitLeases %d; want it counted once", b != nil, q.waitLeases)
	}
	q.poke(true, false)
	if !q.serveWaiters {
		t.Error("a poke while a long-poll's first try is in flight was dropped")
	}
	// Its transaction found nothing: the call is parked, the count gone,
	// and the writer is woken for the round the poke is owed.
	select {
	case <-q.kick: // the poke's own
	default:
	}
	q.deliver(b, nil, nil)
	if q.waitLeases != 0 || len(q.waiters) != 1 {
		t.Fatalf("after the transaction: waitLeases %d, %d parked; want 0 and the long-poll", q.waitLeases, len(q.waiters))
	}
	select {
	case <-q.kick:
	default:
		t.Error("the writer was not woken for the round the poke is owed")
	}
	q.waiters, q.serveWaiters = nil, false
	q.pending = []*op{{kind: opLease}}
	if b := q.takeLocked(); b == nil || b.waitLease || q.waitLeases != 0 {
		t.Errorf("a lease without a wait: counted %v, waitLeases %d; want neither", b != nil && b.waitLease, q.waitLeases)
	}
}
