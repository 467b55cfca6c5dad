package worker_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

// newHandler serves d over the wire protocol, so that a worker can be tested
// through a real Client.
func newHandler(t testing.TB, d resourcelease.Dispatcher, opts transport.HandlerConfig) http.Handler {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger
	}
	h, err := transport.NewHandler(d, opts)
	require.NoError(t, err)
	return h
}

// item is a valid work item.
var item = resourcelease.Item{
	ResourceType: "demo.order", ResourceID: "order-0001", PartitionKey: "tenant-1",
	PayloadEncoding: "application/json", Body: []byte(`{"a":1}`),
}

// newClientServer serves d over a real HTTP server and returns a Client of
// it; both are closed when the test ends.
func newClientServer(t *testing.T, d resourcelease.Dispatcher, hopts transport.HandlerConfig, copts transport.ClientConfig) *transport.Client {
	t.Helper()
	srv := httptest.NewServer(newHandler(t, d, hopts))
	c, err := transport.NewClient(srv.URL+"/yarpc/v1", copts)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = c.Close()
		srv.Close()
	})
	return c
}
