package replication_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// mapStore is a resourcelease.StateStore in a map, with a switch to fail Set.
type mapStore struct {
	mu      sync.Mutex
	m       map[string]resourcelease.Record
	failSet bool
}

func (s *mapStore) Get(_ context.Context, key string) (resourcelease.Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[key]
	return r, ok, nil
}

func (s *mapStore) Set(_ context.Context, key string, rec resourcelease.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failSet {
		return errors.New("store is down")
	}
	if s.m == nil {
		s.m = map[string]resourcelease.Record{}
	}
	s.m[key] = rec
	return nil
}

func (s *mapStore) TryAdd(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
	if _, ok, _ := s.Get(ctx, key); ok {
		return false, nil
	}
	return true, s.Set(ctx, key, rec)
}

func ev(seq int64, peer string) resourcelease.Event {
	return resourcelease.Event{SequenceNumber: seq, EventType: resourcelease.EventHeartbeat, PeerID: peer}
}

// TestCheckpointSinkSkips: an event is applied only above the global
// checkpoint and, when it names a peer, above that peer's checkpoint.
func TestCheckpointSinkSkips(t *testing.T) {
	ctx := context.Background()
	store := &mapStore{}
	// A previous run applied up to 10 globally and 12 for peer "p" (a peer
	// checkpoint can run ahead of the global one when it was restored from
	// a log with a different history).
	seed, err := replication.NewCheckpointSink(ctx, func(context.Context, resourcelease.Event) error { return nil }, replication.CheckpointOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []resourcelease.Event{ev(12, "p"), ev(10, "")} {
		if err := seed.ApplyEvent(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	var applied []int64
	s, err := replication.NewCheckpointSink(ctx, func(_ context.Context, e resourcelease.Event) error {
		applied = append(applied, e.SequenceNumber)
		return nil
	}, replication.CheckpointOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if s.Checkpoint() != 12 || s.PeerCheckpoint("p") != 12 {
		t.Fatalf("loaded checkpoints %d / %d, want 12 / 12", s.Checkpoint(), s.PeerCheckpoint("p"))
	}
	for _, tc := range []struct {
		name    string
		e       resourcelease.Event
		applies bool
	}{
		{"at the global checkpoint", ev(12, ""), false},
		{"below it", ev(3, "q"), false},
		{"above it, no peer", ev(13, ""), true},
		{"redelivered", ev(13, ""), false},
		{"above, new peer", ev(14, "q"), true},
		{"above, known peer", ev(15, "p"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(applied)
			if err := s.ApplyEvent(ctx, tc.e); err != nil {
				t.Fatal(err)
			}
			if got := len(applied) > before; got != tc.applies {
				t.Fatalf("applied = %v, want %v", got, tc.applies)
			}
		})
	}
	if got := s.PeerCheckpoints(); len(got) != 2 || got["p"] != 15 || got["q"] != 14 {
		t.Fatalf("PeerCheckpoints = %v", got)
	}
	if a, sk := s.Counts(); a != 3 || sk != 3 {
		t.Fatalf("Counts = %d, %d; want 3 applied, 3 skipped", a, sk)
	}
}

// TestCheckpointSinkSaveFailure: a failed save is returned (so the
// replicator redelivers); the redelivery is skipped but saves again.
func TestCheckpointSinkSaveFailure(t *testing.T) {
	ctx := context.Background()
	store := &mapStore{failSet: true}
	n := 0
	s, err := replication.NewCheckpointSink(ctx, func(context.Context, resourcelease.Event) error { n++; return nil }, replication.CheckpointOptions{Store: store, Key: "cp"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ApplyEvent(ctx, ev(1, "")); err == nil {
		t.Fatal("ApplyEvent hid a failed save")
	}
	store.mu.Lock()
	store.failSet = false
	store.mu.Unlock()
	if err := s.ApplyEvent(ctx, ev(1, "")); err != nil {
		t.Fatal(err)
	}
	rec, ok, _ := store.Get(ctx, "cp")
	if n != 1 || !ok || rec.Version != 1 || rec.Kind != replication.CheckpointKind {
		t.Fatalf("applied %d times, saved %+v %v; want once and a saved checkpoint at 1", n, rec, ok)
	}
}

func TestCheckpointSinkBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := replication.NewCheckpointSink(ctx, nil, replication.CheckpointOptions{}); resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
		t.Fatalf("nil apply: %v", err)
	}
	store := &mapStore{m: map[string]resourcelease.Record{replication.DefaultCheckpointKey: {Payload: []byte("not json")}}}
	if _, err := replication.NewCheckpointSink(ctx, func(context.Context, resourcelease.Event) error { return nil }, replication.CheckpointOptions{Store: store}); err == nil {
		t.Fatal("a corrupt checkpoint record was accepted")
	}
}

func TestRecentLog(t *testing.T) {
	ctx := context.Background()
	if _, err := replication.NewRecentLog(-1); resourcelease.StatusOf(err) != resourcelease.StatusInvalidArgument {
		t.Fatalf("NewRecentLog(-1): %v", err)
	}
	def, _ := replication.NewRecentLog(0)
	for i := range 40 {
		def.ApplyEvent(ctx, ev(int64(i+1), ""))
	}
	if evs := def.Events(); len(evs) != replication.DefaultRecentLogSize || evs[0].SequenceNumber != 9 || evs[31].SequenceNumber != 40 {
		t.Fatalf("default log holds %d events from %d", len(evs), evs[0].SequenceNumber)
	}
	for _, tc := range []struct {
		name  string
		size  int
		seqs  []int64
		wantS []int64
	}{
		{"empty", 3, nil, []int64{}},
		{"partly full", 3, []int64{1, 2}, []int64{1, 2}},
		{"wrapped", 3, []int64{1, 2, 3, 4, 5}, []int64{3, 4, 5}},
		{"redelivery ignored", 3, []int64{1, 2, 2, 1, 3}, []int64{1, 2, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := replication.NewRecentLog(tc.size)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.seqs {
				if err := l.ApplyEvent(ctx, ev(s, "")); err != nil {
					t.Fatal(err)
				}
			}
			got := []int64{}
			for _, e := range l.Events() {
				got = append(got, e.SequenceNumber)
			}
			if jsonOf(t, got) != jsonOf(t, tc.wantS) || l.Len() != len(tc.wantS) {
				t.Fatalf("Events = %v (Len %d), want %v", got, l.Len(), tc.wantS)
			}
		})
	}
}
