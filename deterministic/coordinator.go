package deterministic

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh/resourcelease"
)

var (
	_ resourcelease.EventSink      = (*Coordinator)(nil)
	_ resourcelease.BatchEventSink = (*Coordinator)(nil)
	_ resourcelease.ResumableSink  = (*Coordinator)(nil)
)

// CheckpointKind is the Kind of the checkpoint record.
const CheckpointKind = "checkpoint"

// DefaultChangeID is the change id a Coordinator uses when Config.ChangeID is
// empty.
const DefaultChangeID = "resourcelease"

// Stage is the stage name a Coordinator's errors carry, as the replicator's
// errors name the sink that failed.
const Stage = "deterministic"

// Config configures [NewCoordinator].
type Config struct {
	// Store keeps one record per replication event. Required.
	Store resourcelease.StateStore
	// ChangeID namespaces the keys: event n is recorded under
	// <ChangeID>/seq/<n>. Coordinators of different queues sharing one store
	// need different ChangeIDs. It must not be blank or contain spaces
	// around it. Defaults to DefaultChangeID ("resourcelease").
	ChangeID string
}

// Coordinator is the [resourcelease.EventSink] that captures each
// replication event's effect exactly once: ApplyEvent records the event with
// TryAdd under <changeId>/seq/<sequenceNumber>, so replaying events that were
// already applied (after a redelivery, a failover or a restart with a durable
// store) records nothing new. It is also a [resourcelease.BatchEventSink]:
// ApplyEvents records a replicator's whole commit batch in one
// [BatchStateStore.TryAddMany] (one SQLite transaction) when the store
// supports it.
//
// Each record has Kind = the event type, Version = the sequence number,
// Payload = the event's JSON encoding and RecordedAt = the event's timestamp.
// The first delivery of a sequence number is the one kept; a later event with
// the same number is counted as a replay and not compared.
//
// Recorded and Replayed count what this Coordinator did since it was created;
// Collector exports the same counts to Prometheus. A Coordinator is safe for
// concurrent use, although a replicator delivers to a sink in order.
//
// It is a [resourcelease.ResumableSink]: after recording events it keeps a
// checkpoint record under CheckpointKey (Kind CheckpointKind, Version = the
// highest sequence number up to which every event is recorded), which
// LastApplied returns, so a replicator redelivers what the Coordinator
// missed before a restart. The checkpoint is written after the records it
// covers, so it is never ahead of them; a checkpoint left behind only costs
// replays.
type Coordinator struct {
	store    resourcelease.StateStore
	changeID string
	recorded atomic.Int64
	replayed atomic.Int64

	ckptMu     sync.Mutex // orders checkpoint reads and writes
	ckpt       int64      // guarded by ckptMu: the stored checkpoint
	ckptLoaded bool       // guarded by ckptMu: ckpt was read from the store
}

// NewCoordinator returns a Coordinator over cfg.Store. A nil Store or a
// ChangeID that is blank or has leading or trailing space is an
// invalid-argument error.
func NewCoordinator(cfg Config) (*Coordinator, error) {
	if cfg.Store == nil {
		return nil, invalidArgument("coordinator needs a Store")
	}
	if cfg.ChangeID == "" {
		cfg.ChangeID = DefaultChangeID
	}
	if strings.TrimSpace(cfg.ChangeID) != cfg.ChangeID || cfg.ChangeID == "" {
		return nil, invalidArgument("coordinator change id %q is blank or has surrounding space", cfg.ChangeID)
	}
	return &Coordinator{store: cfg.Store, changeID: cfg.ChangeID}, nil
}

// ChangeID returns the change id that prefixes the Coordinator's keys.
func (c *Coordinator) ChangeID() string { return c.changeID }

// Key returns the store key of the event with sequence number seq:
// <changeId>/seq/<seq>.
func (c *Coordinator) Key(seq int64) string {
	return c.changeID + "/seq/" + strconv.FormatInt(seq, 10)
}

// CheckpointKey returns the store key of the checkpoint record:
// <changeId>/checkpoint.
func (c *Coordinator) CheckpointKey() string { return c.changeID + "/checkpoint" }

// LastApplied implements [resourcelease.ResumableSink]: the sequence number
// up to which every event is recorded, as the checkpoint record says (0 when
// there is none). A store failure is a storage error.
func (c *Coordinator) LastApplied(ctx context.Context) (int64, error) {
	c.ckptMu.Lock()
	defer c.ckptMu.Unlock()
	if err := c.loadCheckpoint(ctx); err != nil {
		return 0, err
	}
	return c.ckpt, nil
}

// loadCheckpoint reads the checkpoint record once. c.ckptMu is held.
func (c *Coordinator) loadCheckpoint(ctx context.Context) error {
	if c.ckptLoaded {
		return nil
	}
	rec, ok, err := c.store.Get(ctx, c.CheckpointKey())
	if err != nil {
		return storageError(ctx, "coordinator: get checkpoint", err)
	}
	if ok {
		c.ckpt = rec.Version
	}
	c.ckptLoaded = true
	return nil
}

// advanceCheckpoint moves the checkpoint past the events just recorded that
// continue it without a gap, and stores it if it moved. Recorded events that
// do not continue it (delivered out of order) leave it where it is: behind is
// safe, ahead never happens.
func (c *Coordinator) advanceCheckpoint(ctx context.Context, events []resourcelease.Event) error {
	c.ckptMu.Lock()
	defer c.ckptMu.Unlock()
	if err := c.loadCheckpoint(ctx); err != nil {
		return c.storeFailure(events, err)
	}
	next := c.ckpt
	for i := range events {
		if seq := events[i].SequenceNumber; seq == next+1 {
			next = seq
		}
	}
	if next == c.ckpt {
		return nil
	}
	rec := resourcelease.Record{
		Kind:       CheckpointKind,
		Version:    next,
		Payload:    []byte{},
		RecordedAt: events[len(events)-1].Timestamp,
	}
	if err := c.store.Set(ctx, c.CheckpointKey(), rec); err != nil {
		return c.storeFailure(events, err)
	}
	c.ckpt = next
	return nil
}

// ApplyEvent records e under Key(e.SequenceNumber) unless a record is there
// already, and counts it as recorded or replayed.
//
// An event whose SequenceNumber is not positive, or that cannot be encoded
// as JSON, is an invalid-argument error. A store failure is an
// *resourcelease.Error with status unavailable and code
// error.resourcelease.deterministic_failed whose message and metadata
// ("stage", "sequenceNumber") name the stage and the sequence number, and
// which wraps the store's error; nothing is counted, and the replicator
// redelivers the event.
func (c *Coordinator) ApplyEvent(ctx context.Context, e resourcelease.Event) error {
	return c.apply(ctx, []resourcelease.Event{e})
}

// ApplyEvents records each of events under Key(SequenceNumber) unless a
// record is there already, and counts each as recorded or replayed, exactly
// as ApplyEvent on each event in turn would: the records, the counters and
// the metrics end the same. An event whose sequence number appears twice in
// the batch is recorded from its first occurrence and counted as a replay
// for the others. An empty batch does nothing.
//
// Every event is checked and encoded before anything is written: an event
// whose SequenceNumber is not positive, or that cannot be encoded, is an
// invalid-argument error naming its sequence number and its place in the
// batch, and nothing of the batch is recorded.
//
// When the store is a [BatchStateStore] the batch is recorded with one
// TryAddMany (for SQLiteStore, one transaction and one commit), all or
// nothing. A store failure is the same
// error.resourcelease.deterministic_failed error as ApplyEvent's, naming the
// stage and the first sequence number of the batch (metadata "stage",
// "sequenceNumber", and "batchSize" for batches of more than one event);
// nothing is recorded or counted, and the replicator redelivers the batch,
// which then records every event once.
//
// After the records, the checkpoint (see LastApplied) is stored with one Set
// if the batch moved it. If that Set fails, ApplyEvents returns the same
// deterministic_failed error although the records are kept (and counted):
// the redelivery counts them as replays and stores the checkpoint.
//
// Other stores get one TryAdd per event, in order; a failure part-way
// returns the same error, and the events before it stay recorded (and
// counted), so the redelivery counts them as replays: each sequence number is
// still recorded exactly once.
func (c *Coordinator) ApplyEvents(ctx context.Context, events []resourcelease.Event) error {
	if len(events) == 0 {
		return nil
	}
	return c.apply(ctx, events)
}

// apply is ApplyEvents for a non-empty batch; ApplyEvent is apply of one
// event, whose messages then do not mention a batch.
func (c *Coordinator) apply(ctx context.Context, events []resourcelease.Event) error {
	for i := range events {
		if seq := events[i].SequenceNumber; seq <= 0 {
			return invalidArgument("event sequence number must be positive, got %d%s", seq, batchPlace(i, len(events)))
		}
	}
	bs, isBatchStore := c.store.(BatchStateStore)
	b := batchPool.Get().(*eventBatch)
	recs, err := b.encode(c.changeID, events)
	if err != nil {
		b.release()
		return err
	}
	if !isBatchStore {
		// A plain StateStore may keep the payload slices it is given: b's
		// buffers now belong to it and are not reused.
		if err := c.applyEach(ctx, events, recs); err != nil {
			return err
		}
		return c.advanceCheckpoint(ctx, events)
	}
	defer b.release() // a BatchStateStore copies payloads, so b can be reused
	var added []bool
	if len(recs) == 1 {
		// One record: an implicit transaction is cheaper than an explicit one.
		var ok bool
		ok, err = bs.TryAdd(ctx, recs[0].Key, recs[0].Record)
		added = []bool{ok}
	} else {
		added, err = bs.TryAddMany(ctx, recs)
	}
	if err != nil {
		return c.storeFailure(events, err)
	}
	c.count(added)
	return c.advanceCheckpoint(ctx, events)
}

// applyEach records recs with one TryAdd each, counting as it goes, and stops
// at the first failure.
func (c *Coordinator) applyEach(ctx context.Context, events []resourcelease.Event, recs []KeyedRecord) error {
	var recorded, replayed int64
	defer func() {
		c.recorded.Add(recorded)
		c.replayed.Add(replayed)
	}()
	for i := range recs {
		added, err := c.store.TryAdd(ctx, recs[i].Key, recs[i].Record)
		if err != nil {
			return c.storeFailure(events, err)
		}
		if added {
			recorded++
		} else {
			replayed++
		}
	}
	return nil
}

// count adds a batch's TryAdd outcomes to the counters.
func (c *Coordinator) count(added []bool) {
	var n int64
	for _, a := range added {
		if a {
			n++
		}
	}
	if n > 0 {
		c.recorded.Add(n)
	}
	if rest := int64(len(added)) - n; rest > 0 {
		c.replayed.Add(rest)
	}
}

// storeFailure is the error of a store failure while recording events: it
// names the stage and the first sequence number, and the batch if there are
// several events.
func (c *Coordinator) storeFailure(events []resourcelease.Event, err error) error {
	first := events[0].SequenceNumber
	md := map[string]string{
		"stage":          Stage,
		"sequenceNumber": strconv.FormatInt(first, 10),
	}
	batch := ""
	if n := len(events); n > 1 {
		md["batchSize"] = strconv.Itoa(n)
		batch = fmt.Sprintf(" (batch of %d events, sequences %d to %d)", n, first, events[n-1].SequenceNumber)
	}
	return &resourcelease.Error{
		Status:   resourcelease.StatusUnavailable,
		Code:     resourcelease.CodeDeterministicFailed,
		Message:  fmt.Sprintf("deterministic: stage %s failed at sequence %d%s: %v", Stage, first, batch, err),
		Metadata: md,
		Err:      err,
	}
}

// batchPlace describes event i of a batch of n for messages, or returns ""
// when there is only one event.
func batchPlace(i, n int) string {
	if n == 1 {
		return ""
	}
	return fmt.Sprintf(" (event %d of %d in the batch)", i+1, n)
}

// eventBatch turns events into the Coordinator's records. All payloads are
// encoded into one buffer and all keys into one string, so a batch costs a
// few allocations beyond encoding/json's own, not several per event; the
// buffers are pooled.
type eventBatch struct {
	buf     bytes.Buffer
	enc     *json.Encoder // writes to buf
	keys    []byte
	bufEnds []int // end of each event's encoding in buf
	keyEnds []int // end of each event's key in keys
	recs    []KeyedRecord
}

// maxPooledBatch is the largest encoding buffer kept for reuse, so one huge
// batch does not pin its memory in the pool.
const maxPooledBatch = 4 << 20

var batchPool = sync.Pool{New: func() any {
	b := new(eventBatch)
	b.enc = json.NewEncoder(&b.buf)
	return b
}}

// encode returns the records of events, keyed under changeID. Their payloads
// are exactly what json.Marshal produces; they and the keys point into b,
// which must not be reused while the records are in use.
func (b *eventBatch) encode(changeID string, events []resourcelease.Event) ([]KeyedRecord, error) {
	b.buf.Reset()
	b.keys, b.bufEnds, b.keyEnds = b.keys[:0], b.bufEnds[:0], b.keyEnds[:0]
	for i := range events {
		if err := b.enc.Encode(&events[i]); err != nil {
			return nil, invalidArgument("event %d cannot be encoded: %v%s", events[i].SequenceNumber, err, batchPlace(i, len(events)))
		}
		b.buf.Truncate(b.buf.Len() - 1) // Encode ends each value with a newline, Marshal does not
		b.bufEnds = append(b.bufEnds, b.buf.Len())
		b.keys = append(append(b.keys, changeID...), "/seq/"...)
		b.keys = strconv.AppendInt(b.keys, events[i].SequenceNumber, 10)
		b.keyEnds = append(b.keyEnds, len(b.keys))
	}
	data, keys := b.buf.Bytes(), string(b.keys) // buf no longer grows: slice it now
	b.recs = slices.Grow(b.recs[:0], len(events))[:len(events)]
	var dataStart, keyStart int
	for i := range events {
		dataEnd, keyEnd := b.bufEnds[i], b.keyEnds[i]
		b.recs[i] = KeyedRecord{
			Key: keys[keyStart:keyEnd],
			Record: resourcelease.Record{
				Kind:       string(events[i].EventType),
				Version:    events[i].SequenceNumber,
				Payload:    data[dataStart:dataEnd:dataEnd],
				RecordedAt: events[i].Timestamp,
			},
		}
		dataStart, keyStart = dataEnd, keyEnd
	}
	return b.recs, nil
}

// release returns b to the pool, dropping its references to keys and
// payloads.
func (b *eventBatch) release() {
	clear(b.recs)
	if b.buf.Cap() <= maxPooledBatch {
		batchPool.Put(b)
	}
}

// Effect returns the record of the event with sequence number seq and
// whether there is one.
func (c *Coordinator) Effect(ctx context.Context, seq int64) (resourcelease.Record, bool, error) {
	rec, ok, err := c.store.Get(ctx, c.Key(seq))
	if err != nil {
		return resourcelease.Record{}, false, storageError(ctx, fmt.Sprintf("coordinator: get sequence %d", seq), err)
	}
	return rec, ok, nil
}

// Recorded returns how many events ApplyEvent and ApplyEvents recorded
// (first deliveries).
func (c *Coordinator) Recorded() int64 { return c.recorded.Load() }

// Replayed returns how many events ApplyEvent and ApplyEvents found already
// recorded and skipped.
func (c *Coordinator) Replayed() int64 { return c.replayed.Load() }

// Collector returns a Prometheus collector of the Coordinator's counts:
// deterministic_effects_recorded_total and
// deterministic_effects_replayed_total, each with a constant label
// change_id, read at scrape time. Registering it is left to the caller; two
// Coordinators with different change ids can share a registry.
func (c *Coordinator) Collector() prometheus.Collector {
	labels := prometheus.Labels{"change_id": c.changeID}
	return &coordinatorCollector{
		c: c,
		recorded: prometheus.NewDesc("deterministic_effects_recorded_total",
			"Replication events whose effect the deterministic coordinator recorded.", nil, labels),
		replayed: prometheus.NewDesc("deterministic_effects_replayed_total",
			"Replication events the deterministic coordinator skipped because their effect was already recorded.", nil, labels),
	}
}

// coordinatorCollector reads the Coordinator's counters at scrape time; its
// descriptors are built once, in Collector.
type coordinatorCollector struct {
	c                  *Coordinator
	recorded, replayed *prometheus.Desc
}

func (cc *coordinatorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cc.recorded
	ch <- cc.replayed
}

func (cc *coordinatorCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(cc.recorded, prometheus.CounterValue, float64(cc.c.Recorded()))
	ch <- prometheus.MustNewConstMetric(cc.replayed, prometheus.CounterValue, float64(cc.c.Replayed()))
}
