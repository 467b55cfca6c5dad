package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/deterministic"
	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// stateOps are the StateStore's calls, each writing its own key, so a fault
// test can check every one of them.
var stateOps = []struct {
	name string
	call func(ctx context.Context, s *postgres.Store, key string) error
}{
	{"Get", func(ctx context.Context, s *postgres.Store, key string) error {
		_, _, err := s.StateStore().Get(ctx, key)
		return err
	}},
	{"Set", func(ctx context.Context, s *postgres.Store, key string) error {
		return s.StateStore().Set(ctx, key, resourcelease.Record{Kind: "set", Payload: []byte(key)})
	}},
	{"TryAdd", func(ctx context.Context, s *postgres.Store, key string) error {
		_, err := s.StateStore().TryAdd(ctx, key, resourcelease.Record{Kind: "tryadd", Payload: []byte(key)})
		return err
	}},
	{"TryAddMany", func(ctx context.Context, s *postgres.Store, key string) error {
		_, err := s.StateStore().TryAddMany(ctx, []deterministic.KeyedRecord{{Key: key}, {Key: key + "/2"}})
		return err
	}},
	{"Now", func(ctx context.Context, s *postgres.Store, key string) error {
		_, err := s.Now(ctx)
		return err
	}},
}

// warm opens n connections in s's pool and returns them to it idle, as a
// busy store's pool would hold them when the server goes away.
func warm(t *testing.T, s *postgres.Store, n int) {
	t.Helper()
	ctx := context.Background()
	for range n {
		c, err := s.Pool().Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Release()
	}
}

// TestServerDownIsUnavailable: with the server crashed every call answers
// unavailable at once (well inside its deadline); once the server is back
// the store reconnects by itself and nothing acknowledged is lost.
func TestServerDownIsUnavailable(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	s := openStore(t, srv.NewDatabase(t), postgres.Config{MaxConns: 4})
	ctx := context.Background()
	ss := s.StateStore()
	if added, err := ss.TryAdd(ctx, "acknowledged", resourcelease.Record{Kind: "k", Payload: []byte("kept")}); err != nil || !added {
		t.Fatalf("TryAdd = %v, %v", added, err)
	}
	warm(t, s, 4)
	if err := srv.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	for _, op := range stateOps {
		for round := range 2 { // the first may meet a dead pooled connection, the next a refused connect
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			start := time.Now()
			err := op.call(cctx, s, "down/"+op.name)
			cancel()
			if resourcelease.StatusOf(err) != resourcelease.StatusUnavailable || resourcelease.CodeOf(err) != resourcelease.CodeStorageUnavailable {
				t.Errorf("%s #%d with the server down: err = %v, want unavailable/storage_unavailable", op.name, round, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%s #%d with the server down took %v, want prompt", op.name, round, d)
			}
		}
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	// The failures above emptied the pool, so the first call after the
	// restart already works.
	for _, op := range stateOps {
		if err := op.call(ctx, s, "up/"+op.name); err != nil {
			t.Errorf("%s after the restart: %v", op.name, err)
		}
	}
	rec, ok, err := ss.Get(ctx, "acknowledged")
	if err != nil || !ok || string(rec.Payload) != "kept" {
		t.Fatalf("acknowledged record after the crash: %+v, %v, %v", rec, ok, err)
	}
	for _, key := range []string{"down/Set", "down/TryAdd", "down/TryAddMany"} {
		if _, ok, err := ss.Get(ctx, key); err != nil || ok {
			t.Errorf("Get(%q), written while the server was down: found %v, err %v; want absent", key, ok, err)
		}
	}
}

// TestRestartWithIdleConnections: a server that restarts while the store is
// idle leaves every pooled connection dead; at most one call fails before
// the store has replaced them all.
func TestRestartWithIdleConnections(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	s := openStore(t, srv.NewDatabase(t), postgres.Config{MaxConns: 4})
	ctx := context.Background()
	warm(t, s, 4)
	for _, stop := range []func() error{srv.Stop, srv.StopImmediate} {
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		var failures []error
		for i := range 8 {
			if err := s.StateStore().Set(ctx, "k", resourcelease.Record{Version: int64(i)}); err != nil {
				if resourcelease.StatusOf(err) != resourcelease.StatusUnavailable {
					t.Errorf("call %d after the restart: %v, want unavailable", i, err)
				}
				failures = append(failures, err)
			}
		}
		if len(failures) > 1 {
			t.Errorf("%d of 8 calls failed after the restart, want at most 1: %v", len(failures), errors.Join(failures...))
		}
		warm(t, s, 4)
	}
}

// TestFrozenServerIsBoundedByDeadline: a server that answers nothing (a
// frozen host, a black-holed network) holds each call only until its
// deadline.
func TestFrozenServerIsBoundedByDeadline(t *testing.T) {
	t.Parallel()
	srv := pgtest.NewServer(t)
	s := openStore(t, srv.NewDatabase(t), postgres.Config{MaxConns: 2})
	warm(t, s, 2)
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	defer srv.Thaw() //nolint:errcheck // the cleanup's Close thaws it too
	for _, op := range stateOps {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		err := op.call(ctx, s, "frozen/"+op.name)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || resourcelease.StatusOf(err) != resourcelease.StatusDeadlineExceeded {
			t.Errorf("%s on a frozen server: err = %v (status %s), want deadline-exceeded wrapping context.DeadlineExceeded", op.name, err, resourcelease.StatusOf(err))
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s on a frozen server returned after %v, want at its 200ms deadline", op.name, d)
		}
	}
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	// Deadlines break the connections they cut; the store replaces them.
	var err error
	for range 3 {
		if err = stateOps[0].call(context.Background(), s, "thawed"); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("Get after Thaw: %v", err)
	}
}
