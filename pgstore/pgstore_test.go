package pgstore_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/pgstore"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

var quiet = slog.New(slog.DiscardHandler)

func item(id string) resourcelease.Item {
	return resourcelease.Item{ResourceType: "order", ResourceID: id, PartitionKey: "tenant-1", PayloadEncoding: "json"}
}

type node struct {
	d   *leasemesh.Dispatcher
	reg *prometheus.Registry
	srv *httptest.Server
}

func open(t *testing.T, url string, q resourcelease.QueueConfig) *node {
	t.Helper()
	reg := prometheus.NewRegistry()
	d, err := leasemesh.Open(context.Background(), leasemesh.Config{
		Storage: pgstore.URLWith(url, pgstore.Config{Queue: postgres.QueueConfig{PollInterval: 50 * time.Millisecond}}),
		Queue:   q, Logger: quiet, Registerer: reg,
	})
	require.NoError(t, err)
	srv := httptest.NewServer(d.ControlHandler())
	t.Cleanup(func() {
		srv.Close()
		require.NoError(t, d.Close())
	})
	return &node{d: d, reg: reg, srv: srv}
}

// replication reads a dispatcher's control-plane replication page.
func (n *node) replication(t *testing.T, since int64) control.ReplicationPage {
	t.Helper()
	resp, err := http.Get(n.srv.URL + control.DefaultPrefix + "/replication?since=" + itoa(since) + "&limit=1000")
	require.NoError(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	var page control.ReplicationPage
	require.NoError(t, json.Unmarshal(body, &page))
	return page
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// TestTwoDispatchersOneQueue: two dispatchers on one database are one
// queue: a token from A works on B, each counts its own calls and the
// mesh's events, a worker leasing through A is healthy on B, the
// replication view is the same from both, and every event's effect is
// recorded once in the database.
func TestTwoDispatchersOneQueue(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a, b := open(t, url, resourcelease.QueueConfig{}), open(t, url, resourcelease.QueueConfig{})

	for _, id := range []string{"x", "y"} {
		_, err := resourcelease.Enqueue(ctx, a.d, item(id), nil)
		require.NoError(t, err)
	}
	l, err := a.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "worker-a"})
	require.NoError(t, err)
	require.NotNil(t, l)
	require.Equal(t, "x", l.Payload.ResourceID, "FIFO across dispatchers")
	require.NoError(t, b.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}), "A's token is honoured by B")
	require.ErrorIs(t, a.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}), resourcelease.ErrUnknownToken)

	last := a.d.Events().LastSequence()
	require.Equal(t, int64(4), last, "Enqueue ×2, LeaseGranted, Completed")
	pa, pb := a.replication(t, 0), b.replication(t, 0)
	require.Len(t, pa.Events, 4)
	require.Equal(t, pa.Events, pb.Events, "the replication view is the same from every dispatcher")
	for i, e := range pa.Events {
		require.Equal(t, int64(i+1), e.SequenceNumber, "gap-free")
	}

	// Counters are each dispatcher's own: B completed, A did not.
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(counter(t, b.reg, resourcelease.MetricCompleted)) == 1
	}, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, 0.0, testutil.ToFloat64(counter(t, a.reg, resourcelease.MetricCompleted)))
	require.Equal(t, 1.0, testutil.ToFloat64(counter(t, a.reg, resourcelease.MetricLeased)))

	// The mesh's view follows the log, on both.
	for _, n := range []*node{a, b} {
		require.Eventually(t, func() bool {
			snap, ok := n.d.PeerHealth().Snapshot("worker-a")
			return ok && snap.IsHealthy && meshEvents(n.reg, "Completed") == 1 && len(n.d.RecentEvents().Events()) == 4
		}, 5*time.Second, 10*time.Millisecond)
		require.Equal(t, 1.0, testutil.ToFloat64(counter(t, n.reg, resourcelease.MetricMeshPendingItems)))
		bl, err := n.d.Backlog(ctx, 0)
		require.NoError(t, err)
		require.False(t, bl.OldestReadySince.IsZero(), "one item is ready")
		require.NoError(t, n.d.Ready(ctx))
	}

	// Deterministic capture: each event's effect, written in its
	// transaction.
	q := a.d.Store().(*pgstore.Queue)
	for seq := int64(1); seq <= last; seq++ {
		rec, ok, err := q.Store().StateStore().Get(ctx, "resourcelease/seq/"+itoa(seq))
		require.NoError(t, err)
		require.True(t, ok, "effect of event %d", seq)
		require.Equal(t, string(pa.Events[seq-1].EventType), rec.Kind)
	}
	// And its counts are registered: each process counts the effects its
	// own transactions recorded.
	recorded := testutil.ToFloat64(counter(t, a.reg, "deterministic_effects_recorded_total")) +
		testutil.ToFloat64(counter(t, b.reg, "deterministic_effects_recorded_total"))
	require.Equal(t, float64(last), recorded)
}

func TestQueueConfigTranslation(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   resourcelease.QueueConfig
		bad  string
	}{
		{"max dedupe entries", resourcelease.QueueConfig{MaxDedupeEntries: 5}, "MaxDedupeEntries"},
		{"journal", resourcelease.QueueConfig{Journal: resourcelease.JournalFunc(func(*resourcelease.Change) resourcelease.Ack { return nil })}, "Journal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pgstore.QueueConfig(tc.in, postgres.QueueConfig{})
			require.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
			require.Contains(t, err.Error(), tc.bad)
			if tc.bad != "Journal" {
				require.Equal(t, tc.bad, resourcelease.AsError(err).Metadata["setting"])
			}
		})
	}
	got, err := pgstore.QueueConfig(resourcelease.QueueConfig{
		Capacity: 7, FullMode: resourcelease.FullReject, LeaseDuration: time.Minute, HeartbeatInterval: time.Second,
		SweepInterval: 2 * time.Second, RequeueDelay: time.Second, MaxRequeueDelay: time.Hour, MaxDeliveryAttempts: 9,
		MaxReleases: 3, DedupeWindow: time.Hour, MaxDedupeEntries: -1, DelayedCapacity: 11, MaxDeadLetters: 12,
		MaxActivePerPartition: 1, Fairness: resourcelease.FairnessPartitions, DeadLetterRetention: time.Hour,
	}, postgres.QueueConfig{EventRetention: 42, Capacity: 1})
	require.NoError(t, err)
	require.Equal(t, postgres.QueueConfig{
		Capacity: 7, FullMode: resourcelease.FullReject, LeaseDuration: time.Minute, HeartbeatInterval: time.Second,
		SweepInterval: 2 * time.Second, RequeueDelay: time.Second, MaxRequeueDelay: time.Hour, MaxDeliveryAttempts: 9,
		MaxReleases: 3, DedupeWindow: time.Hour, EventRetention: 42, DelayedCapacity: 11, MaxDeadLetters: 12,
		MaxActivePerPartition: 1, Fairness: resourcelease.FairnessPartitions, DeadLetterRetention: time.Hour,
	}, got, "every queue setting reaches the Postgres queue")
}

// TestOpenErrors: a bad URL is invalid-argument, a server that is not
// there is unavailable, both one line.
func TestOpenErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := leasemesh.Open(ctx, leasemesh.Config{Storage: pgstore.URL("postgres://%zz"), Logger: quiet})
	require.ErrorIs(t, err, resourcelease.ErrInvalidArgument)
	require.NotContains(t, err.Error(), "\n")

	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	_, err = leasemesh.Open(ctx, leasemesh.Config{Storage: pgstore.URLWith("postgres://u:secret@"+addr+"/db?connect_timeout=2", pgstore.Config{}), Logger: quiet})
	require.Error(t, err)
	require.Equal(t, resourcelease.StatusUnavailable, resourcelease.AsError(err).Status, "%v", err)
	require.NotContains(t, err.Error(), "secret")
	require.NotContains(t, err.Error(), "\n")
}

func counter(t *testing.T, reg *prometheus.Registry, name string) prometheus.Collector {
	t.Helper()
	return family{reg, name}
}

// family is one unlabelled metric of a registry as a Collector, for
// testutil.ToFloat64 (0 when absent).
type family struct {
	reg  *prometheus.Registry
	name string
}

func (f family) Describe(chan<- *prometheus.Desc) {}
func (f family) Collect(ch chan<- prometheus.Metric) {
	v := 0.0
	mfs, _ := f.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == f.name && len(mf.GetMetric()) > 0 {
			m := mf.GetMetric()[0]
			v = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(f.name, "", nil, nil), prometheus.GaugeValue, v)
}

func meshEvents(reg *prometheus.Registry, typ string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != resourcelease.MetricMeshEvents {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "type" && lp.GetValue() == typ {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestEnqueueTxCapturesInTheTransaction: through a dispatcher's queue, an
// enqueue in a QueueTx: its event and its deterministic effect commit with the caller's
// transaction or not at all, and the dispatchers see the committed item.
func TestEnqueueTxCapturesInTheTransaction(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a, b := open(t, url, resourcelease.QueueConfig{}), open(t, url, resourcelease.QueueConfig{})
	q := a.d.Store().(*pgstore.Queue)
	state := q.Store().StateStore()
	pool := q.Store().Pool()

	tx, err := pool.Begin(ctx)
	require.NoError(t, err)
	qt, err := q.Tx(ctx, tx)
	require.NoError(t, err)
	require.NoError(t, qt.Enqueue(ctx, item("rolled-back")))
	_, err = qt.Finish(ctx)
	require.NoError(t, err)
	require.NoError(t, tx.Rollback(ctx))
	_, ok, err := state.Get(ctx, "resourcelease/seq/1")
	require.NoError(t, err)
	require.False(t, ok, "a rolled-back enqueue left its effect")

	tx, err = pool.Begin(ctx)
	require.NoError(t, err)
	qt, err = q.Tx(ctx, tx)
	require.NoError(t, err)
	require.NoError(t, qt.Enqueue(ctx, item("committed")))
	res, err := qt.Finish(ctx)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	rec, ok, err := state.Get(ctx, "resourcelease/seq/1")
	require.NoError(t, err)
	require.True(t, ok, "the committed enqueue's effect is recorded, as event 1: no gap from the rollback")
	require.Equal(t, string(resourcelease.EventEnqueue), rec.Kind)

	l, err := b.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	require.NotNil(t, l)
	require.Equal(t, res[0].SequenceID, l.SequenceID)
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		qt, err := q.Tx(ctx, tx)
		if err != nil {
			return err
		}
		if err := qt.Complete(ctx, l.OwnershipToken); err != nil {
			return err
		}
		_, err = qt.Finish(ctx)
		return err
	}))
	st, err := b.d.Stats(ctx, nil)
	require.NoError(t, err)
	require.Zero(t, st.ActiveLeaseCount+st.PendingCount)
}

// TestEveryProcedureOnAnyDispatcher: the admin procedures and the settles
// work on any dispatcher of the mesh, on the one queue.
func TestEveryProcedureOnAnyDispatcher(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a, b, c := open(t, url, resourcelease.QueueConfig{}), open(t, url, resourcelease.QueueConfig{}), open(t, url, resourcelease.QueueConfig{})
	for _, id := range []string{"p", "q", "r"} {
		_, err := resourcelease.Enqueue(ctx, a.d, item(id), nil)
		require.NoError(t, err)
	}
	// A drain on B drains the queue for all; a restore on C puts it back.
	dr, err := b.d.Drain(ctx, nil)
	require.NoError(t, err)
	require.Len(t, dr.Items, 3)
	st, err := a.d.Stats(ctx, nil)
	require.NoError(t, err)
	require.Zero(t, st.PendingCount, "a drain through B drained A's view")
	rr, err := c.d.Restore(ctx, &resourcelease.RestoreRequest{Items: dr.Items})
	require.NoError(t, err)
	require.Equal(t, 3, rr.RestoredCount)

	// Lease on A, heartbeat on B, fail to the dead letters on C.
	l, err := a.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	require.NotNil(t, l)
	require.Equal(t, "p", l.Payload.ResourceID, "restored items keep their place")
	_, err = b.d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: l.OwnershipToken})
	require.NoError(t, err)
	require.NoError(t, c.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, Reason: "poison", DeadLetter: true}))
	dl, err := a.d.DeadLetters(ctx, nil)
	require.NoError(t, err)
	require.Len(t, dl.Items, 1)
	red, err := b.d.Redrive(ctx, &resourcelease.RedriveRequest{All: true})
	require.NoError(t, err)
	require.Equal(t, 1, red.RedrivenCount)

	// Release on B of a lease from C; then dead-letter and purge on A.
	l2, err := c.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	require.NoError(t, b.d.Release(ctx, &resourcelease.ReleaseRequest{OwnershipToken: l2.OwnershipToken}))
	l3, err := a.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	require.Equal(t, l2.SequenceID, l3.SequenceID, "a released item is leased again first")
	require.Equal(t, l2.Attempt, l3.Attempt, "a release does not count the attempt")
	require.NoError(t, a.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l3.OwnershipToken, DeadLetter: true}))
	pr, err := c.d.Purge(ctx, &resourcelease.PurgeRequest{All: true})
	require.NoError(t, err)
	require.Equal(t, 1, pr.PurgedCount)

	// One log, the same on every dispatcher.
	last := a.d.Events().LastSequence()
	for _, n := range []*node{a, b, c} {
		page := n.replication(t, 0)
		require.Len(t, page.Events, int(last))
		require.Equal(t, a.replication(t, 0).Events, page.Events)
	}
}

// TestOperatorReadsOnAnyDispatcher: the operator console's lists and item
// detail work on Postgres, through the control plane of any dispatcher:
// items enqueued and leased through A are listed and read through B.
func TestOperatorReadsOnAnyDispatcher(t *testing.T) {
	ctx := context.Background()
	url := pgtest.NewDatabase(t)
	a, b := open(t, url, resourcelease.QueueConfig{}), open(t, url, resourcelease.QueueConfig{})
	for _, id := range []string{"p", "q", "r"} {
		_, err := resourcelease.Enqueue(ctx, a.d, item(id), map[string]string{"id": id})
		require.NoError(t, err)
	}
	l, err := a.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "worker-a"})
	require.NoError(t, err)
	require.NotNil(t, l)

	get := func(path string, into any) {
		t.Helper()
		resp, err := http.Get(b.srv.URL + control.DefaultPrefix + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		require.NoError(t, json.Unmarshal(body, into))
	}
	var pending, leased resourcelease.ListItemsResponse
	get("/items?state=pending&limit=1", &pending)
	require.Len(t, pending.Items, 1)
	require.Equal(t, "q", pending.Items[0].Payload.ResourceID)
	require.Nil(t, pending.Items[0].Payload.Body, "a listing carries no body")
	require.Equal(t, len(`{"id":"q"}`), pending.Items[0].BodySize)
	require.Equal(t, pending.Items[0].SequenceID, pending.NextAfter)
	get("/items?state=leased", &leased)
	require.Len(t, leased.Items, 1)
	require.Equal(t, "worker-a", leased.Items[0].LeaseOwner)

	var detail control.ItemDetail
	get("/items/"+itoa(l.SequenceID), &detail)
	require.Equal(t, resourcelease.ItemLeased, detail.Item.State)
	require.Equal(t, `{"id":"p"}`, string(detail.Item.Payload.Body))
	require.NotEmpty(t, detail.Events, "the detail has the item's events")

	resp, err := http.Get(b.srv.URL + control.DefaultPrefix + "/items/999")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNotFound, resp.StatusCode)
}
