package resourcelease_test

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var ldQuiet = slog.New(slog.DiscardHandler)

// ldStorage opens a Replicator over one kind of storage in dir. It is closed
// at the end of the test (after the Dispatcher, which newLD registers later).
type ldStorage struct {
	name string
	open func(t *testing.T, dir string, clock resourcelease.Clock) resourcelease.Replicator
}

var ldStorages = []ldStorage{
	{"memory", func(t *testing.T, _ string, clock resourcelease.Clock) resourcelease.Replicator {
		r, err := replication.NewMemoryReplicator(replication.MemoryConfig{Clock: clock, Logger: ldQuiet})
		require.NoError(t, err)
		t.Cleanup(func() { assert.NoError(t, r.Close()) })
		return r
	}},
	{"sqlite", func(t *testing.T, dir string, clock resourcelease.Clock) resourcelease.Replicator {
		r, _ := ldOpenSQLite(t, dir, clock)
		return r
	}},
}

// ldOpenSQLite opens <dir>/replication.db and a SQLiteReplicator on it; both
// are closed at the end of the test (closing twice is fine).
func ldOpenSQLite(t *testing.T, dir string, clock resourcelease.Clock) (*replication.SQLiteReplicator, *sql.DB) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(dir, "replication.db")
	db, err := sqlitedb.Open(ctx, path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	require.NoError(t, err)
	r, err := replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: path, Clock: clock, Logger: ldQuiet})
	require.NoError(t, err)
	t.Cleanup(func() {
		assert.NoError(t, r.Close())
		assert.NoError(t, db.Close())
	})
	return r, db
}

// ldEventSink keeps the events it is given, and fails while failing is set.
type ldEventSink struct {
	mu      sync.Mutex
	events  []resourcelease.Event
	failing error
}

func (s *ldEventSink) ApplyEvent(_ context.Context, e resourcelease.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failing != nil {
		return s.failing
	}
	s.events = append(s.events, e)
	return nil
}

func (s *ldEventSink) setFailing(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = err
}

func (s *ldEventSink) sequences() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int64, len(s.events))
	for i, e := range s.events {
		out[i] = e.SequenceNumber
	}
	return out
}

// TestDispatcherReplicationEvents runs a full cycle on each storage and checks
// the replication log: every event in order, gap-free, with the metadata of
// the replication contract, and a synchronous sink that saw the same events by the time each
// call returned. The deterministic coordinator captured each event once.
func TestDispatcherReplicationEvents(t *testing.T) {
	for _, st := range ldStorages {
		t.Run(st.name, func(t *testing.T) {
			clock := leasetest.NewManualClock(time.Time{})
			repl := st.open(t, t.TempDir(), clock)
			audit := &ldEventSink{}
			require.NoError(t, repl.AddSink("audit", audit, resourcelease.SinkOptions{Synchronous: true}))
			coord, err := deterministic.NewCoordinator(deterministic.Config{Store: deterministic.NewMemoryStore()})
			require.NoError(t, err)
			f := newLD(t, resourcelease.DispatcherConfig{Clock: clock, Replicator: repl, Deterministic: coord,
				Queue: resourcelease.QueueConfig{LeaseDuration: 10 * time.Second}})
			ctx := resourcelease.WithCallInfo(context.Background(), resourcelease.CallInfo{Caller: "admin"})
			d := f.d

			f.enqueue(t, "a", "b")
			la := f.lease(t, "w1")
			_, err = d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: la.OwnershipToken})
			require.NoError(t, err)
			err = d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: la.OwnershipToken})
			require.NoError(t, err)
			lb := f.lease(t, "w2")
			err = d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: lb.OwnershipToken, Reason: "flaky", ErrorCode: "app.flaky", Metadata: map[string]string{"host": "h1"}})
			require.NoError(t, err)
			lb = f.lease(t, "w2")
			err = d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: lb.OwnershipToken, Reason: "broken", DeadLetter: true})
			require.NoError(t, err)
			_, err = d.Redrive(ctx, &resourcelease.RedriveRequest{All: true})
			require.NoError(t, err)
			dr, err := d.Drain(ctx, nil)
			require.NoError(t, err)
			_, err = d.Restore(ctx, &resourcelease.RestoreRequest{Items: dr.Items})
			require.NoError(t, err)
			lb = f.lease(t, "w3")
			f.clock.Advance(10 * time.Second)
			d.Queue().Sweep()

			type ev struct {
				typ             resourcelease.EventType
				peer            string
				pending, active int
				extra           map[string]string
			}
			want := []ev{
				{resourcelease.EventEnqueue, "", 1, 0, nil},
				{resourcelease.EventEnqueue, "", 2, 0, nil},
				{resourcelease.EventLeaseGranted, "w1", 1, 1, nil},
				{resourcelease.EventHeartbeat, "w1", 1, 1, nil},
				{resourcelease.EventCompleted, "w1", 1, 0, nil},
				{resourcelease.EventLeaseGranted, "w2", 0, 1, nil},
				{resourcelease.EventFailed, "w2", 1, 0, map[string]string{resourcelease.MetaFailureRequeued: "true", "host": "h1"}},
				{resourcelease.EventLeaseGranted, "w2", 0, 1, map[string]string{resourcelease.MetaAttempt: "2"}},
				{resourcelease.EventFailed, "w2", 0, 0, map[string]string{resourcelease.MetaFailureRequeued: "false"}},
				{resourcelease.EventDeadLettered, "w2", 0, 0, map[string]string{resourcelease.MetaFailureRequeued: "false"}},
				{resourcelease.EventRedriven, "admin", 1, 0, map[string]string{resourcelease.MetaRedriveCount: "1"}},
				{resourcelease.EventDrainSnapshot, "admin", 0, 0, map[string]string{resourcelease.MetaDrainCount: "1"}},
				{resourcelease.EventRestoreSnapshot, "admin", 1, 0, map[string]string{resourcelease.MetaRestoreCount: "1"}},
				{resourcelease.EventLeaseGranted, "w3", 0, 1, nil},
				{resourcelease.EventLeaseExpired, "w3", 1, 0, nil},
			}
			events, err := repl.ReadEvents(context.Background(), 0, 100)
			require.NoError(t, err)
			require.Len(t, events, len(want))
			for i, w := range want {
				e := events[i]
				assert.Equal(t, int64(i+1), e.SequenceNumber, "gap-free")
				assert.Equal(t, w.typ, e.EventType, "event %d", i+1)
				assert.Equal(t, w.peer, e.PeerID, "event %d (%s) peer", i+1, e.EventType)
				assert.Equal(t, strconv.Itoa(w.pending), e.Metadata[resourcelease.MetaQueuePending], "event %d (%s) queue.pending", i+1, e.EventType)
				assert.Equal(t, strconv.Itoa(w.active), e.Metadata[resourcelease.MetaQueueActive], "event %d (%s) queue.active", i+1, e.EventType)
				for k, v := range w.extra {
					assert.Equal(t, v, e.Metadata[k], "event %d (%s) %s", i+1, e.EventType, k)
				}
				if e.EventType != resourcelease.EventFailed && e.EventType != resourcelease.EventDeadLettered {
					assert.NotContains(t, e.Metadata, resourcelease.MetaFailureRequeued)
				}
			}
			assert.Equal(t, "app.flaky", events[6].Error.Code)
			assert.Equal(t, "broken", events[8].Error.Message, "a fail without requeue is a Failed event with the worker's reason")
			assert.Equal(t, resourcelease.CodeLeaseExpired, events[14].Error.Code)
			assert.Equal(t, lb.OwnershipToken, *events[14].Ownership)
			assert.Equal(t, int64(len(want)), repl.LastSequence())

			wantSeqs := make([]int64, len(want))
			for i := range wantSeqs {
				wantSeqs[i] = int64(i + 1)
			}
			assert.Equal(t, wantSeqs, audit.sequences(), "the synchronous sink saw every event, in order")
			assert.Equal(t, int64(len(want)), coord.Recorded(), "one effect per event")
			rec, ok, err := coord.Effect(context.Background(), 10)
			require.NoError(t, err)
			require.True(t, ok)
			assert.Equal(t, string(resourcelease.EventDeadLettered), rec.Kind)
		})
	}
}

// ldFlakyStore is a StateStore whose TryAdd fails while failing is set.
type ldFlakyStore struct {
	*deterministic.MemoryStore
	mu      sync.Mutex
	failing bool
}

func (s *ldFlakyStore) TryAdd(ctx context.Context, key string, rec resourcelease.Record) (bool, error) {
	s.mu.Lock()
	failing := s.failing
	s.mu.Unlock()
	if failing {
		return false, errors.New("disk on fire")
	}
	return s.MemoryStore.TryAdd(ctx, key, rec)
}

func (s *ldFlakyStore) set(failing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = failing
}

// TestDispatcherSinkFailureReachesCaller: when a synchronous replication sink
// or the deterministic capture fails, the operation that produced the event
// returns an error naming the stage and the sequence; once the failure
// clears, the event is redelivered and applied once.
func TestDispatcherSinkFailureReachesCaller(t *testing.T) {
	for _, st := range ldStorages {
		for _, stage := range []string{"audit", "deterministic"} {
			t.Run(st.name+"/"+stage, func(t *testing.T) {
				clock := leasetest.NewManualClock(time.Time{})
				repl := st.open(t, t.TempDir(), clock)
				audit := &ldEventSink{}
				require.NoError(t, repl.AddSink("audit", audit, resourcelease.SinkOptions{Synchronous: true}))
				store := &ldFlakyStore{MemoryStore: deterministic.NewMemoryStore()}
				coord, err := deterministic.NewCoordinator(deterministic.Config{Store: store})
				require.NoError(t, err)
				f := newLD(t, resourcelease.DispatcherConfig{Clock: clock, Replicator: repl, Deterministic: coord, Logger: ldQuiet})
				ctx := context.Background()

				f.enqueue(t, "a")
				if stage == "audit" {
					audit.setFailing(errors.New("audit store down"))
				} else {
					store.set(true)
				}
				_, err = f.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ldItem("b")})
				require.Error(t, err)
				var e *resourcelease.Error
				require.ErrorAs(t, err, &e)
				assert.Equal(t, resourcelease.StatusUnavailable, e.Status)
				assert.Equal(t, resourcelease.CodeReplicationFailed, e.Code)
				assert.Equal(t, "sink:"+stage, e.Metadata[replication.MetaStage])
				assert.Equal(t, "2", e.Metadata[replication.MetaSequence])
				assert.Contains(t, err.Error(), strconv.Quote(stage))
				if stage == "deterministic" {
					assert.ErrorIs(t, err, &resourcelease.Error{Code: resourcelease.CodeDeterministicFailed}, "the coordinator's error is the cause")
					assert.Contains(t, err.Error(), "disk on fire")
				}

				audit.setFailing(nil)
				store.set(false)
				_, err = f.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ldItem("c")})
				require.NoError(t, err)
				assert.Equal(t, []int64{1, 2, 3}, audit.sequences(), "the failed event was redelivered before the next, once")
				assert.Equal(t, int64(3), coord.Recorded())
			})
		}
	}
}

// TestDispatcherRestartSQLite: with SQLite storage, pending items, live
// leases, dead letters and the sequences survive Close and a reopen; the
// worker's token still works after the restart; the deterministic store
// (deterministic.db) does not capture anything twice.
func TestDispatcherRestartSQLite(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	clock := leasetest.NewManualClock(time.Time{})
	type node struct {
		d       *resourcelease.LocalDispatcher
		repl    *replication.SQLiteReplicator
		db, ddb *sql.DB
		coord   *deterministic.Coordinator
		tracker *peerhealth.Tracker
		reg     *prometheus.Registry
	}
	start := func() node {
		t.Helper()
		var n node
		n.repl, n.db = ldOpenSQLite(t, dir, clock)
		var err error
		n.ddb, err = sqlitedb.Open(ctx, filepath.Join(dir, deterministic.DefaultFileName), sqlitedb.Config{})
		require.NoError(t, err)
		t.Cleanup(func() { n.ddb.Close() })
		store, err := deterministic.NewSQLiteStore(ctx, n.ddb, deterministic.SQLiteConfig{})
		require.NoError(t, err)
		t.Cleanup(func() { store.Close() }) // stops its checkpointer
		n.coord, err = deterministic.NewCoordinator(deterministic.Config{Store: store})
		require.NoError(t, err)
		n.tracker, err = peerhealth.New(peerhealth.Config{Clock: clock})
		require.NoError(t, err)
		n.reg = prometheus.NewPedanticRegistry()
		n.d, err = resourcelease.NewDispatcher(resourcelease.DispatcherConfig{
			Clock: clock, Replicator: n.repl, Deterministic: n.coord, PeerHealth: n.tracker, Registerer: n.reg,
			Queue: resourcelease.QueueConfig{LeaseDuration: 10 * time.Second, SweepInterval: time.Hour, MaxDeliveryAttempts: 3},
		})
		require.NoError(t, err)
		return n
	}
	stop := func(n node) {
		t.Helper()
		require.NoError(t, n.d.Close())
		require.NoError(t, n.repl.Close())
		require.NoError(t, n.db.Close())
		require.NoError(t, n.ddb.Close())
	}

	n := start()
	f := ldFixture{d: n.d, clock: clock}
	f.enqueue(t, "a", "b", "c", "d")
	held := f.lease(t, "w1") // a: still leased at the restart
	done := f.lease(t, "w1") // b: completed, must not come back
	err := n.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: done.OwnershipToken})
	require.NoError(t, err)
	dead := f.lease(t, "w1") // c: dead-lettered
	err = n.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: dead.OwnershipToken, Reason: "poison", DeadLetter: true})
	require.NoError(t, err)
	lastSeq := n.repl.LastSequence()
	recorded := n.coord.Recorded()
	require.Equal(t, lastSeq, recorded)
	stop(n)

	clock.Advance(5 * time.Second)
	n = start()
	f = ldFixture{d: n.d, clock: clock}
	st, err := n.d.Stats(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, resourcelease.Stats{PendingCount: 1, ActiveLeaseCount: 1, DeadLetterCount: 1}, *st)
	assert.Equal(t, 1.0, ldMetric(t, n.reg, resourcelease.MetricActiveLeases), "gauges start from the stored state")
	dl, err := n.d.DeadLetters(ctx, nil)
	require.NoError(t, err)
	require.Len(t, dl.Items, 1)
	assert.Equal(t, "c", dl.Items[0].Payload.ResourceID)

	// The lease taken before the restart is honoured: its worker heartbeats
	// and completes it with the old token.
	hb, err := n.d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: held.OwnershipToken})
	require.NoError(t, err)
	assert.Equal(t, clock.Now().Add(10*time.Second), hb.LeaseExpiresAt)
	s, ok := n.tracker.Snapshot("w1")
	require.True(t, ok, "the heartbeat told the new tracker about w1's lease")
	assert.Equal(t, 1, s.ActiveAssignments)
	err = n.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: held.OwnershipToken})
	require.NoError(t, err)

	// Sequences continue: the next item's id is above every earlier one
	// (item ids are unique and increasing, not gap-free), the event log goes
	// on gap-free at lastSeq+3.
	er, err := n.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ldItem("e")})
	require.NoError(t, err)
	assert.Greater(t, er.SequenceID, int64(4))
	assert.Equal(t, lastSeq+3, n.repl.LastSequence(), "heartbeat, complete, enqueue")
	assert.Equal(t, int64(3), n.coord.Recorded(), "only the new events were captured")
	got := []string{f.lease(t, "w2").Payload.ResourceID, f.lease(t, "w2").Payload.ResourceID}
	assert.Equal(t, []string{"d", "e"}, got, "b (completed) never came back")

	// A lease still live at a restart that its worker never renews expires
	// one lease duration after the restart and is requeued with attempt+1.
	stop(n)
	n = start()
	f = ldFixture{d: n.d, clock: clock}
	clock.Advance(10 * time.Second)
	n.d.Queue().Sweep()
	st, err = n.d.Stats(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, 2, st.PendingCount)
	assert.Equal(t, 2.0, ldMetric(t, n.reg, resourcelease.MetricExpired))
	again := f.lease(t, "w3")
	assert.Equal(t, 2, again.Attempt)
	stop(n)
}

// TestDispatcherRegistersReplicationCollectors: the replicator's and the
// coordinator's metrics families are served by the Dispatcher's registry.
func TestDispatcherRegistersReplicationCollectors(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	repl := ldStorages[0].open(t, "", clock)
	coord, err := deterministic.NewCoordinator(deterministic.Config{Store: deterministic.NewMemoryStore()})
	require.NoError(t, err)
	reg := prometheus.NewPedanticRegistry()
	f := newLD(t, resourcelease.DispatcherConfig{Clock: clock, Replicator: repl, Deterministic: coord, Registerer: reg})
	f.enqueue(t, "a")
	n, err := testutil.GatherAndCount(reg, "replication_last_sequence", "deterministic_effects_recorded_total")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, 1.0, ldMetric(t, reg, "replication_last_sequence"))
	assert.Equal(t, 1.0, ldMetric(t, reg, "deterministic_effects_recorded_total"))
}

// ldLoaderRepl is a Replicator whose LoadState fails.
type ldLoaderRepl struct {
	resourcelease.Replicator
	err error
}

func (r ldLoaderRepl) LoadState(context.Context) (*resourcelease.QueueState, error) {
	return nil, r.err
}

// TestNewDispatcherFailuresLeaveNothingBehind: a constructor that fails after
// registering metrics takes them back.
func TestNewDispatcherFailuresLeaveNothingBehind(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	otherTracker, err := peerhealth.New(peerhealth.Config{})
	require.NoError(t, err)
	tests := []struct {
		name  string
		cfg   func(t *testing.T, reg *prometheus.Registry) resourcelease.DispatcherConfig
		want  string
		isErr error
	}{
		{"load state fails", func(t *testing.T, _ *prometheus.Registry) resourcelease.DispatcherConfig {
			return resourcelease.DispatcherConfig{Replicator: ldLoaderRepl{Replicator: ldStorages[0].open(t, "", clock), err: resourcelease.ErrStorageUnavailable}}
		}, "load queue state", resourcelease.ErrStorageUnavailable},
		{"sink name taken", func(t *testing.T, _ *prometheus.Registry) resourcelease.DispatcherConfig {
			repl := ldStorages[0].open(t, "", clock)
			require.NoError(t, repl.AddSink(resourcelease.DeterministicSinkName, &ldEventSink{}, resourcelease.SinkOptions{}))
			return resourcelease.DispatcherConfig{Replicator: repl, Deterministic: &ldEventSink{}}
		}, "attach deterministic sink", nil},
		{"another tracker holds the peer health metrics", func(t *testing.T, reg *prometheus.Registry) resourcelease.DispatcherConfig {
			require.NoError(t, reg.Register(otherTracker))
			tracker, err := peerhealth.New(peerhealth.Config{})
			require.NoError(t, err)
			return resourcelease.DispatcherConfig{PeerHealth: tracker}
		}, "register peer health metrics", nil},
		{"bad initial state", func(t *testing.T, _ *prometheus.Registry) resourcelease.DispatcherConfig {
			it := *ldItem("a")
			return resourcelease.DispatcherConfig{Queue: resourcelease.QueueConfig{InitialState: &resourcelease.QueueState{
				Pending: []resourcelease.PendingItem{{Payload: it, SequenceID: 1}, {Payload: it, SequenceID: 1}}}}}
		}, "sequence id", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewPedanticRegistry()
			cfg := tt.cfg(t, reg)
			cfg.Registerer, cfg.Clock, cfg.Logger = reg, clock, ldQuiet
			d, err := resourcelease.NewDispatcher(cfg)
			require.Error(t, err)
			assert.Nil(t, d)
			assert.Contains(t, err.Error(), tt.want)
			if tt.isErr != nil {
				assert.ErrorIs(t, err, tt.isErr)
			}
			n, err := testutil.GatherAndCount(reg, ldAllMetrics...)
			require.NoError(t, err)
			assert.Zero(t, n, "no dispatcher metrics left registered")
		})
	}
}
