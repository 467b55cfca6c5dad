package main_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// mesh is a dispatcher+diagnostics process and the URLs to reach it.
type mesh struct {
	rpcURL  string // what seeders and workers dial
	base    string // the diagnostics port
	dataDir string
	disp    *proc
}

// startDispatcher starts the README's step 1 on loopback. The first start
// lets the OS pick both ports and reads them from the banner; a restart
// binds the same ports again, the ones the workers and the test dial.
func startDispatcher(t *testing.T, m *mesh, extra ...string) *proc {
	t.Helper()
	rpc, base := "http://127.0.0.1:0", "http://127.0.0.1:0"
	if m.rpcURL != "" {
		rpc, base = strings.TrimSuffix(m.rpcURL, "/yarpc/v1"), m.base
	}
	args := append([]string{"--",
		"--meshDemo:roles=dispatcher,diagnostics",
		"--meshDemo:rpcUrl=" + rpc,
		"--urls=" + base,
		"--meshDemo:dataDirectory=" + m.dataDir,
	}, extra...)
	p := startProc(t, "dispatcher", t.TempDir(), args...)
	if m.rpcURL == "" {
		m.rpcURL = p.bannerURL(t, "RPC endpoint")
		m.base = strings.TrimSuffix(p.bannerURL(t, "Diagnostics UI"), "/")
	}
	eventually(t, 30*time.Second, "the dispatcher's diagnostics port", func() bool {
		if p.exited() {
			t.Fatalf("dispatcher exited: %v\n%s", p.err, p.stderr.String())
		}
		status, _, ok := get(m.base + "/demo/lease-health")
		return ok && status == 200
	})
	m.disp = p
	return p
}

// newMesh returns a mesh with a data directory; startDispatcher fills in
// its URLs.
func newMesh(t *testing.T) *mesh {
	return &mesh{dataDir: t.TempDir()}
}

// startRole starts a seeder or a worker the way the README does, with its
// /metrics on a free loopback port.
func (m *mesh) startRole(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	all := append([]string{"--", "--meshDemo:rpcUrl=" + strings.TrimSuffix(m.rpcURL, "/yarpc/v1"), "--urls=http://127.0.0.1:0"}, args...)
	return startProc(t, name, t.TempDir(), all...)
}

// completedBy counts Completed events per peer.
func completedBy(events []resourcelease.Event) map[string]int {
	out := map[string]int{}
	for _, e := range events {
		if e.EventType == resourcelease.EventCompleted {
			out[e.PeerID]++
		}
	}
	return out
}

// TestQuickstartFourProcesses runs the README's distributed quickstart:
// dispatcher+diagnostics, a seeder and two workers in four processes. Both
// workers show up in lease-health and complete items; every process serves
// /metrics; SIGINT and SIGTERM stop them cleanly with exit code 0.
func TestQuickstartFourProcesses(t *testing.T) {
	m := newMesh(t)
	startDispatcher(t, m)
	seeder := m.startRole(t, "seeder", "--meshDemo:roles=seeder", "--meshDemo:seederIntervalSeconds=0.1")
	wa := m.startRole(t, "worker-a", "--meshDemo:roles=worker", "--meshDemo:workerPeerId=mesh-worker-a", "--meshDemo:workerProcessingSeconds=0.05")
	wb := m.startRole(t, "worker-b", "--meshDemo:roles", "worker", "--meshDemo:workerPeerId", "mesh-worker-b", "--meshDemo:workerProcessingSeconds", "0.05")

	eventually(t, 40*time.Second, "both workers healthy in lease-health, each with completed items", func() bool {
		var h peerHealth
		if !getJSON(m.base+"/demo/lease-health", &h) {
			return false
		}
		ha, _, fa := h.peer("mesh-worker-a")
		hb, _, fb := h.peer("mesh-worker-b")
		done := completedBy(readAllEvents(t, m.base))
		return fa && fb && ha && hb && done["mesh-worker-a"] >= 2 && done["mesh-worker-b"] >= 2
	})

	// Every role exposes /metrics on its own port.
	for _, p := range []*proc{seeder, wa, wb} {
		status, body, ok := get(p.metricsURL(t))
		if !ok || status != 200 || !strings.Contains(string(body), "rpc_client_requests_total") {
			t.Errorf("%s /metrics: status %d ok %v", p.name, status, ok)
		}
	}
	if status, body, _ := get(m.base + "/metrics"); status != 200 || !strings.Contains(string(body), "resourcelease_completed_total") {
		t.Errorf("dispatcher /metrics: status %d", status)
	}

	for i, p := range []*proc{seeder, wa, wb, m.disp} {
		sig := syscall.SIGINT
		if i%2 == 1 {
			sig = syscall.SIGTERM
		}
		if code := p.stop(t, sig, 8*time.Second); code != 0 {
			t.Errorf("%s exited with %d after %s, want 0", p.name, code, sig)
		}
		if !strings.Contains(p.stdout.String(), "meshdemo: stopped cleanly") {
			t.Errorf("%s did not report a clean stop:\n%s", p.name, p.stdout.String())
		}
	}
}

// TestKilledWorkerLeasesMoveToAnotherWorker SIGKILLs a worker holding leases:
// they expire, lease-health shows it unhealthy, and another worker completes
// the items it held.
func TestKilledWorkerLeasesMoveToAnotherWorker(t *testing.T) {
	m := newMesh(t)
	startDispatcher(t, m, "--meshDemo:leaseDurationSeconds=2", "--meshDemo:heartbeatIntervalSeconds=0.5")
	m.startRole(t, "seeder", "--meshDemo:roles=seeder", "--meshDemo:seederIntervalSeconds=0.2")
	// Worker a works slowly, so it holds its leases when it is killed.
	wa := m.startRole(t, "worker-a", "--meshDemo:roles=worker", "--meshDemo:workerPeerId=mesh-worker-a",
		"--meshDemo:workerProcessingSeconds=60", "--meshDemo:workerConcurrency=3")

	// Lease-health lists a lease as soon as the dispatcher grants it to a
	// waiting long-poll, but the worker receives it only once the grant is
	// committed to storage (an fsync). A worker killed in between never gets
	// that lease, and the dispatcher gives it back (LeaseReleased) instead of
	// letting it expire. So the leases this test follows are the ones
	// worker-a has in hand by its own count: lease-health lists the same
	// three before and after worker-a reports three leases in hand (all its
	// slots busy, no lease call open), so each was granted, and delivered,
	// before that.
	waMetrics := wa.metricsURL(t)
	var held []resourcelease.OwnershipToken
	eventually(t, 30*time.Second, "mesh-worker-a to hold 3 leases, received by it", func() bool {
		before, ok := leasesOf(m.base, "mesh-worker-a")
		if !ok || len(before) != 3 {
			return false
		}
		if n, ok := leasesInHand(waMetrics, "mesh-worker-a"); !ok || n != 3 {
			return false
		}
		after, ok := leasesOf(m.base, "mesh-worker-a")
		if !ok || !sameTokens(before, after) {
			return false
		}
		held = after
		return true
	})
	wa.kill()

	wb := m.startRole(t, "worker-b", "--meshDemo:roles=worker", "--meshDemo:workerPeerId=mesh-worker-b",
		"--meshDemo:workerProcessingSeconds=0.05", "--meshDemo:workerFailureRate=0")
	eventually(t, 40*time.Second, "mesh-worker-a unhealthy and its items completed by mesh-worker-b", func() bool {
		var h peerHealth
		if !getJSON(m.base+"/demo/lease-health", &h) {
			return false
		}
		healthy, _, found := h.peer("mesh-worker-a")
		if !found || healthy {
			return false
		}
		expired := map[int64]bool{}
		doneByB := map[int64]bool{}
		for _, e := range readAllEvents(t, m.base) {
			switch {
			case e.EventType == resourcelease.EventLeaseExpired && e.Ownership != nil:
				expired[e.Ownership.SequenceID] = true
			case e.EventType == resourcelease.EventCompleted && e.PeerID == "mesh-worker-b" && e.Ownership != nil:
				doneByB[e.Ownership.SequenceID] = true
			}
		}
		for _, tok := range held {
			if !expired[tok.SequenceID] || !doneByB[tok.SequenceID] {
				return false
			}
		}
		return true
	})
	var h peerHealth
	getJSON(m.base+"/demo/lease-health", &h)
	for _, p := range h.Peers {
		if p.PeerID == "mesh-worker-a" && (p.LastDisconnect == nil || p.LastDisconnect.Reason == "") {
			t.Errorf("mesh-worker-a has no last disconnect: %+v", p)
		}
	}
	if code := wb.stop(t, syscall.SIGINT, 8*time.Second); code != 0 {
		t.Errorf("worker-b exit code %d", code)
	}
}

// TestDispatcherCrashLosesNoAcknowledgedItem SIGKILLs the dispatcher while a
// seeder, two workers and the test itself keep calling it, restarts it on the
// same data directory and ports, and checks that the workers reconnect by
// themselves and that every acknowledged enqueue is completed exactly once
// (or dead-lettered), never lost.
func TestDispatcherCrashLosesNoAcknowledgedItem(t *testing.T) {
	m := newMesh(t)
	dispArgs := []string{"--meshDemo:leaseDurationSeconds=3", "--meshDemo:heartbeatIntervalSeconds=0.5"}
	startDispatcher(t, m, dispArgs...)
	seeder := m.startRole(t, "seeder", "--meshDemo:roles=seeder", "--meshDemo:seederIntervalSeconds=0.05")
	m.startRole(t, "worker-a", "--meshDemo:roles=worker", "--meshDemo:workerPeerId=mesh-worker-a", "--meshDemo:workerProcessingSeconds=0.1", "--meshDemo:workerConcurrency=2")
	m.startRole(t, "worker-b", "--meshDemo:roles=worker", "--meshDemo:workerPeerId=mesh-worker-b", "--meshDemo:workerProcessingSeconds=0.1", "--meshDemo:workerConcurrency=2")

	// The test is a producer too: it records what the dispatcher acknowledged.
	client, err := transport.NewClient(m.rpcURL, transport.ClientConfig{Service: "resourcelease-mesh-demo", Namespace: "resourcelease.mesh", Caller: "e2e-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	var acked []string
	enqueue := func(i int) {
		id := fmt.Sprintf("test-%04d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := client.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
			ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-test", PayloadEncoding: "application/json",
			Body: []byte(`{}`), RequestID: "e2e-" + id,
		}})
		if err == nil {
			acked = append(acked, id)
		}
	}
	i := 0
	produceFor := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); i++ {
			enqueue(i)
			time.Sleep(20 * time.Millisecond)
		}
	}
	produceFor(2 * time.Second)
	eventually(t, 30*time.Second, "both workers completing before the crash", func() bool {
		done := completedBy(readAllEvents(t, m.base))
		return done["mesh-worker-a"] > 0 && done["mesh-worker-b"] > 0
	})
	before := readAllEvents(t, m.base)
	lastBefore := before[len(before)-1].SequenceNumber

	m.disp.kill()
	produceFor(1 * time.Second) // these fail: nothing is acknowledged while it is down
	startDispatcher(t, m, dispArgs...)
	produceFor(2 * time.Second)

	eventually(t, 40*time.Second, "both workers leasing again from the restarted dispatcher", func() bool {
		leasedAfter := map[string]bool{}
		for _, e := range readAllEvents(t, m.base) {
			if e.SequenceNumber > lastBefore && e.EventType == resourcelease.EventLeaseGranted {
				leasedAfter[e.PeerID] = true
			}
		}
		return leasedAfter["mesh-worker-a"] && leasedAfter["mesh-worker-b"]
	})

	// Stop producing, let the workers drain the queue.
	if code := seeder.stop(t, syscall.SIGINT, 8*time.Second); code != 0 {
		t.Errorf("seeder exit code %d", code)
	}
	eventually(t, 60*time.Second, "the queue to drain", func() bool {
		var st resourcelease.Stats
		return getJSON(m.base+"/omnirelay/control/stats", &st) && st.PendingCount == 0 && st.ActiveLeaseCount == 0
	})

	events := readAllEvents(t, m.base)
	for k := 1; k < len(events); k++ {
		if events[k].SequenceNumber != events[k-1].SequenceNumber+1 {
			t.Fatalf("replication log has a gap: %d then %d", events[k-1].SequenceNumber, events[k].SequenceNumber)
		}
	}
	enqueues := map[string]int{} // resource id -> Enqueue events
	seqOf := map[string]int64{}  // resource id -> sequence id
	completed := map[int64]int{} // sequence id -> Completed events
	deadLettered := map[int64]bool{}
	for _, e := range events {
		seq, _ := strconv.ParseInt(e.Metadata[resourcelease.MetaSequenceID], 10, 64)
		switch e.EventType {
		case resourcelease.EventEnqueue:
			enqueues[e.Payload.ResourceID]++
			seqOf[e.Payload.ResourceID] = seq
		case resourcelease.EventCompleted:
			completed[seq]++
		case resourcelease.EventDeadLettered:
			deadLettered[seq] = true
		}
	}
	fromSeeder := seeded(seeder)
	if len(fromSeeder) < 10 || len(acked) < 10 {
		t.Fatalf("too little traffic: seeder %d, test %d acknowledged enqueues", len(fromSeeder), len(acked))
	}
	all := slices.Concat(fromSeeder, acked)
	for _, id := range all {
		seq := seqOf[id]
		switch {
		case enqueues[id] != 1:
			t.Errorf("%s: %d Enqueue events, want exactly 1", id, enqueues[id])
		case completed[seq] != 1 && !deadLettered[seq]:
			t.Errorf("%s (sequence %d): completed %d times and not dead-lettered: lost", id, seq, completed[seq])
		}
	}
	t.Logf("checked %d acknowledged items across the crash (seeder %d, test %d); %d events", len(all), len(fromSeeder), len(acked), len(events))
}

// TestConfigMistakesExitTwo runs the binary with configuration mistakes: each
// prints one line naming the key and the bad value and exits with code 2.
func TestConfigMistakesExitTwo(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"diagnostics without dispatcher", []string{"--", "--meshDemo:roles=diagnostics,seeder"}, []string{"meshDemo:roles", `"diagnostics,seeder"`}},
		{"unknown role", []string{"-roles", "dispatcher,janitor"}, []string{"meshDemo:roles", `"janitor"`}},
		{"unparsable value", []string{"--meshDemo:leaseDurationSeconds=soon"}, []string{"meshDemo:leaseDurationSeconds", `"soon"`}},
		{"unusable address", []string{"--meshDemo:rpcUrl=http://127.0.0.1:99999"}, []string{"meshDemo:rpcUrl", `"http://127.0.0.1:99999"`}},
		{"unknown key", []string{"--meshDemo:colour=blue"}, []string{"meshDemo:colour", "unknown key"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, "meshdemo", t.TempDir(), tc.args...)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				t.Fatal("the demo did not exit")
			}
			if code := p.cmd.ProcessState.ExitCode(); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			stderr := strings.TrimRight(p.stderr.String(), "\n")
			if strings.Count(stderr, "\n") != 0 || stderr == "" {
				t.Errorf("stderr is not one line: %q", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
		})
	}
}
