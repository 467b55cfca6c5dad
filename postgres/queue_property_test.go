package postgres_test

import (
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// propModel is the simple reference the queue is checked against (the
// engine's property test's model).
type propModel struct {
	items     map[int64]*propItem
	tokens    []resourcelease.OwnershipToken // every token ever issued
	drained   [][]resourcelease.PendingItem  // batches waiting to be restored
	completed map[int64]bool
	now       time.Time
}

type propItem struct {
	state     string // pending, leased, dead, drained
	attempt   int
	token     resourcelease.OwnershipToken
	expiresAt time.Time
}

const (
	propLease    = 10 * time.Second
	propAttempts = 3
)

func (m *propModel) count(state string) int {
	n := 0
	for _, it := range m.items {
		if it.state == state {
			n++
		}
	}
	return n
}

func (m *propModel) oldestPending() (int64, bool) {
	best := int64(0)
	for id, it := range m.items {
		if it.state == "pending" && (best == 0 || id < best) {
			best = id
		}
	}
	return best, best != 0
}

func (m *propModel) live(t resourcelease.OwnershipToken) bool {
	it, ok := m.items[t.SequenceID]
	return ok && it.state == "leased" && it.token == t && m.now.Before(it.expiresAt)
}

func (m *propModel) endLease(it *propItem, requeue bool) {
	it.token = resourcelease.OwnershipToken{}
	if !requeue || it.attempt+1 > propAttempts {
		it.state = "dead"
		return
	}
	it.attempt++
	it.state = "pending"
}

// TestQueueMatchesModel runs random operation sequences against the
// Postgres queue and the model: no item is lost or duplicated, attempts
// only grow (until a redrive), the oldest ready item is leased first, a
// stale token is always refused, and the counts (the counter row's) are the
// model's. Each sequence runs in a schema of its own.
func TestQueueMatchesModel(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	var n atomic.Int64
	rapid.Check(t, func(rt *rapid.T) {
		clock := leasetest.NewManualClock(time.Time{})
		s, err := postgres.Open(bg, url, postgres.Config{Schema: fmt.Sprint("prop_", n.Add(1)), Clock: clock, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			rt.Fatal(err)
		}
		defer s.Close()
		q, err := postgres.NewQueue(bg, s, postgres.QueueConfig{
			LeaseDuration: propLease, MaxDeliveryAttempts: propAttempts, Capacity: -1, SweepInterval: time.Hour,
		})
		if err != nil {
			rt.Fatal(err)
		}
		defer q.Close()
		m := &propModel{items: map[int64]*propItem{}, completed: map[int64]bool{}, now: clock.Now()}
		pickToken := func(rt *rapid.T) resourcelease.OwnershipToken {
			if len(m.tokens) == 0 {
				rt.Skip()
			}
			return rapid.SampledFrom(m.tokens).Draw(rt, "token")
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
				res, err := q.Enqueue(bg, qitem(fmt.Sprint("i", len(m.items)+len(m.completed))))
				if err != nil {
					rt.Fatal(err)
				}
				if _, dup := m.items[res.SequenceID]; dup || m.completed[res.SequenceID] {
					rt.Fatalf("sequence id %d reused", res.SequenceID)
				}
				m.items[res.SequenceID] = &propItem{state: "pending", attempt: 1}
			},
			"lease": func(rt *rapid.T) {
				l, err := q.Lease(bg, "peer", 0)
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
				if l.Attempt != it.attempt {
					rt.Fatalf("attempt %d, model %d", l.Attempt, it.attempt)
				}
				it.state, it.token, it.expiresAt = "leased", l.OwnershipToken, m.now.Add(propLease)
				m.tokens = append(m.tokens, l.OwnershipToken)
			},
			"heartbeat": func(rt *rapid.T) {
				tok := pickToken(rt)
				live := m.live(tok)
				_, err := q.Heartbeat(bg, tok)
				checkTokenErr(rt, tok, live, err)
				if live {
					m.items[tok.SequenceID].expiresAt = m.now.Add(propLease)
				}
			},
			"complete": func(rt *rapid.T) {
				tok := pickToken(rt)
				live := m.live(tok)
				checkTokenErr(rt, tok, live, q.Complete(bg, tok))
				if live {
					delete(m.items, tok.SequenceID)
					m.completed[tok.SequenceID] = true
				}
			},
			"fail": func(rt *rapid.T) {
				tok := pickToken(rt)
				requeue := rapid.Bool().Draw(rt, "requeue")
				live := m.live(tok)
				checkTokenErr(rt, tok, live, q.Fail(bg, tok, resourcelease.FailOptions{Reason: "x", DeadLetter: !requeue}))
				if live {
					m.endLease(m.items[tok.SequenceID], requeue)
				}
			},
			"release": func(rt *rapid.T) {
				tok := pickToken(rt)
				live := m.live(tok)
				checkTokenErr(rt, tok, live, q.Release(bg, tok, resourcelease.ReleaseOptions{}))
				if live {
					it := m.items[tok.SequenceID]
					it.state, it.token = "pending", resourcelease.OwnershipToken{}
				}
			},
			"advance": func(rt *rapid.T) {
				d := time.Duration(rapid.IntRange(0, 12).Draw(rt, "seconds")) * time.Second
				clock.Advance(d)
				m.now = m.now.Add(d)
				if _, err := q.Sweep(bg); err != nil {
					rt.Fatal(err)
				}
				var ids []int64
				for id, it := range m.items {
					if it.state == "leased" && !m.now.Before(it.expiresAt) {
						ids = append(ids, id)
					}
				}
				slices.Sort(ids)
				for _, id := range ids {
					m.endLease(m.items[id], true)
				}
			},
			"drain": func(rt *rapid.T) {
				got, _, err := q.DrainN(bg, 0, 0)
				if err != nil {
					rt.Fatal(err)
				}
				if len(got) != m.count("pending") {
					rt.Fatalf("drained %d, model has %d pending", len(got), m.count("pending"))
				}
				for _, p := range got {
					it := m.items[p.SequenceID]
					if it == nil || it.state != "pending" || it.attempt != p.Attempt {
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
				if n, err := q.Restore(bg, batch); err != nil || n != len(batch) {
					rt.Fatalf("restore = %d, %v", n, err)
				}
				for _, p := range batch {
					m.items[p.SequenceID].state = "pending"
				}
			},
			"redrive": func(rt *rapid.T) {
				n, err := q.Redrive(bg, resourcelease.DeadLetterSelection{All: true})
				if err != nil || n != m.count("dead") {
					rt.Fatalf("redrive = %d, %v; model has %d dead", n, err, m.count("dead"))
				}
				for _, it := range m.items {
					if it.state == "dead" {
						it.state, it.attempt = "pending", 1
					}
				}
			},
			"": func(rt *rapid.T) {
				st, err := q.Stats(bg)
				if err != nil {
					rt.Fatal(err)
				}
				want := resourcelease.Stats{PendingCount: m.count("pending"), ActiveLeaseCount: m.count("leased"), DeadLetterCount: m.count("dead")}
				if st != want {
					rt.Fatalf("stats %+v, model %+v", st, want)
				}
			},
		})
	})
}
