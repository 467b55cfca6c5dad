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
