package main_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
)

// TestChaosPostgres is TestChaos on PostgreSQL: two dispatcher processes on
// one real database, the producer and the workers failing over between
// them, the schedule SIGKILLing and restarting either dispatcher (now and
// then both at once, briefly) and the workers, and stopping PostgreSQL
// itself once; the same checker holds the one global log, read from either
// dispatcher, against every acknowledgement, and both dispatchers' logs
// must be that log.
//
//	LEASEMESH_CHAOS_SEED=42 LEASEMESH_CHAOS_DURATION=10m go test -run 'TestChaosPostgres$' -timeout 30m ./examples/meshdemo
func TestChaosPostgres(t *testing.T) {
	srv := pgtest.NewServer(t)
	// The checker's rules: chaosMaxAttempts deliveries, the chaos lease
	// (the last flag of a key wins).
	ds := startMesh(t, srv.NewDatabase(t), 2,
		"--meshDemo:maxDeliveryAttempts="+strconv.Itoa(chaosMaxAttempts),
		"--meshDemo:leaseDurationSeconds="+strconv.FormatFloat(chaosLease.Seconds(), 'f', -1, 64))
	cm := &chaosMesh{
		test:  "TestChaosPostgres$",
		kill:  func(i int) { ds[i].p.kill() },
		start: func(i int) { ds[i].start(t); ds[i].ready(t) },
		outage: func() {
			if err := srv.StopImmediate(); err != nil {
				t.Fatal(err)
			}
			t.Log("chaos: postgres stopped")
			time.Sleep(2 * time.Second) // the outage itself, not a wait for anything
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			for _, d := range ds {
				d.ready(t)
			}
			t.Log("chaos: postgres restarted, both dispatchers ready")
		},
	}
	for _, d := range ds {
		cm.rpcURLs = append(cm.rpcURLs, d.rpcURL)
		cm.controlURLs = append(cm.controlURLs, d.base)
	}
	runChaos(t, cm)
}
