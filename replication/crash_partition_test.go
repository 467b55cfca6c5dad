package replication_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// The partition crash test runs a queue with strict partitions
// (MaxActivePerPartition 1) and delayed items in a child process, SIGKILLs
// it, and checks after the restart that every delayed item kept its time
// and that each partition is still leased in sequence order, one item at a
// time, with the lease held at the crash still holding its partition.

const (
	crashPartitionEnv  = "LEASEMESH_CRASH_PARTITIONS"
	crashPartWorkers   = 3
	crashPartitions    = 4 // p0 and p1 get delayed items, p2 and p3 never
	crashPartDelayStep = time.Minute
)

func openPartitionQueue(ctx context.Context, path string, clock resourcelease.Clock) (*resourcelease.Engine, func(), error) {
	db, err := sqlitedb.Open(ctx, path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		return nil, nil, err
	}
	r, err := replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: path, Retention: -1, Clock: clock, Logger: quiet})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	st, err := r.LoadState(ctx)
	if err == nil {
		var q *resourcelease.Engine
		q, err = resourcelease.NewEngine(resourcelease.QueueConfig{
			Capacity: -1, LeaseDuration: crashLeaseTTL, MaxActivePerPartition: 1, SweepInterval: time.Hour,
			Clock: clock, Journal: r, InitialState: st,
		})
		if err == nil {
			return q, func() { q.Close(); r.Close(); db.Close() }, nil
		}
	}
	r.Close()
	db.Close()
	return nil, nil, err
}

// partitionLoad enqueues items (some delayed), leases and completes them,
// printing each acknowledged operation: "E seq partition notBefore" (Unix
// ns, 0 for none), "L seq attempt", "C seq".
func partitionLoad(ctx context.Context, q resourcelease.Queue, seed uint64, now time.Time, out io.Writer, ops int) error {
	var mu sync.Mutex
	emit := func(format string, args ...any) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Fprintf(out, "ACK "+format+"\n", args...)
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, crashPartWorkers)
	for w := range crashPartWorkers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := 0; ops <= 0 || i < ops; i++ {
				p := rng.IntN(crashPartitions)
				it := resourcelease.Item{ResourceType: "demo.order", ResourceID: fmt.Sprint(w, "-", i),
					PartitionKey: fmt.Sprint("p", p), PayloadEncoding: "application/json"}
				if p < 2 && rng.IntN(10) == 0 {
					it.NotBefore = now.Add(time.Duration(1+rng.IntN(5)) * crashPartDelayStep)
				}
				res, err := q.Enqueue(ctx, it)
				if err == nil {
					err = emit("E %d %s %d", res.SequenceID, it.PartitionKey, nanosOf(it.NotBefore))
				}
				if err != nil {
					errs <- err
					return
				}
				l, err := q.Lease(ctx, fmt.Sprint("worker-", w), 0)
				if err == nil && l != nil {
					if err = emit("L %d %d", l.SequenceID, l.Attempt); err == nil {
						if err = q.Complete(ctx, l.OwnershipToken); err == nil {
							err = emit("C %d", l.SequenceID)
						}
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func nanosOf(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// partitionOps are what the child acknowledged.
type partitionOps struct {
	partition map[int64]string
	notBefore map[int64]int64
	completed map[int64]bool
	leased    map[int64]bool // a lease was acknowledged
	leaseSeqs []int64        // leased items, in acknowledgement order
	runs      int            // child processes run
}

func newPartitionOps() *partitionOps {
	return &partitionOps{partition: map[int64]string{}, notBefore: map[int64]int64{}, completed: map[int64]bool{}, leased: map[int64]bool{}}
}

func (o *partitionOps) add(t *testing.T, line string) {
	t.Helper()
	f := strings.Fields(strings.TrimPrefix(line, "ACK "))
	num := func(i int) int64 {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		return n
	}
	switch f[0] {
	case "E":
		o.partition[num(1)], o.notBefore[num(1)] = f[2], num(3)
	case "L":
		// By partition only once every line is in: another worker may
		// print an item's lease before its enqueuer prints the enqueue.
		o.leaseSeqs = append(o.leaseSeqs, num(1))
		o.leased[num(1)] = true
	case "C":
		o.completed[num(1)] = true
	default:
		t.Fatalf("unknown line %q", line)
	}
}

// TestCrashPartitionChild is the child process of TestCrashPartitionOrder
// when LEASEMESH_CRASH_PARTITIONS is set. Run directly, it runs a short
// load in process, closes cleanly and checks the same guarantees.
func TestCrashPartitionChild(t *testing.T) {
	ctx := context.Background()
	if os.Getenv(crashPartitionEnv) != "" {
		seed, _ := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
		q, closeAll, err := openPartitionQueue(ctx, os.Getenv(crashDBEnv), leasetest.NewManualClock(crashStart))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		defer closeAll()
		time.AfterFunc(30*time.Second, func() { os.Exit(3) }) // never outlive a lost parent
		err = partitionLoad(ctx, q, seed, crashStart, os.Stdout, 0)
		fmt.Fprintln(os.Stderr, "child: load stopped:", err)
		os.Exit(4)
	}
	path := filepath.Join(t.TempDir(), "replication.db")
	q, closeAll, err := openPartitionQueue(ctx, path, leasetest.NewManualClock(crashStart))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := partitionLoad(ctx, q, 11, crashStart, &out, 60); err != nil {
		t.Fatal(err)
	}
	closeAll()
	ops := newPartitionOps()
	for line := range strings.Lines(out.String()) {
		ops.add(t, strings.TrimSpace(line))
	}
	if len(ops.partition) != crashPartWorkers*60 {
		t.Fatalf("parsed %d enqueues, want %d", len(ops.partition), crashPartWorkers*60)
	}
	ops.runs = 0 // a clean run: nothing was in flight
	verifyPartitions(t, path, ops)
}

// TestCrashPartitionOrder kills the child at random points of its load
// (twice, the second run on the first one's database) and checks delays
// and partition order after the restart.
func TestCrashPartitionOrder(t *testing.T) {
	for run := range 2 {
		t.Run(fmt.Sprint("scenario-", run), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 0))
			path := filepath.Join(t.TempDir(), "replication.db")
			ops := newPartitionOps()
			for c := range 2 {
				runPartitionChild(t, path, seed+uint64(c), 100+rng.IntN(600), ops)
				ops.runs++
			}
			verifyPartitions(t, path, ops)
		})
	}
}

func runPartitionChild(t *testing.T, path string, seed uint64, killAfter int, ops *partitionOps) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashPartitionChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashPartitionEnv+"=1", crashDBEnv+"="+path, crashSeedEnv+"="+strconv.FormatUint(seed, 10))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	n, killed := 0, false
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "ACK ") {
			continue
		}
		ops.add(t, line)
		if n++; n == killAfter && !killed {
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !killed || !errors.As(err, &exit) || exit.ProcessState.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v after %d acknowledged operations (want SIGKILL after %d); stderr:\n%s", err, n, killAfter, stderr.String())
	}
}

// verifyPartitions reopens the database and checks: every acknowledged
// item not completed is there with its notBefore (and a delayed one with
// its ready time), but for those whose completion was in flight at a kill
// (leased, and not acknowledged completed: at most one per worker and
// run); nothing completed came back; nothing is leased before its time;
// and, leasing everything, each partition is leased in sequence order,
// after the items the child leased in it, one at a time.
func verifyPartitions(t *testing.T, path string, ops *partitionOps) {
	t.Helper()
	ctx := context.Background()
	clock := leasetest.NewManualClock(crashStart)
	q, closeAll, err := openPartitionQueue(ctx, path, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	present := map[int64]resourcelease.ItemInfo{}
	for after := int64(0); ; {
		page, err := q.ListItems(ctx, resourcelease.ListItemsRequest{State: resourcelease.ItemPending, After: after, Limit: resourcelease.MaxListLimit})
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range page.Items {
			present[in.SequenceID] = in
		}
		if after = page.NextAfter; after == 0 {
			break
		}
	}
	leased, err := q.ListItems(ctx, resourcelease.ListItemsRequest{State: resourcelease.ItemLeased, Limit: resourcelease.MaxListLimit})
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]int64{}
	for _, in := range leased.Items {
		present[in.SequenceID] = in
		if other, ok := held[in.Payload.PartitionKey]; ok {
			t.Fatalf("partition %s has two live leases after the restart: %d and %d", in.Payload.PartitionKey, other, in.SequenceID)
		}
		held[in.Payload.PartitionKey] = in.SequenceID
	}
	inFlight := 0
	for seq, p := range ops.partition {
		in, ok := present[seq]
		switch {
		case ops.completed[seq] && ok:
			t.Fatalf("completed item %d came back", seq)
		case ops.completed[seq]:
		case !ok && ops.leased[seq]:
			if inFlight++; inFlight > crashPartWorkers*ops.runs {
				t.Fatalf("%d leased items are gone without an acknowledged completion; at most %d completions were in flight", inFlight, crashPartWorkers*ops.runs)
			}
		case !ok:
			t.Fatalf("acknowledged item %d (%s) was lost", seq, p)
		case nanosOf(in.Payload.NotBefore) != ops.notBefore[seq]:
			t.Fatalf("item %d has notBefore %v, was enqueued with %d", seq, in.Payload.NotBefore, ops.notBefore[seq])
		case in.State == resourcelease.ItemPending && ops.notBefore[seq] != 0 && nanosOf(in.ReadyAt) != ops.notBefore[seq]:
			t.Fatalf("delayed item %d is ready at %v, want its notBefore", seq, in.ReadyAt)
		}
	}
	// Lease everything: first at the crash's time (no delayed item may come,
	// and no partition whose lease survived), then after every delay and the
	// restored leases' expiry.
	order := map[string][]int64{}
	leases := map[string][]int64{} // by partition, in acknowledgement order
	for _, seq := range ops.leaseSeqs {
		// An item whose enqueuer was killed before printing it has no
		// known partition.
		if p, ok := ops.partition[seq]; ok {
			leases[p] = append(leases[p], seq)
		}
	}
	for p, seqs := range leases {
		order[p] = slices.Clone(seqs)
	}
	drainAll := func(holding bool) {
		for {
			l, err := q.Lease(ctx, "verifier", 0)
			if err != nil {
				t.Fatal(err)
			}
			if l == nil {
				return
			}
			if l.Payload.NotBefore.After(clock.Now()) {
				t.Fatalf("item %d leased at %v, before its notBefore %v", l.SequenceID, clock.Now(), l.Payload.NotBefore)
			}
			if seq, ok := held[l.Payload.PartitionKey]; ok && holding {
				t.Fatalf("item %d of %s leased while the restored lease of %d holds it", l.SequenceID, l.Payload.PartitionKey, seq)
			}
			order[l.Payload.PartitionKey] = append(order[l.Payload.PartitionKey], l.SequenceID)
			if err := q.Complete(ctx, l.OwnershipToken); err != nil {
				t.Fatal(err)
			}
		}
	}
	drainAll(true)
	clock.Advance(crashLeaseTTL + 10*crashPartDelayStep)
	q.Sweep()
	drainAll(false)
	for p, seqs := range order {
		if !slices.IsSorted(seqs) {
			t.Fatalf("partition %s leased out of order: %v", p, seqs)
		}
	}
	if st := engineStats(q); st.PendingCount != 0 || st.ActiveLeaseCount != 0 {
		t.Fatalf("after leasing everything: %+v", st)
	}
}
