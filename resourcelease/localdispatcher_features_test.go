package resourcelease_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDispatcherDelay: an enqueue's Delay becomes the item's NotBefore
// (unless the payload's own is later), the response echoes it, and a
// negative delay is refused.
func TestDispatcherDelay(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		delay     time.Duration
		notBefore time.Duration // from now, on the payload; 0 none
		want      time.Duration // the echoed notBefore, from now; 0 none
		status    resourcelease.Status
	}{
		{"no delay", 0, 0, 0, ""},
		{"delay", 10 * time.Second, 0, 10 * time.Second, ""},
		{"the payload's later notBefore wins", 10 * time.Second, time.Minute, time.Minute, ""},
		{"the later delay wins", time.Minute, 10 * time.Second, time.Minute, ""},
		{"negative delay", -time.Millisecond, 0, 0, resourcelease.StatusInvalidArgument},
		{"delay beyond MaxDuration", resourcelease.MaxDuration + time.Hour, 0, 0, resourcelease.StatusInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newLD(t, resourcelease.DispatcherConfig{})
			now := f.clock.Now()
			it := ldItem("x")
			if tt.notBefore > 0 {
				it.NotBefore = now.Add(tt.notBefore)
			}
			resp, err := f.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: it, Delay: tt.delay})
			if tt.status != "" {
				assert.Equal(t, tt.status, resourcelease.StatusOf(err), "%v", err)
				st, _ := f.d.Stats(ctx, nil)
				assert.Equal(t, 0, st.PendingCount)
				return
			}
			require.NoError(t, err)
			if tt.want == 0 {
				assert.True(t, resp.NotBefore.IsZero(), "echoed %v", resp.NotBefore)
				f.lease(t, "w")
				return
			}
			assert.True(t, resp.NotBefore.Equal(now.Add(tt.want)), "echoed %v, want %v", resp.NotBefore, now.Add(tt.want))
			l, err := f.d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
			require.NoError(t, err)
			assert.Nil(t, l, "leased before its time")
			f.clock.Advance(tt.want)
			f.d.Queue().Sweep()
			l = f.lease(t, "w")
			assert.True(t, l.Payload.NotBefore.Equal(now.Add(tt.want)))
		})
	}
	t.Run("batch", func(t *testing.T) {
		f := newLD(t, resourcelease.DispatcherConfig{})
		now := f.clock.Now()
		resp, err := f.d.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{*ldItem("a"), *ldItem("b")}, Delay: time.Second})
		require.NoError(t, err)
		for _, r := range resp.Results {
			require.NoError(t, r.Err)
			assert.True(t, r.NotBefore.Equal(now.Add(time.Second)), "echoed %v", r.NotBefore)
		}
		_, err = f.d.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{*ldItem("c")}, Delay: -time.Second})
		assert.Equal(t, resourcelease.StatusInvalidArgument, resourcelease.StatusOf(err))
		st, err := f.d.Stats(ctx, nil)
		require.NoError(t, err)
		assert.Equal(t, resourcelease.Stats{PendingCount: 2, DelayedCount: 2}, *st)
	})
}

// TestDispatcherDelayedItemsDoNotHoldBackpressure: backpressure counts the
// ready and leased items; work scheduled for later does not turn it on.
func TestDispatcherDelayedItemsDoNotHoldBackpressure(t *testing.T) {
	clock := leasetest.NewManualClock(time.Time{})
	m := newMonitor(t, backpressure.Config{HighWatermark: 2, Mode: backpressure.ModeReject, Clock: clock})
	f := newLD(t, resourcelease.DispatcherConfig{Clock: clock, Backpressure: m})
	ctx := context.Background()
	for i := range 5 {
		_, err := f.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ldItem(fmt.Sprint("later-", i)), Delay: time.Hour})
		require.NoError(t, err)
	}
	assert.False(t, f.active(t), "five delayed items")
	f.enqueue(t, "a")
	f.lease(t, "w")
	f.enqueue(t, "b")
	assert.Eventually(t, func() bool { return f.active(t) }, 10*time.Second, time.Millisecond, "one leased and one ready item reach the high watermark")
}

// gaugeVec returns the values of a labelled gauge by its one label's value.
func gaugeVec(t *testing.T, g prometheus.Gatherer, name string) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetGauge().GetValue()
			if mf.GetType() == dto.MetricType_COUNTER {
				v = m.GetCounter().GetValue()
			}
			out[m.GetLabel()[0].GetValue()] = v
		}
	}
	return out
}

// TestDispatcherBacklogMetrics: the delayed-item gauge, the ready items of
// the top partitions (at most BacklogMetricPartitions of them), the count of
// partitions with ready items, the age of the oldest ready item and the
// purged dead letters.
func TestDispatcherBacklogMetrics(t *testing.T) {
	for _, strict := range []int{0, 1} {
		t.Run(fmt.Sprint("MaxActivePerPartition=", strict), func(t *testing.T) {
			ctx := context.Background()
			reg := prometheus.NewPedanticRegistry()
			f := newLD(t, resourcelease.DispatcherConfig{Registerer: reg, Queue: resourcelease.QueueConfig{MaxActivePerPartition: strict, MaxDeadLetters: 1}})
			assert.Equal(t, 0.0, ldMetric(t, reg, resourcelease.MetricOldestReadyAge), "nothing ready")
			enqueue := func(p string, n int) {
				for i := range n {
					it := ldItem(fmt.Sprint(p, "-", i))
					it.PartitionKey = p
					_, err := f.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: it})
					require.NoError(t, err)
				}
			}
			for i := range 12 {
				enqueue(fmt.Sprintf("p%02d", i), 1)
			}
			enqueue("big", 3)
			_, err := f.d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: ldItem("later"), Delay: time.Hour})
			require.NoError(t, err)
			f.clock.Advance(5 * time.Second)

			assert.Equal(t, 1.0, ldMetric(t, reg, resourcelease.MetricDelayedItems))
			assert.Equal(t, 16.0, ldMetric(t, reg, resourcelease.MetricPendingItems))
			assert.Equal(t, 13.0, ldMetric(t, reg, resourcelease.MetricReadyPartitions))
			assert.Equal(t, 5.0, ldMetric(t, reg, resourcelease.MetricOldestReadyAge))
			top := gaugeVec(t, reg, resourcelease.MetricPartitionReadyItems)
			assert.Len(t, top, resourcelease.BacklogMetricPartitions, "%v", top)
			assert.Equal(t, 3.0, top["big"])

			// Two dead letters with MaxDeadLetters 1: the older is purged.
			for range 2 {
				l := f.lease(t, "w")
				require.NoError(t, f.d.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: l.OwnershipToken, DeadLetter: true}))
			}
			assert.Equal(t, map[string]float64{resourcelease.PurgeReasonMaxDeadLetters: 1}, gaugeVec(t, reg, resourcelease.MetricDeadLettersPurged))
			assert.Equal(t, 1.0, ldMetric(t, reg, resourcelease.MetricDeadLetters))
		})
	}
}
