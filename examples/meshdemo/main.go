// Command meshdemo is the leasemesh mesh demo: a dispatcher, a diagnostics
// page, a seeder and workers, in one process or spread over many.
//
//	go run ./examples/meshdemo
//
// main is thin: everything happens in app.Run, which tests call directly.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := app.Run(ctx, os.Args[1:])
	stop()
	if err == nil || errors.Is(err, context.Canceled) {
		return
	}
	fmt.Fprintln(os.Stderr, "meshdemo:", err)
	os.Exit(1)
}
