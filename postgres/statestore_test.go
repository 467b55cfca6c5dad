package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/deterministic/statestoretest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestStateStoreConformance(t *testing.T) {
	t.Parallel()
	statestoretest.Run(t, func(t *testing.T) resourcelease.StateStore {
		return newStore(t).StateStore()
	})
}

func TestStateStoreValues(t *testing.T) {
	t.Parallel()
	ss := newStore(t).StateStore()
	ctx := context.Background()
	random := make([]byte, 20000)
	rand.NewChaCha8([32]byte{1}).Read(random) //nolint:errcheck // never fails
	for _, tc := range []struct {
		name string
		key  string
		rec  resourcelease.Record
	}{
		{"year 0000", "y0", resourcelease.Record{Kind: "k", RecordedAt: time.Date(0, 1, 1, 0, 0, 0, 1, time.UTC)}},
		{"last nanosecond of 9999", "y9999", resourcelease.Record{Kind: "k", RecordedAt: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}},
		{"before 1970 with nanoseconds", "y1969", resourcelease.Record{Kind: "k", RecordedAt: time.Date(1969, 12, 31, 23, 59, 59, 123456789, time.UTC)}},
		{"incompressible 20 KB key", string(random), resourcelease.Record{Kind: "k", Payload: random}},
		{"unicode kind", "uk", resourcelease.Record{Kind: "Ereignis ☃ 日本", Version: 1}},
		{"min version", "minv", resourcelease.Record{Version: -1 << 63}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ss.Set(ctx, tc.key, tc.rec); err != nil {
				t.Fatal(err)
			}
			got, ok, err := ss.Get(ctx, tc.key)
			if err != nil || !ok {
				t.Fatalf("Get = %v, %v", ok, err)
			}
			statestoretest.RequireRecord(t, got, tc.rec)
			if added, err := ss.TryAdd(ctx, tc.key, resourcelease.Record{}); err != nil || added {
				t.Errorf("TryAdd of the present key = %v, %v", added, err)
			}
		})
	}
}

func TestStateStoreRefusesWhatItCannotHold(t *testing.T) {
	t.Parallel()
	ss := newStore(t).StateStore()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		rec  resourcelease.Record
	}{
		{"invalid UTF-8 kind", resourcelease.Record{Kind: "bad \xff"}},
		{"NUL in kind", resourcelease.Record{Kind: "a\x00b"}},
		{"year 10000", resourcelease.Record{RecordedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"year -1", resourcelease.Record{RecordedAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "refused/" + tc.name
			if err := ss.Set(ctx, key, tc.rec); !errors.Is(err, resourcelease.ErrInvalidArgument) {
				t.Errorf("Set: %v, want invalid-argument", err)
			}
			if _, err := ss.TryAdd(ctx, key, tc.rec); !errors.Is(err, resourcelease.ErrInvalidArgument) {
				t.Errorf("TryAdd: %v, want invalid-argument", err)
			}
			_, err := ss.TryAddMany(ctx, []deterministic.KeyedRecord{{Key: key + "/ok"}, {Key: key, Record: tc.rec}})
			if !errors.Is(err, resourcelease.ErrInvalidArgument) || !strings.Contains(err.Error(), "record 2 of 2") {
				t.Errorf("TryAddMany: %v, want invalid-argument naming record 2 of 2", err)
			}
			for _, k := range []string{key, key + "/ok"} {
				if _, ok, err := ss.Get(ctx, k); err != nil || ok {
					t.Errorf("Get(%q) = %v, %v; want nothing written", k, ok, err)
				}
			}
		})
	}
}

// TestStateStoreInCallersTransaction: the Tx forms write with the caller's
// transaction, and the once-only guarantee holds across transactions.
func TestStateStoreInCallersTransaction(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ss := s.StateStore()
	ctx := context.Background()
	rec := func(kind string) resourcelease.Record {
		return resourcelease.Record{Kind: kind, Payload: []byte(kind), RecordedAt: time.Date(2026, 1, 1, 0, 0, 0, 7, time.UTC)}
	}
	begin := func() pgx.Tx {
		t.Helper()
		tx, err := s.Pool().Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Rollback(ctx) }) //nolint:errcheck // a no-op once committed
		return tx
	}
	present := func(key string) bool {
		t.Helper()
		_, ok, err := ss.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}

	t.Run("rollback writes nothing", func(t *testing.T) {
		tx := begin()
		if added, err := ss.TryAddTx(ctx, tx, "rb/tryadd", rec("a")); err != nil || !added {
			t.Fatalf("TryAddTx = %v, %v", added, err)
		}
		if err := ss.SetTx(ctx, tx, "rb/set", rec("b")); err != nil {
			t.Fatal(err)
		}
		if added, err := ss.TryAddManyTx(ctx, tx, []deterministic.KeyedRecord{{Key: "rb/many1"}, {Key: "rb/many2"}}); err != nil || !added[0] || !added[1] {
			t.Fatalf("TryAddManyTx = %v, %v", added, err)
		}
		// The transaction sees its own writes; nobody else does yet.
		if got, ok, err := ss.GetTx(ctx, tx, "rb/set"); err != nil || !ok || got.Kind != "b" {
			t.Fatalf("GetTx of its own write = %+v, %v, %v", got, ok, err)
		}
		if present("rb/set") {
			t.Fatal("an uncommitted SetTx is visible outside its transaction")
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"rb/tryadd", "rb/set", "rb/many1", "rb/many2"} {
			if present(k) {
				t.Errorf("%s present after rollback", k)
			}
		}
	})

	t.Run("commit writes everything", func(t *testing.T) {
		tx := begin()
		if added, err := ss.TryAddTx(ctx, tx, "c/tryadd", rec("a")); err != nil || !added {
			t.Fatalf("TryAddTx = %v, %v", added, err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE business (x int); INSERT INTO business VALUES (1)`); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		got, ok, err := ss.Get(ctx, "c/tryadd")
		if err != nil || !ok {
			t.Fatalf("Get after commit = %v, %v", ok, err)
		}
		statestoretest.RequireRecord(t, got, rec("a"))
	})

	// A TryAdd racing an open transaction's TryAddTx of the same key waits
	// for it, then loses if it commits and wins if it rolls back.
	for _, commit := range []bool{true, false} {
		t.Run(fmt.Sprintf("racing TryAdd, commit=%v", commit), func(t *testing.T) {
			key := fmt.Sprintf("race/%v", commit)
			tx := begin()
			if added, err := ss.TryAddTx(ctx, tx, key, rec("tx")); err != nil || !added {
				t.Fatalf("TryAddTx = %v, %v", added, err)
			}
			type result struct {
				added bool
				err   error
			}
			racer := make(chan result, 1)
			go func() {
				added, err := ss.TryAdd(ctx, key, rec("racer"))
				racer <- result{added, err}
			}()
			waitForLockWait(t, s)
			var err error
			if commit {
				err = tx.Commit(ctx)
			} else {
				err = tx.Rollback(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			r := <-racer
			if r.err != nil || r.added == commit {
				t.Fatalf("racing TryAdd = %v, %v; want added=%v", r.added, r.err, !commit)
			}
			want := rec("tx")
			if !commit {
				want = rec("racer")
			}
			got, _, _ := ss.Get(ctx, key)
			statestoretest.RequireRecord(t, got, want)
		})
	}
}

// waitForLockWait returns once some session of s's database waits on a
// lock: the racing statement has reached the row the transaction holds.
func waitForLockWait(t *testing.T, s *postgres.Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no session waits on the transaction's lock")
		}
		time.Sleep(5 * time.Millisecond) // polling the server's view; there is nothing to wait on in-process
	}
}
