package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/app"
	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// httpClient keeps no idle connections, so no goroutine outlives a test.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// syncBuffer is an io.Writer safe for the node's concurrent output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is a node started by Main.Run in a goroutine.
type running struct {
	node   *app.Node
	stdout *syncBuffer
	stderr *syncBuffer
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned
	err    error         // Run's result, once done is closed
}

// stop cancels the node and returns Run's error, failing if it takes long.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return within 15s of cancellation")
		return nil
	}
}

// start runs Main.Run with args (plus loopback free ports unless given) in dir.
func start(t *testing.T, dir string, args ...string) *running {
	t.Helper()
	r := &running{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	started := make(chan *app.Node, 1)
	m := &app.Main{Stdout: r.stdout, Stderr: r.stderr, Dir: dir, Started: func(n *app.Node) { started <- n }}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.err = m.Run(ctx, args)
		close(r.done)
	}()
	select {
	case r.node = <-started:
	case <-r.done:
		cancel()
		t.Fatalf("Run returned before starting: %v\nstderr:\n%s", r.err, r.stderr)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("node did not start within 30s")
	}
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: decoding: %v", url, err)
		}
	}
	return resp.StatusCode
}

func getText(t *testing.T, url string) string {
	t.Helper()
	resp, err := httpClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// eventually polls cond every 50ms until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type leaseHealth struct {
	Peers []struct {
		PeerID       string                         `json:"peerId"`
		IsHealthy    bool                           `json:"isHealthy"`
		ActiveLeases []resourcelease.OwnershipToken `json:"activeLeases"`
	} `json:"peers"`
}

type snapshot struct {
	Stats  resourcelease.Stats `json:"stats"`
	Totals struct {
		Enqueued, Completed, Failed int64
	} `json:"totals"`
}

func fastArgs(extra ...string) []string {
	return append([]string{
		"--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=http://127.0.0.1:0",
		"-seeder-interval-seconds=0.05", "-worker-processing-seconds=0.01", "-heartbeat-interval-seconds=0.5",
	}, extra...)
}

func TestAllRolesInOneProcess(t *testing.T) {
	for _, storage := range []string{"sqlite", "memory"} {
		t.Run(storage, func(t *testing.T) {
			dir := t.TempDir()
			r := start(t, dir, fastArgs("-storage="+storage, "-data-dir="+dir+"/data")...)
			base := r.node.HTTPURLs()[0]

			eventually(t, 20*time.Second, "both workers to complete items", func() bool {
				var s snapshot
				getJSON(t, base+"/demo/snapshot", &s)
				var lh leaseHealth
				getJSON(t, base+"/demo/lease-health", &lh)
				return s.Totals.Completed >= 5 && len(lh.Peers) == 2
			})
			var lh leaseHealth
			getJSON(t, base+"/demo/lease-health", &lh)
			for i, want := range []string{"mesh-worker-a", "mesh-worker-b"} {
				if lh.Peers[i].PeerID != want || !lh.Peers[i].IsHealthy {
					t.Errorf("peer %d: got %+v, want healthy %s", i, lh.Peers[i], want)
				}
			}
			// The status line carries the queue, backpressure and peer health.
			line := r.node.StatusLine(context.Background())
			for _, w := range []string{"pending=", "backpressure=", "peers: eligible=2 unhealthy=0", "mesh-worker-a: completed="} {
				if !strings.Contains(line, w) {
					t.Errorf("status line lacks %q: %s", w, line)
				}
			}
			var events []resourcelease.Event
			getJSON(t, base+"/demo/replication", &events)
			if len(events) == 0 || len(events) > 32 {
				t.Fatalf("replication: got %d events, want 1..32", len(events))
			}
			for i := 1; i < len(events); i++ {
				if events[i].SequenceNumber <= events[i-1].SequenceNumber {
					t.Fatalf("replication not oldest first: %d then %d", events[i-1].SequenceNumber, events[i].SequenceNumber)
				}
			}
			if err := r.stop(t); err != nil {
				t.Fatalf("Run: %v", err)
			}
			out := r.stdout.String()
			for _, w := range []string{"RPC endpoint", "Diagnostics UI", "meshdemo: stopped cleanly", "procedures resourcelease.mesh::*"} {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			if storage == "sqlite" && !strings.Contains(out, "replication.db") {
				t.Errorf("banner does not name replication.db:\n%s", out)
			}
		})
	}
}

func TestMetricsOfEveryRole(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir, fastArgs("-storage=memory")...)
	base := r.node.HTTPURLs()[0]
	want := []string{
		"resourcelease_pending_items", "resourcelease_active_leases", "resourcelease_completed_total",
		"rpc_requests_total", "rpc_request_duration_seconds", "rpc_client_requests_total",
		"peerhealth_peers_healthy", "backpressure_active", "replication_events_total",
		"meshdemo_seeder_enqueued_total", `meshdemo_worker_completed_total{peer="mesh-worker-a"}`,
		"go_goroutines",
	}
	eventually(t, 20*time.Second, "metrics of every role", func() bool {
		body := getText(t, base+"/metrics")
		for _, w := range want {
			if !strings.Contains(body, w) {
				return false
			}
		}
		return true
	})
	// The RPC port serves /metrics and the control plane too.
	rpcBase := strings.TrimSuffix(r.node.RPCURL(), "/yarpc/v1")
	if body := getText(t, rpcBase+"/metrics"); !strings.Contains(body, "resourcelease_pending_items") {
		t.Errorf("RPC port /metrics lacks the dispatcher's metrics")
	}
	if code := getJSON(t, rpcBase+"/omnirelay/control/stats", nil); code != 200 {
		t.Errorf("RPC port control stats: got %d, want 200", code)
	}
}

func TestConfigErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyURL := "http://" + busy.Addr().String()
	cases := []struct {
		name  string
		args  []string
		field string
	}{
		{"diagnostics without dispatcher", []string{"--meshDemo:roles=diagnostics"}, "meshDemo:roles"},
		{"unknown role", []string{"-roles=janitor"}, "meshDemo:roles"},
		{"unparsable value", []string{"--meshDemo:capacity=many"}, "meshDemo:capacity"},
		{"unknown key", []string{"--meshDemo:colour=blue"}, "meshDemo:colour"},
		{"rpc address in use", []string{"--meshDemo:rpcUrl=" + busyURL, "--urls=http://127.0.0.1:0"}, "meshDemo:rpcUrl"},
		{"diagnostics address in use", []string{"--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=" + busyURL}, "urls"},
		{"rpc path under the control plane", []string{"--meshDemo:rpcUrl=http://127.0.0.1:0/omnirelay/control/", "--urls=http://127.0.0.1:0", "-storage=memory"}, "meshDemo:rpcUrl"},
		{"rpc path is metrics", []string{"--meshDemo:rpcUrl=http://127.0.0.1:0/metrics", "--urls=http://127.0.0.1:0", "-storage=memory"}, "meshDemo:rpcUrl"},
		{"sub-nanosecond seeder interval", []string{"--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=http://127.0.0.1:0", "-storage=memory", "--meshDemo:seederIntervalSeconds=0.0000000001"}, "meshDemo:seederIntervalSeconds"},
		{"capacity below high watermark", []string{"--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=http://127.0.0.1:0", "-storage=memory", "--meshDemo:capacity=8", "--meshDemo:highWatermark=16"}, "meshDemo:capacity"},
		{"unresolvable host", []string{"--meshDemo:rpcUrl=http://no-such-host.invalid:7420", "--urls=http://127.0.0.1:0"}, "meshDemo:rpcUrl"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb syncBuffer
			m := &app.Main{Stdout: &out, Stderr: &errb, Dir: t.TempDir()}
			err := m.Run(context.Background(), tc.args)
			var cve *config.ConfigValidationError
			if !errors.As(err, &cve) || cve.Field != tc.field {
				t.Fatalf("got %v, want a ConfigValidationError for %s", err, tc.field)
			}
			if code := app.ExitCode(err); code != 2 {
				t.Errorf("exit code: got %d, want 2", code)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestExitCodes(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{config.ErrHelp, 0},
		{context.Canceled, 0},
		{&config.ConfigValidationError{Field: "x", Err: errors.New("bad")}, 2},
		{fmt.Errorf("wrapped: %w", &config.ConfigValidationError{Field: "x", Err: errors.New("bad")}), 2},
		{errors.New("disk on fire"), 1},
	}
	for _, tc := range cases {
		if got := app.ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v): got %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestHelp(t *testing.T) {
	var out syncBuffer
	m := &app.Main{Stdout: &out, Stderr: io.Discard, Dir: t.TempDir()}
	err := m.Run(context.Background(), []string{"-h"})
	if app.ExitCode(err) != 0 || !strings.Contains(out.String(), "meshDemo:workerPeerId") {
		t.Fatalf("got %v and usage %q", err, out.String())
	}
}

func TestControlTokenGuardsDestructiveEndpoints(t *testing.T) {
	r := start(t, t.TempDir(), fastArgs("-storage=memory", "-control-token=s3cret", "-roles=dispatcher,diagnostics")...)
	base := r.node.HTTPURLs()[0]
	post := func(token string) int {
		req, _ := http.NewRequest("POST", base+"/omnirelay/control/drain", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		token string
		want  int
	}{{"", 401}, {"wrong", 401}, {"s3cret", 200}}
	for _, tc := range cases {
		if got := post(tc.token); got != tc.want {
			t.Errorf("drain with token %q: got %d, want %d", tc.token, got, tc.want)
		}
	}
	// Reads stay open.
	if code := getJSON(t, base+"/omnirelay/control/peers", nil); code != 200 {
		t.Errorf("peers: got %d, want 200", code)
	}
}

// TestWorkerSurvivesDispatcherAbsence starts a worker-only node before any
// dispatcher exists, then a dispatcher on the port it dials: the worker
// connects by itself and completes the items; stopping the worker while it
// holds leases requeues them at once.
func TestWorkerSurvivesDispatcherAbsence(t *testing.T) {
	port := freePort(t)
	rpcURL := fmt.Sprintf("http://127.0.0.1:%d", port)
	w := start(t, t.TempDir(), "-roles=worker", "-rpc-url="+rpcURL, "-urls=http://127.0.0.1:0", "-worker-peer-id=w1",
		"-worker-processing-seconds=0.01", "-worker-failure-rate=0")
	// The worker's own /metrics work while the dispatcher is away.
	wbase := w.node.HTTPURLs()[0]
	eventually(t, 10*time.Second, "worker errors while the dispatcher is away", func() bool {
		return strings.Contains(getText(t, wbase+"/metrics"), `rpc_client_requests_total{procedure="resourcelease.mesh::lease",status="unavailable"}`)
	})
	if line := w.node.StatusLine(context.Background()); !strings.Contains(line, "dispatcher unreachable") {
		t.Errorf("status line: %q", line)
	}

	d := start(t, t.TempDir(), "-roles=dispatcher,diagnostics,seeder", "-rpc-url="+rpcURL, "-urls=http://127.0.0.1:0",
		"-storage=memory", "-seeder-interval-seconds=0.05")
	base := d.node.HTTPURLs()[0]
	eventually(t, 20*time.Second, "w1 to complete items", func() bool {
		var s snapshot
		getJSON(t, base+"/demo/snapshot", &s)
		return s.Totals.Completed >= 3
	})

	// A slow worker holds leases; stopping it requeues them without waiting
	// for expiry (the lease is 30s).
	slow := start(t, t.TempDir(), "-roles=worker", "-rpc-url="+rpcURL, "-urls=http://127.0.0.1:0", "-worker-peer-id=slow",
		"-worker-processing-seconds=60", "-worker-concurrency=2")
	if err := w.stop(t); err != nil {
		t.Fatalf("worker w1: %v", err)
	}
	eventually(t, 10*time.Second, "the slow worker to hold leases", func() bool {
		var lh leaseHealth
		getJSON(t, base+"/demo/lease-health", &lh)
		for _, p := range lh.Peers {
			if p.PeerID == "slow" && len(p.ActiveLeases) == 2 {
				return true
			}
		}
		return false
	})
	stopped := time.Now()
	if err := slow.stop(t); err != nil {
		t.Fatalf("slow worker: %v", err)
	}
	if d := time.Since(stopped); d > 5*time.Second {
		t.Errorf("slow worker took %s to stop", d)
	}
	var s snapshot
	getJSON(t, base+"/demo/snapshot", &s)
	if s.Stats.ActiveLeaseCount != 0 {
		t.Errorf("after the worker stopped: %d active leases, want 0 (released)", s.Stats.ActiveLeaseCount)
	}
	if !strings.Contains(slow.stderr.String(), "lease released at shutdown") {
		t.Errorf("no release at shutdown in the worker's log:\n%s", slow.stderr)
	}
}

// TestStartTurnsRouteConflictIntoError bypasses config validation with an RPC
// path that conflicts with the control plane: Start must return a one-line
// configuration error (not panic) and release everything it had opened,
// SQLite storage included.
func TestStartTurnsRouteConflictIntoError(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Load(config.Input{Dir: dir, Args: []string{
		"--meshDemo:roles=dispatcher", "--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=http://127.0.0.1:0",
		"-storage=sqlite", "-data-dir=" + dir + "/data",
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.RPCPath = control.DefaultPrefix + "/"
	before := goleak.IgnoreCurrent()
	var n *app.Node
	func() {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("Start panicked: %v", p)
			}
		}()
		n, err = app.Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	if n != nil {
		n.Close()
		t.Fatal("Start succeeded with a conflicting RPC path")
	}
	var cve *config.ConfigValidationError
	if !errors.As(err, &cve) || cve.Field != "meshDemo:rpcUrl" {
		t.Fatalf("got %v, want a ConfigValidationError for meshDemo:rpcUrl", err)
	}
	if code := app.ExitCode(err); code != 2 {
		t.Errorf("exit code: got %d, want 2", code)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error spans lines: %q", err)
	}
	// Storage and listeners were closed: nothing Start began is still running.
	goleak.VerifyNone(t, before)
}

// TestClientRolesSpreadOverDispatchers: with rpcClientUrl a list, the
// seeder enqueues through every dispatcher in it and carries on with the
// rest when one stops; a worker given a dead dispatcher beside a live one
// works through the live one. (Dispatchers on memory storage each have a
// queue of their own, so a worker is not run over two of them: its
// settles would reach the queue that did not lease. On Postgres they share
// one.)
func TestClientRolesSpreadOverDispatchers(t *testing.T) {
	var ds []*running
	var urls []string
	for range 2 {
		d := start(t, t.TempDir(), "-roles=dispatcher,diagnostics", "--meshDemo:rpcUrl=http://127.0.0.1:0", "-urls=http://127.0.0.1:0", "-storage=memory")
		ds = append(ds, d)
		urls = append(urls, d.node.RPCURL())
	}
	totals := func(d *running) (enq, done int64) {
		var s snapshot
		getJSON(t, d.node.HTTPURLs()[0]+"/demo/snapshot", &s)
		return s.Totals.Enqueued, s.Totals.Completed
	}
	start(t, t.TempDir(), "-roles=seeder", "-rpc-client-url="+strings.Join(urls, ","), "-urls=http://127.0.0.1:0", "-seeder-interval-seconds=0.02")
	eventually(t, 20*time.Second, "both dispatchers to get enqueues", func() bool {
		e0, _ := totals(ds[0])
		e1, _ := totals(ds[1])
		return e0 >= 3 && e1 >= 3
	})
	dead := fmt.Sprintf("http://127.0.0.1:%d/yarpc/v1", freePort(t))
	start(t, t.TempDir(), "-roles=worker", fmt.Sprintf(`-rpc-client-url=["%s","%s"]`, dead, urls[1]), "-urls=http://127.0.0.1:0",
		"-worker-peer-id=w1", "-worker-processing-seconds=0.005", "-worker-failure-rate=0")
	eventually(t, 20*time.Second, "the worker to complete through the live dispatcher", func() bool {
		_, c := totals(ds[1])
		return c >= 5
	})
	if err := ds[0].stop(t); err != nil {
		t.Fatalf("dispatcher 0: %v", err)
	}
	e1, c1 := totals(ds[1])
	eventually(t, 20*time.Second, "the other dispatcher to carry on", func() bool {
		e, c := totals(ds[1])
		return e >= e1+10 && c >= c1+10
	})
}
