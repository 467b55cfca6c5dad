// Package pgstore is leasemesh's PostgreSQL Storage: the queue, its
// replication log and the deterministic records all live in one database
// schema, so any number of dispatcher processes on that database serve one
// queue and none of them holds state of its own. It is pure Go (package
// postgres, pgx v5) and builds with CGO_ENABLED=0.
//
//	d, err := leasemesh.Open(ctx, leasemesh.Config{Storage: pgstore.URL("postgres://leasemesh@db/app")})
//
// The queue settings come from leasemesh.Config.Queue, as with every
// storage: Capacity, FullMode, LeaseDuration, HeartbeatInterval,
// SweepInterval, RequeueDelay, MaxRequeueDelay, MaxDeliveryAttempts,
// MaxReleases and DedupeWindow mean what they mean in memory. Those that
// do not apply on Postgres, MaxDedupeEntries (request ids live in a table
// that the sweeper trims by age, not in memory) and DelayedCapacity
// (delayed items are rows, bounded by the database), are unbounded there:
// 0 and -1 are accepted, an explicit bound is refused with
// invalid-argument rather than silently dropped. So are the settings the
// Postgres queue does not enforce yet (MaxActivePerPartition, Fairness
// other than FIFO, DeadLetterRetention, a MaxDeadLetters bound); the
// error's Metadata["setting"] names the field. MaxDeadLetters left at 0 is
// accepted, and there means no bound, as -1 does. Postgres-only knobs (the
// schema, the pool, timeouts, log retention, the poll fallback, batching)
// are in Config.
//
// Each event's deterministic effect is written by the queue's own
// transaction (postgres.QueueConfig.CommitHook with the StateStore's Tx
// form), so it commits or rolls back with the mutation and is recorded once
// mesh-wide with no checkpoint; it costs one more round trip per
// transaction.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Config configures a Postgres Storage. The zero value is the default.
type Config struct {
	// Store configures the connection: schema, pool size, timeouts,
	// application name (see postgres.Config). Its Logger and Clock are set
	// from the dispatcher's (a Clock other than resourcelease.SystemClock
	// replaces the database clock, for tests).
	Store postgres.Config
	// Queue holds the Postgres-only queue knobs: EventRetention,
	// PollInterval, MaxBatch, InFlight, BatchTimeout. Its queue settings
	// (Capacity, LeaseDuration, ...) are overwritten from
	// leasemesh.Config.Queue, and OnCommit and CommitHook are the storage's.
	Queue postgres.QueueConfig
	// NoCapture turns off the deterministic capture of each event's effect
	// in its transaction, saving a round trip per transaction for a mesh
	// that has no use for the records.
	NoCapture bool
}

// URL returns the Storage of the database at url (postgres://...) with the
// default Config.
func URL(url string) leasemesh.Storage { return URLWith(url, Config{}) }

// URLWith is URL with a Config.
func URLWith(url string, cfg Config) leasemesh.Storage { return storage{url: url, cfg: cfg} }

type storage struct {
	url string
	cfg Config
}

// QueueConfig translates a dispatcher's queue settings into the Postgres
// queue's, over base (its Postgres-only knobs), refusing those the Postgres
// queue cannot honour.
func QueueConfig(q resourcelease.QueueConfig, base postgres.QueueConfig) (postgres.QueueConfig, error) {
	if err := notOnPostgres(q); err != nil {
		return base, err
	}
	if q.Journal != nil || q.InitialState != nil {
		return base, invalid("Queue.Journal and Queue.InitialState do not apply to Postgres")
	}
	c := base
	c.Capacity, c.FullMode = q.Capacity, q.FullMode
	c.LeaseDuration, c.HeartbeatInterval, c.SweepInterval = q.LeaseDuration, q.HeartbeatInterval, q.SweepInterval
	c.RequeueDelay, c.MaxRequeueDelay = q.RequeueDelay, q.MaxRequeueDelay
	c.MaxDeliveryAttempts, c.MaxReleases, c.DedupeWindow = q.MaxDeliveryAttempts, q.MaxReleases, q.DedupeWindow
	c.DelayedCapacity, c.MaxActivePerPartition, c.Fairness = q.DelayedCapacity, q.MaxActivePerPartition, q.Fairness
	c.DeadLetterRetention, c.MaxDeadLetters = q.DeadLetterRetention, q.MaxDeadLetters
	return c, nil
}

// notOnPostgres refuses the queue settings that do not apply to the
// Postgres queue, each error naming its field in Metadata["setting"].
func notOnPostgres(q resourcelease.QueueConfig) error {
	if q.MaxDedupeEntries > 0 {
		return notApplicable("MaxDedupeEntries", "request ids live in a table the sweeper trims by age")
	}
	return nil
}

func notApplicable(field, why string) error {
	return withSetting(invalid(field+" does not apply on Postgres ("+why+"); leave it 0 or -1 with pgstore"), field)
}

func withSetting(err error, field string) error {
	e := resourcelease.AsError(err)
	e.Metadata = map[string]string{"setting": field}
	return e
}

func invalid(msg string) error {
	return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "pgstore: %s", msg)
}

// OpenStorage implements leasemesh.Storage: it opens the store (applying
// migrations under an advisory lock, so dispatchers starting at once are
// safe) and its queue.
func (s storage) OpenStorage(ctx context.Context, opts leasemesh.StorageOptions) (*leasemesh.Stores, error) {
	qc, err := QueueConfig(opts.Queue, s.cfg.Queue)
	if err != nil {
		return nil, err
	}
	sc := s.cfg.Store
	sc.Logger = opts.Logger
	if clock := opts.Queue.Clock; clock != nil && clock != resourcelease.SystemClock {
		sc.Clock = clock
	} else if opts.Clock != nil && opts.Clock != resourcelease.SystemClock {
		sc.Clock = opts.Clock
	}
	store, err := postgres.Open(ctx, s.url, sc)
	if err != nil {
		return nil, err
	}
	mq := &Queue{}
	qc.OnCommit = mq.onCommit
	qc.CommitHook = nil
	unregister := func() {}
	if !s.cfg.NoCapture {
		coord, err := deterministic.NewCoordinator(deterministic.Config{Store: store.StateStore()})
		if err != nil {
			_ = store.Close()
			return nil, err
		}
		// The capture's counts, as an engine dispatcher registers its
		// coordinator's.
		if reg := opts.Registerer; reg != nil {
			c := coord.Collector()
			if err := reg.Register(c); err != nil {
				if !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
					_ = store.Close()
					return nil, err
				}
			} else {
				unregister = func() { reg.Unregister(c) }
			}
		}
		state := store.StateStore()
		qc.CommitHook = func(ctx context.Context, tx pgx.Tx, events []resourcelease.Event) error {
			return coord.CaptureWith(ctx, events, func(ctx context.Context, recs []deterministic.KeyedRecord) ([]bool, error) {
				return state.TryAddManyTx(ctx, tx, recs)
			})
		}
	}
	q, err := postgres.NewQueue(ctx, store, qc)
	if err != nil {
		unregister()
		_ = store.Close()
		return nil, err
	}
	mq.Queue = q
	return &leasemesh.Stores{
		Queue:    mq,
		Events:   mq,
		State:    store.StateStore(),
		Location: Location(s.url, store.Schema()),
		Health:   func(ctx context.Context) error { _, err := store.Now(ctx); return err },
		Close: func() error {
			unregister()
			return errors.Join(q.Close(), store.Close())
		},
	}, nil
}

// Location describes a database for logs: its host, port, database and
// schema, never its password.
func Location(rawURL, schema string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return "postgres (schema " + schema + ")"
	}
	return fmt.Sprintf("postgres://%s%s (schema %s)", u.Host, u.Path, schema)
}

// Queue is the Postgres queue as a leasemesh storage serves it: a
// *postgres.Queue that also reports its own commits to the dispatcher
// (resourcelease.CommitReporter), so that the dispatcher counts its own
// work while it follows the shared log for the mesh's.
type Queue struct {
	*postgres.Queue
	report atomic.Pointer[func([]*resourcelease.Change)]
}

var (
	_ resourcelease.Queue               = (*Queue)(nil)
	_ resourcelease.EventLog            = (*Queue)(nil)
	_ resourcelease.CommitReporter      = (*Queue)(nil)
	_ resourcelease.OldestReadyReporter = (*Queue)(nil)
)

// ReportCommits implements resourcelease.CommitReporter.
func (q *Queue) ReportCommits(f func([]*resourcelease.Change)) { q.report.Store(&f) }

func (q *Queue) onCommit(cs []postgres.Committed) {
	f := q.report.Load()
	if f == nil || len(cs) == 0 {
		return
	}
	changes := make([]*resourcelease.Change, len(cs))
	for i := range cs {
		changes[i] = &cs[i].Change
	}
	(*f)(changes)
}
