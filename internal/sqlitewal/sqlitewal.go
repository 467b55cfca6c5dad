// Package sqlitewal checkpoints a SQLite database's write-ahead log from a
// goroutine of its own, so that the store writing the database can turn
// SQLite's automatic checkpoint off and no commit ever runs one.
//
// Every commit appends the pages it changed to the WAL. A checkpoint copies
// the newest version of each page back into the database file (and fsyncs
// it); once a checkpoint has copied the whole WAL and no reader still uses
// it, the next commit starts the WAL again from its beginning. SQLite's
// automatic checkpoint does this inside the COMMIT that takes the WAL past a
// threshold, so that one commit waits for the whole copy: tens of
// milliseconds, where a commit otherwise takes well under one.
//
// A Checkpointer runs PASSIVE checkpoints instead, on a pool connection that
// is not the writer's: a PASSIVE checkpoint takes no lock a commit waits for
// and never waits itself, so commits go on while it copies. What it cannot
// do is end the WAL while commits keep arriving: it copies what was there
// when it started, and the WAL restarts only if no commit came meanwhile.
// Under a load that never pauses (or while a reader keeps an old snapshot
// open) the WAL would grow without end, so once a PASSIVE checkpoint finds
// it at MaxPages or more, the Checkpointer resets it with a RESTART
// checkpoint, which needs the write lock. The writer brackets each of its
// transactions with BeginWrite and EndWrite, so the Checkpointer can take
// that turn itself: when the writer is idle, right after another PASSIVE
// checkpoint has copied nearly everything, so that the reset only copies
// the last few pages; and its connection's busy timeout is zero for it, so
// it never waits for a reader (it gives up until the next round) or for
// another process's writer. A commit that arrives meanwhile waits for it.
// Only if the WAL reaches twice MaxPages without the writer ever being idle
// does the Checkpointer wait for the writer's current transaction to end
// and reset the WAL before the next: the one case where a commit is made to
// wait on purpose. A RESTART reuses the WAL file; if the file had grown
// past three times MaxPages (a reader held an old snapshot for long, or
// checkpoints failed), the reset is a TRUNCATE instead, which gives the
// space back.
//
// The package imports no driver: it takes a *sql.DB.
package sqlitewal

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
)

// Mode is a checkpoint mode, as SQLite's PRAGMA wal_checkpoint names it.
type Mode string

const (
	// Passive copies what it can without waiting for, or blocking, anyone.
	Passive Mode = "PASSIVE"
	// Restart copies everything and has the next commit start the WAL
	// from its beginning; it needs the write lock and no reader on the WAL.
	Restart Mode = "RESTART"
	// Truncate is Restart that also empties the WAL file.
	Truncate Mode = "TRUNCATE"
)

// Result is what one checkpoint did, as PRAGMA wal_checkpoint reports it.
type Result struct {
	Mode Mode
	// Busy: a RESTART or TRUNCATE found a commit or a reader in its way and
	// did not reset the WAL (a PASSIVE one reports it when another
	// checkpoint was running).
	Busy bool
	// Log is the number of pages (frames) in the WAL, Checkpointed how many
	// of them are now copied into the database.
	Log, Checkpointed int64
	Err               error
}

// Options configure Start. Pages and MaxPages are required.
type Options struct {
	// Pages: a PASSIVE checkpoint runs once about this many pages were
	// appended to the WAL since the last one.
	Pages int64
	// MaxPages: a WAL found at or above it is reset with a RESTART
	// checkpoint when the writer is idle (see the package doc). At least
	// Pages.
	MaxPages int64
	// Idle reports whether the writer has nothing to commit right now. nil
	// means it never is (a reset then happens only at twice MaxPages).
	Idle func() bool
	// Logger receives checkpoint failures. Defaults to slog.Default().
	Logger *slog.Logger
	// Path names the database in log messages.
	Path string
	// Before, if set, runs on the checkpointer's goroutine before each
	// checkpoint; it may block (tests hold the checkpointer with it).
	Before func(Mode)
	// Observe, if set, receives every checkpoint's result on the
	// checkpointer's goroutine.
	Observe func(Result)
}

// initialFramesPerCommit is the guess of the WAL pages a commit appends
// until the first checkpoint measures it; a guess above the usual 2–6 makes
// the first checkpoint come early rather than late.
const initialFramesPerCommit = 8

// Checkpointer owns the goroutine that checkpoints one database. The writer
// brackets each transaction with BeginWrite and EndWrite and reports its
// idle moments with Idle; Close stops the goroutine.
type Checkpointer struct {
	db   *sql.DB
	opts Options

	turn     sync.Mutex                    // held by the writer for each transaction, and by a reset
	hold     atomic.Pointer[chan struct{}] // set while a forced reset waits for its turn
	commits  atomic.Int64                  // counted by EndWrite
	due      atomic.Int64                  // EndWrite wakes the goroutine once commits reach it
	wantIdle atomic.Bool                   // a reset waits for the writer's next idle moment
	wake     chan struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	once     sync.Once

	// Owned by the goroutine.
	perCommit float64 // WAL pages appended per commit (a moving average)
	base      int64   // commits when the WAL was last measured
	frames    int64   // pages in the WAL when last measured
	largest   int64   // the most pages measured since the WAL file was last truncated
	reset     bool    // the WAL passed MaxPages: reset it at an idle moment
	off       bool    // the database is not in WAL mode: nothing to do
	lastErr   string  // the last failure logged, so a persistent one is logged once
}

// Start validates opts and starts the checkpointer's goroutine.
func Start(db *sql.DB, opts Options) (*Checkpointer, error) {
	switch {
	case db == nil:
		return nil, errors.New("sqlitewal: db is nil")
	case opts.Pages <= 0:
		return nil, fmt.Errorf("sqlitewal: Pages must be positive, got %d", opts.Pages)
	case opts.MaxPages < opts.Pages:
		return nil, fmt.Errorf("sqlitewal: MaxPages %d is below Pages %d", opts.MaxPages, opts.Pages)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Idle == nil {
		opts.Idle = func() bool { return false }
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Checkpointer{
		db: db, opts: opts, wake: make(chan struct{}, 1),
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		perCommit: initialFramesPerCommit,
	}
	c.schedule()
	go c.run()
	return c, nil
}

// BeginWrite is called by the writer before it begins a transaction. It
// waits only while the Checkpointer resets the WAL (see the package doc).
func (c *Checkpointer) BeginWrite() {
	if h := c.hold.Load(); h != nil {
		<-*h // a forced reset goes first: the mutex alone would let the writer barge in
	}
	c.turn.Lock()
}

// EndWrite is called by the writer after its transaction committed (or
// rolled back). It never blocks: it wakes the goroutine only when a
// checkpoint is due.
func (c *Checkpointer) EndWrite(committed bool) {
	c.turn.Unlock()
	if committed && c.commits.Add(1) >= c.due.Load() {
		c.signal()
	}
}

// Idle tells the checkpointer that the writer has nothing to commit now
// (Options.Idle says whether that is still true). It never blocks.
func (c *Checkpointer) Idle() {
	if c.wantIdle.Load() {
		c.signal()
	}
}

// Close stops the goroutine, interrupting a checkpoint in progress, and
// waits for it. Safe to call twice.
func (c *Checkpointer) Close() {
	c.once.Do(func() {
		c.cancel()
		<-c.done
	})
}

func (c *Checkpointer) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Checkpointer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
		}
		if !c.off {
			c.step()
		}
	}
}

// step runs the checkpoints that are due.
func (c *Checkpointer) step() {
	n := c.commits.Load()
	if c.grown(n) >= float64(c.opts.Pages) {
		if c.passive(n) {
			c.reset = c.frames >= c.opts.MaxPages
		}
	}
	if c.reset && c.tryReset() {
		c.reset = false
	}
	c.wantIdle.Store(c.reset)
	c.schedule()
}

// tryReset resets the WAL if the writer is idle, or if the WAL has reached
// twice MaxPages. It reports whether it tried (once per PASSIVE round that
// found the WAL over MaxPages: a reader in the way is waited out by the
// next round, not here).
func (c *Checkpointer) tryReset() bool {
	force := float64(c.frames)+c.grown(c.commits.Load()) >= 2*float64(c.opts.MaxPages)
	if !force && !c.opts.Idle() {
		return false
	}
	if c.grown(c.commits.Load()) >= float64(c.opts.Pages)/16 {
		// Copy what the last round left, without the writer's turn, so
		// that the reset itself has almost nothing to copy.
		c.passive(c.commits.Load())
	}
	if force {
		h := make(chan struct{})
		c.hold.Store(&h)
		c.turn.Lock()
		defer func() {
			c.hold.Store(nil)
			close(h)
		}()
	} else if !c.turn.TryLock() {
		return false // the writer began a transaction: wait for it to idle again
	}
	defer c.turn.Unlock()
	if c.ctx.Err() != nil {
		return true
	}
	mode := Restart
	if c.largest > 3*c.opts.MaxPages {
		mode = Truncate
	}
	n := c.commits.Load()
	if r := c.checkpoint(mode); r.Err == nil && !r.Busy {
		// The next commit starts the WAL from its beginning.
		c.frames, c.base = 0, n
		if mode == Truncate {
			c.largest = 0
		}
	}
	return true
}

// grown estimates the pages appended to the WAL since it was last measured.
func (c *Checkpointer) grown(n int64) float64 {
	return float64(n-c.base) * c.perCommit
}

// schedule sets the commit count at which EndWrite wakes the goroutine: the
// next PASSIVE checkpoint, or twice MaxPages when a reset is waiting.
func (c *Checkpointer) schedule() {
	due := c.base + int64(math.Ceil(float64(c.opts.Pages)/c.perCommit))
	if c.reset {
		left := max(2*float64(c.opts.MaxPages)-float64(c.frames), 0)
		due = min(due, c.base+int64(math.Ceil(left/c.perCommit)))
	}
	c.due.Store(max(due, c.base+1))
}

// passive runs a PASSIVE checkpoint, n being the commit count read before
// it, and reports whether it measured the WAL.
func (c *Checkpointer) passive(n int64) bool {
	r := c.checkpoint(Passive)
	if r.Err != nil || r.Log < 0 {
		c.base = n // try again after another Pages of growth
		return false
	}
	appended := r.Log - c.frames
	if r.Log < c.frames { // the WAL restarted in between
		appended = r.Log
	}
	if d := n - c.base; d > 0 && appended > 0 {
		c.perCommit = max((c.perCommit+float64(appended)/float64(d))/2, 1)
	}
	c.frames, c.base = r.Log, n
	c.largest = max(c.largest, r.Log)
	return true
}

// checkpoint runs one checkpoint and reports it.
func (c *Checkpointer) checkpoint(mode Mode) Result {
	if c.opts.Before != nil {
		c.opts.Before(mode)
	}
	r := Result{Mode: mode}
	var busy int
	if mode == Passive {
		r.Err = c.db.QueryRowContext(c.ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &r.Log, &r.Checkpointed)
	} else {
		busy, r.Log, r.Checkpointed, r.Err = c.resetNoWait(mode)
	}
	r.Busy = busy != 0
	if r.Err == nil && !r.Busy && r.Log < 0 {
		c.off = true // not in WAL mode
	}
	c.report(r)
	return r
}

// resetNoWait runs a RESTART or TRUNCATE checkpoint on a connection whose
// busy timeout is zero for the call, so it never waits for a reader (or
// another process's writer) while the writer waits for it.
func (c *Checkpointer) resetNoWait(mode Mode) (busy int, log, done int64, err error) {
	conn, err := c.db.Conn(c.ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	defer conn.Close()
	var prev int
	if err := conn.QueryRowContext(c.ctx, "PRAGMA busy_timeout").Scan(&prev); err != nil {
		return 0, 0, 0, err
	}
	if _, err := conn.ExecContext(c.ctx, "PRAGMA busy_timeout = 0"); err != nil {
		return 0, 0, 0, err
	}
	defer func() {
		// The connection goes back to the pool: with its own timeout, or
		// not at all.
		if _, rerr := conn.ExecContext(context.WithoutCancel(c.ctx), fmt.Sprintf("PRAGMA busy_timeout = %d", prev)); rerr != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	err = conn.QueryRowContext(c.ctx, "PRAGMA wal_checkpoint("+string(mode)+")").Scan(&busy, &log, &done)
	return busy, log, done, err
}

func (c *Checkpointer) report(r Result) {
	if r.Err != nil && c.ctx.Err() == nil {
		if msg := r.Err.Error(); msg != c.lastErr {
			c.opts.Logger.Warn("sqlite WAL checkpoint failed; retrying after more commits",
				"path", c.opts.Path, "mode", string(r.Mode), "error", r.Err)
			c.lastErr = msg
		}
	} else if r.Err == nil {
		c.lastErr = ""
	}
	if c.opts.Observe != nil {
		c.opts.Observe(r)
	}
}
