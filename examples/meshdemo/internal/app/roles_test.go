package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// TestClientMetricsIgnoreGarbageRpcStatus checks that the status label of
// rpc_client_requests_total only takes protocol statuses: a server answering
// made-up Rpc-Status values does not create new series.
func TestClientMetricsIgnoreGarbageRpcStatus(t *testing.T) {
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/valid":
			w.Header().Set(transport.HeaderStatus, string(resourcelease.StatusResourceExhausted))
			w.WriteHeader(http.StatusTooManyRequests)
		case "/yarpc":
			// yarpc's layout: the status in Rpc-Error-Code, whatever
			// Rpc-Status says (a yarpc-go server leaves it "success").
			w.Header().Set(transport.HeaderErrorCode, string(resourcelease.StatusFailedPrecondition))
			w.Header().Set(transport.HeaderStatus, "success")
			w.WriteHeader(http.StatusBadRequest)
		case "/ok":
			w.WriteHeader(http.StatusOK)
		default:
			n++
			w.Header().Set(transport.HeaderStatus, fmt.Sprintf("garbage-%d", n))
			w.Header().Set(transport.HeaderErrorCode, fmt.Sprintf("garbage-%d", n))
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	reg := prometheus.NewRegistry()
	m, err := newClientMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: m.roundTripper(tr)}
	call := func(path string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(transport.HeaderProcedure, "ns::enqueue")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	for range 5 {
		call("/garbage")
	}
	call("/valid")
	call("/yarpc")
	call("/ok")

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "rpc_client_requests_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if lp.GetName() == "status" {
					got[lp.GetValue()] += mt.GetCounter().GetValue()
				}
			}
		}
	}
	fallback := string(resourcelease.StatusFromHTTP(http.StatusServiceUnavailable))
	want := map[string]float64{fallback: 5, string(resourcelease.StatusResourceExhausted): 1, string(resourcelease.StatusFailedPrecondition): 1, "ok": 1}
	if len(got) != len(want) {
		t.Errorf("status label values: got %v, want %v", got, want)
	}
	for s, c := range want {
		if got[s] != c {
			t.Errorf("status %q: got %v calls, want %v (all: %v)", s, got[s], c, got)
		}
	}
	for s := range got {
		if strings.HasPrefix(s, "garbage") || !(s == "ok" || resourcelease.Status(s).Valid()) {
			t.Errorf("status label %q is not a protocol status", s)
		}
	}
}

// TestServersAreHardened checks every server a node starts against slow and
// hostile clients: header deadline and size, idle timeout, connection limit;
// and that the servers carrying long-polls and the diagnostics stream have
// no whole-request read or write timeout, which would cut them.
func TestServersAreHardened(t *testing.T) {
	for _, tc := range []struct{ roles string }{{"dispatcher,diagnostics"}, {"dispatcher"}, {"seeder"}} {
		cfg, err := config.Load(config.Input{Dir: t.TempDir(), Args: []string{
			"--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=http://127.0.0.1:0", "-storage=memory", "-roles=" + tc.roles,
		}})
		if err != nil {
			t.Fatal(err)
		}
		n, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if len(n.servers) == 0 {
			t.Fatalf("%s: no servers", tc.roles)
		}
		for i, srv := range n.servers {
			// The RPC server comes first; the diagnostics one streams.
			long := i == 0 && cfg.Has(config.RoleDispatcher) || cfg.Has(config.RoleDiagnostics)
			if srv.ReadHeaderTimeout != transport.DefaultReadHeaderTimeout || srv.IdleTimeout != transport.DefaultIdleTimeout ||
				srv.MaxHeaderBytes != transport.DefaultMaxHeaderBytes || srv.ConnState == nil {
				t.Errorf("%s server %d: ReadHeaderTimeout %v IdleTimeout %v MaxHeaderBytes %d connection limit %t", tc.roles, i,
					srv.ReadHeaderTimeout, srv.IdleTimeout, srv.MaxHeaderBytes, srv.ConnState != nil)
			}
			if long && (srv.ReadTimeout != 0 || srv.WriteTimeout != 0) {
				t.Errorf("%s server %d: ReadTimeout %v WriteTimeout %v would cut long-polls", tc.roles, i, srv.ReadTimeout, srv.WriteTimeout)
			}
			if !long && (srv.ReadTimeout == 0 || srv.WriteTimeout == 0) {
				t.Errorf("%s server %d (metrics only): ReadTimeout %v WriteTimeout %v, want both set", tc.roles, i, srv.ReadTimeout, srv.WriteTimeout)
			}
		}
	}
}
