package replication

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// backend is the durable half of a replicator (the SQLite store). A
// MemoryReplicator has none: its in-memory log is the whole log.
type backend interface {
	// commit persists the entries' events and queue-state changes in one
	// transaction, or nothing. Only the writer goroutine calls it.
	commit(ctx context.Context, entries []*entry) error
	// readEvents reads committed events with SequenceNumber > after, oldest first.
	readEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error)
	// setIdle tells the backend the writer is about to wait for work (true)
	// or has some again (false). Only the writer goroutine calls it.
	setIdle(idle bool)
	// close releases what the backend holds (never the caller's *sql.DB).
	close() error
}

// entry is one recorded change on its way through the writer. It is the Ack
// Record returns.
type entry struct {
	change *resourcelease.Change
	event  resourcelease.Event
	batch  *batch
	index  int
}

// Wait implements resourcelease.Ack. While the writer is stalled on a
// storage failure it answers at once with that failure, though the change
// may still be committed later (see stallBatch); a Wait after that commit
// returns nil.
func (e *entry) Wait() error {
	select {
	case <-e.batch.done:
		return e.batch.errAt(e.index)
	case <-e.batch.stall:
		select {
		case <-e.batch.done:
			return e.batch.errAt(e.index)
		default:
			return e.batch.stallErr
		}
	}
}

// batch is one group commit. Record appends to the open batch; the writer
// takes whole batches, commits each in one transaction and closes done.
type batch struct {
	entries []*entry
	done    chan struct{}
	// Set by the writer before done is closed.
	err      error // every entry failed: storage failure or poisoned replicator
	failFrom int   // entries at index >= failFrom failed with failErr (a sink)
	failErr  error
	// stall is closed, with stallErr set, when the writer stalled on a
	// storage failure before committing the batch: its Acks answer
	// unavailable at once while the writer keeps retrying. Guarded by the
	// core's mu until closed.
	stall       chan struct{}
	stallErr    error
	stallClosed bool
	// bytes is what changeBytes counts for the entries, for the core's
	// uncommitted total. Guarded by the core's mu while the batch is open.
	bytes int64
}

func newBatch(capacity int) *batch {
	return &batch{done: make(chan struct{}), stall: make(chan struct{}), entries: make([]*entry, 0, capacity)}
}

func (b *batch) errAt(i int) error {
	if b.err != nil {
		return b.err
	}
	if b.failErr != nil && i >= b.failFrom {
		return b.failErr
	}
	return nil
}

// asyncReadBatch is how many events an async sink reads from the log at once.
const asyncReadBatch = 256

// core is the machinery both replicators share: sequence assignment in
// Record, the single writer goroutine (group commit, synchronous sinks, Acks),
// the in-memory log, the asynchronous sink goroutines and Close.
type core struct {
	common
	store backend // nil for a MemoryReplicator
	// retryable judges whether a failed write may succeed retried
	// (SQLiteConfig.Retryable; nil: by SQLite's message).
	retryable func(error) bool
	log       *eventLog // all retained events (memory) or the newest ones (SQLite cache)
	pinLog    bool      // the log must keep events a sink has not applied (memory)
	m         *metrics
	ctx       context.Context // for backend reads and sink calls

	lastSeq atomic.Int64 // newest committed event

	mu      sync.Mutex
	nextSeq int64 // sequence number of the next Record
	closed  bool
	failed  *resourcelease.Error // poisoned: every later Ack fails with it
	// stalled is the storage failure the writer is retrying past (nil while
	// writes work): Records are still taken, in order, but answered with it
	// at once.
	stalled *resourcelease.Error
	// uncommitted and uncommittedBytes count the changes recorded and not
	// yet committed (or failed), wherever they wait: the open batch, the
	// queue, the batches the writer took. While stalled they are bounded by
	// maxStalledEntries and maxStalledBytes.
	uncommitted      int
	uncommittedBytes int64
	closing          chan struct{} // closed by Close: a stalled writer gives up
	open             *batch        // the batch Records append to; nil when the writer took it
	queue            []*batch      // batches waiting for the writer, oldest first
	// taken is what the writer took from queue and has not finished: a
	// stall must answer these too, not only the batch that failed.
	taken     []*batch
	sinks     []*sink // copy on write: the writer and publish use snapshots
	syncSinks int

	wake       chan struct{} // capacity 1: "there is work", never blocks Record
	writerDone chan struct{}
	stopSinks  chan struct{} // closed by Close after the writer finished
	// drainOver is closed SinkDrainTimeout after stopSinks: async sinks stop
	// delivering their backlog then, so that Close is bounded.
	drainOver chan struct{}
	sinkWG    sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	scratch   []resourcelease.Event // writer-owned
}

func newCore(c common, store backend, log *eventLog, pinLog bool, last int64) *core {
	r := &core{
		common:     c,
		store:      store,
		log:        log,
		pinLog:     pinLog,
		ctx:        context.Background(),
		nextSeq:    last + 1,
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
		stopSinks:  make(chan struct{}),
		drainOver:  make(chan struct{}),
		closing:    make(chan struct{}),
	}
	r.lastSeq.Store(last)
	r.m = newMetrics(c.labels, &r.lastSeq, func() bool { return r.Err() != nil })
	go r.writer()
	return r
}

// Record implements resourcelease.Journal. It never blocks on I/O: it builds
// the event, assigns the next sequence number and queues both for the writer.
// The change is kept (not copied) until committed: the engine hands every
// change as a fresh snapshot and never touches it again.
func (r *core) Record(c *resourcelease.Change) resourcelease.Ack {
	ev := resourcelease.NewEvent(c)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return failedAck{errClosed}
	}
	if r.failed != nil {
		err := r.failed
		r.mu.Unlock()
		return failedAck{err}
	}
	ev.SequenceNumber = r.nextSeq
	r.nextSeq++
	if r.store == nil && r.syncSinks == 0 {
		// Memory without synchronous sinks: appending to the log is the
		// commit, so it happens here, in order, and the Ack is already done.
		r.publish(r.sinks, ev)
		r.mu.Unlock()
		return nil
	}
	size := changeBytes(c)
	if err := r.admit(1, size); err != nil {
		r.nextSeq--
		r.mu.Unlock()
		return failedAck{err}
	}
	b := r.open
	if b == nil || len(b.entries) >= r.maxBatch {
		b = newBatch(16)
		r.open = b
		r.queue = append(r.queue, b)
		if r.stalled != nil {
			r.stallBatch(b, r.stalled)
		}
	}
	e := &entry{change: c, event: ev, batch: b, index: len(b.entries)}
	b.entries = append(b.entries, e)
	b.bytes += size
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return e
}

// RecordAll implements resourcelease.BatchJournal: the changes of one call
// get consecutive sequence numbers and go into one batch, so the writer
// commits them in one transaction (the batch may exceed MaxBatch for that).
// It returns the Ack of the last, which completes with them all.
func (r *core) RecordAll(cs []*resourcelease.Change) resourcelease.Ack {
	if len(cs) == 0 {
		return nil
	}
	evs := make([]resourcelease.Event, len(cs))
	for i, c := range cs {
		evs[i] = resourcelease.NewEvent(c)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return failedAck{errClosed}
	}
	if r.failed != nil {
		err := r.failed
		r.mu.Unlock()
		return failedAck{err}
	}
	for i := range evs {
		evs[i].SequenceNumber = r.nextSeq
		r.nextSeq++
	}
	if r.store == nil && r.syncSinks == 0 {
		r.publish(r.sinks, evs...)
		r.mu.Unlock()
		return nil
	}
	var size int64
	for _, c := range cs {
		size += changeBytes(c)
	}
	if err := r.admit(len(cs), size); err != nil {
		r.nextSeq -= int64(len(cs))
		r.mu.Unlock()
		return failedAck{err}
	}
	b := r.open
	if b == nil || len(b.entries)+len(cs) > max(r.maxBatch, len(cs)) {
		b = newBatch(len(cs))
		r.open = b
		r.queue = append(r.queue, b)
		if r.stalled != nil {
			r.stallBatch(b, r.stalled)
		}
	}
	var last *entry
	for i, c := range cs {
		last = &entry{change: c, event: evs[i], batch: b, index: len(b.entries)}
		b.entries = append(b.entries, last)
	}
	b.bytes += size
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return last
}

// publish makes committed events visible: the log, LastSequence, metrics and
// the async sinks' wake-ups. Callers serialise it (Record under r.mu, or the
// writer).
func (r *core) publish(sinks []*sink, evs ...resourcelease.Event) {
	if len(evs) == 0 {
		return
	}
	pin := int64(math.MaxInt64)
	if r.pinLog {
		for _, s := range sinks {
			pin = min(pin, s.applied.Load())
		}
	}
	r.log.append(pin, evs...)
	r.lastSeq.Store(evs[len(evs)-1].SequenceNumber)
	for i := range evs {
		r.m.countEvent(evs[i].EventType)
	}
	for _, s := range sinks {
		if !s.sync {
			select {
			case s.notify <- struct{}{}:
			default:
			}
		}
	}
}

// writer is the single goroutine that commits. It takes every queued batch,
// commits each (one transaction), runs the synchronous sinks and completes
// the Acks; when idle it also retries synchronous sinks that are behind.
func (r *core) writer() {
	defer close(r.writerDone)
	var retry resourcelease.Timer
	var retryC <-chan time.Time
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		r.mu.Lock()
		batches := r.queue
		r.queue, r.open, r.taken = nil, nil, batches
		closed := r.closed
		sinks := r.sinks
		r.mu.Unlock()
		for _, b := range batches {
			r.process(b, sinks)
		}
		if len(batches) > 0 {
			r.mu.Lock()
			r.taken = nil
			r.mu.Unlock()
			runtime.Gosched()
			continue
		}
		if closed {
			// A last attempt at the synchronous sinks' backlog, so a clean
			// shutdown does not leave an event to the next start.
			r.retrySync(sinks)
			return
		}
		if retry == nil {
			if d, ok := r.syncRetryDelay(sinks); ok {
				retry = r.clock.NewTimer(d)
				retryC = retry.C()
			}
		}
		if r.store != nil {
			r.store.setIdle(true)
		}
		select {
		case <-r.wake:
		case <-retryC:
			retry, retryC = nil, nil
			r.retrySync(sinks)
		}
		if r.store != nil {
			r.store.setIdle(false)
		}
	}
}

// maxStalledEntries and maxStalledBytes bound the changes a stalled writer
// holds in memory, answered but not yet written (counted from when they were
// recorded until they are committed, across stalls): past either the
// replicator gives up (it is poisoned) rather than grow without bound
// through a long outage.
const (
	maxStalledEntries       = 1 << 14
	maxStalledBytes   int64 = 64 << 20
)

// changeOverhead is what changeBytes counts for a change besides its
// variable-length fields: the change, its event and its entry.
const changeOverhead = 512

// changeBytes estimates the memory a recorded change holds until it is
// committed: its item bodies, strings and attributes, twice (the change and
// the event built from it share the body but copy little else, so this
// errs high), plus a fixed overhead.
func changeBytes(c *resourcelease.Change) int64 {
	n := int64(changeOverhead + len(c.PeerID))
	item := func(p *resourcelease.PendingItem) {
		it := &p.Payload
		n += int64(len(it.Body) + len(it.ResourceType) + len(it.ResourceID) + len(it.PartitionKey) +
			len(it.PayloadEncoding) + len(it.RequestID))
		for k, v := range it.Attributes {
			n += int64(len(k) + len(v))
		}
		if p.LastError != nil {
			n += int64(len(p.LastError.Message))
		}
	}
	if c.Item != nil {
		item(c.Item)
	}
	for i := range c.Items {
		item(&c.Items[i])
	}
	n += 8 * int64(len(c.SequenceIDs))
	if c.Error != nil {
		n += int64(len(c.Error.Message))
	}
	for k, v := range c.Metadata {
		n += int64(len(k) + len(v))
	}
	return n
}

// storageRetryMin and storageRetryMax bound the backoff between a stalled
// writer's attempts. They are wall-clock (not the queue's Clock): they pace
// retries of I/O, not queue time.
const (
	storageRetryMin = 50 * time.Millisecond
	storageRetryMax = 2 * time.Second
)

// admit counts n changes of size bytes about to be recorded. While the
// writer is stalled, if they would take the uncommitted changes past
// maxStalledEntries or maxStalledBytes, it poisons the replicator instead and
// returns why. Callers hold r.mu.
func (r *core) admit(n int, size int64) error {
	if r.stalled != nil && (r.uncommitted+n > maxStalledEntries || r.uncommittedBytes+size > maxStalledBytes) {
		r.failed = r.stalled
		r.logger.Error("replication: storage still failing with too many changes waiting; refusing every later change until restart",
			"error", r.stalled, "waiting", r.uncommitted, "waitingBytes", r.uncommittedBytes)
		return r.failed
	}
	r.uncommitted += n
	r.uncommittedBytes += size
	return nil
}

// stallBatch answers b's Acks with err now, ahead of its commit. Callers
// hold r.mu.
func (r *core) stallBatch(b *batch, err error) {
	select {
	case <-b.done:
		return // answered already
	default:
	}
	if !b.stallClosed {
		b.stallClosed = true
		b.stallErr = err
		close(b.stall)
	}
}

// commit writes b. When the storage fails in a way that can clear by
// itself (a full disk, a lock another process holds, an I/O error: see
// transient), the writer stalls: the Acks of b, of the batches behind it and
// of every change recorded until the storage works again are answered
// unavailable at once, and b is retried, with backoff, until it commits —
// then the writer goes on with the changes behind it, in order, so the disk
// catches up with memory and the sequence stays gap-free. An unavailable
// answer is an unknown outcome, as a timeout is: the change may be committed
// later. The writer gives up, poisoning the replicator, when it is closed or
// too many changes wait. A failure that retrying cannot mend (a change that
// cannot be turned into rows, a constraint, a missing table, tables out of
// step with the log) poisons at once.
func (r *core) commit(b *batch) error {
	err := r.store.commit(r.ctx, b.entries)
	if err == nil {
		return nil
	}
	e := resourcelease.AsError(err)
	first := b.entries[0].event.SequenceNumber
	if !transient(e, r.retryable) {
		return r.poison(e, first, len(b.entries))
	}
	r.mu.Lock()
	r.stalled = e
	for _, q := range r.taken { // b among them, and those the writer took behind it
		r.stallBatch(q, e)
	}
	r.stallBatch(b, e)
	for _, q := range r.queue {
		r.stallBatch(q, e)
	}
	r.mu.Unlock()
	r.logger.Error("replication: storage failed; answering unavailable and retrying the write until it works",
		"error", err, "firstSequence", first, "batch", len(b.entries))
	start := time.Now()
	for backoff := storageRetryMin; ; backoff = min(2*backoff, storageRetryMax) {
		t := time.NewTimer(backoff)
		closing := false
		select {
		case <-t.C:
		case <-r.closing:
			closing = true
		}
		t.Stop()
		r.mu.Lock()
		gaveUp := r.failed
		r.mu.Unlock()
		if gaveUp != nil {
			return gaveUp
		}
		err := r.store.commit(r.ctx, b.entries)
		if err == nil {
			r.mu.Lock()
			waiting := r.uncommitted
			// The open batch is already answered unavailable: later Records
			// start a new one, answered when committed.
			r.stalled, r.open = nil, nil
			r.mu.Unlock()
			r.logger.Info("replication: storage works again; writing resumed",
				"stalledFor", time.Since(start).Round(time.Millisecond), "firstSequence", first, "waiting", waiting)
			return nil
		}
		e = resourcelease.AsError(err)
		if !transient(e, r.retryable) {
			return r.poison(e, first, len(b.entries))
		}
		if closing {
			r.mu.Lock()
			r.failed, r.stalled = e, nil
			r.mu.Unlock()
			r.logger.Error("replication: closed while storage was failing; the changes not written are lost (none was acknowledged)",
				"error", err, "firstSequence", first)
			return e
		}
		r.mu.Lock()
		r.stalled = e
		r.mu.Unlock()
	}
}

// poison makes e the answer to every Ack not yet committed and every later
// Record, until restart.
func (r *core) poison(e *resourcelease.Error, first int64, n int) error {
	r.mu.Lock()
	r.failed, r.stalled = e, nil
	r.mu.Unlock()
	r.logger.Error("replication: a write failed in a way retrying cannot mend; refusing every later change until restart",
		"error", e, "firstSequence", first, "batch", n)
	return e
}

// process commits one batch and completes its Acks.
func (r *core) process(b *batch, sinks []*sink) {
	defer r.finish(b)
	r.mu.Lock()
	failed := r.failed
	r.mu.Unlock()
	if failed != nil {
		b.err = failed
		return
	}
	if r.store != nil {
		if err := r.commit(b); err != nil {
			b.err = err
			return
		}
	}
	evs := r.scratch[:0]
	for _, e := range b.entries {
		evs = append(evs, e.event)
	}
	r.publish(sinks, evs...)
	clear(evs)
	r.scratch = evs[:0]
	r.m.batchSize.Observe(float64(len(b.entries)))
	for _, s := range sinks {
		if !s.sync {
			continue
		}
		if i, err := r.deliverSync(s, b); err != nil && (b.failErr == nil || i < b.failFrom) {
			b.failFrom, b.failErr = i, err
		}
	}
}

// finish completes b's Acks and lets go of its changes: an Ack may be kept
// long after (a dedupe record holds the original enqueue's), and needs only
// the batch's outcome, not its payloads.
func (r *core) finish(b *batch) {
	close(b.done)
	r.mu.Lock()
	r.uncommitted -= len(b.entries)
	r.uncommittedBytes -= b.bytes
	r.mu.Unlock()
	for _, e := range b.entries {
		e.change, e.event = nil, resourcelease.Event{}
	}
	b.entries = nil
}

// deliverSync gives a synchronous sink its backlog (events it failed on
// before) and then the batch's events, stopping at the first failure. It
// returns the index of the first batch entry the sink did not apply.
func (r *core) deliverSync(s *sink, b *batch) (int, error) {
	first := b.entries[0].event.SequenceNumber
	if s.applied.Load() < first-1 {
		if err := r.catchUp(s, first-1); err != nil {
			return 0, err
		}
	}
	skip := 0 // entries published before the sink was added
	for skip < len(b.entries) && b.entries[skip].event.SequenceNumber <= s.applied.Load() {
		skip++
	}
	if skip == len(b.entries) {
		return skip, nil
	}
	evs := make([]resourcelease.Event, 0, len(b.entries)-skip)
	for _, e := range b.entries[skip:] {
		evs = append(evs, e.event)
	}
	n, err := r.deliver(s, evs)
	return skip + n, err
}

// catchUp delivers the committed events after the sink's cursor up to upTo,
// read from the log, in order, stopping at the first failure.
func (r *core) catchUp(s *sink, upTo int64) error {
	for {
		after := s.applied.Load()
		if after >= upTo {
			return nil
		}
		evs, err := r.readFor(s, after, int(min(upTo-after, asyncReadBatch)))
		if err != nil {
			return err
		}
		for len(evs) > 0 && evs[len(evs)-1].SequenceNumber > upTo {
			evs = evs[:len(evs)-1]
		}
		if _, err := r.deliver(s, evs); err != nil {
			return err
		}
	}
}

// readFor reads the events after a sink's cursor, failing (and recording the
// failure on the sink) if the log cannot produce the very next one.
func (r *core) readFor(s *sink, after int64, limit int) ([]resourcelease.Event, error) {
	evs, err := r.read(r.ctx, after, limit)
	if err == nil && (len(evs) == 0 || evs[0].SequenceNumber != after+1) {
		err = errMissingEvent(after + 1)
	}
	if err != nil {
		s.noteFailure(r, "read", after+1, err)
		return nil, sinkError(s.name, after+1, err)
	}
	return evs, nil
}

// deliver gives consecutive events to a sink and moves its cursor past the
// ones it applied, which it returns. A resourcelease.BatchEventSink gets them
// in one ApplyEvents call, all or nothing; any other sink one by one, up to
// the first failure.
func (r *core) deliver(s *sink, evs []resourcelease.Event) (int, error) {
	if len(evs) == 0 {
		return 0, nil
	}
	if bs, ok := s.sink.(resourcelease.BatchEventSink); ok {
		if err := bs.ApplyEvents(r.ctx, evs); err != nil {
			first, last := evs[0].SequenceNumber, evs[len(evs)-1].SequenceNumber
			s.noteFailure(r, "apply", first, err)
			if last > first {
				err = fmt.Errorf("batch of events %d to %d: %w", first, last, err)
			}
			return 0, sinkError(s.name, first, err)
		}
		s.applied.Store(evs[len(evs)-1].SequenceNumber)
		s.noteSuccess(r)
		now := r.clock.Now()
		for i := range evs {
			s.lag.Observe(max(now.Sub(evs[i].Timestamp), 0).Seconds())
		}
		return len(evs), nil
	}
	for i, ev := range evs {
		if err := r.apply(s, ev); err != nil {
			return i, err
		}
	}
	return len(evs), nil
}

// apply delivers one event to a sink and moves its cursor on success.
func (r *core) apply(s *sink, ev resourcelease.Event) error {
	if err := s.sink.ApplyEvent(r.ctx, ev); err != nil {
		s.noteFailure(r, "apply", ev.SequenceNumber, err)
		return sinkError(s.name, ev.SequenceNumber, err)
	}
	s.applied.Store(ev.SequenceNumber)
	s.noteSuccess(r)
	s.lag.Observe(max(r.clock.Now().Sub(ev.Timestamp), 0).Seconds())
	return nil
}

// syncRetryDelay reports the shortest backoff of the synchronous sinks that
// are behind the log.
func (r *core) syncRetryDelay(sinks []*sink) (time.Duration, bool) {
	last := r.lastSeq.Load()
	d, ok := time.Duration(math.MaxInt64), false
	for _, s := range sinks {
		if s.sync && s.applied.Load() < last {
			d, ok = min(d, max(s.backoff, r.retryMin)), true
		}
	}
	return d, ok
}

// retrySync redelivers to the synchronous sinks that are behind. Their Acks
// already failed; this only keeps the sinks from losing events while the
// queue is idle.
func (r *core) retrySync(sinks []*sink) {
	last := r.lastSeq.Load()
	for _, s := range sinks {
		if s.sync && s.applied.Load() < last {
			_ = r.catchUp(s, last) // failures are recorded on the sink
		}
	}
}

// read returns committed events after `after`: from the in-memory log when it
// holds them, else from the backend.
func (r *core) read(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	evs, covered := r.log.read(after, limit)
	if covered || r.store == nil {
		return evs, nil
	}
	return r.store.readEvents(ctx, after, limit)
}

// ReadEvents implements resourcelease.Replicator.
func (r *core) ReadEvents(ctx context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, resourcelease.AsError(err)
	}
	if after < 0 {
		return nil, invalidArg("ReadEvents: after must not be negative, got %d", after)
	}
	if limit <= 0 {
		limit = DefaultReadLimit
	}
	limit = min(limit, MaxReadLimit)
	return r.read(ctx, after, limit)
}

// AddSink implements resourcelease.Replicator.
func (r *core) AddSink(name string, es resourcelease.EventSink, opts resourcelease.SinkOptions) error {
	if name == "" {
		return invalidArg("AddSink: name is required")
	}
	if es == nil {
		return invalidArg("AddSink %q: sink is nil", name)
	}
	resume, err := r.resumePoint(name, es)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return errClosed
	}
	for _, s := range r.sinks {
		if s.name == name {
			return invalidArg("AddSink: a sink named %q is already registered", name)
		}
	}
	s := newSink(r, name, es, opts.Synchronous)
	// A plain sink starts at the head: events published earlier are not
	// replayed. A ResumableSink behind the head gets the rest from the log
	// (which stays pinned for it) before or with the next events.
	s.applied.Store(min(resume, r.nextSeq-1))
	r.sinks = append(slices.Clip(r.sinks), s)
	if s.sync {
		r.syncSinks++
		if s.applied.Load() < r.lastSeq.Load() {
			select { // let the writer schedule the catch-up while idle
			case r.wake <- struct{}{}:
			default:
			}
		}
		return nil
	}
	r.sinkWG.Add(1)
	go r.runAsync(s)
	return nil
}

// resumePoint is where a new sink's cursor starts: the sink's LastApplied if
// it is a resourcelease.ResumableSink, else the head of the log (MaxInt64,
// which AddSink caps). A resumable sink whose next event the log no longer
// holds is an error naming the gap: its events would otherwise be skipped.
func (r *core) resumePoint(name string, es resourcelease.EventSink) (int64, error) {
	rs, ok := es.(resourcelease.ResumableSink)
	if !ok {
		return math.MaxInt64, nil
	}
	applied, err := rs.LastApplied(r.ctx)
	if err != nil {
		return 0, sinkError(name, 0, fmt.Errorf("read the sink's last applied sequence: %w", err))
	}
	if applied < 0 {
		return 0, invalidArg("AddSink %q: LastApplied returned %d, which is negative", name, applied)
	}
	if applied >= r.lastSeq.Load() {
		return applied, nil // up to date (or ahead of this log: it starts at the head)
	}
	evs, err := r.read(r.ctx, applied, 1)
	if err != nil {
		return 0, sinkError(name, applied+1, fmt.Errorf("read the log to resume the sink: %w", err))
	}
	if len(evs) == 0 || evs[0].SequenceNumber != applied+1 {
		lost := r.lastSeq.Load()
		if len(evs) > 0 {
			lost = evs[0].SequenceNumber - 1
		}
		return 0, sinkError(name, applied+1, fmt.Errorf(
			"the sink applied events up to %d but the log no longer holds events %d to %d, so they cannot be redelivered",
			applied, applied+1, lost))
	}
	return applied, nil
}

// runAsync feeds one asynchronous sink from the log, in order, retrying a
// failed event with backoff until it applies. On Close it delivers what is
// committed unless the sink fails, then returns.
func (r *core) runAsync(s *sink) {
	defer r.sinkWG.Done()
	stopping := false
	for {
		after, upTo := s.applied.Load(), r.lastSeq.Load()
		if after >= upTo {
			if stopping {
				return
			}
			select {
			case <-s.notify:
			case <-r.stopSinks:
				stopping = true
			}
			continue
		}
		if !stopping {
			select {
			case <-r.stopSinks:
				stopping = true
			default:
			}
		}
		if stopping {
			select {
			case <-r.drainOver:
				// What is left stays in the log: a resumable sink gets it
				// again after a restart.
				r.logger.Warn("replication: Close stopped an asynchronous sink before it caught up",
					"sink", s.name, "applied", after, "last", upTo, "timeout", SinkDrainTimeout)
				return
			default:
			}
		}
		batch := int64(asyncReadBatch)
		if stopping {
			batch = closingReadBatch // look at the drain timeout often
		}
		evs, err := r.readFor(s, after, int(min(upTo-after, batch)))
		if err == nil {
			_, err = r.deliver(s, evs)
		}
		if err != nil && (stopping || !r.sleep(s.backoff)) {
			return
		}
	}
}

// sleep waits d on the clock; it returns false if Close began meanwhile.
func (r *core) sleep(d time.Duration) bool {
	t := r.clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-r.stopSinks:
		return false
	}
}

// SinkStatus returns the delivery status of the sink registered under name.
func (r *core) SinkStatus(name string) (SinkStatus, bool) {
	r.mu.Lock()
	sinks := r.sinks
	r.mu.Unlock()
	for _, s := range sinks {
		if s.name == name {
			return s.status(r.lastSeq.Load()), true
		}
	}
	return SinkStatus{}, false
}

// SinkStatuses returns the status of every sink, in registration order.
func (r *core) SinkStatuses() []SinkStatus {
	r.mu.Lock()
	sinks := r.sinks
	r.mu.Unlock()
	last := r.lastSeq.Load()
	out := make([]SinkStatus, len(sinks))
	for i, s := range sinks {
		out[i] = s.status(last)
	}
	return out
}

// SinkDrainTimeout bounds how long Close lets asynchronous sinks deliver the
// events they have not applied yet: 10 s. The delivery in progress (at most
// 256 events) is finished first; what is left after that stays in the log,
// and a resumable sink is given it again after a restart.
const SinkDrainTimeout = 10 * time.Second

// closingReadBatch is how many events an async sink is handed at a time
// while Close drains it, so that the drain timeout is checked between small
// batches.
const closingReadBatch = 16

// sinkDrainTimeout is SinkDrainTimeout; tests shorten it.
var sinkDrainTimeout = SinkDrainTimeout

// Close implements resourcelease.Replicator: it refuses new Records, lets the
// writer commit everything recorded (and complete its Acks), lets each async
// sink deliver what is committed, unless it fails, for at most
// SinkDrainTimeout, and stops every goroutine.
// It returns the storage error if the replicator was poisoned.
func (r *core) Close() error {
	r.closeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.mu.Unlock()
		close(r.closing)
		select {
		case r.wake <- struct{}{}:
		default:
		}
		<-r.writerDone
		close(r.stopSinks)
		drained := make(chan struct{})
		go func() { r.sinkWG.Wait(); close(drained) }()
		t := time.NewTimer(sinkDrainTimeout)
		select {
		case <-drained:
		case <-t.C:
			close(r.drainOver)
			<-drained
		}
		t.Stop()
		var err error
		if r.store != nil {
			err = r.store.close()
		}
		r.mu.Lock()
		if r.failed != nil {
			err = r.failed
		}
		r.mu.Unlock()
		r.closeErr = err
	})
	return r.closeErr
}

// storageStalled returns the storage error the writer is retrying past, or
// nil.
func (r *core) storageStalled() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stalled == nil || r.failed != nil {
		return nil
	}
	return r.stalled
}

// Err returns the storage error that poisoned the replicator, or the one
// its writer is retrying past, or nil.
func (r *core) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.failed != nil:
		return r.failed
	case r.stalled != nil:
		return r.stalled
	}
	return nil
}
