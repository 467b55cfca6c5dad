package resourcelease_test

import (
	"context"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkDispatcherCycle: enqueue → lease → complete through the
// Dispatcher, bare and with every in-memory part (replicator, peer health,
// backpressure, metrics), to show what the composition costs over the engine
// (compare BenchmarkCycle).
func BenchmarkDispatcherCycle(b *testing.B) {
	for _, full := range []bool{false, true} {
		name := "bare"
		if full {
			name = "all-parts"
		}
		b.Run(name, func(b *testing.B) {
			cfg := resourcelease.DispatcherConfig{Queue: resourcelease.QueueConfig{Capacity: -1}}
			if full {
				repl, err := replication.NewMemoryReplicator(replication.MemoryConfig{Logger: ldQuiet})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { repl.Close() })
				tracker, err := peerhealth.New(peerhealth.Config{})
				if err != nil {
					b.Fatal(err)
				}
				m, err := backpressure.NewMonitor(backpressure.Config{HighWatermark: 1 << 20, Logger: ldQuiet})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { m.Close() })
				cfg.Replicator, cfg.PeerHealth, cfg.Backpressure = repl, tracker, m
				cfg.Registerer = prometheus.NewRegistry()
			}
			d, err := resourcelease.NewDispatcher(cfg)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { d.Close() })
			ctx := resourcelease.WithCallInfo(context.Background(), resourcelease.CallInfo{Caller: "bench"})
			item := ldItem("order")
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				if _, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: item}); err != nil {
					b.Fatal(err)
				}
				l, err := d.Lease(ctx, nil)
				if err != nil || l == nil {
					b.Fatal("lease", err)
				}
				if err := d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cycles/s")
		})
	}
}
