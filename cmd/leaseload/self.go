package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
	"github.com/leasemesh/leasemesh/transport"
)

// rpcPath is where the -self server mounts the RPC handler, as the demo does.
const rpcPath = "/yarpc/v1"

// shutdownTimeout bounds the wait for a server's connections at the end.
const shutdownTimeout = 5 * time.Second

// server is an http.Server on a 127.0.0.1:0 listener.
type server struct {
	srv  *http.Server
	url  string
	done chan error // Serve's result
}

// startServer serves h on a fresh loopback port; url is its base URL.
func startServer(h http.Handler) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv, err := transport.NewServer(h, transport.ServerConfig{})
	if err != nil {
		_ = ln.Close()
		return nil, err
	}
	s := &server{
		srv:  srv,
		url:  "http://" + ln.Addr().String(),
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// close shuts the server down (every worker has returned by then, so no
// request is in flight) and waits for Serve to return.
func (s *server) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// selfDispatcher is the -self dispatcher, its storage and its server.
type selfDispatcher struct {
	dir    string // sqlite only: the temporary data directory
	db     interface{ Close() error }
	repl   interface{ Close() error }
	disp   *resourcelease.LocalDispatcher
	server *server
	url    string
}

// startSelfDispatcher composes a dispatcher like examples/embed's (queue
// defaults plus a replicator: in memory, or SQLite in a temporary directory)
// and serves it with transport.NewHandler at rpcPath. On error what was
// started is closed again.
func startSelfDispatcher(ctx context.Context, cfg *config, logger *slog.Logger) (sd *selfDispatcher, err error) {
	sd = &selfDispatcher{}
	defer func() {
		if err != nil {
			err = errors.Join(err, sd.close())
			sd = nil
		}
	}()
	var repl resourcelease.Replicator
	switch cfg.storage {
	case storageSQLite:
		if sd.dir, err = os.MkdirTemp("", "leaseload-"); err != nil {
			return sd, err
		}
		path := filepath.Join(sd.dir, "replication.db")
		db, oerr := sqlitedb.Open(ctx, path, sqlitedb.Config{Synchronous: cfg.synchronous})
		if oerr != nil {
			return sd, fmt.Errorf("%w (a binary built with CGO_ENABLED=0 has no SQLite: use -storage memory)", oerr)
		}
		sd.db = db
		r, rerr := replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: path, Logger: logger})
		if rerr != nil {
			return sd, rerr
		}
		sd.repl, repl = r, r
	default:
		r, rerr := replication.NewMemoryReplicator(replication.MemoryConfig{Logger: logger})
		if rerr != nil {
			return sd, rerr
		}
		sd.repl, repl = r, r
	}
	if sd.disp, err = resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Replicator: repl, Logger: logger}); err != nil {
		return sd, err
	}
	h, err := transport.NewHandler(sd.disp, transport.HandlerConfig{Service: cfg.service, Namespace: cfg.namespace, Logger: logger})
	if err != nil {
		return sd, err
	}
	mux := http.NewServeMux()
	mux.Handle(rpcPath, h)
	if sd.server, err = startServer(mux); err != nil {
		return sd, err
	}
	sd.url = sd.server.url + rpcPath
	return sd, nil
}

// close stops the server, then the dispatcher, the replicator and the
// database, in that order, and removes the data directory.
func (sd *selfDispatcher) close() error {
	var errs []error
	if sd.server != nil {
		errs = append(errs, sd.server.close())
	}
	if sd.disp != nil {
		errs = append(errs, sd.disp.Close())
	}
	if sd.repl != nil {
		errs = append(errs, sd.repl.Close())
	}
	if sd.db != nil {
		errs = append(errs, sd.db.Close())
	}
	if sd.dir != "" {
		errs = append(errs, os.RemoveAll(sd.dir))
	}
	return errors.Join(errs...)
}
