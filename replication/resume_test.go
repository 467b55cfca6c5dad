package replication_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/replication/replicatortest"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// recordingSink records every event it applies (in order, with repeats) and
// fails while fail is set. With resumable, it is a ResumableSink whose
// LastApplied is the highest sequence applied without a gap.
type recordingSink struct {
	mu      sync.Mutex
	applied []int64
	last    int64 // contiguous
	fail    bool
}

func (s *recordingSink) ApplyEvent(_ context.Context, e resourcelease.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("sink is down")
	}
	s.applied = append(s.applied, e.SequenceNumber)
	if e.SequenceNumber == s.last+1 {
		s.last = e.SequenceNumber
	}
	return nil
}

func (s *recordingSink) setFail(v bool) {
	s.mu.Lock()
	s.fail = v
	s.mu.Unlock()
}

func (s *recordingSink) seen() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.applied)
}

type resumableSink struct{ *recordingSink }

func (s resumableSink) LastApplied(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, nil
}

// failingStore is a deterministic store whose writes fail while fail is set.
type failingStore struct {
	*deterministic.MemoryStore
	fail atomic.Bool
}

var errStoreDown = errors.New("deterministic.db busy")

func (s *failingStore) Set(ctx context.Context, key string, rec resourcelease.Record) error {
	if s.fail.Load() {
		return errStoreDown
	}
	return s.MemoryStore.Set(ctx, key, rec)
}

func (s *failingStore) TryAdd(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
	if s.fail.Load() {
		return false, errStoreDown
	}
	return s.MemoryStore.TryAdd(ctx, key, rec)
}

func (s *failingStore) TryAddMany(ctx context.Context, recs []deterministic.KeyedRecord) ([]bool, error) {
	if s.fail.Load() {
		return nil, errStoreDown
	}
	return s.MemoryStore.TryAddMany(ctx, recs)
}

// TestDeterministicSinkMissedEventRedeliveredAfterRestart is the reviewer's
// scenario with the real pieces: a SQLiteReplicator and a deterministic
// Coordinator attached by NewDispatcher. Event 2 commits but the Coordinator
// fails on it (the caller gets replication_failed, and the final retry in
// Close fails too); after a restart on the same database the replicator
// resumes the Coordinator at its checkpoint (1), so event 2 is recorded,
// once, before event 3 is acknowledged.
func TestDeterministicSinkMissedEventRedeliveredAfterRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "replication.db")
	store := &failingStore{MemoryStore: deterministic.NewMemoryStore()}
	start := func() (*resourcelease.LocalDispatcher, *deterministic.Coordinator, func()) {
		db, err := sqlitedb.Open(ctx, path, sqlitedb.Config{})
		if err != nil {
			t.Fatal(err)
		}
		r, err := replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: path, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		coord, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Replicator: r, Deterministic: coord})
		if err != nil {
			t.Fatal(err)
		}
		return d, coord, func() { d.Close(); r.Close(); db.Close() }
	}
	enqueue := func(d *resourcelease.LocalDispatcher, id string) error {
		it := item(id, "req-"+id)
		_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &it})
		return err
	}

	d, coord, stop := start()
	if err := enqueue(d, "a"); err != nil { // event 1
		t.Fatal(err)
	}
	store.fail.Store(true)
	if err := enqueue(d, "b"); resourcelease.CodeOf(err) != resourcelease.CodeReplicationFailed { // event 2
		t.Fatalf("enqueue b = %v, want replication_failed", err)
	}
	stop()
	if coord.Recorded() != 1 {
		t.Fatalf("first run recorded %d events, want 1", coord.Recorded())
	}
	store.fail.Store(false)

	d, coord, stop = start()
	defer stop()
	if err := enqueue(d, "c"); err != nil { // event 3
		t.Fatal(err)
	}
	for seq := int64(1); seq <= 3; seq++ {
		if _, ok, err := coord.Effect(ctx, seq); err != nil || !ok {
			t.Fatalf("event %d recorded = %v, %v; want recorded", seq, ok, err)
		}
	}
	if rec, rep := coord.Recorded(), coord.Replayed(); rec != 2 || rep != 0 {
		t.Fatalf("after the restart recorded/replayed = %d/%d, want 2/0 (events 2 and 3, once each)", rec, rep)
	}
	if last, err := coord.LastApplied(ctx); err != nil || last != 3 {
		t.Fatalf("LastApplied = %d, %v; want 3", last, err)
	}
}

// TestResumableSinkStartsAtLastApplied: a ResumableSink added to a log that
// is ahead of it gets the events after its LastApplied, in order and once
// each, before the next commit's Ack completes; a plain sink starts at the
// head.
func TestResumableSinkStartsAtLastApplied(t *testing.T) {
	bothReplicators(t, leasetest.NewManualClock(time.Time{}), time.Hour, time.Hour, func(t *testing.T, r statusReplicator) {
		for seq := int64(1); seq <= 3; seq++ {
			if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, seq, int(seq)))); err != nil {
				t.Fatal(err)
			}
		}
		resumed := resumableSink{&recordingSink{last: 1}}
		plain := &recordingSink{}
		if err := r.AddSink("resumed", resumed, resourcelease.SinkOptions{Synchronous: true}); err != nil {
			t.Fatal(err)
		}
		if err := r.AddSink("plain", plain, resourcelease.SinkOptions{Synchronous: true}); err != nil {
			t.Fatal(err)
		}
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 4, 4))); err != nil {
			t.Fatal(err)
		}
		if got := resumed.seen(); !slices.Equal(got, []int64{2, 3, 4}) {
			t.Fatalf("resumable sink applied %v, want [2 3 4]", got)
		}
		if got := plain.seen(); !slices.Equal(got, []int64{4}) {
			t.Fatalf("plain sink applied %v, want [4]", got)
		}
	})
}

// TestResumableSinkBeyondRetentionIsAnError: a ResumableSink whose next
// event the log no longer holds is refused by AddSink with an error naming
// the missing events, not started past them.
func TestResumableSinkBeyondRetentionIsAnError(t *testing.T) {
	r := newMemory(t, replication.MemoryConfig{Retention: 2})
	for seq := int64(1); seq <= 10; seq++ {
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, seq, int(seq)))); err != nil {
			t.Fatal(err)
		}
	}
	err := r.AddSink("late", resumableSink{&recordingSink{last: 3}}, resourcelease.SinkOptions{Synchronous: true})
	if resourcelease.CodeOf(err) != resourcelease.CodeReplicationFailed || !strings.Contains(err.Error(), "events 4 to 8") {
		t.Fatalf("AddSink = %v, want replication_failed naming events 4 to 8", err)
	}
	if _, ok := r.SinkStatus("late"); ok {
		t.Fatal("the refused sink is registered")
	}
}

// TestCloseRetriesSyncBacklog: Close makes a last attempt at a synchronous
// sink's backlog, so an event whose Ack failed is applied before the
// replicator stops if the sink has recovered (no retry timer fires here).
func TestCloseRetriesSyncBacklog(t *testing.T) {
	bothReplicators(t, leasetest.NewManualClock(time.Time{}), time.Hour, time.Hour, func(t *testing.T, r statusReplicator) {
		s := &recordingSink{}
		if err := r.AddSink("audit", s, resourcelease.SinkOptions{Synchronous: true}); err != nil {
			t.Fatal(err)
		}
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 1, 1))); err != nil {
			t.Fatal(err)
		}
		s.setFail(true)
		if err := wait(r.Record(replicatortest.Change(resourcelease.ChangeEnqueued, 2, 2))); resourcelease.CodeOf(err) != resourcelease.CodeReplicationFailed {
			t.Fatalf("Ack = %v, want replication_failed", err)
		}
		s.setFail(false)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if got := s.seen(); !slices.Equal(got, []int64{1, 2}) {
			t.Fatalf("sink applied %v, want [1 2]", got)
		}
		if st, _ := r.SinkStatus("audit"); !st.Healthy || st.AppliedSequence != 2 || st.Lag != 0 {
			t.Fatalf("status after Close: %+v", st)
		}
	})
}
