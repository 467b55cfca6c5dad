package config_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// load runs config.Load with an optional appsettings.json body.
func load(t *testing.T, file string, env []string, args ...string) (*config.Config, error) {
	t.Helper()
	dir := t.TempDir()
	if file != "" {
		if err := os.WriteFile(filepath.Join(dir, config.FileName), []byte(file), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return config.Load(config.Input{Args: args, Env: env, Dir: dir})
}

func TestDefaults(t *testing.T) {
	c, err := load(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"serviceName", c.ServiceName, "resourcelease-mesh-demo"},
		{"namespace", c.Namespace, "resourcelease.mesh"},
		{"rpc url", c.RPC.URL, "http://127.0.0.1:7420/yarpc/v1"},
		{"rpc addr", c.RPC.Addr, "127.0.0.1:7420"},
		{"rpc loopback", c.RPC.Loopback, true},
		{"rpc path", c.RPCPath, "/yarpc/v1"},
		{"rpcClientUrl", c.RPCClientURL, "http://127.0.0.1:7420/yarpc/v1"},
		{"dataDirectory", c.DataDirectory, "mesh-data"},
		{"workerPeerId", strings.Join(c.WorkerPeerIDs, ","), "mesh-worker-a,mesh-worker-b"},
		{"seederInterval", c.SeederInterval, time.Second},
		{"roles", c.Roles.String(), "dispatcher,diagnostics,seeder,worker"},
		{"urls", len(c.URLs), 1},
		{"urls url", c.URLs[0].URL, "http://localhost:5158"},
		{"urls addr", c.URLs[0].Addr, "127.0.0.1:5158"},
		{"leaseDuration", c.LeaseDuration, 30 * time.Second},
		{"heartbeatInterval", c.HeartbeatInterval, 5 * time.Second},
		{"maxDeliveryAttempts", c.MaxDeliveryAttempts, 5},
		{"requeueDelay", c.RequeueDelay, time.Duration(0)},
		{"capacity", c.Capacity, 512},
		{"maxActivePerPartition", c.MaxActivePerPartition, 0},
		{"fairness", c.Fairness, resourcelease.FairnessFIFO},
		{"deadLetterRetention", c.DeadLetterRetention, time.Duration(0)},
		{"maxDeadLetters", c.MaxDeadLetters, 100_000},
		{"highWatermark", c.HighWatermark, 64},
		{"lowWatermark", c.LowWatermark, 16},
		{"cooldown", c.BackpressureCooldown, 5 * time.Second},
		{"mode", c.BackpressureMode, config.BackpressureWait},
		{"rateLimit", c.RateLimitPerSecond, 0.0},
		{"bpRateLimit", c.BackpressureRateLimitPerSecond, 50.0},
		{"storage", c.Storage, config.StorageSQLite},
		{"controlToken", c.ControlToken, ""},
		{"failureRate", c.WorkerFailureRate, 0.2},
		{"processing", c.WorkerProcessing, 500 * time.Millisecond},
		{"concurrency", c.WorkerConcurrency, 1},
		{"public", c.Public(), false},
		{"refuse", c.RefuseUnhealthyPeers, true},
		{"breakerThreshold", c.BreakerThreshold, 3},
		{"breakerCooldown", c.BreakerCooldown, 30 * time.Second},
		{"logLevel", c.LogLevel, slog.LevelInfo},
		{"source", c.Sources["roles"], "default"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestLayers(t *testing.T) {
	type tc struct {
		name  string
		file  string
		env   []string
		args  []string
		check func(t *testing.T, c *config.Config)
	}
	eq := func(t *testing.T, what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %v, want %v", what, got, want)
		}
	}
	cases := []tc{
		{name: "file section", file: `{"Logging":{"LogLevel":{"Default":"Information"}},"meshDemo":{"roles":["Dispatcher","worker"],"seederIntervalSeconds":2.5,"capacity":100,"workerPeerId":"w1","storage":"memory"}}`,
			check: func(t *testing.T, c *config.Config) {
				eq(t, "roles", c.Roles.String(), "dispatcher,worker")
				eq(t, "interval", c.SeederInterval, 2500*time.Millisecond)
				eq(t, "capacity", c.Capacity, 100)
				eq(t, "peer", strings.Join(c.WorkerPeerIDs, ","), "w1")
				eq(t, "storage", c.Storage, config.StorageMemory)
				eq(t, "source", c.Sources["capacity"], "appsettings.json")
				// without the diagnostics role the listener is a free loopback port
				eq(t, "urls", c.URLs[0].Addr, "127.0.0.1:0")
			}},
		{name: "file keys are case-insensitive and top-level urls", file: `{"MESHDEMO":{"RPCURL":"http://0.0.0.0:9000"},"urls":"http://127.0.0.1:6000"}`,
			check: func(t *testing.T, c *config.Config) {
				eq(t, "rpc", c.RPC.Addr, ":9000")
				eq(t, "client", c.RPCClientURL, "http://127.0.0.1:9000/yarpc/v1")
				eq(t, "urls", c.URLs[0].Addr, "127.0.0.1:6000")
			}},
		{name: "env", env: []string{"PATH=/bin", "MESHDEMO_meshDemo__roles=dispatcher,worker", "MESHDEMO_meshDemo__leaseDurationSeconds=0.25", "MESHDEMO_urls=http://127.0.0.1:7000"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "roles", c.Roles.String(), "dispatcher,worker")
				eq(t, "lease", c.LeaseDuration, 250*time.Millisecond)
				eq(t, "urls", c.URLs[0].Addr, "127.0.0.1:7000")
				eq(t, "source", c.Sources["roles"], "env MESHDEMO_meshDemo__roles")
			}},
		{name: "env indexed array", env: []string{"MESHDEMO_meshDemo__roles__1=worker", "MESHDEMO_meshDemo__roles__0=seeder"},
			check: func(t *testing.T, c *config.Config) { eq(t, "roles", c.Roles.String(), "seeder,worker") }},
		{name: "cli documented form", args: []string{"--", "--meshDemo:roles=dispatcher,diagnostics", "--meshDemo:rpcUrl=http://0.0.0.0:7420", "--urls=http://0.0.0.0:5158"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "roles", c.Roles.String(), "dispatcher,diagnostics")
				eq(t, "rpc", c.RPC.URL, "http://0.0.0.0:7420/yarpc/v1")
				eq(t, "rpc addr", c.RPC.Addr, ":7420")
				eq(t, "client", c.RPCClientURL, "http://127.0.0.1:7420/yarpc/v1")
				eq(t, "urls", c.URLs[0].Addr, ":5158")
				eq(t, "public", c.Public(), true)
			}},
		{name: "cli documented form with separate value", args: []string{"--meshDemo:workerPeerId", "mesh-worker-a", "--meshDemo:roles", "worker", "--meshDemo:rpcUrl", "http://127.0.0.1:7420"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "peer", strings.Join(c.WorkerPeerIDs, ","), "mesh-worker-a")
				eq(t, "roles", c.Roles.String(), "worker")
				eq(t, "client", c.RPCClientURL, "http://127.0.0.1:7420/yarpc/v1")
			}},
		{name: "cli indexed and bare key=value", args: []string{"--meshDemo:roles:0=worker", "meshDemo:capacity=70"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "roles", c.Roles.String(), "worker")
				eq(t, "capacity", c.Capacity, 70)
			}},
		{name: "go flags", args: []string{"-roles", "WORKER,Seeder", "-rpc-url=http://127.0.0.1:7500/rpc", "--data-dir", "/tmp/x", "-worker-peer-id=w9", "-urls", "http://127.0.0.1:0", "-backpressure-mode", "Reject", "-high-watermark=10"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "roles", c.Roles.String(), "seeder,worker")
				eq(t, "rpc path", c.RPCPath, "/rpc")
				eq(t, "client", c.RPCClientURL, "http://127.0.0.1:7500/rpc")
				eq(t, "dir", c.DataDirectory, "/tmp/x")
				eq(t, "peer", c.WorkerPeerIDs[0], "w9")
				eq(t, "urls", c.URLs[0].Addr, "127.0.0.1:0")
				eq(t, "mode", c.BackpressureMode, config.BackpressureReject)
				eq(t, "low derived", c.LowWatermark, 2)
			}},
		{name: "hostname in peer id", args: []string{"-worker-peer-id=mesh-worker-{hostname}"},
			check: func(t *testing.T, c *config.Config) {
				host, _ := os.Hostname()
				eq(t, "peer", c.WorkerPeerIDs[0], "mesh-worker-"+host)
			}},
		{name: "json array on the command line", args: []string{`-roles=["dispatcher","seeder"]`},
			check: func(t *testing.T, c *config.Config) { eq(t, "roles", c.Roles.String(), "dispatcher,seeder") }},
		{name: "rpcUrl path next to the reserved ones", args: []string{"-rpc-url=http://127.0.0.1:7500/metrics-rpc/"},
			check: func(t *testing.T, c *config.Config) { eq(t, "rpc path", c.RPCPath, "/metrics-rpc/") }},
		{name: "one millisecond is the smallest duration", args: []string{"-seeder-interval-seconds=0.001", "-lease-duration-seconds=0.001", "-requeue-delay-seconds=0"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "seed", c.SeederInterval, time.Millisecond)
				eq(t, "lease", c.LeaseDuration, time.Millisecond)
				eq(t, "requeue", c.RequeueDelay, time.Duration(0))
			}},
		{name: "capacity equal to high watermark", args: []string{"-capacity=64", "-high-watermark=64"},
			check: func(t *testing.T, c *config.Config) { eq(t, "capacity", c.Capacity, 64) }},
		{name: "explicit rpcClientUrl", args: []string{"-rpc-client-url", "http://mesh-dispatcher:7420"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "client", c.RPCClientURL, "http://mesh-dispatcher:7420/yarpc/v1")
			}},
		{name: "rpcClientUrl comma list", args: []string{"-rpc-client-url", "http://d1:7420, http://d2:7420/rpc"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "client", c.RPCClientURL, "http://d1:7420/yarpc/v1")
				eq(t, "clients", strings.Join(c.RPCClientURLs, " "), "http://d1:7420/yarpc/v1 http://d2:7420/rpc")
			}},
		{name: "rpcClientUrl JSON array in the file", file: `{"meshDemo":{"rpcClientUrl":["http://d1:7420","http://0.0.0.0:7421"]}}`,
			check: func(t *testing.T, c *config.Config) {
				eq(t, "clients", strings.Join(c.RPCClientURLs, " "), "http://d1:7420/yarpc/v1 http://127.0.0.1:7421/yarpc/v1")
			}},
		{name: "rpcClientUrl indexed env", env: []string{"MESHDEMO_meshDemo__rpcClientUrl__0=http://d1:7420", "MESHDEMO_meshDemo__rpcClientUrl__1=http://d2:7420"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "clients", strings.Join(c.RPCClientURLs, " "), "http://d1:7420/yarpc/v1 http://d2:7420/yarpc/v1")
			}},
		{name: "rpcClientUrl derived is a list of one",
			check: func(t *testing.T, c *config.Config) {
				eq(t, "clients", strings.Join(c.RPCClientURLs, " "), "http://127.0.0.1:7420/yarpc/v1")
			}},
		{name: "urls list with semicolons and ASP.NET wildcard", args: []string{"--urls=http://*:5158;http://localhost:5159"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "n", len(c.URLs), 2)
				eq(t, "0", c.URLs[0].Addr, ":5158")
				eq(t, "1", c.URLs[1].Addr, "127.0.0.1:5159")
			}},
		{name: "precedence: cli over env over file over default",
			file: `{"meshDemo":{"capacity":1,"highWatermark":2,"lowWatermark":1,"namespace":"from-file","serviceName":"svc-file"}}`,
			env:  []string{"MESHDEMO_meshDemo__capacity=2", "MESHDEMO_meshDemo__highWatermark=3"},
			args: []string{"-capacity=3"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "capacity (cli)", c.Capacity, 3)
				eq(t, "highWatermark (env)", c.HighWatermark, 3)
				eq(t, "lowWatermark (file)", c.LowWatermark, 1)
				eq(t, "namespace (file)", c.Namespace, "from-file")
				eq(t, "heartbeat (default)", c.HeartbeatInterval, 5*time.Second)
				eq(t, "src cli", c.Sources["capacity"], "command line")
				eq(t, "src env", c.Sources["highWatermark"], "env MESHDEMO_meshDemo__highWatermark")
				eq(t, "src file", c.Sources["namespace"], "appsettings.json")
			}},
		{name: "later cli wins", args: []string{"-capacity=300", "--meshDemo:capacity=400"},
			check: func(t *testing.T, c *config.Config) { eq(t, "capacity", c.Capacity, 400) }},
		{name: "every key", args: []string{
			"--meshDemo:serviceName=s", "--meshDemo:namespace=n", "--meshDemo:rpcUrl=http://127.0.0.1:1", "--meshDemo:rpcClientUrl=https://example.com",
			"--meshDemo:dataDirectory=d", "--meshDemo:workerPeerId=p", "--meshDemo:seederIntervalSeconds=0.1", "--meshDemo:roles=worker",
			"--urls=http://127.0.0.1:2", "--meshDemo:leaseDurationSeconds=3", "--meshDemo:heartbeatIntervalSeconds=1.5", "--meshDemo:maxDeliveryAttempts=9",
			"--meshDemo:requeueDelaySeconds=0.5", "--meshDemo:capacity=99", "--meshDemo:highWatermark=20", "--meshDemo:lowWatermark=5",
			"--meshDemo:backpressureCooldownSeconds=0", "--meshDemo:backpressureMode=reject", "--meshDemo:rateLimitPerSecond=10",
			"--meshDemo:backpressureRateLimitPerSecond=0", "--meshDemo:storage=memory", "--meshDemo:controlToken=tok",
			"--meshDemo:workerFailureRate=0", "--meshDemo:refuseUnhealthyPeers=false", "--meshDemo:breakerThreshold=5", "--meshDemo:breakerCooldownSeconds=2.5", "--meshDemo:logLevel=DEBUG", "--meshDemo:workerProcessingSeconds=2", "--meshDemo:workerConcurrency=3",
			"--meshDemo:otlpEndpoint=http://collector:4318", "--meshDemo:maxActivePerPartition=1", "--meshDemo:fairness=Partitions",
			"--meshDemo:deadLetterRetentionSeconds=3600", "--meshDemo:maxDeadLetters=-1"},
			check: func(t *testing.T, c *config.Config) {
				eq(t, "maxActivePerPartition", c.MaxActivePerPartition, 1)
				eq(t, "fairness", c.Fairness, resourcelease.FairnessPartitions)
				eq(t, "deadLetterRetention", c.DeadLetterRetention, time.Hour)
				eq(t, "maxDeadLetters", c.MaxDeadLetters, -1)
				eq(t, "otlpEndpoint", c.OTLPEndpoint, "http://collector:4318")
				eq(t, "serviceName", c.ServiceName, "s")
				eq(t, "namespace", c.Namespace, "n")
				eq(t, "rpc", c.RPC.Addr, "127.0.0.1:1")
				eq(t, "client", c.RPCClientURL, "https://example.com/yarpc/v1")
				eq(t, "dir", c.DataDirectory, "d")
				eq(t, "peer", c.WorkerPeerIDs[0], "p")
				eq(t, "seed", c.SeederInterval, 100*time.Millisecond)
				eq(t, "roles", c.Roles.String(), "worker")
				eq(t, "urls", c.URLs[0].Addr, "127.0.0.1:2")
				eq(t, "lease", c.LeaseDuration, 3*time.Second)
				eq(t, "hb", c.HeartbeatInterval, 1500*time.Millisecond)
				eq(t, "attempts", c.MaxDeliveryAttempts, 9)
				eq(t, "requeue", c.RequeueDelay, 500*time.Millisecond)
				eq(t, "capacity", c.Capacity, 99)
				eq(t, "high", c.HighWatermark, 20)
				eq(t, "low", c.LowWatermark, 5)
				eq(t, "cooldown", c.BackpressureCooldown, time.Duration(0))
				eq(t, "mode", c.BackpressureMode, config.BackpressureReject)
				eq(t, "rate", c.RateLimitPerSecond, 10.0)
				eq(t, "bp rate", c.BackpressureRateLimitPerSecond, 0.0)
				eq(t, "storage", c.Storage, config.StorageMemory)
				eq(t, "token", c.ControlToken, "tok")
				eq(t, "failure", c.WorkerFailureRate, 0.0)
				eq(t, "refuse", c.RefuseUnhealthyPeers, false)
				eq(t, "breakerThreshold", c.BreakerThreshold, 5)
				eq(t, "breakerCooldown", c.BreakerCooldown, 2500*time.Millisecond)
				eq(t, "logLevel", c.LogLevel, slog.LevelDebug)
				eq(t, "processing", c.WorkerProcessing, 2*time.Second)
				eq(t, "concurrency", c.WorkerConcurrency, 3)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.file, tc.env, tc.args...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			tc.check(t, c)
		})
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name      string
		file      string
		env       []string
		args      []string
		field     string
		wantInMsg []string
	}{
		{name: "diagnostics without dispatcher", args: []string{"--meshDemo:roles=diagnostics,worker"}, field: "meshDemo:roles", wantInMsg: []string{`"diagnostics,worker"`, "requires the dispatcher"}},
		{name: "unknown role", args: []string{"-roles=dispatcher,janitor"}, field: "meshDemo:roles", wantInMsg: []string{`"janitor"`}},
		{name: "empty roles", env: []string{"MESHDEMO_meshDemo__roles= , "}, field: "meshDemo:roles", wantInMsg: []string{"empty", "env MESHDEMO_meshDemo__roles"}},
		{name: "unparsable int", args: []string{"--meshDemo:capacity=lots"}, field: "meshDemo:capacity", wantInMsg: []string{`"lots"`, "integer"}},
		{name: "unparsable seconds", env: []string{"MESHDEMO_meshDemo__leaseDurationSeconds=soon"}, field: "meshDemo:leaseDurationSeconds", wantInMsg: []string{`"soon"`}},
		{name: "zero lease", args: []string{"-lease-duration-seconds=0"}, field: "meshDemo:leaseDurationSeconds", wantInMsg: []string{`"0"`}},
		{name: "sub-nanosecond seeder interval", args: []string{"--meshDemo:seederIntervalSeconds=0.0000000001"}, field: "meshDemo:seederIntervalSeconds", wantInMsg: []string{`"0.0000000001"`, "at least 0.001 seconds"}},
		{name: "sub-millisecond lease", args: []string{"-lease-duration-seconds=0.0000001"}, field: "meshDemo:leaseDurationSeconds", wantInMsg: []string{`"0.0000001"`, "at least 0.001 seconds"}},
		{name: "sub-nanosecond heartbeat", env: []string{"MESHDEMO_meshDemo__heartbeatIntervalSeconds=1e-12"}, field: "meshDemo:heartbeatIntervalSeconds", wantInMsg: []string{`"1e-12"`, "at least 0.001 seconds", "env MESHDEMO_meshDemo__heartbeatIntervalSeconds"}},
		{name: "sub-millisecond processing", args: []string{"-worker-processing-seconds=0.0000000001"}, field: "meshDemo:workerProcessingSeconds", wantInMsg: []string{"zero or at least 0.001 seconds"}},
		{name: "sub-millisecond requeue delay", args: []string{"-requeue-delay-seconds=0.0000005"}, field: "meshDemo:requeueDelaySeconds", wantInMsg: []string{"zero or at least 0.001 seconds"}},
		{name: "sub-millisecond cooldown", file: `{"meshDemo":{"backpressureCooldownSeconds":1e-10}}`, field: "meshDemo:backpressureCooldownSeconds", wantInMsg: []string{"zero or at least 0.001 seconds", "appsettings.json"}},
		{name: "negative requeue delay", args: []string{"-requeue-delay-seconds=-1"}, field: "meshDemo:requeueDelaySeconds", wantInMsg: []string{`"-1"`}},
		{name: "negative rate", args: []string{"-rate-limit-per-second=-3"}, field: "meshDemo:rateLimitPerSecond", wantInMsg: []string{`"-3"`}},
		{name: "bad mode", args: []string{"-backpressure-mode=drop"}, field: "meshDemo:backpressureMode", wantInMsg: []string{`"drop"`}},
		{name: "bad storage", args: []string{"-storage=postgres"}, field: "meshDemo:storage", wantInMsg: []string{`"postgres"`}},
		{name: "negative maxActivePerPartition", args: []string{"-max-active-per-partition=-1"}, field: "meshDemo:maxActivePerPartition", wantInMsg: []string{`"-1"`, "at least 0"}},
		{name: "bad fairness", args: []string{"-fairness=random"}, field: "meshDemo:fairness", wantInMsg: []string{`"random"`, "fifo or partitions"}},
		{name: "negative dead-letter retention", env: []string{"MESHDEMO_meshDemo__deadLetterRetentionSeconds=-5"}, field: "meshDemo:deadLetterRetentionSeconds", wantInMsg: []string{`"-5"`, "env MESHDEMO_meshDemo__deadLetterRetentionSeconds"}},
		{name: "zero maxDeadLetters", file: `{"meshDemo":{"maxDeadLetters":0}}`, field: "meshDemo:maxDeadLetters", wantInMsg: []string{`"0"`, "-1 for no bound", "appsettings.json"}},
		{name: "bad bool", args: []string{"-refuse-unhealthy-peers=maybe"}, field: "meshDemo:refuseUnhealthyPeers", wantInMsg: []string{`"maybe"`}},
		{name: "breaker threshold of one", args: []string{"-breaker-threshold=1"}, field: "meshDemo:breakerThreshold", wantInMsg: []string{`"1"`, "at least 2"}},
		{name: "zero breaker cool-down", args: []string{"--meshDemo:breakerCooldownSeconds=0"}, field: "meshDemo:breakerCooldownSeconds", wantInMsg: []string{`"0"`, "more than zero"}},
		{name: "bad log level", args: []string{"-log-level=loud"}, field: "meshDemo:logLevel", wantInMsg: []string{`"loud"`}},
		{name: "bad failure rate", args: []string{"-worker-failure-rate=2"}, field: "meshDemo:workerFailureRate", wantInMsg: []string{`"2"`}},
		{name: "capacity below high watermark", args: []string{"-capacity=10"}, field: "meshDemo:capacity", wantInMsg: []string{`"10"`, "command line", "highWatermark (64, from default)"}},
		{name: "capacity below configured high watermark", file: `{"meshDemo":{"capacity":20}}`, env: []string{"MESHDEMO_meshDemo__highWatermark=21"}, field: "meshDemo:capacity", wantInMsg: []string{`"20"`, "appsettings.json", "highWatermark (21, from env MESHDEMO_meshDemo__highWatermark)"}},
		{name: "low above high", args: []string{"-high-watermark=10", "-low-watermark=10"}, field: "meshDemo:lowWatermark", wantInMsg: []string{`"10"`}},
		{name: "duplicate peer", args: []string{"-worker-peer-id=a,a"}, field: "meshDemo:workerPeerId", wantInMsg: []string{`"a,a"`}},
		{name: "rpcUrl not a url", args: []string{"--meshDemo:rpcUrl=7420"}, field: "meshDemo:rpcUrl", wantInMsg: []string{`"7420"`}},
		{name: "rpcUrl bad port", args: []string{"--meshDemo:rpcUrl=http://127.0.0.1:99999"}, field: "meshDemo:rpcUrl", wantInMsg: []string{`"http://127.0.0.1:99999"`}},
		{name: "rpcUrl path is the control prefix", args: []string{"--meshDemo:rpcUrl=http://127.0.0.1:0/omnirelay/control/"}, field: "meshDemo:rpcUrl", wantInMsg: []string{`"http://127.0.0.1:0/omnirelay/control/"`, "reserved", "command line"}},
		{name: "rpcUrl path equals the control prefix", args: []string{"--meshDemo:rpcUrl=http://127.0.0.1:0/omnirelay/control"}, field: "meshDemo:rpcUrl", wantInMsg: []string{"reserved"}},
		{name: "rpcUrl path under the control prefix", args: []string{"-rpc-url=http://127.0.0.1:0/omnirelay/control/drain"}, field: "meshDemo:rpcUrl", wantInMsg: []string{"reserved"}},
		{name: "rpcUrl path is the control prefix escaped", args: []string{"-rpc-url=http://127.0.0.1:0/%6Fmnirelay/control/"}, field: "meshDemo:rpcUrl", wantInMsg: []string{"reserved"}},
		{name: "rpcUrl path is metrics", env: []string{"MESHDEMO_meshDemo__rpcUrl=http://127.0.0.1:0/metrics"}, field: "meshDemo:rpcUrl", wantInMsg: []string{`"http://127.0.0.1:0/metrics"`, "reserved", "env MESHDEMO_meshDemo__rpcUrl"}},
		{name: "rpcUrl path under metrics", args: []string{"-rpc-url=http://127.0.0.1:0/metrics/rpc"}, field: "meshDemo:rpcUrl", wantInMsg: []string{"reserved"}},
		{name: "rpcUrl unclean path", args: []string{"-rpc-url=http://127.0.0.1:0/a/../yarpc"}, field: "meshDemo:rpcUrl", wantInMsg: []string{"clean"}},
		{name: "rpcUrl empty path segment", args: []string{"-rpc-url=http://127.0.0.1:0//yarpc"}, field: "meshDemo:rpcUrl", wantInMsg: []string{"clean"}},
		{name: "rpcUrl https", args: []string{"--meshDemo:rpcUrl=https://127.0.0.1:7420"}, field: "meshDemo:rpcUrl", wantInMsg: []string{"https"}},
		{name: "urls bad", args: []string{"--urls=http://localhost:abc"}, field: "urls", wantInMsg: []string{`"http://localhost:abc"`}},
		{name: "urls with path", args: []string{"--urls=http://localhost:5158/x"}, field: "urls", wantInMsg: []string{"path"}},
		{name: "otlpEndpoint without a scheme", args: []string{"-otlp-endpoint=localhost:4318"}, field: "meshDemo:otlpEndpoint", wantInMsg: []string{`"localhost:4318"`, "OTLP/HTTP"}},
		{name: "otlpEndpoint grpc", args: []string{"--meshDemo:otlpEndpoint=grpc://localhost:4317"}, field: "meshDemo:otlpEndpoint", wantInMsg: []string{"http(s) URL"}},
		{name: "rpcClientUrl bad", args: []string{"-rpc-client-url=ftp://x"}, field: "meshDemo:rpcClientUrl", wantInMsg: []string{`"ftp://x"`}},
		{name: "rpcClientUrl bad in a list", args: []string{"-rpc-client-url=http://d1:7420,ftp://x"}, field: "meshDemo:rpcClientUrl", wantInMsg: []string{`"ftp://x"`, "http(s)"}},
		{name: "rpcClientUrl twice", args: []string{"-rpc-client-url=http://d1:7420,http://d1:7420/yarpc/v1"}, field: "meshDemo:rpcClientUrl", wantInMsg: []string{"given twice"}},
		{name: "rpcClientUrl mixed schemes", args: []string{`-rpc-client-url=["http://d1:7420","https://d2:7420"]`}, field: "meshDemo:rpcClientUrl", wantInMsg: []string{"mixes http:// and https://"}},
		{name: "rpcClientUrl empty list", args: []string{"-rpc-client-url= , "}, field: "meshDemo:rpcClientUrl", wantInMsg: []string{"empty"}},
		{name: "rpcClientUrl bad JSON", file: `{"meshDemo":{"rpcClientUrl":"[\"http://d1"}}`, field: "meshDemo:rpcClientUrl", wantInMsg: []string{"JSON array"}},
		{name: "unknown key on cli", args: []string{"--meshDemo:colour=blue"}, field: "meshDemo:colour", wantInMsg: []string{"unknown key", "command line"}},
		{name: "unknown flag", args: []string{"-colour", "blue"}, field: "-colour", wantInMsg: []string{"unknown flag"}},
		{name: "unknown env key", env: []string{"MESHDEMO_meshDemo__colour=blue"}, field: "meshDemo:colour", wantInMsg: []string{"env MESHDEMO_meshDemo__colour"}},
		{name: "env single underscore", env: []string{"MESHDEMO_meshDemo_roles=worker"}, field: "meshDemo_roles", wantInMsg: []string{"unknown key"}},
		{name: "unknown file key", file: `{"meshDemo":{"colour":"blue"}}`, field: "meshDemo:colour", wantInMsg: []string{"appsettings.json"}},
		{name: "bad file json", file: `{"meshDemo":`, field: "appsettings.json", wantInMsg: []string{"JSON"}},
		{name: "bad file value", file: `{"meshDemo":{"capacity":"x"}}`, field: "meshDemo:capacity", wantInMsg: []string{`"x"`, "appsettings.json"}},
		{name: "file object value", file: `{"meshDemo":{"roles":{"a":1}}}`, field: "meshDemo:roles"},
		{name: "indexed non-list", args: []string{"--meshDemo:capacity:0=1"}, field: "meshDemo:capacity"},
		{name: "missing value", args: []string{"-roles"}, field: "-roles", wantInMsg: []string{"needs a value"}},
		{name: "positional", args: []string{"worker"}, field: "worker", wantInMsg: []string{"unexpected argument"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.file, tc.env, tc.args...)
			var cve *config.ConfigValidationError
			if !errors.As(err, &cve) {
				t.Fatalf("got %v, want a *ConfigValidationError", err)
			}
			if cve.Field != tc.field {
				t.Errorf("field: got %q, want %q", cve.Field, tc.field)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message spans lines: %q", msg)
			}
			if !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name %q", msg, tc.field)
			}
			for _, w := range tc.wantInMsg {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var out bytes.Buffer
	_, err := config.Load(config.Input{Args: []string{"-h"}, Dir: t.TempDir(), Help: &out})
	if !errors.Is(err, config.ErrHelp) {
		t.Fatalf("got %v, want ErrHelp", err)
	}
	for _, w := range []string{"meshDemo:rpcUrl", "-rpc-url", "meshDemo:backpressureRateLimitPerSecond", "urls", "MESHDEMO_meshDemo__<key>"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("usage lacks %q", w)
		}
	}
}

// TestShippedAppSettings checks that examples/meshdemo/appsettings.json
// loads and spells out exactly the defaults, so running from that directory
// behaves like running from anywhere else.
func TestShippedAppSettings(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", config.FileName))
	if err != nil {
		t.Fatal(err)
	}
	withFile, err := load(t, string(b), nil)
	if err != nil {
		t.Fatalf("the shipped %s: %v", config.FileName, err)
	}
	defaults, err := load(t, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	withFile.Sources, defaults.Sources = nil, nil
	if !reflect.DeepEqual(withFile, defaults) {
		t.Errorf("the shipped %s differs from the defaults:\n got %+v\nwant %+v", config.FileName, withFile, defaults)
	}
}
