package transport_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// quietLogger drops everything; tests that look at the log use logBuffer.
var quietLogger = slog.New(slog.DiscardHandler)

// logBuffer is a concurrency-safe log sink.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newHandler builds a handler, failing the test on an option error. A nil
// Logger is replaced by quietLogger and a nil Authorize by AllowAll (the
// tests of the default, which refuses the admin procedures, call NewHandler
// themselves).
func newHandler(t testing.TB, d resourcelease.Dispatcher, opts transport.HandlerConfig) http.Handler {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	if opts.Authorize == nil {
		opts.Authorize = transport.AllowAll
	}
	h, err := transport.NewHandler(d, opts)
	require.NoError(t, err)
	return h
}

// hdr is a set of request headers.
type hdr map[string]string

// serve sends one request to h in process.
func serve(h http.Handler, method string, headers hdr, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/yarpc/v1", strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// call POSTs body to procedure resourcelease::<verb>.
func call(h http.Handler, verb, body string, extra ...hdr) *httptest.ResponseRecorder {
	headers := hdr{transport.HeaderProcedure: transport.Procedure("", verb)}
	for _, e := range extra {
		for k, v := range e {
			headers[k] = v
		}
	}
	return serve(h, http.MethodPost, headers, body)
}

// wireError is the error body of the protocol.
type wireError struct {
	Message  string            `json:"message"`
	Status   string            `json:"status"`
	Code     string            `json:"code"`
	Metadata map[string]string `json:"metadata"`
}

// requireError checks an error response: HTTP status, the four headers, and
// a body that agrees with them.
func requireError(t testing.TB, rec *httptest.ResponseRecorder, httpStatus int, status resourcelease.Status, code string) wireError {
	t.Helper()
	res := rec.Result()
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	require.Equal(t, httpStatus, res.StatusCode, "HTTP status; body %s", body)
	require.Equal(t, string(status), res.Header.Get(transport.HeaderStatus), "Rpc-Status")
	require.Equal(t, string(status), res.Header.Get(transport.HeaderErrorCode), "Rpc-Error-Code")
	require.Equal(t, code, res.Header.Get(transport.HeaderErrorName), "Rpc-Error-Name")
	require.Equal(t, "application/json", res.Header.Get("Content-Type"))
	var we wireError
	require.NoError(t, json.Unmarshal(body, &we), "error body %s", body)
	require.Equal(t, string(status), we.Status, "body status")
	require.Equal(t, code, we.Code, "body code")
	require.NotEmpty(t, we.Message, "body message")
	require.NotNil(t, we.Metadata, "body metadata must be an object")
	require.Equal(t, we.Message, res.Header.Get(transport.HeaderErrorMessage), "Rpc-Error-Message")
	return we
}

// requireOK checks a success and returns its body.
func requireOK(t testing.TB, rec *httptest.ResponseRecorder) string {
	t.Helper()
	require.Equal(t, http.StatusOK, rec.Code, "body %s", rec.Body.String())
	require.Equal(t, transport.StatusSuccess, rec.Header().Get(transport.HeaderStatus), "Rpc-Status")
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	return rec.Body.String()
}
