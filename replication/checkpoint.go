package replication

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"sync"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// ApplyFunc applies one replication event.
type ApplyFunc func(ctx context.Context, e resourcelease.Event) error

// DefaultCheckpointKey is the StateStore key a CheckpointSink persists under.
const DefaultCheckpointKey = "replication/checkpoint"

// CheckpointKind is the Record kind of a persisted checkpoint.
const CheckpointKind = "replication.checkpoint"

// CheckpointOptions configure a CheckpointSink.
type CheckpointOptions struct {
	// Store, when set, makes the checkpoints survive restarts: they are loaded
	// by NewCheckpointSink and saved after every applied event.
	Store resourcelease.StateStore
	// Key is the Store key. Defaults to DefaultCheckpointKey.
	Key string
	// Clock stamps saved records. Defaults to resourcelease.SystemClock.
	Clock resourcelease.Clock
}

// CheckpointSink is an EventSink that applies each event once even when the
// replicator redelivers it (after a failure further down the sink, a retry, a
// restart with a persisted checkpoint). It wraps an ApplyFunc with a global
// checkpoint, the newest sequence number applied, and one checkpoint per
// peer, the newest applied event that named that peer. An event at or below
// the global checkpoint, or at or below its peer's, is skipped.
//
// The apply function and the checkpoint are not one transaction: if the
// process dies between them, the event is applied again after restart. Make
// the apply idempotent (the deterministic package's effect store does) where
// that matters.
//
// Create it with NewCheckpointSink; it is safe for concurrent use, and calls
// of the apply function never overlap.
type CheckpointSink struct {
	apply ApplyFunc
	store resourcelease.StateStore
	key   string
	clock resourcelease.Clock

	applyMu sync.Mutex // serialises ApplyEvent
	dirty   bool       // the last save failed: save before anything else (guarded by applyMu)

	mu      sync.Mutex
	global  int64
	peers   map[string]int64
	applied int64
	skipped int64
}

var _ resourcelease.EventSink = (*CheckpointSink)(nil)

// checkpointRecord is the persisted form of the checkpoints.
type checkpointRecord struct {
	Global int64            `json:"global"`
	Peers  map[string]int64 `json:"peers,omitempty"`
}

// NewCheckpointSink returns a CheckpointSink around apply, loading persisted
// checkpoints from opts.Store if set.
func NewCheckpointSink(ctx context.Context, apply ApplyFunc, opts CheckpointOptions) (*CheckpointSink, error) {
	if apply == nil {
		return nil, invalidArg("NewCheckpointSink: apply is nil")
	}
	if opts.Key == "" {
		opts.Key = DefaultCheckpointKey
	}
	if opts.Clock == nil {
		opts.Clock = resourcelease.SystemClock
	}
	s := &CheckpointSink{apply: apply, store: opts.Store, key: opts.Key, clock: opts.Clock, peers: make(map[string]int64)}
	if s.store == nil {
		return s, nil
	}
	rec, ok, err := s.store.Get(ctx, s.key)
	if err != nil {
		return nil, fmt.Errorf("replication: loading checkpoint %q: %w", s.key, err)
	}
	if ok {
		var cp checkpointRecord
		if err := json.Unmarshal(rec.Payload, &cp); err != nil {
			return nil, fmt.Errorf("replication: checkpoint %q is not valid: %w", s.key, err)
		}
		s.global = cp.Global
		maps.Copy(s.peers, cp.Peers)
	}
	return s, nil
}

// ApplyEvent implements resourcelease.EventSink: it skips an event at or
// below the checkpoints, else applies it and moves the checkpoints (saving
// them if there is a Store). A save failure is returned, so the replicator
// redelivers; the redelivery is skipped and retries the save.
func (s *CheckpointSink) ApplyEvent(ctx context.Context, e resourcelease.Event) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	if s.dirty {
		if err := s.save(ctx); err != nil {
			return err
		}
	}
	s.mu.Lock()
	skip := e.SequenceNumber <= s.global || (e.PeerID != "" && e.SequenceNumber <= s.peers[e.PeerID])
	if skip {
		s.skipped++
	}
	s.mu.Unlock()
	if skip {
		return nil
	}
	if err := s.apply(ctx, e); err != nil {
		return err
	}
	s.mu.Lock()
	s.global = max(s.global, e.SequenceNumber)
	if e.PeerID != "" {
		s.peers[e.PeerID] = max(s.peers[e.PeerID], e.SequenceNumber)
	}
	s.applied++
	s.mu.Unlock()
	return s.save(ctx)
}

// save persists the checkpoints. Callers hold applyMu.
func (s *CheckpointSink) save(ctx context.Context) error {
	if s.store == nil {
		return nil
	}
	s.mu.Lock()
	cp := checkpointRecord{Global: s.global, Peers: maps.Clone(s.peers)}
	s.mu.Unlock()
	payload, err := json.Marshal(cp)
	if err != nil {
		return err
	}
	err = s.store.Set(ctx, s.key, resourcelease.Record{Kind: CheckpointKind, Version: cp.Global, Payload: payload, RecordedAt: s.clock.Now().UTC()})
	s.dirty = err != nil
	if err != nil {
		return fmt.Errorf("replication: saving checkpoint %q at %d: %w", s.key, cp.Global, err)
	}
	return nil
}

// Checkpoint returns the global checkpoint: the newest sequence number applied.
func (s *CheckpointSink) Checkpoint() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.global
}

// PeerCheckpoint returns the newest applied sequence number of an event that
// named peerID (0 if none).
func (s *CheckpointSink) PeerCheckpoint(peerID string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peers[peerID]
}

// PeerCheckpoints returns a copy of every per-peer checkpoint.
func (s *CheckpointSink) PeerCheckpoints() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.peers)
}

// Counts returns how many events were applied and how many redeliveries
// were skipped.
func (s *CheckpointSink) Counts() (applied, skipped int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.applied, s.skipped
}
