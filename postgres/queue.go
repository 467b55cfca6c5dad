package postgres

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/leasemesh/leasemesh/internal/loglimit"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Defaults of [QueueConfig] beyond those it shares with
// resourcelease.QueueConfig.
const (
	// DefaultEventRetention is how many of the newest events the log keeps.
	DefaultEventRetention = 100_000
	// DefaultPollInterval is how often long-polls look for work when no
	// notification came: a NOTIFY can be lost (the listening connection
	// dropped), so waiters never rely on it alone.
	DefaultPollInterval = time.Second
	// DefaultInFlight is how many transactions of one Queue may be in
	// flight.
	DefaultInFlight = 1
	// DefaultMaxBatch bounds the operations one transaction carries.
	DefaultMaxBatch = 1024
	// DefaultBatchTimeout bounds one transaction of the queue when its
	// callers set no deadline, so that a server that stops answering holds
	// the writer no longer than that.
	DefaultBatchTimeout = 10 * time.Second
	// MaxLeaseBatch bounds the items one LeaseBatch call takes.
	MaxLeaseBatch = 1000
)

// QueueConfig configures [NewQueue]. The zero value of every field means its
// documented default; a bad value is an invalid-argument error. The queue
// options mean what they mean in resourcelease.QueueConfig, except where
// said.
type QueueConfig struct {
	// Capacity bounds the ready and leased items together (a delayed item,
	// waiting for its NotBefore or a requeue delay, is not counted, so work
	// scheduled for later cannot fill the queue). Defaults to 512; -1 means
	// unbounded. Within one process it is exact; across several dispatchers
	// each admits against the counts as of its last commit, so together
	// they may overshoot it by what they admit at the same instant.
	Capacity int
	// DelayedCapacity bounds the delayed items (the delayed count of the
	// counter row): an enqueue with a NotBefore ahead beyond it waits or is
	// refused, by FullMode. Items delayed by a requeue delay or a release
	// are counted but never refused. Defaults to 100,000; -1 means
	// unbounded. Across dispatchers it is approximate as Capacity is.
	DelayedCapacity int
	// FullMode: wait (the default) or reject at capacity.
	FullMode resourcelease.FullMode
	// LeaseDuration is how long a lease lives without a heartbeat.
	// Defaults to 30s.
	LeaseDuration time.Duration
	// HeartbeatInterval is advertised to workers with each lease. Defaults
	// to 5s, or LeaseDuration/3 when that is shorter.
	HeartbeatInterval time.Duration
	// SweepInterval is how often this process sweeps expired leases (every
	// process of a mesh sweeps; each expiry is applied once). Defaults to 1s.
	SweepInterval time.Duration
	// RequeueDelay and MaxRequeueDelay: the fixed delay before a failed item
	// can be leased again, or with MaxRequeueDelay set, exponential backoff
	// RequeueDelay·2^(attempt-1) capped at MaxRequeueDelay.
	RequeueDelay, MaxRequeueDelay time.Duration
	// MaxDeliveryAttempts: an item that failed or expired on this attempt
	// is dead-lettered. Defaults to 5.
	MaxDeliveryAttempts int
	// MaxReleases is how many releases in a row of one item are free; the
	// next counts as a failed attempt. Defaults to 10; -1 means every
	// release is free.
	MaxReleases int
	// MaxActivePerPartition bounds the live leases of one partition key;
	// with 1 each partition is processed strictly in order, one item at a
	// time (its next item is leasable only once the previous one is
	// settled; a fail with requeue, an expiry or a release keeps the item
	// at the head; a delayed item at the head holds the partition). 0 (the
	// default) means no limit. The rule holds across every dispatcher of
	// the schema: a lease locks the partition's row in the partitions
	// table. Every process serving one schema must use the same
	// MaxActivePerPartition and Fairness.
	MaxActivePerPartition int
	// Fairness chooses among the partitions with a leasable item:
	// FairnessFIFO (the default) the oldest ready item, FairnessPartitions
	// round-robin over the partitions (least recently served first, oldest
	// item first within each), mesh-wide.
	Fairness resourcelease.Fairness
	// DeadLetterRetention, when positive, is how long a dead letter is
	// kept: the sweeper purges older ones, each with a DeadLetterPurged
	// event. Defaults to 0: kept until redriven or purged.
	DeadLetterRetention time.Duration
	// MaxDeadLetters bounds the dead letters kept: past it the oldest are
	// purged in the transaction that dead-letters (each with a
	// DeadLetterPurged event). Defaults to 100,000; -1 means no bound.
	MaxDeadLetters int
	// DedupeWindow is how long a RequestID is remembered. Defaults to 10
	// min; -1 disables dedupe. (There is no MaxDedupeEntries: the ids live
	// in a table, not in memory, and the sweeper deletes them once their
	// window has passed.)
	DedupeWindow time.Duration
	// EventRetention is how many of the newest events the log keeps for
	// ReadEvents; the sweeper deletes older ones. Defaults to
	// DefaultEventRetention; -1 keeps every event.
	EventRetention int
	// PollInterval is how often waiting long-polls and capacity waits look
	// again when no notification arrived. Defaults to DefaultPollInterval.
	PollInterval time.Duration
	// MaxBatch bounds the operations (items, tokens, lease slots) of one
	// transaction. Defaults to DefaultMaxBatch.
	MaxBatch int
	// InFlight is how many transactions the queue's writer keeps in flight:
	// with 2 the next transaction's reads and locks overlap the previous
	// one's commit (the counter row still keeps the commits, and the log,
	// in order); 1 runs them one after the other, each carrying more.
	// Defaults to DefaultInFlight; at most 4.
	InFlight int
	// BatchTimeout bounds a transaction whose callers have no deadline.
	// Defaults to DefaultBatchTimeout.
	BatchTimeout time.Duration
	// OnCommit, when set, is called after every commit of this queue's
	// writer with the changes that commit made, in log order, each with its
	// event. It runs on the writer goroutine, so it must be quick and must
	// not call the queue. Changes committed by other processes (and drain,
	// restore, redrive and purge, which commit on their own) are not
	// reported: read the log (ReadEvents) for the whole mesh.
	OnCommit func([]Committed)
	// CommitHook, when set, runs inside every transaction of the queue
	// after its changes and events are written and before COMMIT, with the
	// events (numbered): what it writes (a StateStore's TryAddManyTx of
	// each event's effect) commits or rolls back with them. An error rolls
	// the whole transaction back and fails its callers. It costs one round
	// trip per transaction.
	CommitHook func(ctx context.Context, tx pgx.Tx, events []resourcelease.Event) error
	// Logger receives the queue's background failures (sweeps, the
	// listener). Defaults to the store's.
	Logger *slog.Logger
}

// Committed is one change a commit made, with its replication event.
type Committed struct {
	Change resourcelease.Change
	Event  resourcelease.Event
}

func (c QueueConfig) withDefaults(store Config) (QueueConfig, error) {
	bad := func(format string, args ...any) (QueueConfig, error) {
		return c, invalidArgument("queue: "+format, args...)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"LeaseDuration", c.LeaseDuration}, {"HeartbeatInterval", c.HeartbeatInterval},
		{"SweepInterval", c.SweepInterval}, {"RequeueDelay", c.RequeueDelay},
		{"MaxRequeueDelay", c.MaxRequeueDelay}, {"PollInterval", c.PollInterval}, {"BatchTimeout", c.BatchTimeout},
	} {
		if d.v < 0 || d.v > resourcelease.MaxDuration {
			return bad("%s must be between 0 and %v, got %v", d.name, resourcelease.MaxDuration, d.v)
		}
	}
	switch {
	case c.Capacity < -1:
		return bad("Capacity must be -1 (unbounded), 0 (default) or positive, got %d", c.Capacity)
	case c.DelayedCapacity < -1:
		return bad("DelayedCapacity must be -1 (unbounded), 0 (default) or positive, got %d", c.DelayedCapacity)
	case c.MaxActivePerPartition < 0:
		return bad("MaxActivePerPartition must be 0 (no limit) or positive, got %d", c.MaxActivePerPartition)
	case !c.Fairness.Valid():
		return bad("Fairness must be %q or %q, got %q", resourcelease.FairnessFIFO, resourcelease.FairnessPartitions, c.Fairness)
	case c.DeadLetterRetention < 0 || c.DeadLetterRetention > resourcelease.MaxDuration:
		return bad("DeadLetterRetention must be between 0 (keep them) and %v, got %v", resourcelease.MaxDuration, c.DeadLetterRetention)
	case c.MaxDeadLetters < -1:
		return bad("MaxDeadLetters must be -1 (unbounded), 0 (default) or positive, got %d", c.MaxDeadLetters)
	case c.FullMode != resourcelease.FullWait && c.FullMode != resourcelease.FullReject:
		return bad("unknown FullMode %d", c.FullMode)
	case c.MaxDeliveryAttempts < 0:
		return bad("MaxDeliveryAttempts must not be negative, got %d", c.MaxDeliveryAttempts)
	case c.MaxReleases < -1:
		return bad("MaxReleases must be -1 (no limit), 0 (default) or positive, got %d", c.MaxReleases)
	case c.DedupeWindow < -1:
		return bad("DedupeWindow must be -1 (off), 0 (default) or positive, got %v", c.DedupeWindow)
	case c.EventRetention < -1:
		return bad("EventRetention must be -1 (keep all), 0 (default) or positive, got %d", c.EventRetention)
	case c.MaxBatch < 0:
		return bad("MaxBatch must not be negative, got %d", c.MaxBatch)
	case c.InFlight < 0 || c.InFlight > 4:
		return bad("InFlight must be between 0 (default) and 4, got %d", c.InFlight)
	case c.MaxRequeueDelay > 0 && c.MaxRequeueDelay < c.RequeueDelay:
		return bad("MaxRequeueDelay %v is below RequeueDelay %v", c.MaxRequeueDelay, c.RequeueDelay)
	}
	if c.Capacity == 0 {
		c.Capacity = resourcelease.DefaultCapacity
	}
	if c.DelayedCapacity == 0 {
		c.DelayedCapacity = resourcelease.DefaultDelayedCapacity
	}
	if c.Fairness == "" {
		c.Fairness = resourcelease.FairnessFIFO
	}
	if c.MaxDeadLetters == 0 {
		c.MaxDeadLetters = resourcelease.DefaultMaxDeadLetters
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = resourcelease.DefaultLeaseDuration
	}
	if c.LeaseDuration < time.Millisecond {
		return bad("LeaseDuration must be at least 1ms, got %v", c.LeaseDuration)
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = min(resourcelease.DefaultHeartbeatInterval, c.LeaseDuration/3)
	}
	if c.HeartbeatInterval >= c.LeaseDuration {
		return bad("HeartbeatInterval %v must be shorter than LeaseDuration %v, or every lease expires between heartbeats", c.HeartbeatInterval, c.LeaseDuration)
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = resourcelease.DefaultSweepInterval
	}
	if c.MaxDeliveryAttempts == 0 {
		c.MaxDeliveryAttempts = resourcelease.DefaultMaxDeliveryAttempts
	}
	if c.MaxReleases == 0 {
		c.MaxReleases = resourcelease.DefaultMaxReleases
	}
	if c.DedupeWindow == 0 {
		c.DedupeWindow = resourcelease.DefaultDedupeWindow
	}
	if c.EventRetention == 0 {
		c.EventRetention = DefaultEventRetention
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = DefaultMaxBatch
	}
	if c.BatchTimeout == 0 {
		c.BatchTimeout = DefaultBatchTimeout
	}
	if c.InFlight == 0 {
		c.InFlight = DefaultInFlight
	}
	if c.Logger == nil {
		c.Logger = store.Logger
	}
	return c, nil
}

// Queue is the lease queue of package resourcelease kept wholly in
// PostgreSQL: every pending, leased and dead item, the dedupe window and
// the replication log are rows of the store's schema, and no process holds
// state of its own, so any number of processes can serve one queue. Create
// it with NewQueue; it is safe for concurrent use. It implements the
// store-neutral queue contract, so a Dispatcher can run on it as on the
// in-memory engine, plus batch forms of its calls (EnqueueBatch,
// LeaseBatch, HeartbeatBatch, CompleteBatch) that each commit in one
// transaction, and the log reader (ReadEvents, LastSequence).
//
// Calls are group-committed: the Queue's writer (InFlight goroutines,
// default one) puts every mutation that arrives while a transaction is in
// flight into the next one, and each call returns once its transaction has
// committed. With InFlight 1, after a commit the writer waits briefly (at
// most an eighth of that transaction's time, and 200 µs; less once no call
// has come for 50 µs) for the callers it answered to make their next
// calls, so that a closed loop of workers stays in step with the commits
// instead of straggling into transactions of its own. See the package
// documentation for how a transaction is laid out.
type Queue struct {
	store    *Store
	cfg      QueueConfig
	clock    resourcelease.Clock
	sql      queueSQL
	isql     inspectSQL
	channel  string // the LISTEN/NOTIFY channel
	instance string // this Queue's id in its notifications, to ignore its own

	mu           sync.Mutex
	closed       bool
	pending      []*op // submitted, for the writer
	waiters      []*op // long-polls parked with nothing yet, first come first served
	full         []*op // enqueues waiting for capacity
	serveWaiters bool  // something may be ready: give the waiters a round
	serveFull    bool  // room may have opened: give the capacity waits a round
	trimmed      int64 // events deleted up to here, for the next commit to record
	nWaiters     atomic.Int64
	kick         chan struct{} // wakes the writer (capacity 1)
	submitted    atomic.Int64  // callers' calls submitted so far (no give-backs or sweeps), for letCallersIn

	counts     counts // guarded by mu: the counter row's counts as of the latest commit seen
	countsMark int64  // guarded by mu: the event number counts were read at (commit order)
	reserved   int64  // guarded by mu: items admitted by transactions not yet committed
	// reservedDelayed is reserved for delayed items (DelayedCapacity).
	reservedDelayed int64 // guarded by mu
	waitersBusy     bool  // guarded by mu: a transaction is serving the parked waiters
	// waitLeases is how many transactions in flight carry a lease call
	// that will park if it finds nothing (guarded by mu): see poke.
	waitLeases int
	fullBusy   bool // guarded by mu: a transaction is serving the capacity waits
	sweepBusy  bool // guarded by mu: a transaction is sweeping
	// commitMu is held from a transaction's last round trip (the counter
	// row, COMMIT) until its commit is reported, so that commits are
	// reported (OnCommit, counts) in the order they were made.
	commitMu sync.Mutex

	// parted: the queue has partition rules and keeps the partitions
	// table; psql are its statements.
	parted bool
	psql   partitionSQL

	lastSeq   atomic.Int64 // the newest event number this process has seen
	sweepKick chan struct{}
	due       time.Time // guarded by mu: the earliest delayed item the sweeper should promote
	stop      chan struct{}
	stopCtx   context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	listening chan struct{} // closed once the first LISTEN is established (for tests)
	listenOK  atomic.Bool
	logLim    loglimit.Limiter // rate-limits logError
}

// counts are the counter row's counts.
type counts struct {
	ready, delayed, active, dead int64
	paused                       bool // leasing is paused (the queue's flag, read with the counts)
}

func (c counts) stats() resourcelease.Stats {
	return resourcelease.Stats{PendingCount: int(c.ready + c.delayed), DelayedCount: int(c.delayed), ActiveLeaseCount: int(c.active), DeadLetterCount: int(c.dead), Paused: c.paused}
}

var _ resourcelease.Queue = (*Queue)(nil)

// NewQueue returns the queue of store's schema (there is one per schema)
// and starts its writer, its sweeper, its poll timer and its listener; Close
// stops them. Several processes (or several Queues of one process) may
// serve the same schema at once. The store's Config.Clock, when set,
// drives every time of the queue (for tests with a manual clock). The
// Queue does not own the store: close the Queue before the store.
func NewQueue(ctx context.Context, store *Store, cfg QueueConfig) (*Queue, error) {
	if store == nil {
		return nil, invalidArgument("queue: store is nil")
	}
	if err := store.checkOpen("new queue"); err != nil {
		return nil, err
	}
	cfg, err := cfg.withDefaults(store.cfg)
	if err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = crand.Read(id[:])
	q := &Queue{
		store:     store,
		cfg:       cfg,
		clock:     store.cfg.Clock,
		sql:       newQueueSQL(store),
		isql:      newInspectSQL(store),
		channel:   channelName(store.cfg.Schema),
		instance:  hex.EncodeToString(id[:]),
		kick:      make(chan struct{}, 1),
		sweepKick: make(chan struct{}, 1),
		stop:      make(chan struct{}),
		listening: make(chan struct{}),
	}
	if q.clock == nil {
		q.clock = resourcelease.SystemClock
	}
	if q.parted = partitionRules(&cfg) != ""; q.parted {
		q.psql = newPartitionSQL(store, &q.cfg)
	}
	if err := q.syncPartitions(ctx); err != nil {
		return nil, err
	}
	q.stopCtx, q.cancel = context.WithCancel(context.Background())
	var last, trimmed int64
	var c counts
	var ts time.Time
	err = store.pool.QueryRow(ctx, q.sql.counts, store.nowArg()).Scan(&ts, &c.ready, &c.delayed, &c.active, &c.dead, new(int64), &c.paused)
	if err == nil {
		err = store.pool.QueryRow(ctx, q.sql.lastEvent).Scan(&last, &trimmed)
	}
	if err != nil {
		q.cancel()
		return nil, store.fail(ctx, "new queue", err)
	}
	q.counts, q.countsMark, q.trimmed = c, last+1, trimmed
	q.lastSeq.Store(last)
	q.wg.Add(3 + cfg.InFlight)
	for range cfg.InFlight {
		go q.writeLoop()
	}
	go q.sweepLoop()
	go q.pollLoop()
	go q.listenLoop()
	return q, nil
}

// channelName is the notification channel of a schema's queue: an
// identifier of at most 63 bytes, PostgreSQL's limit.
func channelName(schema string) string {
	n := "leasemesh_queue_" + schema
	if len(n) > 63 {
		n = n[:63]
	}
	return n
}

// Config returns the queue's configuration with its defaults applied.
func (q *Queue) Config() QueueConfig { return q.cfg }

// Store returns the store the queue lives in.
func (q *Queue) Store() *Store { return q.store }

// Waiters returns how many long-poll leases of this process are waiting for
// an item.
func (q *Queue) Waiters() int { return int(q.nWaiters.Load()) }

// opKind is what an op asks of the writer.
type opKind uint8

const (
	opEnqueue opKind = iota + 1
	opLease
	opHeartbeat
	opComplete
	opFail
	opRelease
	opGiveBack // a release of a lease whose caller was gone: not counted
	opSweep
)

// op states.
const (
	opOpen int32 = iota
	opDone
	opGone // abandoned by its caller
)

// op is one call for the writer: its inputs, then its results, which the
// caller reads after done is closed.
type op struct {
	kind    opKind
	ctx     context.Context
	started time.Time // when the call began (monotonic): TTLs count from it
	state   atomic.Int32
	parked  atomic.Bool // a long-poll counted in Queue.nWaiters
	done    chan struct{}

	items  []resourcelease.Item
	caller string
	peer   string
	max    int  // lease: items wanted
	budget int  // lease: bytes wanted (0: no limit)
	wait   bool // lease: park when nothing is ready
	again  bool // lease: already given a second round after a promotion
	solo   bool // enqueue: a single Enqueue, which waits for capacity in FullWait
	tokens []resourcelease.OwnershipToken
	fail   resourcelease.FailOptions
	delay  time.Duration

	err     error
	errs    []error
	seqs    []int64
	dups    []bool
	leases  []*resourcelease.Lease
	expires []time.Time
	stats   resourcelease.Stats
	expired int
	purged  int // sweep: dead letters purged
	nextDue *time.Time
}

func newOp(ctx context.Context, kind opKind) *op {
	return &op{kind: kind, ctx: ctx, started: time.Now(), done: make(chan struct{})}
}

// finish hands the op's results to its caller; false means the caller is
// gone.
func (q *Queue) finish(o *op) bool {
	if !o.state.CompareAndSwap(opOpen, opDone) {
		q.unpark(o)
		return false
	}
	q.unpark(o)
	close(o.done)
	return true
}

// abandon gives up on o for its caller; false means its results are
// already there (read them).
func (q *Queue) abandon(o *op) bool {
	if !o.state.CompareAndSwap(opOpen, opGone) {
		<-o.done
		return false
	}
	q.unpark(o)
	return true
}

func (q *Queue) unpark(o *op) {
	if o.parked.Swap(false) {
		q.nWaiters.Add(-1)
	}
}

func (q *Queue) park(o *op) {
	if !o.parked.Swap(true) {
		q.nWaiters.Add(1)
	}
}

// submit hands o to the writer.
func (q *Queue) submit(o *op) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return resourcelease.ErrClosed
	}
	q.pending = append(q.pending, o)
	if o.kind != opGiveBack && o.kind != opSweep {
		q.submitted.Add(1) // a caller's call, as deliver counts them
	}
	q.mu.Unlock()
	q.wake()
	return nil
}

func (q *Queue) wake() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// call submits o and waits for its results or for its caller's context.
func (q *Queue) call(o *op) error {
	if err := ctxErr(o.ctx); err != nil {
		return err
	}
	if err := q.submit(o); err != nil {
		return err
	}
	select {
	case <-o.done:
		return o.err
	case <-o.ctx.Done():
		if q.abandon(o) {
			return ctxErr(o.ctx)
		}
		return o.err
	}
}

// Enqueue implements the queue contract: it adds item, or with a RequestID
// seen within the dedupe window returns the first enqueue's result. At
// capacity it waits for room (bounded by ctx) or returns ErrQueueFull, by
// FullMode.
func (q *Queue) Enqueue(ctx context.Context, item resourcelease.Item) (resourcelease.EnqueueResult, error) {
	if err := item.Validate(); err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	if err := checkItemText(&item); err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	if err := q.checkNotBefore(&item, q.clock.Now()); err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	o := newOp(ctx, opEnqueue)
	o.items, o.solo, o.caller = []resourcelease.Item{item}, true, resourcelease.CallInfoFrom(ctx).Caller
	if err := q.call(o); err != nil {
		return resourcelease.EnqueueResult{}, err
	}
	if o.errs[0] != nil {
		return resourcelease.EnqueueResult{}, o.errs[0]
	}
	return enqueueResult(o, 0), nil
}

// enqueueResult is the result of item i of an enqueue op.
func enqueueResult(o *op, i int) resourcelease.EnqueueResult {
	r := resourcelease.EnqueueResult{SequenceID: o.seqs[i], Duplicate: o.dups[i], Stats: o.stats}
	if !r.Duplicate {
		r.NotBefore = o.items[i].NotBefore
	}
	return r
}

// checkNotBefore keeps an item's NotBefore in UTC, to the microsecond (the
// database's precision, so the time echoed is the time kept), and refuses
// one further ahead than resourcelease.MaxDuration.
func (q *Queue) checkNotBefore(it *resourcelease.Item, now time.Time) error {
	if it.NotBefore.IsZero() {
		return nil
	}
	it.NotBefore = it.NotBefore.Round(0).UTC().Truncate(time.Microsecond)
	if it.NotBefore.Sub(now) > resourcelease.MaxDuration {
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"payload.notBefore must be at most %v ahead, got %s", resourcelease.MaxDuration, it.NotBefore.Format(time.RFC3339))
	}
	return nil
}

// EnqueueBatch implements the queue contract: it enqueues items in one
// transaction, in order, and returns one result per item: an item that is
// invalid, or finds the queue at capacity (a batch never waits for room),
// has its Err; the others are committed together. The error is for the
// call as a whole (the database failed, ctx ended): then no item was
// acknowledged.
func (q *Queue) EnqueueBatch(ctx context.Context, items []resourcelease.Item) ([]resourcelease.EnqueueResult, error) {
	out := make([]resourcelease.EnqueueResult, len(items))
	valid := make([]resourcelease.Item, 0, len(items))
	index := make([]int, 0, len(items))
	now := q.clock.Now()
	for i := range items {
		it := items[i] // a copy: the caller's slice is never written
		err := it.Validate()
		if err == nil {
			err = checkItemText(&it)
		}
		if err == nil {
			err = q.checkNotBefore(&it, now)
		}
		if err != nil {
			out[i].Err = err
			continue
		}
		valid = append(valid, it)
		index = append(index, i)
	}
	if len(valid) == 0 {
		return out, ctxErr(ctx)
	}
	if len(valid) > q.cfg.MaxBatch {
		return nil, invalidArgument("queue: a batch of %d items is more than MaxBatch (%d)", len(valid), q.cfg.MaxBatch)
	}
	o := newOp(ctx, opEnqueue)
	o.items, o.caller = valid, resourcelease.CallInfoFrom(ctx).Caller
	if err := q.call(o); err != nil {
		return nil, err
	}
	for j, i := range index {
		if o.errs[j] != nil {
			out[i].Err = o.errs[j]
			continue
		}
		out[i] = enqueueResult(o, j)
	}
	return out, nil
}

// Lease implements the queue contract: it leases the oldest ready item to
// peerID, waiting up to wait (or until ctx ends) for one. It returns (nil,
// nil) when nothing arrived in time. Waiters of this process are served
// first come, first served, all of them by one statement per transaction.
func (q *Queue) Lease(ctx context.Context, peerID string, wait time.Duration) (*resourcelease.Lease, error) {
	ls, err := q.lease(ctx, peerID, 1, 0, wait)
	if err != nil || len(ls) == 0 {
		return nil, err
	}
	return ls[0], nil
}

// LeaseBatch implements the queue contract: it leases up to
// opts.MaxItems (default 1, at most MaxLeaseBatch) of the oldest ready items
// to peerID in one transaction, no more than fit in about opts.MaxBytes of
// JSON but at least one, waiting up to opts.Wait for the first. It returns
// none when nothing arrived in time.
func (q *Queue) LeaseBatch(ctx context.Context, peerID string, opts resourcelease.LeaseBatchOptions) ([]*resourcelease.Lease, error) {
	n := max(opts.MaxItems, 1)
	if n > MaxLeaseBatch {
		return nil, invalidArgument("queue: MaxItems must be at most %d, got %d", MaxLeaseBatch, n)
	}
	return q.lease(ctx, peerID, n, max(opts.MaxBytes, 0), opts.Wait)
}

func (q *Queue) lease(ctx context.Context, peer string, n, budget int, wait time.Duration) ([]*resourcelease.Lease, error) {
	if wait < 0 {
		return nil, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "lease wait must not be negative, got %v", wait)
	}
	if err := ctxErr(ctx); err != nil {
		return nil, err
	}
	o := newOp(ctx, opLease)
	o.peer, o.max, o.budget, o.wait = cleanText(peer), n, budget, wait > 0
	var timeout <-chan time.Time
	if wait > 0 {
		t := q.clock.NewTimer(wait)
		defer t.Stop()
		timeout = t.C()
	}
	if err := q.submit(o); err != nil {
		return nil, err
	}
	select {
	case <-o.done:
		return o.leases, o.err
	case <-timeout:
		if q.abandon(o) {
			return nil, nil
		}
		return o.leases, o.err // granted just as the wait ended: still ours
	case <-ctx.Done():
		if !q.abandon(o) {
			if o.err != nil {
				return nil, o.err
			}
			// Granted as the caller gave up: give it back, uncounted.
			for _, l := range o.leases {
				q.giveBack(l.OwnershipToken)
			}
		}
		if o.wait && ctx.Err() == context.DeadlineExceeded {
			return nil, nil // the request's deadline bounds the wait: nothing arrived
		}
		return nil, ctxErr(ctx)
	}
}

// giveBack releases a lease whose caller never got it, without counting it
// as a release.
func (q *Queue) giveBack(t resourcelease.OwnershipToken) {
	o := newOp(context.Background(), opGiveBack)
	o.tokens = []resourcelease.OwnershipToken{t}
	_ = q.submit(o) // closed: the lease expires in time
}

func tokenError(t *resourcelease.OwnershipToken) error {
	if t.IsZero() {
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeTokenRequired, "ownershipToken is required")
	}
	return nil
}

// tokenCall runs a single-token op.
func (q *Queue) tokenCall(ctx context.Context, kind opKind, t resourcelease.OwnershipToken, fill func(*op)) (*op, error) {
	if err := tokenError(&t); err != nil {
		return nil, err
	}
	o := newOp(ctx, kind)
	o.tokens = []resourcelease.OwnershipToken{t}
	if fill != nil {
		fill(o)
	}
	if err := q.call(o); err != nil {
		return nil, err
	}
	return o, o.errs[0]
}

// Heartbeat implements the queue contract: it extends a live lease by the
// lease duration, measured by the database clock. A token that is not the
// live, unexpired lease of its item is unknown_token.
func (q *Queue) Heartbeat(ctx context.Context, token resourcelease.OwnershipToken) (resourcelease.HeartbeatResponse, error) {
	o, err := q.tokenCall(ctx, opHeartbeat, token, nil)
	if err != nil {
		return resourcelease.HeartbeatResponse{}, err
	}
	return resourcelease.HeartbeatResponse{LeaseExpiresAt: o.expires[0], TTL: q.ttl(o)}, nil
}

func (q *Queue) ttl(o *op) time.Duration {
	return max(q.cfg.LeaseDuration-time.Since(o.started), 0)
}

// HeartbeatBatch implements the queue contract: it heartbeats tokens in
// one transaction and returns one result per token (Err unknown_token for
// one that is not live). The error is for the call as a whole.
func (q *Queue) HeartbeatBatch(ctx context.Context, tokens []resourcelease.OwnershipToken) ([]resourcelease.HeartbeatResult, error) {
	o, err := q.tokensCall(ctx, opHeartbeat, tokens)
	if err != nil {
		return nil, err
	}
	out := make([]resourcelease.HeartbeatResult, len(tokens))
	for i := range tokens {
		if out[i].Err = o.errs[i]; out[i].Err == nil {
			out[i].HeartbeatResponse = resourcelease.HeartbeatResponse{LeaseExpiresAt: o.expires[i], TTL: q.ttl(o)}
		}
	}
	return out, nil
}

// CompleteBatch implements the queue contract: it completes tokens in one
// transaction and returns one error per token (nil for each completed).
// The error is for the call as a whole.
func (q *Queue) CompleteBatch(ctx context.Context, tokens []resourcelease.OwnershipToken) ([]error, error) {
	o, err := q.tokensCall(ctx, opComplete, tokens)
	if err != nil {
		return nil, err
	}
	return o.errs, nil
}

func (q *Queue) tokensCall(ctx context.Context, kind opKind, tokens []resourcelease.OwnershipToken) (*op, error) {
	if len(tokens) > q.cfg.MaxBatch {
		return nil, invalidArgument("queue: a batch of %d tokens is more than MaxBatch (%d)", len(tokens), q.cfg.MaxBatch)
	}
	o := newOp(ctx, kind)
	o.tokens = tokens
	if len(tokens) == 0 {
		return o, ctxErr(ctx)
	}
	if err := q.call(o); err != nil {
		return nil, err
	}
	return o, nil
}

// Complete implements the queue contract: it removes the leased item for
// good (its row is deleted).
func (q *Queue) Complete(ctx context.Context, token resourcelease.OwnershipToken) error {
	_, err := q.tokenCall(ctx, opComplete, token, nil)
	return err
}

// Fail implements the queue contract: it ends the lease and requeues the
// item with its next attempt (after the requeue delay) or dead-letters it.
func (q *Queue) Fail(ctx context.Context, token resourcelease.OwnershipToken, opts resourcelease.FailOptions) error {
	opts.Reason, opts.ErrorCode, opts.Metadata = cleanText(opts.Reason), cleanText(opts.ErrorCode), cleanMeta(opts.Metadata)
	_, err := q.tokenCall(ctx, opFail, token, func(o *op) { o.fail = opts })
	return err
}

// Release implements the queue contract: it ends the lease without
// counting its attempt; the item is pending again in its old place, at
// once or after opts.Delay. The MaxReleases-th release in a row counts as
// a failed attempt (lastError code CodeReleaseLimit).
func (q *Queue) Release(ctx context.Context, token resourcelease.OwnershipToken, opts resourcelease.ReleaseOptions) error {
	if opts.Delay < 0 || opts.Delay > resourcelease.MaxDuration {
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "release delay must be between 0 and %v, got %v", resourcelease.MaxDuration, opts.Delay)
	}
	_, err := q.tokenCall(ctx, opRelease, token, func(o *op) { o.delay = opts.Delay })
	return err
}

// Sweep promotes delayed items that are due and expires the leases whose
// expiry has passed (each once, with its event, whichever process sweeps
// it), then trims the event log and the dedupe window. The sweeper calls it
// every SweepInterval; it is exported for callers that drive time
// themselves. It returns how many leases it expired.
func (q *Queue) Sweep(ctx context.Context) (int, error) {
	n, _, err := q.sweep(ctx)
	if err != nil {
		return n, err
	}
	return n, q.trim(ctx)
}

// sweep runs expiry rounds until one finds fewer than a full round.
func (q *Queue) sweep(ctx context.Context) (int, *time.Time, error) {
	total := 0
	for {
		o := newOp(ctx, opSweep)
		if err := q.call(o); err != nil {
			return total, nil, err
		}
		total += o.expired
		if o.expired < sweepLimit && o.purged < sweepLimit {
			return total, o.nextDue, nil
		}
	}
}

// Close stops the queue's goroutines and fails every waiting call with
// ErrClosed. Leases stay as they are in the database. Safe to call twice.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		close(q.stop)
		q.cancel()
		q.wg.Wait()
		// The writer has stopped: fail what it left.
		q.mu.Lock()
		left := append(append(q.pending, q.waiters...), q.full...)
		q.pending, q.waiters, q.full = nil, nil, nil
		q.mu.Unlock()
		for _, o := range left {
			o.err = resourcelease.ErrClosed
			q.finish(o)
		}
	})
	return nil
}

func (q *Queue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

func (q *Queue) logError(msg string, err error) {
	if q.isClosed() {
		return
	}
	// A server that is down fails every sweep and every reconnect: one
	// line per kind every few seconds, the rest at debug.
	if ok, suppressed := q.logLim.Allow(msg); ok {
		q.cfg.Logger.Warn("postgres queue: "+msg, "schema", q.store.cfg.Schema, "err", err, "suppressedSinceLast", suppressed)
		return
	}
	q.cfg.Logger.Debug("postgres queue: "+msg, "schema", q.store.cfg.Schema, "err", err)
}

// String names the queue for logs.
func (q *Queue) String() string { return fmt.Sprintf("postgres queue %s", q.store.cfg.Schema) }
