package postgres

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// hintDue tells the sweeper that a delayed item becomes ready at t, so that
// it promotes it then rather than at its next interval.
func (q *Queue) hintDue(t time.Time) {
	q.mu.Lock()
	if q.due.IsZero() || t.Before(q.due) {
		q.due = t
	}
	q.mu.Unlock()
	select {
	case q.sweepKick <- struct{}{}:
	default:
	}
}

// sweepLoop sweeps every SweepInterval (on the queue's clock), or sooner
// when a delayed item becomes ready, and trims the log and the dedupe
// window after each sweep. Every process sweeps; SKIP LOCKED and the fence
// of the expiry statement make each expiry happen once.
func (q *Queue) sweepLoop() {
	defer q.wg.Done()
	for {
		d := q.cfg.SweepInterval
		q.mu.Lock()
		due := q.due
		q.mu.Unlock()
		if !due.IsZero() {
			d = max(min(d, due.Sub(q.clock.Now())), 0)
		}
		t := q.clock.NewTimer(d)
		select {
		case <-q.stop:
			t.Stop()
			return
		case <-q.sweepKick:
			t.Stop()
			continue
		case <-t.C():
		}
		q.mu.Lock()
		q.due = time.Time{}
		q.mu.Unlock()
		_, next, err := q.sweep(q.stopCtx)
		if err != nil {
			q.logError("sweep", err)
		} else if next != nil {
			q.hintDue(*next)
		}
		if err := q.trim(q.stopCtx); err != nil {
			q.logError("trim", err)
		}
		if leasable, err := q.healPartitions(q.stopCtx); err != nil {
			q.logError("recompute marked partitions", err)
		} else if leasable {
			q.mu.Lock()
			q.serveWaiters = true
			q.mu.Unlock()
			q.wake()
		}
	}
}

// pollLoop gives parked long-polls and capacity waits a round every
// PollInterval (real time): the fallback for a lost notification.
func (q *Queue) pollLoop() {
	defer q.wg.Done()
	t := time.NewTicker(q.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-t.C:
		}
		q.mu.Lock()
		poke := false
		if len(q.waiters) > 0 {
			q.serveWaiters, poke = true, true
		}
		if len(q.full) > 0 {
			q.serveFull, poke = true, true
		}
		q.mu.Unlock()
		if poke {
			q.wake()
		}
	}
}

// listenLoop keeps a connection of its own (outside the pool: a pooled
// connection could be handed to others, and a transaction-pooling proxy
// would lose the LISTEN) listening on the queue's channel, and reconnects
// with backoff when it drops. After every (re)connect it gives the waiters
// a round, since a notification sent while it was away is lost.
func (q *Queue) listenLoop() {
	defer q.wg.Done()
	backoff := 50 * time.Millisecond
	for {
		connected, err := q.listenOnce()
		q.listenOK.Store(false)
		select {
		case <-q.stop:
			return
		default:
		}
		if err != nil {
			q.logError("listen", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-q.stop:
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(backoff*2, time.Second)
		if connected {
			backoff = 50 * time.Millisecond
		}
	}
}

func (q *Queue) listenOnce() (connected bool, err error) {
	ctx := q.stopCtx
	cfg := q.store.pool.Config().ConnConfig.Copy()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{q.channel}.Sanitize()); err != nil {
		return false, err
	}
	q.listenOK.Store(true)
	q.poke(true, true)
	select {
	case <-q.listening:
	default:
		close(q.listening)
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, err
		}
		what, from, _ := strings.Cut(n.Payload, ":")
		from, due, _ := strings.Cut(from, ":")
		if from == q.instance {
			continue // our own commit: the writer knew already
		}
		if strings.Contains(what, "d") {
			if ns, err := strconv.ParseInt(due, 10, 64); err == nil {
				q.hintDue(time.Unix(0, ns))
			}
		}
		q.poke(strings.Contains(what, "r"), strings.Contains(what, "s"))
	}
}

// poke gives the parked waiters (ready) or capacity waits (space) a round.
// While a transaction is serving them it is owed one more after it: that
// transaction may have read before the change the poke stands for (another
// process's enqueue, say), and it parks them again when it finds nothing or
// fails; without the mark they would wait for the next poll. So is a
// transaction carrying a new long-poll's first try, which parks it when it
// finds nothing.
func (q *Queue) poke(ready, space bool) {
	q.mu.Lock()
	wake := false
	if ready && (len(q.waiters) > 0 || q.waitersBusy || q.waitLeases > 0) {
		q.serveWaiters, wake = true, true
	}
	if space && (len(q.full) > 0 || q.fullBusy) {
		q.serveFull, wake = true, true
	}
	q.mu.Unlock()
	if wake {
		q.wake()
	}
}
