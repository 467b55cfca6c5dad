package app

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/internal/testcerts"
)

func TestSecurityWarnings(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	pair := ca.Issue(t, "node")
	tlsArgs := []string{"-tls-cert-file=" + pair.CertFile, "-tls-key-file=" + pair.KeyFile}
	cases := []struct {
		name string
		args []string
		want []string // substrings, one per warning; none for no warning
	}{
		{"loopback", []string{"--meshDemo:rpcUrl=http://127.0.0.1:7420", "--urls=http://127.0.0.1:5158"}, nil},
		{"public, nothing set", []string{"--meshDemo:rpcUrl=http://0.0.0.0:7420"},
			[]string{"producer and worker calls need no token", "rpcUrl http://0.0.0.0:7420/yarpc/v1: bearer tokens and payloads cross the network in clear"}},
		{"public, producer token only", []string{"--meshDemo:rpcUrl=http://0.0.0.0:7420", "-producer-token=p"},
			[]string{"the worker calls need no token: anyone who can reach it can make them; set meshDemo:workerToken", "in clear"}},
		{"public diagnostics only", []string{"--meshDemo:rpcUrl=http://127.0.0.1:7420", "--urls=http://0.0.0.0:5158", "-producer-token=p", "-worker-token=w"},
			[]string{"urls http://0.0.0.0:5158: bearer tokens"}},
		{"public with tokens and TLS", append([]string{"--meshDemo:rpcUrl=https://0.0.0.0:7420", "--urls=https://0.0.0.0:5158", "-producer-token=p", "-worker-token=w"}, tlsArgs...), nil},
		{"a worker process on a public bind serves no dispatcher", []string{"-roles=worker", "--urls=http://0.0.0.0:9464"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := config.Load(config.Input{Dir: t.TempDir(), Args: tc.args})
			if err != nil {
				t.Fatal(err)
			}
			got := securityWarnings(cfg, newDemoAuth(cfg.ProducerToken, cfg.WorkerToken, "generated"))
			if len(got) != len(tc.want) {
				t.Fatalf("got %d warnings %q, want %d", len(got), got, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %d %q lacks %q", i, got[i], w)
				}
			}
		})
	}
}

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

// TestStartWarnsOnPublicBind starts a dispatcher whose configuration says it
// is public (the listener itself stays on loopback, as tests must): it logs
// the warnings, prints them in the banner and generates the admin token.
func TestStartWarnsOnPublicBind(t *testing.T) {
	cfg, err := config.Load(config.Input{Dir: t.TempDir(), Args: []string{
		"--meshDemo:rpcUrl=http://127.0.0.1:0", "--urls=http://127.0.0.1:0", "-storage=memory", "-roles=dispatcher",
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg.RPC.Loopback = false
	var logs lockedBuffer
	n, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if !n.TokenGenerated || n.Token == "" {
		t.Error("no admin token generated on a public bind")
	}
	if !strings.Contains(logs.String(), `level=WARN msg="meshdemo: SECURITY: the dispatcher listens beyond loopback and the producer and worker calls need no token`) {
		t.Errorf("no security warning logged:\n%s", logs.String())
	}
	var banner bytes.Buffer
	n.PrintBanner(&banner)
	for _, w := range []string{"WARNING: the dispatcher listens beyond loopback", "Open roles       observer, producer, worker", "Admin token      " + n.Token} {
		if !strings.Contains(banner.String(), w) {
			t.Errorf("banner lacks %q:\n%s", w, banner.String())
		}
	}
}
