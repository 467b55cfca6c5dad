package leasemesh_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/pgstore"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
	"github.com/leasemesh/leasemesh/transport"
	"github.com/leasemesh/leasemesh/worker"
)

// TestConfigConvention holds every package to one convention: a bad
// configuration value is an invalid-argument *resourcelease.Error from the
// constructor, never a panic or a plain error.
func TestConfigConvention(t *testing.T) {
	noop := func(context.Context, *resourcelease.Lease) error { return nil }
	fake := &leasetest.FakeDispatcher{}
	tests := []struct {
		name string
		open func() error
	}{
		{"resourcelease.NewEngine", func() error { _, err := resourcelease.NewEngine(resourcelease.QueueConfig{Capacity: -2}); return err }},
		{"resourcelease.NewDispatcher", func() error {
			_, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{MaxLeaseWait: -time.Second})
			return err
		}},
		{"leasemesh.Open", func() error { _, err := leasemesh.Open(context.Background(), leasemesh.Config{}); return err }},
		{"resourcelease.NewDispatcher with a Store", func() error {
			_, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Store: fakeQueue{}, LogPollInterval: -time.Second})
			return err
		}},
		{"pgstore.URL", func() error {
			_, err := leasemesh.Open(context.Background(), leasemesh.Config{Storage: pgstore.URL("postgres://127.0.0.1:1/x"),
				Queue: resourcelease.QueueConfig{MaxDedupeEntries: 5}}) // refused before it dials
			return err
		}},
		{"peerhealth.New", func() error { _, err := peerhealth.New(peerhealth.Config{GracePeriod: -time.Second}); return err }},
		{"backpressure.NewMonitor", func() error { _, err := backpressure.NewMonitor(backpressure.Config{}); return err }},
		{"backpressure.NewRateLimiter", func() error {
			_, err := backpressure.NewRateLimiter(backpressure.RateLimiterConfig{MaxKeys: -1})
			return err
		}},
		{"backpressure.NewDiagnosticsListener", func() error {
			_, err := backpressure.NewDiagnosticsListener(backpressure.DiagnosticsConfig{HistorySize: -1})
			return err
		}},
		{"replication.NewMemoryReplicator", func() error {
			_, err := replication.NewMemoryReplicator(replication.MemoryConfig{Retention: -1})
			return err
		}},
		{"deterministic.NewCoordinator", func() error { _, err := deterministic.NewCoordinator(deterministic.Config{}); return err }},
		{"sqlitedb.Open", func() error {
			_, err := sqlitedb.Open(context.Background(), t.TempDir()+"/x.db", sqlitedb.Config{Synchronous: "SOMETIMES"})
			return err
		}},
		{"transport.NewHandler", func() error {
			_, err := transport.NewHandler(fake, transport.HandlerConfig{MaxBodyBytes: -1})
			return err
		}},
		{"transport.NewClient", func() error { _, err := transport.NewClient("ftp://x", transport.ClientConfig{}); return err }},
		{"transport.NewClient TLS", func() error {
			_, err := transport.NewClient("http://x", transport.ClientConfig{TLS: &tls.Config{}})
			return err
		}},
		{"transport.NewServer", func() error {
			_, err := transport.NewServer(http.NotFoundHandler(), transport.ServerConfig{IdleTimeout: -1})
			return err
		}},
		{"transport.TLSConfig.ServerTLS", func() error { _, err := transport.TLSConfig{}.ServerTLS(); return err }},
		{"transport.TLSConfig.ClientTLS", func() error {
			_, err := transport.TLSConfig{CAFile: t.TempDir() + "/missing.pem"}.ClientTLS()
			return err
		}},
		{"control.NewHandler", func() error { _, err := control.NewHandler(control.HandlerConfig{MaxBodyBytes: -1}); return err }},
		{"control.NewClient", func() error { _, err := control.NewClient("ftp://x", control.ClientConfig{}); return err }},
		{"worker.New without a Dispatcher", func() error { _, err := worker.New(nil, worker.Config{Handler: noop}); return err }},
		{"transport.NewHandler without a Dispatcher", func() error { _, err := transport.NewHandler(nil, transport.HandlerConfig{}); return err }},
		{"worker.New", func() error { _, err := worker.New(fake, worker.Config{Handler: noop, Concurrency: -1}); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.open()
			var e *resourcelease.Error
			if !errors.As(err, &e) || e.Status != resourcelease.StatusInvalidArgument {
				t.Fatalf("got %T %v, want an invalid-argument *resourcelease.Error", err, err)
			}
		})
	}
}

// fakeQueue is a Queue for a config check that never reaches it.
type fakeQueue struct{ resourcelease.Queue }
