package replication_test

import (
	"context"
	"fmt"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// A CheckpointSink applies each event once, however often it is delivered.
func ExampleCheckpointSink() {
	ctx := context.Background()
	sink, _ := replication.NewCheckpointSink(ctx, func(_ context.Context, e resourcelease.Event) error {
		fmt.Println("applied", e.SequenceNumber, e.EventType)
		return nil
	}, replication.CheckpointOptions{})
	for _, e := range []resourcelease.Event{
		{SequenceNumber: 1, EventType: resourcelease.EventEnqueue},
		{SequenceNumber: 2, EventType: resourcelease.EventLeaseGranted, PeerID: "worker-1"},
		{SequenceNumber: 2, EventType: resourcelease.EventLeaseGranted, PeerID: "worker-1"}, // redelivered
		{SequenceNumber: 3, EventType: resourcelease.EventCompleted, PeerID: "worker-1"},
	} {
		sink.ApplyEvent(ctx, e)
	}
	fmt.Println("checkpoint", sink.Checkpoint(), "worker-1", sink.PeerCheckpoint("worker-1"))
	// Output:
	// applied 1 Enqueue
	// applied 2 LeaseGranted
	// applied 3 Completed
	// checkpoint 3 worker-1 3
}

// A RecentLog keeps the newest events, oldest first, for a diagnostics page.
func ExampleRecentLog() {
	recent, _ := replication.NewRecentLog(2)
	for seq := int64(1); seq <= 3; seq++ {
		recent.ApplyEvent(context.Background(), resourcelease.Event{SequenceNumber: seq, EventType: resourcelease.EventHeartbeat})
	}
	for _, e := range recent.Events() {
		fmt.Println(e.SequenceNumber, e.EventType)
	}
	// Output:
	// 2 Heartbeat
	// 3 Heartbeat
}
