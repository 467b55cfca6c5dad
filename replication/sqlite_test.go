package replication_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/replication/replicatortest"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

func count(t *testing.T, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// wantStorageError checks err is the unavailable storage error naming path.
func wantStorageError(t *testing.T, err error, path string, parts ...string) {
	t.Helper()
	var e *resourcelease.Error
	if !errors.As(err, &e) {
		t.Fatalf("err = %v (%T), want an *resourcelease.Error", err, err)
	}
	if e.Status != resourcelease.StatusUnavailable || e.Code != resourcelease.CodeStorageUnavailable {
		t.Fatalf("err = %s/%s %q, want unavailable/%s", e.Status, e.Code, e.Message, resourcelease.CodeStorageUnavailable)
	}
	for _, p := range append([]string{path}, parts...) {
		if !strings.Contains(e.Message, p) {
			t.Fatalf("message %q does not name %q", e.Message, p)
		}
	}
}

// TestSQLiteWriteFailurePoisons: when a commit fails, that batch's Acks and
// every later Record's fail with storage_unavailable naming the path, the
// stage and the cause — quickly, never a hang. A fault that clears (a lock
// released) is recovered from: the writer retries, commits what it was
// holding, in order, and works again; one that does not is reported by
// Close.
func TestSQLiteWriteFailurePoisons(t *testing.T) {
	for _, tc := range []struct {
		name     string
		stage    string
		recovers bool // once released
		break_   func(t *testing.T, other *sql.DB, r *replication.SQLiteReplicator) (release func())
	}{
		{"write lock held by another connection", "begin", true, func(t *testing.T, other *sql.DB, _ *replication.SQLiteReplicator) func() {
			tx, err := other.Begin() // _txlock=immediate: holds the write lock
			if err != nil {
				t.Fatal(err)
			}
			return func() { tx.Rollback() }
		}},
		{"the next event row already exists", "insert events", false, func(t *testing.T, other *sql.DB, r *replication.SQLiteReplicator) func() {
			if _, err := other.Exec(`INSERT INTO replication_events (seq, event_type, event) VALUES (?, 'Bogus', x'00')`, r.LastSequence()+1); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}},
		{"the queue table is gone", "write queue state", false, func(t *testing.T, other *sql.DB, _ *replication.SQLiteReplicator) func() {
			if _, err := other.Exec(`DROP TABLE queue_items`); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "replication.db")
			db := openDB(t, path, sqlitedb.Config{BusyTimeoutMs: 50})
			other := openDB(t, path, sqlitedb.Config{BusyTimeoutMs: 50})
			r, err := replication.NewSQLiteReplicator(context.Background(), db, replication.SQLiteConfig{Path: path, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 1, 0))); err != nil {
				t.Fatal(err)
			}
			release := tc.break_(t, other, r)
			defer release()
			start := time.Now()
			err = wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 2, 1)))
			wantStorageError(t, err, path, tc.stage)
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("the failing commit took %v", took)
			}
			if r.LastSequence() != 1 {
				t.Fatalf("LastSequence = %d after a failed commit, want 1", r.LastSequence())
			}
			// While the fault lasts, later Records fail at once with the
			// same error.
			later := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 3, 2)))
			if !errors.Is(later, resourcelease.ErrStorageUnavailable) || later.Error() != err.Error() {
				t.Fatalf("Record during the failure: %v, want the same storage error", later)
			}
			if !errors.Is(r.Err(), resourcelease.ErrStorageUnavailable) {
				t.Fatalf("Err() = %v", r.Err())
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(r)
			failing := func() float64 {
				return gather(t, reg).find("replication_storage_failing", nil).GetGauge().GetValue()
			}
			if v := failing(); v != 1 {
				t.Fatalf("replication_storage_failing = %v during the failure, want 1", v)
			}
			if poisoned := replication.Poisoned(r); poisoned == tc.recovers {
				t.Fatalf("poisoned = %v; want a fault that can clear retried, and one that cannot refused for good", poisoned)
			}
			release()
			if !tc.recovers {
				// Refused for good: retrying cannot mend it, so the writer
				// does not, and later Records fail with the same error.
				if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 4, 3))); err == nil || err.Error() != later.Error() {
					t.Fatalf("Record after a permanent failure: %v, want %v", err, later)
				}
				if cerr := r.Close(); !errors.Is(cerr, resourcelease.ErrStorageUnavailable) {
					t.Fatalf("Close = %v, want the storage error", cerr)
				}
				if n := count(t, other, `SELECT count(*) FROM replication_events WHERE event_type != 'Bogus'`); n != 1 {
					t.Fatalf("%d events on disk after a permanent failure, want 1", n)
				}
				return
			}
			// The writer commits what it held (events 2 and 3), in order,
			// and takes new changes again.
			deadline := time.Now().Add(10 * time.Second)
			for r.LastSequence() < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("LastSequence = %d 10 s after the fault cleared, want 3", r.LastSequence())
				}
				time.Sleep(10 * time.Millisecond)
			}
			if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 4, 3))); err != nil {
				t.Fatalf("Record after the recovery: %v", err)
			}
			if r.Err() != nil {
				t.Fatalf("Err() = %v after the recovery", r.Err())
			}
			if v := failing(); v != 0 {
				t.Fatalf("replication_storage_failing = %v after the recovery, want 0", v)
			}
			evs, err := r.ReadEvents(context.Background(), 0, 100)
			if err != nil || len(evs) != 4 {
				t.Fatalf("ReadEvents: %d events, %v; want 4", len(evs), err)
			}
			for i, e := range evs {
				if e.SequenceNumber != int64(i+1) {
					t.Fatalf("event %d has sequence %d", i, e.SequenceNumber)
				}
			}
			if cerr := r.Close(); cerr != nil {
				t.Fatalf("Close = %v after the recovery", cerr)
			}
		})
	}
}

// TestSQLiteReadOnlyDatabase: a database opened read-only cannot back a
// replicator — NewSQLiteReplicator fails at once, unavailable, naming the
// path — but another process can tail its log and read its state.
func TestSQLiteReadOnlyDatabase(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "replication.db")
	writer := newSQLite(t, openDB(t, path, sqlitedb.Config{}), replication.SQLiteConfig{Path: path, Logger: quiet})
	for i := range 5 {
		if err := wait(writer.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+1), i))); err != nil {
			t.Fatal(err)
		}
	}
	ro := openDB(t, path, sqlitedb.Config{ReadOnly: true, BusyTimeoutMs: 100})
	done := make(chan error, 1)
	go func() {
		_, err := replication.NewSQLiteReplicator(ctx, ro, replication.SQLiteConfig{Path: path, Logger: quiet})
		done <- err
	}()
	select {
	case err := <-done:
		wantStorageError(t, err, path, "create schema")
	case <-time.After(10 * time.Second):
		t.Fatal("NewSQLiteReplicator on a read-only database hangs")
	}

	reader, err := replication.NewSQLiteLogReader(ro, replication.SQLiteReaderOptions{Path: path, Clock: leasetest.NewManualClock(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))})
	if err != nil {
		t.Fatal(err)
	}
	// The reader tails while the writer keeps writing.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 5; i < 50; i++ {
			if err := wait(writer.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+1), i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	seen := int64(0)
	for seen < 50 {
		evs, err := reader.ReadEvents(ctx, seen, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.SequenceNumber != seen+1 {
				t.Fatalf("tail read %d after %d", ev.SequenceNumber, seen)
			}
			seen = ev.SequenceNumber
		}
	}
	wg.Wait()
	if last, err := reader.LastSequence(ctx); err != nil || last != 50 {
		t.Fatalf("reader LastSequence = %d, %v", last, err)
	}
	st, err := reader.LoadState(ctx)
	if err != nil || len(st.Pending) != 50 || len(st.Dedupe) != 50 {
		t.Fatalf("reader LoadState: %d pending, %d dedupe, %v; want 50, 50", len(st.Pending), len(st.Dedupe), err)
	}
}

// TestSQLiteCorruptDatabase: garbage in the file is reported at start as
// unavailable naming the path, whether the header or only table pages are
// damaged.
func TestSQLiteCorruptDatabase(t *testing.T) {
	ctx := context.Background()
	garbage := func(n int) []byte {
		b := make([]byte, n)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, path string)
	}{
		{"all garbage", func(t *testing.T, path string) {
			if err := os.WriteFile(path, garbage(64<<10), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"table pages overwritten", func(t *testing.T, path string) {
			// A real database (closed, so its WAL is checkpointed away) whose
			// pages after the first are garbage.
			db := openDB(t, path, sqlitedb.Config{})
			r := newSQLite(t, db, replication.SQLiteConfig{Path: path, Logger: quiet})
			for i := range 50 {
				if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+1), i))); err != nil {
					t.Fatal(err)
				}
			}
			r.Close()
			db.Close()
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			fi, _ := f.Stat()
			if _, err := f.WriteAt(garbage(int(fi.Size())-4096), 4096); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "replication.db")
			tc.corrupt(t, path)
			db, err := sqlitedb.Open(ctx, path, sqlitedb.Config{})
			if err == nil {
				defer db.Close()
				var r *replication.SQLiteReplicator
				if r, err = replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: path, Logger: quiet}); err == nil {
					defer r.Close()
					_, err = r.LoadState(ctx)
				}
			}
			wantStorageError(t, err, path)
		})
	}
}

// TestSQLiteRefusesNewerSchema: a database written by a newer version is not
// misread.
func TestSQLiteRefusesNewerSchema(t *testing.T) {
	db := openDB(t, "", sqlitedb.Config{})
	newSQLite(t, db, replication.SQLiteConfig{}).Close()
	if _, err := db.Exec(`UPDATE replication_meta SET value = 99 WHERE key = 'schema_version'`); err != nil {
		t.Fatal(err)
	}
	_, err := replication.NewSQLiteReplicator(context.Background(), db, replication.SQLiteConfig{Path: "new.db", Logger: quiet})
	wantStorageError(t, err, "new.db", "schema version 99")
}

// TestSQLiteMigratesSchemaOne: a database written by schema 1 (before
// queue_items.releases) is migrated in place: its items load with no
// releases, and a release after that is persisted.
// TestSQLiteMigratesOlderSchemas: a database of schema 1 (no releases, no
// not_before) or 2 (no not_before) is migrated to the current one, keeping
// its items, and the new columns work.
func TestSQLiteMigratesOlderSchemas(t *testing.T) {
	for _, tc := range []struct {
		version int
		drop    []string
	}{
		{1, []string{"releases", "not_before"}},
		{2, []string{"not_before"}},
	} {
		t.Run(fmt.Sprint("schema ", tc.version), func(t *testing.T) {
			ctx := context.Background()
			db := openDB(t, "", sqlitedb.Config{})
			r := newSQLite(t, db, replication.SQLiteConfig{})
			seq := int64(1)
			if err := r.Record(&resourcelease.Change{Kind: resourcelease.ChangeEnqueued, At: time.Unix(1, 0), Item: &resourcelease.PendingItem{
				Payload: resourcelease.Item{ResourceType: "t", ResourceID: "a", PartitionKey: "p", PayloadEncoding: "e"}, Attempt: 1,
				EnqueuedAt: time.Unix(1, 0), SequenceID: seq}}).Wait(); err != nil {
				t.Fatal(err)
			}
			r.Close()
			// Back to the old schema.
			for _, col := range tc.drop {
				if _, err := db.Exec(`ALTER TABLE queue_items DROP COLUMN ` + col); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.Exec(`UPDATE replication_meta SET value = ? WHERE key = 'schema_version'`, tc.version); err != nil {
				t.Fatal(err)
			}
			r = newSQLite(t, db, replication.SQLiteConfig{})
			st, err := r.LoadState(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Pending) != 1 || st.Pending[0].Releases != 0 || !st.Pending[0].Payload.NotBefore.IsZero() {
				t.Fatalf("migrated state %+v, want the one item with no releases and no notBefore", st.Pending)
			}
			var v int
			if err := db.QueryRow(`SELECT value FROM replication_meta WHERE key = 'schema_version'`).Scan(&v); err != nil || v != 3 {
				t.Fatalf("schema version %d, %v; want 3", v, err)
			}
			item := st.Pending[0]
			item.Releases = 1
			if err := r.Record(&resourcelease.Change{Kind: resourcelease.ChangeReleased, At: time.Unix(2, 0), Item: &item,
				Token: resourcelease.OwnershipToken{SequenceID: seq, Attempt: 1, LeaseID: uuid.New()}}).Wait(); err != nil {
				t.Fatal(err)
			}
			at := time.Unix(100, 0).UTC()
			later := resourcelease.PendingItem{Payload: resourcelease.Item{ResourceType: "t", ResourceID: "b", PartitionKey: "p", PayloadEncoding: "e", NotBefore: at},
				Attempt: 1, EnqueuedAt: time.Unix(3, 0), SequenceID: 2, ReadyAt: at}
			if err := r.Record(&resourcelease.Change{Kind: resourcelease.ChangeEnqueued, At: time.Unix(3, 0), Item: &later}).Wait(); err != nil {
				t.Fatal(err)
			}
			if st, err = r.LoadState(ctx); err != nil || len(st.Pending) != 2 || st.Pending[0].Releases != 1 ||
				!st.Pending[1].Payload.NotBefore.Equal(at) || !st.Pending[1].ReadyAt.Equal(at) {
				t.Fatalf("after a release and a delayed enqueue: %+v, %v; want 1 release, then notBefore and readyAt %v", st.Pending, err, at)
			}
		})
	}
}

func TestSQLiteOptionsValidation(t *testing.T) {
	db := openDB(t, "", sqlitedb.Config{})
	single := openDB(t, "", sqlitedb.Config{})
	single.SetMaxOpenConns(1)
	for _, tc := range []struct {
		name string
		db   *sql.DB
		opts replication.SQLiteConfig
	}{
		{"nil db", nil, replication.SQLiteConfig{}},
		{"one connection", single, replication.SQLiteConfig{}},
		{"dedupe window", db, replication.SQLiteConfig{DedupeWindow: -2}},
		{"retention", db, replication.SQLiteConfig{Retention: -2}},
		{"cache size", db, replication.SQLiteConfig{CacheSize: -1}},
		{"checkpoint pages", db, replication.SQLiteConfig{CheckpointPages: -1}},
		{"max WAL pages", db, replication.SQLiteConfig{MaxWALPages: -1}},
		{"max WAL pages below checkpoint pages", db, replication.SQLiteConfig{CheckpointPages: 100, MaxWALPages: 99}},
		{"max batch", db, replication.SQLiteConfig{MaxBatch: -1}},
		{"retry min", db, replication.SQLiteConfig{SinkRetryMin: -time.Second}},
		{"retry max below min", db, replication.SQLiteConfig{SinkRetryMin: time.Minute, SinkRetryMax: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := replication.NewSQLiteReplicator(context.Background(), tc.db, tc.opts)
			if err == nil {
				r.Close()
				t.Fatal("NewSQLiteReplicator accepted bad options")
			}
			if resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
				t.Fatalf("err = %v, want invalid-argument", err)
			}
		})
	}
}

// TestSQLiteCoalescesWithinABatch: an item enqueued, leased and completed in
// one batch never gets a row, an item enqueued and leased in one batch is
// written once as leased — and every change still has its event.
func TestSQLiteCoalescesWithinABatch(t *testing.T) {
	db := openDB(t, "", sqlitedb.Config{})
	r := newSQLite(t, db, replication.SQLiteConfig{})
	blocked, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	gate := sinkFunc(func(context.Context, resourcelease.Event) error {
		once.Do(func() { close(blocked); <-release })
		return nil
	})
	if err := r.AddSink("gate", gate, resourcelease.SinkOptions{Synchronous: true}); err != nil {
		t.Fatal(err)
	}
	first := r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 1, 0))
	<-blocked // the writer holds batch 1; the next Records form batch 2
	var acks []resourcelease.Ack
	for i, k := range []resourcelease.ChangeKind{
		resourcelease.ChangeEnqueued, resourcelease.ChangeLeased, resourcelease.ChangeCompleted, // item 5: no row
		resourcelease.ChangeEnqueued, resourcelease.ChangeLeased, // item 6: one row, leased
	} {
		seq := int64(5)
		if i >= 3 {
			seq = 6
		}
		acks = append(acks, r.Record(replicatortest.Change(k, seq, i)))
	}
	close(release)
	for _, a := range append(acks, first) {
		if err := a.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM queue_items WHERE seq = 5`); n != 0 {
		t.Fatalf("item 5 has %d rows, want none", n)
	}
	if n := count(t, db, `SELECT count(*) FROM queue_items WHERE seq = 6 AND state = 1`); n != 1 {
		t.Fatalf("item 6 is not one leased row")
	}
	if n := count(t, db, `SELECT count(*) FROM replication_events`); n != 6 {
		t.Fatalf("%d event rows, want 6: events are never coalesced", n)
	}
}

type sinkFunc func(ctx context.Context, e resourcelease.Event) error

func (f sinkFunc) ApplyEvent(ctx context.Context, e resourcelease.Event) error { return f(ctx, e) }

// TestSQLiteRetention: only the newest Retention events stay on disk, and
// ReadEvents of trimmed ones starts at the oldest kept; queue state is never
// trimmed; an event a sink has not applied is never trimmed.
func TestSQLiteRetention(t *testing.T) {
	ctx := context.Background()
	db := openDB(t, "", sqlitedb.Config{})
	r := newSQLite(t, db, replication.SQLiteConfig{Retention: 10, CacheSize: 1})
	for i := range 40 {
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+1), i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM replication_events`); n != 10 {
		t.Fatalf("%d events on disk, want 10", n)
	}
	if n := count(t, db, `SELECT count(*) FROM queue_items`); n != 40 {
		t.Fatalf("%d items, want 40: trimming must not touch queue state", n)
	}
	evs, err := r.ReadEvents(ctx, 0, 100)
	if err != nil || len(evs) != 10 || evs[0].SequenceNumber != 31 {
		t.Fatalf("ReadEvents(0) = %d events from %v, %v; want 31..40", len(evs), evs, err)
	}

	// A stuck asynchronous sink pins the log.
	stuck := make(chan struct{})
	var applied []int64
	var mu sync.Mutex
	if err := r.AddSink("stuck", sinkFunc(func(_ context.Context, e resourcelease.Event) error {
		<-stuck
		mu.Lock()
		applied = append(applied, e.SequenceNumber)
		mu.Unlock()
		return nil
	}), resourcelease.SinkOptions{}); err != nil {
		t.Fatal(err)
	}
	for i := 40; i < 80; i++ {
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+1), i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM replication_events WHERE seq > 40`); n != 40 {
		t.Fatalf("%d of the stuck sink's 40 events on disk, want all", n)
	}
	close(stuck)
	r.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(applied) != 40 || applied[0] != 41 || applied[39] != 80 {
		t.Fatalf("stuck sink applied %v, want 41..80", applied)
	}
}

// TestSQLiteDedupeRowsAreTrimmed: dedupe rows older than the window are
// deleted as commits go by.
func TestSQLiteDedupeRowsAreTrimmed(t *testing.T) {
	db := openDB(t, "", sqlitedb.Config{})
	clock := leasetest.NewManualClock(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC))
	r := newSQLite(t, db, replication.SQLiteConfig{DedupeWindow: time.Minute, Clock: clock})
	for i := range 5 {
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, int64(i+1), i))); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, db, `SELECT count(*) FROM queue_dedupe`); n != 5 {
		t.Fatalf("%d dedupe rows, want 5", n)
	}
	clock.Advance(2 * time.Minute)
	c := replicatortest.Change(resourcelease.ChangeEnqueued, 6, 0)
	c.At = clock.Now()
	if err := wait(r.Record(c)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, db, `SELECT count(*) FROM queue_dedupe`); n != 1 {
		t.Fatalf("%d dedupe rows after the window, want only the new one", n)
	}
}

// TestSQLiteSequenceIDsAreNeverReused: after every item is completed (no row
// is left), NextSequenceID still lies above every id issued, across restarts.
func TestSQLiteSequenceIDsAreNeverReused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "replication.db")
	db := openDB(t, path, sqlitedb.Config{})
	for round := range 3 {
		r := newSQLite(t, db, replication.SQLiteConfig{Path: path, Logger: quiet})
		st, err := r.LoadState(ctx)
		if err != nil {
			t.Fatal(err)
		}
		q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Journal: r, InitialState: st})
		if err != nil {
			t.Fatal(err)
		}
		var high int64
		for range 3 {
			res, err := q.Enqueue(ctx, item("x", ""))
			if err != nil {
				t.Fatal(err)
			}
			if res.SequenceID < st.NextSequenceID {
				t.Fatalf("round %d: issued %d below NextSequenceID %d", round, res.SequenceID, st.NextSequenceID)
			}
			high = res.SequenceID
			l := mustLease(t, q, "w")
			if err := q.Complete(ctx, l.OwnershipToken); err != nil {
				t.Fatal(err)
			}
		}
		q.Close()
		r.Close()
		if n := count(t, db, `SELECT count(*) FROM queue_items`); n != 0 {
			t.Fatalf("%d rows left", n)
		}
		r2 := newSQLite(t, db, replication.SQLiteConfig{Path: path, Logger: quiet})
		st2, err := r2.LoadState(ctx)
		if err != nil || st2.NextSequenceID <= high {
			t.Fatalf("NextSequenceID after restart = %d, %v; last issued %d", st2.NextSequenceID, err, high)
		}
		r2.Close()
	}
}
