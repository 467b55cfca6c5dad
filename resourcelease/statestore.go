package resourcelease

import (
	"context"
	"time"
)

// Record is one deterministic capture: the kind of thing recorded, its version,
// an opaque payload and when it was recorded.
type Record struct {
	Kind       string    `json:"kind"`
	Version    int64     `json:"version"`
	Payload    []byte    `json:"payload"`
	RecordedAt time.Time `json:"recordedAt"`
}

// StateStore is the deterministic state store: a key/record map whose TryAdd is
// the once-only primitive that makes replays idempotent. Implementations:
// deterministic.MemoryStore and deterministic.SQLiteStore.
type StateStore interface {
	// Get returns the record under key and whether there is one.
	Get(ctx context.Context, key string) (Record, bool, error)
	// Set stores rec under key, replacing any record.
	Set(ctx context.Context, key string, rec Record) error
	// TryAdd stores rec under key only if key is absent, and reports whether it did.
	TryAdd(ctx context.Context, key string, rec Record) (bool, error)
}
