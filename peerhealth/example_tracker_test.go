package peerhealth_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// The dispatcher feeds the tracker as leases are granted, heartbeated and
// lost; the tracker answers whether a peer may get another lease.
func ExampleTracker() {
	clk := leasetest.NewManualClock(time.Time{})
	tr, err := peerhealth.New(peerhealth.Config{Clock: clk})
	if err != nil {
		panic(err)
	}

	tr.RecordAssignment("worker-1", token(1), map[string]string{"tenant": "tenant-1"}, clk.Now())
	clk.Advance(10 * time.Second)
	tr.RecordHeartbeat("worker-1", token(1), 3, clk.Now())
	s, _ := tr.Snapshot("worker-1")
	fmt.Println("healthy:", s.IsHealthy, "leases:", s.ActiveAssignments)

	// The worker stops heartbeating; its lease expires and is requeued.
	clk.Advance(30 * time.Second)
	tr.RecordDisconnect("worker-1", token(1), "lease expired", clk.Now())
	s, _ = tr.Snapshot("worker-1")
	fmt.Println("healthy:", s.IsHealthy, "pending reassignments:", s.PendingReassignments)
	fmt.Println("eligible:", tr.IsPeerEligible("worker-1"))
	fmt.Println("new worker eligible:", tr.IsPeerEligible("worker-2"))

	// Output:
	// healthy: true leases: 1
	// healthy: false pending reassignments: 1
	// eligible: false
	// new worker eligible: true
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
	//       }
	//     }
	//   ],
	//   "summary": {
	//     "eligiblePeers": 1,
	//     "unhealthyPeers": 0,
	//     "pendingReassignments": 0
	//   }
	// }
}
