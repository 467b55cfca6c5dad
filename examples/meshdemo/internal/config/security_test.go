package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/internal/testcerts"
)

func TestSecuritySettings(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	pair := ca.Issue(t, "node")
	c, err := load(t, "", []string{"MESHDEMO_meshDemo__workerToken=w"},
		"--meshDemo:rpcUrl=https://0.0.0.0:7420", "--urls=https://localhost:5158", "-producer-token= p ", "--meshDemo:controlToken=a",
		"-tls-cert-file="+pair.CertFile, "-tls-key-file="+pair.KeyFile, "-tls-ca-file="+ca.CertFile, "-tls-client-ca-file="+ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"producer", c.ProducerToken, "p"},
		{"worker", c.WorkerToken, "w"},
		{"admin (controlToken)", c.ControlToken, "a"},
		{"rpc tls", c.RPC.TLS, true},
		{"rpc scheme", c.RPC.Scheme(), "https"},
		{"urls tls", c.URLs[0].TLS, true},
		{"client url", c.RPCClientURL, "https://127.0.0.1:7420/yarpc/v1"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	rpcTLS, err := c.ServerTLS(true)
	if err != nil || rpcTLS == nil || rpcTLS.ClientCAs == nil {
		t.Errorf("RPC listener TLS: %v, %v; want client certificates required", rpcTLS, err)
	}
	httpTLS, err := c.ServerTLS(false)
	if err != nil || httpTLS == nil || httpTLS.ClientCAs != nil {
		t.Errorf("diagnostics TLS: %v, %v; want TLS without client certificates", httpTLS, err)
	}
	clientTLS, err := c.ClientTLS()
	if err != nil || clientTLS == nil || clientTLS.RootCAs == nil || clientTLS.GetClientCertificate == nil {
		t.Errorf("client TLS: %v, %v; want the CA and the client certificate", clientTLS, err)
	}

	c, err = load(t, "", nil, "-admin-token=a", "-control-token=a")
	if err != nil || c.ControlToken != "a" {
		t.Errorf("adminToken and controlToken agreeing: %v, %q", err, c.ControlToken)
	}
	c, err = load(t, "", nil, "-roles=seeder", "--meshDemo:rpcUrl=https://dispatcher.example:7420")
	if err != nil {
		t.Fatalf("an https client needs no certificate: %v", err)
	}
	if cfg, err := c.ClientTLS(); err != nil || cfg == nil {
		t.Errorf("client TLS with the system's roots: %v, %v", cfg, err)
	}
}

func TestSecurityErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testcerts.NewCA(t, dir, "ca")
	pair := ca.Issue(t, "node")
	other := ca.Issue(t, "other")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	cert, key := "-tls-cert-file="+pair.CertFile, "-tls-key-file="+pair.KeyFile
	https := "--meshDemo:rpcUrl=https://127.0.0.1:7420"
	cases := []struct {
		name      string
		args      []string
		field     string
		wantInMsg []string
	}{
		{"https rpcUrl without a certificate", []string{https}, "meshDemo:rpcUrl", []string{"https needs meshDemo:tlsCertFile and meshDemo:tlsKeyFile"}},
		{"https urls without a certificate", []string{"--urls=https://127.0.0.1:5158"}, "urls", []string{"https needs"}},
		{"certificate without key", []string{https, cert}, "meshDemo:tlsCertFile", []string{"needs meshDemo:tlsKeyFile"}},
		{"key without certificate", []string{https, key}, "meshDemo:tlsKeyFile", []string{"needs meshDemo:tlsCertFile"}},
		{"missing certificate", []string{https, "-tls-cert-file=" + missing, key}, "meshDemo:tlsCertFile", []string{missing, "no such file"}},
		{"mismatched key", []string{https, cert, "-tls-key-file=" + other.KeyFile}, "meshDemo:tlsCertFile", []string{"private key does not match"}},
		{"garbage CA", []string{https, cert, key, "-tls-ca-file=" + garbage}, "meshDemo:tlsCaFile", []string{"holds no PEM certificate"}},
		{"garbage client CA", []string{https, cert, key, "-tls-client-ca-file=" + garbage}, "meshDemo:tlsClientCaFile", []string{"holds no PEM certificate"}},
		{"client CA with plain rpcUrl", []string{"--meshDemo:rpcUrl=http://127.0.0.1:7420", cert, key, "-tls-client-ca-file=" + ca.CertFile},
			"meshDemo:tlsClientCaFile", []string{"needs a dispatcher with an https rpcUrl"}},
		{"client CA without a dispatcher", []string{"-roles=worker", https, cert, key, "-tls-client-ca-file=" + ca.CertFile},
			"meshDemo:tlsClientCaFile", []string{"needs a dispatcher"}},
		{"ftp rpcUrl", []string{"--meshDemo:rpcUrl=ftp://127.0.0.1:7420"}, "meshDemo:rpcUrl", []string{"want http or https"}},
		{"adminToken and controlToken differ", []string{"-admin-token=a", "-control-token=b"}, "meshDemo:controlToken", []string{"differs from adminToken"}},
		{"producer and worker share a token", []string{"-producer-token=t", "-worker-token=t"}, "meshDemo:workerToken", []string{"is also producerToken"}},
		{"worker token is the admin's", []string{"-worker-token=t", "-control-token=t"}, "meshDemo:controlToken", []string{"is also workerToken"}},
		{"token with a space", []string{"-worker-token=a b"}, "meshDemo:workerToken", []string{"white space"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, "", nil, tc.args...)
			var cve *config.ConfigValidationError
			if !errors.As(err, &cve) {
				t.Fatalf("got %v, want a *ConfigValidationError", err)
			}
			if cve.Field != tc.field {
				t.Errorf("field: got %q, want %q (%v)", cve.Field, tc.field, err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("message spans lines: %q", msg)
			}
			for _, w := range tc.wantInMsg {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not contain %q", msg, w)
				}
			}
		})
	}
}
