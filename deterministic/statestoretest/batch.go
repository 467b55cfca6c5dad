package statestoretest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// batchTests check deterministic.BatchStateStore; Run runs them on stores
// that implement it and skips them on the others.
var batchTests = []struct {
	name string
	test func(t *testing.T, s deterministic.BatchStateStore)
}{
	{"Semantics", testBatchSemantics},
	{"ManyRecords", testBatchManyRecords},
	{"InvalidRecordWritesNothing", testBatchInvalidRecord},
	{"CancelledContextWritesNothing", testBatchCancelledContext},
	{"PayloadsAreCopied", testBatchPayloadsAreCopied},
	{"ConcurrentOneWinnerPerKey", testBatchConcurrentOneWinner},
	{"AllOrNothingVisibility", testBatchAllOrNothingVisibility},
}

// runBatch runs batchTests as subtests of t, each on a new store.
func runBatch(t *testing.T, newStore func(t *testing.T) resourcelease.StateStore) {
	for _, tc := range batchTests {
		t.Run(tc.name, func(t *testing.T) {
			s, ok := newStore(t).(deterministic.BatchStateStore)
			if !ok {
				t.Skip("the store does not implement deterministic.BatchStateStore")
			}
			tc.test(t, s)
		})
	}
}

// rec returns a distinct record for tests: its kind and payload name tag.
func rec(tag string, version int64) resourcelease.Record {
	return resourcelease.Record{Kind: "batch-" + tag, Version: version, Payload: []byte("payload of " + tag), RecordedAt: at.Add(time.Duration(version))}
}

func kr(key, tag string, version int64) deterministic.KeyedRecord {
	return deterministic.KeyedRecord{Key: key, Record: rec(tag, version)}
}

func mustTryAddMany(t *testing.T, s deterministic.BatchStateStore, recs []deterministic.KeyedRecord) []bool {
	t.Helper()
	added, err := s.TryAddMany(context.Background(), recs)
	if err != nil {
		t.Fatalf("TryAddMany(%d records): %v", len(recs), err)
	}
	if len(added) != len(recs) {
		t.Fatalf("TryAddMany(%d records) returned %d results", len(recs), len(added))
	}
	return added
}

func requireMissing(t *testing.T, s resourcelease.StateStore, keys ...string) {
	t.Helper()
	for _, key := range keys {
		if got, ok, err := s.Get(context.Background(), key); err != nil || ok {
			t.Errorf("Get(%q) = %+v, %v, %v; want not found", key, got, ok, err)
		}
	}
}

func testBatchSemantics(t *testing.T, s deterministic.BatchStateStore) {
	for _, tc := range []struct {
		name string
		// before are TryAdded one by one before the batch.
		before []deterministic.KeyedRecord
		batch  []deterministic.KeyedRecord
		want   []bool
		// stored is what each key must hold afterwards (missing: nothing).
		stored  map[string]resourcelease.Record
		missing []string
	}{
		{
			name:   "new keys in order",
			batch:  []deterministic.KeyedRecord{kr("c", "c", 3), kr("a", "a", 1), kr("b", "b", 2)},
			want:   []bool{true, true, true},
			stored: map[string]resourcelease.Record{"a": rec("a", 1), "b": rec("b", 2), "c": rec("c", 3)},
		},
		{
			name:   "mixed new and existing keys",
			before: []deterministic.KeyedRecord{kr("a", "old-a", 1), kr("c", "old-c", 3)},
			batch:  []deterministic.KeyedRecord{kr("a", "new-a", 10), kr("b", "new-b", 20), kr("c", "new-c", 30), kr("d", "new-d", 40)},
			want:   []bool{false, true, false, true},
			stored: map[string]resourcelease.Record{"a": rec("old-a", 1), "b": rec("new-b", 20), "c": rec("old-c", 3), "d": rec("new-d", 40)},
		},
		{
			name:   "duplicate keys in a batch: the first wins",
			batch:  []deterministic.KeyedRecord{kr("a", "a1", 1), kr("b", "b1", 2), kr("a", "a2", 3), kr("a", "a3", 4), kr("b", "b2", 5)},
			want:   []bool{true, true, false, false, false},
			stored: map[string]resourcelease.Record{"a": rec("a1", 1), "b": rec("b1", 2)},
		},
		{
			name:   "duplicates of an existing key",
			before: []deterministic.KeyedRecord{kr("a", "old", 1)},
			batch:  []deterministic.KeyedRecord{kr("a", "x", 2), kr("a", "y", 3)},
			want:   []bool{false, false},
			stored: map[string]resourcelease.Record{"a": rec("old", 1)},
		},
		{
			name:   "replaying a batch adds nothing",
			before: []deterministic.KeyedRecord{kr("a", "a", 1), kr("b", "b", 2)},
			batch:  []deterministic.KeyedRecord{kr("a", "a", 1), kr("b", "b", 2)},
			want:   []bool{false, false},
			stored: map[string]resourcelease.Record{"a": rec("a", 1), "b": rec("b", 2)},
		},
		{
			name:    "nil batch",
			before:  []deterministic.KeyedRecord{kr("a", "a", 1)},
			want:    []bool{},
			stored:  map[string]resourcelease.Record{"a": rec("a", 1)},
			missing: []string{"b"},
		},
		{
			name:    "empty batch",
			batch:   []deterministic.KeyedRecord{},
			want:    []bool{},
			missing: []string{"a"},
		},
		{
			name:   "one record",
			batch:  []deterministic.KeyedRecord{kr("a", "a", 1)},
			want:   []bool{true},
			stored: map[string]resourcelease.Record{"a": rec("a", 1)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Keys are namespaced per case, so the cases share the store.
			ns := func(key string) string { return tc.name + "/" + key }
			for _, r := range tc.before {
				if !mustTryAdd(t, s, ns(r.Key), r.Record) {
					t.Fatalf("setup TryAdd(%q) reported false", r.Key)
				}
			}
			var batch []deterministic.KeyedRecord
			if tc.batch != nil {
				batch = make([]deterministic.KeyedRecord, len(tc.batch))
				for i, r := range tc.batch {
					batch[i] = deterministic.KeyedRecord{Key: ns(r.Key), Record: r.Record}
				}
			}
			added := mustTryAddMany(t, s, batch)
			for i := range tc.want {
				if added[i] != tc.want[i] {
					t.Errorf("added = %v, want %v", added, tc.want)
					break
				}
			}
			for key, want := range tc.stored {
				RequireRecord(t, mustGet(t, s, ns(key)), want)
			}
			for _, key := range tc.missing {
				requireMissing(t, s, ns(key))
			}
			// The batch again is a replay: nothing is added, nothing changes.
			if len(batch) > 0 {
				for i, a := range mustTryAddMany(t, s, batch) {
					if a {
						t.Errorf("replayed batch: record %d (%q) reported added", i, batch[i].Key)
					}
				}
				for key, want := range tc.stored {
					RequireRecord(t, mustGet(t, s, ns(key)), want)
				}
			}
		})
	}
}

func testBatchManyRecords(t *testing.T, s deterministic.BatchStateStore) {
	const n = 2000
	batch := make([]deterministic.KeyedRecord, n)
	for i := range batch {
		batch[i] = kr(fmt.Sprintf("many/%d", i), fmt.Sprintf("r%d", i), int64(i))
	}
	// Every third record exists already.
	for i := 0; i < n; i += 3 {
		mustTryAdd(t, s, batch[i].Key, rec("existing", -1))
	}
	for i, a := range mustTryAddMany(t, s, batch) {
		if want := i%3 != 0; a != want {
			t.Fatalf("record %d: added = %v, want %v", i, a, want)
		}
	}
	for _, i := range []int{0, 1, 2, 3, n / 2, n - 2, n - 1} {
		want := batch[i].Record
		if i%3 == 0 {
			want = rec("existing", -1)
		}
		RequireRecord(t, mustGet(t, s, batch[i].Key), want)
	}
}

func testBatchInvalidRecord(t *testing.T, s deterministic.BatchStateStore) {
	mustTryAdd(t, s, "existing", rec("existing", 1))
	for _, tc := range []struct {
		name  string
		batch []deterministic.KeyedRecord
	}{
		{"empty key first", []deterministic.KeyedRecord{kr("", "x", 1), kr("a1", "a", 2)}},
		{"empty key in the middle", []deterministic.KeyedRecord{kr("m1", "m", 1), kr("existing", "e", 2), kr("", "x", 3), kr("m2", "m", 4)}},
		{"empty key last", []deterministic.KeyedRecord{kr("z1", "z", 1), kr("z2", "z", 2), kr("", "x", 3)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			added, err := s.TryAddMany(context.Background(), tc.batch)
			if !errors.Is(err, resourcelease.ErrInvalidArgument) {
				t.Fatalf("TryAddMany = %v, %v; want invalid-argument", added, err)
			}
			if added != nil {
				t.Errorf("added = %v on error, want nil", added)
			}
			for _, r := range tc.batch {
				if r.Key != "" && r.Key != "existing" {
					requireMissing(t, s, r.Key)
				}
			}
		})
	}
	RequireRecord(t, mustGet(t, s, "existing"), rec("existing", 1))
}

func testBatchCancelledContext(t *testing.T, s deterministic.BatchStateStore) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	batch := []deterministic.KeyedRecord{kr("c1", "c", 1), kr("c2", "c", 2)}
	added, err := s.TryAddMany(ctx, batch)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("TryAddMany with a cancelled context = %v, %v; want an error wrapping context.Canceled", added, err)
	}
	if added != nil {
		t.Errorf("added = %v on error, want nil", added)
	}
	requireMissing(t, s, "c1", "c2")
}

func testBatchPayloadsAreCopied(t *testing.T, s deterministic.BatchStateStore) {
	// Both payloads share one backing array, as a caller encoding a batch
	// into one buffer would pass them.
	buf := []byte("firstsecond")
	batch := []deterministic.KeyedRecord{
		{Key: "p1", Record: resourcelease.Record{Kind: "k", Payload: buf[:5:5], RecordedAt: at}},
		{Key: "p2", Record: resourcelease.Record{Kind: "k", Payload: buf[5:], RecordedAt: at}},
	}
	mustTryAddMany(t, s, batch)
	copy(buf, "XXXXXXXXXXX")
	batch[0].Key, batch[1].Key = "reused", "reused"
	for key, want := range map[string]string{"p1": "first", "p2": "second"} {
		if got := mustGet(t, s, key); string(got.Payload) != want {
			t.Errorf("%s: payload = %q after the caller reused its buffer, want %q", key, got.Payload, want)
		}
	}
	requireMissing(t, s, "reused")
}

func testBatchConcurrentOneWinner(t *testing.T, s deterministic.BatchStateStore) {
	const goroutines, keys = 8, 30
	var (
		wg    sync.WaitGroup
		start = make(chan struct{})
		mu    sync.Mutex
		wins  = map[string][]int{}
		errs  []error
	)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each goroutine covers every key, starting at a different one.
			batch := make([]deterministic.KeyedRecord, keys)
			for i := range batch {
				k := (i + g*keys/goroutines) % keys
				batch[i] = kr(fmt.Sprintf("contended/%d", k), fmt.Sprintf("g%d", g), int64(g))
			}
			<-start
			added, err := s.TryAddMany(context.Background(), batch)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			for i, a := range added {
				if a {
					wins[batch[i].Key] = append(wins[batch[i].Key], g)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		key := fmt.Sprintf("contended/%d", k)
		if len(wins[key]) != 1 {
			t.Errorf("%s: winners %v, want exactly one", key, wins[key])
			continue
		}
		g := wins[key][0]
		RequireRecord(t, mustGet(t, s, key), rec(fmt.Sprintf("g%d", g), int64(g)))
	}
}

// testBatchAllOrNothingVisibility reads while batches are written: whenever
// a batch's first key is visible its last key must be too, which a store
// writing the records one by one would violate.
func testBatchAllOrNothingVisibility(t *testing.T, s deterministic.BatchStateStore) {
	const batches, size = 20, 50
	key := func(b, i int) string { return fmt.Sprintf("visible/%d/%d", b, i) }
	done := make(chan struct{})
	readerErr := make(chan error, 1)
	go func() {
		ctx := context.Background()
		for final := false; !final; {
			select {
			case <-done:
				final = true // one last pass after every batch committed
			default:
			}
			for b := range batches {
				_, first, err := s.Get(ctx, key(b, 0))
				if err == nil && first {
					var last bool
					_, last, err = s.Get(ctx, key(b, size-1))
					if err == nil && !last {
						err = fmt.Errorf("batch %d: first record visible, last one not", b)
					}
				}
				if err != nil {
					readerErr <- err
					return
				}
				if final && !first {
					readerErr <- fmt.Errorf("batch %d: not visible after TryAddMany returned", b)
					return
				}
			}
		}
		readerErr <- nil
	}()
	for b := range batches {
		batch := make([]deterministic.KeyedRecord, size)
		for i := range batch {
			batch[i] = kr(key(b, i), "v", int64(i))
		}
		if _, err := s.TryAddMany(context.Background(), batch); err != nil {
			close(done)
			<-readerErr
			t.Fatalf("TryAddMany(batch %d): %v", b, err)
		}
	}
	close(done)
	if err := <-readerErr; err != nil {
		t.Fatal(err)
	}
}
