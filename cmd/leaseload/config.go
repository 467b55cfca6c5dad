package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/sqlitedb"
	"github.com/leasemesh/leasemesh/transport"
)

// Limits and defaults of the flags.
const (
	defaultConcurrency = 8
	maxConcurrency     = 1024
	defaultDuration    = 10 * time.Second
	maxDuration        = 5 * time.Minute
	defaultWarmup      = time.Second
	maxWarmup          = time.Minute
	defaultWaitMs      = 1000
	maxWaitMs          = 60_000
	defaultMaxErrors   = 100
	storageMemory      = "memory"
	storageSQLite      = "sqlite"
	defaultCaller      = "leaseload"
	maxBatch           = 1000 // resourcelease.MaxBatchItems
	maxRounds          = 100
)

// config is a parsed, validated command line.
type config struct {
	target      string // "" in -self mode
	storage     string // -self only: storageMemory or storageSQLite
	synchronous sqlitedb.Synchronous
	service     string
	namespace   string
	caller      string
	concurrency int
	// duration bounds each measured phase. With -cycles and no -duration it
	// is maxDuration, a safety bound rather than a target.
	duration time.Duration
	cycles   int64 // 0: no cycle bound
	warmup   time.Duration
	waitMs   int64
	// batch > 0 adds a phase of batch cycles of that many items
	// (enqueueBatch → leaseBatch → completeBatch) after the per-item one.
	batch int
	// rounds > 1 splits each phase into that many slices, interleaved.
	rounds    int
	echo      bool
	json      bool
	maxErrors int64
}

func (c *config) self() bool { return c.target == "" }

// targets are the -target URLs: one, or a comma list of the dispatchers
// of one mesh.
func (c *config) targets() []string {
	var out []string
	for t := range strings.SplitSeq(c.target, ",") {
		if t = strings.TrimSpace(t); t != "" {
			out = append(out, t)
		}
	}
	return out
}

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// newFlagSet declares leaseload's flags on a fresh FlagSet, filling c.
func newFlagSet(c *config) (*flag.FlagSet, *bool, *string) {
	fs := flag.NewFlagSet("leaseload", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are one line from run; -h prints usage
	self := fs.Bool("self", false, "start an in-process dispatcher and echo server on 127.0.0.1:0 (the default when -target is not given)")
	sync := fs.String("synchronous", "", "SQLite `mode` with -storage sqlite: FULL (the default: fsync per commit, as the demo's replication.db) or NORMAL")
	fs.StringVar(&c.target, "target", "", "load an existing dispatcher at `URL` instead (loopback only, e.g. http://127.0.0.1:7420/yarpc/v1); a comma list loads several dispatchers of one mesh, the client spreading its calls over them")
	fs.StringVar(&c.storage, "storage", storageMemory, "the -self dispatcher's `storage`: memory or sqlite (in a temporary directory, removed at exit)")
	fs.StringVar(&c.service, "service", "", "the `service` name sent as Rpc-Service (and required by the -self handler); empty sends none")
	fs.StringVar(&c.namespace, "namespace", transport.DefaultNamespace, "the procedure `namespace` (the demo's is resourcelease.mesh)")
	fs.StringVar(&c.caller, "caller", defaultCaller, "the `name` sent as Rpc-Caller, which is also the lease peer id")
	fs.IntVar(&c.concurrency, "concurrency", defaultConcurrency, fmt.Sprintf("`goroutines` sending load, 1..%d", maxConcurrency))
	fs.DurationVar(&c.duration, "duration", defaultDuration, fmt.Sprintf("how long each phase is measured, at most %v; with -cycles only, %v bounds the run", maxDuration, maxDuration))
	fs.Int64Var(&c.cycles, "cycles", 0, "stop each phase after `N` enqueue→lease→complete cycles (echo: 3N POSTs); 0 means only -duration bounds it")
	fs.DurationVar(&c.warmup, "warmup", defaultWarmup, fmt.Sprintf("unmeasured load before each phase, at most %v", maxWarmup))
	fs.Int64Var(&c.waitMs, "wait-ms", defaultWaitMs, fmt.Sprintf("the lease long-poll's waitMs, 0..%d", maxWaitMs))
	fs.IntVar(&c.rounds, "rounds", 1, fmt.Sprintf("measure the phases in `N` interleaved rounds (each a slice of -duration), 1..%d, so that they share a busy machine's noise", maxRounds))
	fs.IntVar(&c.batch, "batch", 0, fmt.Sprintf("also measure batch cycles of `N` items (enqueueBatch → leaseBatch → completeBatch), 2..%d, after the per-item phase; 0: per-item only", maxBatch))
	fs.BoolVar(&c.echo, "echo", true, "measure the bare net/http JSON echo ceiling first (an in-process server, in -target mode too)")
	fs.BoolVar(&c.json, "json", false, "print the report as JSON")
	fs.Int64Var(&c.maxErrors, "max-errors", defaultMaxErrors, "end a phase early once more than `N` RPCs failed")
	return fs, self, sync
}

// parseConfig parses and validates args. Errors are *usageError, or
// flag.ErrHelp for -h.
func parseConfig(args []string) (*config, error) {
	c := &config{}
	fs, self, sync := newFlagSet(c)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q (leaseload takes only flags)", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	if c.target != "" {
		if set["self"] && *self {
			return nil, usagef("-self and -target exclude each other")
		}
		for _, name := range []string{"storage", "synchronous"} {
			if set[name] {
				return nil, usagef("-%s applies only to -self, not to -target", name)
			}
		}
		for _, t := range c.targets() {
			if _, err := checkTarget(t); err != nil {
				return nil, &usageError{msg: err.Error()}
			}
		}
		c.storage = ""
	} else {
		if set["self"] && !*self {
			return nil, usagef("-self=false needs -target URL")
		}
		switch c.storage {
		case storageMemory:
			if set["synchronous"] {
				return nil, usagef("-synchronous applies only to -storage sqlite")
			}
		case storageSQLite:
			switch s := sqlitedb.Synchronous(strings.ToUpper(*sync)); s {
			case "", sqlitedb.SynchronousFull:
				c.synchronous = sqlitedb.SynchronousFull
			case sqlitedb.SynchronousNormal:
				c.synchronous = s
			default:
				return nil, usagef("invalid -synchronous %q: want FULL or NORMAL", *sync)
			}
		default:
			return nil, usagef("invalid -storage %q: want memory or sqlite", c.storage)
		}
	}

	switch {
	case c.concurrency < 1 || c.concurrency > maxConcurrency:
		return nil, usagef("invalid -concurrency %d: want 1..%d", c.concurrency, maxConcurrency)
	case c.duration <= 0 || c.duration > maxDuration:
		return nil, usagef("invalid -duration %v: want more than 0 and at most %v", c.duration, maxDuration)
	case c.cycles < 0:
		return nil, usagef("invalid -cycles %d: want 0 (no bound) or more", c.cycles)
	case c.warmup < 0 || c.warmup > maxWarmup:
		return nil, usagef("invalid -warmup %v: want 0..%v", c.warmup, maxWarmup)
	case c.waitMs < 0 || c.waitMs > maxWaitMs:
		return nil, usagef("invalid -wait-ms %d: want 0..%d", c.waitMs, maxWaitMs)
	case c.rounds < 1 || c.rounds > maxRounds:
		return nil, usagef("invalid -rounds %d: want 1..%d", c.rounds, maxRounds)
	case c.batch < 0 || c.batch == 1 || c.batch > maxBatch:
		return nil, usagef("invalid -batch %d: want 0 (off) or 2..%d", c.batch, maxBatch)
	case c.maxErrors < 0:
		return nil, usagef("invalid -max-errors %d: want 0 or more", c.maxErrors)
	case strings.TrimSpace(c.caller) == "":
		return nil, usagef("-caller must not be empty")
	}
	if c.cycles > 0 && !set["duration"] {
		c.duration = maxDuration
	}
	return c, nil
}

// printUsage writes the help text of -h.
func printUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: leaseload [flags]

Runs a bounded load over HTTP on loopback and prints a report: first a bare
net/http JSON echo handler (the ceiling), then leasemesh, each goroutine
looping enqueue → lease → complete through transport.Client, then, with
-batch N, the same in batches of N (enqueueBatch → leaseBatch →
completeBatch), so that per-item and batch cycles are measured in one run.

  leaseload -self -storage memory -concurrency 8 -duration 10s
  leaseload -self -storage sqlite -synchronous NORMAL -cycles 5000 -json
  leaseload -self -storage sqlite -synchronous NORMAL -batch 32
  leaseload -target http://127.0.0.1:7420/yarpc/v1 \
    -service resourcelease-mesh-demo -namespace resourcelease.mesh

Only loopback targets are allowed (127.0.0.0/8, localhost, ::1). Exit status:
0 when every RPC succeeded, 1 when one failed (or the run was interrupted),
2 for a usage error.

Flags:
`)
	fs, _, _ := newFlagSet(&config{})
	fs.SetOutput(w)
	fs.PrintDefaults()
}
