package main_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// lastResponse is an http.RoundTripper that remembers the status and the
// Retry-After header of the last response, so a test can see the header a
// transport.Client does not surface. It keeps no idle connections, so
// nothing outlives the test.
type lastResponse struct {
	rt         *http.Transport
	mu         sync.Mutex
	status     int
	retryAfter string
}

func newLastResponse() *lastResponse {
	return &lastResponse{rt: &http.Transport{DisableKeepAlives: true}}
}

func (l *lastResponse) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(r)
	if err == nil {
		l.mu.Lock()
		l.status, l.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
		l.mu.Unlock()
	}
	return resp, err
}

func (l *lastResponse) last() (status int, retryAfter string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status, l.retryAfter
}

// demoClient returns a client of the demo's RPC endpoint whose responses rec
// records (nil: a plain client).
func demoClient(t *testing.T, m *mesh, caller string, rec *lastResponse) *transport.Client {
	t.Helper()
	opts := transport.ClientConfig{Service: "resourcelease-mesh-demo", Namespace: "resourcelease.mesh", Caller: caller}
	if rec != nil {
		opts.HTTPClient = &http.Client{Transport: rec}
	}
	c, err := transport.NewClient(m.rpcURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func enqueueItems(t *testing.T, c *transport.Client, prefix string, n int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("%s-%02d", prefix, i)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
			ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-e2e", PayloadEncoding: "application/json", Body: []byte(`{}`),
		}})
		cancel()
		if err != nil {
			t.Fatalf("enqueue %s: %v", id, err)
		}
	}
}

// leaseOne leases an item for peer, which must be served one.
func leaseOne(t *testing.T, c *transport.Client, peer string) *resourcelease.Lease {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: peer, Wait: 2000 * time.Millisecond})
	if err != nil {
		t.Fatalf("lease for %s: %v", peer, err)
	}
	if l == nil {
		t.Fatalf("lease for %s: nothing to lease", peer)
	}
	return l
}

// peerState reads peer's entry of lease-health.
func peerState(base, peer string) (breaker string, expiries int, healthy bool, disconnected bool, ok bool) {
	var h peerHealth
	if !getJSON(base+"/demo/lease-health", &h) {
		return "", 0, false, false, false
	}
	for _, p := range h.Peers {
		if p.PeerID == peer {
			return p.Breaker, p.ConsecutiveExpiries, p.IsHealthy, p.LastDisconnect != nil, true
		}
	}
	return "", 0, false, false, false
}

// TestPoisonItemDoesNotRefuseWorker runs the demo's dispatcher with its
// defaults (refuseUnhealthyPeers on): a worker dead-letters a poison item
// with fail requeue:false over the RPC, then leases and completes 40 more
// items, and none of those leases is refused.
func TestPoisonItemDoesNotRefuseWorker(t *testing.T) {
	m := newMesh(t)
	startDispatcher(t, m)
	producer := demoClient(t, m, "e2e-producer", nil)
	worker := demoClient(t, m, "e2e-worker", nil)
	const peer = "e2e-poison-worker"
	enqueueItems(t, producer, "poison", 1)
	enqueueItems(t, producer, "good", 40)

	ctx := ctxFor(t, time.Minute)
	l := leaseOne(t, worker, peer)
	if l.Payload.ResourceID != "poison-00" {
		t.Fatalf("first lease is %s, want the poison item", l.Payload.ResourceID)
	}
	if err := worker.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, DeadLetter: true, Reason: "cannot parse", ErrorCode: "e2e.poison"}); err != nil {
		t.Fatalf("fail: %v", err)
	}
	dl, err := worker.DeadLetters(ctx, &resourcelease.DeadLettersRequest{})
	if err != nil || len(dl.Items) != 1 || dl.Items[0].Payload.ResourceID != "poison-00" {
		t.Fatalf("dead letters = %+v, %v; want the poison item", dl, err)
	}

	for i := range 40 {
		l := leaseOne(t, worker, peer) // a refusal fails the test here
		if err := worker.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}); err != nil {
			t.Fatalf("complete %d (%s): %v", i, l.Payload.ResourceID, err)
		}
	}
	st, err := worker.Stats(ctx, &resourcelease.StatsRequest{})
	if err != nil || st.PendingCount != 0 || st.ActiveLeaseCount != 0 || st.DeadLetterCount != 1 {
		t.Fatalf("stats = %+v, %v; want 0 pending, 0 active, 1 dead letter", st, err)
	}
	done := completedBy(readAllEvents(t, m.base))
	if done[peer] != 40 {
		t.Errorf("%s completed %d items, want 40", peer, done[peer])
	}
	breaker, expiries, healthy, disconnected, ok := peerState(m.base, peer)
	if !ok || breaker != "closed" || expiries != 0 || !healthy || disconnected {
		t.Errorf("lease-health of %s: breaker %q, %d expiries, healthy %v, disconnected %v (found %v); want closed, 0, true, false",
			peer, breaker, expiries, healthy, disconnected, ok)
	}
}

// TestExpiringPeerIsRefusedThenRecovers runs the demo's dispatcher with a
// short lease and cool-down: a peer that lets three leases in a row expire
// is refused (HTTP 400, failed-precondition, peer_ineligible, Retry-After) while
// another peer is served; after the cool-down it gets one lease, whose
// heartbeat closes the breaker, and it is served again.
func TestExpiringPeerIsRefusedThenRecovers(t *testing.T) {
	m := newMesh(t)
	startDispatcher(t, m, "--meshDemo:leaseDurationSeconds=1", "--meshDemo:heartbeatIntervalSeconds=0.25",
		"--meshDemo:breakerCooldownSeconds=5")
	producer := demoClient(t, m, "e2e-producer", nil)
	rec := newLastResponse()
	flaky := demoClient(t, m, "e2e-flaky", rec)
	steady := demoClient(t, m, "e2e-steady", nil)
	const peer = "e2e-flaky"
	enqueueItems(t, producer, "item", 10)
	ctx := ctxFor(t, 2*time.Minute)

	for i := 1; i <= 3; i++ {
		leaseOne(t, flaky, peer) // the first two expiries are never refused
		eventually(t, 20*time.Second, fmt.Sprintf("expiry %d of %s in lease-health", i, peer), func() bool {
			_, expiries, _, _, _ := peerState(m.base, peer)
			return expiries == i
		})
	}

	_, err := flaky.Lease(ctx, &resourcelease.LeaseRequest{PeerID: peer})
	var e *resourcelease.Error
	if !errors.As(err, &e) || !errors.Is(err, resourcelease.ErrPeerIneligible) || e.Status != resourcelease.StatusFailedPrecondition {
		t.Fatalf("lease after three expiries: %v; want failed-precondition / %s", err, resourcelease.CodePeerIneligible)
	}
	status, retryAfter := rec.last()
	secs, perr := strconv.Atoi(retryAfter)
	if status != http.StatusBadRequest || perr != nil || secs < 1 || secs > 5 {
		t.Fatalf("refusal: HTTP %d, Retry-After %q; want 400 (yarpc's failed-precondition) and 1..5 seconds", status, retryAfter)
	}
	if e.Metadata[resourcelease.MetadataRetryAfterSeconds] != retryAfter {
		t.Errorf("metadata %v, want %s=%s", e.Metadata, resourcelease.MetadataRetryAfterSeconds, retryAfter)
	}
	if breaker, _, healthy, _, _ := peerState(m.base, peer); breaker != "open" || healthy {
		t.Errorf("lease-health of %s: breaker %q, healthy %v; want open, false", peer, breaker, healthy)
	}

	// Another peer is served meanwhile.
	l := leaseOne(t, steady, "e2e-steady")
	if err := steady.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}); err != nil {
		t.Fatalf("steady complete: %v", err)
	}

	// After the cool-down one lease is let through; its heartbeat closes
	// the breaker.
	var trial *resourcelease.Lease
	eventually(t, 20*time.Second, "the cool-down to end and "+peer+" to get a lease", func() bool {
		l, err := flaky.Lease(ctx, &resourcelease.LeaseRequest{PeerID: peer, Wait: 500 * time.Millisecond})
		switch {
		case errors.Is(err, resourcelease.ErrPeerIneligible):
			return false
		case err != nil:
			t.Fatalf("lease during the cool-down: %v", err)
		}
		trial = l
		return l != nil
	})
	if _, err := flaky.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: trial.OwnershipToken}); err != nil {
		t.Fatalf("heartbeat of the trial lease: %v", err)
	}
	if breaker, expiries, _, _, _ := peerState(m.base, peer); breaker != "closed" || expiries != 0 {
		t.Errorf("after the trial's heartbeat: breaker %q, %d expiries; want closed, 0", breaker, expiries)
	}
	if err := flaky.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: trial.OwnershipToken}); err != nil {
		t.Fatalf("complete the trial lease: %v", err)
	}
	l = leaseOne(t, flaky, peer)
	if err := flaky.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}); err != nil {
		t.Fatalf("complete after recovery: %v", err)
	}
	if breaker, _, healthy, _, _ := peerState(m.base, peer); breaker != "closed" || !healthy {
		t.Errorf("after recovery: breaker %q, healthy %v; want closed, true", breaker, healthy)
	}
}
