package deterministic

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// GateConfig configures [NewVersionGate].
type GateConfig struct {
	// Store keeps the decisions. Required.
	Store resourcelease.StateStore
	// KeyPrefix is prepended to a change id to form its store key.
	// Defaults to "version/".
	KeyPrefix string
	// Kind is the Kind of the records the gate writes. Defaults to "version".
	Kind string
	// Clock stamps each decision's RecordedAt. Nil means real time.
	Clock resourcelease.Clock
}

// DefaultGateKeyPrefix is the key prefix a VersionGate uses when
// GateConfig.KeyPrefix is empty.
const DefaultGateKeyPrefix = "version/"

// DefaultGateKind is the record kind a VersionGate uses when GateConfig.Kind
// is empty.
const DefaultGateKind = "version"

// VersionGate records one version decision per change id: the first Decide
// for a change id wins, later Decides with the same version succeed without
// changing anything, and Decides with a different version fail with
// [ErrVersionConflict]. Current reads the decision.
//
// Decisions are recorded with TryAdd under KeyPrefix+changeID, so the gate is
// exactly-once across every process sharing the store, and a decision is
// final: nothing in the gate replaces it.
//
// A VersionGate is safe for concurrent use; create it with NewVersionGate.
type VersionGate struct {
	store  resourcelease.StateStore
	prefix string
	kind   string
	clock  resourcelease.Clock
}

// NewVersionGate returns a VersionGate over cfg.Store. A nil Store is an
// invalid-argument error.
func NewVersionGate(cfg GateConfig) (*VersionGate, error) {
	if cfg.Store == nil {
		return nil, invalidArgument("version gate needs a Store")
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = DefaultGateKeyPrefix
	}
	if cfg.Kind == "" {
		cfg.Kind = DefaultGateKind
	}
	return &VersionGate{store: cfg.Store, prefix: cfg.KeyPrefix, kind: cfg.Kind, clock: cfg.Clock}, nil
}

// Decide records version (with payload) as the decision for changeID if none
// is recorded yet. It returns nil when this call made the decision or the
// recorded decision has the same version (the payload of the first decision
// is kept); otherwise an *resourcelease.Error matching [ErrVersionConflict]
// whose message and metadata ("changeId", "currentVersion",
// "proposedVersion") carry both versions. Of concurrent Decides for one
// change id exactly one records its version; those that proposed another
// version get the conflict.
//
// A blank changeID is an invalid-argument error; a store failure is returned
// as an unavailable error.
func (g *VersionGate) Decide(ctx context.Context, changeID string, version int64, payload []byte) error {
	if strings.TrimSpace(changeID) == "" {
		return invalidArgument("change id is required")
	}
	key := g.prefix + changeID
	rec := resourcelease.Record{Kind: g.kind, Version: version, Payload: payload, RecordedAt: now(g.clock)}
	added, err := g.store.TryAdd(ctx, key, rec)
	if err != nil {
		return storageError(ctx, fmt.Sprintf("version gate %q: record version %d", changeID, version), err)
	}
	if added {
		return nil
	}
	cur, ok, err := g.store.Get(ctx, key)
	if err != nil {
		return storageError(ctx, fmt.Sprintf("version gate %q: read decision", changeID), err)
	}
	if !ok {
		return resourcelease.Errorf(resourcelease.StatusInternal, resourcelease.CodeInternal,
			"deterministic: version gate %q: store refused TryAdd but holds no decision", changeID)
	}
	if cur.Version == version {
		return nil
	}
	return &resourcelease.Error{
		Status: ErrVersionConflict.Status,
		Code:   ErrVersionConflict.Code,
		Message: fmt.Sprintf("deterministic: change %q is already decided at version %d; version %d refused",
			changeID, cur.Version, version),
		Metadata: map[string]string{
			"changeId":        changeID,
			"currentVersion":  strconv.FormatInt(cur.Version, 10),
			"proposedVersion": strconv.FormatInt(version, 10),
		},
	}
}

// Current returns the decision recorded for changeID (its Version, Payload
// and RecordedAt) and whether there is one.
func (g *VersionGate) Current(ctx context.Context, changeID string) (resourcelease.Record, bool, error) {
	if strings.TrimSpace(changeID) == "" {
		return resourcelease.Record{}, false, invalidArgument("change id is required")
	}
	rec, ok, err := g.store.Get(ctx, g.prefix+changeID)
	if err != nil {
		return resourcelease.Record{}, false, storageError(ctx, fmt.Sprintf("version gate %q: read decision", changeID), err)
	}
	return rec, ok, nil
}
