package sqlitestore_test

// Storage faults under a dispatcher on a data directory: a full disk (a tiny
// tmpfs the test mounts, as root) and a database another process holds
// locked. Each must give unavailable naming the database, acknowledge
// nothing that is not on disk, lose nothing acknowledged, and recover when
// the fault clears.

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitedb"
	"github.com/leasemesh/leasemesh/sqlitestore"
)

// lockerEnv, set in a child process, makes TestMain hold the SQLite
// database at that path locked (BEGIN EXCLUSIVE) until its stdin closes.
const lockerEnv = "LEASEMESH_TEST_SQLITE_LOCK"

func TestMain(m *testing.M) {
	if path := os.Getenv(lockerEnv); path != "" {
		os.Exit(holdLock(path))
	}
	os.Exit(m.Run())
}

// holdLock is the child: it takes the write lock of the database at path,
// says "locked" on stdout, and keeps it until stdin closes.
func holdLock(path string) int {
	db, err := sql.Open("sqlite3", "file:"+path+"?_busy_timeout=10000")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer db.Close()
	conn, err := db.Conn(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "BEGIN EXCLUSIVE"); err != nil {
		fmt.Fprintln(os.Stderr, "BEGIN EXCLUSIVE:", err)
		return 1
	}
	fmt.Println("locked")
	_, _ = io.Copy(io.Discard, os.Stdin)
	_, _ = conn.ExecContext(context.Background(), "ROLLBACK")
	return 0
}

// locker is a child process holding a database locked.
type locker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
}

// lockDatabase starts a process that holds path locked and returns once it
// holds the lock.
func lockDatabase(t *testing.T, path string) *locker {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), lockerEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &locker{cmd: cmd, stdin: stdin}
	t.Cleanup(l.release)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "locked" {
		t.Fatalf("the locking process did not take the lock: %q, %v", line, err)
	}
	return l
}

// release ends the other process's lock (and the process).
func (l *locker) release() {
	if l.stdin == nil {
		return
	}
	l.stdin.Close()
	l.stdin = nil
	_ = l.cmd.Wait()
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func open(t *testing.T, dir string) *leasemesh.Dispatcher {
	t.Helper()
	d, err := leasemesh.Open(context.Background(), leasemesh.Config{Storage: sqlitestore.Dir(dir), Logger: quiet,
		Queue: resourcelease.QueueConfig{Capacity: 100_000}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func item(id string, body int) *resourcelease.EnqueueRequest {
	return &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
		ResourceType: "fault.test", ResourceID: id, PartitionKey: "p", PayloadEncoding: "application/octet-stream",
		Body: []byte(strings.Repeat("x", body)), RequestID: "req-" + id,
	}}
}

// checkUnavailable fails unless err is unavailable and names the database.
func checkUnavailable(t *testing.T, err error, path string) {
	t.Helper()
	if resourcelease.StatusOf(err) != resourcelease.StatusUnavailable || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v (status %q), want unavailable naming %s", err, resourcelease.StatusOf(err), path)
	}
}

// pendingIDs reopens dir and returns the resource ids on disk (pending),
// sorted, leaving them there.
func pendingIDs(t *testing.T, dir string) []string {
	t.Helper()
	d := open(t, dir)
	defer d.Close()
	resp, err := d.Drain(context.Background(), &resourcelease.DrainRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, it := range resp.Items {
		ids = append(ids, it.Payload.ResourceID)
	}
	if len(resp.Items) > 0 {
		if _, err := d.Restore(context.Background(), &resourcelease.RestoreRequest{Items: resp.Items}); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(ids)
	return ids
}

// refusedDuringFault checks what the dispatcher answers while the fault
// lasts: the retry of a refused enqueue (same request id) is refused too,
// not answered as a duplicate of an item that is not on disk, and so is a
// lease, which would hand out work that disk does not hold.
func refusedDuringFault(t *testing.T, d *leasemesh.Dispatcher, refusedID, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := d.Enqueue(ctx, item(refusedID, 8<<10))
	if err == nil {
		t.Fatalf("the retry of refused %s was acknowledged (%+v) though it is not on disk", refusedID, resp)
	}
	checkUnavailable(t, err, path)
	_, err = d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	checkUnavailable(t, err, path)
	checkUnavailable(t, d.Ready(ctx), path)
}

// recovers waits for the same dispatcher to work again once the fault has
// cleared: the producer's retries of every refused enqueue (same request
// ids) are acknowledged, and a lease and its complete go through. It
// returns the acknowledged ids, refused ones included.
func recovers(t *testing.T, d *leasemesh.Dispatcher, acked, refused []string) []string {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for _, id := range refused {
		for {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := d.Enqueue(cctx, item(id, 8<<10))
			cancel()
			if err == nil {
				acked = append(acked, id)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the retry of %s still fails 30 s after the fault cleared: %v", id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if _, err := d.Enqueue(ctx, item("after-fault", 100)); err != nil {
		t.Fatalf("enqueue after the recovery: %v", err)
	}
	if err := d.Ready(ctx); err != nil {
		t.Fatalf("not ready after the recovery: %v", err)
	}
	acked = append(acked, "after-fault")
	l, err := d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	if err != nil || l == nil {
		t.Fatalf("lease after the recovery: %v, %v", l, err)
	}
	if err := d.Release(ctx, &resourcelease.ReleaseRequest{OwnershipToken: l.OwnershipToken}); err != nil {
		t.Fatalf("release after the recovery: %v", err)
	}
	return acked
}

// onDiskAfterRestart closes d (which recovered, so cleanly) and checks,
// from a fresh open of dir, that exactly the acknowledged items are there,
// each once.
func onDiskAfterRestart(t *testing.T, d *leasemesh.Dispatcher, dir string, acked []string) {
	t.Helper()
	if err := d.Close(); err != nil {
		t.Errorf("close after the recovery: %v", err)
	}
	slices.Sort(acked)
	if got := pendingIDs(t, dir); !slices.Equal(got, acked) {
		t.Errorf("on disk after restart: %d items, acknowledged %d\nmissing %v\nnot acknowledged %v",
			len(got), len(acked), diff(acked, got), diff(got, acked))
	}
}

// mountTmpfs mounts a tmpfs of size (mount's size= syntax) on a new
// directory and unmounts it when the test ends. It needs root, which CI
// runs as; elsewhere the test is skipped.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount -t tmpfs (CI runs as root and must be able to): %v: %s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here (needs root; CI runs it): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// TestDiskFull fills a 2 MiB filesystem with enqueues: once it is full,
// enqueue (and its retry, and lease) is unavailable and names the database;
// when the filesystem grows again the same dispatcher works again, the
// retries of the refused enqueues are acknowledged, and after a restart
// exactly the acknowledged items are on disk, each once.
func TestDiskFull(t *testing.T) {
	mnt := mountTmpfs(t, "2m")
	dir := filepath.Join(mnt, "data")
	path := filepath.Join(dir, sqlitestore.ReplicationFile)
	d := open(t, dir)
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	ctx := context.Background()

	var acked, refused []string
	var refusal error
	for i := 0; i < 2000 && len(refused) < 5; i++ {
		id := fmt.Sprintf("full-%04d", i)
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := d.Enqueue(cctx, item(id, 8<<10))
		cancel()
		if err == nil {
			acked = append(acked, id)
			continue
		}
		if refusal == nil {
			refusal = err
		}
		refused = append(refused, id)
		checkUnavailable(t, err, path)
	}
	if len(refused) == 0 {
		t.Fatalf("2000 enqueues of 8 KiB fitted in 2 MiB")
	}
	if len(acked) < 10 {
		t.Fatalf("only %d enqueues before the disk was full", len(acked))
	}
	t.Logf("%d acknowledged, then refused: %v", len(acked), refusal)
	refusedDuringFault(t, d, refused[0], path)

	// The fault clears: the filesystem grows.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	acked = recovers(t, d, acked, refused)
	closed = true
	onDiskAfterRestart(t, d, dir, acked)
}

// TestDatabaseLockedByAnotherProcess: while another process holds
// replication.db locked, enqueue (and its retry, and lease) is unavailable
// naming the file; when the lock goes the same dispatcher works again and
// exactly the acknowledged items are on disk; and a dispatcher opened while
// the lock is held fails to open, naming the file, rather than failing on
// its first write.
func TestDatabaseLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, sqlitestore.ReplicationFile)
	d := open(t, dir)
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	ctx := context.Background()
	var acked []string
	for i := range 5 {
		id := fmt.Sprintf("before-%d", i)
		if _, err := d.Enqueue(ctx, item(id, 100)); err != nil {
			t.Fatal(err)
		}
		acked = append(acked, id)
	}

	lk := lockDatabase(t, path)
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := d.Enqueue(cctx, item("while-locked", 100))
	cancel()
	checkUnavailable(t, err, path)
	t.Logf("refused after %s (the busy timeout): %v", time.Since(start).Round(time.Millisecond), err)
	refusedDuringFault(t, d, "while-locked", path)
	refused := loadDuringFault(t, d)

	// The lock goes: the same dispatcher recovers.
	lk.release()
	acked = recovers(t, d, acked, append([]string{"while-locked"}, refused...))
	closed = true
	onDiskAfterRestart(t, d, dir, acked)
	checkGapFree(t, path)

	// Opening while another process holds the lock fails at open, naming
	// the file, and changes nothing.
	before := pendingIDs(t, dir)
	lk = lockDatabase(t, path)
	_, err = leasemesh.Open(ctx, leasemesh.Config{Storage: sqlitestore.Dir(dir), Logger: quiet})
	checkUnavailable(t, err, path)
	lk.release()
	if got := pendingIDs(t, dir); !slices.Equal(got, before) {
		t.Errorf("on disk after the refused open: %v, before it %v", got, before)
	}
}

// loadDuringFault runs enqueues (some of them retries of the same request
// id), leases and heartbeats from several goroutines while the fault lasts:
// every call must return within a bound, none may be acknowledged. It
// returns the ids of the refused enqueues.
func loadDuringFault(t *testing.T, d *leasemesh.Dispatcher) []string {
	t.Helper()
	const workers, calls = 4, 10
	const bound = 15 * time.Second
	var mu sync.Mutex
	var refused []string
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				id := fmt.Sprintf("load-%d-%d", w, i/2) // each id twice: a retry
				ctx, cancel := context.WithTimeout(context.Background(), bound)
				start := time.Now()
				var err error
				if i%3 == 2 {
					_, err = d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
				} else {
					_, err = d.Enqueue(ctx, item(id, 100))
				}
				cancel()
				if took := time.Since(start); took > bound-time.Second {
					t.Errorf("a call during the fault took %v", took)
				}
				if err == nil {
					t.Errorf("a call during the fault (%s) was acknowledged", id)
					continue
				}
				if i%3 != 2 {
					mu.Lock()
					if !slices.Contains(refused, id) {
						refused = append(refused, id)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	slices.Sort(refused)
	return refused
}

// checkGapFree fails unless the events in the replication log at path have
// consecutive sequence numbers.
func checkGapFree(t *testing.T, path string) {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var lo, hi, n int64
	if err := db.QueryRow(`SELECT min(seq), max(seq), count(*) FROM replication_events`).Scan(&lo, &hi, &n); err != nil {
		t.Fatal(err)
	}
	if n == 0 || hi-lo+1 != n {
		t.Errorf("replication log: %d events from %d to %d, want them gap-free", n, lo, hi)
	}
}

// holdingSink is a synchronous sink that, once armed, holds the writer in
// ApplyEvent until released.
type holdingSink struct {
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *holdingSink) ApplyEvent(context.Context, resourcelease.Event) error {
	if s.armed.Load() {
		s.once.Do(func() {
			close(s.entered)
			<-s.release
		})
	}
	return nil
}

// TestCloseWhileDatabaseLocked: Close of a dispatcher whose database
// another process holds locked returns within a bound, though the sweeper
// is waiting for a write that cannot land: the writer took that write's
// batch together with the one it stalled on (it was held in a synchronous
// sink meanwhile; one change a batch).
func TestCloseWhileDatabaseLocked(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, sqlitestore.ReplicationFile)
	sink := &holdingSink{entered: make(chan struct{}), release: make(chan struct{})}
	defer func() {
		select {
		case <-sink.release:
		default:
			close(sink.release)
		}
	}()
	d, err := leasemesh.Open(context.Background(), leasemesh.Config{
		Storage: sqlitestore.DirWith(dir, sqlitestore.Config{Replication: replication.SQLiteConfig{MaxBatch: 1}}),
		Logger:  quiet,
		Sinks:   []leasemesh.Sink{{Name: "holding", Sink: sink, Options: resourcelease.SinkOptions{Synchronous: true}}},
		Queue:   resourcelease.QueueConfig{Capacity: 100, SweepInterval: 10 * time.Millisecond, LeaseDuration: time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := d.Enqueue(ctx, item("leased", 100)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"}); err != nil {
		t.Fatal(err)
	}
	sink.armed.Store(true)
	go func() { _, _ = d.Enqueue(context.Background(), item("held", 100)) }()
	<-sink.entered // the writer is in the sink
	lk := lockDatabase(t, path)
	go func() { _, _ = d.Enqueue(context.Background(), item("stalls", 100)) }()
	// The lease expires (no heartbeat): the sweeper records that behind it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, err := d.Stats(ctx, &resourcelease.StatsRequest{})
		if err == nil && st.ActiveLeaseCount == 0 && st.PendingCount == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the lease did not expire: %+v, %v", st, err)
		}
	}
	close(sink.release)
	done := make(chan error, 1)
	go func() { done <- d.Close() }()
	select {
	case err := <-done:
		t.Logf("Close while locked: %v", err)
	case <-time.After(30 * time.Second):
		lk.release()
		<-done
		t.Fatal("Close still waits 30 s into a database locked by another process")
	}
	lk.release()
}

// diff returns what a has and b lacks (both sorted).
func diff(a, b []string) []string {
	var out []string
	for _, s := range a {
		if _, found := slices.BinarySearch(b, s); !found {
			out = append(out, s)
		}
	}
	return out
}

var _ = sqlitedb.SynchronousFull // the child's "sqlite3" driver comes from sqlitedb
