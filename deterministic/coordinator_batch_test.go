package deterministic_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestCoordinatorApplyEvents(t *testing.T) {
	type step struct {
		events []resourcelease.Event
		single bool // deliver events[0] with ApplyEvent instead
		// wantInvalid, if set, is the invalid-argument error's expected text.
		wantInvalid  string
		wantRecorded int64
		wantReplayed int64
	}
	e := func(seq int64, variant int) resourcelease.Event {
		return testEvent(seq, eventTypeOf(seq), variant)
	}
	batch := func(es ...resourcelease.Event) []resourcelease.Event { return es }
	// awkward has strings encoding/json escapes (HTML, U+2028, invalid
	// UTF-8): the payload must still be exactly json.Marshal's.
	awkward := testEvent(9, resourcelease.EventFailed, 0)
	awkward.PeerID = "<worker & co>\u2028\xff"
	awkward.Metadata["note"] = "a\"b\\c\n\t\x00 ☃ </script>"
	awkward.Error = &resourcelease.ErrorInfo{Message: "<boom> & \xfe", Code: "x"}
	unencodable := resourcelease.Event{SequenceNumber: 7, EventType: resourcelease.EventHeartbeat, Timestamp: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	for _, tc := range []struct {
		name  string
		steps []step
		// firsts are the events whose records must be stored; absent are
		// sequence numbers that must have none.
		firsts []resourcelease.Event
		absent []int64
	}{
		{"records a batch", []step{
			{events: events(1, 3, 0), wantRecorded: 3},
		}, events(1, 3, 0), []int64{4}},
		{"overlapping replays record nothing new", []step{
			{events: events(1, 3, 0), wantRecorded: 3},
			{events: events(2, 5, 1), wantRecorded: 5, wantReplayed: 2},
			{events: events(1, 5, 2), wantRecorded: 5, wantReplayed: 7},
		}, append(events(1, 3, 0), events(4, 5, 1)...), []int64{6}},
		{"duplicates in a batch: the first wins", []step{
			{events: batch(e(1, 0), e(2, 0), e(1, 1), e(2, 1), e(1, 2)), wantRecorded: 2, wantReplayed: 3},
		}, events(1, 2, 0), nil},
		{"out of order", []step{
			{events: batch(e(3, 0), e(1, 0), e(2, 0)), wantRecorded: 3},
		}, events(1, 3, 0), nil},
		{"nil and empty batches do nothing", []step{
			{events: nil},
			{events: []resourcelease.Event{}},
		}, nil, []int64{1}},
		{"batch of one", []step{
			{events: events(1, 1, 0), wantRecorded: 1},
			{events: events(1, 1, 1), wantRecorded: 1, wantReplayed: 1},
		}, events(1, 1, 0), nil},
		{"mixed with ApplyEvent", []step{
			{events: events(2, 2, 0), single: true, wantRecorded: 1},
			{events: events(1, 3, 1), wantRecorded: 3, wantReplayed: 1},
			{events: events(3, 3, 2), single: true, wantRecorded: 3, wantReplayed: 2},
		}, []resourcelease.Event{e(1, 1), e(2, 0), e(3, 1)}, nil},
		{"a zero sequence number anywhere records nothing", []step{
			{events: batch(e(1, 0), e(0, 0), e(2, 0)), wantInvalid: "got 0 (event 2 of 3 in the batch)"},
			{events: events(1, 2, 1), wantRecorded: 2},
		}, events(1, 2, 1), nil},
		{"a negative sequence number records nothing", []step{
			{events: batch(e(1, 0), e(2, 0), e(-3, 0)), wantInvalid: "got -3 (event 3 of 3 in the batch)"},
		}, nil, []int64{1, 2}},
		{"payloads are exactly json.Marshal's", []step{
			{events: batch(e(8, 0), awkward, e(10, 0)), wantRecorded: 3},
		}, []resourcelease.Event{e(8, 0), awkward, e(10, 0)}, nil},
		{"an unencodable event records nothing", []step{
			{events: batch(e(6, 0), unencodable, e(8, 0)), wantInvalid: "event 7 cannot be encoded"},
			{events: batch(e(6, 1), e(8, 1)), wantRecorded: 2},
		}, []resourcelease.Event{e(6, 1), e(8, 1)}, []int64{7}},
	} {
		for _, kind := range coordinatorStoreKinds {
			t.Run(kind.name+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				store := kind.new(t)
				c, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
				if err != nil {
					t.Fatal(err)
				}
				for i, st := range tc.steps {
					if st.single {
						err = c.ApplyEvent(ctx, st.events[0])
					} else {
						err = c.ApplyEvents(ctx, st.events)
					}
					if st.wantInvalid != "" {
						if !errors.Is(err, resourcelease.ErrInvalidArgument) || !strings.Contains(err.Error(), st.wantInvalid) {
							t.Fatalf("step %d: err = %v, want invalid-argument containing %q", i, err, st.wantInvalid)
						}
					} else if err != nil {
						t.Fatalf("step %d: %v", i, err)
					}
					if c.Recorded() != st.wantRecorded || c.Replayed() != st.wantReplayed {
						t.Fatalf("step %d: recorded/replayed = %d/%d, want %d/%d", i, c.Recorded(), c.Replayed(), st.wantRecorded, st.wantReplayed)
					}
				}
				for _, e := range tc.firsts {
					requireEventRecord(t, store, c.Key(e.SequenceNumber), e)
				}
				for _, seq := range tc.absent {
					if rec, ok, err := c.Effect(ctx, seq); err != nil || ok {
						t.Errorf("Effect(%d) = %+v, %v, %v; want none", seq, rec, ok, err)
					}
				}
			})
		}
	}
}

// TestCoordinatorApplyEventsStoreFailure fails the store while it records a
// batch of sequences 7.. (the last event's write fails), checks the error,
// what stays recorded and counted, and, where the store can recover, that
// redelivering the batch records every event exactly once.
func TestCoordinatorApplyEventsStoreFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		// store returns the failing store for a batch whose last key is
		// failKey, and a func that repairs it (nil if it cannot be).
		store     func(t *testing.T, failKey string) (s resourcelease.StateStore, heal func())
		wantCause error
		// partial: the store is a plain StateStore, so the events before the
		// failing one stay recorded.
		partial bool
	}{
		{"failing batch store", func(t *testing.T, failKey string) (resourcelease.StateStore, func()) {
			failing := true
			fs := &funcStore{base: deterministic.NewMemoryStore()}
			fs.tryAdd = func(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
				if failing {
					return false, errBoom
				}
				return fs.base.TryAdd(ctx, key, rec)
			}
			s := &batchFuncStore{funcStore: fs}
			s.tryAddMany = func(ctx context.Context, recs []deterministic.KeyedRecord) ([]bool, error) {
				if failing {
					return nil, errBoom
				}
				return fs.base.(deterministic.BatchStateStore).TryAddMany(ctx, recs)
			}
			return s, func() { failing = false }
		}, errBoom, false},
		{"sqlite rolls back part-way", func(t *testing.T, failKey string) (resourcelease.StateStore, func()) {
			s, db, _ := newSQLiteStore(t)
			return s, poison(t, db, failKey)
		}, resourcelease.ErrStorageUnavailable, false},
		{"closed sqlite database", func(t *testing.T, _ string) (resourcelease.StateStore, func()) {
			s, db, _ := newSQLiteStore(t)
			db.Close()
			return s, nil
		}, resourcelease.ErrStorageUnavailable, false},
		{"read-only sqlite database", func(t *testing.T, _ string) (resourcelease.StateStore, func()) {
			_, db, path := newSQLiteStore(t)
			db.Close()
			return readOnlyStore(t, path), nil
		}, resourcelease.ErrStorageUnavailable, false},
		{"plain store failing part-way", func(t *testing.T, failKey string) (resourcelease.StateStore, func()) {
			failing := true
			fs := &funcStore{base: deterministic.NewMemoryStore()}
			fs.tryAdd = func(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
				if failing && key == failKey {
					return false, errBoom
				}
				return fs.base.TryAdd(ctx, key, rec)
			}
			return fs, func() { failing = false }
		}, errBoom, true},
	} {
		for _, n := range []int64{1, 4} {
			t.Run(fmt.Sprintf("%s/batch of %d", tc.name, n), func(t *testing.T) {
				ctx := context.Background()
				batch := events(7, 6+n, 0)
				store, heal := tc.store(t, "resourcelease/seq/"+itoa(6+n))
				c, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
				if err != nil {
					t.Fatal(err)
				}
				err = c.ApplyEvents(ctx, batch)
				t.Logf("ApplyEvents: %v", err)
				var e *resourcelease.Error
				if !errors.As(err, &e) {
					t.Fatalf("err = %T %v, want *resourcelease.Error", err, err)
				}
				if e.Status != resourcelease.StatusUnavailable || e.Code != resourcelease.CodeDeterministicFailed {
					t.Fatalf("status/code = %s/%s, want unavailable/%s", e.Status, e.Code, resourcelease.CodeDeterministicFailed)
				}
				wantMsg := []string{"stage deterministic failed at sequence 7: "}
				wantMeta := map[string]string{"stage": "deterministic", "sequenceNumber": "7"}
				if n > 1 {
					wantMsg = []string{"stage deterministic failed at sequence 7 (batch of 4 events, sequences 7 to 10): "}
					wantMeta["batchSize"] = "4"
				}
				for _, want := range wantMsg {
					if !strings.Contains(e.Message, want) {
						t.Errorf("message %q does not contain %q", e.Message, want)
					}
				}
				if fmt.Sprint(e.Metadata) != fmt.Sprint(wantMeta) {
					t.Errorf("metadata = %v, want %v", e.Metadata, wantMeta)
				}
				if !errors.Is(err, tc.wantCause) {
					t.Errorf("err %v does not wrap its cause %v", err, tc.wantCause)
				}
				var wantKept int64 // events recorded before the failure
				if tc.partial {
					wantKept = n - 1
				}
				if c.Recorded() != wantKept || c.Replayed() != 0 {
					t.Errorf("recorded/replayed = %d/%d after the failure, want %d/0", c.Recorded(), c.Replayed(), wantKept)
				}
				if heal == nil {
					return
				}
				for i, ev := range batch {
					if _, ok, err := store.Get(ctx, c.Key(ev.SequenceNumber)); err != nil || ok != (int64(i) < wantKept) {
						t.Errorf("after the failure: record of %d present = %v (%v), want %v", ev.SequenceNumber, ok, err, int64(i) < wantKept)
					}
				}
				// The replicator redelivers the whole batch once the store works.
				heal()
				if err := c.ApplyEvents(ctx, batch); err != nil {
					t.Fatalf("redelivery: %v", err)
				}
				if c.Recorded() != n || c.Replayed() != wantKept {
					t.Errorf("after the redelivery recorded/replayed = %d/%d, want %d/%d", c.Recorded(), c.Replayed(), n, wantKept)
				}
				for _, ev := range batch {
					requireEventRecord(t, store, c.Key(ev.SequenceNumber), ev)
				}
			})
		}
	}
}

// TestCoordinatorApplyEventsConcurrentOverlap has replayers deliver the
// same sequence range concurrently in batches of different sizes: every
// sequence number is recorded once and every other delivery is a replay.
func TestCoordinatorApplyEventsConcurrentOverlap(t *testing.T) {
	const n, replayers = 60, 4
	for _, kind := range coordinatorStoreKinds {
		t.Run(kind.name, func(t *testing.T) {
			store := kind.new(t)
			c, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
			if err != nil {
				t.Fatal(err)
			}
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
					size := int64(1 + 3*r) // 1, 4, 7, 10
					for from := int64(1); from <= n; from += size {
						if err := c.ApplyEvents(context.Background(), events(from, min(from+size-1, n), r)); err != nil {
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
			for seq := int64(1); seq <= n; seq++ {
				if rec, ok, err := c.Effect(context.Background(), seq); err != nil || !ok || rec.Version != seq {
					t.Fatalf("Effect(%d) = %+v, %v, %v", seq, rec, ok, err)
				}
			}
		})
	}
}
