// Package pgtest runs real PostgreSQL servers for leasemesh's tests: never a
// mock. It is for _test.go files only.
//
// A package's tests share one server, started on first use in a temporary
// directory (initdb, then the postgres server listening on 127.0.0.1 at a
// free port and on a unix socket in that directory) and stopped when the
// package's tests end; each test gets a fresh database on it:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		url := pgtest.NewDatabase(t) // CREATE DATABASE ...; dropped at cleanup
//		...
//	}
//
// Fault tests that stop the server take one of their own with [NewServer],
// so they do not take the shared one away from the tests running beside
// them: [Server.StopImmediate] is `pg_ctl stop -m immediate` (a crash, with
// recovery at the next start), [Server.Stop] a fast shutdown, and
// [Server.Start] brings the server back on the same data directory and port.
//
// The binaries are Debian's (package postgresql): the newest
// /usr/lib/postgresql/<version>/bin, or the directory in the PG_BIN
// environment variable, or initdb on PATH. Where none is installed the tests
// that need a server skip with a message saying so, except when CI=true,
// where they fail: CI must never pass by skipping them.
//
// PostgreSQL refuses to run as root, so when the tests run as root the
// server runs as the system user leasemesh-pg (created with useradd if
// missing; nobody if that fails), which owns the temporary directory. The
// server is the test process's child with a parent-death signal, so a test
// binary that dies (a timeout's panic, a kill) takes its servers with it.
//
// The server keeps PostgreSQL's durability defaults (fsync and
// synchronous_commit on), so what the tests measure is what production
// pays; only initdb's own writes skip fsync (--no-sync), which costs nothing
// but the cluster's survival of a host crash during the tests.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// ServiceUser is the system user the server runs as when the tests run as
// root.
const ServiceUser = "leasemesh-pg"

// startTimeout bounds how long a start (initdb excluded) may take, crash
// recovery included.
const startTimeout = 60 * time.Second

// errNotInstalled marks a missing installation: a skip locally, a failure in CI.
var errNotInstalled = errors.New("pgtest: PostgreSQL is not installed")

var shared struct {
	once sync.Once
	srv  *Server
	err  error
}

// Main runs the package's tests, stops the shared server and exits with the
// tests' status. Call it from TestMain; use [Run] when TestMain has more to
// do (a goroutine-leak check) after the tests.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run runs the package's tests, then stops and removes the shared server if
// a test started it, and returns m.Run's status.
func Run(m *testing.M) int {
	code := m.Run()
	if shared.srv != nil {
		if err := shared.srv.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest: stopping the shared server:", err)
			if code == 0 {
				code = 1
			}
		}
	}
	return code
}

// Shared returns the package's shared server, starting it on the first call.
// It skips t when PostgreSQL is not installed (fails it when CI=true) and
// fails t when the server cannot start. Tests must not stop it.
func Shared(t testing.TB) *Server {
	t.Helper()
	shared.once.Do(func() {
		shared.srv, shared.err = StartServer()
	})
	if shared.err != nil {
		fail(t, shared.err)
	}
	return shared.srv
}

// NewDatabase creates an empty database on the shared server and returns its
// URL; the database is dropped when t ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	return Shared(t).NewDatabase(t)
}

// NewServer starts a server of t's own, for a test that stops and restarts
// it; it is stopped and removed when t ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s, err := StartServer()
	if err != nil {
		fail(t, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("pgtest: closing the server: %v", err)
		}
	})
	return s
}

// fail skips t for a missing installation outside CI and fails it otherwise.
func fail(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, errNotInstalled) && !inCI() {
		t.Skipf("%v; skipping (install Debian's postgresql package or set PG_BIN; with CI=true this fails)", err)
	}
	t.Fatal(err)
}

func inCI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// Server is one PostgreSQL server in a temporary directory. Its methods are
// safe for concurrent use.
type Server struct {
	bin     string // directory holding initdb and postgres
	dir     string // the temporary directory; removed by Close
	dataDir string
	logPath string
	port    int
	cred    *syscall.Credential // nil when the tests do not run as root

	mu     sync.Mutex // serializes Start, Stop and Close
	proc   *exec.Cmd  // the running postmaster; nil when stopped
	exited chan struct{}
	closed bool

	running atomic.Bool
	dbSeq   atomic.Int64
}

// StartServer creates a new cluster in a temporary directory and starts it.
// Most tests want [NewDatabase] or [NewServer] instead, which also clean up;
// a Server from StartServer must be closed by the caller.
func StartServer() (*Server, error) {
	bin, err := findBinaries(os.Getenv("PG_BIN"), "/usr/lib/postgresql")
	if err != nil {
		return nil, err
	}
	cred, err := serviceCredential()
	if err != nil {
		return nil, err
	}
	sweepOnce.Do(sweepStale)
	// A short path of our own rather than t.TempDir: the unix socket's path
	// must stay under 108 bytes, and t.TempDir's parents are private to root.
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ownerFile), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{bin: bin, dir: dir, dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "postgres.log"), cred: cred}
	if err := s.create(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Another process may take the free port between our probe and the
	// server's bind; try a few.
	for attempt := 1; ; attempt++ {
		if err := s.pickPort(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		err = s.Start()
		if err == nil {
			return s, nil
		}
		if attempt == 5 || !strings.Contains(s.LogTail(20), "could not bind") {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// dirPrefix names the servers' temporary directories; ownerFile, inside
// one, holds the pid of the test process that made it.
const (
	dirPrefix = "pgtest-"
	ownerFile = "owner.pid"
)

var sweepOnce sync.Once

// sweepStale removes the directories of servers whose test process died
// without cleaning up (its server died with it, by the parent-death signal):
// on a machine that runs many test runs, they would pile up at ~40 MB each.
func sweepStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, ownerFile))
		if err != nil {
			continue // being created, or not ours
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue // alive (or not ours to judge)
		}
		os.RemoveAll(dir)
	}
}

// create runs initdb and writes the settings every start uses.
func (s *Server) create() error {
	if s.cred != nil {
		if err := os.Chown(s.dir, int(s.cred.Uid), int(s.cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
	}
	out, err := s.command("initdb", "-D", s.dataDir, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgtest: initdb in %s: %v\n%s", s.dataDir, err, out)
	}
	return nil
}

// pickPort chooses a free loopback port and writes it into the server's
// configuration, with the other settings the harness needs; a later line of
// postgresql.conf overrides an earlier one, so a retry simply appends.
func (s *Server) pickPort() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("pgtest: finding a free port: %w", err)
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf(`
# pgtest
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
max_connections = 200
timezone = 'UTC'
log_timezone = 'UTC'
`, s.port, s.dir)
	f, err := os.OpenFile(filepath.Join(s.dataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	if _, err := f.WriteString(conf); err != nil {
		f.Close()
		return fmt.Errorf("pgtest: %w", err)
	}
	return f.Close()
}

// command returns a command running the named PostgreSQL binary as the
// service user, in the server's directory, with a minimal environment (no
// PG* variable of the test process leaks into it).
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LC_ALL=C", "TZ=UTC", "HOME=" + s.dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	return cmd
}

// Start starts the server on its data directory and port and returns once it
// accepts connections (after crash recovery, following StopImmediate). It
// is a no-op when the server is running.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("pgtest: server is closed")
	}
	if s.proc != nil {
		return nil
	}
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	cmd := s.command("postgres", "-D", s.dataDir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// SIGQUIT is an immediate shutdown: should the test process die, the
	// server goes with it instead of lingering on the machine.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGQUIT
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: starting postgres: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait() //nolint:errcheck // an exit is reported through the log and the readiness check
		close(exited)
	}()
	if err := s.waitReady(exited); err != nil {
		cmd.Process.Signal(syscall.SIGQUIT) //nolint:errcheck // it may have exited already
		<-exited
		return fmt.Errorf("%w\n--- postgres.log (tail) ---\n%s", err, s.LogTail(30))
	}
	s.proc, s.exited = cmd, exited
	s.running.Store(true)
	return nil
}

// waitReady polls until the server accepts a connection, it exits, or
// startTimeout passes.
func (s *Server) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, s.URL("postgres"))
		if err == nil {
			err = conn.Close(ctx)
			cancel()
			return err
		}
		cancel()
		select {
		case <-exited:
			return fmt.Errorf("pgtest: postgres exited during start: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres not ready after %v: %v", startTimeout, err)
		}
	}
}

// StopImmediate stops the server as `pg_ctl stop -m immediate` does
// (SIGQUIT to the postmaster): no checkpoint, clients cut off at once, crash
// recovery at the next Start. It returns once every server process is gone.
func (s *Server) StopImmediate() error { return s.stop(syscall.SIGQUIT) }

// Stop stops the server as `pg_ctl stop -m fast` does (SIGINT): clients are
// disconnected, a checkpoint is written. It returns once every server
// process is gone.
func (s *Server) Stop() error { return s.stop(syscall.SIGINT) }

func (s *Server) stop(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return nil
	}
	s.running.Store(false)
	s.signalGroup(syscall.SIGCONT) //nolint:errcheck // a frozen server could not act on sig; if this fails, the wait below reports it
	if err := s.proc.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("pgtest: signalling postgres: %w", err)
	}
	// The postmaster exits after its children, so once it is gone the port
	// and the data directory are free.
	select {
	case <-s.exited:
	case <-time.After(startTimeout):
		s.proc.Process.Kill() //nolint:errcheck // last resort
		<-s.exited
		return fmt.Errorf("pgtest: postgres did not stop within %v; killed", startTimeout)
	}
	s.proc, s.exited = nil, nil
	return nil
}

// Freeze stops every process of the server (SIGSTOP to the postmaster, then
// to each of its children) without closing a socket: connections and new connection attempts hang,
// as with a server that is overloaded or cut off by the network, so calls
// must be bounded by their deadlines. Thaw resumes it; Stop and Close thaw
// it first.
func (s *Server) Freeze() error { return s.signalGroupLocked(syscall.SIGSTOP) }

// Thaw resumes a server that Freeze stopped.
func (s *Server) Thaw() error { return s.signalGroupLocked(syscall.SIGCONT) }

func (s *Server) signalGroupLocked(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return errors.New("pgtest: server is not running")
	}
	return s.signalGroup(sig)
}

// signalGroup sends sig to the postmaster and each of its children (they
// are not in its process group: every PostgreSQL child calls setsid);
// s.mu is held. The postmaster goes first on SIGSTOP, so it forks no child
// that the signal would miss, and last on SIGCONT.
func (s *Server) signalGroup(sig syscall.Signal) error {
	pid := s.proc.Process.Pid
	if sig != syscall.SIGCONT {
		if err := syscall.Kill(pid, sig); err != nil {
			return fmt.Errorf("pgtest: signalling postgres: %w", err)
		}
	}
	children, err := childrenOf(pid)
	if err != nil {
		return err
	}
	for _, c := range children {
		if err := syscall.Kill(c, sig); err != nil && err != syscall.ESRCH {
			return fmt.Errorf("pgtest: signalling postgres process %d: %w", c, err)
		}
	}
	if sig == syscall.SIGCONT {
		if err := syscall.Kill(pid, sig); err != nil {
			return fmt.Errorf("pgtest: signalling postgres: %w", err)
		}
	}
	return nil
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) ([]int, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return nil, err
	}
	var children []int
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses,
		// so read from the last ')'.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(pid) {
			continue
		}
		if c, err := strconv.Atoi(filepath.Base(filepath.Dir(path))); err == nil {
			children = append(children, c)
		}
	}
	return children, nil
}

// Close stops the server (fast) and removes its directory. Calling it twice
// is safe.
func (s *Server) Close() error {
	err := s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if rerr := os.RemoveAll(s.dir); err == nil {
		err = rerr
	}
	return err
}

// Running reports whether the server is started (and not stopped since).
func (s *Server) Running() bool { return s.running.Load() }

// Port is the server's TCP port on 127.0.0.1; it stays the same across
// Stop and Start.
func (s *Server) Port() int { return s.port }

// Dir is the server's temporary directory: the data directory (data), the
// log (postgres.log) and the unix socket.
func (s *Server) Dir() string { return s.dir }

// URL returns the URL of database dbname on the server, as the superuser
// postgres, over TCP.
func (s *Server) URL(dbname string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", s.port, dbname)
}

// SocketURL returns the URL of database dbname over the server's unix socket.
func (s *Server) SocketURL(dbname string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable", dbname, s.dir, s.port)
}

// LogTail returns the last n lines of the server's log.
func (s *Server) LogTail(n int) string {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var unsafeName = regexp.MustCompile(`[^a-z0-9]+`)

// NewDatabase creates an empty database (from template0) and returns its
// URL. The database is dropped when t ends, its connections forced closed,
// unless the server is stopped then.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := unsafeName.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	name = fmt.Sprintf("t%d_%s", s.dbSeq.Add(1), strings.Trim(name, "_"))
	if err := s.Exec(context.Background(), `CREATE DATABASE "`+name+`" TEMPLATE template0`); err != nil {
		t.Fatalf("pgtest: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		if !s.Running() {
			return
		}
		if err := s.Exec(context.Background(), `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: dropping database %s: %v", name, err)
		}
	})
	return s.URL(name)
}

// Exec runs sql on the server's postgres database, as the superuser, on a
// connection of its own.
func (s *Server) Exec(ctx context.Context, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// findBinaries returns the directory holding initdb and postgres: env (the
// PG_BIN variable) if set, else the newest <root>/<version>/bin, else the
// directory of initdb on PATH.
func findBinaries(env, root string) (string, error) {
	has := func(dir string) bool {
		for _, name := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if env != "" {
		if !has(env) {
			// A PG_BIN that is set but wrong is a mistake to report, not a
			// missing installation to skip.
			return "", fmt.Errorf("pgtest: PG_BIN=%s holds no initdb and postgres", env)
		}
		return env, nil
	}
	entries, _ := os.ReadDir(root)
	type version struct {
		dir        string
		major, min int
	}
	var found []version
	for _, e := range entries {
		dir := filepath.Join(root, e.Name(), "bin")
		majorS, minorS, _ := strings.Cut(e.Name(), ".")
		major, err := strconv.Atoi(majorS)
		if err != nil || !has(dir) {
			continue
		}
		minor, _ := strconv.Atoi(minorS)
		found = append(found, version{dir, major, minor})
	}
	if len(found) > 0 {
		sort.Slice(found, func(i, j int) bool {
			if found[i].major != found[j].major {
				return found[i].major > found[j].major
			}
			return found[i].min > found[j].min
		})
		return found[0].dir, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("%w (no initdb in PG_BIN, %s/<version>/bin or PATH)", errNotInstalled, root)
}

var credOnce struct {
	sync.Once
	cred *syscall.Credential
	err  error
}

// serviceCredential returns the credential the server runs with: nil when
// the tests do not run as root, else ServiceUser's (created if missing),
// else nobody's.
func serviceCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	credOnce.Do(func() {
		u, err := user.Lookup(ServiceUser)
		if err != nil {
			// Another package's tests may create it at the same moment;
			// look again whatever useradd says.
			out, uerr := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
				"--shell", "/usr/sbin/nologin", "--user-group", ServiceUser).CombinedOutput()
			if u, err = user.Lookup(ServiceUser); err != nil {
				if u, err = user.Lookup("nobody"); err != nil {
					credOnce.err = fmt.Errorf("pgtest: running as root, and neither user %s (useradd: %v %s) nor nobody exists", ServiceUser, uerr, out)
					return
				}
			}
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			credOnce.err = fmt.Errorf("pgtest: user %s: %w", u.Username, err)
			return
		}
		credOnce.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	})
	return credOnce.cred, credOnce.err
}
