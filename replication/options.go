package replication

import (
	"log/slog"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of MemoryConfig and SQLiteConfig.
const (
	// DefaultMemoryRetention is how many events a MemoryReplicator keeps for
	// ReadEvents.
	DefaultMemoryRetention = 10_000
	// DefaultSQLiteRetention is how many events a SQLiteReplicator keeps on
	// disk (about 15 MB of typical events).
	DefaultSQLiteRetention = 100_000
	// DefaultCacheSize is how many of the newest events a SQLiteReplicator
	// also keeps in memory, so sinks and tails that keep up never query the
	// database.
	DefaultCacheSize = 4096
	// DefaultCheckpointPages is how many pages a SQLiteReplicator lets the
	// WAL grow by between two of its background checkpoints.
	DefaultCheckpointPages = 1000
	// DefaultMaxWALPages is the WAL size, in pages, past which a
	// SQLiteReplicator resets the WAL at the writer's next idle moment (when
	// CheckpointPages is left at its default).
	DefaultMaxWALPages = 4 * DefaultCheckpointPages
	// DefaultMaxBatch is the most changes committed in one transaction.
	DefaultMaxBatch = 1024
	// DefaultSinkRetryMin is the first delay before a failed sink is retried.
	DefaultSinkRetryMin = 100 * time.Millisecond
	// DefaultSinkRetryMax caps the doubling retry delay of a failing sink.
	DefaultSinkRetryMax = 30 * time.Second
	// DefaultReadLimit is the limit ReadEvents uses when given limit <= 0.
	DefaultReadLimit = 1000
	// MaxReadLimit caps the limit of one ReadEvents call.
	MaxReadLimit = 10_000
)

// MemoryConfig configures a MemoryReplicator. The zero value of every field
// means its documented default; bad values are an error.
type MemoryConfig struct {
	// Retention is how many of the newest events are kept for ReadEvents.
	// Events a registered sink has not applied yet are kept beyond it (a sink
	// never loses an event), so a sink that fails for ever grows the log.
	// Defaults to 10,000.
	Retention int
	// MaxBatch is the most events delivered to synchronous sinks per round
	// (only used when there are synchronous sinks). Defaults to 1024.
	MaxBatch int
	// SinkRetryMin is the first delay before a failed sink is retried; the
	// delay doubles up to SinkRetryMax. Defaults to 100 ms and 30 s.
	SinkRetryMin, SinkRetryMax time.Duration
	// Clock times sink retries and sink lag. Defaults to resourcelease.SystemClock.
	Clock resourcelease.Clock
	// Logger receives sink failures. Defaults to slog.Default().
	Logger *slog.Logger
	// MetricLabels are constant labels put on every metric, so two
	// replicators can be registered with one registry.
	MetricLabels prometheus.Labels
}

// SQLiteConfig configures a SQLiteReplicator. The zero value of every field
// means its documented default; bad values are an error.
type SQLiteConfig struct {
	// Path is the database's path, used in error messages only (the caller
	// opens the *sql.DB, usually with package sqlitedb).
	Path string
	// DedupeWindow is how long a RequestID's dedupe row is kept; it should
	// equal the queue's. Defaults to 10 minutes; -1 stores no dedupe rows.
	DedupeWindow time.Duration
	// Retention is how many of the newest events are kept on disk; older ones
	// are deleted (never queue state), except those a registered sink has not
	// applied yet. Defaults to 100,000; -1 keeps every event.
	Retention int
	// CacheSize is how many of the newest events are also kept in memory for
	// sinks and ReadEvents. Defaults to 4096.
	CacheSize int
	// MaxBatch is the most changes committed in one transaction. Defaults to 1024.
	MaxBatch int
	// CheckpointPages is how many pages the WAL may grow by before the
	// replicator's checkpointer copies it back into the database with a
	// PASSIVE checkpoint, which commits never wait for (see the package
	// doc, "WAL checkpoints"). Smaller keeps the WAL smaller and makes each
	// checkpoint shorter, so that it more often ends the WAL; larger copies
	// a page changed by many commits fewer times. Defaults to 1000 (4 MiB
	// with 4 KiB pages).
	CheckpointPages int
	// MaxWALPages bounds the WAL: when a checkpoint finds it at MaxWALPages
	// pages or more (because commits never paused long enough for a PASSIVE
	// checkpoint to end it, or a reader kept an old snapshot), the
	// checkpointer resets it at the writer's next idle moment; at twice
	// MaxWALPages the writer waits for that reset. The WAL file stays under
	// about twice MaxWALPages pages while no reader holds a snapshot for
	// long. At least CheckpointPages; defaults to four times CheckpointPages.
	MaxWALPages int
	// SinkRetryMin is the first delay before a failed sink is retried; the
	// delay doubles up to SinkRetryMax. Defaults to 100 ms and 30 s.
	SinkRetryMin, SinkRetryMax time.Duration
	// Retryable reports whether a failed write may succeed when retried
	// as is (the database busy or locked by another process, the disk
	// full, an I/O error): the writer then stalls and retries; any other
	// failure poisons the replicator at once. sqlitestore sets
	// sqlitedb.Retryable, which reads the driver's result code; nil judges
	// by SQLite's message (this package imports no driver).
	Retryable func(error) bool
	// Clock is used for sink retries, sink lag, dedupe trimming and LoadState's
	// dedupe window. Defaults to resourcelease.SystemClock.
	Clock resourcelease.Clock
	// Logger receives storage and sink failures. Defaults to slog.Default().
	Logger *slog.Logger
	// MetricLabels are constant labels put on every metric, so two
	// replicators can be registered with one registry.
	MetricLabels prometheus.Labels
}

// common are the settings shared by both replicators, defaults applied.
type common struct {
	maxBatch           int
	retryMin, retryMax time.Duration
	clock              resourcelease.Clock
	logger             *slog.Logger
	labels             prometheus.Labels
}

func newCommon(maxBatch int, retryMin, retryMax time.Duration, clock resourcelease.Clock, logger *slog.Logger, labels prometheus.Labels) (common, error) {
	c := common{maxBatch: maxBatch, retryMin: retryMin, retryMax: retryMax, clock: clock, logger: logger, labels: labels}
	switch {
	case maxBatch < 0:
		return c, invalidArg("MaxBatch must not be negative, got %d", maxBatch)
	case retryMin < 0:
		return c, invalidArg("SinkRetryMin must not be negative, got %v", retryMin)
	case retryMax < 0:
		return c, invalidArg("SinkRetryMax must not be negative, got %v", retryMax)
	}
	if c.maxBatch == 0 {
		c.maxBatch = DefaultMaxBatch
	}
	if c.retryMin == 0 {
		c.retryMin = DefaultSinkRetryMin
	}
	if c.retryMax == 0 {
		c.retryMax = max(DefaultSinkRetryMax, c.retryMin)
	}
	if c.retryMax < c.retryMin {
		return c, invalidArg("SinkRetryMax %v is below SinkRetryMin %v", c.retryMax, c.retryMin)
	}
	if c.clock == nil {
		c.clock = resourcelease.SystemClock
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	return c, nil
}
