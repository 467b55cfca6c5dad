package transport

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// CodeBodyTimeout: the request body did not arrive within the server's
// ServerConfig.BodyReadTimeout (status deadline-exceeded).
const CodeBodyTimeout = wire.CodeBodyTimeout

// Defaults of ServerConfig.
const (
	// DefaultReadHeaderTimeout is how long a client may take to send a
	// request's headers (and, with TLS, to finish the handshake): 10 s.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultBodyReadTimeout is how long a client may take to send a
	// request's body once its headers are in: 30 s.
	DefaultBodyReadTimeout = 30 * time.Second
	// DefaultWriteTimeout is how long one write of a response may block on a
	// client that does not read: 30 s.
	DefaultWriteTimeout = 30 * time.Second
	// DefaultIdleTimeout is how long an idle keep-alive connection is kept:
	// 2 min.
	DefaultIdleTimeout = 2 * time.Minute
	// DefaultMaxHeaderBytes bounds a request's headers: 64 KiB (net/http's
	// own default is 1 MiB). Larger headers get 431.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultMaxConnections bounds the open connections of a server: 8192.
	DefaultMaxConnections = 8192
)

// ServerConfig configures NewServer. The zero value of every field means its
// documented default; a bad value makes NewServer return an error.
type ServerConfig struct {
	// ReadHeaderTimeout bounds the TLS handshake and the reading of a
	// request's headers; a client that trickles them (slow loris) is
	// disconnected. Defaults to DefaultReadHeaderTimeout; negative is an
	// error.
	ReadHeaderTimeout time.Duration
	// BodyReadTimeout bounds the reading of a request's body, from the end of
	// its headers. Unlike http.Server.ReadTimeout it is lifted once the body
	// is read, so a lease long-poll or an event stream lasts as long as its
	// own deadline and no longer. A body still arriving when it passes fails
	// to read (the RPC handler answers deadline-exceeded). Defaults to
	// DefaultBodyReadTimeout; negative means no bound.
	BodyReadTimeout time.Duration
	// WriteTimeout bounds each write of a response (and each flush of a
	// stream): a client that stops reading is disconnected after it, however
	// long the response took to compute. Unlike http.Server.WriteTimeout it
	// does not run while the handler waits. Defaults to DefaultWriteTimeout;
	// negative means no bound.
	WriteTimeout time.Duration
	// IdleTimeout is how long an idle keep-alive connection is kept.
	// Defaults to DefaultIdleTimeout; negative is an error.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the size of a request's headers; larger ones get
	// 431 Request Header Fields Too Large. Defaults to DefaultMaxHeaderBytes;
	// negative is an error.
	MaxHeaderBytes int
	// MaxConnections bounds the connections open at once; a connection
	// beyond it is closed as soon as it is accepted (and logged, at most
	// every 10 s), so a connection flood costs bounded memory. Idle and
	// silent connections free their place after IdleTimeout and
	// ReadHeaderTimeout. Defaults to DefaultMaxConnections; negative means no
	// bound.
	MaxConnections int
	// TLS, when set, is the server's TLS configuration (TLSConfig.ServerTLS
	// builds one from PEM files); serve with srv.ServeTLS(ln, "", "") then.
	// Defaults to nil: plain HTTP.
	TLS *tls.Config
	// Logger receives net/http's own errors (TLS handshake failures, refused
	// connections) at warn level. Defaults to slog.Default().
	Logger *slog.Logger
}

// NewServer returns an *http.Server for h that a slow or hostile client
// cannot tie up: headers, bodies and each response write are bounded in time
// (see ServerConfig), headers in size, connections in number, and idle
// connections are closed. Nothing in it cuts a long-poll short: the RPC
// handler bounds those by their own deadlines (HandlerConfig.MaxWait and
// MaxTTL). Body sizes are the handler's to bound (HandlerConfig.MaxBodyBytes).
//
// The result is an ordinary *http.Server: set its Addr, BaseContext or
// other fields before serving, and call Serve (or ServeTLS(ln, "", "") with
// ServerConfig.TLS), Shutdown and Close as usual.
func NewServer(h http.Handler, cfg ServerConfig) (*http.Server, error) {
	if h == nil {
		return nil, invalidArgument("transport: NewServer: nil Handler")
	}
	switch {
	case cfg.ReadHeaderTimeout < 0:
		return nil, invalidArgument("transport: NewServer: ReadHeaderTimeout must not be negative, got %v", cfg.ReadHeaderTimeout)
	case cfg.IdleTimeout < 0:
		return nil, invalidArgument("transport: NewServer: IdleTimeout must not be negative, got %v", cfg.IdleTimeout)
	case cfg.MaxHeaderBytes < 0:
		return nil, invalidArgument("transport: NewServer: MaxHeaderBytes must not be negative, got %d", cfg.MaxHeaderBytes)
	}
	dflt := func(v, d time.Duration) time.Duration {
		switch {
		case v == 0:
			return d
		case v < 0:
			return 0
		}
		return v
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	dl := &deadlines{
		next:  h,
		body:  dflt(cfg.BodyReadTimeout, DefaultBodyReadTimeout),
		write: dflt(cfg.WriteTimeout, DefaultWriteTimeout),
	}
	srv := &http.Server{
		Handler:           dl,
		ReadHeaderTimeout: dflt(cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout),
		IdleTimeout:       dflt(cfg.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		TLSConfig:         cfg.TLS,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if srv.MaxHeaderBytes == 0 {
		srv.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	maxConns := cfg.MaxConnections
	if maxConns == 0 {
		maxConns = DefaultMaxConnections
	}
	if maxConns > 0 {
		srv.ConnState = (&connLimit{max: int64(maxConns), logger: logger}).track
	}
	return srv, nil
}

func invalidArgument(format string, args ...any) error {
	return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, format, args...)
}

// connLimit closes connections accepted beyond max. It counts in ConnState,
// which http.Server calls for every connection: StateNew once, then
// StateClosed or StateHijacked once.
type connLimit struct {
	max    int64
	open   atomic.Int64
	logger *slog.Logger

	mu         sync.Mutex
	lastLogged time.Time
	refused    int64 // since lastLogged
}

func (l *connLimit) track(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		if l.open.Add(1) > l.max {
			l.refusedOne(c) // before the close, which the client sees
			_ = c.Close()
		}
	case http.StateClosed, http.StateHijacked:
		l.open.Add(-1)
	}
}

// refusedOne logs refused connections, at most every 10 s, so that a flood
// does not also flood the log.
func (l *connLimit) refusedOne(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refused++
	if now := time.Now(); now.Sub(l.lastLogged) >= 10*time.Second {
		l.logger.Warn("transport: connection limit reached; closing new connections",
			"maxConnections", l.max, "refused", l.refused, "remote", c.RemoteAddr().String())
		l.lastLogged, l.refused = now, 0
	}
}

// deadlines bounds the reading of each request's body and each write of its
// response with the connection's deadlines, lifting the read deadline once
// the body is read so that the handler may wait as long as it means to.
type deadlines struct {
	next        http.Handler
	body, write time.Duration // 0: none
}

func (d *deadlines) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	http1 := r.ProtoMajor == 1
	if d.write > 0 && http1 {
		// HTTP/1 keeps one write deadline per connection: renew it before
		// net/http writes anything of its own (100 Continue). On HTTP/2 a
		// deadline resets the stream when it passes even if nothing is
		// written, so there it is set only around writes.
		_ = rc.SetWriteDeadline(time.Now().Add(d.write))
	}
	if d.body > 0 && r.Body != nil && r.Body != http.NoBody {
		if rc.SetReadDeadline(time.Now().Add(d.body)) == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		}
	}
	if d.write > 0 {
		w = &deadlineWriter{ResponseWriter: w, rc: rc, timeout: d.write}
	}
	d.next.ServeHTTP(w, r)
	if d.write > 0 && http1 {
		_ = rc.SetWriteDeadline(time.Now().Add(d.write)) // the final flush, after the handler
	}
}

// deadlineBody lifts the read deadline when the body has been read (or
// failed), so a long-poll after it is bounded by its own deadline only.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && !b.done {
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// deadlineWriter renews the write deadline before every write, so each one
// is bounded but a response computed slowly is not.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (w *deadlineWriter) renew() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.timeout)) }

// WriteHeader renews the deadline and writes the header.
func (w *deadlineWriter) WriteHeader(code int) {
	w.renew()
	w.ResponseWriter.WriteHeader(code)
}

// Write renews the deadline and writes b.
func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.renew()
	return w.ResponseWriter.Write(b)
}

// Flush renews the deadline and flushes (event streams flush every event).
func (w *deadlineWriter) Flush() {
	w.renew()
	_ = w.rc.Flush()
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
