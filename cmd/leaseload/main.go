// Leaseload is leasemesh's load tool for the HTTP path: it runs
// a bounded load over HTTP on loopback and prints a report.
//
//	leaseload -self -storage memory -concurrency 8 -duration 10s
//	leaseload -self -storage sqlite -synchronous NORMAL -duration 10s
//	leaseload -target http://127.0.0.1:7420/yarpc/v1 \
//	  -service resourcelease-mesh-demo -namespace resourcelease.mesh
//
// By default (-self) it starts, in this process, a dispatcher served by
// transport.NewHandler on 127.0.0.1:0 — storage memory, or sqlite in a
// temporary directory removed at exit, with -synchronous FULL (the default)
// or NORMAL — and a bare net/http JSON echo handler on another 127.0.0.1:0
// port. With -target it loads an existing dispatcher instead (the echo
// server is still in process).
//
// A run has two phases, each an unmeasured -warmup then the measured load,
// with the same HTTP client (keep-alive, an idle connection per worker) and
// -concurrency goroutines:
//
//  1. echo, the ceiling: POSTs of JSON bodies shaped like the three requests
//     of a cycle to the echo handler, which decodes each into a small struct
//     and encodes a small JSON response;
//  2. leasemesh: each goroutine loops enqueue → lease (long-poll, -wait-ms)
//     → complete through one shared transport.Client.
//
// A phase stops after -duration (at most 5 minutes), after -cycles cycles
// (the echo phase after three times as many POSTs), after more than
// -max-errors failed RPCs, or on SIGINT; a cycle in flight is finished, not
// abandoned, so a phase can run past -duration by one cycle (against the full
// demo, an enqueue held by its backpressure can take seconds) and rates are
// over the measured wall time the report gives. The report gives, per phase, RPCs/s (successful RPCs over the
// measured wall time), cycles/s, errors by status with the first message of
// each, and the mean, p50, p90, p99 and max latency per procedure, for all
// RPCs and (leasemesh) for the whole cycle. Latencies go into log-linear
// HDR-style histograms (fixed memory, buckets at most 1.6 % wide; a
// percentile is its bucket's upper bound, never above the maximum). -json
// prints the report as JSON.
//
// In -self mode client and servers share the machine's CPUs, so RPCs/s
// measure the whole loop, the echo ceiling's as much as leasemesh's.
//
// Loopback only: -target must be localhost, 127.0.0.0/8 or ::1 (anything
// else is refused with exit status 2), every connection's resolved address
// is checked again, and the client uses no proxy and follows no redirect.
// In -target mode leaseload completes whatever it leases, other producers'
// items too (counted as foreign leases): point it at a disposable queue such
// as the demo's, never at one whose items matter.
//
// Exit status: 0 when every RPC succeeded; 1 when one failed (warmups
// included), when the run was interrupted or could not start; 2 for a usage
// error, with a one-line message.
//
// cgo: unlike cmd/leasectl, leaseload imports package sqlitedb for -self
// -storage sqlite, so it links the cgo SQLite driver. Built with
// CGO_ENABLED=0 it still builds and runs, but -storage sqlite then fails at
// start with the driver's "requires cgo" error.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first SIGINT or SIGTERM cancels ctx: the phase stops, the report
	// of what was measured is printed and the servers are shut down. Then
	// stop restores the default behaviour, so a second signal kills at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	context.AfterFunc(ctx, stop)
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
