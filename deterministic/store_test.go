package deterministic_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/deterministic/statestoretest"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

var t0 = time.Date(2026, 5, 6, 7, 8, 9, 987654321, time.UTC)

func TestMemoryStoreConformance(t *testing.T) {
	statestoretest.Run(t, func(t *testing.T) resourcelease.StateStore {
		return deterministic.NewMemoryStore()
	})
}

func TestMemoryStoreZeroValue(t *testing.T) {
	statestoretest.Run(t, func(t *testing.T) resourcelease.StateStore {
		return new(deterministic.MemoryStore)
	})
}

func TestSQLiteStoreConformance(t *testing.T) {
	statestoretest.Run(t, func(t *testing.T) resourcelease.StateStore {
		s, _, _ := newSQLiteStore(t)
		return s
	})
}

func TestMemoryStoreLen(t *testing.T) {
	s := deterministic.NewMemoryStore()
	ctx := context.Background()
	for i, step := range []struct {
		op   string
		key  string
		want int
	}{
		{"set", "a", 1},
		{"set", "a", 1},
		{"tryadd", "a", 1},
		{"tryadd", "b", 2},
		{"set", "c", 3},
		{"tryaddmany", "c,d,d,e", 5},
		{"tryaddmany", "a,e", 5},
	} {
		var err error
		switch step.op {
		case "set":
			err = s.Set(ctx, step.key, resourcelease.Record{})
		case "tryadd":
			_, err = s.TryAdd(ctx, step.key, resourcelease.Record{})
		default:
			var batch []deterministic.KeyedRecord
			for _, k := range strings.Split(step.key, ",") {
				batch = append(batch, deterministic.KeyedRecord{Key: k})
			}
			_, err = s.TryAddMany(ctx, batch)
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := s.Len(); got != step.want {
			t.Fatalf("step %d (%s %q): Len = %d, want %d", i, step.op, step.key, got, step.want)
		}
	}
}

func TestSQLiteStoreSurvivesReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), deterministic.DefaultFileName)
	want := map[string]resourcelease.Record{
		"set":    {Kind: "Enqueue", Version: 7, Payload: []byte(`{"x":1}`), RecordedAt: t0},
		"tryadd": {Kind: "Completed", Version: 8, Payload: []byte{0, 1, 2}, RecordedAt: t0.Add(time.Nanosecond)},
		"empty":  {Kind: "Heartbeat", Version: 9, RecordedAt: t0.Add(time.Hour)},
	}

	db := openDB(t, path)
	s, err := deterministic.NewSQLiteStore(ctx, db, deterministic.SQLiteConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for key, rec := range want {
		if key == "set" {
			err = s.Set(ctx, key, rec)
		} else {
			_, err = s.TryAdd(ctx, key, rec)
		}
		if err != nil {
			t.Fatalf("write %q: %v", key, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db2 := openDB(t, path)
	s2, err := deterministic.NewSQLiteStore(ctx, db2, deterministic.SQLiteConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for key, rec := range want {
		got, ok, err := s2.Get(ctx, key)
		if err != nil || !ok {
			t.Fatalf("Get(%q) after reopen = %v, %v", key, ok, err)
		}
		statestoretest.RequireRecord(t, got, rec)
		if got.RecordedAt != rec.RecordedAt {
			t.Errorf("Get(%q) recordedAt = %#v, want == %#v", key, got.RecordedAt, rec.RecordedAt)
		}
		if added, err := s2.TryAdd(ctx, key, resourcelease.Record{Kind: "late"}); err != nil || added {
			t.Fatalf("TryAdd(%q) after reopen = %v, %v; want false", key, added, err)
		}
	}
}

func TestSQLiteConfig(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "config.db"))
	for _, tc := range []struct {
		table     string
		wantTable string
		wantErr   bool
	}{
		{"", deterministic.DefaultTable, false},
		{"effects", "effects", false},
		{"_under_score9", "_under_score9", false},
		{strings.Repeat("t", 64), strings.Repeat("t", 64), false},
		{strings.Repeat("t", 65), "", true},
		{"9starts_with_digit", "", true},
		{"has space", "", true},
		{"has-dash", "", true},
		{`quote"`, "", true},
		{"x; DROP TABLE y", "", true},
		{"sqlite_master", "", true},
		{"SQLITE_anything", "", true},
		{"ünïcode", "", true},
	} {
		t.Run(tc.table, func(t *testing.T) {
			s, err := deterministic.NewSQLiteStore(ctx, db, deterministic.SQLiteConfig{Table: tc.table})
			if tc.wantErr {
				if !errors.Is(err, resourcelease.ErrInvalidArgument) {
					t.Fatalf("NewSQLiteStore(table %q) err = %v, want invalid-argument", tc.table, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewSQLiteStore(table %q): %v", tc.table, err)
			}
			defer s.Close()
			if s.Table() != tc.wantTable {
				t.Fatalf("Table() = %q, want %q", s.Table(), tc.wantTable)
			}
			var name string
			if err := db.QueryRow(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?`, tc.wantTable).Scan(&name); err != nil {
				t.Fatalf("table %q not created: %v", tc.wantTable, err)
			}
		})
	}
	if _, err := deterministic.NewSQLiteStore(ctx, nil, deterministic.SQLiteConfig{}); !errors.Is(err, resourcelease.ErrInvalidArgument) {
		t.Fatalf("NewSQLiteStore(nil db) err = %v, want invalid-argument", err)
	}
}

func TestSQLiteTablesAreIndependent(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, filepath.Join(t.TempDir(), "two.db"))
	a, err := deterministic.NewSQLiteStore(ctx, db, deterministic.SQLiteConfig{Table: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := deterministic.NewSQLiteStore(ctx, db, deterministic.SQLiteConfig{Table: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if added, err := a.TryAdd(ctx, "k", resourcelease.Record{Kind: "a"}); err != nil || !added {
		t.Fatalf("a.TryAdd = %v, %v", added, err)
	}
	if _, ok, err := b.Get(ctx, "k"); err != nil || ok {
		t.Fatalf("b.Get(k) = %v, %v; want not found", ok, err)
	}
	if added, err := b.TryAdd(ctx, "k", resourcelease.Record{Kind: "b"}); err != nil || !added {
		t.Fatalf("b.TryAdd = %v, %v; want true", added, err)
	}
	// A second store on an existing table reuses it.
	a2, err := deterministic.NewSQLiteStore(ctx, db, deterministic.SQLiteConfig{Table: "a"})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	if rec, ok, err := a2.Get(ctx, "k"); err != nil || !ok || rec.Kind != "a" {
		t.Fatalf("a2.Get(k) = %+v, %v, %v; want kind a", rec, ok, err)
	}
}

// TestSQLiteTryAddAcrossHandles races TryAdds from two independent *sql.DB
// handles on one file, as two processes sharing a database would.
func TestSQLiteTryAddAcrossHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), deterministic.DefaultFileName)
	var stores []*deterministic.SQLiteStore
	for range 2 {
		s, err := deterministic.NewSQLiteStore(ctx, openDB(t, path), deterministic.SQLiteConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		stores = append(stores, s)
	}
	const keys, perHandle = 20, 4
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		wins  = map[string]int{}
		errs  []error
		start = make(chan struct{})
	)
	for h, s := range stores {
		for g := range perHandle {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for k := range keys {
					key := fmt.Sprintf("key-%d", k)
					added, err := s.TryAdd(ctx, key, resourcelease.Record{Kind: fmt.Sprintf("h%d-g%d", h, g)})
					mu.Lock()
					if err != nil {
						errs = append(errs, err)
					}
					if added {
						wins[key]++
					}
					mu.Unlock()
				}
			}()
		}
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		key := fmt.Sprintf("key-%d", k)
		if wins[key] != 1 {
			t.Errorf("%s: %d winners, want 1", key, wins[key])
		}
		r0, _, err0 := stores[0].Get(ctx, key)
		r1, _, err1 := stores[1].Get(ctx, key)
		if err0 != nil || err1 != nil || r0.Kind != r1.Kind {
			t.Errorf("%s: handles disagree: %q (%v) vs %q (%v)", key, r0.Kind, err0, r1.Kind, err1)
		}
	}
}

// requireStorageUnavailable fails t unless err is an unavailable
// storage_unavailable *resourcelease.Error whose message names op.
func requireStorageUnavailable(t *testing.T, err error, op string) {
	t.Helper()
	t.Logf("%s: %v", op, err)
	var e *resourcelease.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %T %v, want *resourcelease.Error", err, err)
	}
	if e.Status != resourcelease.StatusUnavailable || e.Code != resourcelease.CodeStorageUnavailable {
		t.Fatalf("err status/code = %s/%s, want unavailable/%s (%v)", e.Status, e.Code, resourcelease.CodeStorageUnavailable, err)
	}
	if !errors.Is(err, resourcelease.ErrStorageUnavailable) {
		t.Fatalf("errors.Is(%v, ErrStorageUnavailable) = false", err)
	}
	if !strings.Contains(e.Message, op) {
		t.Fatalf("message %q does not name the operation %q", e.Message, op)
	}
	if e.Err == nil {
		t.Fatalf("error %v does not wrap its cause", err)
	}
}

func TestSQLiteStoreErrors(t *testing.T) {
	ctx := context.Background()
	rec := resourcelease.Record{Kind: "k", Version: 1, Payload: []byte("p"), RecordedAt: t0}
	ops := []struct {
		name string // named in the error message
		call func(s *deterministic.SQLiteStore) error
	}{
		{"get", func(s *deterministic.SQLiteStore) error { _, _, err := s.Get(ctx, "key-17"); return err }},
		{"set", func(s *deterministic.SQLiteStore) error { return s.Set(ctx, "key-17", rec) }},
		{"try-add", func(s *deterministic.SQLiteStore) error {
			added, err := s.TryAdd(ctx, "key-new", rec)
			if added {
				t.Error("TryAdd reported true on a failing store")
			}
			return err
		}},
		{"try-add-many", func(s *deterministic.SQLiteStore) error {
			added, err := s.TryAddMany(ctx, []deterministic.KeyedRecord{{Key: "key-new", Record: rec}, {Key: "key-17", Record: rec}})
			if added != nil {
				t.Errorf("TryAddMany reported %v on a failing store, want nil", added)
			}
			return err
		}},
	}
	for _, tc := range []struct {
		name string
		// broken returns a store whose every operation in writeOps fails.
		broken   func(t *testing.T) *deterministic.SQLiteStore
		writeOps bool // only writes fail (reads still work)
	}{
		{"closed database", func(t *testing.T) *deterministic.SQLiteStore {
			s, db, _ := newSQLiteStore(t)
			db.Close()
			return s
		}, false},
		{"closed store", func(t *testing.T) *deterministic.SQLiteStore {
			s, _, _ := newSQLiteStore(t)
			s.Close()
			if err := s.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			return s
		}, false},
		{"read-only database", func(t *testing.T) *deterministic.SQLiteStore {
			s, db, path := newSQLiteStore(t)
			if err := s.Set(ctx, "key-17", rec); err != nil {
				t.Fatal(err)
			}
			s.Close()
			db.Close()
			ro, err := sqlitedb.Open(ctx, path, sqlitedb.Config{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ro.Close() })
			rs, err := deterministic.NewSQLiteStore(ctx, ro, deterministic.SQLiteConfig{})
			if err != nil {
				t.Fatalf("NewSQLiteStore on a read-only database with the table: %v", err)
			}
			t.Cleanup(func() { rs.Close() })
			return rs
		}, true},
		{"corrupt file", func(t *testing.T) *deterministic.SQLiteStore {
			return corruptStore(t)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.broken(t)
			for _, op := range ops {
				err := op.call(s)
				if tc.writeOps && op.name == "get" {
					if err != nil {
						t.Errorf("get on %s: %v, want success", tc.name, err)
					}
					continue
				}
				if err == nil {
					t.Errorf("%s on %s succeeded, want an error", op.name, tc.name)
					continue
				}
				requireStorageUnavailable(t, err, op.name)
			}
		})
	}
}

// corruptStore returns a store on a file whose header and schema page are
// intact (so sqlitedb.Open and NewSQLiteStore succeed) but whose table pages
// are garbage, as after a torn write or a disk fault.
func corruptStore(t *testing.T) *deterministic.SQLiteStore {
	t.Helper()
	ctx := context.Background()
	s, db, path := newSQLiteStore(t)
	for i := range 200 {
		key := fmt.Sprintf("key-%d", i)
		if err := s.Set(ctx, key, resourcelease.Record{Kind: "k", Payload: []byte(strings.Repeat("x", 100))}); err != nil {
			t.Fatal(err)
		}
	}
	var pageSize int
	if err := db.QueryRow("PRAGMA page_size").Scan(&pageSize); err != nil {
		t.Fatal(err)
	}
	s.Close() // first: its checkpointer would make this TRUNCATE report busy
	if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() <= int64(2*pageSize) {
		t.Fatalf("database is only %d bytes; want several pages to corrupt", fi.Size())
	}
	garbage := []byte(strings.Repeat("\xde\xad\xbe\xef", int(fi.Size()-int64(pageSize))/4))
	if _, err := f.WriteAt(garbage, int64(pageSize)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	db2 := openDB(t, path)
	cs, err := deterministic.NewSQLiteStore(ctx, db2, deterministic.SQLiteConfig{})
	if err != nil {
		t.Fatalf("NewSQLiteStore on the corrupt file: %v (want the failure on first use)", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func TestSQLiteStoreRefusesOutOfRangeTime(t *testing.T) {
	s, _, _ := newSQLiteStore(t)
	ctx := context.Background()
	for _, at := range []time.Time{
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		rec := resourcelease.Record{Kind: "k", RecordedAt: at}
		if err := s.Set(ctx, "k", rec); !errors.Is(err, resourcelease.ErrInvalidArgument) {
			t.Errorf("Set with recordedAt %v: err = %v, want invalid-argument", at, err)
		}
		if _, err := s.TryAdd(ctx, "k", rec); !errors.Is(err, resourcelease.ErrInvalidArgument) {
			t.Errorf("TryAdd with recordedAt %v: err = %v, want invalid-argument", at, err)
		}
		// In a batch the bad record is refused before anything is written.
		batch := []deterministic.KeyedRecord{{Key: "before", Record: resourcelease.Record{RecordedAt: t0}}, {Key: "k", Record: rec}}
		added, err := s.TryAddMany(ctx, batch)
		if !errors.Is(err, resourcelease.ErrInvalidArgument) || added != nil {
			t.Errorf("TryAddMany with recordedAt %v = %v, %v; want invalid-argument", at, added, err)
		} else if !strings.Contains(err.Error(), "record 2 of 2") {
			t.Errorf("TryAddMany error %q does not name the record", err)
		}
	}
	for _, key := range []string{"k", "before"} {
		if _, ok, err := s.Get(ctx, key); err != nil || ok {
			t.Fatalf("Get(%q) = %v, %v; want nothing written", key, ok, err)
		}
	}
}

// TestSQLiteTryAddManyRollsBack makes the database itself fail the batch
// part-way, after earlier records were inserted in the transaction (a
// trigger aborts the insert of a "poison" key), and checks that none of the
// batch is visible, that the error names the failing record, and that the
// store works afterwards, adding the same records again.
func TestSQLiteTryAddManyRollsBack(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		keys   []string // "existing" is present before the batch
		poison int      // index of the poison key in keys
	}{
		{"poison first", []string{"poison", "a", "b"}, 0},
		{"poison in the middle", []string{"a", "existing", "poison", "b"}, 2},
		{"poison last", []string{"a", "b", "existing", "poison"}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, db, path := newSQLiteStore(t)
			existing := resourcelease.Record{Kind: "existing", Version: 1, Payload: []byte("old"), RecordedAt: t0}
			if err := s.Set(ctx, "existing", existing); err != nil {
				t.Fatal(err)
			}
			heal := poison(t, db, "poison")
			batch := make([]deterministic.KeyedRecord, len(tc.keys))
			for i, k := range tc.keys {
				batch[i] = deterministic.KeyedRecord{Key: k, Record: resourcelease.Record{Kind: "new", Version: int64(i + 10), Payload: []byte(k), RecordedAt: t0}}
			}
			added, err := s.TryAddMany(ctx, batch)
			if added != nil {
				t.Errorf("added = %v on error, want nil", added)
			}
			requireStorageUnavailable(t, err, "try-add-many")
			for _, want := range []string{`"poison"`, fmt.Sprintf("record %d of %d", tc.poison+1, len(tc.keys)), "poisoned record"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			// Nothing of the batch is visible, through this handle or another.
			other := openDB(t, path)
			var rows int
			if err := other.QueryRow(`SELECT count(*) FROM ` + deterministic.DefaultTable).Scan(&rows); err != nil || rows != 1 {
				t.Fatalf("rows after the failed batch = %d, %v; want 1 (only existing)", rows, err)
			}
			for _, k := range tc.keys {
				rec, ok, err := s.Get(ctx, k)
				switch {
				case err != nil:
					t.Fatalf("Get(%q): %v", k, err)
				case k == "existing":
					statestoretest.RequireRecord(t, rec, existing)
				case ok:
					t.Errorf("Get(%q) found %+v after the batch rolled back", k, rec)
				}
			}
			// The store is usable afterwards: without the trigger the same
			// batch goes through and adds every new record.
			heal()
			added, err = s.TryAddMany(ctx, batch)
			if err != nil {
				t.Fatalf("TryAddMany after the rollback: %v", err)
			}
			for i, k := range tc.keys {
				if want := k != "existing"; added[i] != want {
					t.Errorf("after the rollback: added[%d] (%q) = %v, want %v", i, k, added[i], want)
				}
			}
		})
	}
}
