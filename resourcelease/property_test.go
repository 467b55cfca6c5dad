package resourcelease_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"pgregory.net/rapid"
)

// model is the simple reference the engine is checked against.
type model struct {
	items     map[int64]*modelItem
	tokens    []resourcelease.OwnershipToken // every token ever issued
	drained   [][]resourcelease.PendingItem  // batches waiting to be restored
	completed map[int64]bool
	now       time.Time
}

type modelItem struct {
	state     string // pending, leased, dead, drained
	attempt   int
	releases  int // free releases since the attempt changed
	readyAt   time.Time
	token     resourcelease.OwnershipToken
	expiresAt time.Time
}

const (
	propLease    = 10 * time.Second
	propAttempts = 3
	propReleases = 2
)

func (m *model) count(state string) int {
	n := 0
	for _, it := range m.items {
		if it.state == state {
			n++
		}
	}
	return n
}

// oldestPending is the ready pending item with the lowest sequence id: a
// released item goes back to its old place.
func (m *model) oldestPending() (int64, bool) {
	best := int64(0)
	for id, it := range m.items {
		if it.state == "pending" && !m.now.Before(it.readyAt) && (best == 0 || id < best) {
			best = id
		}
	}
	return best, best != 0
}

func (m *model) live(t resourcelease.OwnershipToken) bool {
	it, ok := m.items[t.SequenceID]
	return ok && it.state == "leased" && it.token == t && m.now.Before(it.expiresAt)
}

// endLease mirrors fail/expiry: requeue with attempt+1 or dead-letter.
func (m *model) endLease(it *modelItem, requeue bool) {
	it.token = resourcelease.OwnershipToken{}
	it.releases = 0
	if !requeue || it.attempt+1 > propAttempts {
		it.state = "dead"
		return
	}
	it.attempt++
	it.state = "pending"
}

// TestQueueMatchesModel runs random operation sequences against the engine
// and the model: no item is lost or duplicated, attempts only grow (until a
// redrive), the oldest ready item is leased first (a released one goes back
// to its old place, after its delay), a release beyond MaxReleases counts as
// an attempt, and a stale token is always refused.
func TestQueueMatchesModel(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		clock := leasetest.NewManualClock(time.Time{})
		q, err := resourcelease.NewEngine(resourcelease.QueueConfig{
			Clock: clock, LeaseDuration: propLease, MaxDeliveryAttempts: propAttempts,
			MaxReleases: propReleases, Capacity: -1, SweepInterval: time.Hour,
		})
		if err != nil {
			rt.Fatal(err)
		}
		defer q.Close()
		m := &model{items: map[int64]*modelItem{}, completed: map[int64]bool{}, now: clock.Now()}
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
		rt.Repeat(map[string]func(*rapid.T){
			"enqueue": func(rt *rapid.T) {
				res, err := q.Enqueue(ctx, item(fmt.Sprint("i", len(m.items)+len(m.completed))))
				if err != nil {
					rt.Fatal(err)
				}
				if _, dup := m.items[res.SequenceID]; dup || m.completed[res.SequenceID] {
					rt.Fatalf("sequence id %d reused", res.SequenceID)
				}
				m.items[res.SequenceID] = &modelItem{state: "pending", attempt: 1}
			},
			"lease": func(rt *rapid.T) {
				l, err := q.Lease(ctx, "peer", 0)
				if err != nil {
					rt.Fatal(err)
				}
				want, ok := m.oldestPending()
				if !ok {
					if l != nil {
						rt.Fatalf("leased %d from an empty model", l.SequenceID)
					}
					return
				}
				if l == nil || l.SequenceID != want {
					rt.Fatalf("lease = %v, want oldest pending %d", l, want)
				}
				it := m.items[want]
				if l.Attempt != it.attempt || l.OwnershipToken.Attempt != it.attempt {
					rt.Fatalf("attempt %d, model %d", l.Attempt, it.attempt)
				}
				if l.TTL != propLease {
					rt.Fatalf("ttl %v, want the lease duration %v", l.TTL, propLease)
				}
				it.state, it.token, it.expiresAt = "leased", l.OwnershipToken, m.now.Add(propLease)
				m.tokens = append(m.tokens, l.OwnershipToken)
			},
			"enqueueBatch": func(rt *rapid.T) {
				n := rapid.IntRange(0, 4).Draw(rt, "n")
				items := make([]resourcelease.Item, n)
				for i := range items {
					items[i] = item(fmt.Sprint("b", len(m.items)+len(m.completed), "-", i))
				}
				res, err := q.EnqueueBatch(ctx, items)
				if err != nil || len(res) != n {
					rt.Fatalf("enqueueBatch = %d results, %v", len(res), err)
				}
				for _, r := range res {
					if r.Err != nil {
						rt.Fatal(r.Err)
					}
					m.items[r.SequenceID] = &modelItem{state: "pending", attempt: 1}
				}
			},
			"leaseBatch": func(rt *rapid.T) {
				n := rapid.IntRange(1, 4).Draw(rt, "max")
				leases, err := q.LeaseBatch(ctx, "peer", resourcelease.LeaseBatchOptions{MaxItems: n})
				if err != nil {
					rt.Fatal(err)
				}
				for _, l := range leases {
					want, ok := m.oldestPending()
					if !ok || l.SequenceID != want {
						rt.Fatalf("leaseBatch gave %d, want oldest pending %d (%v)", l.SequenceID, want, ok)
					}
					it := m.items[want]
					if l.Attempt != it.attempt {
						rt.Fatalf("attempt %d, model %d", l.Attempt, it.attempt)
					}
					it.state, it.token, it.expiresAt = "leased", l.OwnershipToken, m.now.Add(propLease)
					m.tokens = append(m.tokens, l.OwnershipToken)
				}
				if _, more := m.oldestPending(); len(leases) < n && more {
					rt.Fatalf("leaseBatch gave %d of %d while items were ready", len(leases), n)
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
						delete(m.items, tok.SequenceID)
						m.completed[tok.SequenceID] = true
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
					m.items[tok.SequenceID].expiresAt = m.now.Add(propLease)
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
					delete(m.items, tok.SequenceID)
					m.completed[tok.SequenceID] = true
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
					m.endLease(m.items[tok.SequenceID], requeue)
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
					m.endLease(it, true) // counts as a failed attempt, without the delay
					return
				}
				it.releases++
				it.state, it.token, it.readyAt = "pending", resourcelease.OwnershipToken{}, m.now.Add(delay)
			},
			"advance": func(rt *rapid.T) {
				d := time.Duration(rapid.IntRange(0, 12).Draw(rt, "seconds")) * time.Second
				clock.Advance(d)
				m.now = m.now.Add(d)
				q.Sweep()
				ids := make([]int64, 0)
				for id, it := range m.items {
					if it.state == "leased" && !m.now.Before(it.expiresAt) {
						ids = append(ids, id)
					}
				}
				slices.Sort(ids) // expiry order does not matter to the model
				for _, id := range ids {
					m.endLease(m.items[id], true)
				}
			},
			"drain": func(rt *rapid.T) {
				got, err := q.Drain(ctx)
				if err != nil {
					rt.Fatal(err)
				}
				if len(got) != m.count("pending") {
					rt.Fatalf("drained %d, model has %d pending", len(got), m.count("pending"))
				}
				for _, p := range got {
					it := m.items[p.SequenceID]
					if it == nil || it.state != "pending" || it.attempt != p.Attempt || it.releases != p.Releases {
						rt.Fatalf("drained %+v, model %+v", p, it)
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
			},
			"": func(rt *rapid.T) {
				st := engineStats(q)
				want := resourcelease.Stats{PendingCount: m.count("pending"), ActiveLeaseCount: m.count("leased"), DeadLetterCount: m.count("dead")}
				if st != want {
					rt.Fatalf("stats %+v, model %+v", st, want)
				}
			},
		})
	})
}
