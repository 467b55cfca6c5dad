package transport_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/internal/testcerts"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// pki is a CA with a server and a client certificate, and a second CA that
// nobody trusts with a client certificate of its own.
type pki struct {
	ca, rogue       *testcerts.CA
	server, client  testcerts.Pair
	rogueClient     testcerts.Pair
	rogueServerPair testcerts.Pair
}

func newPKI(t *testing.T) *pki {
	dir := t.TempDir()
	p := &pki{ca: testcerts.NewCA(t, dir, "mesh-ca"), rogue: testcerts.NewCA(t, dir, "rogue-ca")}
	p.server = p.ca.Issue(t, "dispatcher")
	p.client = p.ca.Issue(t, "worker")
	p.rogueClient = p.rogue.Issue(t, "intruder")
	p.rogueServerPair = p.rogue.Issue(t, "impostor")
	return p
}

// startTLS serves the real handler over a new dispatcher with TLS from cfg.
func startTLS(t *testing.T, cfg transport.TLSConfig, scfg transport.ServerConfig) *hardened {
	t.Helper()
	stls, err := cfg.ServerTLS()
	require.NoError(t, err)
	scfg.TLS = stls
	s := startHardened(t, rpcHandler(t, transport.HandlerConfig{}), scfg)
	s.url = "https://" + s.addr + "/yarpc/v1"
	return s
}

// tlsClient is a transport.Client of url with the client side of cfg.
func tlsClient(t *testing.T, url string, cfg transport.TLSConfig) *transport.Client {
	t.Helper()
	ctls, err := cfg.ClientTLS()
	require.NoError(t, err)
	c, err := transport.NewClient(url, transport.ClientConfig{TLS: ctls, Timeout: 5 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// cycle enqueues an item, leases it and completes it through c, with the
// wire's own JSON.
func cycle(t *testing.T, c *transport.Client) {
	t.Helper()
	ctx := context.Background()
	_, err := c.Call(ctx, "resourcelease::enqueue", []byte(`{"payload":`+itemJSON+`}`))
	require.NoError(t, err)
	out, err := c.Call(ctx, "resourcelease::lease", []byte(`{"peerId":"w1","waitMs":1000}`))
	require.NoError(t, err)
	var l struct {
		OwnershipToken json.RawMessage `json:"ownershipToken"`
	}
	require.NoError(t, json.Unmarshal(out, &l))
	require.NotEmpty(t, l.OwnershipToken, "lease response %s", out)
	_, err = c.Call(ctx, "resourcelease::complete", []byte(`{"ownershipToken":`+string(l.OwnershipToken)+`}`))
	require.NoError(t, err)
	out, err = c.Call(ctx, "resourcelease::stats", nil)
	require.NoError(t, err)
	require.JSONEq(t, `{"pendingCount":0,"activeLeaseCount":0,"deadLetterCount":0,"backpressureActive":false}`, string(out))
}

// requireRefused checks a call that failed in the TLS handshake: no
// response, so unavailable with CodeTransportUnavailable.
func requireRefused(t *testing.T, c *transport.Client) {
	t.Helper()
	_, err := c.Call(context.Background(), "resourcelease::stats", nil)
	require.Error(t, err)
	require.Equal(t, resourcelease.StatusUnavailable, resourcelease.StatusOf(err), "%v", err)
	require.Equal(t, transport.CodeTransportUnavailable, resourcelease.CodeOf(err), "%v", err)
}

func TestTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := startTLS(t, transport.TLSConfig{CertFile: p.server.CertFile, KeyFile: p.server.KeyFile}, transport.ServerConfig{})

	t.Run("a client trusting the CA works end to end", func(t *testing.T) {
		cycle(t, tlsClient(t, s.url, transport.TLSConfig{CAFile: p.ca.CertFile}))
	})
	t.Run("a client trusting another CA is refused", func(t *testing.T) {
		requireRefused(t, tlsClient(t, s.url, transport.TLSConfig{CAFile: p.rogue.CertFile}))
	})
	t.Run("a client without the CA uses the system roots and is refused", func(t *testing.T) {
		c, err := transport.NewClient(s.url, transport.ClientConfig{Timeout: 5 * time.Second})
		require.NoError(t, err)
		requireRefused(t, c)
	})
	t.Run("a client checking another server name is refused", func(t *testing.T) {
		requireRefused(t, tlsClient(t, s.url, transport.TLSConfig{CAFile: p.ca.CertFile, ServerName: "elsewhere.example"}))
	})
	t.Run("plain HTTP to the TLS port gets no answer", func(t *testing.T) {
		c, err := transport.NewClient(strings.Replace(s.url, "https", "http", 1), transport.ClientConfig{Timeout: 5 * time.Second})
		require.NoError(t, err)
		_, err = c.Call(context.Background(), "resourcelease::stats", nil)
		require.Error(t, err)
	})
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := startTLS(t, transport.TLSConfig{CertFile: p.server.CertFile, KeyFile: p.server.KeyFile, ClientCAFile: p.ca.CertFile}, transport.ServerConfig{})

	t.Run("a client with a certificate of the CA works end to end", func(t *testing.T) {
		cycle(t, tlsClient(t, s.url, transport.TLSConfig{CAFile: p.ca.CertFile, CertFile: p.client.CertFile, KeyFile: p.client.KeyFile}))
	})
	t.Run("a client without a certificate is refused", func(t *testing.T) {
		requireRefused(t, tlsClient(t, s.url, transport.TLSConfig{CAFile: p.ca.CertFile}))
	})
	t.Run("a client certificate of another CA is refused", func(t *testing.T) {
		requireRefused(t, tlsClient(t, s.url, transport.TLSConfig{CAFile: p.ca.CertFile, CertFile: p.rogueClient.CertFile, KeyFile: p.rogueClient.KeyFile}))
	})
	t.Run("a client that does not trust the server's CA is refused", func(t *testing.T) {
		requireRefused(t, tlsClient(t, s.url, transport.TLSConfig{CAFile: p.rogue.CertFile, CertFile: p.client.CertFile, KeyFile: p.client.KeyFile}))
	})
	t.Run("a server with a certificate of another CA is refused by the client", func(t *testing.T) {
		impostor := startTLS(t, transport.TLSConfig{CertFile: p.rogueServerPair.CertFile, KeyFile: p.rogueServerPair.KeyFile, ClientCAFile: p.ca.CertFile}, transport.ServerConfig{})
		requireRefused(t, tlsClient(t, impostor.url, transport.TLSConfig{CAFile: p.ca.CertFile, CertFile: p.client.CertFile, KeyFile: p.client.KeyFile}))
	})
}

// TestLongPollOverHTTP2: with TLS the server speaks HTTP/2, whose write
// deadlines reset a stream even while nothing is written: a long-poll that
// outlasts WriteTimeout must still end normally.
func TestLongPollOverHTTP2(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := startTLS(t, transport.TLSConfig{CertFile: p.server.CertFile, KeyFile: p.server.KeyFile},
		transport.ServerConfig{WriteTimeout: 50 * time.Millisecond, BodyReadTimeout: 50 * time.Millisecond})
	ctls, err := transport.TLSConfig{CAFile: p.ca.CertFile}.ClientTLS()
	require.NoError(t, err)
	tr := &http.Transport{TLSClientConfig: ctls, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	start := time.Now()
	res, body := rawPost(t, c, s.url, transport.VerbLease, `{"waitMs":400}`, nil)
	require.Equal(t, 2, res.ProtoMajor, "HTTP/2 was not negotiated")
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	require.Equal(t, "null", body)
	require.GreaterOrEqual(t, time.Since(start), 350*time.Millisecond)
}

// TestCertificateRotation: a server certificate rewritten in place is used
// by the next handshake, without a restart.
func TestCertificateRotation(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	s := startTLS(t, transport.TLSConfig{CertFile: p.server.CertFile, KeyFile: p.server.KeyFile}, transport.ServerConfig{})
	ctls, err := transport.TLSConfig{CAFile: p.ca.CertFile}.ClientTLS()
	require.NoError(t, err)
	peer := func() string {
		conn, err := tls.Dial("tcp", s.addr, ctls)
		require.NoError(t, err)
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	require.Equal(t, "dispatcher", peer())
	p.ca.IssueTo(t, "dispatcher-rotated", p.server)
	require.Equal(t, "dispatcher-rotated", peer())

	// A half-written rotation (the key replaced, not yet the certificate)
	// keeps the previous pair in service.
	require.NoError(t, os.WriteFile(p.server.KeyFile, []byte("not a key"), 0o600))
	require.Equal(t, "dispatcher-rotated", peer())
}

func TestTLSConfigErrors(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	require.NoError(t, os.WriteFile(garbage, []byte("hello"), 0o600))
	missing := filepath.Join(dir, "missing.pem")

	server := []struct {
		name string
		cfg  transport.TLSConfig
		want string
	}{
		{"no certificate", transport.TLSConfig{}, "CertFile and KeyFile"},
		{"no key", transport.TLSConfig{CertFile: p.server.CertFile}, "CertFile and KeyFile"},
		{"missing certificate", transport.TLSConfig{CertFile: missing, KeyFile: p.server.KeyFile}, missing},
		{"key of another certificate", transport.TLSConfig{CertFile: p.server.CertFile, KeyFile: p.client.KeyFile}, p.server.CertFile},
		{"missing client CA", transport.TLSConfig{CertFile: p.server.CertFile, KeyFile: p.server.KeyFile, ClientCAFile: missing}, "ClientCAFile"},
		{"client CA without PEM", transport.TLSConfig{CertFile: p.server.CertFile, KeyFile: p.server.KeyFile, ClientCAFile: garbage}, "holds no PEM certificate"},
		{"TLS 1.1", transport.TLSConfig{CertFile: p.server.CertFile, KeyFile: p.server.KeyFile, MinVersion: tls.VersionTLS11}, "below TLS 1.2"},
	}
	for _, tt := range server {
		_, err := tt.cfg.ServerTLS()
		require.ErrorContains(t, err, tt.want, tt.name)
		require.NotContains(t, err.Error(), "\n", tt.name)
	}
	client := []struct {
		name string
		cfg  transport.TLSConfig
		want string
	}{
		{"missing CA", transport.TLSConfig{CAFile: missing}, "CAFile"},
		{"CA without PEM", transport.TLSConfig{CAFile: garbage}, "holds no PEM certificate"},
		{"certificate without key", transport.TLSConfig{CertFile: p.client.CertFile}, "both CertFile and KeyFile"},
		{"garbage key", transport.TLSConfig{CertFile: p.client.CertFile, KeyFile: garbage}, garbage},
	}
	for _, tt := range client {
		_, err := tt.cfg.ClientTLS()
		require.ErrorContains(t, err, tt.want, tt.name)
	}

	cfg, err := transport.TLSConfig{}.ClientTLS()
	require.NoError(t, err, "a client needs no file: the system's roots")
	require.Equal(t, uint16(tls.VersionTLS12), cfg.MinVersion)
	cfg, err = transport.TLSConfig{CertFile: p.server.CertFile, KeyFile: p.server.KeyFile, ClientCAFile: p.ca.CertFile}.ServerTLS()
	require.NoError(t, err)
	require.Equal(t, tls.RequireAndVerifyClientCert, cfg.ClientAuth)

	_, err = transport.NewClient("http://127.0.0.1:1/yarpc/v1", transport.ClientConfig{TLS: cfg})
	require.ErrorContains(t, err, "not https://", "TLS on an http URL would send in clear")
	_, err = transport.NewClient("https://127.0.0.1:1/yarpc/v1", transport.ClientConfig{TLS: cfg, HTTPClient: http.DefaultClient})
	require.ErrorContains(t, err, "exclusive")
}
