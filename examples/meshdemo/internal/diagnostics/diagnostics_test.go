package diagnostics_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/diagnostics"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fake is a set of sources with recorded enqueues.
type fake struct {
	mu       sync.Mutex
	enqueued []*resourcelease.EnqueueRequest
	enqErr   error
	signal   *resourcelease.BackpressureSignal
}

func (f *fake) sources() diagnostics.Sources {
	return diagnostics.Sources{
		Stats: func(context.Context) (*resourcelease.Stats, error) {
			return &resourcelease.Stats{PendingCount: 3, ActiveLeaseCount: 2, DeadLetterCount: 1}, nil
		},
		Enqueue: func(_ context.Context, req *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if f.enqErr != nil {
				return nil, f.enqErr
			}
			f.enqueued = append(f.enqueued, req)
			return &resourcelease.EnqueueResponse{Stats: resourcelease.QueueCounts{PendingCount: 4, ActiveLeaseCount: 2}, SequenceID: 42}, nil
		},
		Peers: func() any {
			return map[string]any{"peers": []map[string]any{{"peerId": "mesh-worker-a", "isHealthy": true}}, "summary": map[string]int{"eligiblePeers": 1}}
		},
		Backpressure: func() (resourcelease.BackpressureSignal, bool) {
			if f.signal == nil {
				return resourcelease.BackpressureSignal{}, false
			}
			return *f.signal, true
		},
		Recent: func() []resourcelease.Event {
			return []resourcelease.Event{{SequenceNumber: 7, EventType: resourcelease.EventEnqueue}, {SequenceNumber: 8, EventType: resourcelease.EventLeaseGranted}}
		},
		LastSequence: func() int64 { return 8 },
		Totals:       func() diagnostics.Totals { return diagnostics.Totals{Enqueued: 5, Completed: 2} },
		Backlog: func(context.Context) (*resourcelease.Backlog, error) {
			return &resourcelease.Backlog{Partitions: []resourcelease.PartitionBacklog{{PartitionKey: "tenant-7", Ready: 9, Leased: 1}},
				PartitionCount: 3, Ready: 12, Delayed: 4, OldestReadySince: time.Now().Add(-time.Minute)}, nil
		},
	}
}

func newServer(t *testing.T, f *fake) *httptest.Server {
	t.Helper()
	hist := diagnostics.NewHistory(3)
	hist.Add(diagnostics.Sample{T: 1, Pending: 1})
	h, err := diagnostics.NewHandler(diagnostics.Options{
		Sources: f.sources(), History: hist, StreamInterval: 10 * time.Millisecond,
		Info:    diagnostics.Info{ServiceName: "svc", Namespace: "ns", Fairness: "partitions", MaxActivePerPartition: 1},
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metric_x 1\n") }),
		Control: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "control "+r.URL.Path) }),
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestEndpoints(t *testing.T) {
	f := &fake{}
	srv := newServer(t, f)
	cases := []struct {
		name, method, path, body string
		status                   int
		contains                 []string
		header                   map[string]string
	}{
		{"page", "GET", "/", "", 200, []string{"<title>ResourceLease Mesh Demo", "EventSource", `id="peers-body"`, `id="items-body"`, `id="token-dialog"`, `id="parts-body"`, `id="delayed"`, `id="oldest-ready"`},
			map[string]string{"Content-Type": "text/html; charset=utf-8", "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}},
		{"lease-health", "GET", "/demo/lease-health", "", 200, []string{`"peerId": "mesh-worker-a"`, `"summary"`}, map[string]string{"Content-Type": "application/json; charset=utf-8"}},
		{"backpressure before any signal", "GET", "/demo/backpressure", "", 204, nil, nil},
		{"replication", "GET", "/demo/replication", "", 200, []string{`"sequenceNumber": 7`, `"eventType": "LeaseGranted"`}, nil},
		{"snapshot", "GET", "/demo/snapshot", "", 200, []string{`"pendingCount": 3`, `"lastSequence": 8`, `"completed": 2`, `"series"`, `"serviceName": "svc"`,
			`"partitionKey": "tenant-7"`, `"partitionCount": 3`, `"delayed": 4`, `"oldestReadyAgeSeconds": `, `"fairness": "partitions"`}, nil},
		{"metrics", "GET", "/metrics", "", 200, []string{"metric_x 1"}, nil},
		{"control mounted", "GET", "/omnirelay/control/peers", "", 200, []string{"control /omnirelay/control/peers"}, nil},
		{"enqueue seed README body", "POST", "/demo/enqueue", `{ "resourceType":"demo.order","resourceId":"external-cli","partitionKey":"tenant-42" }`, 200, []string{`"sequenceId": 42`, `"pendingCount": 4`}, nil},
		{"enqueue delayed", "POST", "/demo/enqueue", `{"resourceType":"demo.order","resourceId":"later","partitionKey":"tenant-42","delayMs":1500}`, 200, []string{`"sequenceId": 42`}, nil},
		{"enqueue bad json", "POST", "/demo/enqueue", `{`, 400, []string{`"status":"invalid-argument"`}, map[string]string{"Rpc-Status": "invalid-argument"}},
		{"enqueue wrong method", "GET", "/demo/enqueue", "", 405, nil, nil},
		{"unknown path", "GET", "/demo/nope", "", 404, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, tc.method, srv.URL+tc.path, tc.body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status: got %d, want %d (body %s)", resp.StatusCode, tc.status, body)
			}
			for _, w := range tc.contains {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %q:\n%s", w, body)
				}
			}
			for k, v := range tc.header {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s: got %q, want %q", k, got, v)
				}
			}
		})
	}
	// The seed README's body got the defaults filled in.
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.enqueued) != 2 {
		t.Fatalf("enqueued %d requests, want 2", len(f.enqueued))
	}
	if d := f.enqueued[1].Delay; d != 1500*time.Millisecond {
		t.Errorf("the delayed enqueue asked for %v, want 1.5s", d)
	}
	it := f.enqueued[0].Payload
	if it.ResourceType != "demo.order" || it.ResourceID != "external-cli" || it.PartitionKey != "tenant-42" {
		t.Errorf("item: got %+v", it)
	}
	if it.PayloadEncoding != "application/json" || string(it.Body) != `{"resourceId":"external-cli"}` {
		t.Errorf("defaults: got encoding %q body %q", it.PayloadEncoding, it.Body)
	}
}

// TestPageContentSecurityPolicy checks that the page's policy allows its
// own script (by the hash of exactly its text, or the browser would block
// it) and nothing else, and forbids framing.
func TestPageContentSecurityPolicy(t *testing.T) {
	srv := newServer(t, &fake{})
	resp, body := do(t, "GET", srv.URL+"/", "")
	csp := resp.Header.Get("Content-Security-Policy")
	start := strings.Index(body, "<script>") + len("<script>")
	end := strings.Index(body, "</script>")
	if start < len("<script>") || end < start {
		t.Fatal("the page has no inline script")
	}
	sum := sha256.Sum256([]byte(body[start:end]))
	want := "script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "';"
	for _, part := range []string{want, "default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'", "form-action 'none'"} {
		if !strings.Contains(csp, part) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, part)
		}
	}
	for _, d := range strings.Split(csp, ";") {
		if strings.HasPrefix(strings.TrimSpace(d), "script-src") && strings.Contains(d, "unsafe") {
			t.Errorf("scripts must be allowed by hash only: %q", d)
		}
	}
}

func TestEnqueueBodyDefaults(t *testing.T) {
	cases := []struct {
		name     string
		body     string
		encoding string
		payload  string
		attrs    map[string]string
		reqID    string
	}{
		{"defaults", `{"resourceType":"t","resourceId":"r","partitionKey":"p"}`, "application/json", `{"resourceId":"r"}`, nil, ""},
		{"object body kept as JSON", `{"resourceType":"t","resourceId":"r","partitionKey":"p","body":{"a":1}}`, "application/json", `{"a":1}`, nil, ""},
		{"string body kept as JSON", `{"resourceType":"t","resourceId":"r","partitionKey":"p","body":"hi"}`, "application/json", `"hi"`, nil, ""},
		{"explicit encoding, attributes, request id", `{"resourceType":"t","resourceId":"r","partitionKey":"p","payloadEncoding":"text/plain","attributes":{"k":"v"},"requestId":"q"}`, "text/plain", `{"resourceId":"r"}`, map[string]string{"k": "v"}, "q"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b diagnostics.EnqueueBody
			if err := json.Unmarshal([]byte(tc.body), &b); err != nil {
				t.Fatal(err)
			}
			it := b.Item()
			if it.PayloadEncoding != tc.encoding || string(it.Body) != tc.payload || it.RequestID != tc.reqID || len(it.Attributes) != len(tc.attrs) {
				t.Errorf("got %+v (body %s)", it, it.Body)
			}
			for k, v := range tc.attrs {
				if it.Attributes[k] != v {
					t.Errorf("attribute %s: got %q, want %q", k, it.Attributes[k], v)
				}
			}
		})
	}
}

func TestEnqueueForwardsWireErrors(t *testing.T) {
	f := &fake{enqErr: resourcelease.ErrBackpressure}
	srv := newServer(t, f)
	resp, body := do(t, "POST", srv.URL+"/demo/enqueue", `{"resourceType":"demo.order","resourceId":"x","partitionKey":"p"}`)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status: got %d, want 429 (%s)", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Rpc-Error-Name"); got != resourcelease.CodeBackpressure {
		t.Errorf("code: got %q, want %q", got, resourcelease.CodeBackpressure)
	}
}

func TestBackpressureAfterSignal(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := &fake{signal: &resourcelease.BackpressureSignal{IsActive: true, PendingCount: 64, ObservedAt: at, HighWatermark: 64, LowWatermark: 16}}
	srv := newServer(t, f)
	resp, body := do(t, "GET", srv.URL+"/demo/backpressure", "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var got resourcelease.BackpressureSignal
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got != *f.signal {
		t.Errorf("got %+v, want %+v", got, *f.signal)
	}
}

func TestStreamSendsSnapshots(t *testing.T) {
	srv := newServer(t, &fake{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/demo/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var snaps int
	for sc.Scan() && snaps < 2 {
		line := sc.Text()
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var s diagnostics.Snapshot
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatalf("bad snapshot %q: %v", data, err)
			}
			if s.Stats == nil || s.Stats.PendingCount != 3 || len(s.Replication.Events) != 2 {
				t.Fatalf("snapshot: %+v", s)
			}
			snaps++
		}
	}
	if snaps < 2 {
		t.Fatalf("got %d snapshots, want 2 (err %v)", snaps, sc.Err())
	}
}

func TestHistoryRing(t *testing.T) {
	cases := []struct {
		name  string
		cap   int
		adds  int
		wantT []int64
	}{
		{"empty", 3, 0, []int64{}},
		{"partial", 3, 2, []int64{1, 2}},
		{"exactly full", 3, 3, []int64{1, 2, 3}},
		{"wrapped", 3, 5, []int64{3, 4, 5}},
		{"min size", 0, 2, []int64{2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := diagnostics.NewHistory(tc.cap)
			for i := 1; i <= tc.adds; i++ {
				h.Add(diagnostics.Sample{T: int64(i)})
			}
			got := h.Samples()
			if len(got) != len(tc.wantT) {
				t.Fatalf("got %d samples, want %d", len(got), len(tc.wantT))
			}
			for i, s := range got {
				if s.T != tc.wantT[i] {
					t.Errorf("sample %d: got T=%d, want %d", i, s.T, tc.wantT[i])
				}
			}
		})
	}
}

func TestEnqueueWithoutClient(t *testing.T) {
	h, err := diagnostics.NewHandler(diagnostics.Options{Sources: diagnostics.Sources{
		Stats: func(context.Context) (*resourcelease.Stats, error) { return &resourcelease.Stats{}, nil },
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, _ := do(t, "POST", srv.URL+"/demo/enqueue", `{"resourceType":"t","resourceId":"r","partitionKey":"p"}`)
	if resp.StatusCode != http.StatusNotImplemented || resp.Header.Get("Rpc-Error-Name") != diagnostics.CodeNoEnqueue {
		t.Fatalf("got %d %q, want 501 %q", resp.StatusCode, resp.Header.Get("Rpc-Error-Name"), diagnostics.CodeNoEnqueue)
	}
	// Without peers, backpressure or replication sources the endpoints are empty, not broken.
	if resp, body := do(t, "GET", srv.URL+"/demo/lease-health", ""); resp.StatusCode != 200 || !strings.Contains(body, `"peers": []`) {
		t.Errorf("lease-health: %d %s", resp.StatusCode, body)
	}
	if resp, body := do(t, "GET", srv.URL+"/demo/replication", ""); resp.StatusCode != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("replication: %d %s", resp.StatusCode, body)
	}
	if resp, _ := do(t, "GET", srv.URL+"/demo/backpressure", ""); resp.StatusCode != 204 {
		t.Errorf("backpressure: %d", resp.StatusCode)
	}
}

func TestNewHandlerNeedsStats(t *testing.T) {
	if _, err := diagnostics.NewHandler(diagnostics.Options{}); err == nil {
		t.Fatal("NewHandler without Stats: got nil error")
	}
}
