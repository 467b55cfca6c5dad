package peerhealth_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// The dispatcher feeds the tracker as leases are requested, granted,
// heartbeated, settled and lost; the tracker's breaker answers whether a
// peer's lease request is served.
func ExampleTracker() {
	clk := leasetest.NewManualClock(time.Time{})
	tr, err := peerhealth.New(peerhealth.Config{Clock: clk})
	if err != nil {
		panic(err)
	}

	tr.RecordAssignment("worker-1", token(1), map[string]string{"tenant": "tenant-1"}, clk.Now())
	clk.Advance(10 * time.Second)
	tr.RecordHeartbeat("worker-1", token(1), 3, clk.Now())
	// The item is poison: the worker dead-letters it. That is a release.
	tr.RecordRelease("worker-1", token(1), resourcelease.ReleaseDeadLettered, clk.Now())
	s, _ := tr.Snapshot("worker-1")
	fmt.Println("healthy:", s.IsHealthy, "breaker:", s.Breaker)

	// The worker goes silent: three leases in a row expire.
	for seq := int64(2); seq <= 4; seq++ {
		tr.RecordAssignment("worker-1", token(seq), nil, clk.Now())
		clk.Advance(30 * time.Second)
		tr.RecordDisconnect("worker-1", token(seq), resourcelease.DisconnectLeaseExpired, clk.Now())
		fmt.Println("expiries:", seq-1, "wait:", tr.AdmitLease("worker-1", clk.Now()))
	}
	fmt.Println("new worker wait:", tr.AdmitLease("worker-2", clk.Now()))

	// After the cool-down one request is let through; its lease is
	// heartbeated, and the breaker closes.
	clk.Advance(30 * time.Second)
	fmt.Println("after the cool-down, wait:", tr.AdmitLease("worker-1", clk.Now()))
	tr.RecordAssignment("worker-1", token(5), nil, clk.Now())
	fmt.Println("second request, wait:", tr.AdmitLease("worker-1", clk.Now()))
	tr.RecordHeartbeat("worker-1", token(5), 0, clk.Now())
	s, _ = tr.Snapshot("worker-1")
	fmt.Println("breaker:", s.Breaker, "wait:", tr.AdmitLease("worker-1", clk.Now()))

	// Output:
	// healthy: true breaker: closed
	// expiries: 1 wait: 0s
	// expiries: 2 wait: 0s
	// expiries: 3 wait: 30s
	// new worker wait: 0s
	// after the cool-down, wait: 0s
	// second request, wait: 1s
	// breaker: closed wait: 0s
}

func ExampleTracker_Diagnostics() {
	clk := leasetest.NewManualClock(time.Time{})
	tr, err := peerhealth.New(peerhealth.Config{Clock: clk})
	if err != nil {
		panic(err)
	}
	tr.RecordAssignment("worker-1", token(1), map[string]string{"priority": "high"}, clk.Now())

	out, err := json.MarshalIndent(tr.Diagnostics(), "", "  ")
	if err != nil {
		panic(err)
	}
	fmt.Println(string(out))

	// Output:
	// {
	//   "peers": [
	//     {
	//       "peerId": "worker-1",
	//       "lastHeartbeat": "2026-01-02T03:04:05Z",
	//       "lastDisconnect": null,
	//       "isHealthy": true,
	//       "activeAssignments": 1,
	//       "pendingReassignments": 0,
	//       "activeLeases": [
	//         {
	//           "sequenceId": 1,
	//           "attempt": 1,
	//           "leaseId": "00000000-0000-4000-8000-000000000001"
	//         }
	//       ],
	//       "metadata": {
	//         "priority": "high"
	//       },
	//       "breaker": "closed",
	//       "consecutiveExpiries": 0
	//     }
	//   ],
	//   "summary": {
	//     "eligiblePeers": 1,
	//     "unhealthyPeers": 0,
	//     "pendingReassignments": 0
	//   }
	// }
}
