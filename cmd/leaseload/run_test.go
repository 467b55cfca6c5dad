package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// runResult is what one in-process run printed and returned.
type runResult struct {
	code           int
	stdout, stderr string
}

func runLeaseload(t *testing.T, ctx context.Context, args ...string) runResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return runResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// runJSON runs leaseload with -json and decodes the report.
func runJSON(t *testing.T, args ...string) (runResult, *report) {
	t.Helper()
	res := runLeaseload(t, t.Context(), append(args, "-json")...)
	var rep report
	require.NoError(t, json.Unmarshal([]byte(res.stdout), &rep), "stdout: %s\nstderr: %s", res.stdout, res.stderr)
	return res, &rep
}

// checkLatencies checks that a row's latencies are present and ordered.
func checkLatencies(t *testing.T, l *latencyReport) {
	t.Helper()
	if l.Count == 0 {
		return
	}
	assert.Positive(t, l.P50Ms, l.Procedure)
	assert.LessOrEqual(t, l.P50Ms, l.P90Ms, l.Procedure)
	assert.LessOrEqual(t, l.P90Ms, l.P99Ms, l.Procedure)
	assert.LessOrEqual(t, l.P99Ms, l.MaxMs, l.Procedure)
	assert.LessOrEqual(t, l.MeanMs, l.MaxMs, l.Procedure)
}

func rows(p *phaseReport) map[string]*latencyReport {
	m := map[string]*latencyReport{}
	for _, l := range p.Procedures {
		m[l.Procedure] = l
	}
	return m
}

// checkCleanLeasemesh checks a leasemesh phase of exactly cycles cycles
// without an error.
func checkCleanLeasemesh(t *testing.T, p *phaseReport, cycles int64) {
	t.Helper()
	assert.Equal(t, "leasemesh", p.Name)
	assert.Equal(t, "cycles", p.StoppedBy)
	require.NotNil(t, p.Cycles)
	assert.Equal(t, cycles, *p.Cycles)
	assert.Equal(t, 3*cycles, p.RPCs)
	assert.Zero(t, p.Errors)
	assert.Zero(t, p.WarmupErrors)
	assert.Empty(t, p.ErrorsByStatus)
	assert.Zero(t, p.EmptyLeases)
	assert.Positive(t, p.RPCsPerSecond)
	assert.InDelta(t, p.RPCsPerSecond, 3**p.CyclesPerSecond, 1e-6*p.RPCsPerSecond)
	r := rows(p)
	require.Len(t, r, 5)
	var sum int64
	for _, proc := range []string{procEnqueue, procLease, procComplete} {
		assert.Equal(t, cycles, r[proc].Count, proc)
		assert.Zero(t, r[proc].Errors, proc)
		sum += r[proc].Count
	}
	assert.Equal(t, sum, r[rowAll].Count)
	assert.Equal(t, cycles, r[rowCycle].Count)
	for _, l := range p.Procedures {
		checkLatencies(t, l)
	}
	// A cycle is three RPCs in a row: never faster than the slowest one.
	assert.GreaterOrEqual(t, r[rowCycle].MaxMs, max(r[procEnqueue].MaxMs, r[procLease].MaxMs, r[procComplete].MaxMs)-1e-3)
}

func TestRunSelf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		args        []string
		cycles      int64
		storage     string
		synchronous string
	}{
		{name: "memory", args: []string{"-storage", "memory"}, cycles: 200, storage: "memory"},
		{name: "sqlite normal", args: []string{"-storage", "sqlite", "-synchronous", "NORMAL"}, cycles: 200, storage: "sqlite", synchronous: "NORMAL"},
		{name: "sqlite full", args: []string{"-self", "-storage", "sqlite"}, cycles: 100, storage: "sqlite", synchronous: "FULL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"-cycles", strconv.FormatInt(tt.cycles, 10), "-concurrency", "4", "-warmup", "0"}, tt.args...)
			res, rep := runJSON(t, args...)
			require.Equal(t, exitOK, res.code, "stderr: %s", res.stderr)
			assert.NotContains(t, res.stderr, "level=")
			assert.True(t, rep.OK)
			assert.Equal(t, modeSelf, rep.Mode)
			assert.Equal(t, tt.storage, rep.Storage)
			assert.Equal(t, tt.synchronous, rep.Synchronous)
			assert.Equal(t, 4, rep.Concurrency)
			assert.Equal(t, tt.cycles, rep.CycleLimit)
			require.Len(t, rep.Phases, 2)

			echo := rep.Phases[0]
			assert.Equal(t, procEcho, echo.Name)
			assert.Nil(t, echo.Cycles)
			assert.Equal(t, "cycles", echo.StoppedBy)
			assert.Equal(t, 3*tt.cycles, echo.RPCs, "the echo phase sends as many RPCs as the leasemesh phase")
			assert.Zero(t, echo.Errors)
			assert.Positive(t, echo.RPCsPerSecond)
			er := rows(echo)
			require.Len(t, er, 2)
			assert.Equal(t, echo.RPCs, er[procEcho].Count)
			assert.Equal(t, echo.RPCs, er[rowAll].Count)
			checkLatencies(t, er[procEcho])

			checkCleanLeasemesh(t, rep.Phases[1], tt.cycles)
			assert.True(t, strings.HasSuffix(rep.Phases[1].URL, rpcPath))
			assert.Positive(t, rep.LeasemeshToEcho)
		})
	}
}

// TestRunBatch: -batch adds a phase of batch cycles after the per-item one,
// with three batch calls per batch and the ratio of the two phases'
// cycles/s in the report.
func TestRunBatch(t *testing.T) {
	t.Parallel()
	res, rep := runJSON(t, "-storage", "sqlite", "-synchronous", "NORMAL", "-cycles", "320", "-concurrency", "4", "-warmup", "0", "-batch", "16", "-echo=false")
	require.Equal(t, exitOK, res.code, "stderr: %s", res.stderr)
	require.Len(t, rep.Phases, 2)
	checkCleanLeasemesh(t, rep.Phases[0], 320)
	b := rep.Phases[1]
	assert.Equal(t, phaseBatch, b.Name)
	assert.Equal(t, "cycles", b.StoppedBy)
	assert.Zero(t, b.Errors)
	require.NotNil(t, b.Cycles)
	assert.Positive(t, *b.Cycles)
	assert.LessOrEqual(t, *b.Cycles, int64(320), "320/16 = 20 batches of at most 16 items")
	r := rows(b)
	for _, proc := range []string{procEnqueueBatch, procLeaseBatch, procCompleteBatch} {
		require.Contains(t, r, proc)
		checkLatencies(t, r[proc])
	}
	assert.Equal(t, int64(20), r[procEnqueueBatch].Count)
	assert.Equal(t, *b.Cycles, r[rowCycle].Count, "one cycle per completed item")
	assert.Equal(t, 16, rep.BatchSize)
	assert.Positive(t, rep.BatchToPerItem)
	assert.InDelta(t, *b.CyclesPerSecond / *rep.Phases[0].CyclesPerSecond, rep.BatchToPerItem, 1e-9)

	text := runLeaseload(t, t.Context(), "-storage", "memory", "-cycles", "64", "-concurrency", "2", "-warmup", "0", "-batch", "8", "-echo=false")
	require.Equal(t, exitOK, text.code, "stderr: %s", text.stderr)
	assert.Contains(t, text.stdout, "leasemesh in batches of 8")
	assert.Contains(t, text.stdout, "× the per-item cycles/s")
}

// TestRunRounds: with -rounds the phases are measured in interleaved slices
// whose counts add up: each phase still does its -cycles.
func TestRunRounds(t *testing.T) {
	t.Parallel()
	res, rep := runJSON(t, "-storage", "memory", "-cycles", "90", "-concurrency", "3", "-warmup", "0", "-rounds", "3", "-batch", "10")
	require.Equal(t, exitOK, res.code, "stderr: %s", res.stderr)
	assert.Equal(t, 3, rep.Rounds)
	require.Len(t, rep.Phases, 3)
	assert.Equal(t, int64(3*90), rep.Phases[0].RPCs, "echo: 3 slices of 90 POSTs")
	checkCleanLeasemesh(t, rep.Phases[1], 90)
	assert.Equal(t, int64(9), rows(rep.Phases[2])[procEnqueueBatch].Count, "9 batches, 3 per slice")
	assert.Contains(t, res.stderr, "in 3 slices interleaved")
}

func TestRunTextReport(t *testing.T) {
	t.Parallel()
	res := runLeaseload(t, t.Context(), "-cycles", "20", "-concurrency", "2", "-warmup", "0")
	require.Equal(t, exitOK, res.code, "stderr: %s", res.stderr)
	for _, want := range []string{
		"leaseload -self: in-process dispatcher, storage memory",
		"echo ceiling (bare net/http JSON handler)",
		"stopped by cycles",
		"cycles  20 ",
		"RPCs    60 ",
		"errors  0\n",
		"procedure", "p50", "p99", "enqueue", "lease", "complete", "all", "cycle",
	} {
		assert.Contains(t, res.stdout, want)
	}
	assert.Contains(t, res.stderr, "leaseload: leasemesh http://127.0.0.1:")
}

// newTarget serves a real in-memory dispatcher over the wire protocol, as
// the demo does, and returns its URL and dispatcher.
func newTarget(t *testing.T, opts transport.HandlerConfig) (string, *resourcelease.LocalDispatcher) {
	t.Helper()
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{})
	require.NoError(t, err)
	opts.Logger = slog.New(slog.DiscardHandler)
	h, err := transport.NewHandler(d, opts)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		require.NoError(t, d.Close())
	})
	return srv.URL + "/yarpc/v1", d
}

func TestRunTarget(t *testing.T) {
	t.Parallel()
	url, d := newTarget(t, transport.HandlerConfig{Service: "resourcelease-mesh-demo", Namespace: "resourcelease.mesh"})
	// Another producer's item, enqueued first: the first lease gets it.
	_, err := d.Enqueue(t.Context(), &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
		ResourceType: "demo.order", ResourceID: "order-0001", PartitionKey: "tenant-1", PayloadEncoding: "application/json",
	}})
	require.NoError(t, err)

	res, rep := runJSON(t, "-target", url, "-service", "resourcelease-mesh-demo", "-namespace", "resourcelease.mesh",
		"-cycles", "50", "-concurrency", "3", "-warmup", "0", "-echo=false")
	require.Equal(t, exitOK, res.code, "stderr: %s", res.stderr)
	assert.Equal(t, modeTarget, rep.Mode)
	assert.Empty(t, rep.Storage)
	require.Len(t, rep.Phases, 1)
	p := rep.Phases[0]
	assert.Equal(t, url, p.URL)
	checkCleanLeasemesh(t, p, 50)
	assert.Equal(t, int64(1), p.ForeignLeases)
	// The foreign item was completed in place of one of leaseload's.
	st, err := d.Stats(t.Context(), nil)
	require.NoError(t, err)
	assert.Equal(t, 1, st.PendingCount)
	assert.Zero(t, st.ActiveLeaseCount)
}

// TestRunTargets: -target with two handlers over one dispatcher (two
// dispatchers of one mesh) loads both.
func TestRunTargets(t *testing.T) {
	t.Parallel()
	url, d := newTarget(t, transport.HandlerConfig{})
	h, err := transport.NewHandler(d, transport.HandlerConfig{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	var second atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		second.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	both := url + "," + srv.URL + "/yarpc/v1"
	res, rep := runJSON(t, "-target", both, "-cycles", "40", "-concurrency", "2", "-warmup", "0", "-echo=false")
	require.Equal(t, exitOK, res.code, "stderr: %s", res.stderr)
	require.Len(t, rep.Phases, 1)
	assert.Equal(t, both, rep.Phases[0].URL)
	checkCleanLeasemesh(t, rep.Phases[0], 40)
	assert.Greater(t, second.Load(), int64(20), "the second dispatcher took its share")
}

func TestRunFailedRPCs(t *testing.T) {
	t.Parallel()
	wrongService, _ := newTarget(t, transport.HandlerConfig{Service: "the-real-one"})
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://192.0.2.1/yarpc/v1", http.StatusTemporaryRedirect) // TEST-NET-1: never reached
	}))
	t.Cleanup(redirect.Close)

	tests := []struct {
		name, url  string
		wantStatus resourcelease.Status
		wantSample string
	}{
		{name: "server refuses every call", url: wrongService, wantStatus: resourcelease.StatusNotFound, wantSample: "enqueue: "},
		{name: "redirect off the machine", url: redirect.URL, wantStatus: resourcelease.StatusUnavailable, wantSample: "does not follow redirects"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res, rep := runJSON(t, "-target", tt.url, "-service", "another", "-cycles", "100", "-concurrency", "2",
				"-warmup", "0", "-echo=false", "-max-errors", "5")
			assert.Equal(t, exitError, res.code)
			assert.Contains(t, res.stderr, "RPCs failed")
			assert.False(t, rep.OK)
			require.Len(t, rep.Phases, 1)
			p := rep.Phases[0]
			assert.Equal(t, "max-errors", p.StoppedBy)
			require.NotNil(t, p.Cycles)
			assert.Zero(t, *p.Cycles)
			// Each worker stops once the count passes 5: at most one more
			// failure each.
			assert.GreaterOrEqual(t, p.Errors, int64(6))
			assert.LessOrEqual(t, p.Errors, int64(5+2))
			assert.Equal(t, map[string]int64{string(tt.wantStatus): p.Errors}, p.ErrorsByStatus)
			assert.Contains(t, p.ErrorSamples[string(tt.wantStatus)], tt.wantSample)
			assert.Equal(t, p.Errors, rows(p)[procEnqueue].Errors)
		})
	}
}

func TestRunInterrupted(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"-json", "-duration", "1m"}, &stdout, &stderr)
	assert.Equal(t, exitError, code)
	var rep report
	require.NoError(t, json.Unmarshal(stdout.Bytes(), &rep))
	assert.True(t, rep.Interrupted)
	assert.False(t, rep.OK)
	assert.Contains(t, stderr.String(), "leaseload: interrupted")
}

func TestRunHelp(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"-h", "-help", "--help"} {
		res := runLeaseload(t, t.Context(), arg)
		assert.Equal(t, exitOK, res.code, arg)
		assert.Contains(t, res.stdout, "Usage: leaseload [flags]", arg)
		assert.Contains(t, res.stdout, "-concurrency goroutines", arg)
		assert.Empty(t, res.stderr, arg)
	}
}
