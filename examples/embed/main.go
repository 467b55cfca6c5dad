// Command embed shows leasemesh embedded in an existing Go service: a durable
// Dispatcher on SQLite, its RPC handler mounted on the service's own
// http.ServeMux next to the service's other routes, and a worker that leases
// through the Go client. It enqueues a few items, works them off and exits.
//
//	go run ./examples/embed
package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
	"github.com/leasemesh/leasemesh/transport"
	"github.com/leasemesh/leasemesh/worker"
)

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

// run enqueues n items through the service's own HTTP endpoint and works them
// off with one worker; it returns once all n are completed.
func run(ctx context.Context, dataDir string, n int) error {
	// 1. Durable storage: queue state and the replication log in one SQLite file.
	db, err := sqlitedb.Open(ctx, filepath.Join(dataDir, "replication.db"), sqlitedb.Options{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		return err
	}
	defer db.Close()
	repl, err := replication.NewSQLiteReplicator(ctx, db, replication.SQLiteOptions{Path: "replication.db"})
	if err != nil {
		return err
	}
	defer repl.Close()

	// 2. The Dispatcher rebuilds the queue from what the replicator stored.
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Replicator: repl})
	if err != nil {
		return err
	}
	defer d.Close()

	// 3. Mount the protocol on the service's existing mux.
	rpc, err := transport.NewHandler(d, transport.HandlerConfig{Service: "orders"})
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.Handle("/yarpc/v1", rpc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())

	// 4. Producers and workers anywhere on the network use the client.
	client, err := transport.NewClient("http://"+ln.Addr().String()+"/yarpc/v1", transport.ClientConfig{Service: "orders", Caller: "billing"})
	if err != nil {
		return err
	}
	defer client.Close()
	for i := 1; i <= n; i++ {
		_, err := client.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
			ResourceType: "order", ResourceID: fmt.Sprintf("order-%04d", i), PartitionKey: "tenant-1",
			PayloadEncoding: "application/json", Body: []byte(`{"total":42}`),
		}})
		if err != nil {
			return err
		}
	}

	workCtx, stop := context.WithCancel(ctx)
	defer stop()
	var done atomic.Int64
	worker, err := worker.New(client, worker.Config{
		PeerID: "worker-1",
		Handler: func(ctx context.Context, l *resourcelease.Lease) error {
			fmt.Printf("processed %s (attempt %d)\n", l.Payload.ResourceID, l.Attempt)
			if done.Add(1) == int64(n) {
				stop() // all done: the worker completes this lease, then returns
			}
			return nil // nil completes the lease; an error fails it with requeue
		},
	})
	if err != nil {
		return err
	}
	if err := worker.Run(workCtx); err != nil {
		return err
	}
	st, err := client.Stats(ctx, &resourcelease.StatsRequest{})
	if err != nil {
		return err
	}
	completed := worker.Stats().Completed
	fmt.Printf("pending=%d active=%d completed=%d\n", st.PendingCount, st.ActiveLeaseCount, completed)
	if st.PendingCount != 0 || st.ActiveLeaseCount != 0 || completed != int64(n) {
		return fmt.Errorf("embed: want all %d items completed, got %+v and %d completed", n, st, completed)
	}
	return nil
}
