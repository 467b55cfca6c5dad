package main_test

// End-to-end tests of the mesh on PostgreSQL: real dispatcher processes of
// the demo binary on loopback, one real PostgreSQL server (internal/pgtest),
// and producers and workers in the test that dial each dispatcher by its
// own URL.

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// pgDispatcher is one dispatcher process on the shared database.
type pgDispatcher struct {
	name   string
	pgURL  string
	rpcURL string // http://127.0.0.1:port/yarpc/v1
	base   string // http://127.0.0.1:port: the control plane, /readyz, /healthz
	p      *proc
	extra  []string
}

// pgDispatcherArgs are the demo's flags for a dispatcher-only process on
// postgres, with short leases so that expiries happen within a test.
func (d *pgDispatcher) args(rpc string) []string {
	return append([]string{"--",
		"--meshDemo:roles=dispatcher",
		"--meshDemo:rpcUrl=" + rpc,
		"--meshDemo:storage=postgres",
		"--meshDemo:postgresUrl=" + d.pgURL,
		"--meshDemo:leaseDurationSeconds=2",
		"--meshDemo:heartbeatIntervalSeconds=0.5",
		"--meshDemo:maxDeliveryAttempts=50",
		"--meshDemo:refuseUnhealthyPeers=false",
		"--meshDemo:capacity=100000",
		"--meshDemo:highWatermark=100000",
	}, d.extra...)
}

// start starts (or restarts, on the same port) the dispatcher.
func (d *pgDispatcher) start(t *testing.T) {
	t.Helper()
	rpc := "http://127.0.0.1:0"
	if d.base != "" {
		rpc = d.base
	}
	d.p = startProc(t, d.name, t.TempDir(), d.args(rpc)...)
}

// ready waits for the banner (first start) and for /readyz.
func (d *pgDispatcher) ready(t *testing.T) {
	t.Helper()
	if d.rpcURL == "" {
		d.rpcURL = d.p.bannerURL(t, "RPC endpoint")
		d.base = strings.TrimSuffix(d.rpcURL, "/yarpc/v1")
	}
	eventually(t, 60*time.Second, d.name+" /readyz", func() bool {
		if d.p.exited() {
			t.Fatalf("%s exited: %v\n%s", d.name, d.p.err, tail(d.p.stderr.String(), 4096))
		}
		status, _, ok := get(d.base + "/readyz")
		return ok && status == 200
	})
}

func (d *pgDispatcher) client(t *testing.T, caller string) *transport.Client {
	t.Helper()
	c, err := transport.NewClient(d.rpcURL, transport.ClientConfig{
		Service: "resourcelease-mesh-demo", Namespace: "resourcelease.mesh", Caller: caller, Timeout: 15 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startMesh starts n dispatchers at once on an empty database, each with
// the extra flags.
func startMesh(t *testing.T, pgURL string, n int, extra ...string) []*pgDispatcher {
	t.Helper()
	ds := make([]*pgDispatcher, n)
	for i := range ds {
		ds[i] = &pgDispatcher{name: fmt.Sprintf("dispatcher-%c", 'a'+i), pgURL: pgURL, extra: extra}
		ds[i].start(t) // no wait in between: their migrations race
	}
	for _, d := range ds {
		d.ready(t)
	}
	return ds
}

func orderItem(id string) resourcelease.Item {
	return resourcelease.Item{ResourceType: "demo.order", ResourceID: id, PartitionKey: "tenant-1", PayloadEncoding: "application/json",
		Body: []byte(`{"id":"` + id + `"}`), RequestID: "req-" + id}
}

// TestPostgresStartupErrors: a missing, malformed or unreachable database is
// one line on stderr and exit status 2, never a stack trace, never the
// password.
func TestPostgresStartupErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close() // nothing listens there now
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no url", []string{"--meshDemo:storage=postgres"}, "postgresUrl"},
		{"not postgres", []string{"--meshDemo:storage=postgres", "--meshDemo:postgresUrl=http://u:hunter2@db/x"}, "postgresUrl"},
		{"unreachable", []string{"--meshDemo:storage=postgres", "--meshDemo:postgresUrl=postgres://u:hunter2@" + closed + "/x?connect_timeout=3"}, "postgresUrl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--", "--meshDemo:roles=dispatcher", "--meshDemo:rpcUrl=http://127.0.0.1:0"}, tc.args...)
			p := startProc(t, "dispatcher", t.TempDir(), args...)
			select {
			case <-p.done:
			case <-time.After(60 * time.Second):
				t.Fatal("the dispatcher did not exit")
			}
			if code := p.cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit status %d, want 2\n%s", code, p.stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(p.stderr.String()), "\n")
			last := lines[len(lines)-1]
			if !strings.HasPrefix(last, "meshdemo: config ") || !strings.Contains(last, tc.want) {
				t.Fatalf("last line %q, want a one-line config error naming %s", last, tc.want)
			}
			if s := p.stderr.String(); strings.Contains(s, "goroutine ") || strings.Contains(s, "panic") || strings.Contains(s, "hunter2") {
				t.Fatalf("stderr has a stack trace or the password:\n%s", s)
			}
		})
	}
}

// TestPostgresMesh runs three dispatcher processes on one database: started
// at once on an empty database, one queue across them (lifecycle, fencing,
// cross-dispatcher wake-up), a dispatcher SIGKILLed under load and
// restarted, PostgreSQL stopped and restarted under load; then every
// acknowledged enqueue was completed exactly once, no item had two live
// leases at once, attempts only grew, and the log is gap-free and the same
// from every dispatcher's control plane.
func TestPostgresMesh(t *testing.T) {
	srv := pgtest.NewServer(t)
	pgURL := srv.NewDatabase(t)
	ds := startMesh(t, pgURL, 3)
	a, b, c := ds[0], ds[1], ds[2]
	ca, cb, cc := a.client(t, "test"), b.client(t, "test"), c.client(t, "test")
	ctx := ctxFor(t, 5*time.Minute)
	for _, d := range ds {
		if status, body, ok := get(d.base + "/healthz"); !ok || status != 200 || strings.TrimSpace(string(body)) != "ok" {
			t.Fatalf("%s /healthz = %d %q", d.name, status, body)
		}
	}

	// Lifecycle and fencing across dispatchers: lease on A, let it
	// expire, re-lease on B, the old token refused on C.
	if _, err := ca.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ptr(orderItem("fence-1"))}); err != nil {
		t.Fatal(err)
	}
	l1, err := ca.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "silent-worker", Wait: 5 * time.Second})
	if err != nil || l1 == nil {
		t.Fatalf("lease on A: %v, %v", l1, err)
	}
	l2, err := cb.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "worker-b", Wait: 20 * time.Second})
	if err != nil || l2 == nil {
		t.Fatalf("re-lease on B after the expiry: %v, %v", l2, err)
	}
	if l2.SequenceID != l1.SequenceID || l2.Attempt != l1.Attempt+1 {
		t.Fatalf("B leased %+v, want item %d at attempt %d", l2.OwnershipToken, l1.SequenceID, l1.Attempt+1)
	}
	if err := cc.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l1.OwnershipToken}); !errors.Is(err, resourcelease.ErrUnknownToken) {
		t.Fatalf("the expired token on C: %v, want unknown_token", err)
	}
	if err := cc.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l2.OwnershipToken}); err != nil {
		t.Fatalf("B's token on C: %v", err)
	}
	// B's peer health saw the expiry of a lease granted through A.
	eventually(t, 10*time.Second, "B's peer health to know silent-worker's expiry", func() bool {
		var h peerHealth
		if !getJSON(b.base+"/omnirelay/control/peers", &h) {
			return false
		}
		for _, p := range h.Peers {
			if p.PeerID == "silent-worker" {
				return p.LastDisconnect != nil && p.LastDisconnect.Reason == resourcelease.DisconnectLeaseExpired
			}
		}
		return false
	})

	// An enqueue through A wakes a long-poll waiting on B.
	woke := make(chan time.Duration, 1)
	var enqueuedAt atomic.Int64
	go func() {
		l, err := cb.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "waiter-b", Wait: 30 * time.Second})
		if err != nil || l == nil {
			t.Errorf("long-poll on B: %v, %v", l, err)
			woke <- -1
			return
		}
		woke <- time.Duration(time.Now().UnixNano() - enqueuedAt.Load())
		_ = cb.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
	}()
	bMetrics := b.p.metricsURL(t)
	eventually(t, 10*time.Second, "the long-poll to wait on B (resourcelease_lease_waiters)", func() bool {
		_, body, ok := get(bMetrics)
		for _, line := range strings.Split(string(body), "\n") {
			if f := strings.Fields(line); ok && len(f) == 2 && f[0] == resourcelease.MetricLeaseWaiters && f[1] != "0" {
				return true
			}
		}
		return false
	})
	enqueuedAt.Store(time.Now().UnixNano())
	if _, err := ca.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ptr(orderItem("wake-1"))}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-woke:
		if d < 0 {
			t.FailNow()
		}
		t.Logf("an enqueue through A woke the long-poll on B after %v", d)
		if d > 900*time.Millisecond {
			t.Fatalf("the long-poll on B woke after %v: the notification did not reach it (poll fallback is 1s)", d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("an enqueue through A did not wake the long-poll on B")
	}

	// Load: producers and workers on every dispatcher; one dispatcher is
	// SIGKILLed and restarted, then PostgreSQL is stopped and restarted.
	ld := newLoad(ds, func(d *pgDispatcher, who string) *transport.Client { return d.client(t, who) })
	ld.run(ctx)
	waitCompleted := func(n int, within time.Duration) {
		t.Helper()
		eventually(t, within, fmt.Sprintf("%d completions", n), func() bool { return ld.completions.Load() >= int64(n) })
	}
	waitCompleted(30, 60*time.Second)

	b.p.kill()
	t.Log("dispatcher-b SIGKILLed under load")
	waitCompleted(int(ld.completions.Load())+20, 60*time.Second) // the others carry on
	b.start(t)
	b.ready(t)
	t.Log("dispatcher-b restarted")
	waitCompleted(int(ld.completions.Load())+20, 60*time.Second)

	if err := srv.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	t.Log("postgres stopped under load")
	eventually(t, 20*time.Second, "A's /readyz to report the database down", func() bool {
		status, _, ok := get(a.base + "/readyz")
		return ok && status == 503
	})
	if status, _, ok := get(a.base + "/healthz"); !ok || status != 200 {
		t.Fatalf("/healthz with the database down = %d, want 200 (the process is alive)", status)
	}
	time.Sleep(2 * time.Second)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Log("postgres restarted")
	for _, d := range ds {
		d.ready(t)
	}
	waitCompleted(int(ld.completions.Load())+20, 90*time.Second)
	ld.stopProducing()
	eventually(t, 120*time.Second, "every acknowledged enqueue to be completed", func() bool {
		return ld.allCompleted(ca)
	})
	if twice := ld.stop(); len(twice) > 0 {
		t.Errorf("items completed successfully more than once: %v", twice)
	}

	for _, d := range ds {
		if s := d.p.stderr.String(); !strings.Contains(s, "cannot read the queue's log") {
			t.Errorf("%s logged no line about the unreachable database", d.name)
		}
	}

	// The log: gap-free, the same from every dispatcher. The stopped
	// workers' leases still expire meanwhile, each with its event, so the
	// logs are read again until one reading of them all agrees.
	var evA []resourcelease.Event
	eventually(t, 60*time.Second, "every dispatcher to serve the same log", func() bool {
		evA = readAllEvents(t, a.base)
		for _, d := range ds[1:] {
			if ev := readAllEvents(t, d.base); !reflect.DeepEqual(ev, evA) {
				t.Logf("%s's log (%d events) differs from %s's (%d)", d.name, len(ev), a.name, len(evA))
				return false
			}
		}
		return true
	})
	for i, e := range evA {
		if e.SequenceNumber != int64(i+1) {
			t.Fatalf("event %d has sequence %d: a gap", i+1, e.SequenceNumber)
		}
	}
	checkMeshLog(t, evA, ld.acked())
	t.Logf("%d events, %d acknowledged items, %d completions (%d enqueue retries, %d settle errors)",
		len(evA), len(ld.acked()), ld.completions.Load(), ld.enqueueRetries.Load(), ld.settleErrors.Load())
}

// checkMeshLog checks the invariants on the log: every acknowledged item
// completed exactly once, never two live leases of an item at once,
// attempts never going down.
func checkMeshLog(t *testing.T, events []resourcelease.Event, acked map[int64]string) {
	t.Helper()
	type state struct {
		live      *resourcelease.OwnershipToken
		attempt   int
		completed int
	}
	items := map[int64]*state{}
	get := func(seq int64) *state {
		s := items[seq]
		if s == nil {
			s = &state{}
			items[seq] = s
		}
		return s
	}
	for _, e := range events {
		if e.Ownership == nil {
			continue
		}
		tok := *e.Ownership
		s := get(tok.SequenceID)
		switch e.EventType {
		case resourcelease.EventLeaseGranted:
			if s.live != nil {
				t.Fatalf("event %d: item %d leased (%v) while lease %v was live", e.SequenceNumber, tok.SequenceID, tok, *s.live)
			}
			if tok.Attempt < s.attempt {
				t.Fatalf("event %d: item %d attempt went down from %d to %d", e.SequenceNumber, tok.SequenceID, s.attempt, tok.Attempt)
			}
			s.live, s.attempt = &tok, tok.Attempt
		case resourcelease.EventDeadLettered:
			if s.live != nil && *s.live == tok {
				s.live = nil // an expiry on the last attempt
			}
		case resourcelease.EventCompleted, resourcelease.EventFailed, resourcelease.EventLeaseExpired, resourcelease.EventLeaseReleased:
			if s.live == nil || *s.live != tok {
				t.Fatalf("event %d: %s of %v, which was not the live lease", e.SequenceNumber, e.EventType, tok)
			}
			s.live = nil
			if e.EventType == resourcelease.EventCompleted {
				s.completed++
			}
		}
	}
	for seq, id := range acked {
		if s := items[seq]; s == nil || s.completed != 1 {
			n := 0
			if s != nil {
				n = s.completed
			}
			t.Errorf("acknowledged item %d (%s) completed %d times, want exactly once", seq, id, n)
		}
	}
}

// load runs producers and workers against every dispatcher, each dialling
// its own.
type load struct {
	ds      []*pgDispatcher
	clients map[*pgDispatcher][]*transport.Client

	mu        sync.Mutex
	ackedSeqs map[int64]string // sequence id -> resource id, of acknowledged enqueues
	okSettles map[int64]int    // successful completes answered, per item

	completions, enqueueRetries, settleErrors atomic.Int64
	producing                                 atomic.Bool
	cancel                                    context.CancelFunc
	wg                                        sync.WaitGroup
	n                                         atomic.Int64
}

func newLoad(ds []*pgDispatcher, client func(*pgDispatcher, string) *transport.Client) *load {
	l := &load{ds: ds, clients: map[*pgDispatcher][]*transport.Client{}, ackedSeqs: map[int64]string{}, okSettles: map[int64]int{}}
	for _, d := range ds {
		for _, who := range []string{"producer", "worker-1", "worker-2"} {
			l.clients[d] = append(l.clients[d], client(d, d.name+"-"+who))
		}
	}
	return l
}

func (l *load) run(ctx context.Context) {
	ctx, l.cancel = context.WithCancel(ctx)
	l.producing.Store(true)
	for _, d := range l.ds {
		cs := l.clients[d]
		l.wg.Go(func() { l.produce(ctx, cs[0]) })
		for i, c := range cs[1:] {
			peer := fmt.Sprintf("%s-worker-%d", d.name, i+1)
			l.wg.Go(func() { l.work(ctx, c, peer) })
		}
	}
}

// produce enqueues items at a steady pace, retrying each with its request
// id until it is acknowledged.
func (l *load) produce(ctx context.Context, c *transport.Client) {
	for l.producing.Load() && ctx.Err() == nil {
		id := fmt.Sprintf("load-%05d", l.n.Add(1))
		for l.producing.Load() && ctx.Err() == nil {
			resp, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ptr(orderItem(id))})
			if err == nil {
				l.mu.Lock()
				l.ackedSeqs[resp.SequenceID] = id
				l.mu.Unlock()
				break
			}
			l.enqueueRetries.Add(1)
			sleepCtx(ctx, 200*time.Millisecond)
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
}

// work leases, holds the item briefly, and completes it; a few leases are
// let expire, so expiry under load is part of the test.
func (l *load) work(ctx context.Context, c *transport.Client, peer string) {
	for ctx.Err() == nil {
		ls, err := c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: peer, Wait: time.Second})
		if err != nil {
			sleepCtx(ctx, 200*time.Millisecond)
			continue
		}
		if ls == nil {
			continue
		}
		if rand.IntN(25) == 0 {
			continue // walk away: the lease expires and the item comes back
		}
		sleepCtx(ctx, time.Duration(rand.IntN(20))*time.Millisecond)
		err = c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: ls.OwnershipToken})
		if err != nil {
			l.settleErrors.Add(1)
			continue
		}
		l.completions.Add(1)
		l.mu.Lock()
		l.okSettles[ls.SequenceID]++
		l.mu.Unlock()
	}
}

func (l *load) stopProducing() { l.producing.Store(false) }

// stop stops the producers and workers and returns the items that got
// more than one successful complete (there must be none).
func (l *load) stop() (twice []int64) {
	l.cancel()
	l.wg.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for seq, n := range l.okSettles {
		if n > 1 {
			twice = append(twice, seq)
		}
	}
	return twice
}

func (l *load) acked() map[int64]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[int64]string, len(l.ackedSeqs))
	for k, v := range l.ackedSeqs {
		out[k] = v
	}
	return out
}

// allCompleted reports whether the queue holds nothing: every acknowledged
// item has been completed.
func (l *load) allCompleted(c *transport.Client) bool {
	st, err := c.Stats(context.Background(), &resourcelease.StatsRequest{})
	return err == nil && st.PendingCount == 0 && st.ActiveLeaseCount == 0 && st.DeadLetterCount == 0
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func ptr[T any](v T) *T { return &v }

// TestPostgresDataDirectoryIgnored: with storage=postgres an explicitly
// set dataDirectory draws one warning line, and nothing is written there.
func TestPostgresDataDirectoryIgnored(t *testing.T) {
	srv := pgtest.NewServer(t)
	dir := t.TempDir()
	d := &pgDispatcher{name: "dispatcher", pgURL: srv.NewDatabase(t), extra: []string{"--meshDemo:dataDirectory=" + dir}}
	d.start(t)
	d.ready(t)
	if n := strings.Count(d.p.stderr.String(), "dataDirectory is ignored with storage=postgres"); n != 1 {
		t.Fatalf("%d warnings about dataDirectory, want 1:\n%s", n, d.p.stderr.String())
	}
	if code := d.p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("SIGTERM exit status %d, want 0\n%s", code, d.p.stderr.String())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("the ignored data directory holds %v", entries)
	}
}

// TestPostgresGracefulShutdown: a SIGTERM of a dispatcher process that
// runs workers hands their leases back before it exits, so another
// dispatcher of the mesh can lease the items at once rather than after
// the lease duration.
func TestPostgresGracefulShutdown(t *testing.T) {
	srv := pgtest.NewServer(t)
	pgURL := srv.NewDatabase(t)
	b := &pgDispatcher{name: "dispatcher-b", pgURL: pgURL}
	b.start(t)
	b.ready(t)
	a := &pgDispatcher{name: "dispatcher-a", pgURL: pgURL, extra: []string{
		"--meshDemo:roles=dispatcher,worker", "--meshDemo:leaseDurationSeconds=60", "--meshDemo:heartbeatIntervalSeconds=5",
		"--meshDemo:workerProcessingSeconds=120", "--meshDemo:workerFailureRate=0",
	}}
	a.start(t)
	a.ready(t)
	cb := b.client(t, "test")
	ctx := ctxFor(t, 2*time.Minute)
	for _, id := range []string{"slow-1", "slow-2"} {
		if _, err := cb.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ptr(orderItem(id))}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "A's two workers to hold both items", func() bool {
		st, err := cb.Stats(ctx, &resourcelease.StatsRequest{})
		return err == nil && st.ActiveLeaseCount == 2
	})
	if code := a.p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("SIGTERM exit status %d, want 0\n%s", code, a.p.stderr.String())
	}
	st, err := cb.Stats(ctx, &resourcelease.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.ActiveLeaseCount != 0 || st.PendingCount != 2 {
		t.Fatalf("after A's clean shutdown B sees %+v, want both items pending again (their leases handed back)", st)
	}
	l, err := cb.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w-b"})
	if err != nil || l == nil {
		t.Fatalf("lease on B after A stopped: %v, %v", l, err)
	}
}

// TestPostgresDemoAllRoles runs the whole demo in one process on
// PostgreSQL: the seeder's items are completed by the workers, and the
// diagnostics show the mesh (peer health, the replication view, the mesh
// metrics); a SIGTERM stops it cleanly.
func TestPostgresDemoAllRoles(t *testing.T) {
	srv := pgtest.NewServer(t)
	p := startProc(t, "demo", t.TempDir(), "--",
		"--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=http://127.0.0.1:0",
		"--meshDemo:storage=postgres", "--meshDemo:postgresUrl="+srv.NewDatabase(t),
		"--meshDemo:seederIntervalSeconds=0.05", "--meshDemo:workerProcessingSeconds=0.02")
	base := strings.TrimSuffix(p.bannerURL(t, "Diagnostics UI"), "/")
	if !strings.Contains(p.stdout.String(), "postgres://127.0.0.1") {
		t.Fatalf("the banner does not name the database:\n%s", p.stdout.String())
	}
	metric := func(body, name string) (float64, bool) {
		for _, line := range strings.Split(body, "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == name {
				var v float64
				_, err := fmt.Sscan(f[1], &v)
				return v, err == nil
			}
		}
		return 0, false
	}
	eventually(t, 60*time.Second, "completions on the demo's /metrics", func() bool {
		_, body, ok := get(base + "/metrics")
		if !ok {
			return false
		}
		done, _ := metric(string(body), "resourcelease_completed_total")
		meshDone, _ := metric(string(body), `resourcelease_mesh_events_total{type="Completed"}`)
		_, gauge := metric(string(body), "resourcelease_mesh_pending_items")
		_, age := metric(string(body), "resourcelease_oldest_ready_item_age_seconds")
		return done >= 5 && meshDone >= 5 && gauge && age
	})
	eventually(t, 30*time.Second, "mesh-worker-a healthy on /demo/lease-health", func() bool {
		var h peerHealth
		if !getJSON(base+"/demo/lease-health", &h) {
			return false
		}
		healthy, _, found := h.peer("mesh-worker-a")
		return found && healthy
	})
	var recent []resourcelease.Event
	if !getJSON(base+"/demo/replication", &recent) || len(recent) == 0 {
		t.Fatalf("/demo/replication = %v", recent)
	}
	if status, _, ok := get(base + "/"); !ok || status != 200 {
		t.Fatalf("GET / = %d", status)
	}
	if code := p.stop(t, syscall.SIGTERM, 30*time.Second); code != 0 {
		t.Fatalf("SIGTERM exit status %d, want 0\n%s", code, tail(p.stderr.String(), 4096))
	}
	if !strings.Contains(p.stdout.String(), "stopped cleanly") {
		t.Fatalf("no clean stop:\n%s", p.stdout.String())
	}
}
