package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// The demo's names, which the tests use throughout.
const (
	demoService   = "resourcelease-mesh-demo"
	demoNamespace = "resourcelease.mesh"
)

var quietLogger = slog.New(slog.DiscardHandler)

// mesh is a dispatcher served on loopback the way the demo serves it: the
// RPC handler at /yarpc/v1 and the control plane at /omnirelay/control.
type mesh struct {
	t   *testing.T
	d   *resourcelease.LocalDispatcher
	rep *replication.MemoryReplicator
	srv *httptest.Server
	env []string

	mu      sync.Mutex
	headers http.Header // of the last RPC request
}

type meshOptions struct {
	// token protects the RPC handler and every control-plane endpoint.
	token string
	// queue configures the dispatcher's queue.
	queue resourcelease.QueueConfig
	// retention bounds the replication log (0: the replicator's default).
	retention int
}

func newMesh(t *testing.T, opts meshOptions) *mesh {
	t.Helper()
	rep, err := replication.NewMemoryReplicator(replication.MemoryConfig{Logger: quietLogger, Retention: opts.retention})
	require.NoError(t, err)
	tracker, err := peerhealth.New(peerhealth.Config{})
	require.NoError(t, err)
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{
		Queue:      opts.queue,
		Replicator: rep,
		PeerHealth: tracker,
		Logger:     quietLogger,
	})
	require.NoError(t, err)
	m := &mesh{t: t, d: d, rep: rep}

	hopts := transport.HandlerConfig{Service: demoService, Namespace: demoNamespace, Logger: quietLogger}
	copts := control.HandlerConfig{
		Dispatcher: d,
		Peers:      func(context.Context) (any, error) { return tracker.Diagnostics(), nil },
		Events:     rep,
		Logger:     quietLogger,
	}
	hopts.Authorize = transport.AllowAll // a loopback listener, as the demo's without a token
	if opts.token != "" {
		hopts.Authorize = transport.BearerToken(opts.token)
		copts.Authorize = transport.BearerToken(opts.token)
		copts.AuthorizeReads = true
	}
	rpc, err := transport.NewHandler(d, hopts)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle("/yarpc/v1", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.headers = r.Header.Clone()
		m.mu.Unlock()
		rpc.ServeHTTP(w, r)
	}))
	ch, err := control.NewHandler(copts)
	require.NoError(t, err)
	mux.Handle("/omnirelay/control/", ch)
	m.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		m.srv.Close()
		_ = d.Close()
		_ = rep.Close()
	})
	m.env = []string{
		"LEASECTL_URL=" + m.srv.URL + "/yarpc/v1",
		"LEASECTL_SERVICE=" + demoService,
		"LEASECTL_NAMESPACE=" + demoNamespace,
		"LEASECTL_CONTROL_URL=" + m.srv.URL,
	}
	return m
}

// lastHeaders returns the headers of the last RPC request.
func (m *mesh) lastHeaders() http.Header {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.headers
}

// result is how a leasectl run ended.
type result struct {
	stdout, stderr string
	code           int
}

// run runs leasectl against the mesh with args; stdin, when not empty, is
// piped in (otherwise stdin is /dev/null).
func (m *mesh) run(stdin string, args ...string) result {
	m.t.Helper()
	return runLeasectl(m.t, m.env, stdin, args...)
}

// runLeasectl runs the binary with exactly env as its environment.
func runLeasectl(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, leasectlBin, args...)
	cmd.Env = env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running leasectl %v: %v", args, err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// ok runs leasectl and fails the test unless it exits 0.
func (m *mesh) ok(stdin string, args ...string) string {
	m.t.Helper()
	r := m.run(stdin, args...)
	require.Equal(m.t, 0, r.code, "leasectl %v: stderr %s", args, r.stderr)
	return r.stdout
}
