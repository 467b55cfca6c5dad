package deterministic_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// funcStore is a StateStore whose methods can be replaced one by one; a nil
// func delegates to base. Tests use it to inject failures and races.
type funcStore struct {
	base   resourcelease.StateStore
	get    func(ctx context.Context, key string) (resourcelease.Record, bool, error)
	set    func(ctx context.Context, key string, rec resourcelease.Record) error
	tryAdd func(ctx context.Context, key string, rec resourcelease.Record) (bool, error)
}

func (s *funcStore) Get(ctx context.Context, key string) (resourcelease.Record, bool, error) {
	if s.get != nil {
		return s.get(ctx, key)
	}
	return s.base.Get(ctx, key)
}

func (s *funcStore) Set(ctx context.Context, key string, rec resourcelease.Record) error {
	if s.set != nil {
		return s.set(ctx, key, rec)
	}
	return s.base.Set(ctx, key, rec)
}

func (s *funcStore) TryAdd(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
	if s.tryAdd != nil {
		return s.tryAdd(ctx, key, rec)
	}
	return s.base.TryAdd(ctx, key, rec)
}

// storeKinds are the StateStore implementations the helper tests run on.
var storeKinds = []struct {
	name string
	new  func(t testing.TB) resourcelease.StateStore
}{
	{"memory", func(testing.TB) resourcelease.StateStore { return deterministic.NewMemoryStore() }},
	{"sqlite", func(t testing.TB) resourcelease.StateStore { s, _, _ := newSQLiteStore(t); return s }},
}

// testEvent returns a replication event with sequence number seq; variant
// distinguishes two deliveries of the same sequence number.
func testEvent(seq int64, typ resourcelease.EventType, variant int) resourcelease.Event {
	return resourcelease.Event{
		SequenceNumber: seq,
		EventType:      typ,
		Timestamp:      t0.Add(time.Duration(seq) * time.Millisecond),
		PeerID:         fmt.Sprintf("worker-%d", variant),
		Payload: &resourcelease.Item{
			ResourceType: "demo.order", ResourceID: fmt.Sprintf("order-%04d", seq),
			PartitionKey: "tenant-1", PayloadEncoding: "application/json", Body: []byte(`{"n":` + strconv.FormatInt(seq, 10) + `}`),
		},
		Metadata: map[string]string{resourcelease.MetaQueuePending: strconv.Itoa(variant), resourcelease.MetaQueueActive: "0"},
	}
}

var errBoom = fmt.Errorf("boom: disk on fire")
