// Package statestoretest is the conformance suite for implementations of
// resourcelease.StateStore. Every implementation in leasemesh runs it from its
// tests, and so can a third-party store:
//
//	func TestConformance(t *testing.T) {
//		statestoretest.Run(t, func(t *testing.T) resourcelease.StateStore {
//			return mystore.New(t.TempDir())
//		})
//	}
//
// Stores that implement [deterministic.BatchStateStore] are checked for it
// too. It is for tests only.
package statestoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Run runs the conformance suite as subtests of t. newStore must return a
// new, empty store for each call; it is called once per subtest with that
// subtest's t, so it can use t.TempDir and t.Cleanup.
//
// The suite checks: Get of a missing key; Set/Get round trips of every field
// (payload bytes, version, kind and recordedAt, compared with time.Equal and
// in UTC); Set overwriting; TryAdd adding once only and never overwriting;
// concurrent TryAdds on one key having exactly one winner whose record is
// stored; empty and large payloads; keys with odd characters being distinct
// and round-tripping; stores keeping their own copy of payloads; the empty
// key being an invalid-argument error; and a cancelled context failing
// without writing.
//
// If the store also implements [deterministic.BatchStateStore], the subtests
// under TryAddMany check its batch: added reported per record in order, for
// new keys, existing keys, duplicate keys within the batch (the first wins)
// and replays; nil and empty batches; a 2000-record batch; an invalid record
// or a cancelled context writing nothing of the batch; payloads being
// copied; concurrent overlapping batches having one winner per key; and
// readers never seeing part of a batch. On other stores they are skipped.
func Run(t *testing.T, newStore func(t *testing.T) resourcelease.StateStore) {
	t.Helper()
	tests := []struct {
		name string
		test func(t *testing.T, s resourcelease.StateStore)
	}{
		{"GetMissing", testGetMissing},
		{"SetGetRoundTrip", testSetGetRoundTrip},
		{"SetOverwrites", testSetOverwrites},
		{"TryAddOnceOnly", testTryAddOnceOnly},
		{"TryAddAfterSet", testTryAddAfterSet},
		{"ConcurrentTryAddOneWinner", testConcurrentTryAdd},
		{"ConcurrentDistinctKeys", testConcurrentDistinctKeys},
		{"Payloads", testPayloads},
		{"OddKeys", testOddKeys},
		{"PayloadsAreCopied", testPayloadsAreCopied},
		{"EmptyKeyInvalid", testEmptyKeyInvalid},
		{"CancelledContext", testCancelledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.test(t, newStore(t))
		})
	}
	t.Run("TryAddMany", func(t *testing.T) {
		runBatch(t, newStore)
	})
}

// at is a fixed instant with a non-zero nanosecond part in a non-UTC zone,
// so stores that truncate to micro- or milliseconds or drop the zone
// conversion are caught.
var at = time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.FixedZone("UTC+2", 2*60*60))

// RequireRecord fails t unless got equals want: same kind, version and
// payload bytes (nil and empty count as equal), and RecordedAt the same
// instant, reported in UTC.
func RequireRecord(t testing.TB, got, want resourcelease.Record) {
	t.Helper()
	if got.Kind != want.Kind {
		t.Errorf("kind = %q, want %q", got.Kind, want.Kind)
	}
	if got.Version != want.Version {
		t.Errorf("version = %d, want %d", got.Version, want.Version)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("payload = %s, want %s", brief(got.Payload), brief(want.Payload))
	}
	if !got.RecordedAt.Equal(want.RecordedAt) {
		t.Errorf("recordedAt = %v, want %v", got.RecordedAt, want.RecordedAt)
	}
	if loc := got.RecordedAt.Location(); loc != time.UTC {
		t.Errorf("recordedAt location = %v, want UTC", loc)
	}
}

func brief(p []byte) string {
	if len(p) > 64 {
		return fmt.Sprintf("%q... (%d bytes)", p[:64], len(p))
	}
	return fmt.Sprintf("%q", p)
}

func mustGet(t *testing.T, s resourcelease.StateStore, key string) resourcelease.Record {
	t.Helper()
	rec, ok, err := s.Get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if !ok {
		t.Fatalf("Get(%q): not found, want a record", key)
	}
	return rec
}

func mustSet(t *testing.T, s resourcelease.StateStore, key string, rec resourcelease.Record) {
	t.Helper()
	if err := s.Set(context.Background(), key, rec); err != nil {
		t.Fatalf("Set(%q): %v", key, err)
	}
}

func mustTryAdd(t *testing.T, s resourcelease.StateStore, key string, rec resourcelease.Record) bool {
	t.Helper()
	added, err := s.TryAdd(context.Background(), key, rec)
	if err != nil {
		t.Fatalf("TryAdd(%q): %v", key, err)
	}
	return added
}

func testGetMissing(t *testing.T, s resourcelease.StateStore) {
	rec, ok, err := s.Get(context.Background(), "missing")
	if err != nil || ok {
		t.Fatalf("Get(missing) = %+v, %v, %v; want not found, nil error", rec, ok, err)
	}
	// A record under another key does not make "missing" present.
	mustSet(t, s, "present", resourcelease.Record{Kind: "k", Version: 1, Payload: []byte("x"), RecordedAt: at})
	if _, ok, err := s.Get(context.Background(), "missing"); err != nil || ok {
		t.Fatalf("Get(missing) after Set(present) = %v, %v; want not found", ok, err)
	}
	if _, ok, err := s.Get(context.Background(), "presen"); err != nil || ok {
		t.Fatalf("Get(prefix of a key) = %v, %v; want not found", ok, err)
	}
}

func testSetGetRoundTrip(t *testing.T, s resourcelease.StateStore) {
	for _, tc := range []struct {
		name string
		rec  resourcelease.Record
	}{
		{"all fields", resourcelease.Record{Kind: "Enqueue", Version: 42, Payload: []byte(`{"a":1}`), RecordedAt: at}},
		{"binary payload", resourcelease.Record{Kind: "bin", Version: 1, Payload: []byte{0, 1, 2, 0xfe, 0xff, 0}, RecordedAt: at}},
		{"negative version", resourcelease.Record{Kind: "neg", Version: -7, Payload: []byte("p"), RecordedAt: at}},
		{"max version", resourcelease.Record{Kind: "max", Version: 1<<63 - 1, Payload: []byte("p"), RecordedAt: at}},
		{"empty kind", resourcelease.Record{Version: 3, Payload: []byte("p"), RecordedAt: at}},
		{"zero time", resourcelease.Record{Kind: "zero", Version: 1, Payload: []byte("p")}},
		{"utc nanoseconds", resourcelease.Record{Kind: "ns", Version: 1, Payload: []byte("p"), RecordedAt: time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC)}},
		{"time with monotonic reading", resourcelease.Record{Kind: "mono", Version: 1, Payload: []byte("p"), RecordedAt: time.Now()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "round-trip/" + tc.name
			mustSet(t, s, key, tc.rec)
			got := mustGet(t, s, key)
			RequireRecord(t, got, tc.rec)
			if tc.rec.RecordedAt.IsZero() && !got.RecordedAt.IsZero() {
				t.Errorf("zero recordedAt read back as %v", got.RecordedAt)
			}
		})
	}
}

func testSetOverwrites(t *testing.T, s resourcelease.StateStore) {
	first := resourcelease.Record{Kind: "first", Version: 1, Payload: []byte("one, a longer payload"), RecordedAt: at}
	second := resourcelease.Record{Kind: "second", Version: 2, Payload: []byte("two"), RecordedAt: at.Add(time.Nanosecond)}
	mustSet(t, s, "k", first)
	mustSet(t, s, "k", second)
	RequireRecord(t, mustGet(t, s, "k"), second)
	// Overwriting with the same record again is harmless.
	mustSet(t, s, "k", second)
	RequireRecord(t, mustGet(t, s, "k"), second)
}

func testTryAddOnceOnly(t *testing.T, s resourcelease.StateStore) {
	first := resourcelease.Record{Kind: "first", Version: 1, Payload: []byte("first"), RecordedAt: at}
	if !mustTryAdd(t, s, "once", first) {
		t.Fatal("first TryAdd reported false, want true")
	}
	for i, rec := range []resourcelease.Record{
		first, // the same record again
		{Kind: "second", Version: 2, Payload: []byte("second"), RecordedAt: at.Add(time.Second)},
		{},
	} {
		if mustTryAdd(t, s, "once", rec) {
			t.Fatalf("TryAdd #%d on a present key reported true", i+2)
		}
	}
	RequireRecord(t, mustGet(t, s, "once"), first)
	// Another key is independent.
	if !mustTryAdd(t, s, "once-other", first) {
		t.Fatal("TryAdd on a second key reported false")
	}
}

func testTryAddAfterSet(t *testing.T, s resourcelease.StateStore) {
	set := resourcelease.Record{Kind: "set", Version: 5, Payload: []byte("set"), RecordedAt: at}
	mustSet(t, s, "k", set)
	if mustTryAdd(t, s, "k", resourcelease.Record{Kind: "try", Version: 6, Payload: []byte("try"), RecordedAt: at}) {
		t.Fatal("TryAdd after Set reported true")
	}
	RequireRecord(t, mustGet(t, s, "k"), set)
	// Set still overwrites a record TryAdd added.
	if !mustTryAdd(t, s, "k2", set) {
		t.Fatal("TryAdd on a new key reported false")
	}
	over := resourcelease.Record{Kind: "over", Version: 7, Payload: []byte("over"), RecordedAt: at}
	mustSet(t, s, "k2", over)
	RequireRecord(t, mustGet(t, s, "k2"), over)
}

func testConcurrentTryAdd(t *testing.T, s resourcelease.StateStore) {
	const goroutines = 16
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		mu      sync.Mutex
		winners []int
		errs    []error
	)
	for i := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			rec := resourcelease.Record{Kind: "racer", Version: int64(i), Payload: []byte(fmt.Sprintf("racer-%d", i)), RecordedAt: at}
			added, err := s.TryAdd(context.Background(), "contended", rec)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
			if added {
				winners = append(winners, i)
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("concurrent TryAdd errors: %v", errors.Join(errs...))
	}
	if len(winners) != 1 {
		t.Fatalf("concurrent TryAdd winners = %v, want exactly one", winners)
	}
	w := winners[0]
	RequireRecord(t, mustGet(t, s, "contended"), resourcelease.Record{
		Kind: "racer", Version: int64(w), Payload: []byte(fmt.Sprintf("racer-%d", w)), RecordedAt: at,
	})
}

func testConcurrentDistinctKeys(t *testing.T, s resourcelease.StateStore) {
	const goroutines, perGoroutine = 4, 25
	var wg sync.WaitGroup
	errs := make([]error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perGoroutine {
				key := fmt.Sprintf("g%d/%d", g, i)
				added, err := s.TryAdd(context.Background(), key, resourcelease.Record{Kind: "k", Version: int64(i), Payload: []byte(key), RecordedAt: at})
				if err != nil || !added {
					errs[g] = fmt.Errorf("TryAdd(%q) = %v, %v; want true, nil", key, added, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for g := range goroutines {
		for i := range perGoroutine {
			key := fmt.Sprintf("g%d/%d", g, i)
			RequireRecord(t, mustGet(t, s, key), resourcelease.Record{Kind: "k", Version: int64(i), Payload: []byte(key), RecordedAt: at})
		}
	}
}

func testPayloads(t *testing.T, s resourcelease.StateStore) {
	large := make([]byte, 4<<20)
	for i := range large {
		large[i] = byte(i*7 + i>>11)
	}
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"one zero byte", []byte{0}},
		{"large 4MiB", large},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := resourcelease.Record{Kind: "payload", Version: 1, Payload: tc.payload, RecordedAt: at}
			for _, op := range []string{"set", "tryadd"} {
				key := op + "/" + tc.name
				if op == "set" {
					mustSet(t, s, key, want)
				} else if !mustTryAdd(t, s, key, want) {
					t.Fatalf("TryAdd(%q) reported false", key)
				}
				got := mustGet(t, s, key)
				if len(got.Payload) != len(tc.payload) {
					t.Fatalf("%s: payload length = %d, want %d", op, len(got.Payload), len(tc.payload))
				}
				RequireRecord(t, got, want)
			}
		})
	}
}

func testOddKeys(t *testing.T, s resourcelease.StateStore) {
	keys := []string{
		"resourcelease/seq/1",
		"with space",
		"trailing space ",
		" leading space",
		"Case",
		"case",
		`quotes ' " and backslash \`,
		"x'; DROP TABLE deterministic_state; --",
		"wildcards % _ * ?",
		"unicode ☃ 日本語 emoji 🧪",
		"newline\nand\ttab",
		"nul\x00byte",
		"nul\x00",
		"invalid utf8 \xff\xfe",
		strings.Repeat("long/", 2000),
	}
	for i, k := range keys {
		mustSet(t, s, k, resourcelease.Record{Kind: "odd", Version: int64(i), Payload: []byte(k), RecordedAt: at})
	}
	for i, k := range keys {
		RequireRecord(t, mustGet(t, s, k), resourcelease.Record{Kind: "odd", Version: int64(i), Payload: []byte(k), RecordedAt: at})
		if mustTryAdd(t, s, k, resourcelease.Record{Kind: "other"}) {
			t.Errorf("TryAdd(%q) on a present odd key reported true", k)
		}
	}
	for _, k := range []string{"nul", "Case ", "CASE", "unicode", "resourcelease/seq/10"} {
		if _, ok, err := s.Get(context.Background(), k); err != nil || ok {
			t.Errorf("Get(%q) = %v, %v; want not found", k, ok, err)
		}
	}
}

func testPayloadsAreCopied(t *testing.T, s resourcelease.StateStore) {
	in := []byte("original")
	mustSet(t, s, "set", resourcelease.Record{Kind: "k", Payload: in, RecordedAt: at})
	in2 := []byte("original")
	mustTryAdd(t, s, "tryadd", resourcelease.Record{Kind: "k", Payload: in2, RecordedAt: at})
	copy(in, "MUTATED!")
	copy(in2, "MUTATED!")
	for _, key := range []string{"set", "tryadd"} {
		got := mustGet(t, s, key)
		if string(got.Payload) != "original" {
			t.Fatalf("%s: payload = %q after the caller modified its slice; want %q", key, got.Payload, "original")
		}
		copy(got.Payload, "CHANGED!")
		if again := mustGet(t, s, key); string(again.Payload) != "original" {
			t.Fatalf("%s: payload = %q after modifying a Get result; want %q", key, again.Payload, "original")
		}
	}
}

func testEmptyKeyInvalid(t *testing.T, s resourcelease.StateStore) {
	ctx := context.Background()
	rec := resourcelease.Record{Kind: "k", Payload: []byte("p"), RecordedAt: at}
	_, _, getErr := s.Get(ctx, "")
	setErr := s.Set(ctx, "", rec)
	_, addErr := s.TryAdd(ctx, "", rec)
	for op, err := range map[string]error{"Get": getErr, "Set": setErr, "TryAdd": addErr} {
		if !errors.Is(err, resourcelease.ErrInvalidArgument) {
			t.Errorf("%s with the empty key: err = %v, want invalid-argument", op, err)
		}
	}
}

func testCancelledContext(t *testing.T, s resourcelease.StateStore) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rec := resourcelease.Record{Kind: "k", Payload: []byte("p"), RecordedAt: at}
	setErr := s.Set(ctx, "cancelled-set", rec)
	added, addErr := s.TryAdd(ctx, "cancelled-add", rec)
	_, _, getErr := s.Get(ctx, "cancelled-set")
	for op, err := range map[string]error{"Get": getErr, "Set": setErr, "TryAdd": addErr} {
		if err == nil {
			t.Errorf("%s with a cancelled context succeeded, want an error", op)
		} else if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: err = %v, want one wrapping context.Canceled", op, err)
		}
	}
	if added {
		t.Error("TryAdd with a cancelled context reported true")
	}
	for _, key := range []string{"cancelled-set", "cancelled-add"} {
		if _, ok, err := s.Get(context.Background(), key); err != nil || ok {
			t.Errorf("Get(%q) after a cancelled write = %v, %v; want not found", key, ok, err)
		}
	}
}
