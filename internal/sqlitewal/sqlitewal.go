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
// is not the writer's, every Pages pages or so: a PASSIVE checkpoint takes
// no lock a commit waits for and never waits itself, so commits go on while
// it copies. What it cannot do is end the WAL while commits keep arriving:
// it copies what was there when it started, and the WAL restarts only if no
// commit came meanwhile. Under a load that never pauses (or while a reader
// keeps an old snapshot open) the WAL would grow without end, so once a
// PASSIVE checkpoint finds it at MaxPages or more, the Checkpointer resets
// it with a RESTART checkpoint, which needs the write lock. The writer
// brackets each of its transactions with BeginWrite and EndWrite, so the
// Checkpointer can take that turn itself: when the writer is idle, right
// after another PASSIVE checkpoint has copied nearly everything, so that
// the reset only copies the last few pages, on a connection whose busy
// timeout is zero, so that it never waits for a reader (it gives up until
// the next round) or another process's writer. A commit that arrives
// meanwhile waits for it.
//
// If the writer is never idle and the WAL reaches twice MaxPages anyway (a
// PASSIVE checkpoint on a slow disk can take tens of milliseconds, while a
// busy writer appends thousands of pages), EndWrite notices and holds the
// writer's next transaction until the Checkpointer has reset the WAL: the
// one case where a commit is made to wait on purpose, for about one
// checkpoint. If a reader's snapshot makes that reset fail, the writer goes
// on and is held again only after another MaxPages.
//
// A RESTART reuses the WAL file; if the file had grown past three times
// MaxPages (a reader held an old snapshot for long, or checkpoints failed),
// the reset is a TRUNCATE instead, which gives the space back.
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
	// of them are now copied into the database; -1 when unknown.
	Log, Checkpointed int64
	Err               error
}

// Options configures Start. Pages and MaxPages are required.
type Options struct {
	// Pages: a PASSIVE checkpoint runs once about this many pages were
	// appended to the WAL since the last one.
	Pages int64
	// MaxPages: a WAL found at or above it is reset at the writer's next
	// idle moment, and the writer is held at twice it until it is (see the
	// package doc). At least Pages.
	MaxPages int64
	// Idle reports whether the writer has nothing to commit right now. nil
	// means it never is.
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
	// OnHold, if set, runs on the writer's goroutine when BeginWrite starts
	// waiting for a reset at the hard bound.
	OnHold func()
}

// initialFramesPerCommit is the guess of the WAL pages a commit appends
// that schedules the first checkpoint, which measures it: a guess above the
// usual 2–6 makes that checkpoint come early rather than late. Until then
// the hard bound counts one page per commit, the least a commit appends, so
// that a first checkpoint held up never holds the writer early.
const initialFramesPerCommit = 8

// Checkpointer owns the goroutine that checkpoints one database. The writer
// brackets each transaction with BeginWrite and EndWrite and reports its
// idle moments with Idle; Close stops the goroutine.
type Checkpointer struct {
	db   *sql.DB
	opts Options

	turn    sync.Mutex                    // held by the writer for each transaction, and by a reset
	hold    atomic.Pointer[chan struct{}] // set by EndWrite at the hard bound; closed after the reset
	commits atomic.Int64                  // counted by EndWrite
	due     atomic.Int64                  // EndWrite wakes the goroutine once commits reach it
	// The last measurement of the WAL, for EndWrite's estimate: pages in
	// it, the commit count then, and pages appended per commit (float64
	// bits; 1 until measured). Written by the goroutine only.
	frames    atomic.Int64
	base      atomic.Int64
	perCommit atomic.Uint64
	limit     atomic.Int64 // EndWrite holds the writer when the estimate reaches it
	wantIdle  atomic.Bool  // a reset waits for the writer's next idle moment
	wake      chan struct{}
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{}
	once      sync.Once

	// Owned by the goroutine.
	largest int64  // the most pages measured since the WAL file was last truncated
	sampled bool   // perCommit is measured, not the initial guess
	reset   bool   // the WAL passed MaxPages: reset it at an idle moment
	off     bool   // the database is not in WAL mode: nothing to do
	lastErr string // the last failure logged, so a persistent one is logged once
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
	}
	c.perCommit.Store(math.Float64bits(1))
	c.limit.Store(2 * opts.MaxPages)
	c.schedule()
	go c.run()
	return c, nil
}

// BeginWrite is called by the writer before it begins a transaction. It
// waits only while the Checkpointer resets the WAL (see the package doc).
func (c *Checkpointer) BeginWrite() {
	if h := c.hold.Load(); h != nil {
		if c.opts.OnHold != nil {
			c.opts.OnHold()
		}
		select {
		case <-*h: // the mutex alone would let the writer barge in before the reset
		case <-c.done:
		}
	}
	c.turn.Lock()
}

// EndWrite is called by the writer after its transaction committed (or
// rolled back). It never blocks: it wakes the goroutine when a checkpoint
// is due, and at the hard bound has the next BeginWrite wait for a reset.
func (c *Checkpointer) EndWrite(committed bool) {
	c.turn.Unlock()
	if !committed {
		return
	}
	n := c.commits.Add(1)
	if c.hold.Load() == nil && c.estimate(n) >= float64(c.limit.Load()) {
		h := make(chan struct{})
		c.hold.CompareAndSwap(nil, &h)
		c.signal()
		return
	}
	if n >= c.due.Load() {
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

// Close stops the goroutine and waits for it, which lets a checkpoint in
// progress finish: interrupting SQLite there could leave the connection
// marked interrupted, and the *sql.DB's own checkpoint when it closes would
// then fail and leave the WAL behind. A writer held for a reset goes on.
// Safe to call twice.
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

// estimate is the pages in the WAL now, n being the commit count.
func (c *Checkpointer) estimate(n int64) float64 {
	return float64(c.frames.Load()) + c.grown(n)
}

// grown estimates the pages appended to the WAL since it was last measured.
func (c *Checkpointer) grown(n int64) float64 {
	return float64(n-c.base.Load()) * math.Float64frombits(c.perCommit.Load())
}

// isDue reports whether a PASSIVE checkpoint is due at commit count n.
func (c *Checkpointer) isDue(n int64) bool {
	return float64(n-c.base.Load())*c.perCommitGuess() >= float64(c.opts.Pages)
}

// perCommitGuess is perCommit once measured, else initialFramesPerCommit.
// Only the goroutine calls it.
func (c *Checkpointer) perCommitGuess() float64 {
	if !c.sampled {
		return initialFramesPerCommit
	}
	return math.Float64frombits(c.perCommit.Load())
}

func (c *Checkpointer) run() {
	defer close(c.done)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
		}
		if c.off {
			if h := c.hold.Swap(nil); h != nil {
				close(*h)
			}
			continue
		}
		c.step()
	}
}

// step runs the checkpoints that are due.
func (c *Checkpointer) step() {
	if h := c.hold.Load(); h != nil {
		c.forcedReset(h)
	}
	if c.ctx.Err() != nil {
		return
	}
	if c.isDue(c.commits.Load()) {
		if c.passive() {
			c.reset = c.frames.Load() >= c.opts.MaxPages
		}
	}
	if c.reset && c.opts.Idle() {
		// Once per PASSIVE round that found the WAL over MaxPages: now if
		// the writer is idle, else at its next idle moment.
		if c.grown(c.commits.Load()) >= float64(c.opts.Pages)/16 || !c.sampled {
			// Copy what the last round left, without the writer's turn, so
			// that the reset itself has almost nothing to copy.
			c.passive()
		}
		if tried, _ := c.resetWAL(false); tried {
			c.reset = false
		}
	}
	c.wantIdle.Store(c.reset)
	c.schedule()
}

// forcedReset resets the WAL while h holds the writer, then lets it go. If
// a reader's snapshot is in the way, the writer is held again only after
// another MaxPages.
func (c *Checkpointer) forcedReset(h *chan struct{}) {
	defer func() {
		c.hold.Store(nil)
		close(*h)
	}()
	if _, ok := c.resetWAL(true); !ok {
		c.limit.Store(int64(c.estimate(c.commits.Load())) + c.opts.MaxPages)
	}
	c.reset = false
}

// schedule sets the commit count at which EndWrite wakes the goroutine for
// the next PASSIVE checkpoint.
func (c *Checkpointer) schedule() {
	per := c.perCommitGuess()
	base := c.base.Load()
	c.due.Store(max(base+int64(math.Ceil(float64(c.opts.Pages)/per)), base+1))
}

// passive runs a PASSIVE checkpoint and reports whether it measured the
// WAL.
func (c *Checkpointer) passive() bool {
	r, n := c.checkpoint()
	if r.Err != nil || r.Log < 0 {
		c.base.Store(n) // try again after another Pages of growth
		return false
	}
	frames, base := c.frames.Load(), c.base.Load()
	appended := r.Log - frames
	if r.Log < frames { // the WAL restarted in between
		appended = r.Log
		c.limit.Store(2 * c.opts.MaxPages) // whatever a reader's snapshot made it before
	}
	if d := n - base; d > 0 && appended > 0 {
		per := float64(appended) / float64(d)
		if c.sampled {
			per = (per + math.Float64frombits(c.perCommit.Load())) / 2
		}
		c.perCommit.Store(math.Float64bits(max(per, 1)))
		c.sampled = true
	}
	c.measured(r.Log, n)
	c.largest = max(c.largest, r.Log)
	return true
}

// measured records that the WAL held frames pages at commit count n.
func (c *Checkpointer) measured(frames, n int64) {
	c.frames.Store(frames)
	c.base.Store(n)
}

// checkpoint runs a PASSIVE checkpoint and reports it, with the commit
// count read just before SQLite measured the WAL (so that the pages per
// commit are measured right however long the wait for the pool, or the
// checkpoint, took).
func (c *Checkpointer) checkpoint() (Result, int64) {
	const mode = Passive
	if c.opts.Before != nil {
		c.opts.Before(mode)
	}
	r := Result{Mode: mode, Log: -1, Checkpointed: -1}
	var busy int
	n := c.commits.Load()
	conn, err := c.db.Conn(c.ctx) // the context only bounds the wait for the pool (see Close)
	if err == nil {
		n = c.commits.Load()
		err = conn.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &r.Log, &r.Checkpointed)
		conn.Close()
	}
	r.Err = err
	r.Busy = busy != 0
	if r.Err == nil && !r.Busy && r.Log < 0 {
		c.off = true // not in WAL mode
		c.limit.Store(math.MaxInt64)
	}
	c.report(r)
	return r, n
}

// resetWAL resets the WAL in the writer's turn: waiting for the transaction
// in progress if force, else only if the writer is not in one. It reports
// whether it tried and whether the WAL was reset.
func (c *Checkpointer) resetWAL(force bool) (tried, ok bool) {
	mode := Restart
	if c.largest > 3*c.opts.MaxPages {
		mode = Truncate
	}
	if c.opts.Before != nil {
		c.opts.Before(mode)
	}
	// The connection first: waiting for the pool must not hold the writer.
	conn, restore, err := c.noWaitConn()
	if err != nil {
		c.report(Result{Mode: mode, Log: -1, Checkpointed: -1, Err: err})
		return true, false
	}
	defer restore()
	if force {
		c.turn.Lock()
	} else if !c.turn.TryLock() {
		return false, false // the writer began a transaction: wait for it to idle again
	}
	defer c.turn.Unlock()
	n := c.commits.Load()
	r := Result{Mode: mode, Log: -1, Checkpointed: -1}
	var busy int
	r.Err = conn.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+string(mode)+")").Scan(&busy, &r.Log, &r.Checkpointed)
	r.Busy = busy != 0
	ok = r.Err == nil && !r.Busy && r.Log >= 0
	if ok {
		// The next commit starts the WAL from its beginning.
		c.measured(0, n)
		c.limit.Store(2 * c.opts.MaxPages)
		if mode == Truncate {
			c.largest = 0
		}
	}
	c.report(r)
	return true, ok
}

// noWaitConn takes a pool connection and sets its busy timeout to zero, so
// that a reset on it never waits for a reader (or another process's writer)
// while the writer waits for the reset. restore gives the connection back
// to the pool with its own timeout, or closes it.
func (c *Checkpointer) noWaitConn() (conn *sql.Conn, restore func(), err error) {
	if conn, err = c.db.Conn(c.ctx); err != nil {
		return nil, nil, err
	}
	var prev int
	ctx := context.Background() // never interrupt SQLite (see Close)
	if err = conn.QueryRowContext(ctx, "PRAGMA busy_timeout").Scan(&prev); err == nil {
		_, err = conn.ExecContext(ctx, "PRAGMA busy_timeout = 0")
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	return conn, func() {
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", prev)); err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}, nil
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
