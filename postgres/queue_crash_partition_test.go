package postgres_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// The partition crash test: a child holds the lease of the head of a
// strict partition, with a delayed item in another partition, while it
// runs a load on other partitions; it is SIGKILLed mid-load, and the queue
// opened again must keep the delay (not leasable before its time, leasable
// at it, with its notBefore) and the partition's order (nothing behind the
// held lease leasable until that lease, which outlived the crash, is
// settled; then the rest one at a time, in order).

const (
	pgPartChildEnv = "LEASEMESH_PG_PART_CRASH_CHILD"
	pgPartItems    = 5
	pgPartDelay    = time.Hour
)

func openPartCrashQueue(t testing.TB, url string, clock resourcelease.Clock) *postgres.Queue {
	return openQueue(t, url, clock, postgres.QueueConfig{
		Capacity: -1, LeaseDuration: pgCrashLeaseTTL, MaxActivePerPartition: 1, SweepInterval: time.Hour,
	})
}

// partitionCrashChild is the child process of TestQueuePartitionCrash
// (TestQueueCrashChild runs it when LEASEMESH_PG_PART_CRASH_CHILD is set).
func partitionCrashChild(t *testing.T) {
	time.AfterFunc(60*time.Second, func() { os.Exit(3) }) // never outlive a lost parent
	q := openPartCrashQueue(t, os.Getenv(pgCrashURLEnv), leasetest.NewManualClock(pgCrashStart))
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(4)
	}
	x := qitem("x")
	x.PartitionKey, x.NotBefore = "delayed", pgCrashStart.Add(pgPartDelay)
	res, err := q.Enqueue(bg, x)
	if err != nil {
		fail(err)
	}
	fmt.Printf("ACK X %d\n", res.SequenceID)
	for i := range pgPartItems {
		it := qitem(fmt.Sprint("s", i))
		it.PartitionKey = "strict"
		res, err := q.Enqueue(bg, it)
		if err != nil {
			fail(err)
		}
		fmt.Printf("ACK S %d\n", res.SequenceID)
	}
	l, err := q.Lease(bg, "holder", 0)
	if err != nil || l == nil {
		fail(fmt.Errorf("lease of the head: %v, %v", l, err))
	}
	fmt.Printf("ACK L %d %d %s\n", l.SequenceID, l.Attempt, l.OwnershipToken.LeaseID)
	for i := 0; ; i++ {
		it := qitem(fmt.Sprint("w", i))
		it.PartitionKey = fmt.Sprint("load-", i%7)
		if _, err := q.Enqueue(bg, it); err != nil {
			fail(err)
		}
		l, err := q.Lease(bg, "loader", 0)
		if err != nil {
			fail(err)
		}
		if l != nil && i%3 != 0 { // hold a third of them
			if err := q.Complete(bg, l.OwnershipToken); err != nil {
				fail(err)
			}
		}
		fmt.Printf("ACK W %d\n", i)
	}
}

func TestQueuePartitionCrash(t *testing.T) {
	if os.Getenv(pgPartChildEnv) != "" {
		t.Fatal("the crash child must run TestQueueCrashChild only")
	}
	t.Parallel()
	url := pgtest.NewDatabase(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestQueueCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), pgPartChildEnv+"=1", pgCrashURLEnv+"="+url)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var delayed int64
	var strict []int64
	var held resourcelease.OwnershipToken
	killAfter := 30 + int(time.Now().UnixNano()%50) // load operations
	sc := bufio.NewScanner(stdout)
	loads, killed := 0, false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[0] != "ACK" {
			continue
		}
		num := func(i int) int64 {
			n, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				t.Fatalf("bad line %q", sc.Text())
			}
			return n
		}
		switch f[1] {
		case "X":
			delayed = num(2)
		case "S":
			strict = append(strict, num(2))
		case "L":
			id, err := uuid.Parse(f[4])
			if err != nil {
				t.Fatal(err)
			}
			held = resourcelease.OwnershipToken{SequenceID: num(2), Attempt: int(num(3)), LeaseID: id}
		case "W":
			if loads++; loads == killAfter && !killed {
				if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !killed || !errors.As(err, &exit) || exit.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v after %d load operations (want SIGKILL after %d); stderr:\n%s", err, loads, killAfter, stderr.String())
	}
	if delayed == 0 || len(strict) != pgPartItems || held.SequenceID != strict[0] {
		t.Fatalf("child acknowledged delayed %d, strict %v, held %v: want the head of the strict partition held", delayed, strict, held)
	}

	clock := leasetest.NewManualClock(pgCrashStart)
	q := openPartCrashQueue(t, url, clock)
	if st, err := q.Stats(bg); err != nil || st.DelayedCount != 1 {
		t.Fatalf("stats after the crash %+v, %v; want the delayed item counted", st, err)
	}
	// Lease everything leasable: the load's items only.
	drainLoad := func(what string) {
		t.Helper()
		for {
			l, err := q.Lease(bg, "after", 0)
			if err != nil {
				t.Fatal(err)
			}
			if l == nil {
				return
			}
			if !strings.HasPrefix(l.Payload.PartitionKey, "load-") {
				t.Fatalf("%s: leased %s/%s (%d)", what, l.Payload.PartitionKey, l.Payload.ResourceID, l.SequenceID)
			}
			if err := q.Complete(bg, l.OwnershipToken); err != nil {
				t.Fatal(err)
			}
		}
	}
	drainLoad("behind the held head, and before the delay")
	if err := q.Complete(bg, held); err != nil {
		t.Fatalf("complete with the pre-crash lease of the head: %v", err)
	}
	for _, want := range strict[1:] {
		l, err := q.Lease(bg, "after", 0)
		if err != nil || l == nil || l.SequenceID != want {
			t.Fatalf("the strict partition's next lease is %v, %v; want %d", l, err, want)
		}
		if again, err := q.Lease(bg, "after", 0); err != nil || again != nil {
			t.Fatalf("a second lease of the strict partition while %d is leased: %v, %v", want, again, err)
		}
		if err := q.Complete(bg, l.OwnershipToken); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(pgPartDelay - time.Second)
	if _, err := q.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	drainLoad("a second before the delay") // expired load leases come back; never x
	clock.Advance(time.Second)
	if _, err := q.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	l, err := q.Lease(bg, "after", 0)
	if err != nil || l == nil || l.SequenceID != delayed || !l.Payload.NotBefore.Equal(pgCrashStart.Add(pgPartDelay)) {
		t.Fatalf("at its time the delayed item is %+v, %v; want %d with its notBefore", l, err, delayed)
	}
}
