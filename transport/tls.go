package transport

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// TLSConfig names the PEM files of a TLS or mutual-TLS setup. ServerTLS
// and ClientTLS turn it into a *tls.Config for ServerConfig.TLS and
// ClientConfig.TLS (or any http.Server and http.Transport).
//
// Certificates and keys are read again when their files change (checked at
// each handshake), so short-lived certificates rotate without a restart;
// while a rotation is half-written the previous pair stays in use. CA files
// are read once.
type TLSConfig struct {
	// CertFile and KeyFile are the PEM certificate (chain) and private key:
	// the server's own for ServerTLS (required), or the client certificate
	// for ClientTLS, presented when the server asks for one (mutual TLS;
	// optional). Both or neither.
	CertFile string
	KeyFile  string
	// CAFile is the PEM bundle of the CAs ClientTLS trusts to sign the
	// server's certificate. Defaults to the system's roots. ServerTLS
	// ignores it.
	CAFile string
	// ClientCAFile, when set, makes ServerTLS require every client to present
	// a certificate signed by one of the CAs in this PEM bundle (mutual TLS:
	// a client without one fails the handshake). ClientTLS ignores it.
	ClientCAFile string
	// ServerName is the name ClientTLS checks the server's certificate
	// against. Defaults to the host of the URL dialled.
	ServerName string
	// MinVersion is the lowest TLS version accepted. Defaults to TLS 1.2;
	// lower is an error.
	MinVersion uint16
}

// ServerTLS returns the server side: CertFile and KeyFile (required) as the
// certificate, and, with ClientCAFile, client certificates required and
// verified (tls.RequireAndVerifyClientCert). A file that cannot be read or
// parsed is an error naming it.
func (c TLSConfig) ServerTLS() (*tls.Config, error) {
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, tlsError(nil, "transport: TLS: a server needs CertFile and KeyFile")
	}
	cfg, err := c.base()
	if err != nil {
		return nil, err
	}
	kp, err := newKeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, err
	}
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return kp.get() }
	if c.ClientCAFile != "" {
		if cfg.ClientCAs, err = loadCAs("ClientCAFile", c.ClientCAFile); err != nil {
			return nil, err
		}
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLS returns the client side: the server verified against CAFile (or
// the system's roots) and ServerName, and CertFile and KeyFile, when set,
// presented as the client certificate. A file that cannot be read or parsed
// is an error naming it.
func (c TLSConfig) ClientTLS() (*tls.Config, error) {
	cfg, err := c.base()
	if err != nil {
		return nil, err
	}
	cfg.ServerName = c.ServerName
	if c.CAFile != "" {
		if cfg.RootCAs, err = loadCAs("CAFile", c.CAFile); err != nil {
			return nil, err
		}
	}
	if c.CertFile != "" || c.KeyFile != "" {
		if c.CertFile == "" || c.KeyFile == "" {
			return nil, tlsError(nil, "transport: TLS: a client certificate needs both CertFile and KeyFile")
		}
		kp, err := newKeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, err
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return kp.get() }
	}
	return cfg, nil
}

func (c TLSConfig) base() (*tls.Config, error) {
	v := c.MinVersion
	switch {
	case v == 0:
		v = tls.VersionTLS12
	case v < tls.VersionTLS12:
		return nil, tlsError(nil, "transport: TLS: MinVersion %s is below TLS 1.2", tls.VersionName(v))
	}
	return &tls.Config{MinVersion: v}, nil
}

// tlsError is the invalid-argument error of a TLS setting, with its cause
// (a file that cannot be read, say) in Err.
func tlsError(cause error, format string, args ...any) error {
	return &resourcelease.Error{Status: resourcelease.StatusInvalidArgument, Code: resourcelease.CodeInvalidArgument,
		Message: fmt.Sprintf(format, args...), Err: cause}
}

// loadCAs reads a PEM bundle of CA certificates; field names it in errors.
func loadCAs(field, path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, tlsError(err, "transport: TLS: %s: %v", field, err)
	}
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, tlsError(err, "transport: TLS: %s %s: certificate %d: %v", field, path, n+1, err)
		}
		pool.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, tlsError(nil, "transport: TLS: %s %s holds no PEM certificate", field, path)
	}
	return pool, nil
}

// keyPair is a certificate and key read from files, read again when either
// file changes.
type keyPair struct {
	certFile, keyFile string

	mu    sync.Mutex
	stamp [2]fileStamp
	cert  *tls.Certificate
}

// fileStamp tells a rewritten file from the one read before.
type fileStamp struct {
	mod  time.Time
	size int64
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

func newKeyPair(certFile, keyFile string) (*keyPair, error) {
	kp := &keyPair{certFile: certFile, keyFile: keyFile}
	if _, err := kp.get(); err != nil {
		return nil, err
	}
	return kp, nil
}

// get returns the current pair, reading the files again when they changed.
// Once a pair was read, a failure to read a new one (a rotation written
// halfway) keeps the old pair until the files are whole again.
func (kp *keyPair) get() (*tls.Certificate, error) {
	cs, cerr := stampOf(kp.certFile)
	ks, kerr := stampOf(kp.keyFile)
	kp.mu.Lock()
	defer kp.mu.Unlock()
	if kp.cert != nil && (cerr != nil || kerr != nil || kp.stamp == [2]fileStamp{cs, ks}) {
		return kp.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		if kp.cert != nil {
			return kp.cert, nil
		}
		return nil, tlsError(err, "transport: TLS: CertFile %s and KeyFile %s: %v", kp.certFile, kp.keyFile, err)
	}
	kp.cert, kp.stamp = &cert, [2]fileStamp{cs, ks}
	return kp.cert, nil
}
