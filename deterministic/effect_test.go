package deterministic_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

func TestEffectStoreCapture(t *testing.T) {
	type step struct {
		id      string
		result  string // what fn returns
		fnErr   error  // what fn fails with
		want    string // what Capture returns
		wantErr error
		wantRan bool // whether fn ran
	}
	for _, kind := range storeKinds {
		for _, tc := range []struct {
			name  string
			steps []step
		}{
			{"first capture runs and records", []step{
				{id: "a", result: "A1", want: "A1", wantRan: true},
			}},
			{"replay returns the recorded result", []step{
				{id: "a", result: "A1", want: "A1", wantRan: true},
				{id: "a", result: "A2", want: "A1"},
				{id: "a", fnErr: errBoom, want: "A1"},
			}},
			{"ids are independent", []step{
				{id: "a", result: "A", want: "A", wantRan: true},
				{id: "b", result: "B", want: "B", wantRan: true},
				{id: "a", result: "x", want: "A"},
				{id: "b", result: "x", want: "B"},
			}},
			{"failure records nothing and can be retried", []step{
				{id: "a", fnErr: errBoom, wantErr: errBoom, wantRan: true},
				{id: "a", fnErr: errBoom, wantErr: errBoom, wantRan: true},
				{id: "a", result: "A", want: "A", wantRan: true},
				{id: "a", fnErr: errBoom, want: "A"},
			}},
			{"empty result is recorded", []step{
				{id: "a", result: "", want: "", wantRan: true},
				{id: "a", result: "late", want: ""},
			}},
			{"odd ids", []step{
				{id: "with/slash and space ☃", result: "1", want: "1", wantRan: true},
				{id: "with/slash and space ☃", result: "2", want: "1"},
			}},
		} {
			t.Run(kind.name+"/"+tc.name, func(t *testing.T) {
				es, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: kind.new(t)})
				if err != nil {
					t.Fatal(err)
				}
				for i, st := range tc.steps {
					ran := false
					got, err := es.Capture(context.Background(), st.id, func(context.Context) ([]byte, error) {
						ran = true
						if st.fnErr != nil {
							return nil, st.fnErr
						}
						return []byte(st.result), nil
					})
					if ran != st.wantRan {
						t.Fatalf("step %d: fn ran = %v, want %v", i, ran, st.wantRan)
					}
					if st.wantErr != nil {
						if !errors.Is(err, st.wantErr) || got != nil {
							t.Fatalf("step %d: Capture = %q, %v; want nil, %v", i, got, err, st.wantErr)
						}
						continue
					}
					if err != nil || string(got) != st.want {
						t.Fatalf("step %d: Capture = %q, %v; want %q", i, got, err, st.want)
					}
				}
			})
		}
	}
}

func TestEffectStoreRecordShape(t *testing.T) {
	store := deterministic.NewMemoryStore()
	clock := leasetest.NewManualClock(t0)
	for _, tc := range []struct {
		name     string
		cfg      deterministic.EffectConfig
		wantKey  string
		wantKind string
	}{
		{"defaults", deterministic.EffectConfig{Store: store, Clock: clock}, "effect/charge-1", "effect"},
		{"custom", deterministic.EffectConfig{Store: store, Clock: clock, KeyPrefix: "fx:", Kind: "payment"}, "fx:charge-1", "payment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, err := deterministic.NewEffectStore(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := es.Capture(context.Background(), "charge-1", func(context.Context) ([]byte, error) {
				return []byte("receipt"), nil
			}); err != nil {
				t.Fatal(err)
			}
			rec, ok, err := store.Get(context.Background(), tc.wantKey)
			if err != nil || !ok {
				t.Fatalf("Get(%q) = %v, %v; want the recorded effect", tc.wantKey, ok, err)
			}
			want := resourcelease.Record{Kind: tc.wantKind, Version: 1, Payload: []byte("receipt"), RecordedAt: t0}
			if rec.Kind != want.Kind || rec.Version != want.Version || string(rec.Payload) != "receipt" || !rec.RecordedAt.Equal(t0) {
				t.Fatalf("record = %+v, want %+v", rec, want)
			}
			got, ok, err := es.Lookup(context.Background(), "charge-1")
			if err != nil || !ok || string(got) != "receipt" {
				t.Fatalf("Lookup = %q, %v, %v; want receipt", got, ok, err)
			}
			if _, ok, err := es.Lookup(context.Background(), "charge-2"); err != nil || ok {
				t.Fatalf("Lookup(missing) = %v, %v; want not found", ok, err)
			}
		})
	}
}

func TestEffectStoreConcurrentCapturesRunOnce(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			es, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: kind.new(t)})
			if err != nil {
				t.Fatal(err)
			}
			const callers = 12
			var (
				runs    atomic.Int32
				started sync.WaitGroup // every caller is about to call Capture
				done    sync.WaitGroup
				results = make([]string, callers)
				errs    = make([]error, callers)
			)
			started.Add(callers)
			for i := range callers {
				done.Add(1)
				go func() {
					defer done.Done()
					started.Done()
					got, err := es.Capture(context.Background(), "shared", func(context.Context) ([]byte, error) {
						n := runs.Add(1)
						// Hold the effect until every caller has reached Capture,
						// so a missing per-id serialization would run fn again.
						started.Wait()
						return []byte(fmt.Sprintf("run-%d-by-%d", n, i)), nil
					})
					results[i], errs[i] = string(got), err
				}()
			}
			done.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			if n := runs.Load(); n != 1 {
				t.Fatalf("fn ran %d times, want 1", n)
			}
			for i, r := range results {
				if r != results[0] {
					t.Fatalf("caller %d got %q, caller 0 got %q; want the same result", i, r, results[0])
				}
			}
		})
	}
}

// TestEffectStoreLosesTryAdd plays two processes sharing one store: both
// miss the record and run fn, the second to finish loses TryAdd and must
// return the winner's result, not its own.
func TestEffectStoreLosesTryAdd(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			shared := kind.new(t)
			procA, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: shared})
			if err != nil {
				t.Fatal(err)
			}
			procB, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: shared})
			if err != nil {
				t.Fatal(err)
			}
			inFn, release := make(chan struct{}), make(chan struct{})
			type result struct {
				got []byte
				err error
			}
			resA := make(chan result, 1)
			go func() {
				got, err := procA.Capture(context.Background(), "e", func(context.Context) ([]byte, error) {
					close(inFn)
					<-release
					return []byte("from A"), nil
				})
				resA <- result{got, err}
			}()
			<-inFn // A has checked the store and is running fn
			gotB, err := procB.Capture(context.Background(), "e", func(context.Context) ([]byte, error) {
				return []byte("from B"), nil
			})
			if err != nil || string(gotB) != "from B" {
				t.Fatalf("B: Capture = %q, %v; want from B", gotB, err)
			}
			close(release)
			ra := <-resA
			if ra.err != nil || string(ra.got) != "from B" {
				t.Fatalf("A: Capture = %q, %v; want the winner's result %q", ra.got, ra.err, "from B")
			}
		})
	}
}

func TestEffectStoreSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), deterministic.DefaultFileName)
	runs := 0
	fn := func(context.Context) ([]byte, error) {
		runs++
		return []byte(fmt.Sprintf("result of run %d", runs)), nil
	}
	var got []string
	for range 2 { // two process lifetimes
		db := openDB(t, path)
		store, err := deterministic.NewSQLiteStore(ctx, db, deterministic.SQLiteConfig{})
		if err != nil {
			t.Fatal(err)
		}
		es, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		r, err := es.Capture(ctx, "once", fn)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(r))
		store.Close()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 1 || got[0] != "result of run 1" || got[1] != got[0] {
		t.Fatalf("runs = %d, results = %q; want one run and the same result after restart", runs, got)
	}
}

func TestEffectStoreErrors(t *testing.T) {
	ctx := context.Background()
	ok := func(context.Context) ([]byte, error) { return []byte("ok"), nil }
	if _, err := deterministic.NewEffectStore(deterministic.EffectConfig{}); !errors.Is(err, resourcelease.ErrInvalidArgument) {
		t.Fatalf("NewEffectStore without a store: err = %v, want invalid-argument", err)
	}
	for _, tc := range []struct {
		name      string
		store     func(t *testing.T) resourcelease.StateStore
		id        string
		fn        func(context.Context) ([]byte, error)
		wantErr   error
		wantRan   bool
		wantInMsg string
	}{
		{"blank id", func(*testing.T) resourcelease.StateStore { return deterministic.NewMemoryStore() },
			" ", ok, resourcelease.ErrInvalidArgument, false, "effect id"},
		{"nil fn", func(*testing.T) resourcelease.StateStore { return deterministic.NewMemoryStore() },
			"e", nil, resourcelease.ErrInvalidArgument, false, "fn is nil"},
		{"get fails: fn does not run", func(*testing.T) resourcelease.StateStore {
			return &funcStore{base: deterministic.NewMemoryStore(), get: func(context.Context, string) (resourcelease.Record, bool, error) {
				return resourcelease.Record{}, false, errBoom
			}}
		}, "e", ok, resourcelease.ErrStorageUnavailable, false, `effect "e": get`},
		{"try-add fails: the result is not returned", func(*testing.T) resourcelease.StateStore {
			return &funcStore{base: deterministic.NewMemoryStore(), tryAdd: func(context.Context, string, resourcelease.Record) (bool, error) {
				return false, errBoom
			}}
		}, "e", ok, resourcelease.ErrStorageUnavailable, true, `effect "e": record result`},
		{"closed sqlite database", func(t *testing.T) resourcelease.StateStore {
			s, db, _ := newSQLiteStore(t)
			db.Close()
			return s
		}, "e", ok, resourcelease.ErrStorageUnavailable, false, "database is closed"},
		{"store loses the record it refused", func(*testing.T) resourcelease.StateStore {
			return &funcStore{base: deterministic.NewMemoryStore(), tryAdd: func(context.Context, string, resourcelease.Record) (bool, error) {
				return false, nil
			}}
		}, "e", ok, &resourcelease.Error{Code: resourcelease.CodeInternal}, true, "holds no record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: tc.store(t)})
			if err != nil {
				t.Fatal(err)
			}
			ran := false
			fn := tc.fn
			if fn != nil {
				fn = func(ctx context.Context) ([]byte, error) { ran = true; return tc.fn(ctx) }
			}
			got, err := es.Capture(ctx, tc.id, fn)
			if !errors.Is(err, tc.wantErr) || got != nil {
				t.Fatalf("Capture = %q, %v; want nil, %v", got, err, tc.wantErr)
			}
			if ran != tc.wantRan {
				t.Fatalf("fn ran = %v, want %v", ran, tc.wantRan)
			}
			if msg := err.Error(); !strings.Contains(msg, tc.wantInMsg) {
				t.Fatalf("error %q does not mention %q", msg, tc.wantInMsg)
			}
		})
	}
}

func TestEffectStoreCancelWhileWaiting(t *testing.T) {
	es, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: deterministic.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	inFn, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := es.Capture(context.Background(), "slow", func(context.Context) ([]byte, error) {
			close(inFn)
			<-release
			return []byte("slow"), nil
		})
		first <- err
	}()
	<-inFn
	// The second capture of the same id waits for the first; cancelling it
	// returns at once without running its fn.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := es.Capture(ctx, "slow", func(context.Context) ([]byte, error) {
		t.Error("fn of a cancelled capture ran")
		return nil, nil
	})
	if !errors.Is(err, context.Canceled) || resourcelease.StatusOf(err) != resourcelease.StatusCancelled || got != nil {
		t.Fatalf("cancelled Capture = %q, %v; want status cancelled", got, err)
	}
	// A waiter whose context ends before or while it waits gives up too.
	ctx2, cancel2 := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() {
		_, err := es.Capture(ctx2, "slow", func(context.Context) ([]byte, error) { return nil, errBoom })
		waiter <- err
	}()
	cancel2()
	if err := <-waiter; !errors.Is(err, context.Canceled) {
		t.Fatalf("waiter err = %v, want cancelled", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	// The first capture's result is the recorded one.
	if got, err := es.Capture(context.Background(), "slow", func(context.Context) ([]byte, error) { return []byte("again"), nil }); err != nil || string(got) != "slow" {
		t.Fatalf("Capture after the first finished = %q, %v; want slow", got, err)
	}
}

func TestEffectStorePanickingFnReleasesID(t *testing.T) {
	es, err := deterministic.NewEffectStore(deterministic.EffectConfig{Store: deterministic.NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("Capture did not propagate fn's panic")
			}
		}()
		es.Capture(context.Background(), "p", func(context.Context) ([]byte, error) { panic("fn exploded") })
	}()
	got, err := es.Capture(context.Background(), "p", func(context.Context) ([]byte, error) { return []byte("recovered"), nil })
	if err != nil || string(got) != "recovered" {
		t.Fatalf("Capture after a panic = %q, %v; want recovered", got, err)
	}
}
