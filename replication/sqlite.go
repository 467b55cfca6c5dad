package replication

import (
	"context"
	"database/sql"
	"math"

	"github.com/leasemesh/leasemesh/internal/sqlitewal"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/prometheus/client_golang/prometheus"
)

// SQLiteReplicator is the durable Replicator: the queue's Journal, its event
// log and its state store in one SQLite database (docs/guarantees.md:
// <dataDirectory>/replication.db). Every change's event and its effect on the
// queue tables commit in the same transaction, many changes per transaction
// (group commit), and an Ack completes only after that commit. LoadState
// returns what was committed, for the engine to rebuild from after a restart.
//
// It takes a *sql.DB that the caller opened (package sqlitedb opens one in
// WAL mode with _txlock=immediate) and does not close it. The writer keeps
// one of the pool's connections for itself, so the pool must allow at least
// two; the replicator's checkpointer, which keeps the WAL short without a
// commit ever waiting for a checkpoint (see the package doc, "WAL
// checkpoints"), and the readers share the others. Create it with
// NewSQLiteReplicator; it is safe for concurrent use and is also a
// prometheus.Collector.
//
// If a write fails, the writer stalls: that batch's Acks and every later
// Record's fail at once with storage_unavailable (the engine's memory is now
// ahead of the disk), and the writer retries until the storage works again,
// then commits what it holds, in order. See the package doc ("Why the
// queue state lives beside the log") for when it gives up instead.
type SQLiteReplicator struct {
	c     *core
	store *sqliteStore
	wal   *walMetrics
}

var (
	_ resourcelease.Replicator  = (*SQLiteReplicator)(nil)
	_ resourcelease.StateLoader = (*SQLiteReplicator)(nil)
	_ prometheus.Collector      = (*SQLiteReplicator)(nil)
)

// NewSQLiteReplicator creates the schema in db if needed (versioned; a newer
// schema is refused), resumes the event sequence after the newest stored
// event and starts the writer and the checkpointer. Storage errors are
// unavailable *resourcelease.Error values naming opts.Path.
func NewSQLiteReplicator(ctx context.Context, db *sql.DB, opts SQLiteConfig) (*SQLiteReplicator, error) {
	return newSQLiteReplicator(ctx, db, opts, checkpointHooks{})
}

// checkpointHooks let tests hold and watch the checkpointer.
type checkpointHooks struct {
	before  func(sqlitewal.Mode)
	observe func(sqlitewal.Result)
	onHold  func()
}

func newSQLiteReplicator(ctx context.Context, db *sql.DB, opts SQLiteConfig, hooks checkpointHooks) (*SQLiteReplicator, error) {
	if db == nil {
		return nil, invalidArg("NewSQLiteReplicator: db is nil")
	}
	switch {
	case opts.DedupeWindow < -1:
		return nil, invalidArg("DedupeWindow must be -1 (off), 0 (default) or positive, got %v", opts.DedupeWindow)
	case opts.Retention < -1:
		return nil, invalidArg("Retention must be -1 (keep all), 0 (default) or positive, got %d", opts.Retention)
	case opts.CacheSize < 0:
		return nil, invalidArg("CacheSize must not be negative, got %d", opts.CacheSize)
	case opts.CheckpointPages < 0:
		return nil, invalidArg("CheckpointPages must not be negative, got %d", opts.CheckpointPages)
	case opts.MaxWALPages < 0:
		return nil, invalidArg("MaxWALPages must not be negative, got %d", opts.MaxWALPages)
	case db.Stats().MaxOpenConnections == 1:
		return nil, invalidArg("NewSQLiteReplicator: the *sql.DB allows one connection; the writer holds one and readers need another")
	}
	c, err := newCommon(opts.MaxBatch, opts.SinkRetryMin, opts.SinkRetryMax, opts.Clock, opts.Logger, opts.MetricLabels)
	if err != nil {
		return nil, err
	}
	if opts.DedupeWindow == 0 {
		opts.DedupeWindow = resourcelease.DefaultDedupeWindow
	}
	if opts.Retention == 0 {
		opts.Retention = DefaultSQLiteRetention
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = DefaultCacheSize
	}
	if opts.CheckpointPages == 0 {
		opts.CheckpointPages = DefaultCheckpointPages
	}
	if opts.MaxWALPages == 0 {
		opts.MaxWALPages = 4 * opts.CheckpointPages
	}
	if opts.MaxWALPages < opts.CheckpointPages {
		return nil, invalidArg("MaxWALPages %d is below CheckpointPages %d", opts.MaxWALPages, opts.CheckpointPages)
	}
	s := &sqliteStore{
		sqliteReads: sqliteReads{db: db, path: opts.Path, dedupeWindow: opts.DedupeWindow, clock: c.clock},
		retention:   int64(opts.Retention),
		opIdx:       make(map[int64]int),
	}
	if err := s.open(ctx); err != nil {
		s.close()
		return nil, err
	}
	last, err := s.lastEventSequence(ctx)
	if err == nil {
		var first int64
		if first, err = s.firstEventSequence(ctx); err == nil {
			s.trimmedTo = max(first-1, 0)
		}
	}
	if err == nil {
		if err = db.QueryRowContext(ctx, `SELECT value FROM replication_meta WHERE key = 'next_sequence_id'`).Scan(&s.reserved); err != nil {
			err = s.fail("read next sequence id", err)
		}
	}
	if err != nil {
		s.close()
		return nil, err
	}
	wal := newWALMetrics(c.labels)
	ck, err := sqlitewal.Start(db, sqlitewal.Options{
		Pages: int64(opts.CheckpointPages), MaxPages: int64(opts.MaxWALPages),
		Idle: s.idle.Load, Logger: c.logger, Path: opts.Path, Before: hooks.before, OnHold: hooks.onHold,
		Observe: func(r sqlitewal.Result) {
			wal.observe(r)
			if hooks.observe != nil {
				hooks.observe(r)
			}
		},
	})
	if err != nil {
		s.close()
		return nil, invalidArg("%v", err)
	}
	s.ck = ck
	s.lastDedupeCut = c.clock.Now()
	r := &SQLiteReplicator{store: s, wal: wal}
	r.c = newCore(c, s, newEventLog(opts.CacheSize, last+1), false, last)
	r.c.retryable = opts.Retryable
	s.pin = r.minApplied
	return r, nil
}

// minApplied is the oldest event some sink still needs (trimming stops there).
func (r *SQLiteReplicator) minApplied() int64 {
	r.c.mu.Lock()
	sinks := r.c.sinks
	r.c.mu.Unlock()
	pin := int64(math.MaxInt64)
	for _, s := range sinks {
		pin = min(pin, s.applied.Load())
	}
	return pin
}

// LoadState implements resourcelease.StateLoader: the committed pending items
// (with ReadyAt), live leases (token, peer, leasedAt), dead letters, the
// dedupe entries still inside the window and NextSequenceID. Call it before
// the engine starts recording.
func (r *SQLiteReplicator) LoadState(ctx context.Context) (*resourcelease.QueueState, error) {
	return r.store.loadState(ctx)
}

// Record implements resourcelease.Journal: it assigns the change's event the
// next sequence number and hands both to the writer. It never blocks or does
// I/O; the Ack completes when the batch holding the change has committed and
// the synchronous sinks have applied its event.
func (r *SQLiteReplicator) Record(c *resourcelease.Change) resourcelease.Ack { return r.c.Record(c) }

// RecordAll implements resourcelease.BatchJournal: the changes of one batch
// procedure are committed in one transaction (one fsync), with consecutive
// sequence numbers.
func (r *SQLiteReplicator) RecordAll(cs []*resourcelease.Change) resourcelease.Ack {
	return r.c.RecordAll(cs)
}

// ReadEvents implements resourcelease.Replicator: recent events come from
// memory, older ones from one indexed query. limit <= 0 means
// DefaultReadLimit; it is capped at MaxReadLimit.
func (r *SQLiteReplicator) ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	return r.c.ReadEvents(ctx, after, limit)
}

// LastSequence implements resourcelease.Replicator: the newest committed event.
func (r *SQLiteReplicator) LastSequence() int64 { return r.c.lastSeq.Load() }

// AddSink implements resourcelease.Replicator. Names must be unique and
// non-empty.
func (r *SQLiteReplicator) AddSink(name string, sink resourcelease.EventSink, opts resourcelease.SinkOptions) error {
	return r.c.AddSink(name, sink, opts)
}

// SinkStatus returns the delivery status of the sink registered under name.
func (r *SQLiteReplicator) SinkStatus(name string) (SinkStatus, bool) { return r.c.SinkStatus(name) }

// SinkStatuses returns the status of every sink, in registration order.
func (r *SQLiteReplicator) SinkStatuses() []SinkStatus { return r.c.SinkStatuses() }

// Err returns the storage error that poisoned the replicator, or the one
// its writer is retrying past, or nil.
func (r *SQLiteReplicator) Err() error { return r.c.Err() }

// StorageStalled returns the storage error the writer is retrying past
// (Records are taken but answered unavailable at once), or nil when writes
// work or the replicator gave up (then Records are refused outright). The
// queue engine asks it before granting a lease or recording a heartbeat,
// and refuses those while it is set, so that they do not use up the
// changes a stalled writer holds.
func (r *SQLiteReplicator) StorageStalled() error { return r.c.storageStalled() }

// Close implements resourcelease.Replicator: it commits everything recorded
// (completing every Ack), lets the asynchronous sinks catch up unless they
// fail, stops the writer and the checkpointer (letting a checkpoint in
// progress finish) and releases its prepared statements. It does not
// close the *sql.DB. Later Records fail with ErrClosed. It returns the storage
// error if the replicator was poisoned. Safe to call twice.
func (r *SQLiteReplicator) Close() error { return r.c.Close() }

// Describe implements prometheus.Collector.
func (r *SQLiteReplicator) Describe(ch chan<- *prometheus.Desc) {
	r.c.m.Describe(ch)
	r.wal.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *SQLiteReplicator) Collect(ch chan<- prometheus.Metric) {
	r.c.m.Collect(ch)
	r.wal.Collect(ch)
}
