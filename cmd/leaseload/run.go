package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strings"

	"github.com/leasemesh/leasemesh/transport"
)

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // an RPC failed, the run was interrupted or could not start
	exitUsage = 2 // the command line is wrong: one line on stderr says why
)

// Report modes.
const (
	modeSelf   = "self"
	modeTarget = "target"
)

// run runs leaseload with args (without the program name) and returns the
// exit status: main without the process, for tests to call.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args)
	if errors.Is(err, flag.ErrHelp) {
		printUsage(stdout)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "leaseload: %v\n", err)
		return exitUsage
	}
	rep, err := load(ctx, cfg, stderr)
	if rep != nil {
		// Even when stopping the servers failed, the load was measured.
		write := writeText
		if cfg.json {
			write = writeJSON
		}
		if werr := write(stdout, rep); werr != nil {
			err = errors.Join(err, fmt.Errorf("writing the report: %w", werr))
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "leaseload: %v\n", err)
		return exitError
	}
	if !rep.OK {
		fmt.Fprintf(stderr, "leaseload: %s\n", errSummary(rep))
		return exitError
	}
	return exitOK
}

// load starts what the mode needs, runs the phases and stops everything
// again. Its error is one that kept the load from running at all.
func load(ctx context.Context, cfg *config, stderr io.Writer) (rep *report, err error) {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep = &report{
		Mode: modeTarget, Service: cfg.service, Namespace: cfg.namespace, Concurrency: cfg.concurrency,
		DurationSec: cfg.duration.Seconds(), CycleLimit: cfg.cycles, WarmupSec: cfg.warmup.Seconds(), WaitMs: cfg.waitMs,
		GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0), NumCPU: runtime.NumCPU(),
	}
	rpcURL, urls := "", cfg.targets()
	if len(urls) > 0 {
		rpcURL = strings.Join(urls, ",") // as reported
	}
	if cfg.self() {
		rep.Mode, rep.Storage, rep.Synchronous = modeSelf, cfg.storage, string(cfg.synchronous)
		sd, err := startSelfDispatcher(ctx, cfg, logger)
		if err != nil {
			return nil, fmt.Errorf("starting the -self dispatcher: %w", err)
		}
		defer func() {
			if cerr := sd.close(); cerr != nil && err == nil {
				err = fmt.Errorf("stopping the -self dispatcher: %w", cerr)
			}
		}()
		rpcURL, urls = sd.url, []string{sd.url}
	}

	hc := newHTTPClient(cfg.concurrency)
	defer hc.CloseIdleConnections()
	client, err := transport.NewClient("", transport.ClientConfig{
		URLs:    urls,
		Service: cfg.service, Namespace: cfg.namespace, Caller: cfg.caller, HTTPClient: hc,
	})
	if err != nil {
		return nil, err
	}
	defer client.Close()
	lm := newLeasemeshWorkload(client, cfg.waitMs)
	lm.batch = cfg.batch

	var specs []phaseSpec
	if cfg.echo {
		echo, err := startServer(echoHandler())
		if err != nil {
			return nil, fmt.Errorf("starting the echo server: %w", err)
		}
		defer func() {
			if cerr := echo.close(); cerr != nil && err == nil {
				err = fmt.Errorf("stopping the echo server: %w", cerr)
			}
		}()
		url := echo.url + "/echo"
		ew := newEchoWorkload(hc, url, lm.body)
		fmt.Fprintf(stderr, "leaseload: echo ceiling %s: %s\n", url, phasePlan(cfg, 3))
		// Its idle connections go after each of its slices: the leasemesh
		// phases then hold only their own.
		specs = append(specs, phaseSpec{name: procEcho, url: url, procs: []string{procEcho}, limit: 3 * cfg.cycles,
			unit: ew.post, after: hc.CloseIdleConnections})
	}
	fmt.Fprintf(stderr, "leaseload: leasemesh %s: %s\n", rpcURL, phasePlan(cfg, 1))
	specs = append(specs, phaseSpec{name: phasePerItem, url: rpcURL, procs: []string{procEnqueue, procLease, procComplete},
		limit: cfg.cycles, unit: lm.cycle})
	if cfg.batch > 0 {
		units := int64(0)
		if cfg.cycles > 0 {
			units = max(cfg.cycles/int64(cfg.batch), 1)
		}
		fmt.Fprintf(stderr, "leaseload: leasemesh in batches of %d %s: %s\n", cfg.batch, rpcURL, phasePlan(cfg, 1))
		specs = append(specs, phaseSpec{name: phaseBatch, url: rpcURL, procs: []string{procEnqueueBatch, procLeaseBatch, procCompleteBatch},
			limit: units, unit: lm.batchCycle})
	}
	rep.Rounds = cfg.rounds
	rep.Phases = runPhases(ctx, cfg, specs)

	rep.Interrupted = ctx.Err() != nil
	rep.OK = !rep.Interrupted
	for _, p := range rep.Phases {
		if p.Errors > 0 || p.WarmupErrors > 0 {
			rep.OK = false
		}
	}
	echo, perItem, batch := rep.phase(procEcho), rep.phase(phasePerItem), rep.phase(phaseBatch)
	if echo != nil && perItem != nil && echo.RPCsPerSecond > 0 {
		rep.LeasemeshToEcho = perItem.RPCsPerSecond / echo.RPCsPerSecond
	}
	if batch != nil && perItem != nil && perItem.CyclesPerSecond != nil && *perItem.CyclesPerSecond > 0 {
		rep.BatchSize = cfg.batch
		rep.BatchToPerItem = *batch.CyclesPerSecond / *perItem.CyclesPerSecond
	}
	return rep, nil
}

// phasePlan describes what a phase is about to do, for stderr.
func phasePlan(cfg *config, perCycle int64) string {
	s := fmt.Sprintf("%d goroutines, warmup %v, then ", cfg.concurrency, cfg.warmup)
	if cfg.rounds > 1 {
		s = fmt.Sprintf("%d goroutines, warmup %v, then in %d slices interleaved with the other phases: ", cfg.concurrency, cfg.warmup, cfg.rounds)
	}
	if cfg.cycles > 0 {
		unit := "cycles"
		if perCycle > 1 {
			unit = "POSTs"
		}
		return s + fmt.Sprintf("%d %s (at most %v)", perCycle*cfg.cycles, unit, cfg.duration)
	}
	return s + cfg.duration.String()
}
