// Command meshdemo is the leasemesh mesh demo: a dispatcher, a diagnostics
// page, a seeder and workers, in one process or spread over many.
//
//	go run ./examples/meshdemo                       # every role, one process
//	go run ./examples/meshdemo -- --meshDemo:roles=worker --meshDemo:workerPeerId=mesh-worker-a
//	go run ./examples/meshdemo -h                    # every setting
//
// main is thin: everything happens in app.Main.Run, which tests call directly.
// A configuration mistake prints one line and exits with code 2.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.NewMain().Run(ctx, os.Args[1:])
	stop()
	code := app.ExitCode(err)
	if code != 0 {
		fmt.Fprintln(os.Stderr, "meshdemo:", err)
	}
	os.Exit(code)
}
