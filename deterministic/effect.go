package deterministic

import (
	"context"
	"fmt"
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// EffectConfig configures [NewEffectStore].
type EffectConfig struct {
	// Store keeps the recorded results. Required.
	Store resourcelease.StateStore
	// KeyPrefix is prepended to an effect id to form its store key.
	// Defaults to "effect/".
	KeyPrefix string
	// Kind is the Kind of the records the store writes. Defaults to "effect".
	Kind string
	// Clock stamps each record's RecordedAt. Nil means real time.
	Clock resourcelease.Clock
}

// DefaultEffectKeyPrefix is the key prefix an EffectStore uses when
// EffectConfig.KeyPrefix is empty.
const DefaultEffectKeyPrefix = "effect/"

// DefaultEffectKind is the record kind an EffectStore uses when
// EffectConfig.Kind is empty.
const DefaultEffectKind = "effect"

// EffectStore captures the result of a function once per effect id: the first
// successful run is recorded in a [resourcelease.StateStore] and every later
// capture of the same id (in this process, in another process sharing the
// store, or after a restart with a durable store) returns the recorded result
// without running the function. Capture is its one method that matters; Lookup
// reads a recorded result.
//
// Each result is recorded with TryAdd under KeyPrefix+effectID as a record of
// Kind with Version 1 and the result as its payload.
//
// An EffectStore is safe for concurrent use; create it with NewEffectStore.
type EffectStore struct {
	store  resourcelease.StateStore
	prefix string
	kind   string
	clock  resourcelease.Clock
	ids    keyedMutex // serializes captures of one effect id in this process
}

// NewEffectStore returns an EffectStore over cfg.Store. A nil Store is an
// invalid-argument error.
func NewEffectStore(cfg EffectConfig) (*EffectStore, error) {
	if cfg.Store == nil {
		return nil, invalidArgument("effect store needs a Store")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultEffectKeyPrefix
	}
	if cfg.Kind == "" {
		cfg.Kind = DefaultEffectKind
	}
	return &EffectStore{store: cfg.Store, prefix: cfg.KeyPrefix, kind: cfg.Kind, clock: cfg.Clock}, nil
}

// Capture returns the result recorded for effectID, running fn to produce it
// only if there is none yet.
//
//   - If a result is recorded, it is returned and fn is not called.
//   - Otherwise fn runs; a successful result is recorded with TryAdd and
//     returned. If another process recorded a result first (TryAdd reports
//     false), that winner's result is returned instead of fn's, so every
//     caller of one effect id sees the same bytes.
//   - If fn fails, nothing is recorded, fn's error is returned as is, and a
//     later Capture runs fn again.
//
// Captures of one effect id within this EffectStore are serialized, so fn
// runs at most once even when they are concurrent; captures of different ids
// run in parallel. Across processes the store's TryAdd decides: both may run
// fn, one result is kept.
//
// If fn succeeds but the store cannot record its result, Capture returns the
// store's error (unavailable, code storage_unavailable): fn's side effects
// happened without being recorded, and a retry runs fn again. A done ctx
// while waiting for another capture of the same id returns the context's
// error. A blank effectID or a nil fn is an invalid-argument error.
func (s *EffectStore) Capture(ctx context.Context, effectID string, fn func(ctx context.Context) ([]byte, error)) ([]byte, error) {
	if strings.TrimSpace(effectID) == "" {
		return nil, invalidArgument("effect id is required")
	}
	if fn == nil {
		return nil, invalidArgument("effect %q: fn is nil", effectID)
	}
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	unlock, err := s.ids.lock(ctx, effectID)
	if err != nil {
		return nil, err
	}
	defer unlock()

	key := s.prefix + effectID
	if rec, ok, err := s.store.Get(ctx, key); err != nil {
		return nil, storageError(ctx, fmt.Sprintf("effect %q: get", effectID), err)
	} else if ok {
		return rec.Payload, nil
	}

	result, err := fn(ctx)
	if err != nil {
		return nil, err
	}
	rec := resourcelease.Record{Kind: s.kind, Version: 1, Payload: result, RecordedAt: now(s.clock)}
	added, err := s.store.TryAdd(ctx, key, rec)
	if err != nil {
		return nil, storageError(ctx, fmt.Sprintf("effect %q: record result", effectID), err)
	}
	if added {
		return result, nil
	}
	// Another process recorded this effect between our Get and TryAdd: its
	// result is the one that counts.
	winner, ok, err := s.store.Get(ctx, key)
	if err != nil {
		return nil, storageError(ctx, fmt.Sprintf("effect %q: get winner", effectID), err)
	}
	if !ok {
		return nil, resourcelease.Errorf(resourcelease.StatusInternal, resourcelease.CodeInternal,
			"deterministic: effect %q: store refused TryAdd but holds no record", effectID)
	}
	return winner.Payload, nil
}

// Lookup returns the result recorded for effectID and whether there is one,
// without running anything.
func (s *EffectStore) Lookup(ctx context.Context, effectID string) ([]byte, bool, error) {
	if strings.TrimSpace(effectID) == "" {
		return nil, false, invalidArgument("effect id is required")
	}
	rec, ok, err := s.store.Get(ctx, s.prefix+effectID)
	if err != nil {
		return nil, false, storageError(ctx, fmt.Sprintf("effect %q: get", effectID), err)
	}
	if !ok {
		return nil, false, nil
	}
	return rec.Payload, true, nil
}
