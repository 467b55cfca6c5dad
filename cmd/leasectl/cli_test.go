package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// The enqueue call of the seed README, verbatim but for the URL.
const readmeBody = `{"payload":{"resourceType":"demo.order","resourceId":"cli","partitionKey":"tenant-cli","payloadEncoding":"application/json","body":"eyJtZXNzYWdlIjoiY2xpIn0="}}`

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal([]byte(s), &v), "output %q", s)
	return v
}

func TestRequestSeedReadme(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	out := m.ok("", "request",
		"--transport", "http",
		"--url", m.srv.URL+"/yarpc/v1",
		"--service", "resourcelease-mesh-demo",
		"--procedure", "resourcelease.mesh::enqueue",
		"--encoding", "application/json",
		"--body", readmeBody)
	resp := decode[resourcelease.EnqueueResponse](t, out)
	assert.Equal(t, 1, resp.Stats.PendingCount)
	assert.Equal(t, int64(1), resp.SequenceID)
	assert.True(t, strings.HasPrefix(out, "{\n  \""), "pretty-printed by default: %q", out)

	// What a yarpc-go server requires: --encoding application/json is sent
	// as yarpc's json, with a caller, the service and yarpc's TTL header.
	h := m.lastHeaders()
	assert.Equal(t, "json", h.Get("Rpc-Encoding"))
	assert.Equal(t, demoService, h.Get("Rpc-Service"))
	assert.Equal(t, "resourcelease.mesh::enqueue", h.Get("Rpc-Procedure"))
	assert.Equal(t, "leasectl", h.Get("Rpc-Caller"))
	assert.Equal(t, "true", h.Get("Rpc-Accepts-Both-Response-Error"))
	assert.NotEmpty(t, h.Get("Context-TTL-MS"))
	assert.Empty(t, h.Get("Rpc-Ttl-Ms"))

	l, err := m.d.Lease(context.Background(), &resourcelease.LeaseRequest{PeerID: "t"})
	require.NoError(t, err)
	require.NotNil(t, l)
	assert.Equal(t, "cli", l.Payload.ResourceID)
	assert.Equal(t, `{"message":"cli"}`, string(l.Payload.Body))
}

func TestRequestBodiesAndHeaders(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	dir := t.TempDir()
	bodyFile := filepath.Join(dir, "body.json")
	require.NoError(t, os.WriteFile(bodyFile, []byte(readmeBody), 0o600))

	tests := []struct {
		name      string
		stdin     string
		args      []string
		wantPend  int
		wantRaw   bool
		checkHdrs func(t *testing.T, h http.Header)
	}{
		{name: "body from file", args: []string{"--procedure", "resourcelease.mesh::enqueue", "--body", "@" + bodyFile}, wantPend: 1},
		{name: "body dash reads stdin", stdin: readmeBody, args: []string{"--procedure", "resourcelease.mesh::enqueue", "--body", "-"}, wantPend: 2},
		{name: "piped stdin without body", stdin: readmeBody, args: []string{"--procedure", "resourcelease.mesh::enqueue"}, wantPend: 3},
		{name: "short procedure, raw output", args: []string{"--procedure", "enqueue", "--body", readmeBody, "--raw"}, wantPend: 4, wantRaw: true},
		{name: "body-file", args: []string{"--procedure", "enqueue", "--body-file", bodyFile, "--profile", "json:pretty"}, wantPend: 5},
		{name: "body-base64", args: []string{"--procedure", "enqueue", "--body-base64", base64.StdEncoding.EncodeToString([]byte(readmeBody)), "--timeout", "3s"}, wantPend: 6},
		{
			name:     "caller, ttl and extra headers",
			args:     []string{"--procedure", "enqueue", "--body", readmeBody, "--caller", "ops-cli", "--ttl", "7s", "--header", "X-Trace=abc", "--header", "x-peer-id=p9", "--encoding", "json"},
			wantPend: 7,
			checkHdrs: func(t *testing.T, hh http.Header) {
				assert.Equal(t, "ops-cli", hh.Get("Rpc-Caller"))
				assert.Equal(t, "abc", hh.Get("X-Trace"))
				assert.Equal(t, "p9", hh.Get("X-Peer-Id"))
				assert.Equal(t, "json", hh.Get("Rpc-Encoding"))
				ttl := hh.Get("Context-TTL-MS")
				var ms int
				_, err := fmt.Sscan(ttl, &ms)
				require.NoError(t, err, "Context-TTL-MS %q", ttl)
				assert.InDelta(t, 7000, ms, 500)
			},
		},
	}
	// Sequential: each case adds one item to the same queue.
	for _, tt := range tests {
		r := m.run(tt.stdin, append([]string{"request"}, tt.args...)...)
		require.Equal(t, 0, r.code, "%s: stderr %s", tt.name, r.stderr)
		resp := decode[resourcelease.EnqueueResponse](t, r.stdout)
		assert.Equal(t, tt.wantPend, resp.Stats.PendingCount, tt.name)
		if tt.wantRaw {
			assert.Equal(t, 1, strings.Count(r.stdout, "\n"), "%s: raw output is one line: %q", tt.name, r.stdout)
		}
		if tt.checkHdrs != nil {
			tt.checkHdrs(t, m.lastHeaders())
		}
	}
}

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"unsupported transport", []string{"--transport", "grpc", "--procedure", "x::stats"}, 2, `only --transport http is supported, got "grpc"`},
		{"missing procedure", []string{"--body", "{}"}, 2, "--procedure is required"},
		{"unsupported encoding", []string{"--procedure", "stats", "--encoding", "thrift"}, 2, "only the json and application/json encodings"},
		{"bad header flag", []string{"--procedure", "stats", "--header", "novalue"}, 2, "want key=value"},
		{"unsupported profile", []string{"--procedure", "stats", "--profile", "protobuf:echo.Ping"}, 2, "only the json and json:pretty profiles"},
		{"two bodies", []string{"--procedure", "stats", "--body", "{}", "--body-base64", "e30="}, 2, "give one of --body, --body-file and --body-base64"},
		{"bad base64", []string{"--procedure", "stats", "--body-base64", "%%%"}, 2, "--body-base64 is not base64"},
		{"unknown procedure", []string{"--procedure", "resourcelease.mesh::explode"}, 1, "error: not-found resourcelease.transport.unknown_procedure: "},
		{"wrong service", []string{"--procedure", "stats", "--service", "other"}, 1, "error: not-found resourcelease.transport.unknown_service: "},
		{"malformed body", []string{"--procedure", "enqueue", "--body", "{"}, 1, "error: invalid-argument resourcelease.argument.invalid: malformed request body"},
		{"missing payload field", []string{"--procedure", "enqueue", "--body", `{"payload":{"resourceType":"t"}}`}, 1, "error: invalid-argument resourcelease.payload.resource_id_required: "},
		{"body file missing", []string{"--procedure", "enqueue", "--body", "@/nonexistent/body.json"}, 1, "error: reading --body: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := m.run("", append([]string{"request"}, tt.args...)...)
			assert.Equal(t, tt.wantCode, r.code, "stderr %s", r.stderr)
			assert.Contains(t, r.stderr, tt.wantErr)
			assert.Empty(t, r.stdout)
			if tt.wantCode == 2 {
				assert.Contains(t, r.stderr, "Run 'leasectl help request' for usage.")
			}
		})
	}
}

// TestLeaseRoundTrip: enqueue → lease → heartbeat → complete, then the stale
// token is refused.
func TestLeaseRoundTrip(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	out := m.ok("", "enqueue", "--resource-type", "demo.order", "--resource-id", "order-1", "--partition-key", "tenant-1",
		"--body", `{"n":1}`, "--attr", "priority=high", "--attr", "tenant=tenant-1", "--request-id", "req-1")
	enq := decode[resourcelease.EnqueueResponse](t, out)
	assert.Equal(t, 1, enq.Stats.PendingCount)
	assert.False(t, enq.Duplicate)

	// The same request id is a duplicate; camelCase flag names work too.
	out = m.ok("", "enqueue", "--resourceType", "demo.order", "--resourceId", "order-1", "--partitionKey", "tenant-1", "--requestId", "req-1")
	dup := decode[resourcelease.EnqueueResponse](t, out)
	assert.True(t, dup.Duplicate)
	assert.Equal(t, enq.SequenceID, dup.SequenceID)

	leaseOut := m.ok("", "lease", "--peer", "worker-7", "--raw")
	l := decode[resourcelease.Lease](t, leaseOut)
	assert.Equal(t, "worker-7", l.OwnerPeerID)
	assert.Equal(t, 1, l.Attempt)
	assert.Equal(t, `{"n":1}`, string(l.Payload.Body))
	assert.Equal(t, map[string]string{"priority": "high", "tenant": "tenant-1"}, l.Payload.Attributes)
	assert.Equal(t, "req-1", l.Payload.RequestID)

	// heartbeat takes the lease on stdin.
	hbOut := m.ok(leaseOut, "heartbeat")
	hb := decode[resourcelease.HeartbeatResponse](t, hbOut)
	assert.Contains(t, hbOut, `"success": true`)
	assert.Positive(t, hb.TTL, "leaseTtlMs is printed")
	assert.False(t, hb.LeaseExpiresAt.Before(l.LeaseExpiresAt))

	// release puts it back, its attempt not counted.
	released := decode[map[string]bool](t, m.ok(leaseOut, "release"))
	assert.Equal(t, map[string]bool{"success": true}, released)
	leaseOut = m.ok("", "lease", "--peer", "worker-7", "--raw")
	l = decode[resourcelease.Lease](t, leaseOut)
	assert.Equal(t, 1, l.Attempt, "a release is not an attempt")

	// complete takes it from a file.
	leaseFile := filepath.Join(t.TempDir(), "lease.json")
	require.NoError(t, os.WriteFile(leaseFile, []byte(leaseOut), 0o600))
	done := decode[map[string]bool](t, m.ok("", "complete", "--token-file", leaseFile))
	assert.Equal(t, map[string]bool{"success": true}, done)

	st := decode[resourcelease.Stats](t, m.ok("", "stats"))
	assert.Equal(t, resourcelease.Stats{}, st)

	// The token is stale now: not-found unknown_token, exit 1.
	tok, err := json.Marshal(l.OwnershipToken)
	require.NoError(t, err)
	for _, verb := range []string{"complete", "heartbeat", "fail", "release"} {
		r := m.run("", verb, "--token", string(tok))
		assert.Equal(t, 1, r.code, verb)
		assert.True(t, strings.HasPrefix(r.stderr, "error: not-found error.resourcelease.unknown_token: "), "%s: stderr %q", verb, r.stderr)
		assert.Empty(t, r.stdout)
	}

	// Nothing left: lease prints null and succeeds; null is no token.
	assert.Equal(t, "null\n", m.ok("", "lease", "--wait", "10ms"))
	r := m.run("null\n", "complete")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "error: invalid-argument resourcelease.ownership_token.required: no ownership token")
}

// TestFailAndDeadLetters: fail with requeue, fail without, list, redrive and
// purge dead letters.
func TestFailAndDeadLetters(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	for i := 1; i <= 2; i++ {
		m.ok("", "enqueue", "--resource-type", "t", "--resource-id", fmt.Sprint(i), "--partition-key", "p")
	}
	first := m.ok("", "lease", "--raw")
	m.ok(first, "fail", "--reason", "upstream timed out", "--code", "upstream.timeout", "--meta", "host=a")
	// A requeued item keeps its place: it is older than item 2.
	again := decode[resourcelease.Lease](t, m.ok("", "lease"))
	assert.Equal(t, decode[resourcelease.Lease](t, first).SequenceID, again.SequenceID)
	assert.Equal(t, 2, again.Attempt)
	require.NotNil(t, again.LastError)
	assert.Equal(t, resourcelease.ErrorInfo{Message: "upstream timed out", Code: "upstream.timeout"}, *again.LastError)

	againJSON, err := json.Marshal(again)
	require.NoError(t, err)
	m.ok(string(againJSON), "fail", "--no-requeue", "--reason", "poison")
	second := m.ok("", "lease", "--raw")
	m.ok("", "fail", "--token", second, "--no-requeue", "--reason", "bad input")

	dl := decode[resourcelease.DeadLettersResponse](t, m.ok("", "deadletters"))
	require.Len(t, dl.Items, 2)
	assert.Equal(t, again.SequenceID, dl.Items[0].SequenceID)
	assert.Contains(t, dl.Items[0].Reason, "poison")
	limited := decode[resourcelease.DeadLettersResponse](t, m.ok("", "deadletters", "list", "--limit", "1"))
	assert.Len(t, limited.Items, 1)

	rd := decode[resourcelease.RedriveResponse](t, m.ok("", "deadletters", "redrive", fmt.Sprint(again.SequenceID)))
	assert.Equal(t, 1, rd.RedrivenCount)
	st := decode[resourcelease.Stats](t, m.ok("", "stats"))
	assert.Equal(t, 1, st.PendingCount)
	assert.Equal(t, 1, st.DeadLetterCount)

	r := m.run("", "deadletters", "purge")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "purge needs sequence ids, or --all")
	pg := decode[resourcelease.PurgeResponse](t, m.ok("", "deadletters", "purge", "--all"))
	assert.Equal(t, 1, pg.PurgedCount)
	st = decode[resourcelease.Stats](t, m.ok("", "stats"))
	assert.Equal(t, resourcelease.Stats{PendingCount: 1}, st)
}

func TestDrainRestore(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	for i := 1; i <= 3; i++ {
		m.ok("", "enqueue", "--resource-type", "t", "--resource-id", fmt.Sprint(i), "--partition-key", "p", "--body", fmt.Sprintf(`{"i":%d}`, i))
	}
	file := filepath.Join(t.TempDir(), "drained.json")
	sum := decode[drainSummary](t, m.ok("", "drain", "--out", file))
	assert.Equal(t, drainSummary{DrainedCount: 3, File: file}, sum)
	assert.Equal(t, 0, decode[resourcelease.Stats](t, m.ok("", "stats")).PendingCount)

	data, err := os.ReadFile(file)
	require.NoError(t, err)
	drained := decode[resourcelease.DrainResponse](t, string(data))
	require.Len(t, drained.Items, 3)
	assert.Equal(t, `{"i":2}`, string(drained.Items[1].Payload.Body))

	// An existing file is not overwritten.
	r := m.run("", "drain", "--out", file)
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "exists; use --force")

	rs := decode[resourcelease.RestoreResponse](t, m.ok("", "restore", "--in", file))
	assert.Equal(t, 3, rs.RestoredCount)
	assert.Equal(t, 3, decode[resourcelease.Stats](t, m.ok("", "stats")).PendingCount)

	// Restoring the same items again: already-exists, all or nothing.
	r = m.run("", "restore", "--in", file)
	assert.Equal(t, 1, r.code)
	assert.True(t, strings.HasPrefix(r.stderr, "error: already-exists resourcelease.restore.duplicate_sequence: "), r.stderr)

	// drain without --out prints the items; restore reads them (a bare
	// array too) from stdin.
	out := m.ok("", "drain", "--raw")
	items := decode[resourcelease.DrainResponse](t, out)
	assert.Len(t, items.Items, 3)
	arr, err := json.Marshal(items.Items)
	require.NoError(t, err)
	rs = decode[resourcelease.RestoreResponse](t, m.ok(string(arr), "restore"))
	assert.Equal(t, 3, rs.RestoredCount)

	// --force overwrites.
	sum = decode[drainSummary](t, m.ok("", "drain", "--out", file, "--force"))
	assert.Equal(t, 3, sum.DrainedCount)
	entries, err := os.ReadDir(filepath.Dir(file))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary files left behind")
}

func TestPeers(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	m.ok("", "enqueue", "--resource-type", "t", "--resource-id", "1", "--partition-key", "p")
	m.ok("", "lease", "--peer", "worker-a")
	var diag struct {
		Peers []struct {
			PeerID string `json:"peerId"`
		} `json:"peers"`
		Summary map[string]int `json:"summary"`
	}
	require.NoError(t, json.Unmarshal([]byte(m.ok("", "peers")), &diag))
	require.Len(t, diag.Peers, 1)
	assert.Equal(t, "worker-a", diag.Peers[0].PeerID)
	assert.Contains(t, diag.Summary, "eligiblePeers")
}

func TestTailOnce(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	m.ok("", "enqueue", "--resource-type", "t", "--resource-id", "1", "--partition-key", "p")
	lease := m.ok("", "lease")
	m.ok(lease, "complete")

	out := m.ok("", "tail", "--once")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, "out %q", out)
	var types []resourcelease.EventType
	for i, line := range lines {
		e := decode[resourcelease.Event](t, line)
		assert.Equal(t, int64(i+1), e.SequenceNumber)
		types = append(types, e.EventType)
	}
	assert.Equal(t, []resourcelease.EventType{resourcelease.EventEnqueue, resourcelease.EventLeaseGranted, resourcelease.EventCompleted}, types)

	out = m.ok("", "tail", "--once", "--since", "2")
	assert.Equal(t, 1, strings.Count(out, "\n"))
	assert.Equal(t, resourcelease.EventCompleted, decode[resourcelease.Event](t, out).EventType)
	assert.Empty(t, m.ok("", "tail", "--once", "--since", "3"))
}

// TestTailReportsTrimmedEvents: events the log no longer holds (retention)
// are reported on stderr, not skipped silently.
func TestTailReportsTrimmedEvents(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{retention: 2})
	for i := range 3 { // events 1..3; the log keeps 2 and 3
		m.ok("", "enqueue", "--resource-type", "t", "--resource-id", fmt.Sprint(i), "--partition-key", "p")
	}
	r := m.run("", "tail", "--once")
	require.Equal(t, 0, r.code, r.stderr)
	assert.Contains(t, r.stderr, "events 1 to 1 are no longer in the log")
	assert.Equal(t, 2, strings.Count(r.stdout, "\n"))
}

// TestTailPastTheEndOfTheLog: a tail positioned past the log's last event
// (the log was reset, or --since is wrong) says so and fails instead of
// waiting for events that will never come.
func TestTailPastTheEndOfTheLog(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	m.ok("", "enqueue", "--resource-type", "t", "--resource-id", "1", "--partition-key", "p")
	r := m.run("", "tail", "--once", "--since", "100")
	assert.NotEqual(t, 0, r.code)
	assert.Contains(t, r.stderr, "the log ends at event 1, before this tail's position 100")
	r = m.run("", "tail", "--once", "--since", "1") // at the end: fine, nothing new
	assert.Equal(t, 0, r.code, r.stderr)
}

// TestTailFollow follows the log while it grows, then is interrupted.
func TestTailFollow(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	ctx := context.Background()
	enqueue := func(id string) {
		_, err := m.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
			ResourceType: "t", ResourceID: id, PartitionKey: "p", PayloadEncoding: "application/json"}})
		require.NoError(t, err)
	}
	enqueue("1")

	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, leasectlBin, "tail", "--interval", "10ms")
	cmd.Env = m.env
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(stdout)
	next := func() resourcelease.Event {
		t.Helper()
		require.True(t, lines.Scan(), "tail ended early: %v; stderr %s", lines.Err(), stderr.String())
		return decode[resourcelease.Event](t, lines.Text())
	}
	assert.Equal(t, int64(1), next().SequenceNumber)
	enqueue("2")
	e := next()
	assert.Equal(t, int64(2), e.SequenceNumber)
	assert.Equal(t, "2", e.Payload.ResourceID)
	enqueue("3")
	assert.Equal(t, int64(3), next().SequenceNumber)

	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	assert.False(t, lines.Scan(), "no output after the interrupt")
	require.NoError(t, cmd.Wait(), "an interrupted tail exits 0; stderr %s", stderr.String())
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{token: "s3cret"})
	r := m.run("", "stats")
	assert.Equal(t, 1, r.code)
	assert.True(t, strings.HasPrefix(r.stderr, "error: unauthenticated error.resourcelease.unauthenticated: "), r.stderr)
	r = m.run("", "peers")
	assert.Equal(t, 1, r.code)
	assert.True(t, strings.HasPrefix(r.stderr, "error: unauthenticated error.resourcelease.unauthenticated: "), r.stderr)

	r = m.run("", "stats", "--bearer-token", "wrong")
	assert.Equal(t, 1, r.code)
	assert.True(t, strings.HasPrefix(r.stderr, "error: unauthenticated error.resourcelease.unauthenticated: the bearer token is not valid"), r.stderr)

	m.ok("", "stats", "--bearer-token", "s3cret")
	env := append(append([]string(nil), m.env...), "LEASECTL_BEARER_TOKEN=s3cret")
	for _, args := range [][]string{{"stats"}, {"peers"}, {"tail", "--once"}} {
		r := runLeasectl(t, env, "", args...)
		assert.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	env := []string{"LEASECTL_URL=http://127.0.0.1:1/yarpc/v1", "LEASECTL_CONTROL_URL=http://127.0.0.1:1"}
	for _, args := range [][]string{{"stats"}, {"peers"}, {"tail", "--once"}} {
		r := runLeasectl(t, env, "", args...)
		assert.Equal(t, 1, r.code, "%v", args)
		assert.True(t, strings.HasPrefix(r.stderr, "error: unavailable error.resourcelease.transport_unavailable: "), "%v: %s", args, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"enqueue", "--resource-id", "1", "--partition-key", "p"}, "--resource-type is required"},
		{[]string{"enqueue", "--resource-type", "t", "--resource-id", "1", "--partition-key", "p", "--body", "x", "--body-file", "f"}, "give --body or --body-file, not both"},
		{[]string{"enqueue", "--attr", "x"}, "want key=value"},
		{[]string{"lease", "--wait", "-1s"}, "--wait must not be negative"},
		{[]string{"lease", "--wait", "soon"}, `invalid value "soon" for flag -wait`},
		{[]string{"lease", "extra"}, `unexpected argument "extra"`},
		{[]string{"stats", "--nope"}, "flag provided but not defined: -nope"},
		{[]string{"stats", "--url", "ftp://x"}, "invalid URL"},
		{[]string{"complete"}, "an ownership token is required"},
		{[]string{"complete", "--token", "{}", "--token-file", "f"}, "give --token or --token-file, not both"},
		{[]string{"restore"}, "--in FILE is required"},
		{[]string{"deadletters", "explode"}, `unknown action "explode"`},
		{[]string{"deadletters", "redrive", "abc"}, `"abc" is not a sequence id`},
		{[]string{"deadletters", "redrive", "1", "--all"}, "not both"},
		{[]string{"tail", "--interval", "0s"}, "--interval must be positive"},
		{[]string{"tail", "--since", "-4"}, "--since must not be negative"},
		{[]string{"peers", "--control-url", "http://h/x?y=1"}, "--control-url"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			t.Parallel()
			r := m.run("", tt.args...)
			assert.Equal(t, 2, r.code, "stderr %s", r.stderr)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			require.Len(t, lines, 2, "an error line and a hint: %q", r.stderr)
			assert.Contains(t, lines[0], "leasectl "+tt.args[0]+": ")
			assert.Contains(t, lines[0], tt.wantErr)
			assert.Equal(t, "Run 'leasectl help "+tt.args[0]+"' for usage.", lines[1])
			assert.Empty(t, r.stdout)
		})
	}
	r := m.run("", "explode")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, `unknown verb "explode"`)
	r = m.run("")
	assert.Equal(t, 2, r.code)
	assert.Contains(t, r.stderr, "Verbs:")
}

func TestHelp(t *testing.T) {
	t.Parallel()
	r := runLeasectl(t, nil, "", "help")
	require.Equal(t, 0, r.code)
	for _, c := range commands {
		assert.Contains(t, r.stdout, "\n  "+c.name+" ", "the overview lists %s", c.name)
	}
	assert.Contains(t, r.stdout, "LEASECTL_URL")
	for _, c := range commands {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{{"help", c.name}, {c.name, "-h"}, {c.name, "--help"}} {
				r := runLeasectl(t, nil, "", args...)
				require.Equal(t, 0, r.code, "%v: %s", args, r.stderr)
				assert.Contains(t, r.stdout, "Usage:\n  leasectl "+c.name)
				assert.Contains(t, r.stdout, "Flags:\n")
				_, example, found := strings.Cut(r.stdout, "\nExample:\n")
				require.True(t, found, "%v: no example", args)
				assert.Contains(t, example, "leasectl "+c.name, "%v: the example uses the verb", args)
			}
		})
	}
	for _, args := range [][]string{{"help", "nope"}, {"help", "a", "b"}} {
		r := runLeasectl(t, nil, "", args...)
		assert.Equal(t, 2, r.code, "%v", args)
	}
	for _, args := range [][]string{{"-h"}, {"--help"}} {
		r := runLeasectl(t, nil, "", args...)
		assert.Equal(t, 0, r.code, "%v", args)
		assert.Contains(t, r.stdout, "Verbs:")
	}
}

// TestDrainRestoreOverBodyLimit drains more than the handler's 4 MiB request
// body limit to a file, in pages, and restores it in batches: one restore
// request could not carry it.
func TestDrainRestoreOverBodyLimit(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	ctx := context.Background()
	body := []byte(strings.Repeat("b", 100<<10))
	for i := range 60 { // 60 × 100 KiB: about 8 MiB of JSON
		_, err := m.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{ResourceType: "t",
			ResourceID: fmt.Sprint(i), PartitionKey: "p", PayloadEncoding: "raw", Body: body}})
		require.NoError(t, err)
	}
	file := filepath.Join(t.TempDir(), "drained.json")
	sum := decode[drainSummary](t, m.ok("", "drain", "--out", file))
	assert.Equal(t, drainSummary{DrainedCount: 60, File: file}, sum)
	assert.Equal(t, 0, decode[resourcelease.Stats](t, m.ok("", "stats")).PendingCount)

	// It took several pages: one DrainSnapshot event each.
	cc, err := control.NewClient(m.srv.URL, control.ClientConfig{})
	require.NoError(t, err)
	defer cc.Close()
	page, err := cc.Replication(ctx, 0, 1000)
	require.NoError(t, err)
	drains := 0
	for _, e := range page.Events {
		if e.EventType == resourcelease.EventDrainSnapshot {
			drains++
		}
	}
	assert.GreaterOrEqual(t, drains, 3, "8 MiB in pages of about 3 MiB")

	data, err := os.ReadFile(file)
	require.NoError(t, err)
	assert.Greater(t, len(data), 4<<20)
	drained := decode[resourcelease.DrainResponse](t, string(data))
	require.Len(t, drained.Items, 60)
	for i, p := range drained.Items {
		require.Equal(t, int64(i+1), p.SequenceID, "in order, none missing")
		require.Equal(t, body, p.Payload.Body)
	}

	// One request would be over the body limit...
	r := m.run("", "restore", "--in", file, "--batch-bytes", "0")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "error: resource-exhausted", r.stderr)
	assert.Equal(t, 0, decode[resourcelease.Stats](t, m.ok("", "stats")).PendingCount)

	// ...batches are not.
	rs := decode[resourcelease.RestoreResponse](t, m.ok("", "restore", "--in", file))
	assert.Equal(t, 60, rs.RestoredCount)
	assert.Equal(t, 60, decode[resourcelease.Stats](t, m.ok("", "stats")).PendingCount)

	// Again: the first batch already exists, and restore stops there.
	r = m.run("", "restore", "--in", file)
	assert.Equal(t, 1, r.code)
	assert.True(t, strings.HasPrefix(r.stderr, "error: already-exists resourcelease.restore.duplicate_sequence: batch 1 of "), r.stderr)
	assert.Contains(t, r.stderr, "0 items were restored before it")

	// A partial overlap: the batch that fails is named, the ones before it stay restored.
	later := decode[resourcelease.DrainResponse](t, m.ok("", "drain", "--raw"))
	require.Len(t, later.Items, 60)
	file2 := filepath.Join(t.TempDir(), "later.json")
	half, err := json.Marshal(&resourcelease.RestoreRequest{Items: later.Items[30:]})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(file2, half, 0o600))
	m.ok("", "restore", "--in", file2)
	r = m.run("", "restore", "--in", file)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "already-exists", r.stderr)
	assert.NotContains(t, r.stderr, "batch 1 of", "the first batch (items 0 to ~20) does not overlap")
	assert.Regexp(t, `batch \d+ of \d+ \(items \d+ to \d+\) failed and restore stopped; \d+ items were restored before it`, r.stderr)
	assert.Less(t, decode[resourcelease.Stats](t, m.ok("", "stats")).PendingCount, 60+30)
}

// TestRequestYARPCServer: `leasectl request` calls a yarpc-go server the way
// yarpc's handler requires (json, a caller, a TTL, a body), and prints its
// error, which names only a status, without an empty code.
func TestRequestYARPCServer(t *testing.T) {
	t.Parallel()
	seen := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h := r.Header.Clone()
		h.Set("X-Body", string(body))
		seen <- h
		// yarpc-go's answer to an unregistered procedure, text layout.
		w.Header().Set("Rpc-Status", "success")
		w.Header().Set("Rpc-Service", r.Header.Get("Rpc-Service"))
		w.Header().Set("Rpc-Error-Code", "unimplemented")
		w.Header().Set("Content-Type", "text/plain; charset=utf8")
		w.WriteHeader(http.StatusNotImplemented)
		_, _ = io.WriteString(w, "unrecognized procedure \"resourcelease::release\" for service \"mesh\"\n")
	}))
	defer srv.Close()
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"request", "--url", srv.URL, "--service", "mesh",
		"--procedure", "resourcelease::release", "--encoding", "application/json"}, nil, &stdout, &stderr)
	assert.Equal(t, exitError, code)
	assert.Equal(t, "error: unimplemented: unrecognized procedure \"resourcelease::release\" for service \"mesh\"\n", stderr.String())
	h := <-seen
	for k, want := range map[string]string{"Rpc-Encoding": "json", "Rpc-Caller": "leasectl", "Rpc-Service": "mesh", "X-Body": "{}"} {
		assert.Equal(t, want, h.Get(k), k)
	}
	assert.NotEmpty(t, h.Get("Context-TTL-MS"))
}

// TestBatchVerbs: enqueue --batch-file, lease --max and complete of the
// leases it printed, each one batch call; refusals make the exit status 1.
func TestBatchVerbs(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	file := filepath.Join(t.TempDir(), "items.json")
	items := `[` +
		`{"resourceType":"demo.order","resourceId":"o-1","partitionKey":"p","payloadEncoding":"application/json"},` +
		`{"resourceType":"demo.order","resourceId":"o-2","partitionKey":"p","payloadEncoding":"application/json"},` +
		`{"resourceType":"demo.order","resourceId":"o-3","partitionKey":"p","payloadEncoding":"application/json"}]`
	require.NoError(t, os.WriteFile(file, []byte(items), 0o600))
	er := decode[resourcelease.EnqueueBatchResponse](t, m.ok("", "enqueue", "--batch-file", file))
	require.Len(t, er.Results, 3)
	assert.Equal(t, 3, er.Stats.PendingCount)

	leasesOut := m.ok("", "lease", "--max", "2", "--raw")
	lb := decode[resourcelease.LeaseBatchResponse](t, leasesOut)
	require.Len(t, lb.Items, 2)
	assert.Equal(t, "o-1", lb.Items[0].Payload.ResourceID)

	done := decode[resourcelease.CompleteBatchResponse](t, m.ok(leasesOut, "complete"))
	assert.Equal(t, []error{nil, nil}, done.Results)
	st := decode[resourcelease.Stats](t, m.ok("", "stats"))
	assert.Equal(t, 1, st.PendingCount)

	// The same leases again: both stale, exit 1, the results still printed.
	r := m.run(leasesOut, "complete")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "2 of 2 leases were not completed")
	again := decode[resourcelease.CompleteBatchResponse](t, r.stdout)
	require.Len(t, again.Results, 2)
	assert.ErrorIs(t, again.Results[0], resourcelease.ErrUnknownToken)

	// A refused item: exit 1, with every result printed.
	require.NoError(t, os.WriteFile(file, []byte(`{"payloads":[{"resourceType":"demo.order"},`+
		`{"resourceType":"demo.order","resourceId":"o-4","partitionKey":"p","payloadEncoding":"application/json"}]}`), 0o600))
	r = m.run("", "enqueue", "--batch-file", file)
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "1 of 2 items were refused")
	partial := decode[resourcelease.EnqueueBatchResponse](t, r.stdout)
	assert.Error(t, partial.Results[0].Err)
	assert.NoError(t, partial.Results[1].Err)

	none := decode[resourcelease.LeaseBatchResponse](t, m.ok("", "lease", "--max", "5", "--peer", "x"))
	assert.Len(t, none.Items, 2, "o-3 and o-4")
	empty := m.ok("", "lease", "--max", "5")
	assert.JSONEq(t, `{"items":[]}`, empty)
	r = m.run("", "lease", "--max", "1001")
	assert.Equal(t, 2, r.code)
	r = m.run("", "enqueue", "--batch-file", file, "--resource-id", "x")
	assert.Equal(t, 2, r.code)
}
