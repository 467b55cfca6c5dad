package deterministic

import (
	"context"
	"sync"

	"github.com/leasemesh/leasemesh/resourcelease"
)

var _ resourcelease.StateStore = (*MemoryStore)(nil)

// MemoryStore is a [resourcelease.StateStore] kept in memory. It is safe for
// concurrent use and its zero value is an empty store ready to use. Records do
// not survive the process: use it in tests and where replays can only come
// from the same process; use [SQLiteStore] otherwise.
//
// The store keeps its own copy of every payload, so callers may reuse or
// modify the slices they pass to Set, TryAdd and TryAddMany and those Get
// returns.
// RecordedAt is kept in UTC without a monotonic clock reading, as SQLiteStore
// keeps it. The empty key is refused with an invalid-argument error, and a
// done ctx makes every method return the context's error without touching
// the store.
type MemoryStore struct {
	mu      sync.RWMutex
	records map[string]resourcelease.Record // guarded by mu; nil until the first write
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore { return &MemoryStore{} }

// Get returns the record under key and whether there is one.
func (s *MemoryStore) Get(ctx context.Context, key string) (resourcelease.Record, bool, error) {
	if err := checkKey(key); err != nil {
		return resourcelease.Record{}, false, err
	}
	if err := ctxErr(ctx); err != nil {
		return resourcelease.Record{}, false, err
	}
	s.mu.RLock()
	rec, ok := s.records[key]
	s.mu.RUnlock()
	if !ok {
		return resourcelease.Record{}, false, nil
	}
	return cloneRecord(rec), true, nil
}

// Set stores rec under key, replacing any record.
func (s *MemoryStore) Set(ctx context.Context, key string, rec resourcelease.Record) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctxErr(ctx); err != nil {
		return err
	}
	rec = cloneRecord(rec)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.records == nil {
		s.records = make(map[string]resourcelease.Record)
	}
	s.records[key] = rec
	return nil
}

// TryAdd stores rec under key only if key is absent, and reports whether it
// did. Of concurrent TryAdd calls on one key exactly one reports true.
func (s *MemoryStore) TryAdd(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
	if err := checkKey(key); err != nil {
		return false, err
	}
	if err := ctxErr(ctx); err != nil {
		return false, err
	}
	rec = cloneRecord(rec)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.records[key]; ok {
		return false, nil
	}
	if s.records == nil {
		s.records = make(map[string]resourcelease.Record)
	}
	s.records[key] = rec
	return true, nil
}

// TryAddMany stores each of recs whose key is absent, in order and under
// one lock, so other callers see the whole batch or none of it; see
// [BatchStateStore]. Only the records it adds are copied.
func (s *MemoryStore) TryAddMany(ctx context.Context, recs []KeyedRecord) ([]bool, error) {
	if err := checkBatchKeys(recs); err != nil {
		return nil, err
	}
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	added := make([]bool, len(recs))
	if len(recs) == 0 {
		return added, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.records == nil {
		s.records = make(map[string]resourcelease.Record, len(recs))
	}
	for i := range recs {
		if _, ok := s.records[recs[i].Key]; ok {
			continue
		}
		s.records[recs[i].Key] = cloneRecord(recs[i].Record)
		added[i] = true
	}
	return added, nil
}

// Len returns the number of records in the store.
func (s *MemoryStore) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.records)
}

// cloneRecord returns rec with its own copy of the payload (never nil) and
// RecordedAt in UTC, which also drops the monotonic clock reading.
func cloneRecord(rec resourcelease.Record) resourcelease.Record {
	rec.Payload = append([]byte{}, rec.Payload...)
	rec.RecordedAt = rec.RecordedAt.UTC()
	return rec
}
