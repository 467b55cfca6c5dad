package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := Run(m)
	if code == 0 {
		// Every server's waiter goroutine ends with its server.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines left after the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func TestNewDatabaseIsFreshAndDropped(t *testing.T) {
	srv := Shared(t)
	var names []string
	t.Run("use", func(t *testing.T) {
		a, b := connect(t, NewDatabase(t)), connect(t, NewDatabase(t))
		names = []string{queryString(t, a, "SELECT current_database()"), queryString(t, b, "SELECT current_database()")}
		if names[0] == names[1] {
			t.Fatalf("two NewDatabase calls gave the same database %s", names[0])
		}
		if _, err := a.Exec(context.Background(), "CREATE TABLE only_in_a (x int)"); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := b.QueryRow(context.Background(), "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'").Scan(&n); err != nil || n != 0 {
			t.Fatalf("table of database a seen in database b: count %d, err %v", n, err)
		}
		// The connections are still open when the cleanup drops the
		// databases: the drop must force them closed rather than fail.
	})
	admin := connect(t, srv.URL("postgres"))
	for _, name := range names {
		var n int
		if err := admin.QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil || n != 0 {
			t.Errorf("database %s after its test ended: count %d, err %v; want dropped", name, n, err)
		}
	}
}

func TestServerSettings(t *testing.T) {
	conn := connect(t, NewDatabase(t))
	for setting, want := range map[string]string{
		"fsync":              "on",
		"synchronous_commit": "on",
		"listen_addresses":   "127.0.0.1",
		"server_encoding":    "UTF8",
		"TimeZone":           "UTC",
	} {
		if got := queryString(t, conn, "SHOW "+setting); got != want {
			t.Errorf("SHOW %s = %q, want %q", setting, got, want)
		}
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(filepath.Join(Shared(t).Dir(), "data"))
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid == 0 {
			t.Errorf("data directory owned by root; the server must run unprivileged")
		}
	}
}

func TestSocketURL(t *testing.T) {
	srv := Shared(t)
	conn := connect(t, srv.SocketURL("postgres"))
	// inet_client_addr is NULL on a unix-socket connection.
	var addr *string
	if err := conn.QueryRow(context.Background(), "SELECT inet_client_addr()::text").Scan(&addr); err != nil {
		t.Fatal(err)
	}
	if addr != nil {
		t.Errorf("connection over SocketURL came from %s, want a unix socket", *addr)
	}
}

// TestStopImmediateRestart is the fault tests' cycle: a crash stop refuses
// connections at once, and a start on the same port recovers every committed
// row.
func TestStopImmediateRestart(t *testing.T) {
	srv := NewServer(t)
	url := srv.NewDatabase(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (x int); INSERT INTO kept SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	for round, stop := range []func() error{srv.StopImmediate, srv.Stop} {
		port := srv.Port()
		if err := stop(); err != nil {
			t.Fatalf("round %d: stop: %v", round, err)
		}
		if srv.Running() {
			t.Fatalf("round %d: Running after stop", round)
		}
		if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatalf("round %d: a query on a connection to a stopped server succeeded", round)
		}
		start := time.Now()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := pgx.Connect(cctx, url)
		cancel()
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("round %d: connect to a stopped server: %v, want connection refused", round, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("round %d: refusal took %v, want prompt", round, d)
		}
		if err := srv.Start(); err != nil {
			t.Fatalf("round %d: restart: %v", round, err)
		}
		if srv.Port() != port {
			t.Fatalf("round %d: port %d after restart, want %d", round, srv.Port(), port)
		}
		conn.Close(ctx)
		if conn, err = pgx.Connect(ctx, url); err != nil {
			t.Fatalf("round %d: connect after restart: %v", round, err)
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM kept").Scan(&n); err != nil || n != 100 {
			t.Fatalf("round %d: after restart %d rows, err %v; want 100", round, n, err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO kept VALUES (0)"); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "DELETE FROM kept WHERE x = 0"); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close(ctx)
	if !strings.Contains(srv.LogTail(200), "database system was interrupted") {
		t.Errorf("log shows no crash recovery after StopImmediate:\n%s", srv.LogTail(40))
	}
}

func TestCloseTwiceAndStartAfterClose(t *testing.T) {
	srv, err := StartServer()
	if errors.Is(err, errNotInstalled) {
		fail(t, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	dir := srv.Dir()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("directory %s after Close: %v, want removed", dir, err)
	}
	if err := srv.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
}

func TestFindBinaries(t *testing.T) {
	root := t.TempDir()
	mk := func(version string, names ...string) string {
		dir := filepath.Join(root, version, "bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), nil, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	mk("9.6", "initdb", "postgres")
	v15 := mk("15", "initdb", "postgres")
	mk("16", "initdb") // incomplete: no server binary
	mk("notaversion", "initdb", "postgres")
	v10 := mk("10", "initdb", "postgres")
	t.Setenv("PATH", t.TempDir()) // no initdb on PATH

	for _, tc := range []struct {
		name, env, root string
		want            string
		wantErr         string
		notInstalled    bool
	}{
		{name: "newest numeric version, not lexicographic", root: root, want: v15},
		{name: "PG_BIN wins", env: v10, root: root, want: v10},
		{name: "bad PG_BIN is an error, not a skip", env: filepath.Join(root, "16", "bin"), root: root, wantErr: "PG_BIN"},
		{name: "nothing installed", root: filepath.Join(root, "none"), notInstalled: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := findBinaries(tc.env, tc.root)
			switch {
			case tc.notInstalled:
				if !errors.Is(err, errNotInstalled) {
					t.Fatalf("err = %v, want not installed", err)
				}
			case tc.wantErr != "":
				if err == nil || errors.Is(err, errNotInstalled) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want an error naming %s that is not a skip", err, tc.wantErr)
				}
			case err != nil || got != tc.want:
				t.Fatalf("findBinaries = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestFreezeThaw: a frozen server holds a query until its deadline; thawed,
// the same connection works again; a frozen server still stops.
func TestFreezeThaw(t *testing.T) {
	srv := NewServer(t)
	conn := connect(t, srv.NewDatabase(t))
	ctx := context.Background()
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	qctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := conn.Exec(qctx, "SELECT 1")
	cancel()
	if err == nil {
		t.Fatal("a query on a frozen server succeeded")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("query on a frozen server returned after %v, want at its 300ms deadline", d)
	}
	if err := srv.Thaw(); err != nil {
		t.Fatal(err)
	}
	conn2 := connect(t, srv.URL("postgres"))
	if got := queryString(t, conn2, "SELECT 'thawed'"); got != "thawed" {
		t.Fatalf("after Thaw: %q", got)
	}
	if err := srv.Freeze(); err != nil {
		t.Fatal(err)
	}
	if err := srv.StopImmediate(); err != nil {
		t.Fatalf("stopping a frozen server: %v", err)
	}
	if err := srv.Freeze(); err == nil {
		t.Error("Freeze of a stopped server succeeded")
	}
}

// recordTB is a testing.TB whose Skipf and Fatal record the call and end
// the goroutine, as the real ones do.
type recordTB struct {
	testing.TB
	skipped, failed bool
}

func (r *recordTB) Helper()               { r.TB.Helper() }
func (r *recordTB) Skipf(string, ...any)  { r.skipped = true; runtime.Goexit() }
func (r *recordTB) Fatal(...any)          { r.failed = true; runtime.Goexit() }
func (r *recordTB) Fatalf(string, ...any) { r.failed = true; runtime.Goexit() }

// TestMissingInstallation: a missing PostgreSQL skips locally and fails in
// CI; any other start failure fails everywhere.
func TestMissingInstallation(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no initdb on PATH either
	missing, err := findBinaries("", filepath.Join(t.TempDir(), "none"))
	if missing != "" || !errors.Is(err, errNotInstalled) {
		t.Fatalf("findBinaries of an empty root = %q, %v", missing, err)
	}
	broken := errors.New("pgtest: initdb failed")
	for _, tc := range []struct {
		ci          string
		err         error
		skip, fatal bool
	}{
		{"", err, true, false},
		{"false", err, true, false},
		{"true", err, false, true},
		{"1", err, false, true},
		{"", broken, false, true},
		{"true", broken, false, true},
	} {
		t.Setenv("CI", tc.ci)
		r := &recordTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			fail(r, tc.err)
		}()
		<-done
		if r.skipped != tc.skip || r.failed != tc.fatal {
			t.Errorf("CI=%q, %v: skipped %v, failed %v; want %v, %v", tc.ci, tc.err, r.skipped, r.failed, tc.skip, tc.fatal)
		}
	}
}
