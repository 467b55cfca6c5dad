package main_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Lab files, relative to this directory.
const (
	labCompose    = "docker-compose.yml"
	labPrometheus = "prometheus/prometheus.yml"
	labDashboard  = "grafana/dashboards/resourcelease-mesh-overview.json"
	labDatasource = "grafana/provisioning/datasources/prometheus.yml"
	labProvider   = "grafana/provisioning/dashboards/meshdemo.yml"
	scaleMarker   = "# --- scale-out workers"
)

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile(labDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", labDashboard, err)
	}
	return d
}

// queries returns every PromQL expression of the dashboard, with Grafana's
// $__rate_interval replaced by a concrete range.
func (d dashboard) queries() []string {
	var out []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Expr != "" {
				out = append(out, strings.ReplaceAll(tg.Expr, "$__rate_interval", "1m"))
			}
		}
	}
	return out
}

var (
	promString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promKeywords = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"}
)

// metricNames returns the metric names a PromQL expression reads: its
// identifiers that are not functions, aggregations, keywords, label names or
// label values.
func metricNames(expr string) []string {
	s := promString.ReplaceAllString(expr, " ")
	s = promMatchers.ReplaceAllString(s, " ")
	s = promRange.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		name := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") || slices.Contains(promKeywords, strings.ToLower(name)) {
			continue
		}
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // the tail of a number such as 1e3
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

func TestMetricNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
	}{
		{"resourcelease_pending_items", []string{"resourcelease_pending_items"}},
		{"sum(rate(resourcelease_enqueued_total[$__rate_interval]))", []string{"resourcelease_enqueued_total"}},
		{`sum by (procedure, status) (rate(rpc_requests_total{procedure!~".*::lease", status="ok"}[1m]))`, []string{"rpc_requests_total"}},
		{"histogram_quantile(0.99, sum by (le, sink) (rate(replication_sink_lag_seconds_bucket[5m])))", []string{"replication_sink_lag_seconds_bucket"}},
		{`sum(up{job=~"mesh-.*"}) / count(up)`, []string{"up"}},
		{"a_total / on(job) group_left b_info * 1e3", []string{"a_total", "b_info"}},
		{"max(x) or vector(0)", []string{"x"}},
	}
	for _, tc := range cases {
		if got := metricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("metricNames(%q): got %v, want %v", tc.expr, got, tc.want)
		}
	}
}

// TestLabFilesAgree checks the lab's files against each other without any
// tool: the scrape targets are the compose services and their ports, the
// dashboard uses the provisioned datasource and lands in folder OmniRelay,
// and the compose build points at this Dockerfile.
func TestLabFilesAgree(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	compose, prom := read(labCompose), read(labPrometheus)
	for _, svc := range []string{"mesh-postgres", "mesh-dispatcher", "mesh-dispatcher-b", "mesh-seeder", "mesh-worker-a", "mesh-worker-b", "prometheus", "grafana"} {
		if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(svc) + `:\s*$`).MatchString(compose) {
			t.Errorf("%s has no service %s", labCompose, svc)
		}
	}
	for _, w := range []string{`"7420:7420"`, `"5158:5158"`, `"7421:7420"`, `"5159:5158"`, `"9090:9090"`, `"3000:3000"`, "mesh-pgdata:/var/lib/postgresql/data",
		"MESHDEMO_meshDemo__storage: postgres", "MESHDEMO_meshDemo__postgresUrl: postgres://", "environment: *dispatcher-env",
		"--meshDemo:rpcClientUrl=http://mesh-dispatcher:7420,http://mesh-dispatcher-b:7420", "dockerfile: examples/meshdemo/Dockerfile", "context: ../..",
		"--meshDemo:roles=dispatcher,diagnostics", "--meshDemo:workerPeerId=mesh-worker-a", "--meshDemo:workerPeerId=mesh-worker-b"} {
		if !strings.Contains(compose, w) {
			t.Errorf("%s lacks %q", labCompose, w)
		}
	}
	// Each scrape target is a compose service listening on that port.
	for _, m := range regexp.MustCompile(`"(mesh-[a-z-]+):(\d+)"`).FindAllStringSubmatch(prom, -1) {
		svc, port := m[1], m[2]
		block := compose[strings.Index(compose, "  "+svc+":"):]
		if next := regexp.MustCompile(`(?m)^  [a-z-]+:\s*$`).FindStringIndex(block[2:]); next != nil {
			block = block[:next[0]+2]
		}
		if !strings.Contains(block, "0.0.0.0:"+port) {
			t.Errorf("scrape target %s:%s: service %s does not listen on %s", svc, port, svc, port)
		}
	}
	if _, err := os.Stat("Dockerfile"); err != nil {
		t.Error(err)
	}
	d := readDashboard(t)
	if d.Title != "ResourceLease Mesh Overview" || d.UID == "" {
		t.Errorf("dashboard title %q uid %q", d.Title, d.UID)
	}
	ds := read(labDatasource)
	uid := regexp.MustCompile(`uid:\s*(\S+)`).FindStringSubmatch(ds)
	if uid == nil {
		t.Fatalf("%s has no uid", labDatasource)
	}
	for _, p := range d.Panels {
		if p.Type != "row" && (p.Datasource == nil || p.Datasource.UID != uid[1]) {
			t.Errorf("panel %q does not use datasource %s", p.Title, uid[1])
		}
	}
	if !strings.Contains(read(labProvider), "folder: OmniRelay") || !strings.Contains(read(labProvider), "/var/lib/grafana/dashboards") {
		t.Errorf("%s does not provision folder OmniRelay from /var/lib/grafana/dashboards", labProvider)
	}
	want := []string{"queue depth", "active leases", "enqueue / complete / fail", "replication throughput", "replication lag", "peer health", "rpc traffic", "rpc latency", "backpressure transitions"}
	for _, w := range want {
		if !slices.ContainsFunc(d.Panels, func(p panel) bool { return strings.Contains(strings.ToLower(p.Title), w) }) {
			t.Errorf("the dashboard has no %q panel", w)
		}
	}
}

// TestDockerComposeConfig validates the compose file with docker compose when
// the compose plugin is installed (it is not on every machine: the lab's other
// tests do not need it).
func TestDockerComposeConfig(t *testing.T) {
	if exec.Command("docker", "compose", "version").Run() != nil {
		t.Skip("docker compose is not installed")
	}
	out, err := exec.Command("docker", "compose", "-f", labCompose, "config", "--quiet").CombinedOutput()
	if err != nil {
		t.Fatalf("docker compose config: %v\n%s", err, out)
	}
}

// TestLabPrometheusScrapesDashboardMetrics runs the lab's Prometheus
// configuration, pointed at loopback, against a running mesh (dispatcher,
// seeder, two workers in four processes) and checks through Prometheus's
// HTTP API that every target is up, that every metric named in every
// dashboard query exists and has samples, and that every query evaluates.
// promtool must accept the lab's configuration as shipped and as rewritten.
func TestLabPrometheusScrapesDashboardMetrics(t *testing.T) {
	prometheus := needTool(t, "prometheus")
	promtool := needTool(t, "promtool")
	if out, err := exec.Command(promtool, "check", "config", labPrometheus).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config %s: %v\n%s", labPrometheus, err, out)
	}

	m := newMesh(t)
	startDispatcher(t, m, "--meshDemo:highWatermark=6", "--meshDemo:lowWatermark=2", "--meshDemo:backpressureCooldownSeconds=0.5",
		"--meshDemo:heartbeatIntervalSeconds=0.3")
	// The lab's second dispatcher. On loopback it has a queue of its own
	// (the lab's share one database): it is here to be scraped.
	m2 := newMesh(t)
	startDispatcher(t, m2)
	// Each role serves /metrics on a port the OS picks (m.startRole passes
	// --urls=http://127.0.0.1:0); its banner says which.
	roles := map[string]*proc{
		"mesh-seeder":   m.startRole(t, "mesh-seeder", "--meshDemo:roles=seeder", "--meshDemo:seederIntervalSeconds=0.05"),
		"mesh-worker-a": m.startRole(t, "mesh-worker-a", "--meshDemo:roles=worker", "--meshDemo:workerPeerId=mesh-worker-a", "--meshDemo:workerProcessingSeconds=0.3"),
		"mesh-worker-b": m.startRole(t, "mesh-worker-b", "--meshDemo:roles=worker", "--meshDemo:workerPeerId=mesh-worker-b", "--meshDemo:workerProcessingSeconds=0.3"),
	}

	// The lab's configuration, with the compose services replaced by the
	// loopback processes, a faster scrape, and without the DNS-discovered
	// scale-out job.
	raw, err := os.ReadFile(labPrometheus)
	if err != nil {
		t.Fatal(err)
	}
	cfg := string(raw)
	cut := strings.Index(cfg, scaleMarker)
	if cut < 0 {
		t.Fatalf("%s lacks the marker %q", labPrometheus, scaleMarker)
	}
	cfg = cfg[:cut]
	replacements := map[string]string{"mesh-dispatcher:5158": hostPort(m.base), "mesh-dispatcher-b:5158": hostPort(m2.base)}
	for svc, p := range roles {
		replacements[svc+":9464"] = hostPort(p.metricsURL(t))
	}
	for from, to := range replacements {
		if !strings.Contains(cfg, `"`+from+`"`) {
			t.Fatalf("%s has no target %q", labPrometheus, from)
		}
		cfg = strings.ReplaceAll(cfg, `"`+from+`"`, `"`+to+`"`)
	}
	cfg = strings.ReplaceAll(cfg, "interval: 5s", "interval: 1s")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "config", cfgPath).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config (loopback): %v\n%s", err, out)
	}

	// Prometheus listens on a port the OS picks and logs it (at info).
	prom := &proc{name: "prometheus", done: make(chan struct{})}
	prom.cmd = exec.Command(prometheus, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address=127.0.0.1:0", "--log.level=info")
	startCmd(t, prom)
	var promAddr string
	eventually(t, 30*time.Second, "prometheus to log its listening address", func() bool {
		if m := promListening.FindStringSubmatch(prom.stderr.String()); m != nil {
			promAddr = m[1]
			return true
		}
		if prom.exited() {
			t.Fatalf("prometheus exited: %v\n%s", prom.err, tail(prom.stderr.String(), 4096))
		}
		return false
	})
	api := "http://" + promAddr + "/api/v1/"

	type targetsResp struct {
		Data struct {
			ActiveTargets []struct {
				Labels    map[string]string `json:"labels"`
				Health    string            `json:"health"`
				LastError string            `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	eventually(t, 60*time.Second, "every scrape target up", func() bool {
		if prom.exited() {
			t.Fatalf("prometheus exited: %v\n%s", prom.err, prom.stderr.String())
		}
		var tr targetsResp
		if !getJSON(api+"targets?state=active", &tr) || len(tr.Data.ActiveTargets) != 5 {
			return false
		}
		for _, tg := range tr.Data.ActiveTargets {
			if tg.Health != "up" {
				return false
			}
		}
		return true
	})

	type queryResp struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	query := func(q string) (queryResp, bool) {
		var r queryResp
		status, body, ok := get(api + "query?query=" + url.QueryEscape(q))
		if !ok {
			return r, false
		}
		_ = json.Unmarshal(body, &r)
		return r, status == 200 && r.Status == "success"
	}

	queries := readDashboard(t).queries()
	var names []string
	for _, q := range queries {
		for _, n := range metricNames(q) {
			// The mesh-wide gauges come from dispatchers on a shared
			// database; these loopback ones export the per-dispatcher
			// gauges instead, which every query naming a mesh gauge must
			// fall back to (checked by TestDashboardMeshGauges).
			if !slices.Contains(names, n) && !strings.HasPrefix(n, meshGaugePrefix) {
				names = append(names, n)
			}
		}
	}
	if len(names) < 20 {
		t.Fatalf("only %d metric names found in the dashboard: %v", len(names), names)
	}
	var missing []string
	eventually(t, 60*time.Second, "samples for every metric the dashboard names", func() bool {
		missing = missing[:0]
		for _, n := range names {
			r, ok := query(fmt.Sprintf(`count({__name__=%q})`, n))
			if !ok || len(r.Data.Result) == 0 {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			t.Logf("still without samples: %v", missing)
		}
		return len(missing) == 0
	})
	for _, q := range queries {
		if r, ok := query(q); !ok {
			t.Errorf("dashboard query %q does not evaluate: %s", q, r.Error)
		}
	}
	t.Logf("%d dashboard queries evaluate; all %d metrics they name have samples: %v", len(queries), len(names), names)
}

// meshGaugePrefix starts the names of the mesh-wide gauges of a dispatcher
// on a shared database (the whole mesh's counts, the same on every
// dispatcher); they replace the per-dispatcher resourcelease_* gauges there.
const meshGaugePrefix = "resourcelease_mesh_"

// TestDashboardMeshGauges: a query on a mesh-wide gauge takes its max (the
// dispatchers report the same value, a sum would count it once per
// dispatcher) or the sum of the per-dispatcher gauge of the same name, so
// the panel shows the queue with one dispatcher or several.
func TestDashboardMeshGauges(t *testing.T) {
	seen := 0
	for _, q := range readDashboard(t).queries() {
		for _, n := range metricNames(q) {
			if !strings.HasPrefix(n, meshGaugePrefix) || strings.HasSuffix(n, "_total") {
				continue
			}
			seen++
			plain := "resourcelease_" + strings.TrimPrefix(n, meshGaugePrefix)
			if want := fmt.Sprintf("max(%s) or sum(%s)", n, plain); !strings.Contains(q, want) {
				t.Errorf("query %q: want %q", q, want)
			}
		}
		if strings.Contains(q, "sum(peerhealth_peers_") {
			t.Errorf("query %q: peer health is mesh-wide on a shared database: take its max", q)
		}
	}
	if seen < 4 {
		t.Errorf("only %d queries on mesh gauges, want the queue depth, delayed, active and dead-letter ones", seen)
	}
}

// promListening matches the line Prometheus logs once its web listener is
// bound, with the address it got (logfmt: 2.x and 3.x).
var promListening = regexp.MustCompile(`msg="Listening on".*\baddress=(127\.0\.0\.1:[1-9][0-9]*)`)

// startCmd starts an already configured proc (not the demo binary), killed
// with its process group when the test ends.
func startCmd(t *testing.T, p *proc) {
	t.Helper()
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- %s stderr (last 4 KiB):\n%s", p.name, tail(p.stderr.String(), 4096))
		}
	})
}
