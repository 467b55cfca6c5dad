package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/app"
	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/internal/testcerts"
	"github.com/leasemesh/leasemesh/transport"
)

// post sends body to url with the procedure header (when set) and the
// bearer token (when set) through c, and returns the HTTP status.
func post(t *testing.T, c *http.Client, url, procedure, token, body string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if procedure != "" {
		req.Header.Set(transport.HeaderProcedure, procedure)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s (%s): %v", url, procedure, err)
	}
	_ = res.Body.Close()
	return res.StatusCode
}

// TestRoleTokens: with a token per role, the seeder and workers send theirs
// and work flows; every procedure, control-plane call and /demo/enqueue
// needs its role's token.
func TestRoleTokens(t *testing.T) {
	r := start(t, t.TempDir(), fastArgs("-storage=memory", "-producer-token=p-tok", "-worker-token=w-tok", "-admin-token=a-tok")...)
	base := r.node.HTTPURLs()[0]
	eventually(t, 20*time.Second, "the seeder and workers to complete items with their tokens", func() bool {
		var s snapshot
		getJSON(t, base+"/demo/snapshot", &s)
		return s.Totals.Completed >= 3
	})
	rpc := r.node.RPCURL()
	proc := func(verb string) string { return transport.Procedure(config.DefaultNamespace, verb) }
	item := `{"payload":{"resourceType":"demo.order","resourceId":"x","partitionKey":"tenant-1","payloadEncoding":"application/json"}}`
	cases := []struct {
		url, procedure, body string
		want                 map[string]int // by token
	}{
		{rpc, proc("enqueue"), item, map[string]int{"": 401, "guess": 401, "p-tok": 200, "w-tok": 403, "a-tok": 200}},
		{rpc, proc("lease"), `{"waitMs":0}`, map[string]int{"": 401, "p-tok": 403, "w-tok": 200, "a-tok": 200}},
		{rpc, proc("stats"), `{}`, map[string]int{"": 401, "p-tok": 200, "w-tok": 200, "a-tok": 200}},
		{rpc, proc("drain"), `{"limit":1}`, map[string]int{"": 401, "p-tok": 403, "w-tok": 403, "a-tok": 200}},
		{base + "/omnirelay/control/drain", "", `{"limit":1}`, map[string]int{"": 401, "p-tok": 403, "w-tok": 403, "a-tok": 200}},
		{base + "/demo/enqueue", "", `{"resourceType":"demo.order","resourceId":"y","partitionKey":"tenant-1"}`,
			map[string]int{"": 401, "w-tok": 403, "p-tok": 200, "a-tok": 200}},
	}
	for _, tc := range cases {
		for token, want := range tc.want {
			if got := post(t, httpClient, tc.url, tc.procedure, token, tc.body); got != want {
				t.Errorf("%s %s with token %q: got %d, want %d", tc.url, tc.procedure, token, got, want)
			}
		}
	}
	if !strings.Contains(r.stdout.String(), "Open roles       none") {
		t.Errorf("the banner does not say no role is open:\n%s", r.stdout)
	}
}

// TestMutualTLS runs every role over https with client certificates: the
// seeder, workers and /demo/enqueue dial the dispatcher with the CA and their
// certificate; a client without a certificate, or over plain HTTP, is
// refused.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "mesh-ca")
	pair := ca.Issue(t, "mesh-node")
	r := start(t, dir,
		"--meshDemo:rpcUrl=https://127.0.0.1:0", "--urls=https://127.0.0.1:0", "-storage=memory",
		"-seeder-interval-seconds=0.05", "-worker-processing-seconds=0.01", "-heartbeat-interval-seconds=0.5",
		"-tls-cert-file="+pair.CertFile, "-tls-key-file="+pair.KeyFile, "-tls-ca-file="+ca.CertFile, "-tls-client-ca-file="+ca.CertFile)
	rpc, base := r.node.RPCURL(), r.node.HTTPURLs()[0]
	if !strings.HasPrefix(rpc, "https://") || !strings.HasPrefix(base, "https://") {
		t.Fatalf("RPC %s and diagnostics %s, want https", rpc, base)
	}
	client := func(withCert bool) *http.Client {
		cfg := transport.TLSConfig{CAFile: ca.CertFile}
		if withCert {
			cfg.CertFile, cfg.KeyFile = pair.CertFile, pair.KeyFile
		}
		tc, err := cfg.ClientTLS()
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	}
	withCert, noCert := client(true), client(false)

	// The diagnostics listener is TLS without client certificates (a
	// browser has none); it shows the work the clients did over mutual TLS.
	eventually(t, 20*time.Second, "the seeder and workers to complete items over mutual TLS", func() bool {
		res, err := noCert.Get(base + "/demo/snapshot")
		if err != nil {
			t.Fatalf("diagnostics over TLS: %v", err)
		}
		defer res.Body.Close()
		var s snapshot
		_ = json.NewDecoder(res.Body).Decode(&s)
		return s.Totals.Completed >= 3
	})
	stats := transport.Procedure(config.DefaultNamespace, "stats")
	if got := post(t, withCert, rpc, stats, "", "{}"); got != 200 {
		t.Errorf("stats with a client certificate: got %d", got)
	}
	if got := post(t, noCert, base+"/demo/enqueue", "", "", `{"resourceType":"demo.order","resourceId":"y","partitionKey":"tenant-1"}`); got != 200 {
		t.Errorf("/demo/enqueue (forwarded over mutual TLS): got %d", got)
	}
	req, _ := http.NewRequest(http.MethodPost, rpc, strings.NewReader("{}"))
	req.Header.Set(transport.HeaderProcedure, stats)
	if res, err := noCert.Do(req); err == nil {
		_ = res.Body.Close()
		t.Errorf("a client without a certificate got HTTP %d from the mutual-TLS RPC listener", res.StatusCode)
	}
	plain := strings.Replace(rpc, "https://", "http://", 1)
	if code := post(t, httpClient, plain, stats, "", "{}"); code != http.StatusBadRequest {
		t.Errorf("plain HTTP to the TLS port: got %d, want net/http's 400", code)
	}
	if out := r.stdout.String(); !strings.Contains(out, "mutual TLS") || !strings.Contains(out, "https://127.0.0.1:") {
		t.Errorf("the banner does not show the TLS endpoints:\n%s", out)
	}
}

// TestStreamThroughHardenedServer: the diagnostics event stream flushes
// through transport.NewServer's write deadlines, event after event.
func TestStreamThroughHardenedServer(t *testing.T) {
	r := start(t, t.TempDir(), fastArgs("-storage=memory", "-roles=dispatcher,diagnostics")...)
	res, err := httpClient.Get(r.node.HTTPURLs()[0] + "/demo/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	lines := bufio.NewScanner(res.Body)
	events := 0
	for events < 2 && lines.Scan() {
		if lines.Text() == "event: snapshot" {
			events++
		}
	}
	if events < 2 {
		t.Fatalf("got %d events before the stream ended: %v", events, lines.Err())
	}
}

// TestHTTPSWithoutCertificateExitsTwo: a TLS mistake is a one-line
// configuration error.
func TestHTTPSWithoutCertificateExitsTwo(t *testing.T) {
	var out, errb syncBuffer
	m := &app.Main{Stdout: &out, Stderr: &errb, Dir: t.TempDir()}
	err := m.Run(context.Background(), []string{"--meshDemo:rpcUrl=https://127.0.0.1:0", "--urls=http://127.0.0.1:0", "-storage=memory"})
	var cve *config.ConfigValidationError
	if !errors.As(err, &cve) || cve.Field != "meshDemo:rpcUrl" || app.ExitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
		t.Fatalf("got %v (exit %d), want a one-line error on meshDemo:rpcUrl, exit 2", err, app.ExitCode(err))
	}
}
