package main_test

// The end-to-end harness: TestMain builds the demo binary once; each test
// starts real processes of it on free loopback ports with temporary data
// directories, and every process is killed when its test ends.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// binary is the demo built by TestMain.
var binary string

func TestMain(m *testing.M) {
	if url := os.Getenv(chaosWorkerEnv); url != "" {
		// A child of TestChaos: a worker process, not a test run.
		os.Exit(chaosWorkerMain(url))
	}
	dir, err := os.MkdirTemp("", "meshdemo-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "meshdemo")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the demo:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		// Every process waiter, browser connection and client must be gone.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// inCI reports whether the tests run in CI, where every tool must be present.
func inCI() bool { return os.Getenv("CI") == "true" }

// needTool returns the path of an external tool; without it the test is
// skipped on a developer machine and fails in CI.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if inCI() {
			t.Fatalf("%s is required in CI (apt-get install it): %v", name, err)
		}
		t.Skipf("%s not installed (CI installs it)", name)
	}
	return p
}

// artifactsDir is where tests keep screenshots and logs: $ARTIFACTS_DIR if
// set, else a temporary directory.
func artifactsDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("ARTIFACTS_DIR"); d != "" {
		d = filepath.Join(d, "meshdemo")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// lockedBuffer collects a process's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// proc is one demo process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	done   chan struct{}
	err    error
}

// startProc starts the demo in dir with args; the process is killed (with
// its group) when the test ends.
func startProc(t *testing.T, name, dir string, args ...string) *proc {
	t.Helper()
	return startExec(t, name, dir, binary, nil, args...)
}

// startExec is startProc for any executable, with env added to the
// environment.
func startExec(t *testing.T, name, dir, exe string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Dir = dir
	// Hermetic: the developer's MESHDEMO_ settings do not leak in.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(strings.ToUpper(kv), "MESHDEMO_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s: the race detector reported a data race", name)
		}
		if t.Failed() {
			t.Logf("--- %s stdout:\n%s\n--- %s stderr (last 4 KiB):\n%s", name, p.stdout.String(), name, tail(p.stderr.String(), 4096))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// kill SIGKILLs the process group and waits for the process.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// stop sends sig and returns the exit code, failing if the process takes
// longer than within to exit.
func (p *proc) stop(t *testing.T, sig syscall.Signal, within time.Duration) int {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(within):
		t.Fatalf("%s did not exit within %s of %s", p.name, within, sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// bannerURL waits for the row of the process's banner named row ("RPC
// endpoint", "Diagnostics UI", "Metrics") and returns the URL it shows. The
// banner is printed once the process listens, with the ports it bound.
func (p *proc) bannerURL(t *testing.T, row string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(row) + ` +(http://\S+)`)
	var url string
	eventually(t, 30*time.Second, p.name+" banner row "+row, func() bool {
		if m := re.FindStringSubmatch(p.stdout.String()); m != nil {
			url = m[1]
			return true
		}
		if p.exited() {
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, tail(p.stderr.String(), 4096))
		}
		return false
	})
	return url
}

// metricsURL waits for the banner and returns the process's /metrics URL.
func (p *proc) metricsURL(t *testing.T) string {
	t.Helper()
	return p.bannerURL(t, "Metrics")
}

// hostPort returns the host:port of an http:// URL.
func hostPort(url string) string {
	hp, _, _ := strings.Cut(strings.TrimPrefix(url, "http://"), "/")
	return hp
}

// httpClient keeps no idle connections between polls.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}

// get fetches url; ok is false on a connection error (the process may be down).
func get(url string) (status int, body []byte, ok bool) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return 0, nil, false
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(resp.Body)
	return resp.StatusCode, body, err == nil
}

// getJSON decodes url's body into v and reports whether that worked.
func getJSON(url string, v any) bool {
	status, body, ok := get(url)
	return ok && status == 200 && json.Unmarshal(body, v) == nil
}

// eventually polls cond every 100ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// peerHealth is the payload of /demo/lease-health.
type peerHealth struct {
	Peers []struct {
		PeerID              string                         `json:"peerId"`
		IsHealthy           bool                           `json:"isHealthy"`
		ActiveLeases        []resourcelease.OwnershipToken `json:"activeLeases"`
		LastDisconnect      *struct{ Reason string }       `json:"lastDisconnect"`
		Breaker             string                         `json:"breaker"`
		ConsecutiveExpiries int                            `json:"consecutiveExpiries"`
	} `json:"peers"`
}

func (h peerHealth) peer(id string) (healthy bool, leases []resourcelease.OwnershipToken, found bool) {
	for _, p := range h.Peers {
		if p.PeerID == id {
			return p.IsHealthy, p.ActiveLeases, true
		}
	}
	return false, nil, false
}

// readAllEvents pages through the control plane's replication log.
func readAllEvents(t *testing.T, base string) []resourcelease.Event {
	t.Helper()
	var all []resourcelease.Event
	since := int64(0)
	for {
		var page struct {
			Events    []resourcelease.Event `json:"events"`
			NextSince int64                 `json:"nextSince"`
		}
		url := fmt.Sprintf("%s/omnirelay/control/replication?since=%d&limit=1000", base, since)
		if !getJSON(url, &page) {
			t.Fatalf("reading %s failed", url)
		}
		all = append(all, page.Events...)
		if len(page.Events) == 0 {
			return all
		}
		since = page.NextSince
	}
}

var seededLine = regexp.MustCompile(`msg=seeded resourceId=(\S+) .*sequenceId=(\d+)`)

// seeded returns the resource ids the seeder logged as acknowledged.
func seeded(p *proc) []string {
	var ids []string
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	for sc.Scan() {
		if m := seededLine.FindStringSubmatch(sc.Text()); m != nil {
			ids = append(ids, m[1])
		}
	}
	return ids
}

// ctxFor returns a context bounded by d, cancelled when the test ends.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// leasesOf returns the active leases lease-health lists for peer.
func leasesOf(base, peer string) ([]resourcelease.OwnershipToken, bool) {
	var h peerHealth
	if !getJSON(base+"/demo/lease-health", &h) {
		return nil, false
	}
	_, leases, _ := h.peer(peer)
	return leases, true
}

// sameTokens reports whether a and b hold the same tokens, in any order.
func sameTokens(a, b []resourcelease.OwnershipToken) bool {
	if len(a) != len(b) {
		return false
	}
	for _, tok := range a {
		if !slices.Contains(b, tok) {
			return false
		}
	}
	return true
}

var workerCounter = regexp.MustCompile(`(?m)^meshdemo_worker_(leased|completed|failed|lost)_total\{peer="([^"]+)"\} (\S+)$`)

// leasesInHand reads a worker process's /metrics and returns how many leases
// the worker peer has received and not yet settled or lost.
func leasesInHand(metricsURL, peer string) (int, bool) {
	status, body, ok := get(metricsURL)
	if !ok || status != 200 {
		return 0, false
	}
	counts := map[string]float64{}
	for _, m := range workerCounter.FindAllStringSubmatch(string(body), -1) {
		if m[2] != peer {
			continue
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return 0, false
		}
		counts[m[1]] = v
	}
	if _, ok := counts["leased"]; !ok {
		return 0, false
	}
	return int(counts["leased"] - counts["completed"] - counts["failed"] - counts["lost"]), true
}
