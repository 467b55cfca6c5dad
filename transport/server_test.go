package transport_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// countingListener reports every accepted connection on accepted.
type countingListener struct {
	net.Listener
	accepted chan struct{}
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		select {
		case l.accepted <- struct{}{}:
		default:
		}
	}
	return c, err
}

// hardened is a NewServer server on a loopback port.
type hardened struct {
	srv      *http.Server
	addr     string // host:port
	url      string // http://host:port/yarpc/v1
	accepted chan struct{}
}

// startHardened serves h with NewServer(cfg) on 127.0.0.1:0 until the test
// ends.
func startHardened(t *testing.T, h http.Handler, cfg transport.ServerConfig) *hardened {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	srv, err := transport.NewServer(h, cfg)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cl := &countingListener{Listener: ln, accepted: make(chan struct{}, 4096)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if cfg.TLS != nil {
			_ = srv.ServeTLS(cl, "", "")
		} else {
			_ = srv.Serve(cl)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return &hardened{srv: srv, addr: ln.Addr().String(), url: "http://" + ln.Addr().String() + "/yarpc/v1", accepted: cl.accepted}
}

// waitAccepted waits until n more connections were accepted.
func (h *hardened) waitAccepted(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case <-h.accepted:
		case <-timeout:
			t.Fatalf("the server did not accept %d connections within 10s", n)
		}
	}
}

// rpcHandler is the real handler over a new in-memory dispatcher.
func rpcHandler(t *testing.T, opts transport.HandlerConfig) http.Handler {
	t.Helper()
	d, closeD := newLocalDispatcher(resourcelease.QueueConfig{})
	t.Cleanup(closeD)
	return newHandler(t, d, opts)
}

// rawPost posts body to procedure verb over a fresh connection of c.
func rawPost(t *testing.T, c *http.Client, url, verb, body string, headers hdr) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set(transport.HeaderProcedure, transport.Procedure("", verb))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res, string(b)
}

// requireClosedWithin reads c until the server closes it, failing if that
// takes longer than within.
func requireClosedWithin(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for more than %s", within)
	}
	// nil (EOF) or a reset: closed by the server either way.
}

func TestNewServerDefaults(t *testing.T) {
	t.Parallel()
	srv, err := transport.NewServer(http.NotFoundHandler(), transport.ServerConfig{})
	require.NoError(t, err)
	require.Equal(t, transport.DefaultReadHeaderTimeout, srv.ReadHeaderTimeout)
	require.Equal(t, transport.DefaultIdleTimeout, srv.IdleTimeout)
	require.Equal(t, transport.DefaultMaxHeaderBytes, srv.MaxHeaderBytes)
	require.NotNil(t, srv.ConnState, "the connection limit is on by default")
	require.Zero(t, srv.ReadTimeout, "a whole-request read timeout would cut long-polls")
	require.Zero(t, srv.WriteTimeout, "a whole-response write timeout would cut long-polls")

	for name, cfg := range map[string]transport.ServerConfig{
		"ReadHeaderTimeout": {ReadHeaderTimeout: -1},
		"IdleTimeout":       {IdleTimeout: -1},
		"MaxHeaderBytes":    {MaxHeaderBytes: -1},
	} {
		_, err := transport.NewServer(http.NotFoundHandler(), cfg)
		require.ErrorContains(t, err, name)
	}
	_, err = transport.NewServer(nil, transport.ServerConfig{})
	require.Error(t, err)
	srv, err = transport.NewServer(http.NotFoundHandler(), transport.ServerConfig{MaxConnections: -1})
	require.NoError(t, err)
	require.Nil(t, srv.ConnState, "a negative MaxConnections means no limit")
}

// TestSlowLorisIsCutOff: a client that sends its headers a byte at a time
// is disconnected at ReadHeaderTimeout, while it is still sending.
func TestSlowLorisIsCutOff(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	s := startHardened(t, rpcHandler(t, transport.HandlerConfig{}), transport.ServerConfig{ReadHeaderTimeout: timeout})
	c, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer c.Close()
	start := time.Now()
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() { // the slow loris: one byte every 10 ms, never the blank line
		n := 0
		defer func() { sent <- n }()
		msg := "POST /yarpc/v1 HTTP/1.1\r\nHost: x\r\nRpc-Procedure: resourcelease::stats\r\nX-Slow: " + strings.Repeat("a", 10000)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := range len(msg) {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := c.Write([]byte{msg[i]}); err != nil {
				return
			}
			n++
		}
	}()
	requireClosedWithin(t, c, 10*time.Second)
	elapsed := time.Since(start)
	close(stop)
	n := <-sent
	require.GreaterOrEqual(t, elapsed, timeout-50*time.Millisecond, "closed before ReadHeaderTimeout")
	require.Less(t, elapsed, 5*time.Second)
	require.Less(t, n, 1000, "the client was still trickling headers when it was cut off")
}

// TestSilentConnectionIsClosed: a connection that sends nothing at all is
// closed at ReadHeaderTimeout too.
func TestSilentConnectionIsClosed(t *testing.T) {
	t.Parallel()
	s := startHardened(t, rpcHandler(t, transport.HandlerConfig{}), transport.ServerConfig{ReadHeaderTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer c.Close()
	requireClosedWithin(t, c, 5*time.Second)
}

// TestSlowBodyIsCutOff: headers in time, then a body that trickles: the
// handler answers deadline-exceeded (code CodeBodyTimeout) at
// BodyReadTimeout and closes the connection.
func TestSlowBodyIsCutOff(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	s := startHardened(t, rpcHandler(t, transport.HandlerConfig{}), transport.ServerConfig{BodyReadTimeout: timeout})
	c, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer c.Close()
	start := time.Now()
	_, err = io.WriteString(c, "POST /yarpc/v1 HTTP/1.1\r\nHost: x\r\nRpc-Procedure: resourcelease::stats\r\nContent-Length: 100000\r\n\r\n{")
	require.NoError(t, err)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Second)))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err)
	elapsed := time.Since(start)
	body, _ := io.ReadAll(res.Body)
	require.Equal(t, http.StatusGatewayTimeout, res.StatusCode, "body %s", body)
	require.Equal(t, string(resourcelease.StatusDeadlineExceeded), res.Header.Get(transport.HeaderStatus))
	require.Equal(t, transport.CodeBodyTimeout, res.Header.Get(transport.HeaderErrorName))
	require.True(t, res.Close, "the connection is closed after a body timeout")
	require.GreaterOrEqual(t, elapsed, timeout-50*time.Millisecond)
	require.Less(t, elapsed, 5*time.Second)
}

// TestOversizedHeadersGet431: headers beyond MaxHeaderBytes are refused with
// 431 before the handler runs; headers within it are served.
func TestOversizedHeadersGet431(t *testing.T) {
	t.Parallel()
	const limit = 4 << 10
	s := startHardened(t, rpcHandler(t, transport.HandlerConfig{}), transport.ServerConfig{MaxHeaderBytes: limit})
	c := &http.Client{Timeout: 5 * time.Second}
	res, _ := rawPost(t, c, s.url, transport.VerbStats, "{}", hdr{"X-Pad": strings.Repeat("a", limit/2)})
	require.Equal(t, http.StatusOK, res.StatusCode)
	// net/http allows 4 KiB of slack over MaxHeaderBytes.
	res, _ = rawPost(t, c, s.url, transport.VerbStats, "{}", hdr{"X-Pad": strings.Repeat("a", 4*limit)})
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, res.StatusCode)

	// The default limit, 64 KiB, refuses a megabyte of headers (net/http's
	// own default would take it).
	s = startHardened(t, rpcHandler(t, transport.HandlerConfig{}), transport.ServerConfig{})
	res, _ = rawPost(t, c, s.url, transport.VerbStats, "{}", hdr{"X-Pad": strings.Repeat("a", 1<<20-8<<10)})
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, res.StatusCode)
}

// TestConnectionFloodDoesNotBlockRequests: 500 idle connections (half of
// them silent, half after one request) cost bounded memory and a normal
// request is still served at once. Not parallel: it measures the heap.
func TestConnectionFloodDoesNotBlockRequests(t *testing.T) {
	s := startHardened(t, rpcHandler(t, transport.HandlerConfig{}), transport.ServerConfig{})
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	goroutines := runtime.NumGoroutine()

	const flood = 500
	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	req := "POST /yarpc/v1 HTTP/1.1\r\nHost: x\r\nRpc-Procedure: resourcelease::stats\r\nContent-Length: 2\r\n\r\n{}"
	for i := range flood {
		c, err := net.Dial("tcp", s.addr)
		require.NoError(t, err)
		conns = append(conns, c)
		if i%2 == 1 { // one request, then idle on keep-alive
			_, err = io.WriteString(c, req)
			require.NoError(t, err)
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, res.Body)
			require.Equal(t, http.StatusOK, res.StatusCode)
		}
	}
	s.waitAccepted(t, flood)

	start := time.Now()
	c := &http.Client{Timeout: 5 * time.Second}
	res, body := rawPost(t, c, s.url, transport.VerbStats, "{}", nil)
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	require.Less(t, time.Since(start), 2*time.Second, "a normal request waited behind the flood")

	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d idle connections: heap grew %d KiB (%d B each), %d goroutines more", flood, grown>>10, grown/flood, runtime.NumGoroutine()-goroutines)
	require.Less(t, grown, int64(flood*64<<10), "more than 64 KiB of heap per idle connection")
	require.Less(t, runtime.NumGoroutine()-goroutines, 2*flood+50, "more than two goroutines per idle connection")
}

// TestMaxConnections: connections beyond MaxConnections are closed as soon
// as they are accepted, and the server serves again once the flood is gone.
func TestMaxConnections(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	const limit = 20
	s := startHardened(t, rpcHandler(t, transport.HandlerConfig{}), transport.ServerConfig{MaxConnections: limit, Logger: logs.logger()})
	var conns []net.Conn
	closeAll := func() {
		for _, c := range conns {
			_ = c.Close()
		}
		conns = nil
	}
	defer closeAll()
	for range limit {
		c, err := net.Dial("tcp", s.addr)
		require.NoError(t, err)
		conns = append(conns, c)
	}
	s.waitAccepted(t, limit)
	extra, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer extra.Close()
	requireClosedWithin(t, extra, 5*time.Second)
	require.Contains(t, logs.String(), "connection limit reached")

	closeAll()
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for { // the server notices the closed connections on its own schedule
		req, _ := http.NewRequest(http.MethodPost, s.url, strings.NewReader("{}"))
		req.Header.Set(transport.HeaderProcedure, "resourcelease::stats")
		res, err := c.Do(req)
		if err == nil {
			_ = res.Body.Close()
			require.Equal(t, http.StatusOK, res.StatusCode)
			break
		}
		require.True(t, time.Now().Before(deadline), "still refused 10s after the flood closed: %v", err)
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStuckReaderIsCutOff: a client that stops reading a large response is
// disconnected WriteTimeout after the last write that went through, and the
// handler's goroutine is freed.
func TestStuckReaderIsCutOff(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	wrote := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 2048 { // 128 MiB: far more than the socket buffers hold
			if _, err := w.Write(chunk); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	})
	s := startHardened(t, h, transport.ServerConfig{WriteTimeout: timeout})
	c, err := net.Dial("tcp", s.addr)
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	select { // and never read
	case err := <-wrote:
		require.Error(t, err, "the handler wrote 128 MiB to a client that reads nothing")
	case <-time.After(20 * time.Second):
		t.Fatal("the handler is still blocked writing to a client that stopped reading")
	}
}

// TestTimeoutsDoNotCutLongPolls: a lease long-poll that outlasts
// BodyReadTimeout and WriteTimeout still ends normally at its wait.
func TestTimeoutsDoNotCutLongPolls(t *testing.T) {
	t.Parallel()
	s := startHardened(t, rpcHandler(t, transport.HandlerConfig{}), transport.ServerConfig{
		BodyReadTimeout: 50 * time.Millisecond, WriteTimeout: 50 * time.Millisecond,
	})
	c := &http.Client{Timeout: 10 * time.Second}
	start := time.Now()
	res, body := rawPost(t, c, s.url, transport.VerbLease, `{"waitMs":400}`, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	require.Equal(t, "null", body)
	require.GreaterOrEqual(t, time.Since(start), 350*time.Millisecond)
	// The connection is reusable afterwards.
	res, body = rawPost(t, c, s.url, transport.VerbStats, `{}`, nil)
	require.Equal(t, http.StatusOK, res.StatusCode, body)
}

// TestLongPollsEndAtTheirDeadline: a lease long-poll ends at the earliest of
// its waitMs, MaxWait, its TTL header and MaxTTL, whatever the client asked.
func TestLongPollsEndAtTheirDeadline(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		opts     transport.HandlerConfig
		body     string
		headers  hdr
		wantHTTP int // the lease ends with "nothing came" (null) at the deadline
	}{
		{name: "MaxWait caps waitMs", opts: transport.HandlerConfig{MaxWait: 200 * time.Millisecond}, body: `{"waitMs":600000}`, wantHTTP: 200},
		{name: "the TTL header", headers: hdr{transport.HeaderContextTTLMs: "200"}, body: `{"waitMs":600000}`, wantHTTP: 200},
		{name: "Rpc-Ttl-Ms", headers: hdr{transport.HeaderTTLMs: "200"}, body: `{"waitMs":600000}`, wantHTTP: 200},
		{name: "MaxTTL caps the TTL header", opts: transport.HandlerConfig{MaxTTL: 200 * time.Millisecond},
			headers: hdr{transport.HeaderContextTTLMs: "600000"}, body: `{"waitMs":600000}`, wantHTTP: 200},
		{name: "MaxTTL without a header", opts: transport.HandlerConfig{MaxTTL: 200 * time.Millisecond}, body: `{"waitMs":600000}`, wantHTTP: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startHardened(t, rpcHandler(t, tt.opts), transport.ServerConfig{})
			c := &http.Client{Timeout: 10 * time.Second}
			start := time.Now()
			res, body := rawPost(t, c, s.url, transport.VerbLease, tt.body, tt.headers)
			elapsed := time.Since(start)
			require.Equal(t, tt.wantHTTP, res.StatusCode, body)
			require.Equal(t, "null", body, "the dispatcher answers nothing-came when the deadline ends the wait")
			require.GreaterOrEqual(t, elapsed, 150*time.Millisecond)
			require.Less(t, elapsed, 5*time.Second)
		})
	}
}

// TestNewServerShutsDownCleanly: the wrapped handler does not keep
// Shutdown waiting.
func TestNewServerShutsDownCleanly(t *testing.T) {
	t.Parallel()
	srv, err := transport.NewServer(rpcHandler(t, transport.HandlerConfig{}), transport.ServerConfig{Logger: quietLogger})
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	c := &http.Client{Timeout: 5 * time.Second}
	res, body := rawPost(t, c, "http://"+ln.Addr().String(), transport.VerbStats, "{}", nil)
	require.Equal(t, http.StatusOK, res.StatusCode, body)
	c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, srv.Shutdown(ctx))
	wg.Wait()
}
