package resourcelease_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ldMetric returns the value of the unlabelled metric name in g: a gauge's or
// counter's value, a histogram's sample count.
func ldMetric(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		require.Len(t, mf.GetMetric(), 1, name)
		m := mf.GetMetric()[0]
		switch mf.GetType() {
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue()
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue()
		case dto.MetricType_HISTOGRAM:
			return float64(m.GetHistogram().GetSampleCount())
		}
		t.Fatalf("%s has unexpected type %v", name, mf.GetType())
	}
	t.Fatalf("metric %s not gathered", name)
	return 0
}

// ldHoldSum returns the sum of the lease hold histogram.
func ldHoldSum(t *testing.T, g prometheus.Gatherer) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() == resourcelease.MetricLeaseHold {
			return mf.GetMetric()[0].GetHistogram().GetSampleSum()
		}
	}
	t.Fatal("no hold histogram")
	return 0
}

var ldAllMetrics = []string{
	resourcelease.MetricPendingItems, resourcelease.MetricActiveLeases, resourcelease.MetricDeadLetters,
	resourcelease.MetricEnqueued, resourcelease.MetricLeased, resourcelease.MetricCompleted,
	resourcelease.MetricFailed, resourcelease.MetricRequeued, resourcelease.MetricExpired,
	resourcelease.MetricDeadLettered, resourcelease.MetricHeartbeats, resourcelease.MetricLeaseHold,
	resourcelease.MetricReleased,
}

// TestMetricsMoveWithOperations runs one operation per step on a pedantic
// registry and checks every metric after each.
func TestMetricsMoveWithOperations(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	f := newLD(t, resourcelease.DispatcherConfig{Registerer: reg,
		Queue: resourcelease.QueueConfig{LeaseDuration: 10 * time.Second, MaxDeliveryAttempts: 2}})
	ctx := context.Background()
	d := f.d

	type counts struct {
		pending, active, dead                                      float64
		enq, leased, completed, failed, requeued, expired, dlq, hb float64
		released                                                   float64
		holds                                                      float64
		holdSum                                                    float64
	}
	var l *resourcelease.Lease
	steps := []struct {
		name string
		do   func(t *testing.T)
		want counts
	}{
		{"start", func(*testing.T) {}, counts{}},
		{"enqueue three", func(t *testing.T) { f.enqueue(t, "a", "b", "c") }, counts{pending: 3, enq: 3}},
		{"duplicate request id is not an enqueue", func(t *testing.T) {
			it := ldItem("a")
			it.RequestID = "r1"
			_, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: it})
			require.NoError(t, err)
			_, err = d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: it})
			require.NoError(t, err)
		}, counts{pending: 4, enq: 4}},
		{"lease", func(t *testing.T) { l = f.lease(t, "w") }, counts{pending: 3, active: 1, enq: 4, leased: 1}},
		{"heartbeat", func(t *testing.T) {
			f.clock.Advance(2 * time.Second)
			_, err := d.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: l.OwnershipToken})
			require.NoError(t, err)
		}, counts{pending: 3, active: 1, enq: 4, leased: 1, hb: 1}},
		{"complete after 3s", func(t *testing.T) {
			f.clock.Advance(time.Second)
			err := d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
			require.NoError(t, err)
		}, counts{pending: 3, enq: 4, leased: 1, hb: 1, completed: 1, holds: 1, holdSum: 3}},
		{"fail with requeue after 1s", func(t *testing.T) {
			l = f.lease(t, "w") // b
			f.clock.Advance(time.Second)
			err := d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken})
			require.NoError(t, err)
		}, counts{pending: 3, enq: 4, leased: 2, hb: 1, completed: 1, failed: 1, requeued: 1, holds: 2, holdSum: 4}},
		{"fail without requeue after 2s", func(t *testing.T) {
			l = f.lease(t, "w") // b again, attempt 2
			f.clock.Advance(2 * time.Second)
			err := d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, DeadLetter: true})
			require.NoError(t, err)
		}, counts{pending: 2, dead: 1, enq: 4, leased: 3, hb: 1, completed: 1, failed: 2, requeued: 1, dlq: 1, holds: 3, holdSum: 6}},
		{"expiry requeues after the 10s lease", func(t *testing.T) {
			l = f.lease(t, "w") // c
			f.clock.Advance(10 * time.Second)
			d.Queue().Sweep()
		}, counts{pending: 2, dead: 1, enq: 4, leased: 4, hb: 1, completed: 1, failed: 2, requeued: 1, expired: 1, dlq: 1, holds: 4, holdSum: 16}},
		{"expiry on the last attempt dead-letters: expired, not failed", func(t *testing.T) {
			l = f.lease(t, "w") // c, attempt 2
			require.Equal(t, 2, l.Attempt)
			f.clock.Advance(10 * time.Second)
			// The token presented after expiry expires the lease lazily.
			err := d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken})
			require.ErrorIs(t, err, resourcelease.ErrUnknownToken)
		}, counts{pending: 1, dead: 2, enq: 4, leased: 5, hb: 1, completed: 1, failed: 2, requeued: 1, expired: 2, dlq: 2, holds: 5, holdSum: 26}},
		{"fail with requeue on the last attempt dead-letters: failed", func(t *testing.T) {
			l = f.lease(t, "w") // a (r1)
			err := d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken})
			require.NoError(t, err)
			l = f.lease(t, "w")
			err = d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken})
			require.NoError(t, err)
		}, counts{dead: 3, enq: 4, leased: 7, hb: 1, completed: 1, failed: 4, requeued: 2, expired: 2, dlq: 3, holds: 7, holdSum: 26}},
		{"redrive and purge move only the gauges", func(t *testing.T) {
			_, err := d.Redrive(ctx, &resourcelease.RedriveRequest{SequenceIDs: []int64{4}})
			require.NoError(t, err)
			_, err = d.Purge(ctx, &resourcelease.PurgeRequest{All: true})
			require.NoError(t, err)
		}, counts{pending: 1, enq: 4, leased: 7, hb: 1, completed: 1, failed: 4, requeued: 2, expired: 2, dlq: 3, holds: 7, holdSum: 26}},
		{"drain and restore move only the gauges", func(t *testing.T) {
			dr, err := d.Drain(ctx, nil)
			require.NoError(t, err)
			assert.Zero(t, ldMetric(t, reg, resourcelease.MetricPendingItems))
			_, err = d.Restore(ctx, &resourcelease.RestoreRequest{Items: dr.Items})
			require.NoError(t, err)
		}, counts{pending: 1, enq: 4, leased: 7, hb: 1, completed: 1, failed: 4, requeued: 2, expired: 2, dlq: 3, holds: 7, holdSum: 26}},
		{"release after 1s", func(t *testing.T) {
			l = f.lease(t, "w")
			f.clock.Advance(time.Second)
			require.NoError(t, d.Release(ctx, &resourcelease.ReleaseRequest{OwnershipToken: l.OwnershipToken}))
		}, counts{pending: 1, enq: 4, leased: 8, hb: 1, completed: 1, failed: 4, requeued: 2, expired: 2, dlq: 3, released: 1, holds: 8, holdSum: 27}},
	}
	for _, st := range steps {
		st.do(t)
		got := counts{
			pending:   ldMetric(t, reg, resourcelease.MetricPendingItems),
			active:    ldMetric(t, reg, resourcelease.MetricActiveLeases),
			dead:      ldMetric(t, reg, resourcelease.MetricDeadLetters),
			enq:       ldMetric(t, reg, resourcelease.MetricEnqueued),
			leased:    ldMetric(t, reg, resourcelease.MetricLeased),
			completed: ldMetric(t, reg, resourcelease.MetricCompleted),
			failed:    ldMetric(t, reg, resourcelease.MetricFailed),
			requeued:  ldMetric(t, reg, resourcelease.MetricRequeued),
			expired:   ldMetric(t, reg, resourcelease.MetricExpired),
			dlq:       ldMetric(t, reg, resourcelease.MetricDeadLettered),
			hb:        ldMetric(t, reg, resourcelease.MetricHeartbeats),
			released:  ldMetric(t, reg, resourcelease.MetricReleased),
			holds:     ldMetric(t, reg, resourcelease.MetricLeaseHold),
			holdSum:   ldHoldSum(t, reg),
		}
		require.Equal(t, st.want, got, "after %q", st.name)
	}
	n, err := testutil.GatherAndCount(reg, ldAllMetrics...)
	require.NoError(t, err)
	assert.Equal(t, len(ldAllMetrics), n, "one series per family, no labels")
	problems, err := testutil.GatherAndLint(reg) // names with units, help text
	require.NoError(t, err)
	assert.Empty(t, problems)
}

// TestMetricsExposition pins the exposition of a few families.
func TestMetricsExposition(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	f := newLD(t, resourcelease.DispatcherConfig{Registerer: reg})
	f.enqueue(t, "a", "b")
	l := f.lease(t, "w")
	f.clock.Advance(40 * time.Millisecond)
	err := f.d.Complete(context.Background(), &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken})
	require.NoError(t, err)
	want := `
# HELP resourcelease_pending_items Items waiting to be leased, ready or delayed.
# TYPE resourcelease_pending_items gauge
resourcelease_pending_items 1
# HELP resourcelease_completed_total Leases completed.
# TYPE resourcelease_completed_total counter
resourcelease_completed_total 1
# HELP resourcelease_lease_hold_seconds Seconds from a lease's grant to the completion, failure or expiry that ended it.
# TYPE resourcelease_lease_hold_seconds histogram
resourcelease_lease_hold_seconds_bucket{le="0.005"} 0
resourcelease_lease_hold_seconds_bucket{le="0.01"} 0
resourcelease_lease_hold_seconds_bucket{le="0.025"} 0
resourcelease_lease_hold_seconds_bucket{le="0.05"} 1
resourcelease_lease_hold_seconds_bucket{le="0.1"} 1
resourcelease_lease_hold_seconds_bucket{le="0.25"} 1
resourcelease_lease_hold_seconds_bucket{le="0.5"} 1
resourcelease_lease_hold_seconds_bucket{le="1"} 1
resourcelease_lease_hold_seconds_bucket{le="2.5"} 1
resourcelease_lease_hold_seconds_bucket{le="5"} 1
resourcelease_lease_hold_seconds_bucket{le="10"} 1
resourcelease_lease_hold_seconds_bucket{le="30"} 1
resourcelease_lease_hold_seconds_bucket{le="60"} 1
resourcelease_lease_hold_seconds_bucket{le="120"} 1
resourcelease_lease_hold_seconds_bucket{le="300"} 1
resourcelease_lease_hold_seconds_bucket{le="600"} 1
resourcelease_lease_hold_seconds_bucket{le="+Inf"} 1
resourcelease_lease_hold_seconds_sum 0.04
resourcelease_lease_hold_seconds_count 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want),
		resourcelease.MetricPendingItems, resourcelease.MetricCompleted, resourcelease.MetricLeaseHold))
}

// TestMetricsSeparateRegistries: two dispatchers on two registries do not
// collide and count independently; a second one on the same registry is an
// error that leaves the first one's metrics intact; Close unregisters, so a
// replacement can register.
func TestMetricsSeparateRegistries(t *testing.T) {
	reg1, reg2 := prometheus.NewPedanticRegistry(), prometheus.NewPedanticRegistry()
	f1 := newLD(t, resourcelease.DispatcherConfig{Registerer: reg1})
	f2 := newLD(t, resourcelease.DispatcherConfig{Registerer: reg2})
	f1.enqueue(t, "a", "b")
	f2.enqueue(t, "c")
	assert.Equal(t, 2.0, ldMetric(t, reg1, resourcelease.MetricEnqueued))
	assert.Equal(t, 1.0, ldMetric(t, reg2, resourcelease.MetricEnqueued))

	clash, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Registerer: reg1})
	require.Error(t, err)
	assert.Nil(t, clash)
	assert.Contains(t, err.Error(), "register queue metrics")
	assert.Equal(t, 2.0, ldMetric(t, reg1, resourcelease.MetricEnqueued), "the first dispatcher's metrics survive")

	// With distinct labels two dispatchers share one registry.
	reg3 := prometheus.NewPedanticRegistry()
	newLD(t, resourcelease.DispatcherConfig{Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"queue": "x"}, reg3)}).enqueue(t, "x")
	newLD(t, resourcelease.DispatcherConfig{Registerer: prometheus.WrapRegistererWith(prometheus.Labels{"queue": "y"}, reg3)})
	n, err := testutil.GatherAndCount(reg3, resourcelease.MetricEnqueued)
	require.NoError(t, err)
	assert.Equal(t, 2, n)

	require.NoError(t, f1.d.Close())
	n, err = testutil.GatherAndCount(reg1)
	require.NoError(t, err)
	assert.Zero(t, n, "Close unregistered everything")
	again, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Registerer: reg1})
	require.NoError(t, err)
	require.NoError(t, again.Close())
}

// TestMetricsRegisterParts: a part that is a prometheus.Collector (here the
// peer-health tracker) is registered with the Dispatcher's metrics and
// unregistered by Close; one the caller registered itself is accepted.
func TestMetricsRegisterParts(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	tracker, err := peerhealth.New(peerhealth.Config{Clock: clock})
	require.NoError(t, err)

	reg := prometheus.NewPedanticRegistry()
	f := newLD(t, resourcelease.DispatcherConfig{Registerer: reg, PeerHealth: tracker, Clock: clock})
	f.enqueue(t, "a")
	f.lease(t, "w1")
	n, err := testutil.GatherAndCount(reg, "peerhealth_assignments_total")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, 1.0, ldMetric(t, reg, "peerhealth_assignments_total"))
	assert.Positive(t, testutil.CollectAndCount(tracker))
	require.NoError(t, f.d.Close())
	n, err = testutil.GatherAndCount(reg)
	require.NoError(t, err)
	assert.Zero(t, n)

	// Registered by its owner first: fine, and still registered after Close.
	reg2 := prometheus.NewPedanticRegistry()
	require.NoError(t, reg2.Register(tracker))
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Registerer: reg2, PeerHealth: tracker, Clock: clock})
	require.NoError(t, err)
	require.NoError(t, d.Close())
	assert.True(t, reg2.Unregister(tracker), "the owner's registration was left alone")
}

// TestMetricsStartFromRestoredState: the gauges start at the rebuilt queue's
// counts, not at zero.
func TestMetricsStartFromRestoredState(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	it := *ldItem("a")
	st := &resourcelease.QueueState{
		Pending:        []resourcelease.PendingItem{{Payload: it, SequenceID: 1, Attempt: 1, EnqueuedAt: now}, {Payload: it, SequenceID: 2, Attempt: 1, EnqueuedAt: now}},
		DeadLetters:    []resourcelease.DeadLetter{{PendingItem: resourcelease.PendingItem{Payload: it, SequenceID: 3, Attempt: 5}, DeadLetteredAt: now}},
		NextSequenceID: 4,
	}
	newLD(t, resourcelease.DispatcherConfig{Registerer: reg, Queue: resourcelease.QueueConfig{InitialState: st}})
	assert.Equal(t, 2.0, ldMetric(t, reg, resourcelease.MetricPendingItems))
	assert.Equal(t, 1.0, ldMetric(t, reg, resourcelease.MetricDeadLetters))
	assert.Zero(t, ldMetric(t, reg, resourcelease.MetricEnqueued))
}
