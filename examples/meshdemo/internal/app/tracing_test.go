package app_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// collector is an OTLP/HTTP trace receiver that keeps every span it gets.
type collector struct {
	mu    sync.Mutex
	spans []*tracepb.Span
	paths []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var rd io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rd = gz
	}
	body, err := io.ReadAll(rd)
	var req coltracepb.ExportTraceServiceRequest
	if err == nil {
		err = proto.Unmarshal(body, &req)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.paths = append(c.paths, r.URL.Path)
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

// TestOTLPExport runs every role with otlpEndpoint set and checks that the
// spans reach the collector at /v1/traces when the node stops, and that an
// item's enqueue and its processing share one trace.
func TestOTLPExport(t *testing.T) {
	col := &collector{}
	srv := httptest.NewServer(col)
	defer srv.Close()
	dir := t.TempDir()
	r := start(t, dir, fastArgs("-storage=memory", "-worker-failure-rate=0", "--meshDemo:otlpEndpoint="+srv.URL)...)
	if !strings.Contains(r.stdout.String(), "Tracing          OTLP/HTTP to "+srv.URL+"/v1/traces") {
		t.Errorf("the banner does not say where traces go:\n%s", r.stdout)
	}
	base := r.node.HTTPURLs()[0]
	eventually(t, 20*time.Second, "completed items", func() bool {
		var s snapshot
		getJSON(t, base+"/demo/snapshot", &s)
		return s.Totals.Completed >= 3
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run: %v", err)
	}

	col.mu.Lock()
	defer col.mu.Unlock()
	for _, p := range col.paths {
		if p != "/v1/traces" {
			t.Errorf("exported to %s, want /v1/traces", p)
		}
	}
	byTrace := map[string][]*tracepb.Span{}
	for _, s := range col.spans {
		byTrace[string(s.TraceId)] = append(byTrace[string(s.TraceId)], s)
	}
	whole := 0
	for _, spans := range byTrace {
		var names []string
		for _, s := range spans {
			names = append(names, s.Kind.String()+" "+s.Name)
		}
		all := strings.Join(names, ",")
		if strings.Contains(all, "SPAN_KIND_CLIENT resourcelease.mesh/enqueue") &&
			strings.Contains(all, "SPAN_KIND_SERVER resourcelease.mesh/enqueue") &&
			strings.Contains(all, "SPAN_KIND_CONSUMER process demo.order") {
			whole++
		}
	}
	if whole == 0 {
		var sample bytes.Buffer
		for i, s := range col.spans {
			if i < 20 {
				sample.WriteString(s.Kind.String() + " " + s.Name + "\n")
			}
		}
		t.Fatalf("no trace runs seeder → dispatcher → worker among %d spans in %d traces; first spans:\n%s", len(col.spans), len(byTrace), sample.String())
	}
	t.Logf("%d spans in %d traces; %d run producer → dispatcher → worker", len(col.spans), len(byTrace), whole)
}
