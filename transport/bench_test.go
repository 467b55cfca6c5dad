package transport_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// BenchmarkBareEcho is the ceiling for the RPC benchmarks: a bare net/http
// handler that echoes a small JSON body, called over loopback with a client
// tuned like the transport's own.
func BenchmarkBareEcho(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: transport.DefaultMaxIdleConnsPerHost}}
	defer hc.CloseIdleConnections()
	body := []byte(`{"pendingCount":0,"activeLeaseCount":0,"deadLetterCount":0,"backpressureActive":false}`)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := hc.Post(srv.URL, "application/json", bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			_ = res.Body.Close()
		}
	})
}

// BenchmarkClientStats is one small RPC (stats) through Client → handler →
// the real Dispatcher over loopback.
func BenchmarkClientStats(b *testing.B) {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	c := benchClient(b, d)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Stats(ctx, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkClientCycle is enqueue → lease → complete (three RPCs) over
// loopback against the real in-memory Dispatcher.
func BenchmarkClientCycle(b *testing.B) {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{Capacity: -1})
	defer closeDispatcher()
	c := benchClient(b, d)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		it := item
		it.RequestID = ""
		for pb.Next() {
			if _, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &it}); err != nil {
				b.Fatal(err)
			}
			l, err := c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "bench"})
			if err != nil || l == nil {
				b.Fatal("lease", l, err)
			}
			if err := c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchClient(b *testing.B, d resourcelease.Dispatcher) *transport.Client {
	b.Helper()
	h, err := transport.NewHandler(d, transport.HandlerConfig{Logger: quietLogger})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	c, err := transport.NewClient(srv.URL, transport.ClientConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = c.Close()
		srv.Close()
	})
	return c
}
