package queuetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// ModelConfig is the configuration one model check draws: Open builds the
// store's queue with it, with no capacity bound (Capacity and
// DelayedCapacity unbounded), sweeps only when the check asks, and Clock as
// its clock.
type ModelConfig struct {
	Clock                 *leasetest.ManualClock
	LeaseDuration         time.Duration
	MaxDeliveryAttempts   int
	MaxReleases           int
	Fairness              resourcelease.Fairness
	MaxActivePerPartition int
	RequeueDelay          time.Duration
	MaxDeadLetters        int // -1: no bound
	DeadLetterRetention   time.Duration
}

// ModelStore is how CheckModel drives one store.
type ModelStore struct {
	// Open returns a queue configured by cfg, its sweep (expire what is due,
	// promote delayed items, apply dead-letter retention) and what closes it.
	Open func(rt *rapid.T, cfg ModelConfig) (q resourcelease.Queue, sweep func() error, closeQueue func())
	// ExpiryTiesBySequenceID: leases that expire at the same instant expire
	// in sequence id order; otherwise in the order they were last extended.
	ExpiryTiesBySequenceID bool
	// CheckTTL: every lease's TTL is the lease duration.
	CheckTTL bool
}

// model is the simple reference a queue is checked against.
type model struct {
	cfg       propConfig
	items     map[int64]*modelItem
	tokens    []resourcelease.OwnershipToken // every token ever issued
	drained   [][]resourcelease.PendingItem  // batches waiting to be restored
	completed map[int64]bool                 // completed or purged: never seen again
	deadOrder []int64                        // dead letters, oldest first
	now       time.Time
	// line is, with partitions fairness, when each leasable partition
	// joined the line (larger is later); partitions that joined in the same
	// call share a value, so the engine may serve them in either order.
	line map[string]int64
	tick int64
	ext  int64 // counts lease grants and heartbeats: expiry order
}

type modelItem struct {
	state     string // pending, leased, dead, drained
	partition string
	attempt   int
	releases  int // free releases since the attempt changed
	readyAt   time.Time
	token     resourcelease.OwnershipToken
	expiresAt time.Time
	ext       int64 // when the lease was last granted or extended
	deadAt    time.Time
}

// propConfig is the queue configuration one check runs with.
type propConfig struct {
	fairness     resourcelease.Fairness
	maxActive    int
	requeueDelay time.Duration
	maxDead      int // -1 no bound
	retention    time.Duration
}

const (
	propLease    = 10 * time.Second
	propAttempts = 3
	propReleases = 2
)

var propPartitions = []string{"p0", "p1", "p2"}

func (m *model) count(state string) int {
	n := 0
	for _, it := range m.items {
		if it.state == state {
			n++
		}
	}
	return n
}

func (m *model) delayed() int {
	n := 0
	for _, it := range m.items {
		if it.state == "pending" && m.now.Before(it.readyAt) {
			n++
		}
	}
	return n
}

func (m *model) active(p string) int {
	n := 0
	for _, it := range m.items {
		if it.state == "leased" && it.partition == p {
			n++
		}
	}
	return n
}

// head returns the next item of partition p to lease, or 0: its oldest
// ready pending item while it has room for another lease, where a strict
// partition (one lease at a time) is held by its oldest pending item,
// ready or not.
func (m *model) head(p string) int64 {
	if m.cfg.maxActive > 0 && m.active(p) >= m.cfg.maxActive {
		return 0
	}
	best := int64(0)
	for id, it := range m.items {
		if it.state != "pending" || it.partition != p || (best != 0 && id > best) {
			continue
		}
		if m.cfg.maxActive == 1 || !m.now.Before(it.readyAt) {
			best = id
		}
	}
	if best != 0 && m.now.Before(m.items[best].readyAt) {
		return 0 // a delayed item at the head holds a strict partition
	}
	return best
}

// sync updates the line: partitions that became leasable join it, those
// that stopped leave it.
func (m *model) sync() {
	m.tick++
	for _, p := range propPartitions {
		_, in := m.line[p]
		switch ok := m.head(p) != 0; {
		case ok && !in:
			m.line[p] = m.tick
		case !ok && in:
			delete(m.line, p)
		}
	}
}

// expected returns the items the next lease may take (none when nothing
// is leasable): the oldest leasable item (fifo), or the head of a partition
// first in line (partitions fairness).
func (m *model) expected() []int64 {
	var out []int64
	if m.cfg.fairness == resourcelease.FairnessPartitions {
		first := int64(0)
		for _, at := range m.line {
			if first == 0 || at < first {
				first = at
			}
		}
		for p, at := range m.line {
			if at == first {
				out = append(out, m.head(p))
			}
		}
		return out
	}
	best := int64(0)
	for _, p := range propPartitions {
		if h := m.head(p); h != 0 && (best == 0 || h < best) {
			best = h
		}
	}
	if best != 0 {
		out = append(out, best)
	}
	return out
}

func (m *model) live(t resourcelease.OwnershipToken) bool {
	it, ok := m.items[t.SequenceID]
	return ok && it.state == "leased" && it.token == t && m.now.Before(it.expiresAt)
}

// grant checks a lease against the model and records it.
func (m *model) grant(rt *rapid.T, l *resourcelease.Lease) {
	want := m.expected()
	if !slices.Contains(want, l.SequenceID) {
		rt.Fatalf("leased %d (%s), want one of %v (line %v)", l.SequenceID, l.Payload.PartitionKey, want, m.line)
	}
	it := m.items[l.SequenceID]
	if l.Attempt != it.attempt || l.OwnershipToken.Attempt != it.attempt {
		rt.Fatalf("attempt %d, model %d", l.Attempt, it.attempt)
	}
	if l.Payload.PartitionKey != it.partition {
		rt.Fatalf("leased %d of partition %s, model %s", l.SequenceID, l.Payload.PartitionKey, it.partition)
	}
	if m.cfg.maxActive == 1 {
		for id, o := range m.items {
			if o.partition == it.partition && o.state == "pending" && id < l.SequenceID {
				rt.Fatalf("strict partition %s: leased %d before %d", it.partition, l.SequenceID, id)
			}
		}
	}
	m.ext++
	it.state, it.token, it.expiresAt, it.ext = "leased", l.OwnershipToken, m.now.Add(propLease), m.ext
	m.tokens = append(m.tokens, l.OwnershipToken)
	delete(m.line, it.partition) // served: back of the line
	m.sync()
}

// endLease mirrors fail/expiry: requeue with attempt+1 (after the requeue
// delay) or dead-letter.
func (m *model) endLease(id int64, requeue bool) {
	it := m.items[id]
	it.token = resourcelease.OwnershipToken{}
	it.releases = 0
	if !requeue || it.attempt+1 > propAttempts {
		m.deadLetter(id)
		return
	}
	it.attempt++
	it.state, it.readyAt = "pending", m.now.Add(m.cfg.requeueDelay)
}

// deadLetter dead-letters id, purging the oldest beyond the bound.
func (m *model) deadLetter(id int64) {
	it := m.items[id]
	it.state, it.deadAt = "dead", m.now
	m.deadOrder = append(m.deadOrder, id)
	if m.cfg.maxDead > 0 && len(m.deadOrder) > m.cfg.maxDead {
		m.purgeOldest()
	}
}

func (m *model) purgeOldest() {
	id := m.deadOrder[0]
	m.deadOrder = m.deadOrder[1:]
	delete(m.items, id)
	m.completed[id] = true
}

func (m *model) complete(id int64) {
	delete(m.items, id)
	m.completed[id] = true
}

// CheckModel runs random operation sequences, in both fairness modes and
// with and without a per-partition lease limit, against the store and a
// simple model, with rapid: no item is lost or duplicated, attempts only
// grow (until a redrive), the next lease takes what the model says (the
// oldest leasable item, or the head of the partition first in a
// round-robin line), a strict partition is leased in order one at a time,
// no partition holds more live leases than its limit, delayed items are
// not leased before their time, a release beyond MaxReleases counts as an
// attempt, a stale token is always refused, and dead letters beyond the
// bound or the retention are purged oldest first.
func CheckModel(t *testing.T, s ModelStore) {
	ctx := context.Background()
	rapid.Check(t, func(rt *rapid.T) {
		pc := propConfig{
			fairness:     rapid.SampledFrom([]resourcelease.Fairness{resourcelease.FairnessFIFO, resourcelease.FairnessPartitions}).Draw(rt, "fairness"),
			maxActive:    rapid.SampledFrom([]int{0, 1, 2}).Draw(rt, "maxActivePerPartition"),
			requeueDelay: time.Duration(rapid.SampledFrom([]int{0, 2}).Draw(rt, "requeueDelaySeconds")) * time.Second,
			maxDead:      rapid.SampledFrom([]int{-1, 2}).Draw(rt, "maxDeadLetters"),
			retention:    time.Duration(rapid.SampledFrom([]int{0, 15}).Draw(rt, "retentionSeconds")) * time.Second,
		}
		clock := leasetest.NewManualClock(time.Time{})
		q, sweep, closeQueue := s.Open(rt, ModelConfig{
			Clock: clock, LeaseDuration: propLease, MaxDeliveryAttempts: propAttempts, MaxReleases: propReleases,
			Fairness: pc.fairness, MaxActivePerPartition: pc.maxActive, RequeueDelay: pc.requeueDelay,
			MaxDeadLetters: pc.maxDead, DeadLetterRetention: pc.retention,
		})
		defer closeQueue()
		m := &model{cfg: pc, items: map[int64]*modelItem{}, completed: map[int64]bool{}, now: clock.Now(), line: map[string]int64{}}
		pickToken := func(rt *rapid.T) (resourcelease.OwnershipToken, bool) {
			if len(m.tokens) == 0 {
				return resourcelease.OwnershipToken{}, false
			}
			return rapid.SampledFrom(m.tokens).Draw(rt, "token"), true
		}
		checkTokenErr := func(rt *rapid.T, tok resourcelease.OwnershipToken, wasLive bool, err error) {
			if wasLive && err != nil {
				rt.Fatalf("live token %v refused: %v", tok, err)
			}
			if !wasLive && resourcelease.CodeOf(err) != resourcelease.CodeUnknownToken {
				rt.Fatalf("stale token %v accepted or wrong error: %v", tok, err)
			}
		}
		newItem := func(rt *rapid.T, name string) (resourcelease.Item, time.Time) {
			it := item(name)
			it.PartitionKey = rapid.SampledFrom(propPartitions).Draw(rt, "partition")
			var readyAt time.Time
			if d := time.Duration(rapid.SampledFrom([]int{0, 0, 3, 7}).Draw(rt, "delaySeconds")) * time.Second; d > 0 {
				it.NotBefore = m.now.Add(d)
				readyAt = it.NotBefore
			}
			return it, readyAt
		}
		added := func(rt *rapid.T, seq int64, it resourcelease.Item, readyAt time.Time) {
			if _, dup := m.items[seq]; dup || m.completed[seq] {
				rt.Fatalf("sequence id %d reused", seq)
			}
			m.items[seq] = &modelItem{state: "pending", partition: it.PartitionKey, attempt: 1, readyAt: readyAt}
		}
		rt.Repeat(map[string]func(*rapid.T){
			"enqueue": func(rt *rapid.T) {
				it, readyAt := newItem(rt, fmt.Sprint("i", len(m.items)+len(m.completed)))
				res, err := q.Enqueue(ctx, it)
				if err != nil {
					rt.Fatal(err)
				}
				if !res.NotBefore.Equal(it.NotBefore) {
					rt.Fatalf("enqueue echoed notBefore %v, want %v", res.NotBefore, it.NotBefore)
				}
				added(rt, res.SequenceID, it, readyAt)
			},
			"lease": func(rt *rapid.T) {
				l, err := q.Lease(ctx, "peer", 0)
				if err != nil {
					rt.Fatal(err)
				}
				if l == nil {
					if want := m.expected(); len(want) > 0 {
						rt.Fatalf("nothing leased, want one of %v", want)
					}
					return
				}
				if s.CheckTTL && l.TTL != propLease {
					rt.Fatalf("ttl %v, want the lease duration %v", l.TTL, propLease)
				}
				m.grant(rt, l)
			},
			"enqueueBatch": func(rt *rapid.T) {
				n := rapid.IntRange(0, 4).Draw(rt, "n")
				items := make([]resourcelease.Item, n)
				ready := make([]time.Time, n)
				for i := range items {
					items[i], ready[i] = newItem(rt, fmt.Sprint("b", len(m.items)+len(m.completed), "-", i))
				}
				res, err := q.EnqueueBatch(ctx, items)
				if err != nil || len(res) != n {
					rt.Fatalf("enqueueBatch = %d results, %v", len(res), err)
				}
				for i, r := range res {
					if r.Err != nil {
						rt.Fatal(r.Err)
					}
					added(rt, r.SequenceID, items[i], ready[i])
				}
			},
			"leaseBatch": func(rt *rapid.T) {
				n := rapid.IntRange(1, 4).Draw(rt, "max")
				leases, err := q.LeaseBatch(ctx, "peer", resourcelease.LeaseBatchOptions{MaxItems: n})
				if err != nil {
					rt.Fatal(err)
				}
				for _, l := range leases {
					m.grant(rt, l)
				}
				if want := m.expected(); len(leases) < n && len(want) > 0 {
					rt.Fatalf("leaseBatch gave %d of %d while %v were leasable", len(leases), n, want)
				}
			},
			"completeBatch": func(rt *rapid.T) {
				if len(m.tokens) == 0 {
					rt.Skip()
				}
				toks := rapid.SliceOfN(rapid.SampledFrom(m.tokens), 1, 4).Draw(rt, "tokens")
				errs, err := q.CompleteBatch(ctx, toks)
				if err != nil || len(errs) != len(toks) {
					rt.Fatalf("completeBatch = %d results, %v", len(errs), err)
				}
				for i, tok := range toks {
					live := m.live(tok)
					checkTokenErr(rt, tok, live, errs[i])
					if live {
						m.complete(tok.SequenceID)
					}
				}
			},
			"heartbeat": func(rt *rapid.T) {
				tok, ok := pickToken(rt)
				if !ok {
					rt.Skip()
				}
				live := m.live(tok)
				_, err := q.Heartbeat(ctx, tok)
				checkTokenErr(rt, tok, live, err)
				if live {
					m.ext++
					it := m.items[tok.SequenceID]
					it.expiresAt, it.ext = m.now.Add(propLease), m.ext
				}
			},
			"complete": func(rt *rapid.T) {
				tok, ok := pickToken(rt)
				if !ok {
					rt.Skip()
				}
				live := m.live(tok)
				checkTokenErr(rt, tok, live, q.Complete(ctx, tok))
				if live {
					m.complete(tok.SequenceID)
				}
			},
			"fail": func(rt *rapid.T) {
				tok, ok := pickToken(rt)
				if !ok {
					rt.Skip()
				}
				requeue := rapid.Bool().Draw(rt, "requeue")
				live := m.live(tok)
				checkTokenErr(rt, tok, live, q.Fail(ctx, tok, resourcelease.FailOptions{Reason: "x", DeadLetter: !requeue}))
				if live {
					m.endLease(tok.SequenceID, requeue)
				}
			},
			"release": func(rt *rapid.T) {
				tok, ok := pickToken(rt)
				if !ok {
					rt.Skip()
				}
				delay := time.Duration(rapid.SampledFrom([]int{0, 0, 5}).Draw(rt, "delaySeconds")) * time.Second
				live := m.live(tok)
				checkTokenErr(rt, tok, live, q.Release(ctx, tok, resourcelease.ReleaseOptions{Delay: delay}))
				if !live {
					return
				}
				it := m.items[tok.SequenceID]
				if it.releases >= propReleases {
					m.endLease(tok.SequenceID, true) // counts as a failed attempt: the requeue delay, not the release's
					return
				}
				it.releases++
				it.state, it.token, it.readyAt = "pending", resourcelease.OwnershipToken{}, m.now.Add(delay)
			},
			"advance": func(rt *rapid.T) {
				d := time.Duration(rapid.IntRange(0, 12).Draw(rt, "seconds")) * time.Second
				clock.Advance(d)
				m.now = m.now.Add(d)
				if err := sweep(); err != nil {
					rt.Fatal(err)
				}
				var ids []int64
				for id, it := range m.items {
					if it.state == "leased" && !m.now.Before(it.expiresAt) {
						ids = append(ids, id)
					}
				}
				// Leases expire in the order they were last extended (or of
				// their expiry, then sequence id), which orders the dead
				// letters (and so which are purged first).
				slices.SortFunc(ids, func(a, b int64) int {
					if !s.ExpiryTiesBySequenceID {
						return int(m.items[a].ext - m.items[b].ext)
					}
					if c := m.items[a].expiresAt.Compare(m.items[b].expiresAt); c != 0 {
						return c
					}
					return int(a - b)
				})
				for _, id := range ids {
					m.endLease(id, true)
				}
				for m.cfg.retention > 0 && len(m.deadOrder) > 0 && m.now.Sub(m.items[m.deadOrder[0]].deadAt) >= m.cfg.retention {
					m.purgeOldest()
				}
			},
			"drain": func(rt *rapid.T) {
				got, _, err := q.DrainN(ctx, 0, 0)
				if err != nil {
					rt.Fatal(err)
				}
				if len(got) != m.count("pending") {
					rt.Fatalf("drained %d, model has %d pending", len(got), m.count("pending"))
				}
				for i, p := range got {
					it := m.items[p.SequenceID]
					if it == nil || it.state != "pending" || it.attempt != p.Attempt || it.releases != p.Releases {
						rt.Fatalf("drained %+v, model %+v", p, it)
					}
					if m.now.Before(it.readyAt) && !p.ReadyAt.Equal(it.readyAt) {
						rt.Fatalf("drained %d ready at %v, model %v", p.SequenceID, p.ReadyAt, it.readyAt)
					}
					if i > 0 && got[i-1].SequenceID >= p.SequenceID {
						rt.Fatalf("drain out of sequence order: %d then %d", got[i-1].SequenceID, p.SequenceID)
					}
					it.state = "drained"
				}
				if len(got) > 0 {
					m.drained = append(m.drained, got)
				}
			},
			"restore": func(rt *rapid.T) {
				if len(m.drained) == 0 {
					rt.Skip()
				}
				batch := m.drained[0]
				m.drained = m.drained[1:]
				n, err := q.Restore(ctx, batch)
				if err != nil || n != len(batch) {
					rt.Fatalf("restore = %d, %v", n, err)
				}
				for _, p := range batch {
					m.items[p.SequenceID].state = "pending"
				}
			},
			"redrive": func(rt *rapid.T) {
				n, err := q.Redrive(ctx, resourcelease.DeadLetterSelection{All: true})
				if err != nil || n != m.count("dead") {
					rt.Fatalf("redrive = %d, %v; model has %d dead", n, err, m.count("dead"))
				}
				for _, it := range m.items {
					if it.state == "dead" {
						it.state, it.attempt, it.releases, it.readyAt = "pending", 1, 0, time.Time{}
					}
				}
				m.deadOrder = nil
			},
			"": func(rt *rapid.T) {
				m.sync()
				st, err := q.Stats(ctx)
				if err != nil {
					rt.Fatal(err)
				}
				want := resourcelease.Stats{PendingCount: m.count("pending"), DelayedCount: m.delayed(), ActiveLeaseCount: m.count("leased"), DeadLetterCount: m.count("dead")}
				if st != want {
					rt.Fatalf("stats %+v, model %+v", st, want)
				}
				for _, p := range propPartitions {
					if n := m.active(p); m.cfg.maxActive > 0 && n > m.cfg.maxActive {
						rt.Fatalf("partition %s has %d live leases, limit %d", p, n, m.cfg.maxActive)
					}
				}
				dl, err := q.DeadLetters(ctx, 0)
				if err != nil || len(dl) != len(m.deadOrder) {
					rt.Fatalf("dead letters %d, %v; model %v", len(dl), err, m.deadOrder)
				}
				for i, d := range dl {
					if d.SequenceID != m.deadOrder[i] {
						rt.Fatalf("dead letter %d is %d, model %v", i, d.SequenceID, m.deadOrder)
					}
				}
			},
		})
	})
}
