package deterministic

import (
	"context"

	"github.com/leasemesh/leasemesh/resourcelease"
)

var (
	_ BatchStateStore = (*MemoryStore)(nil)
	_ BatchStateStore = (*SQLiteStore)(nil)
)

// KeyedRecord is a record together with the key it is to be stored under:
// one entry of a [BatchStateStore.TryAddMany] batch.
type KeyedRecord struct {
	// Key is the store key; it must not be empty.
	Key string
	// Record is what TryAddMany stores under Key if Key is absent.
	Record resourcelease.Record
}

// BatchStateStore is a [resourcelease.StateStore] that can TryAdd many
// records in one atomic step, so a caller with many records at hand (the
// [Coordinator]'s ApplyEvents, given a replicator's commit batch) pays for
// one write transaction instead of one per record. [MemoryStore] and
// [SQLiteStore] implement it; callers detect it with a type assertion and
// fall back to TryAdd per record for stores that do not.
type BatchStateStore interface {
	resourcelease.StateStore

	// TryAddMany TryAdds recs in order as one atomic step and reports, for
	// each, whether it was added: added has len(recs) entries, and added[i]
	// is true if and only if recs[i].Key was absent both from the store and
	// from recs[:i]. Of several records with one key in a batch the first is
	// added and the others report false, exactly as successive TryAdds would.
	//
	// It is all or nothing. On error added is nil and no record of the batch
	// is written. Nor is a partial batch ever visible: once Get returns one
	// record the batch added, it returns all of them. An invalid record
	// anywhere in recs (an empty key, or a value the store cannot hold) is an
	// invalid-argument error naming its index, and a done ctx returns the
	// context's error, in both cases before anything is written. Other
	// failures are as for TryAdd (unavailable, storage_unavailable, naming
	// the operation). An empty batch writes nothing and returns an empty
	// added.
	//
	// A BatchStateStore keeps its own copy of every payload, in TryAdd and
	// Set as in TryAddMany: callers may reuse recs and the payload slices
	// once the call returns (the Coordinator reuses its encoding buffers).
	TryAddMany(ctx context.Context, recs []KeyedRecord) (added []bool, err error)
}

// checkBatchKeys rejects a batch holding an empty key, naming its index.
func checkBatchKeys(recs []KeyedRecord) error {
	for i := range recs {
		if recs[i].Key == "" {
			return invalidArgument("record %d of %d in the batch: key is required", i+1, len(recs))
		}
	}
	return nil
}
