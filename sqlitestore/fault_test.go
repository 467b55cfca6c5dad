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
	"testing"
	"time"

	"github.com/leasemesh/leasemesh"
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

// pendingIDs reopens dir and returns the resource ids on disk, sorted.
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

// refusedAfterFault checks what the dispatcher does once a write failed:
// the retry of a refused enqueue (same request id) is refused too, not
// answered as a duplicate of an item that is not on disk, and so is a
// lease, which would hand out work memory holds but disk does not.
func refusedAfterFault(t *testing.T, d *leasemesh.Dispatcher, refusedID, path string) {
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
}

// restartRecovers reopens dir once the fault has cleared: exactly the
// acknowledged items are there, and the enqueue that was refused is taken
// (as a new item: it never reached the disk).
func restartRecovers(t *testing.T, dir string, acked []string, refusedID string) {
	t.Helper()
	slices.Sort(acked)
	if got := pendingIDs(t, dir); !slices.Equal(got, acked) {
		t.Errorf("on disk after restart: %d items, acknowledged %d\nmissing %v\nnot acknowledged %v",
			len(got), len(acked), diff(acked, got), diff(got, acked))
	}
	d := open(t, dir)
	defer d.Close()
	resp, err := d.Enqueue(context.Background(), item(refusedID, 100))
	if err != nil || resp.Duplicate {
		t.Fatalf("enqueue of %s after the restart: %+v, %v; want a new item", refusedID, resp, err)
	}
	l, err := d.Lease(context.Background(), &resourcelease.LeaseRequest{PeerID: "w"})
	if err != nil || l == nil {
		t.Fatalf("lease after the restart: %v, %v", l, err)
	}
	if err := d.Complete(context.Background(), &resourcelease.CompleteRequest{OwnershipToken: l.OwnershipToken}); err != nil {
		t.Fatalf("complete after the restart: %v", err)
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
// enqueue is unavailable and names the database; every acknowledged item is
// on disk after a restart, and no refused one; when the filesystem grows
// again the same dispatcher takes enqueues again.
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

	var acked []string
	var refusal error
	firstRefused := ""
	refused := 0
	for i := 0; i < 2000 && refused < 5; i++ {
		id := fmt.Sprintf("full-%04d", i)
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := d.Enqueue(cctx, item(id, 8<<10))
		cancel()
		if err == nil {
			if refused > 0 {
				t.Fatalf("%s acknowledged after %d refusals: the store must refuse every change after a failed write", id, refused)
			}
			acked = append(acked, id)
			continue
		}
		if refused == 0 {
			firstRefused, refusal = id, err
		}
		refused++
		checkUnavailable(t, err, path)
	}
	if refused == 0 {
		t.Fatalf("2000 enqueues of 8 KiB fitted in 2 MiB")
	}
	if len(acked) < 10 {
		t.Fatalf("only %d enqueues before the disk was full", len(acked))
	}
	t.Logf("%d acknowledged, then refused: %v", len(acked), refusal)
	refusedAfterFault(t, d, firstRefused, path)

	// The fault clears (the filesystem grows); a restart recovers.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v: %s", err, out)
	}
	if err := d.Close(); err == nil {
		t.Errorf("close of a dispatcher whose disk filled: nil error, want the storage failure")
	}
	closed = true
	restartRecovers(t, dir, acked, firstRefused)
}

// TestDatabaseLockedByAnotherProcess: while another process holds
// replication.db locked, enqueue is unavailable naming the file and nothing
// it refused is on disk afterwards; when the lock goes the same dispatcher
// works again; and a dispatcher opened while the lock is held fails to
// open, naming the file, rather than failing on its first write.
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

	// The lock goes; the dispatcher that saw the failure keeps refusing
	// (memory may be ahead of disk), and a restart recovers.
	lk.release()
	refusedAfterFault(t, d, "while-locked", path)
	if err := d.Close(); err == nil {
		t.Errorf("close of a dispatcher whose writes failed: nil error, want the storage failure")
	}
	closed = true
	restartRecovers(t, dir, acked, "while-locked")

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
