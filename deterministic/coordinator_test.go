package deterministic_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestNewCoordinatorConfig(t *testing.T) {
	store := deterministic.NewMemoryStore()
	for _, tc := range []struct {
		name         string
		cfg          deterministic.Config
		wantChangeID string
		wantErr      bool
	}{
		{"default change id", deterministic.Config{Store: store}, "resourcelease", false},
		{"custom change id", deterministic.Config{Store: store, ChangeID: "queue-b"}, "queue-b", false},
		{"change id with slashes", deterministic.Config{Store: store, ChangeID: "mesh/eu-1"}, "mesh/eu-1", false},
		{"no store", deterministic.Config{ChangeID: "x"}, "", true},
		{"blank change id", deterministic.Config{Store: store, ChangeID: "   "}, "", true},
		{"change id with surrounding space", deterministic.Config{Store: store, ChangeID: " x"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := deterministic.NewCoordinator(tc.cfg)
			if tc.wantErr {
				if !errors.Is(err, resourcelease.ErrInvalidArgument) || c != nil {
					t.Fatalf("NewCoordinator = %v, %v; want nil, invalid-argument", c, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ChangeID() != tc.wantChangeID {
				t.Fatalf("ChangeID() = %q, want %q", c.ChangeID(), tc.wantChangeID)
			}
			if got, want := c.Key(42), tc.wantChangeID+"/seq/42"; got != want {
				t.Fatalf("Key(42) = %q, want %q", got, want)
			}
		})
	}
}

func TestCoordinatorApplyEvent(t *testing.T) {
	type apply struct {
		event        resourcelease.Event
		wantInvalid  bool
		wantRecorded int64
		wantReplayed int64
	}
	e1 := testEvent(1, resourcelease.EventEnqueue, 0)
	e2 := testEvent(2, resourcelease.EventLeaseGranted, 0)
	e1Again := testEvent(1, resourcelease.EventCompleted, 9) // same number, different content
	for _, kind := range storeKinds {
		for _, tc := range []struct {
			name  string
			steps []apply
			// firsts are the events whose records must be stored.
			firsts []resourcelease.Event
		}{
			{"records new events", []apply{
				{event: e1, wantRecorded: 1},
				{event: e2, wantRecorded: 2},
			}, []resourcelease.Event{e1, e2}},
			{"replays record nothing new", []apply{
				{event: e1, wantRecorded: 1},
				{event: e2, wantRecorded: 2},
				{event: e1, wantRecorded: 2, wantReplayed: 1},
				{event: e2, wantRecorded: 2, wantReplayed: 2},
				{event: e1Again, wantRecorded: 2, wantReplayed: 3},
			}, []resourcelease.Event{e1, e2}},
			{"out of order is fine", []apply{
				{event: e2, wantRecorded: 1},
				{event: e1, wantRecorded: 2},
			}, []resourcelease.Event{e1, e2}},
			{"invalid sequence numbers", []apply{
				{event: testEvent(0, resourcelease.EventEnqueue, 0), wantInvalid: true},
				{event: testEvent(-3, resourcelease.EventEnqueue, 0), wantInvalid: true},
				{event: e1, wantRecorded: 1},
			}, []resourcelease.Event{e1}},
			{"unencodable timestamp", []apply{
				{event: resourcelease.Event{SequenceNumber: 5, EventType: resourcelease.EventHeartbeat, Timestamp: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, wantInvalid: true},
			}, nil},
		} {
			t.Run(kind.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				store := kind.new(t)
				c, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
				if err != nil {
					t.Fatal(err)
				}
				for i, st := range tc.steps {
					err := c.ApplyEvent(ctx, st.event)
					if st.wantInvalid {
						if !errors.Is(err, resourcelease.ErrInvalidArgument) {
							t.Fatalf("step %d: ApplyEvent(seq %d) = %v, want invalid-argument", i, st.event.SequenceNumber, err)
						}
					} else if err != nil {
						t.Fatalf("step %d: ApplyEvent(seq %d): %v", i, st.event.SequenceNumber, err)
					}
					if c.Recorded() != st.wantRecorded || c.Replayed() != st.wantReplayed {
						t.Fatalf("step %d: recorded/replayed = %d/%d, want %d/%d", i, c.Recorded(), c.Replayed(), st.wantRecorded, st.wantReplayed)
					}
				}
				for _, e := range tc.firsts {
					requireEventRecord(t, store, "resourcelease/seq/"+itoa(e.SequenceNumber), e)
					rec, ok, err := c.Effect(ctx, e.SequenceNumber)
					if err != nil || !ok || rec.Version != e.SequenceNumber {
						t.Fatalf("Effect(%d) = %+v, %v, %v", e.SequenceNumber, rec, ok, err)
					}
				}
				if _, ok, err := c.Effect(ctx, 99); err != nil || ok {
					t.Fatalf("Effect(99) = %v, %v; want none", ok, err)
				}
			})
		}
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// requireEventRecord checks that key holds e's record: kind = event type,
// version = sequence number, payload = e's JSON, recordedAt = timestamp.
func requireEventRecord(t *testing.T, store resourcelease.StateStore, key string, e resourcelease.Event) {
	t.Helper()
	rec, ok, err := store.Get(context.Background(), key)
	if err != nil || !ok {
		t.Fatalf("Get(%q) = %v, %v; want the event's record", key, ok, err)
	}
	if rec.Kind != string(e.EventType) || rec.Version != e.SequenceNumber || !rec.RecordedAt.Equal(e.Timestamp) {
		t.Fatalf("record %q = kind %q version %d at %v; want %q %d %v", key, rec.Kind, rec.Version, rec.RecordedAt, e.EventType, e.SequenceNumber, e.Timestamp)
	}
	var got resourcelease.Event
	if err := json.Unmarshal(rec.Payload, &got); err != nil {
		t.Fatalf("record %q payload is not an event: %v", key, err)
	}
	want, _ := json.Marshal(e)
	if string(rec.Payload) != string(want) {
		t.Fatalf("record %q payload = %s, want %s", key, rec.Payload, want)
	}
}

func TestCoordinatorStoreFailure(t *testing.T) {
	for _, tc := range []struct {
		name      string
		store     func(t *testing.T) resourcelease.StateStore
		wantCause error
	}{
		{"failing store", func(*testing.T) resourcelease.StateStore {
			return &funcStore{base: deterministic.NewMemoryStore(), tryAdd: func(context.Context, string, resourcelease.Record) (bool, error) {
				return false, errBoom
			}}
		}, errBoom},
		{"closed sqlite database", func(t *testing.T) resourcelease.StateStore {
			s, db, _ := newSQLiteStore(t)
			db.Close()
			return s
		}, resourcelease.ErrStorageUnavailable},
		{"read-only sqlite database", func(t *testing.T) resourcelease.StateStore {
			_, db, path := newSQLiteStore(t)
			db.Close()
			return readOnlyStore(t, path)
		}, resourcelease.ErrStorageUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := deterministic.NewCoordinator(deterministic.Config{Store: tc.store(t)})
			if err != nil {
				t.Fatal(err)
			}
			err = c.ApplyEvent(context.Background(), testEvent(7, resourcelease.EventCompleted, 0))
			var e *resourcelease.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %T %v, want *resourcelease.Error", err, err)
			}
			if e.Status != resourcelease.StatusUnavailable || e.Code != resourcelease.CodeDeterministicFailed {
				t.Fatalf("status/code = %s/%s, want unavailable/%s", e.Status, e.Code, resourcelease.CodeDeterministicFailed)
			}
			for _, want := range []string{"stage deterministic", "sequence 7"} {
				if !strings.Contains(e.Message, want) {
					t.Errorf("message %q does not contain %q", e.Message, want)
				}
			}
			if e.Metadata["stage"] != "deterministic" || e.Metadata["sequenceNumber"] != "7" {
				t.Errorf("metadata = %v, want stage and sequenceNumber", e.Metadata)
			}
			if !errors.Is(err, tc.wantCause) {
				t.Errorf("err %v does not wrap its cause %v", err, tc.wantCause)
			}
			if c.Recorded() != 0 || c.Replayed() != 0 {
				t.Errorf("recorded/replayed = %d/%d after a failure, want 0/0", c.Recorded(), c.Replayed())
			}
		})
	}
}

// readOnlyStore opens the database at path read-only and returns a store on it.
func readOnlyStore(t *testing.T, path string) *deterministic.SQLiteStore {
	t.Helper()
	ro, err := openReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	s, err := deterministic.NewSQLiteStore(context.Background(), ro, deterministic.SQLiteConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestCoordinatorSurvivesRestart runs three process lifetimes on one SQLite
// file, delivering one event at a time or in batches of 7 (the last one
// shorter).
func TestCoordinatorSurvivesRestart(t *testing.T) {
	for _, batchSize := range []int{1, 7} {
		t.Run(fmt.Sprintf("batches of %d", batchSize), func(t *testing.T) {
			testCoordinatorSurvivesRestart(t, batchSize)
		})
	}
}

func testCoordinatorSurvivesRestart(t *testing.T, batchSize int) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), deterministic.DefaultFileName)
	events := make([]resourcelease.Event, 50)
	for i := range events {
		events[i] = testEvent(int64(i+1), resourcelease.EventEnqueue, 0)
	}
	lifetime := func(apply []resourcelease.Event) (recorded, replayed int64) {
		db := openDB(t, path)
		store, err := deterministic.NewSQLiteStore(ctx, db, deterministic.SQLiteConfig{})
		if err != nil {
			t.Fatal(err)
		}
		c, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		for batch := range slices.Chunk(apply, batchSize) {
			var err error
			if batchSize == 1 {
				err = c.ApplyEvent(ctx, batch[0])
			} else {
				err = c.ApplyEvents(ctx, batch)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		store.Close()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		return c.Recorded(), c.Replayed()
	}
	if rec, rep := lifetime(events[:30]); rec != 30 || rep != 0 {
		t.Fatalf("first run recorded/replayed = %d/%d, want 30/0", rec, rep)
	}
	// After the restart the replicator redelivers from an old checkpoint.
	if rec, rep := lifetime(events[10:]); rec != 20 || rep != 20 {
		t.Fatalf("second run recorded/replayed = %d/%d, want 20/20", rec, rep)
	}
	if rec, rep := lifetime(events); rec != 0 || rep != 50 {
		t.Fatalf("full replay recorded/replayed = %d/%d, want 0/50", rec, rep)
	}
	db := openDB(t, path)
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM ` + deterministic.DefaultTable + ` WHERE key LIKE '%/seq/%'`).Scan(&n); err != nil || n != 50 {
		t.Fatalf("rows = %d, %v; want 50", n, err)
	}
	store, err := deterministic.NewSQLiteStore(ctx, db, deterministic.SQLiteConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, e := range events {
		requireEventRecord(t, store, "resourcelease/seq/"+itoa(e.SequenceNumber), e)
	}
}

func TestCoordinatorConcurrentReplays(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind.name, func(t *testing.T) {
			store := kind.new(t)
			c, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
			if err != nil {
				t.Fatal(err)
			}
			const n, replayers = 40, 4
			var (
				wg    sync.WaitGroup
				start = make(chan struct{})
				errs  = make([]error, replayers)
			)
			for r := range replayers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for i := range n {
						if err := c.ApplyEvent(context.Background(), testEvent(int64(i+1), resourcelease.EventHeartbeat, r)); err != nil {
							errs[r] = err
							return
						}
					}
				}()
			}
			close(start)
			wg.Wait()
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			if c.Recorded() != n || c.Replayed() != n*(replayers-1) {
				t.Fatalf("recorded/replayed = %d/%d, want %d/%d", c.Recorded(), c.Replayed(), n, n*(replayers-1))
			}
			for i := range n {
				rec, ok, err := c.Effect(context.Background(), int64(i+1))
				if err != nil || !ok {
					t.Fatalf("Effect(%d) = %v, %v", i+1, ok, err)
				}
				var e resourcelease.Event
				if err := json.Unmarshal(rec.Payload, &e); err != nil || e.SequenceNumber != int64(i+1) {
					t.Fatalf("Effect(%d) payload %s: %v", i+1, rec.Payload, err)
				}
			}
		})
	}
}

// TestCoordinatorCollector checks the exported counts, with the events
// delivered one by one and in batches: both must end the same.
func TestCoordinatorCollector(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// deliver applies sequences 1, 2, 3, 1, 2 to a and 1 to b.
		deliver func(a, b *deterministic.Coordinator) error
	}{
		{"ApplyEvent", func(a, b *deterministic.Coordinator) error {
			for _, seq := range []int64{1, 2, 3, 1, 2} {
				if err := a.ApplyEvent(ctx, testEvent(seq, resourcelease.EventEnqueue, 0)); err != nil {
					return err
				}
			}
			return b.ApplyEvent(ctx, testEvent(1, resourcelease.EventEnqueue, 0))
		}},
		{"ApplyEvents", func(a, b *deterministic.Coordinator) error {
			return errors.Join(
				a.ApplyEvents(ctx, events(1, 3, 0)),
				a.ApplyEvents(ctx, events(1, 2, 1)),
				b.ApplyEvents(ctx, events(1, 1, 0)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			store := deterministic.NewMemoryStore()
			a, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
			if err != nil {
				t.Fatal(err)
			}
			b, err := deterministic.NewCoordinator(deterministic.Config{Store: store, ChangeID: "other"})
			if err != nil {
				t.Fatal(err)
			}
			// Two coordinators with different change ids share a registry.
			reg.MustRegister(a.Collector(), b.Collector())
			if err := tc.deliver(a, b); err != nil {
				t.Fatal(err)
			}
			got := gatherCounts(t, reg)
			want := map[string]float64{
				"deterministic_effects_recorded_total{resourcelease}": 3,
				"deterministic_effects_replayed_total{resourcelease}": 2,
				"deterministic_effects_recorded_total{other}":         1,
				"deterministic_effects_replayed_total{other}":         0,
			}
			if len(got) != len(want) {
				t.Fatalf("gathered %v, want %v", got, want)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
		})
	}
}

// gatherCounts returns the counters reg exports, by name{change_id}.
func gatherCounts(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			var changeID string
			for _, l := range m.GetLabel() {
				if l.GetName() == "change_id" {
					changeID = l.GetValue()
				}
			}
			got[mf.GetName()+"{"+changeID+"}"] = m.GetCounter().GetValue()
		}
	}
	return got
}
