package leasemesh

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Storage is where a dispatcher keeps its queue, its replication log and its
// deterministic records. Memory keeps them in the process; package
// sqlitestore keeps them in a data directory (the durable default); each
// storage lives in its own package so that only a program that uses SQLite
// links cgo.
//
// Implementing Storage is for storage packages, not for users of a queue.
type Storage interface {
	// OpenStorage opens the stores. Open calls it once and closes what it
	// returns when it fails or when the Dispatcher is closed.
	OpenStorage(ctx context.Context, opts StorageOptions) (*Stores, error)
}

// StorageOptions are the settings Open hands a Storage, so that each one is
// given once, in Config, and reaches every store that needs it.
type StorageOptions struct {
	// DedupeWindow is the queue's dedupe window as configured
	// (QueueConfig.DedupeWindow: 0 means the default, -1 disables it); a
	// durable store keeps its dedupe records exactly that long.
	DedupeWindow time.Duration
	// Clock is the queue's clock (never nil).
	Clock resourcelease.Clock
	// Logger receives storage failures (never nil).
	Logger *slog.Logger
	// Queue is the dispatcher's queue configuration (Config.Queue, Clock
	// set), for a Storage that builds its own queue (Stores.Queue): it
	// translates what applies to its store and refuses what it cannot
	// honour.
	Queue resourcelease.QueueConfig
	// Registerer is Config.Registerer (nil: no metrics), for a Storage with
	// metrics of its own.
	Registerer prometheus.Registerer
}

// EventLog is the log of a Storage whose queue keeps its own state
// (Stores.Queue): one ordered, gap-free sequence for every dispatcher on
// that state, which the control plane serves and the recent-events view
// follows.
type EventLog interface {
	resourcelease.EventLog
}

// Replicator is what a Dispatcher needs of a replication log: the
// resourcelease.Replicator contract, plus the state of its sinks for
// diagnostics. Both replicators of package replication are one.
type Replicator interface {
	resourcelease.Replicator
	// SinkStatuses reports each sink's progress and last error.
	SinkStatuses() []replication.SinkStatus
}

// Stores are what a Storage opened: either a Replicator (and State) for
// the in-process engine to journal to, or a Queue that keeps its own state,
// with its Events.
type Stores struct {
	// Replicator is the queue's journal and replication log. When it also
	// implements resourcelease.StateLoader, Open rebuilds the queue from it.
	// Nil with Queue.
	Replicator Replicator
	// Queue, when set, is a queue that keeps its state in the storage itself
	// (a database several dispatchers share), built by the Storage from
	// StorageOptions.Queue: Open serves it (resourcelease.DispatcherConfig's
	// Store) instead of building an engine, and does not attach a
	// deterministic coordinator, since such a storage records each event's
	// effect in the event's own transaction. The Dispatcher closes it, before
	// Close.
	Queue resourcelease.Queue
	// Events is Queue's log (required with Queue): the control plane's
	// replication view reads it, the same on every dispatcher.
	Events EventLog
	// Health, when set, reports whether the storage answers now (a ping of
	// the database), for a readiness endpoint: nil when it does.
	Health func(ctx context.Context) error
	// State holds the deterministic records of every event's effect.
	State resourcelease.StateStore
	// Location says where the data is, for logs and diagnostics (a
	// directory, or "memory").
	Location string
	// Close closes what the Storage opened, after the Replicator was closed.
	// Nil means there is nothing more to close.
	Close func() error
}

// Memory returns a Storage that keeps everything in the process: nothing
// survives a restart. It is for tests, demos and queues whose work can be
// lost; use sqlitestore.Dir for a durable one.
func Memory() Storage { return memoryStorage{} }

type memoryStorage struct{}

func (memoryStorage) OpenStorage(_ context.Context, opts StorageOptions) (*Stores, error) {
	repl, err := replication.NewMemoryReplicator(replication.MemoryConfig{Clock: opts.Clock, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	return &Stores{Replicator: repl, State: deterministic.NewMemoryStore(), Location: "memory"}, nil
}
