package resourcelease

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultLogPollInterval is how often a Dispatcher serving a Store reads
// its log when DispatcherConfig.LogPollInterval is zero.
const DefaultLogPollInterval = 250 * time.Millisecond

// tailReadLimit is how many events one read of the tail asks for, and
// sinkReadLimit one read of a LogSinks feeder: events carry their items'
// bodies (up to 4 MiB each), so a page is kept small.
const (
	tailReadLimit = 100
	sinkReadLimit = 16
)

// Bounds of a LogSinks feeder's retry backoff.
const (
	sinkRetryMin = 100 * time.Millisecond
	sinkRetryMax = 10 * time.Second
)

// EventLog is the ordered, gap-free log of every change to a Queue whose
// state lives elsewhere, whoever made the change: several dispatchers on one
// database share one log, and each follows it to see the whole mesh.
// postgres.Queue is one.
type EventLog interface {
	// ReadEvents returns up to limit events with SequenceNumber > after,
	// oldest first. Events trimmed by retention are skipped.
	ReadEvents(ctx context.Context, after int64, limit int) ([]Event, error)
	// LastSequence is the sequence number of the newest event (0 if none).
	LastSequence() int64
}

// BodylessEventLog is an EventLog that can read its events without their
// items' bodies (Payload.Body nil, everything else kept). A Dispatcher's
// tail, behind peer health and the mesh metrics, never looks at bodies,
// which may be MiBs each, so it reads them so when it can; LogSinks get
// whole events. postgres.Queue is one.
type BodylessEventLog interface {
	ReadEventsWithoutBodies(ctx context.Context, after int64, limit int) ([]Event, error)
}

// CommitReporter is a Queue that can report the changes its own calls
// commit (not those of other processes sharing its state), so that a
// Dispatcher counts its own work. ReportCommits is called once, before any
// call; f is then called after each commit with that commit's changes in
// log order, from the queue's own goroutine: it must be quick and must not
// call the queue.
type CommitReporter interface {
	ReportCommits(f func([]*Change))
}

// OldestReadyReporter is a Queue that can tell when its oldest ready item
// became ready (zero when nothing is ready), for the age gauge
// (MetricOldestReadyAge) of a queue that has no Backlog.
type OldestReadyReporter interface {
	OldestReady(ctx context.Context) (time.Time, error)
}

// The optional operations a Dispatcher serves when its queue has them.
type (
	itemLister interface {
		ListItems(ctx context.Context, req ListItemsRequest) (ListItemsResponse, error)
	}
	itemReader interface {
		Item(ctx context.Context, seq int64) (ItemInfo, error)
	}
	leasePauser interface {
		Pause(ctx context.Context) error
		Resume(ctx context.Context) error
	}
	backlogReader interface {
		Backlog(ctx context.Context, top int) (Backlog, error)
	}
)

// notSupported is the error of an optional operation the queue lacks.
func (d *LocalDispatcher) notSupported(op string) *Error {
	return Errorf(StatusUnimplemented, CodeNotSupported, "%s is not supported by this dispatcher's queue (%T)", op, d.q)
}

// newStoreDispatcher is NewDispatcher for a DispatcherConfig.Store.
func newStoreDispatcher(cfg DispatcherConfig) (*LocalDispatcher, error) {
	switch {
	case !reflect.ValueOf(cfg.Queue).IsZero():
		return nil, configError("Queue must be zero with Store: the store has its own queue settings")
	case cfg.Replicator != nil || cfg.Deterministic != nil:
		return nil, configError("Replicator and Deterministic must be nil with Store: the store writes its own log and effects")
	case cfg.RefuseUnhealthyPeers && cfg.PeerHealth == nil:
		return nil, configError("RefuseUnhealthyPeers requires PeerHealth")
	case cfg.MaxLeaseWait < 0:
		return nil, configError("MaxLeaseWait must not be negative, got %v", cfg.MaxLeaseWait)
	case cfg.LogPollInterval < 0:
		return nil, configError("LogPollInterval must not be negative, got %v", cfg.LogPollInterval)
	case cfg.LogAfter < -1:
		return nil, configError("LogAfter must be -1, 0 or a sequence number, got %d", cfg.LogAfter)
	}
	elog, isLog := cfg.Store.(EventLog)
	if len(cfg.LogSinks) > 0 && !isLog {
		return nil, configError("LogSinks need a Store that is an EventLog; %T is not", cfg.Store)
	}
	d := &LocalDispatcher{
		q:       cfg.Store,
		clock:   clockOrSystem(cfg.Clock),
		health:  cfg.PeerHealth,
		refuse:  cfg.RefuseUnhealthyPeers,
		bp:      cfg.Backpressure,
		log:     cfg.Logger,
		maxWait: cfg.MaxLeaseWait,
		mesh:    isLog,
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	if d.maxWait == 0 {
		d.maxWait = DefaultMaxLeaseWait
	}
	d.closeCtx, d.cancel = context.WithCancel(context.Background())
	if cfg.Registerer != nil {
		if err := d.registerMetrics(cfg.Registerer, nil); err != nil {
			d.cancel()
			return nil, err
		}
		if err := d.reg.register("queue backlog", newBacklogCollector(d), false); err != nil {
			d.reg.unregisterAll()
			d.cancel()
			return nil, err
		}
	}
	if isLog {
		d.tail = &logTail{
			d: d, log: elog,
			interval: cfg.LogPollInterval, kick: make(chan struct{}, 1), done: make(chan struct{}),
		}
		if d.tail.interval == 0 {
			d.tail.interval = DefaultLogPollInterval
		}
		if d.metrics != nil {
			d.tail.events = newMeshEventCounter()
			d.tail.gaps = prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: MetricMeshLogGaps,
				Help: "Times a log reader of this dispatcher found events trimmed before it read them.",
			}, []string{"reader"})
			for name, c := range map[string]prometheus.Collector{"mesh events": d.tail.events, "mesh log gaps": d.tail.gaps} {
				if err := d.reg.register(name, c, false); err != nil {
					d.reg.unregisterAll()
					d.cancel()
					return nil, err
				}
			}
		}
		switch cfg.LogAfter {
		case 0:
			d.tail.after = elog.LastSequence()
		case -1:
			d.tail.after = 0
		default:
			d.tail.after = cfg.LogAfter
		}
		d.tail.head.Store(d.tail.after)
		for _, s := range cfg.LogSinks {
			f := &sinkFeeder{t: d.tail, sink: s, after: d.tail.after, kick: make(chan struct{}, 1)}
			if rs, ok := s.(ResumableSink); ok {
				ctx, cancel := context.WithTimeout(d.closeCtx, 10*time.Second)
				n, err := rs.LastApplied(ctx)
				cancel()
				if err != nil {
					if d.reg != nil {
						d.reg.unregisterAll()
					}
					d.cancel()
					return nil, Errorf(StatusUnavailable, CodeStorageUnavailable, "resourcelease: LastApplied of log sink %T: %v", s, err)
				}
				f.after = n
			}
			d.tail.feeders = append(d.tail.feeders, f)
		}
	}
	if cr, ok := cfg.Store.(CommitReporter); ok {
		cr.ReportCommits(d.ownCommits)
	}
	if d.tail != nil {
		// The counts as they are now, before the first event arrives.
		d.tail.refreshCounts(true)
		for _, f := range d.tail.feeders {
			d.tail.wg.Add(1)
			go f.run()
		}
		go d.tail.run()
	}
	return d, nil
}

// ownCommits accounts for the changes a Store's commit made through this
// Dispatcher: its counters and lease hold times. The gauges, peer health and
// backpressure follow the Store's log instead, which has every dispatcher's
// changes.
func (d *LocalDispatcher) ownCommits(cs []*Change) {
	if d.tail == nil {
		// No log to follow: everything learns what this Dispatcher did,
		// as with an engine.
		for _, c := range cs {
			d.observe(c)
		}
		return
	}
	if d.metrics != nil {
		for _, c := range cs {
			d.metrics.count(c, d.trackLease(c))
		}
	}
	d.tail.wake()
}

// logTail follows a Store's log from one goroutine, owned by the
// Dispatcher and stopped by its Close, and feeds each of the LogSinks from
// a goroutine of its own (a sinkFeeder), so that a slow or failing sink
// never holds up peer health.
type logTail struct {
	d        *LocalDispatcher
	log      EventLog
	feeders  []*sinkFeeder
	interval time.Duration
	kick     chan struct{} // capacity 1: read the log now
	done     chan struct{}
	wg       sync.WaitGroup         // the feeders
	events   *meshEventCounter      // nil without metrics
	gaps     *prometheus.CounterVec // nil without metrics
	stopOnce sync.Once
	// head is the newest event the tail applied, for the feeders.
	head atomic.Int64

	// Only the tail's goroutine touches these.
	after   int64          // the newest event applied
	failed  OwnershipToken // the last Failed (not requeued) told to peer health
	down    bool           // the last read failed: logged once per outage
	downFor time.Time
}

// wake makes the tail read the log now.
func (t *logTail) wake() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// stop waits for the goroutines to end (the Dispatcher's context is
// cancelled first). Safe on a nil tail, and twice.
func (t *logTail) stop() {
	if t == nil {
		return
	}
	t.stopOnce.Do(func() {
		<-t.done
		t.wg.Wait()
	})
}

func (t *logTail) run() {
	defer close(t.done)
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	for {
		ticked := false
		select {
		case <-t.d.closeCtx.Done():
			return
		case <-tick.C:
			ticked = true
		case <-t.kick:
		}
		t.readOnce(ticked)
	}
}

// readOnce applies every event after t.after, then refreshes the counts if
// any arrived or ticked is set: a delayed item's promotion changes them
// without an event, so a quiet log still refreshes them each interval.
func (t *logTail) readOnce(ticked bool) {
	ctx, cancel := context.WithTimeout(t.d.closeCtx, 10*time.Second)
	defer cancel()
	got := false
	for {
		var evs []Event
		var err error
		if bl, ok := t.log.(BodylessEventLog); ok {
			evs, err = bl.ReadEventsWithoutBodies(ctx, t.after, tailReadLimit)
		} else {
			evs, err = t.log.ReadEvents(ctx, t.after, tailReadLimit)
		}
		if err != nil {
			t.failedRead(err)
			return
		}
		t.recovered()
		if len(evs) > 0 && evs[0].SequenceNumber > t.after+1 {
			t.gap(evs[0].SequenceNumber)
		}
		for i := range evs {
			if evs[i].SequenceNumber <= t.after {
				continue
			}
			t.apply(&evs[i])
			t.after = evs[i].SequenceNumber
			got = true
		}
		if len(evs) < tailReadLimit {
			break
		}
	}
	// The counts first, then the feeders: a sink that has an event sees a
	// dispatcher whose gauges and backpressure are at least as new as it.
	if got || ticked {
		t.refreshCounts(false)
	}
	if got {
		t.head.Store(t.after)
		for _, f := range t.feeders {
			f.wake()
		}
	}
}

// gap handles events trimmed before the tail read them (it fell behind the
// log's retention): what depended on them is forgotten.
func (t *logTail) gap(next int64) {
	t.d.log.Warn("resourcelease: the queue's log was trimmed past what this dispatcher had read; peer health and the mesh event counts miss those events (raise the log's retention)",
		"read", t.after, "next", next, "missed", next-t.after-1)
	if t.gaps != nil {
		t.gaps.WithLabelValues("tail").Inc()
	}
	// The Failed that a missed dead letter would have matched.
	t.failed = OwnershipToken{}
}

func (t *logTail) failedRead(err error) {
	if t.d.closeCtx.Err() != nil {
		return
	}
	if !t.down {
		t.down, t.downFor = true, time.Now()
		t.d.log.Warn("resourcelease: cannot read the queue's log; peer health, backpressure and metrics are stale until it answers", "err", err)
	}
}

func (t *logTail) recovered() {
	if t.down {
		t.down = false
		t.d.log.Info("resourcelease: reading the queue's log again", "after", time.Since(t.downFor).Round(time.Millisecond).String())
	}
}

// sinkFeeder delivers the log to one of the LogSinks, in order, from its
// own goroutine: it reads the log itself from where its sink is (a
// ResumableSink's LastApplied), up to what the tail has seen, and retries
// an event the sink refuses with backoff until the sink takes it, so an
// event is never dropped for a sink's error — only when retention trimmed
// it before the sink caught up (a gap, logged and counted).
type sinkFeeder struct {
	t       *logTail
	sink    EventSink
	after   int64 // the newest event the sink applied
	kick    chan struct{}
	backoff time.Duration
	failing bool
}

func (f *sinkFeeder) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *sinkFeeder) run() {
	defer f.t.wg.Done()
	ctx := f.t.d.closeCtx
	for {
		if f.after >= f.t.head.Load() {
			select {
			case <-ctx.Done():
				return
			case <-f.kick:
			}
			continue
		}
		if !f.feed(ctx) && !f.sleep(ctx) {
			return
		}
	}
}

// feed delivers one page; false when a read or the sink failed.
func (f *sinkFeeder) feed(ctx context.Context) bool {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	evs, err := f.t.log.ReadEvents(rctx, f.after, sinkReadLimit)
	cancel()
	if err != nil {
		return false // the tail logs the log's outages
	}
	if len(evs) == 0 {
		f.after = max(f.after, f.t.head.Load()) // trimmed under it
		return true
	}
	if evs[0].SequenceNumber > f.after+1 {
		f.t.d.log.Warn("resourcelease: a log sink missed events the queue's log trimmed before it caught up",
			"sink", fmt.Sprintf("%T", f.sink), "applied", f.after, "next", evs[0].SequenceNumber)
		if f.t.gaps != nil {
			f.t.gaps.WithLabelValues("sink").Inc()
		}
	}
	for i := range evs {
		e := &evs[i]
		if e.SequenceNumber <= f.after {
			continue
		}
		if err := f.sink.ApplyEvent(ctx, *e); err != nil {
			if ctx.Err() != nil {
				return false
			}
			if !f.failing {
				f.failing = true
				f.t.d.log.Warn("resourcelease: a log sink refused an event; retrying it with backoff until it takes it",
					"sink", fmt.Sprintf("%T", f.sink), "sequence", e.SequenceNumber, "err", err)
			}
			return false
		}
		f.after = e.SequenceNumber
		if f.failing {
			f.failing = false
			f.t.d.log.Info("resourcelease: a log sink takes events again", "sink", fmt.Sprintf("%T", f.sink), "sequence", e.SequenceNumber)
		}
		f.backoff = 0
	}
	return true
}

// sleep waits the next backoff; false once the Dispatcher closes.
func (f *sinkFeeder) sleep(ctx context.Context) bool {
	f.backoff = min(max(2*f.backoff, sinkRetryMin), sinkRetryMax)
	tm := time.NewTimer(f.backoff)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-tm.C:
		return true
	}
}

// refreshCounts reads the Store's counts for the mesh gauges and
// backpressure.
func (t *logTail) refreshCounts(first bool) {
	ctx, cancel := context.WithTimeout(t.d.closeCtx, 5*time.Second)
	defer cancel()
	st, err := t.d.q.Stats(ctx)
	if err != nil {
		if first {
			t.d.log.Warn("resourcelease: cannot read the queue's counts", "err", err)
		}
		return
	}
	if t.d.metrics != nil {
		t.d.metrics.setCounts(st.PendingCount, st.DelayedCount, st.ActiveLeaseCount, st.DeadLetterCount)
	}
	if t.d.bp != nil {
		t.d.bp.Observe(st.PendingCount-st.DelayedCount+st.ActiveLeaseCount, t.d.clock.Now())
	}
}

// apply feeds one event of the log to peer health and the mesh counters.
func (t *logTail) apply(e *Event) {
	if t.events != nil {
		t.events.inc(e.EventType)
	}
	if t.d.health != nil && e.PeerID != "" {
		t.tellPeerHealth(e)
	}
}

// tellPeerHealth is LocalDispatcher.tellPeerHealth for an event of the
// log: the same rules (only an unsettled expiry is a disconnect), told from
// what the event says.
func (t *logTail) tellPeerHealth(e *Event) {
	h := t.d.health
	var tok OwnershipToken
	if e.Ownership != nil {
		tok = *e.Ownership
	}
	at := e.Timestamp
	switch e.EventType {
	case EventLeaseGranted:
		var attrs map[string]string
		if e.Payload != nil {
			attrs = e.Payload.Attributes
		}
		h.RecordAssignment(e.PeerID, tok, attrs, at)
	case EventHeartbeat:
		pending, _ := strconv.Atoi(e.Metadata[MetaQueuePending])
		h.RecordHeartbeat(e.PeerID, tok, pending, at)
	case EventCompleted:
		h.RecordRelease(e.PeerID, tok, ReleaseCompleted, at)
	case EventFailed:
		if e.Metadata[MetaFailureRequeued] == "true" {
			h.RecordRelease(e.PeerID, tok, ReleaseRequeued, at)
			return
		}
		t.failed = tok
		h.RecordRelease(e.PeerID, tok, ReleaseDeadLettered, at)
	case EventLeaseReleased:
		h.RecordRelease(e.PeerID, tok, ReleaseGivenBack, at)
	case EventLeaseExpired:
		h.RecordDisconnect(e.PeerID, tok, DisconnectLeaseExpired, at)
	case EventDeadLettered:
		if tok.IsZero() {
			return
		}
		if tok == t.failed {
			t.failed = OwnershipToken{}
			return
		}
		h.RecordDisconnect(e.PeerID, tok, DisconnectMaxAttempts, at)
	}
}
