// Command embed shows leasemesh embedded in an existing Go service: a durable
// dispatcher on a SQLite data directory opened in one call, its RPC handler
// mounted on the service's own http.ServeMux beside the service's other
// routes, a producer that enqueues Go values and a typed worker that leases
// them through the Go client. It works off a few orders and exits.
//
//	go run ./examples/embed
//
// The part between the readme markers is the README's "Use it in your
// service", word for word; a test checks that the two agree.
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"sync/atomic"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitestore"
	"github.com/leasemesh/leasemesh/transport"
	"github.com/leasemesh/leasemesh/worker"
)

// Order is the typed payload of "order" work.
type Order struct {
	Total int `json:"total"`
}

func main() {
	dir, err := os.MkdirTemp("", "leasemesh-embed-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := run(context.Background(), dir, 3); err != nil {
		log.Fatal(err)
	}
}

// run enqueues n orders through the service's own HTTP endpoint and works them
// off with one worker; it returns once all n are completed.
func run(ctx context.Context, dataDir string, n int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String() + "/yarpc/v1"
	mux := http.NewServeMux() // the service's own mux and server
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	// NewServer: header, body and write deadlines that spare long-polls,
	// bounded headers and connections.
	srv, err := transport.NewServer(mux, transport.ServerConfig{})
	if err != nil {
		return err
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	workCtx, stop := context.WithCancel(ctx)
	defer stop()
	var done atomic.Int64
	process := func(_ context.Context, o Order) error {
		if done.Add(1) == int64(n) {
			stop() // all done: the worker completes this lease, then returns
		}
		return nil
	}

	// readme:start
	d, err := leasemesh.Open(ctx, leasemesh.Config{Storage: sqlitestore.Dir(dataDir)}) // rebuilds from disk
	if err != nil {
		return err
	}
	defer d.Close()
	mux.Handle("/yarpc/v1", d.Handler()) // beside your own routes

	// Anywhere on the network: producers and workers use the Go client.
	client, err := transport.NewClient(url, transport.ClientConfig{})
	if err != nil {
		return err
	}
	defer client.Close()
	for i := range n {
		item := resourcelease.Item{ResourceType: "order", ResourceID: fmt.Sprint("order-", i), PartitionKey: "tenant-1"}
		if _, err := resourcelease.Enqueue(ctx, client, item, Order{Total: 42}); err != nil {
			return err
		}
	}
	handlers := worker.NewMux()
	worker.Handle(handlers, "order", func(ctx context.Context, job *worker.Job[Order]) error {
		return process(ctx, job.Value) // nil completes; an error fails with requeue
	})
	w, err := worker.New(client, worker.Config{Handler: handlers.Work})
	if err != nil {
		return err
	}
	err = w.Run(workCtx) // heartbeats while it works; on cancel, hands back in-flight leases
	// readme:end
	if err != nil {
		return err
	}
	st, err := client.Stats(ctx, &resourcelease.StatsRequest{})
	if err != nil {
		return err
	}
	completed := w.Stats().Completed
	fmt.Printf("pending=%d active=%d completed=%d\n", st.PendingCount, st.ActiveLeaseCount, completed)
	if st.PendingCount != 0 || st.ActiveLeaseCount != 0 || completed != int64(n) {
		return fmt.Errorf("embed: want all %d items completed, got %+v and %d completed", n, st, completed)
	}
	return nil
}
