package resourcelease

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ldCall is one call the journal made to a part.
type ldCall struct {
	Op      string
	Peer    string
	Token   OwnershipToken
	Meta    map[string]string
	Pending int
	Outcome ReleaseOutcome
	Reason  string
	At      time.Time
}

// ldParts is a PeerHealth, BackpressureController and Replicator that
// records what the journal tells it.
type ldParts struct {
	calls []ldCall
	ack   Ack
}

func (p *ldParts) RecordAssignment(peer string, tok OwnershipToken, meta map[string]string, at time.Time) {
	p.calls = append(p.calls, ldCall{Op: "assign", Peer: peer, Token: tok, Meta: meta, At: at})
}
func (p *ldParts) RecordHeartbeat(peer string, tok OwnershipToken, pending int, at time.Time) {
	p.calls = append(p.calls, ldCall{Op: "heartbeat", Peer: peer, Token: tok, Pending: pending, At: at})
}
func (p *ldParts) RecordRelease(peer string, tok OwnershipToken, outcome ReleaseOutcome, at time.Time) {
	p.calls = append(p.calls, ldCall{Op: "release", Peer: peer, Token: tok, Outcome: outcome, At: at})
}
func (p *ldParts) RecordDisconnect(peer string, tok OwnershipToken, reason string, at time.Time) {
	p.calls = append(p.calls, ldCall{Op: "disconnect", Peer: peer, Token: tok, Reason: reason, At: at})
}
func (p *ldParts) AdmitLease(peer string, at time.Time) time.Duration {
	p.calls = append(p.calls, ldCall{Op: "admit", Peer: peer, At: at})
	return 0
}
func (p *ldParts) RecordLeaseMiss(peer string, at time.Time) {
	p.calls = append(p.calls, ldCall{Op: "miss", Peer: peer, At: at})
}
func (p *ldParts) Observe(pending int, at time.Time) {
	p.calls = append(p.calls, ldCall{Op: "observe", Pending: pending, At: at})
}
func (p *ldParts) Admit(context.Context) error { return nil }
func (p *ldParts) Active() bool                { return false }
func (p *ldParts) Record(c *Change) Ack {
	p.calls = append(p.calls, ldCall{Op: "replicate:" + c.Kind.String()})
	return p.ack
}
func (p *ldParts) ReadEvents(context.Context, int64, int) ([]Event, error) { return nil, nil }
func (p *ldParts) LastSequence() int64                                     { return 0 }
func (p *ldParts) AddSink(string, EventSink, SinkOptions) error            { return nil }
func (p *ldParts) Close() error                                            { return nil }

type ldAck struct{ err error }

func (a ldAck) Wait() error { return a.err }

// TestJournalTellsEveryPart feeds the journal each kind of change directly
// (including the ones that are hard to provoke through the queue, such as a
// lease released because its long-poll went away) and checks, in order, what
// the replicator, peer health and backpressure were told, and how a dead
// letter's lease ending was classified.
func TestJournalTellsEveryPart(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tok := OwnershipToken{SequenceID: 7, Attempt: 2, LeaseID: uuid.MustParse("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d")}
	other := OwnershipToken{SequenceID: 7, Attempt: 3, LeaseID: uuid.MustParse("1b9d6bcd-bbfd-4b2d-9b5d-ab8dfbbd4bed")}
	it := &PendingItem{SequenceID: 7, Attempt: 2, Payload: Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", PayloadEncoding: "raw",
		Attributes: map[string]string{"tenant": "tenant-1"}}}
	leased := Change{Kind: ChangeLeased, At: at, PeerID: "w1", Item: it, Token: tok, LeaseExpiresAt: at.Add(30 * time.Second), Pending: 3, Active: 1}
	maxErr := &ErrorInfo{Message: "max delivery attempts (2) exceeded", Code: CodeDeliveryAttemptsExceed}
	failed := Change{Kind: ChangeFailed, At: at.Add(time.Second), PeerID: "w1", Item: it, Token: tok, Error: &ErrorInfo{Message: "bad", Code: "app.bad"}, Pending: 3}

	tests := []struct {
		name    string
		changes []Change
		want    []ldCall // of the last change, peer health and backpressure only
		ending  leaseEnding
	}{
		{"enqueue", []Change{{Kind: ChangeEnqueued, At: at, PeerID: "producer", Item: it, Pending: 4}},
			[]ldCall{{Op: "observe", Pending: 4, At: at}}, endedUnknown},
		{"backpressure counts ready and leased items, not delayed ones", []Change{{Kind: ChangeEnqueued, At: at, PeerID: "producer", Item: it, Pending: 4, Delayed: 3, Active: 2}},
			[]ldCall{{Op: "observe", Pending: 3, At: at}}, endedUnknown},
		{"leased carries the item attributes", []Change{leased},
			[]ldCall{{Op: "assign", Peer: "w1", Token: tok, Meta: map[string]string{"tenant": "tenant-1"}, At: at}, {Op: "observe", Pending: 4, At: at}}, endedUnknown},
		{"heartbeat carries the pending count", []Change{leased, {Kind: ChangeHeartbeat, At: at, PeerID: "w1", Item: it, Token: tok, LeaseExpiresAt: at.Add(40 * time.Second), Pending: 5, Active: 1}},
			[]ldCall{{Op: "heartbeat", Peer: "w1", Token: tok, Pending: 5, At: at}, {Op: "observe", Pending: 6, At: at}}, endedUnknown},
		{"completed", []Change{leased, {Kind: ChangeCompleted, At: at, PeerID: "w1", Item: it, Token: tok, Pending: 3}},
			[]ldCall{{Op: "release", Peer: "w1", Token: tok, Outcome: ReleaseCompleted, At: at}, {Op: "observe", Pending: 3, At: at}}, endedUnknown},
		{"requeued", []Change{leased, {Kind: ChangeRequeued, At: at, PeerID: "w1", Item: it, Token: tok, Pending: 4}},
			[]ldCall{{Op: "release", Peer: "w1", Token: tok, Outcome: ReleaseRequeued, At: at}, {Op: "observe", Pending: 4, At: at}}, endedUnknown},
		{"released to a vanished long-poll", []Change{leased, {Kind: ChangeReleased, At: at, PeerID: "w1", Item: it, Token: tok, Pending: 4}},
			[]ldCall{{Op: "release", Peer: "w1", Token: tok, Outcome: ReleaseGivenBack, At: at}, {Op: "observe", Pending: 4, At: at}}, endedUnknown},
		{"expired", []Change{leased, {Kind: ChangeExpired, At: at.Add(30 * time.Second), PeerID: "w1", Item: it, Token: tok, Pending: 4}},
			[]ldCall{{Op: "disconnect", Peer: "w1", Token: tok, Reason: DisconnectLeaseExpired, At: at.Add(30 * time.Second)}, {Op: "observe", Pending: 4, At: at.Add(30 * time.Second)}}, endedUnknown},
		{"a fail that dead-letters is a release", []Change{leased, failed},
			[]ldCall{{Op: "release", Peer: "w1", Token: tok, Outcome: ReleaseDeadLettered, At: at.Add(time.Second)}, {Op: "observe", Pending: 3, At: at.Add(time.Second)}}, endedUnknown},
		{"dead-lettered by a fail without requeue: not a disconnect", []Change{leased, failed, {Kind: ChangeDeadLettered, At: at.Add(time.Second), PeerID: "w1", Item: it, Token: tok, Error: &ErrorInfo{Message: "failed without requeue: bad", Code: "app.bad"}, Pending: 3, DeadLettered: 1}},
			[]ldCall{{Op: "observe", Pending: 3, At: at.Add(time.Second)}}, endedByFail},
		{"dead-lettered by a fail on the last attempt: not a disconnect", []Change{leased, failed, {Kind: ChangeDeadLettered, At: at.Add(time.Second), PeerID: "w1", Item: it, Token: tok, Error: maxErr, Pending: 3, DeadLettered: 1}},
			[]ldCall{{Op: "observe", Pending: 3, At: at.Add(time.Second)}}, endedByFail},
		{"a fail's dead letter does not hide a later expiry's", []Change{leased, failed, {Kind: ChangeDeadLettered, At: at.Add(time.Second), PeerID: "w1", Item: it, Token: tok, Error: maxErr, DeadLettered: 1},
			{Kind: ChangeDeadLettered, At: at.Add(time.Minute), PeerID: "w1", Item: it, Token: other, Error: maxErr, DeadLettered: 2}},
			[]ldCall{{Op: "disconnect", Peer: "w1", Token: other, Reason: DisconnectMaxAttempts, At: at.Add(time.Minute)}, {Op: "observe", Pending: 0, At: at.Add(time.Minute)}}, endedByExpiry},
		{"dead-lettered by an expiry on the last attempt", []Change{leased, {Kind: ChangeDeadLettered, At: at.Add(30 * time.Second), PeerID: "w1", Item: it, Token: tok, Error: maxErr, Pending: 3, DeadLettered: 1}},
			[]ldCall{{Op: "disconnect", Peer: "w1", Token: tok, Reason: DisconnectMaxAttempts, At: at.Add(30 * time.Second)}, {Op: "observe", Pending: 3, At: at.Add(30 * time.Second)}}, endedByExpiry},
		{"heartbeat moves the expiry the classification uses", []Change{leased,
			{Kind: ChangeHeartbeat, At: at.Add(20 * time.Second), PeerID: "w1", Item: it, Token: tok, LeaseExpiresAt: at.Add(50 * time.Second), Active: 1},
			{Kind: ChangeFailed, At: at.Add(40 * time.Second), PeerID: "w1", Item: it, Token: tok, Error: maxErr},
			{Kind: ChangeDeadLettered, At: at.Add(40 * time.Second), PeerID: "w1", Item: it, Token: tok, Error: maxErr, DeadLettered: 1}},
			[]ldCall{{Op: "observe", Pending: 0, At: at.Add(40 * time.Second)}}, endedByFail},
		// Another dispatcher of a mesh granted it: the change alone decides.
		{"dead letter of a lease the journal never saw is an expiry's", []Change{{Kind: ChangeDeadLettered, At: at, PeerID: "w1", Item: it, Token: other, Error: maxErr, DeadLettered: 1}},
			[]ldCall{{Op: "disconnect", Peer: "w1", Token: other, Reason: DisconnectMaxAttempts, At: at}, {Op: "observe", Pending: 0, At: at}}, endedByExpiry},
		{"a fail of a lease the journal never saw", []Change{
			{Kind: ChangeFailed, At: at, PeerID: "w1", Item: it, Token: other, Error: maxErr},
			{Kind: ChangeDeadLettered, At: at, PeerID: "w1", Item: it, Token: other, Error: maxErr, DeadLettered: 1}},
			[]ldCall{{Op: "observe", Pending: 0, At: at}}, endedByFail},
		{"anonymous lease is not reported to peer health", []Change{{Kind: ChangeLeased, At: at, Item: it, Token: tok, LeaseExpiresAt: at.Add(time.Minute), Pending: 2, Active: 1}},
			[]ldCall{{Op: "observe", Pending: 3, At: at}}, endedUnknown},
		{"drain", []Change{{Kind: ChangeDrained, At: at, PeerID: "admin", Items: []PendingItem{*it}}},
			[]ldCall{{Op: "observe", Pending: 0, At: at}}, endedUnknown},
		{"restore", []Change{{Kind: ChangeRestored, At: at, PeerID: "admin", Items: []PendingItem{*it}, Pending: 1}},
			[]ldCall{{Op: "observe", Pending: 1, At: at}}, endedUnknown},
		{"redrive", []Change{{Kind: ChangeRedriven, At: at, Items: []PendingItem{*it}, Pending: 1}},
			[]ldCall{{Op: "observe", Pending: 1, At: at}}, endedUnknown},
		{"purge", []Change{{Kind: ChangePurged, At: at, SequenceIDs: []int64{7}}},
			[]ldCall{{Op: "observe", Pending: 0, At: at}}, endedUnknown},
		{"dead letter without a lease (not a disconnect)", []Change{{Kind: ChangeDeadLettered, At: at, PeerID: "admin", Item: it, DeadLettered: 1}},
			[]ldCall{{Op: "observe", Pending: 0, At: at}}, endedUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parts := &ldParts{ack: ldAck{}}
			d := &LocalDispatcher{repl: parts, health: parts, bp: parts, metrics: newQueueMetrics(false)}
			var ending leaseEnding
			for i := range tt.changes {
				c := tt.changes[i]
				parts.calls = nil
				// What classification would say, before record updates the map.
				if i == len(tt.changes)-1 {
					ending = d.classifyForTest(&c)
				}
				ack := d.record(&c)
				assert.Equal(t, parts.ack, ack, "the replicator's Ack is returned")
				require.NotEmpty(t, parts.calls)
				assert.Equal(t, "replicate:"+c.Kind.String(), parts.calls[0].Op, "the replicator is told first")
			}
			assert.Equal(t, tt.want, parts.calls[1:])
			assert.Equal(t, tt.ending, ending)
		})
	}
}

// classifyForTest runs trackLease and puts its state back, so the test can
// see the classification record will make without changing what it sees.
func (d *LocalDispatcher) classifyForTest(c *Change) leaseEnding {
	saved := d.failedLease
	e := d.trackLease(c)
	d.failedLease = saved
	return e
}

// TestRegistrationKeepsCallerRegisteredCollector: a collector the caller
// already registered is accepted and left registered on failure and Close.
func TestRegistrationKeepsCallerRegisteredCollector(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	own := prometheus.NewCounter(prometheus.CounterOpts{Name: "own_total", Help: "h"})
	require.NoError(t, reg.Register(own))

	r := &registration{reg: reg}
	require.NoError(t, r.register("own", own, false), "already registered by its owner")
	mine := prometheus.NewCounter(prometheus.CounterOpts{Name: "mine_total", Help: "h"})
	require.NoError(t, r.register("mine", mine, false))
	clash := prometheus.NewCounter(prometheus.CounterOpts{Name: "mine_total", Help: "h"})
	err := r.register("clash", clash, false)
	require.Error(t, err)
	var are prometheus.AlreadyRegisteredError
	assert.True(t, errors.As(err, &are))
	assert.Contains(t, err.Error(), "register clash metrics")

	assert.NoError(t, r.register("shared", prometheus.NewCounter(prometheus.CounterOpts{Name: "own_total", Help: "h"}), true),
		"an equal collector of a shared part")

	r.unregisterAll()
	assert.False(t, reg.Unregister(mine), "what register added is gone")
	assert.True(t, reg.Unregister(own), "the caller's collector stays")
}

// ldGaugeCollector is a collector of a non-comparable type, which must not
// make sameCollector panic.
type ldGaugeCollector struct {
	labels map[string]string
	desc   *prometheus.Desc
}

func (c ldGaugeCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c ldGaugeCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1)
}

func TestSameCollectorNonComparable(t *testing.T) {
	c := ldGaugeCollector{labels: map[string]string{}, desc: prometheus.NewDesc("x", "h", nil, nil)}
	assert.NotPanics(t, func() { assert.False(t, sameCollector(c, c)) })
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "h"})
	assert.True(t, sameCollector(g, g))
	assert.False(t, sameCollector(g, prometheus.NewGauge(prometheus.GaugeOpts{Name: "g", Help: "h"})))
}
