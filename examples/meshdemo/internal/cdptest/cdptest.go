// Package cdptest drives a headless Chromium over the Chrome DevTools Protocol
// for the demo's browser test: it starts the browser with a remote-debugging
// port, connects to a page over a WebSocket (a minimal RFC 6455 client, so no
// extra module is needed), navigates, evaluates JavaScript and takes
// screenshots. It is for tests only.
package cdptest

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Flags are the Chromium flags every session uses (the user data directory
// and the debugging port are added by Launch).
var Flags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
	"--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
	"--window-size=1360,900", "--hide-scrollbars",
}

// Browser is a running Chromium. Close kills it and every process it started.
type Browser struct {
	cmd     *exec.Cmd
	port    string
	waitErr chan error
	Log     *strings.Builder // Chromium's stderr (guarded by logMu)
	logMu   *sync.Mutex
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Launch starts the Chromium binary at path with a fresh profile in
// userDataDir and waits for its DevTools endpoint.
func Launch(ctx context.Context, path, userDataDir string) (*Browser, error) {
	args := append(append([]string{}, Flags...), "--user-data-dir="+userDataDir, "--remote-debugging-port=0", "about:blank")
	cmd := exec.Command(path, args...)
	// Its own process group, so Close can kill the renderers and helpers too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	b := &Browser{cmd: cmd, waitErr: make(chan error, 1), Log: &strings.Builder{}, logMu: &sync.Mutex{}}
	cmd.Stderr = lockedWriter{b.logMu, b.Log}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { b.waitErr <- cmd.Wait() }()
	portFile := filepath.Join(userDataDir, "DevToolsActivePort")
	for {
		if data, err := os.ReadFile(portFile); err == nil {
			if port, _, ok := strings.Cut(string(data), "\n"); ok && port != "" {
				b.port = port
				return b, nil
			}
		}
		select {
		case err := <-b.waitErr:
			b.waitErr <- err
			return nil, fmt.Errorf("chromium exited before its DevTools port was ready: %v\n%s", err, b.Stderr())
		case <-ctx.Done():
			b.Close()
			return nil, fmt.Errorf("waiting for chromium's DevTools port: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stderr returns what Chromium wrote to stderr so far.
func (b *Browser) Stderr() string {
	b.logMu.Lock()
	defer b.logMu.Unlock()
	return b.Log.String()
}

// Close kills the browser's process group and waits for the browser.
func (b *Browser) Close() {
	_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-b.waitErr:
	case <-time.After(10 * time.Second):
	}
}

// Page opens a connection to the browser's first page target.
func (b *Browser) Page(ctx context.Context) (*Conn, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:"+b.port+"/json/list", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var targets []struct {
		Type, WebSocketDebuggerURL string
	}
	if err := json.NewDecoder(resp.Body).Decode(&targets); err != nil {
		return nil, fmt.Errorf("decoding /json/list: %w", err)
	}
	for _, t := range targets {
		if t.Type == "page" && t.WebSocketDebuggerURL != "" {
			return Dial(ctx, t.WebSocketDebuggerURL)
		}
	}
	return nil, errors.New("chromium has no page target")
}

// Conn is a DevTools protocol connection to one target.
type Conn struct {
	ws      *wsConn
	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan reply
	readErr error
	done    chan struct{}
}

type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Dial connects to a DevTools WebSocket URL.
func Dial(ctx context.Context, wsURL string) (*Conn, error) {
	ws, err := dialWS(ctx, wsURL)
	if err != nil {
		return nil, err
	}
	c := &Conn{ws: ws, pending: map[int64]chan reply{}, done: make(chan struct{})}
	go c.readLoop()
	return c, nil
}

func (c *Conn) readLoop() {
	defer close(c.done)
	for {
		msg, err := c.ws.readMessage()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			for id, ch := range c.pending {
				close(ch)
				delete(c.pending, id)
			}
			c.mu.Unlock()
			return
		}
		var m struct {
			ID int64 `json:"id"`
			reply
		}
		if json.Unmarshal(msg, &m) != nil || m.ID == 0 {
			continue // an event; this client does not subscribe to any
		}
		c.mu.Lock()
		ch := c.pending[m.ID]
		delete(c.pending, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m.reply
		}
	}
}

// Call sends one command and returns its result.
func (c *Conn) Call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	ch := make(chan reply, 1)
	c.pending[id] = ch
	c.mu.Unlock()
	if params == nil {
		params = struct{}{}
	}
	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	if err := c.ws.writeText(msg); err != nil {
		return nil, err
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("%s: connection closed: %v", method, c.readErr)
		}
		if r.Error != nil {
			return nil, fmt.Errorf("%s: %s (%d)", method, r.Error.Message, r.Error.Code)
		}
		return r.Result, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Navigate loads url in the page.
func (c *Conn) Navigate(ctx context.Context, url string) error {
	_, err := c.Call(ctx, "Page.navigate", map[string]any{"url": url})
	return err
}

// Eval evaluates a JavaScript expression and decodes its (JSON-able) value
// into out.
func (c *Conn) Eval(ctx context.Context, expr string, out any) error {
	res, err := c.Call(ctx, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true})
	if err != nil {
		return err
	}
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return err
	}
	if r.ExceptionDetails != nil {
		return fmt.Errorf("evaluating %q: %s", expr, r.ExceptionDetails.Text)
	}
	if out == nil || len(r.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(r.Result.Value, out)
}

// Screenshot captures the viewport as a PNG.
func (c *Conn) Screenshot(ctx context.Context) ([]byte, error) {
	res, err := c.Call(ctx, "Page.captureScreenshot", map[string]any{"format": "png"})
	if err != nil {
		return nil, err
	}
	var r struct {
		Data string `json:"data"`
	}
	if err := json.Unmarshal(res, &r); err != nil {
		return nil, err
	}
	return base64.StdEncoding.DecodeString(r.Data)
}

// Close closes the connection and waits for its reader.
func (c *Conn) Close() error {
	err := c.ws.close()
	<-c.done
	return err
}

// wsConn is a minimal client side of RFC 6455: text messages, fragmented
// messages, ping/pong and close; client frames are masked.
type wsConn struct {
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
}

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

func dialWS(ctx context.Context, raw string) (*wsConn, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "ws" {
		return nil, fmt.Errorf("not a ws:// URL: %q", raw)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, err
	}
	keyBytes := make([]byte, 16)
	_, _ = rand.Read(keyBytes)
	key := base64.StdEncoding.EncodeToString(keyBytes)
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", u.RequestURI(), u.Host, key)
	r := bufio.NewReaderSize(conn, 1<<16)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake: %w", err)
	}
	resp.Body.Close()
	sum := sha1.Sum([]byte(key + wsGUID))
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		conn.Close()
		return nil, fmt.Errorf("websocket handshake refused: %s", resp.Status)
	}
	return &wsConn{conn: conn, r: r}, nil
}

func (w *wsConn) writeFrame(opcode byte, payload []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	hdr := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n <= 0xFFFF:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	mask := make([]byte, 4)
	_, _ = rand.Read(mask)
	hdr = append(hdr, mask...)
	masked := make([]byte, len(payload))
	for i, b := range payload {
		masked[i] = b ^ mask[i%4]
	}
	_, err := w.conn.Write(append(hdr, masked...))
	return err
}

func (w *wsConn) writeText(p []byte) error { return w.writeFrame(0x1, p) }

// readMessage returns the next text or binary message, answering pings.
func (w *wsConn) readMessage() ([]byte, error) {
	var msg []byte
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.r, h[:]); err != nil {
			return nil, err
		}
		fin, opcode := h[0]&0x80 != 0, h[0]&0x0F
		n := uint64(h[1] & 0x7F)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.r, b[:]); err != nil {
				return nil, err
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(w.r, b[:]); err != nil {
				return nil, err
			}
			n = binary.BigEndian.Uint64(b[:])
		}
		if n > 64<<20 {
			return nil, fmt.Errorf("websocket frame of %d bytes is too large", n)
		}
		var mask []byte
		if h[1]&0x80 != 0 {
			mask = make([]byte, 4)
			if _, err := io.ReadFull(w.r, mask); err != nil {
				return nil, err
			}
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(w.r, payload); err != nil {
			return nil, err
		}
		for i := range payload {
			if mask != nil {
				payload[i] ^= mask[i%4]
			}
		}
		switch opcode {
		case 0x8: // close
			return nil, io.EOF
		case 0x9: // ping
			if err := w.writeFrame(0xA, payload); err != nil {
				return nil, err
			}
			continue
		case 0xA: // pong
			continue
		}
		msg = append(msg, payload...)
		if fin {
			return msg, nil
		}
	}
}

func (w *wsConn) close() error {
	_ = w.writeFrame(0x8, []byte{0x03, 0xE8}) // 1000: normal closure
	return w.conn.Close()
}
