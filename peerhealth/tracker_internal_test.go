package peerhealth

import (
	"fmt"
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
		tr.RecordRelease(id, tok, false, clk.Now())
		clk.Advance(time.Second)
	}
	tr.mu.Lock()
	peers, idle := len(tr.peers), tr.idle.Len()
	tr.mu.Unlock()
	if peers > 61 || idle != peers {
		t.Fatalf("got %d peers (%d idle), want at most 61, all idle", peers, idle)
	}
}
