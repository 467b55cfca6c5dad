package peerhealth_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// idle is an op after which peer is heard from and holds no leases.
func idle(peer string, seq int64) op {
	return func(tr *peerhealth.Tracker, clk *leasetest.ManualClock) {
		tr.RecordAssignment(peer, token(seq), nil, clk.Now())
		tr.RecordRelease(peer, token(seq), resourcelease.ReleaseCompleted, clk.Now())
	}
}

// knownPeers returns the ids of the peers tr remembers, sorted.
func knownPeers(tr *peerhealth.Tracker) []string {
	ids := []string{}
	for _, s := range tr.Snapshots() {
		ids = append(ids, s.PeerID)
	}
	return ids
}

// evictions returns peerhealth_evictions_total by state, gathered through a
// pedantic registry.
func evictions(t *testing.T, tr *peerhealth.Tracker) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(tr))
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "peerhealth_evictions_total" {
			continue
		}
		got := map[string]float64{}
		for _, m := range mf.GetMetric() {
			require.Len(t, m.GetLabel(), 1)
			got[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
		return got
	}
	t.Fatal("peerhealth_evictions_total not gathered")
	return nil
}

func TestMaxPeersBoundsMemoryUnderChurn(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		maxPeers int // 0: the default
		// record hears from a new peer id for the first time; seq is unique.
		record    func(tr *peerhealth.Tracker, id string, seq int64, now time.Time)
		wantState string // the state label of the evictions
	}{
		{
			name:     "idle peers, MaxPeers 1",
			maxPeers: 1,
			record: func(tr *peerhealth.Tracker, id string, seq int64, now time.Time) {
				tr.RecordAssignment(id, token(seq), nil, now)
				tr.RecordRelease(id, token(seq), resourcelease.ReleaseCompleted, now)
			},
			wantState: "idle",
		},
		{
			name:     "idle peers, MaxPeers 100",
			maxPeers: 100,
			record: func(tr *peerhealth.Tracker, id string, seq int64, now time.Time) {
				tr.RecordAssignment(id, token(seq), nil, now)
				tr.RecordRelease(id, token(seq), resourcelease.ReleaseRequeued, now)
			},
			wantState: "idle",
		},
		{
			name:     "peers known only from a disconnect",
			maxPeers: 50,
			record: func(tr *peerhealth.Tracker, id string, seq int64, now time.Time) {
				tr.RecordDisconnect(id, token(seq), "lease expired", now)
			},
			wantState: "idle",
		},
		{
			name:     "every peer holds a lease",
			maxPeers: 30,
			record: func(tr *peerhealth.Tracker, id string, seq int64, now time.Time) {
				tr.RecordAssignment(id, token(seq), map[string]string{"tenant": id}, now)
			},
			wantState: "holding",
		},
		{
			name:     "every peer heartbeats a lease the tracker never saw",
			maxPeers: 7,
			record: func(tr *peerhealth.Tracker, id string, seq int64, now time.Time) {
				tr.RecordHeartbeat(id, token(seq), 0, now)
			},
			wantState: "holding",
		},
		{
			name: "idle peers, default MaxPeers",
			record: func(tr *peerhealth.Tracker, id string, seq int64, now time.Time) {
				tr.RecordAssignment(id, token(seq), nil, now)
				tr.RecordRelease(id, token(seq), resourcelease.ReleaseCompleted, now)
			},
			wantState: "idle",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, clk := setup(t, peerhealth.Config{MaxPeers: tt.maxPeers})
			limit := tt.maxPeers
			if limit == 0 {
				limit = peerhealth.DefaultMaxPeers
			}
			// 10×MaxPeers distinct ids, all well within Retention, so only
			// MaxPeers can bound the tracker.
			n := 10 * limit
			ids := make([]string, n)
			for i := range n {
				ids[i] = fmt.Sprintf("peer-%06d", i)
				tt.record(tr, ids[i], int64(i+1), clk.Now())
				clk.Advance(time.Millisecond)
				// Checking after every id costs O(peers); do it for the
				// small bounds, and for the default bound now and then.
				if limit <= 100 || i%limit == limit-1 {
					require.LessOrEqual(t, len(tr.Snapshots()), limit, "after %d ids", i+1)
				}
			}
			assert.Equal(t, ids[n-limit:], knownPeers(tr), "the last MaxPeers ids are remembered")
			want := map[string]float64{"idle": 0, "holding": 0}
			want[tt.wantState] = float64(n - limit)
			assert.Equal(t, want, evictions(t, tr))
		})
	}
}

func TestMaxPeersEviction(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		cfg         peerhealth.Config
		ops         []op
		want        []string       // the peers remembered, sorted
		wantActive  map[string]int // leases held by some of them
		wantIdle    float64        // peerhealth_evictions_total{state="idle"}
		wantHolding float64        // peerhealth_evictions_total{state="holding"}
	}{
		{
			name: "the least recently seen idle peer is evicted",
			cfg:  peerhealth.Config{MaxPeers: 3},
			ops: []op{
				idle("a", 1), advance(time.Second), idle("b", 2), advance(time.Second),
				idle("c", 3), advance(time.Second), idle("a", 4), advance(time.Second),
				idle("d", 5), // b is now the least recently seen
			},
			want:     []string{"a", "c", "d"},
			wantIdle: 1,
		},
		{
			name: "a peer holding a lease survives while idle ones go",
			cfg:  peerhealth.Config{MaxPeers: 3},
			ops: []op{
				assign("holder", 1), advance(time.Second), // the least recently seen of all
				idle("x", 2), advance(time.Second), idle("y", 3), advance(time.Second),
				idle("z", 4), advance(time.Second), idle("w", 5),
			},
			want:       []string{"holder", "w", "z"},
			wantActive: map[string]int{"holder": 1},
			wantIdle:   2,
		},
		{
			name: "a holder past its grace period still outranks an idle peer",
			cfg:  peerhealth.Config{MaxPeers: 2},
			ops: []op{
				assign("holder", 1), advance(time.Minute),
				idle("x", 2), advance(time.Second), idle("y", 3),
			},
			want:       []string{"holder", "y"},
			wantActive: map[string]int{"holder": 1},
			wantIdle:   1,
		},
		{
			name: "a peer whose leases ended is idle again and goes first",
			cfg:  peerhealth.Config{MaxPeers: 2},
			ops: []op{
				assign("a", 1), advance(time.Second), assign("b", 2), advance(time.Second),
				release("a", 1, resourcelease.ReleaseCompleted), advance(time.Second), // a: idle, yet seen after b
				assign("c", 3),
			},
			want:       []string{"b", "c"},
			wantActive: map[string]int{"b": 1, "c": 1},
			wantIdle:   1,
		},
		{
			name: "a peer known only from a disconnect is evicted",
			cfg:  peerhealth.Config{MaxPeers: 1},
			ops:  []op{disconnect("lost", 1, "lease expired"), advance(time.Second), assign("new", 2)},
			want: []string{"new"}, wantActive: map[string]int{"new": 1},
			wantIdle: 1,
		},
		{
			name: "when every peer holds leases the least recently seen holder is evicted",
			cfg:  peerhealth.Config{MaxPeers: 2},
			ops: []op{
				assign("h1", 1), advance(time.Second), assign("h2", 2), advance(time.Second),
				heartbeat("h1", 1), advance(time.Second), // h2 is now the least recently seen
				assign("h3", 3),
			},
			want:        []string{"h1", "h3"},
			wantActive:  map[string]int{"h1": 1, "h3": 1},
			wantHolding: 1,
		},
		{
			name: "an evicted holder is tracked afresh, with its lease, when it heartbeats",
			cfg:  peerhealth.Config{MaxPeers: 2},
			ops: []op{
				assign("h1", 1), advance(time.Second), assign("h2", 2), advance(time.Second),
				assign("h3", 3), advance(time.Second), // evicts h1
				heartbeat("h1", 1), // evicts h2
			},
			want:        []string{"h1", "h3"},
			wantActive:  map[string]int{"h1": 1, "h3": 1},
			wantHolding: 2,
		},
		{
			name: "peers past retention are forgotten first, not evicted",
			cfg:  peerhealth.Config{MaxPeers: 2, Retention: time.Minute},
			ops: []op{
				idle("old", 1), advance(30 * time.Second), idle("recent", 2),
				advance(31 * time.Second), // old is past retention, recent is not
				idle("new", 3),
			},
			want: []string{"new", "recent"},
		},
		{
			name: "known peers heard from again evict no one",
			cfg:  peerhealth.Config{MaxPeers: 2},
			ops: []op{
				idle("a", 1), assign("b", 2), advance(time.Second),
				heartbeat("b", 2), idle("a", 3), disconnect("a", 4, "lease expired"), release("b", 2, resourcelease.ReleaseCompleted),
			},
			want: []string{"a", "b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tr, clk := setup(t, tt.cfg)
			// No reads between the ops: a read prunes, which would hide
			// whether the Record calls forget peers past retention first.
			for _, o := range tt.ops {
				o(tr, clk)
			}
			assert.Equal(t, tt.want, knownPeers(tr), "the peers remembered (at most MaxPeers)")
			for id, n := range tt.wantActive {
				s, ok := tr.Snapshot(id)
				require.True(t, ok, id)
				assert.Equal(t, n, s.ActiveAssignments, "active leases of %s", id)
			}
			assert.Equal(t, map[string]float64{"idle": tt.wantIdle, "holding": tt.wantHolding}, evictions(t, tr))
		})
	}
}

func TestEvictionMetric(t *testing.T) {
	t.Parallel()
	tr, clk := setup(t, peerhealth.Config{MaxPeers: 2, Retention: time.Minute})
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(tr))
	compare := func(idle, holding int) {
		t.Helper()
		want := fmt.Sprintf(`
# HELP peerhealth_evictions_total Peers evicted to stay within MaxPeers, by state (idle or holding leases).
# TYPE peerhealth_evictions_total counter
peerhealth_evictions_total{state="holding"} %d
peerhealth_evictions_total{state="idle"} %d
`, holding, idle)
		require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want), "peerhealth_evictions_total"))
	}

	compare(0, 0)
	for i := range 5 { // p0 and p1 fit; p2, p3 and p4 each evict one
		idle(fmt.Sprintf("p%d", i), int64(i+1))(tr, clk)
		clk.Advance(time.Second)
	}
	compare(3, 0)
	tr.RecordAssignment("h0", token(10), nil, clk.Now()) // evicts p3
	tr.RecordAssignment("h1", token(11), nil, clk.Now()) // evicts p4
	compare(5, 0)
	clk.Advance(time.Second)
	tr.RecordAssignment("h2", token(12), nil, clk.Now()) // every peer holds leases: evicts h0
	compare(5, 1)

	// Peers forgotten by retention are not evictions.
	tr.RecordRelease("h1", token(11), resourcelease.ReleaseCompleted, clk.Now())
	tr.RecordRelease("h2", token(12), resourcelease.ReleaseCompleted, clk.Now())
	clk.Advance(time.Minute + time.Second)
	idle("late", 20)(tr, clk)
	assert.Equal(t, []string{"late"}, knownPeers(tr))
	compare(5, 1)
}
