package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
)

var peersCommand = &command{
	name:     "peers",
	synopsis: "leasectl peers [--control-url URL] [flags]",
	summary:  "print peer (worker) health from the control plane",
	details: `
Prints the control plane's peer-health payload: every peer's last heartbeat,
health, active leases and pending reassignments, and a summary.`,
	example: `
leasectl peers --control-url http://127.0.0.1:5158`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.controlFlags(fs)
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			out, err := c.Peers(a.ctx)
			if err != nil {
				return err
			}
			return a.printJSON(o.raw, out)
		}
	},
}

// Defaults of tail.
const (
	defaultTailInterval = time.Second
	tailPageSize        = control.MaxReplicationLimit
)

var tailCommand = &command{
	name:     "tail",
	synopsis: "leasectl tail [--since N] [--interval D] [--once] [--control-url URL]",
	summary:  "follow the replication log, one JSON event per line",
	details: `
Prints the replication events with a sequence number above --since, one
compact JSON object per line, oldest first, then keeps polling the control
plane (` + control.DefaultPrefix + `/replication?since=N) every
--interval for new ones until interrupted (Ctrl-C ends it with status 0).
With --once it prints what is there and exits.

While following, an unreachable control plane is reported on stderr and
polled again; any other error ends the tail with status 1.`,
	example: `
leasectl tail --since 120 --interval 500ms
leasectl tail --once | jq -r .eventType`,
	setup: func(a *app, fs *flag.FlagSet) func([]string) error {
		o := a.controlFlags(fs)
		var (
			since    int64
			interval time.Duration
			once     bool
		)
		fs.Int64Var(&since, "since", 0, "print events with a sequence number above `N`")
		fs.DurationVar(&interval, "interval", defaultTailInterval, "how often to poll for new events")
		fs.BoolVar(&once, "once", false, "print the events there are now and exit")
		return func(args []string) error {
			if err := noArgs(args); err != nil {
				return err
			}
			if since < 0 {
				return usagef("--since must not be negative, got %d", since)
			}
			if interval <= 0 {
				return usagef("--interval must be positive, got %v", interval)
			}
			c, err := o.client()
			if err != nil {
				return err
			}
			defer c.Close()
			t := &tailer{a: a, c: c, since: since, interval: interval}
			return t.run(once)
		}
	},
}

// tailer follows the replication log.
type tailer struct {
	a        *app
	c        *control.Client
	since    int64
	interval time.Duration
	down     bool // the last poll could not reach the control plane
}

// run prints pages until it is caught up, then (unless once) waits an
// interval and polls again, until the context ends.
func (t *tailer) run(once bool) error {
	first := true
	for {
		caughtUp, err := t.poll()
		switch {
		case err == nil:
		case t.a.ctx.Err() != nil:
			return nil // interrupted: the normal end of a tail
		case !first && !once && resourcelease.StatusOf(err) == resourcelease.StatusUnavailable:
			if !t.down {
				e := resourcelease.AsError(err)
				fmt.Fprintf(t.a.stderr, "leasectl tail: %s %s: %s; retrying every %v\n", e.Status, e.Code, e.Message, t.interval)
				t.down = true
			}
			caughtUp = true
		default:
			return err
		}
		first = false
		if !caughtUp {
			continue
		}
		if once {
			return nil
		}
		if !t.wait() {
			return nil
		}
	}
}

// poll fetches one page, prints its events and reports whether the tail has
// caught up with the log.
func (t *tailer) poll() (caughtUp bool, err error) {
	page, err := t.c.Replication(t.a.ctx, t.since, tailPageSize)
	if err != nil {
		return false, err
	}
	if t.down {
		fmt.Fprintln(t.a.stderr, "leasectl tail: the control plane is back")
		t.down = false
	}
	gap := page.Trimmed
	if gap == nil && len(page.Events) > 0 && page.Events[0].SequenceNumber > t.since+1 {
		// A server older than the trimmed field: the jump says the same.
		gap = &control.SequenceRange{From: t.since + 1, To: page.Events[0].SequenceNumber - 1}
	}
	if gap != nil {
		// The log was trimmed (retention) past what this tail had read: say
		// so rather than skip events silently.
		fmt.Fprintf(t.a.stderr, "leasectl tail: events %d to %d are no longer in the log (trimmed by retention)\n",
			gap.From, gap.To)
	}
	for _, e := range page.Events {
		line, err := json.Marshal(e)
		if err != nil {
			return false, err
		}
		if _, err := fmt.Fprintf(t.a.stdout, "%s\n", line); err != nil {
			return false, err
		}
	}
	if page.NextSince < t.since {
		return false, errors.New("the control plane went back in the log (nextSince below since)")
	}
	if page.LastSequence != nil && *page.LastSequence < t.since {
		// Nothing will ever come past since: the log was reset (an in-memory
		// log starts again at 1 when its dispatcher restarts), or since was
		// wrong to begin with. Waiting would look like a quiet queue.
		return false, fmt.Errorf("the log ends at event %d, before this tail's position %d: the dispatcher's log was reset or --since is past its end; tail again with a lower --since",
			*page.LastSequence, t.since)
	}
	t.since = page.NextSince
	if page.LastSequence != nil {
		return t.since >= *page.LastSequence, nil
	}
	return len(page.Events) < tailPageSize, nil
}

// wait waits one interval; false when the context ended first.
func (t *tailer) wait() bool {
	timer := time.NewTimer(t.interval)
	defer timer.Stop()
	select {
	case <-t.a.ctx.Done():
		return false
	case <-timer.C:
		return true
	}
}
