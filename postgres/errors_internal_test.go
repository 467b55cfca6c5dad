package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestStorageError(t *testing.T) {
	live := context.Background()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithTimeout(context.Background(), 0)
	defer cancel2()
	pg := func(code string) error { return fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code, Message: "m"}) }
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		err     error
		status  resourcelease.Status
		code    string
		is      error // errors.Is must hold for it, if set
		lost    bool  // connectionLost
		sqlstat string
	}{
		{"caller cancelled", cancelled, errors.New("conn closed"), resourcelease.StatusCancelled, resourcelease.CodeCancelled, context.Canceled, false, ""},
		{"caller's deadline", expired, errors.New("timeout"), resourcelease.StatusDeadlineExceeded, resourcelease.CodeDeadlineExceeded, context.DeadlineExceeded, false, ""},
		{"caller's deadline, pgx wrapped it", expired, fmt.Errorf("x: %w", context.DeadlineExceeded), resourcelease.StatusDeadlineExceeded, resourcelease.CodeDeadlineExceeded, context.DeadlineExceeded, false, ""},
		{"connect timeout with a live context", live, fmt.Errorf("connect: %w", context.DeadlineExceeded), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, false, ""},
		{"statement_timeout", live, pg("57014"), resourcelease.StatusDeadlineExceeded, resourcelease.CodeDeadlineExceeded, nil, false, "57014"},
		{"division by zero", live, pg("22012"), resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, nil, false, "22012"},
		{"untranslatable character", live, pg("22P05"), resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, nil, false, "22P05"},
		{"admin shutdown", live, pg("57P01"), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, true, "57P01"},
		{"crash shutdown", live, pg("57P02"), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, true, "57P02"},
		{"starting up", live, pg("57P03"), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, true, "57P03"},
		{"connection failure", live, pg("08006"), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, true, "08006"},
		{"too many connections", live, pg("53300"), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, false, "53300"},
		{"read-only standby", live, pg("25006"), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, false, "25006"},
		{"serialization failure", live, pg("40001"), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, false, "40001"},
		{"undefined table", live, pg("42P01"), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, false, "42P01"},
		{"unexpected EOF", live, fmt.Errorf("read: %w", io.ErrUnexpectedEOF), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, true, ""},
		{"connection reset", live, &net.OpError{Op: "read", Err: syscall.ECONNRESET}, resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, true, ""},
		{"connect refused", live, refusedConnectError(t), resourcelease.StatusUnavailable, resourcelease.CodeStorageUnavailable, nil, false, ""},
		{"an *Error passes through", live, resourcelease.ErrClosed, resourcelease.StatusUnavailable, resourcelease.CodeClosed, resourcelease.ErrClosed, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := storageError(tc.ctx, "op", tc.err)
			e := resourcelease.AsError(err)
			if e.Status != tc.status || e.Code != tc.code {
				t.Errorf("storageError = %s %s (%v), want %s %s", e.Status, e.Code, err, tc.status, tc.code)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, tc.is)
			}
			if tc.code != resourcelease.CodeClosed {
				if !errors.Is(err, tc.err) {
					t.Errorf("the cause %v is not in the chain of %v", tc.err, err)
				}
				if !strings.HasPrefix(e.Message, "postgres: op: ") {
					t.Errorf("message %q does not name the operation", e.Message)
				}
			}
			if got := e.Metadata["sqlstate"]; got != tc.sqlstat {
				t.Errorf("sqlstate = %q, want %q", got, tc.sqlstat)
			}
			if got := connectionLost(tc.err); got != tc.lost {
				t.Errorf("connectionLost = %v, want %v", got, tc.lost)
			}
		})
	}
	if storageError(live, "op", nil) != nil {
		t.Error("storageError(nil) != nil")
	}
}

// refusedConnectError returns pgx's error for a connection refused.
func refusedConnectError(t *testing.T) error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = pgconn.Connect(context.Background(), "postgres://u@"+addr+"/db?sslmode=disable")
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("connect to a closed port: %v, want a *pgconn.ConnectError", err)
	}
	return err
}

func TestQuoteKey(t *testing.T) {
	if got := quoteKey("short\x00"); got != `"short\x00"` {
		t.Errorf("quoteKey(short) = %s", got)
	}
	if got := quoteKey(strings.Repeat("k", 100)); got != `"`+strings.Repeat("k", 64)+`"... (100 bytes)` {
		t.Errorf("quoteKey(long) = %s", got)
	}
}

func TestEmbeddedMigrations(t *testing.T) {
	ms, err := embeddedMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].version != 1 || ms[0].name != "initial" {
		t.Fatalf("migrations = %+v", ms)
	}
	if LatestSchemaVersion() != len(ms) {
		t.Errorf("LatestSchemaVersion = %d, want %d", LatestSchemaVersion(), len(ms))
	}
}

func TestLoadMigrationsChecksNames(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		want  string // "" = ok
	}{
		{"in order", []string{"0002_b.sql", "0001_a.sql"}, ""},
		{"gap", []string{"0001_a.sql", "0003_c.sql"}, "0002 belongs"},
		{"repeat", []string{"0001_a.sql", "0001_b.sql"}, "0002 belongs"},
		{"bad name", []string{"0001_a.sql", "2_b.sql"}, "not named"},
		{"does not start at 1", []string{"0002_b.sql"}, "0001 belongs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for _, f := range tc.files {
				fsys["m/"+f] = &fstest.MapFile{Data: []byte("SELECT 1;")}
			}
			_, err := loadMigrations(fsys, "m")
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("loadMigrations = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMigrationLockKeyPerSchema(t *testing.T) {
	if migrationLockKey("a") == migrationLockKey("b") {
		t.Error("two schemas share a migration lock")
	}
	if migrationLockKey("a") != migrationLockKey("a") {
		t.Error("the lock key is not stable")
	}
}

func TestCheckServer(t *testing.T) {
	for _, tc := range []struct {
		encoding string
		version  int
		want     string // "" = accepted
	}{
		{"UTF8", 130000, ""},
		{"UTF8", 170002, ""},
		{"UTF8", 120015, "PostgreSQL 12.15; leasemesh needs 13 or later"},
		{"LATIN1", 150000, "encoding is LATIN1"},
		{"SQL_ASCII", 150000, "encoding is SQL_ASCII"},
	} {
		err := checkServer("h:1/db", tc.encoding, tc.version)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %d: %v, want accepted", tc.encoding, tc.version, err)
		case tc.want != "" && (resourcelease.StatusOf(err) != resourcelease.StatusFailedPrecondition || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s %d: %v, want failed-precondition saying %q", tc.encoding, tc.version, err, tc.want)
		}
	}
}
