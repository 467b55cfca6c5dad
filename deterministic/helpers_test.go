package deterministic_test

import (
	"context"
	"database/sql"
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

// batchFuncStore is a funcStore that is also a deterministic.BatchStateStore;
// a nil tryAddMany delegates to base, which must then be one.
type batchFuncStore struct {
	*funcStore
	tryAddMany func(ctx context.Context, recs []deterministic.KeyedRecord) ([]bool, error)
}

func (s *batchFuncStore) TryAddMany(ctx context.Context, recs []deterministic.KeyedRecord) ([]bool, error) {
	if s.tryAddMany != nil {
		return s.tryAddMany(ctx, recs)
	}
	return s.base.(deterministic.BatchStateStore).TryAddMany(ctx, recs)
}

// coordinatorStoreKinds are the stores the Coordinator tests run on: the two
// BatchStateStores, and a MemoryStore hidden behind a funcStore, which is a
// plain StateStore, so ApplyEvents takes its one-TryAdd-per-event path.
var coordinatorStoreKinds = append(storeKinds[:len(storeKinds):len(storeKinds)], struct {
	name string
	new  func(t testing.TB) resourcelease.StateStore
}{"plain", func(testing.TB) resourcelease.StateStore {
	return &funcStore{base: deterministic.NewMemoryStore()}
}})

// events returns testEvent(seq, typ, variant) for seq = from..to.
func events(from, to int64, variant int) []resourcelease.Event {
	var es []resourcelease.Event
	for seq := from; seq <= to; seq++ {
		es = append(es, testEvent(seq, eventTypeOf(seq), variant))
	}
	return es
}

// eventTypeOf picks an event type for sequence number seq (any int64).
func eventTypeOf(seq int64) resourcelease.EventType {
	n := int64(len(allEventTypes))
	return allEventTypes[(seq%n+n)%n]
}

// poison makes the SQLite database abort any insert of key (a trigger), as a
// disk fault part-way through a transaction would; the returned func lifts
// it.
func poison(t testing.TB, db *sql.DB, key string) (heal func()) {
	t.Helper()
	if _, err := db.Exec(`CREATE TRIGGER poison BEFORE INSERT ON ` + deterministic.DefaultTable + `
		WHEN NEW.key = '` + key + `' BEGIN SELECT RAISE(ABORT, 'poisoned record'); END`); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := db.Exec(`DROP TRIGGER poison`); err != nil {
			t.Fatal(err)
		}
	}
}
