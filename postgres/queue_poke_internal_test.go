package postgres

import (
	"context"
	"fmt"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
)

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

// TestPokeDuringTransactionIsOwed: a poke that comes while a transaction
// runs may stand for a change its reads missed; the calls it then parks (a
// new long-poll's first try that found nothing, an enqueue refused for
// capacity) get a round for it at once, and the writer is woken for it,
// rather than waiting for the next poll. A transaction with no poke in its
// course owes none.
func TestPokeDuringTransactionIsOwed(t *testing.T) {
	for _, tc := range []struct {
		name         string
		ready, space bool
	}{{"long-poll", true, false}, {"capacity wait", false, true}} {
		for _, poked := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/poked=%v", tc.name, poked), func(t *testing.T) {
				q := &Queue{kick: make(chan struct{}, 1)}
				q.cfg.MaxBatch = 16
				call := newOp(context.Background(), opLease)
				call.wait, call.max = true, 1
				if tc.space {
					call = newOp(context.Background(), opEnqueue)
					call.items = make([]resourcelease.Item, 1)
				}
				q.pending = []*op{call}
				b := q.takeLocked()
				if b == nil || len(b.ops) != 1 {
					t.Fatal("the call was not taken")
				}
				if tc.space {
					b.parkFull = []*op{call} // refused for capacity: it waits for room
				}
				if poked {
					q.poke(tc.ready, tc.space)
				}
				select {
				case <-q.kick: // the poke's own wake, if any
				default:
				}
				q.deliver(b, nil, nil)
				parked := len(q.waiters) == 1 && q.waiters[0] == call
				if tc.space {
					parked = len(q.full) == 1 && q.full[0] == call
				}
				if !parked {
					t.Fatalf("the call was not parked: %d waiters, %d capacity waits", len(q.waiters), len(q.full))
				}
				woken := false
				select {
				case <-q.kick:
					woken = true
				default:
				}
				if woken != poked {
					t.Errorf("writer woken after the transaction: %v, want %v", woken, poked)
				}
				next := q.takeLocked()
				served := next != nil && (next.tookWaiters && next.waiters[0] == call || next.tookFull && next.full[0] == call)
				if served != poked {
					t.Errorf("the next transaction serves the parked call: %v, want %v", served, poked)
				}
			})
		}
	}
}
