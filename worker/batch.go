package worker

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// complete completes one lease: through the completer, batched with the
// others that finish meanwhile, when Run set one up.
func (w *Worker) complete(ctx context.Context, token resourcelease.OwnershipToken) error {
	if c := w.completes; c != nil {
		return c.complete(ctx, token)
	}
	return w.d.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: token})
}

// completer sends completions in batches: the first at once, and those
// that arrive while a call is in flight together in the next call (group
// commit, on the worker's side). Its goroutine is started by newCompleter
// and stopped by stop, which Run calls once every lease goroutine is done.
type completer struct {
	bd  resourcelease.BatchDispatcher
	max int

	mu    sync.Mutex
	queue []*completion

	kick chan struct{} // capacity 1: "there is work"
	quit chan struct{}
	done chan struct{}
}

// completion is one lease waiting to be completed.
type completion struct {
	token resourcelease.OwnershipToken
	ctx   context.Context // the caller's: its end drops the completion and bounds the call
	res   chan error      // capacity 1
}

func newCompleter(bd resourcelease.BatchDispatcher, maxBatch int) *completer {
	c := &completer{bd: bd, max: maxBatch, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// complete queues token and waits for its result, or for ctx to end.
func (c *completer) complete(ctx context.Context, token resourcelease.OwnershipToken) error {
	cm := &completion{token: token, ctx: ctx, res: make(chan error, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, cm)
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
	select {
	case err := <-cm.res:
		return err
	case <-ctx.Done():
		return resourcelease.AsError(ctx.Err())
	}
}

func (c *completer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.kick:
		case <-c.quit:
			return
		}
		for {
			c.mu.Lock()
			n := min(len(c.queue), c.max)
			batch := make([]*completion, n)
			copy(batch, c.queue)
			c.queue = append(c.queue[:0], c.queue[n:]...)
			c.mu.Unlock()
			if n == 0 {
				break
			}
			c.send(batch)
		}
	}
}

// send makes one completeBatch call for the completions whose callers still
// wait. The call ends when all of them have stopped waiting, and no later
// than the earliest of their deadlines (a shutdown's).
func (c *completer) send(batch []*completion) {
	live := batch[:0]
	for _, cm := range batch {
		if err := cm.ctx.Err(); err != nil {
			cm.res <- resourcelease.AsError(err)
			continue
		}
		live = append(live, cm)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var deadline time.Time
	remaining := atomic.Int64{}
	remaining.Store(int64(len(live)))
	tokens := make([]resourcelease.OwnershipToken, len(live))
	for i, cm := range live {
		tokens[i] = cm.token
		if d, ok := cm.ctx.Deadline(); ok && (deadline.IsZero() || d.Before(deadline)) {
			deadline = d
		}
		stop := context.AfterFunc(cm.ctx, func() {
			if remaining.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	if !deadline.IsZero() {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, deadline)
		defer cancelDeadline()
	}
	errs, err := c.bd.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: tokens})
	if err == nil && len(errs) != len(live) {
		err = resourcelease.Errorf(resourcelease.StatusInternal, resourcelease.CodeInternal,
			"completeBatch answered %d results for %d tokens", len(errs), len(live))
	}
	for i, cm := range live {
		if err != nil {
			cm.res <- err
		} else {
			cm.res <- errs[i]
		}
	}
}

// stop ends the completer's goroutine. Completions still queued are dropped:
// their callers have stopped waiting (Run calls stop once they all returned).
func (c *completer) stop() {
	close(c.quit)
	<-c.done
}
