// Package app is the mesh demo: it loads the configuration (package config),
// starts the roles it asks for and runs them until its context ends.
//
//   - dispatcher: the resourcelease dispatcher (queue + SQLite or in-memory
//     replication + deterministic capture + peer health + backpressure +
//     metrics), served over the yarpc-style HTTP protocol on rpcUrl, with the
//     control plane and /metrics on the same port;
//   - diagnostics: the /demo/* helpers, the control plane, /metrics and the live
//     page on urls (it requires the dispatcher in the same process);
//   - seeder: enqueues demo.order items through the RPC client;
//   - worker: one worker.Worker per workerPeerId, through the RPC client.
//
// Seeders and workers only ever talk to the dispatcher through the RPC client,
// also when they share its process, so one process behaves like the mesh.
// Every process serves /metrics: on the diagnostics port when it has one,
// otherwise on urls (a free loopback port unless configured).
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
)

// ExitUsage is the exit code of a configuration mistake.
const ExitUsage = 2

// Main runs the demo. Its fields say where it reads its configuration and
// writes its output; NewMain fills them from the process.
type Main struct {
	// Stdout receives the banner and the status lines.
	Stdout io.Writer
	// Stderr receives the logs.
	Stderr io.Writer
	// Environ is the environment, in os.Environ form.
	Environ []string
	// Dir is the working directory, where appsettings.json is looked for.
	Dir string
	// Started, when set, is called once every role is running.
	Started func(*Node)
}

// NewMain returns a Main reading the process's environment and working
// directory and writing to its stdout and stderr.
func NewMain() *Main {
	dir, err := os.Getwd()
	if err != nil {
		dir = "."
	}
	return &Main{Stdout: os.Stdout, Stderr: os.Stderr, Environ: os.Environ(), Dir: dir}
}

// Run loads the configuration from args and the environment, starts the
// roles and blocks until ctx ends or a role fails, then shuts down cleanly:
// workers stop leasing and requeue their in-flight leases, storage is flushed
// and closed. A clean stop returns nil. A configuration mistake is a
// *config.ConfigValidationError (exit code 2, see ExitCode).
func (m *Main) Run(ctx context.Context, args []string) error {
	cfg, err := config.Load(config.Input{Args: args, Env: m.Environ, Dir: m.Dir, Help: m.Stdout})
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	n, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	n.PrintBanner(m.Stdout)
	if m.Started != nil {
		m.Started(n)
	}
	runErr := n.Wait(ctx, m.Stdout)
	fmt.Fprintln(m.Stdout, "meshdemo: shutting down")
	closeErr := n.Close()
	fmt.Fprintln(m.Stdout, n.FinalStatusLine())
	if runErr != nil {
		return runErr
	}
	if closeErr == nil {
		fmt.Fprintln(m.Stdout, "meshdemo: stopped cleanly")
	}
	return closeErr
}

// ExitCode maps Run's error to the process exit code: 0 for a clean stop or
// -h, 2 for a configuration mistake, 1 otherwise.
func ExitCode(err error) int {
	var cve *config.ConfigValidationError
	switch {
	case err == nil, errors.Is(err, config.ErrHelp), errors.Is(err, context.Canceled):
		return 0
	case errors.As(err, &cve):
		return ExitUsage
	}
	return 1
}
