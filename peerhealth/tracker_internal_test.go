package peerhealth

import (
	"container/list"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// TestWritesAloneBoundMemory checks that the Record methods forget old peers
// by themselves, with no reads to trigger pruning.
func TestWritesAloneBoundMemory(t *testing.T) {
	t.Parallel()
	clk := leasetest.NewManualClock(time.Time{})
	tr, err := New(Config{Clock: clk, Retention: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10_000 {
		id := fmt.Sprintf("peer-%d", i)
		tok := resourcelease.OwnershipToken{SequenceID: int64(i + 1), Attempt: 1, LeaseID: uuid.New()}
		tr.RecordAssignment(id, tok, nil, clk.Now())
		tr.RecordRelease(id, tok, resourcelease.ReleaseCompleted, clk.Now())
		clk.Advance(time.Second)
	}
	tr.mu.Lock()
	peers, idle := len(tr.peers), tr.idle.Len()
	tr.mu.Unlock()
	if peers > 61 || idle != peers {
		t.Fatalf("got %d peers (%d idle), want at most 61, all idle", peers, idle)
	}
}

// TestMaxPeersKeepsListsConsistent drives a tracker bounded by MaxPeers with a
// random mix of calls and checks, after each, that it is within the bound and
// that every known peer is in exactly the list its leases say (idle or busy),
// each ordered by last contact: the O(1) eviction relies on both.
func TestMaxPeersKeepsListsConsistent(t *testing.T) {
	t.Parallel()
	const maxPeers = 16
	clk := leasetest.NewManualClock(time.Time{})
	tr, err := New(Config{Clock: clk, MaxPeers: maxPeers})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tokens := make([]resourcelease.OwnershipToken, 8)
	for i := range tokens {
		tokens[i] = resourcelease.OwnershipToken{SequenceID: int64(i + 1), Attempt: 1, LeaseID: uuid.New()}
	}
	for step := range 20_000 {
		id := fmt.Sprintf("peer-%d", rng.IntN(4*maxPeers))
		tok := tokens[rng.IntN(len(tokens))]
		switch rng.IntN(6) {
		case 0:
			tr.RecordAssignment(id, tok, nil, clk.Now())
		case 1:
			tr.RecordHeartbeat(id, tok, 0, clk.Now())
		case 2:
			tr.RecordRelease(id, tok, releaseOutcomes[rng.IntN(len(releaseOutcomes))], clk.Now())
		case 3:
			tr.RecordDisconnect(id, tok, "lease expired", clk.Now())
		case 4:
			tr.AdmitLease(id, clk.Now())
		case 5:
			tr.RecordLeaseMiss(id, clk.Now())
		}
		clk.Advance(time.Duration(rng.IntN(1000)) * time.Millisecond)

		tr.mu.Lock()
		if len(tr.peers) > maxPeers {
			t.Fatalf("step %d: %d peers, want at most %d", step, len(tr.peers), maxPeers)
		}
		if n := tr.idle.Len() + tr.busy.Len(); n != len(tr.peers) {
			t.Fatalf("step %d: %d peers in the lists, %d in the map", step, n, len(tr.peers))
		}
		for name, l := range map[string]*list.List{"idle": tr.idle, "busy": tr.busy} {
			var last time.Time
			for e := l.Front(); e != nil; e = e.Next() {
				p := e.Value.(*peer)
				if tr.peers[p.id] != p || p.elem != e || tr.lru(p) != l {
					t.Fatalf("step %d: peer %s misplaced in the %s list", step, p.id, name)
				}
				if p.lastSeen.Before(last) {
					t.Fatalf("step %d: %s list out of order at %s", step, name, p.id)
				}
				last = p.lastSeen
			}
		}
		tr.mu.Unlock()
	}
}
