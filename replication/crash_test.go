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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/leasemesh/leasemesh/replication"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/sqlitedb"
)

// The durability tests run the queue in a child process (this test binary,
// re-executed into TestCrashChild), SIGKILL it at a random point of a
// concurrent load, restart from the database and check the durability guarantees (docs/guarantees.md)
// guarantees against what the child acknowledged. The child prints an
// operation only after the engine call returned successfully, so every line
// the parent reads is an acknowledged operation.

const (
	crashDBEnv      = "LEASEMESH_CRASH_DB"
	crashSeedEnv    = "LEASEMESH_CRASH_SEED"
	crashWorkers    = 6
	crashReqDelay   = 30 * time.Second
	crashLeaseTTL   = time.Minute
	crashMaxAttempt = 100
	// crashMaxRelease is low so that the load also makes releases that
	// count as an attempt.
	crashMaxRelease = 2
	crashRelDelay   = 10 * time.Second
)

// crashStart is the (manual) time of every run: child and parent agree on it,
// so requeue delays and the dedupe window are checked exactly.
var crashStart = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func crashQueueConfig(clock resourcelease.Clock, j resourcelease.Journal, st *resourcelease.QueueState) resourcelease.QueueConfig {
	return resourcelease.QueueConfig{
		Capacity: -1, LeaseDuration: crashLeaseTTL, RequeueDelay: crashReqDelay,
		MaxDeliveryAttempts: crashMaxAttempt, MaxReleases: crashMaxRelease, Clock: clock, Journal: j, InitialState: st,
	}
}

// openCrashQueue opens the database at path and rebuilds a queue from it.
func openCrashQueue(ctx context.Context, path string, clock resourcelease.Clock) (*resourcelease.Engine, *replication.SQLiteReplicator, func(), error) {
	db, err := sqlitedb.Open(ctx, path, sqlitedb.Config{Synchronous: sqlitedb.SynchronousNormal})
	if err != nil {
		return nil, nil, nil, err
	}
	r, err := replication.NewSQLiteReplicator(ctx, db, replication.SQLiteConfig{Path: path, Retention: -1, Clock: clock, Logger: quiet})
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	st, err := r.LoadState(ctx)
	if err != nil {
		r.Close()
		db.Close()
		return nil, nil, nil, err
	}
	q, err := resourcelease.NewEngine(crashQueueConfig(clock, r, st))
	if err != nil {
		r.Close()
		db.Close()
		return nil, nil, nil, err
	}
	return q, r, func() { q.Close(); r.Close(); db.Close() }, nil
}

// crashLoad runs crashWorkers goroutines of enqueue, lease, then complete,
// fail (requeue or not), release (at once or delayed), heartbeat-and-hold or
// hold, printing each operation
// to out after it was acknowledged, until stop is closed or a call fails.
func crashLoad(ctx context.Context, q resourcelease.Queue, seed uint64, out io.Writer, stop <-chan struct{}, opsPerWorker int) error {
	var mu sync.Mutex
	emit := func(format string, args ...any) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Fprintf(out, "ACK "+format+"\n", args...)
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, crashWorkers)
	for w := range crashWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			peer := fmt.Sprintf("worker-%d", w)
			for i := 0; opsPerWorker <= 0 || i < opsPerWorker; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := crashStep(ctx, q, rng, peer, fmt.Sprintf("req-%d-%d-%d", seed, w, i), emit); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func crashStep(ctx context.Context, q resourcelease.Queue, rng *rand.Rand, peer, reqID string, emit func(string, ...any) error) error {
	res, err := q.Enqueue(ctx, resourcelease.Item{
		ResourceType: "demo.order", ResourceID: reqID, PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"id":"` + reqID + `"}`),
		Attributes: map[string]string{"tenant": "tenant-1"}, RequestID: reqID,
	})
	if err != nil {
		return err
	}
	if err := emit("E %d %s", res.SequenceID, reqID); err != nil {
		return err
	}
	l, err := q.Lease(ctx, peer, 0)
	if err != nil || l == nil {
		return err
	}
	t := l.OwnershipToken
	if err := emit("L %d %d %s", t.SequenceID, t.Attempt, t.LeaseID); err != nil {
		return err
	}
	switch p := rng.IntN(100); {
	case p < 40:
		if err := q.Complete(ctx, t); err != nil {
			return err
		}
		return emit("C %d %d", t.SequenceID, t.Attempt)
	case p < 60:
		if err := q.Fail(ctx, t, resourcelease.FailOptions{Reason: fmt.Sprintf("boom-%d-%d", t.SequenceID, t.Attempt), ErrorCode: "e.boom"}); err != nil {
			return err
		}
		return emit("R %d %d", t.SequenceID, t.Attempt)
	case p < 70:
		if err := q.Fail(ctx, t, resourcelease.FailOptions{Reason: fmt.Sprintf("fatal-%d-%d", t.SequenceID, t.Attempt), DeadLetter: true}); err != nil {
			return err
		}
		return emit("D %d %d", t.SequenceID, t.Attempt)
	case p < 78:
		if _, err := q.Heartbeat(ctx, t); err != nil {
			return err
		}
		return emit("H %d %d", t.SequenceID, t.Attempt)
	case p < 92:
		// Released at once, the item is the oldest ready one again and the
		// next lease (of any worker) takes it, with the same attempt.
		delay := time.Duration(0)
		if p >= 88 {
			delay = crashRelDelay
		}
		if err := q.Release(ctx, t, resourcelease.ReleaseOptions{Delay: delay}); err != nil {
			return err
		}
		return emit("X %d %d %d", t.SequenceID, t.Attempt, delay.Milliseconds())
	}
	return nil // hold the lease, silently
}

// TestCrashChild is the child process of the crash tests when
// LEASEMESH_CRASH_CHILD is set: it runs the load on the database named by
// LEASEMESH_CRASH_DB until it is killed. Run directly, it runs a short load
// in process, closes cleanly and checks the same guarantees with no
// operation in flight.
func TestCrashChild(t *testing.T) {
	ctx := context.Background()
	if os.Getenv(crashChildEnv) != "" {
		seed, _ := strconv.ParseUint(os.Getenv(crashSeedEnv), 10, 64)
		q, _, closeAll, err := openCrashQueue(ctx, os.Getenv(crashDBEnv), leasetest.NewManualClock(crashStart))
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		defer closeAll()
		time.AfterFunc(30*time.Second, func() { os.Exit(3) }) // never outlive a lost parent
		err = crashLoad(ctx, q, seed, os.Stdout, nil, 0)
		fmt.Fprintln(os.Stderr, "child: load stopped:", err)
		os.Exit(4) // a write to a closed pipe, or a failed call: either way, not a clean run
	}
	path := filepath.Join(t.TempDir(), "replication.db")
	q, _, closeAll, err := openCrashQueue(ctx, path, leasetest.NewManualClock(crashStart))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := crashLoad(ctx, q, 7, &out, nil, 40); err != nil {
		t.Fatal(err)
	}
	closeAll()
	if !strings.Contains(out.String(), "ACK X ") {
		t.Fatal("the load made no release")
	}
	ops := parseOps(t, out.String())
	if len(ops.enqueued) != crashWorkers*40 {
		t.Fatalf("parsed %d enqueues, want %d", len(ops.enqueued), crashWorkers*40)
	}
	verifyCrash(t, path, ops, 0)
}

// TestCrashRecovery kills the child twice at random points of its load
// (the second run starts from the first one's database) and checks the
// guarantees after restarting.
func TestCrashRecovery(t *testing.T) {
	if os.Getenv(crashChildEnv) != "" {
		t.Fatal("the crash child must run TestCrashChild only")
	}
	for run := range 3 {
		t.Run(fmt.Sprint("scenario-", run), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 0))
			path := filepath.Join(t.TempDir(), "replication.db")
			var ops ackedOps
			ops.init()
			const crashes = 2
			for c := range crashes {
				killAfter := 150 + rng.IntN(900)
				runChild(t, path, seed+uint64(c), killAfter, &ops)
			}
			verifyCrash(t, path, &ops, crashWorkers*crashes)
		})
	}
}

// runChild runs the child on path, SIGKILLs it after killAfter acknowledged
// operations, and adds every acknowledged operation it printed to ops.
func runChild(t *testing.T, path string, seed uint64, killAfter int, ops *ackedOps) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"=1", crashDBEnv+"="+path, crashSeedEnv+"="+strconv.FormatUint(seed, 10))
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
		ops.add(t, strings.TrimPrefix(line, "ACK "))
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
	t.Logf("child killed after %d acknowledged operations (%d read in total)", killAfter, n)
}

// ackedOps are the operations the child acknowledged.
type ackedOps struct {
	enqueued  map[int64]string // seq → requestId
	completed map[int64]bool
	leased    map[resourcelease.OwnershipToken]bool
	ended     map[[2]int64]string // (seq, attempt) → "C", "R", "D", "X" (the last acknowledged)
	delays    map[[2]int64]int64  // (seq, attempt) → delay ms of its last acknowledged release
}

func (o *ackedOps) init() {
	o.enqueued = map[int64]string{}
	o.completed = map[int64]bool{}
	o.leased = map[resourcelease.OwnershipToken]bool{}
	o.ended = map[[2]int64]string{}
	o.delays = map[[2]int64]int64{}
}

func (o *ackedOps) add(t *testing.T, line string) {
	t.Helper()
	f := strings.Fields(line)
	num := func(i int) int64 {
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		return n
	}
	switch f[0] {
	case "E":
		o.enqueued[num(1)] = f[2]
	case "L":
		id, err := uuid.Parse(f[3])
		if err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		o.leased[resourcelease.OwnershipToken{SequenceID: num(1), Attempt: int(num(2)), LeaseID: id}] = true
	case "C":
		o.completed[num(1)] = true
		o.ended[[2]int64{num(1), num(2)}] = "C"
	case "R", "D":
		o.ended[[2]int64{num(1), num(2)}] = f[0]
	case "X":
		o.ended[[2]int64{num(1), num(2)}] = "X"
		o.delays[[2]int64{num(1), num(2)}] = num(3)
	case "H":
	default:
		t.Fatalf("unknown line %q", line)
	}
}

func parseOps(t *testing.T, out string) *ackedOps {
	t.Helper()
	var o ackedOps
	o.init()
	for line := range strings.Lines(out) {
		o.add(t, strings.TrimPrefix(strings.TrimSpace(line), "ACK "))
	}
	return &o
}

// modelItem is an item's state rebuilt from the event log alone.
type modelItem struct {
	state     string // pending, leased, dead
	attempt   int
	releases  int // free releases since the attempt changed
	token     resourcelease.OwnershipToken
	lastError *resourcelease.ErrorInfo
	reason    string
}

// replay folds the event log into item states: what the log says the state
// is, to be compared with what the tables say.
func replay(t *testing.T, evs []resourcelease.Event) (map[int64]*modelItem, map[int64]bool, map[resourcelease.EventType]int) {
	t.Helper()
	items, completed, counts := map[int64]*modelItem{}, map[int64]bool{}, map[resourcelease.EventType]int{}
	for _, ev := range evs {
		counts[ev.EventType]++
		seq, _ := strconv.ParseInt(ev.Metadata[resourcelease.MetaSequenceID], 10, 64)
		attempt, _ := strconv.Atoi(ev.Metadata[resourcelease.MetaAttempt])
		it := items[seq]
		if it == nil && ev.EventType != resourcelease.EventEnqueue {
			t.Fatalf("event %d (%s) about item %d, which has no Enqueue event", ev.SequenceNumber, ev.EventType, seq)
		}
		switch ev.EventType {
		case resourcelease.EventEnqueue:
			if it != nil {
				t.Fatalf("item %d enqueued twice (event %d)", seq, ev.SequenceNumber)
			}
			items[seq] = &modelItem{state: "pending", attempt: attempt}
		case resourcelease.EventLeaseGranted:
			it.state, it.token, it.attempt = "leased", *ev.Ownership, attempt
		case resourcelease.EventHeartbeat:
		case resourcelease.EventCompleted:
			delete(items, seq)
			completed[seq] = true
		case resourcelease.EventFailed, resourcelease.EventLeaseExpired:
			it.state, it.attempt, it.lastError, it.releases = "pending", attempt, ev.Error, 0
		case resourcelease.EventLeaseReleased:
			it.state, it.attempt = "pending", attempt
			it.releases++
		case resourcelease.EventDeadLettered:
			it.state, it.attempt, it.reason, it.releases = "dead", attempt, ev.Error.Message, 0
		default:
			t.Fatalf("unexpected event type %s", ev.EventType)
		}
	}
	return items, completed, counts
}

func readLog(t *testing.T, r resourcelease.Replicator, after int64) []resourcelease.Event {
	t.Helper()
	var out []resourcelease.Event
	for {
		evs, err := r.ReadEvents(context.Background(), after, replication.MaxReadLimit)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].SequenceNumber
	}
}

// verifyCrash restarts from path and checks the guarantees against ops.
// inFlight bounds the operations that were running (not acknowledged) when
// the child died: each may have committed without being acknowledged.
func verifyCrash(t *testing.T, path string, ops *ackedOps, inFlight int) {
	t.Helper()
	ctx := context.Background()
	clock := leasetest.NewManualClock(crashStart)
	q, r, closeAll, err := openCrashQueue(ctx, path, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll()
	st, err := r.LoadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	state := map[int64]string{}
	pending := map[int64]resourcelease.PendingItem{}
	leased := map[int64]resourcelease.LeasedItem{}
	dead := map[int64]resourcelease.DeadLetter{}
	for _, p := range st.Pending {
		state[p.SequenceID], pending[p.SequenceID] = "pending", p
	}
	for _, l := range st.Leased {
		state[l.SequenceID], leased[l.SequenceID] = "leased", l
	}
	for _, d := range st.DeadLetters {
		state[d.SequenceID], dead[d.SequenceID] = "dead", d
	}

	// (4) The log is gap-free and increasing, and replaying it gives exactly
	// the state in the tables: no mutation without its event, no event
	// without its mutation.
	evs := readLog(t, r, 0)
	for i, ev := range evs {
		if ev.SequenceNumber != int64(i)+1 {
			t.Fatalf("event %d has sequence %d: the log has a gap or is out of order", i, ev.SequenceNumber)
		}
	}
	model, completedInLog, counts := replay(t, evs)
	if len(model) != len(state) {
		t.Fatalf("the log replays to %d live items, the tables hold %d", len(model), len(state))
	}
	for seq, m := range model {
		switch got := state[seq]; {
		case got != m.state:
			t.Fatalf("item %d: log says %s, tables say %q", seq, m.state, got)
		case got == "leased" && leased[seq].Token != m.token:
			t.Fatalf("item %d: log's lease %v, tables' lease %v", seq, m.token, leased[seq].Token)
		case got == "pending" && (pending[seq].Attempt != m.attempt || fmt.Sprint(pending[seq].LastError) != fmt.Sprint(m.lastError)):
			t.Fatalf("item %d: log says attempt %d lastError %v, tables say %d %v", seq, m.attempt, m.lastError, pending[seq].Attempt, pending[seq].LastError)
		case got == "pending" && pending[seq].Releases != m.releases, got == "leased" && leased[seq].Releases != m.releases:
			t.Fatalf("item %d: log says %d releases in a row, tables say %d (pending) %d (leased)", seq, m.releases, pending[seq].Releases, leased[seq].Releases)
		case got == "dead" && (dead[seq].Attempt != m.attempt || dead[seq].Reason != m.reason):
			t.Fatalf("item %d: log says dead at attempt %d (%q), tables say %d (%q)", seq, m.attempt, m.reason, dead[seq].Attempt, dead[seq].Reason)
		}
	}
	if counts[resourcelease.EventEnqueue] != len(model)+len(completedInLog) {
		t.Fatalf("%d Enqueue events for %d items", counts[resourcelease.EventEnqueue], len(model)+len(completedInLog))
	}
	if st.NextSequenceID <= maxKey(model, completedInLog) {
		t.Fatalf("NextSequenceID %d would reuse an issued id", st.NextSequenceID)
	}

	// (1) Every acknowledged enqueue is there (or its completion committed).
	for seq := range ops.enqueued {
		if state[seq] == "" && !completedInLog[seq] {
			t.Fatalf("acknowledged enqueue %d is lost", seq)
		}
	}
	// (2) No acknowledged completion comes back.
	for seq := range ops.completed {
		if state[seq] != "" {
			t.Fatalf("completed item %d came back as %s", seq, state[seq])
		}
	}
	// (5) Dead letters, attempts, lastError and requeue readyAt survive.
	moved := 0 // items an unacknowledged operation moved past their last acknowledged state
	for k, what := range ops.ended {
		seq, attempt := k[0], int(k[1])
		switch what {
		case "D":
			d, ok := dead[seq]
			if !ok || d.Attempt != attempt || !strings.Contains(d.Reason, fmt.Sprintf("fatal-%d-%d", seq, attempt)) {
				t.Fatalf("acknowledged dead letter %d (attempt %d) is %s %+v", seq, attempt, state[seq], d)
			}
		case "R":
			p, isPending := pending[seq]
			switch {
			case isPending && p.Attempt == attempt+1:
				if p.LastError == nil || p.LastError.Message != fmt.Sprintf("boom-%d-%d", seq, attempt) || p.LastError.Code != "e.boom" {
					t.Fatalf("requeued item %d: lastError %+v", seq, p.LastError)
				}
				if !p.ReadyAt.Equal(crashStart.Add(crashReqDelay)) {
					t.Fatalf("requeued item %d: readyAt %v, want %v", seq, p.ReadyAt, crashStart.Add(crashReqDelay))
				}
			case isPending && p.Attempt > attempt+1, state[seq] == "leased" && leased[seq].Token.Attempt > attempt,
				state[seq] == "dead" && dead[seq].Attempt > attempt, completedInLog[seq]:
				// a later attempt was acknowledged or in flight
			default:
				t.Fatalf("acknowledged requeue of %d (attempt %d) is %s", seq, attempt, state[seq])
			}
		case "X":
			p, isPending := pending[seq]
			delay := time.Duration(ops.delays[k]) * time.Millisecond
			switch {
			case isPending && p.Attempt == attempt:
				// Released, its attempt not counted, in its old place.
				if want := crashStart.Add(delay); delay > 0 && !p.ReadyAt.Equal(want) {
					t.Fatalf("item %d released with a delay: readyAt %v, want %v", seq, p.ReadyAt, want)
				}
				if p.Releases < 1 || p.Releases > crashMaxRelease {
					t.Fatalf("released item %d: %d releases in a row", seq, p.Releases)
				}
			case isPending && p.Attempt == attempt+1 && p.LastError != nil && p.LastError.Code == resourcelease.CodeReleaseLimit:
				// A release beyond MaxReleases: counted as a failed attempt.
			case state[seq] == "leased" && leased[seq].Token.Attempt >= attempt, isPending && p.Attempt > attempt,
				state[seq] == "dead" && dead[seq].Attempt >= attempt, completedInLog[seq]:
				// leased again (same attempt, by a later lease) or moved on
			default:
				t.Fatalf("acknowledged release of %d (attempt %d) is %s %+v", seq, attempt, state[seq], p)
			}
		}
	}
	// (3) Leases held at the crash keep their tokens.
	var live []resourcelease.OwnershipToken
	for tok := range ops.leased {
		if _, ended := ops.ended[[2]int64{tok.SequenceID, int64(tok.Attempt)}]; ended {
			continue
		}
		if l, ok := leased[tok.SequenceID]; ok && l.Token == tok {
			live = append(live, tok)
			continue
		}
		moved++ // completed, failed or released by a call the crash cut short
	}
	if moved > inFlight {
		t.Fatalf("%d acknowledged leases are gone without an acknowledged end; at most %d calls were in flight", moved, inFlight)
	}
	if len(live) == 0 {
		t.Fatal("no lease survived: the load did not exercise recovery")
	}

	// The dedupe window survives: every acknowledged request id still
	// answers with its first sequence id.
	for seq, req := range ops.enqueued {
		res, err := q.Enqueue(ctx, resourcelease.Item{ResourceType: "demo.order", ResourceID: req, PartitionKey: "tenant-1", PayloadEncoding: "application/json", RequestID: req})
		if err != nil || !res.Duplicate || res.SequenceID != seq {
			t.Fatalf("re-enqueue of %s = %+v, %v; want the duplicate of %d", req, res, err, seq)
		}
	}

	// Half the surviving leases are still honoured after the restart: their
	// worker heartbeats and completes with the old token.
	first := r.LastSequence() + 1
	expiring := map[int64]resourcelease.OwnershipToken{}
	for i, tok := range live {
		if i%2 == 1 {
			expiring[tok.SequenceID] = tok
			continue
		}
		if _, err := q.Heartbeat(ctx, tok); err != nil {
			t.Fatalf("heartbeat with pre-crash token %v: %v", tok, err)
		}
		if err := q.Complete(ctx, tok); err != nil {
			t.Fatalf("complete with pre-crash token %v: %v", tok, err)
		}
	}
	// The others expire (nobody heartbeats them) and are requeued with the
	// next attempt: never lost, never leased twice at once.
	clock.Advance(crashLeaseTTL)
	q.Sweep() // expires them: pending again, after the requeue delay
	for _, tok := range expiring {
		if err := q.Complete(ctx, tok); !errors.Is(err, resourcelease.ErrUnknownToken) {
			t.Fatalf("complete with expired token %v: %v, want unknown_token", tok, err)
		}
	}
	clock.Advance(crashReqDelay)
	q.Sweep()
	holders := map[int64]*resourcelease.Lease{}
	for {
		l, err := q.Lease(ctx, "after-restart", 0)
		if err != nil {
			t.Fatal(err)
		}
		if l == nil {
			break
		}
		if holders[l.SequenceID] != nil {
			t.Fatalf("item %d leased twice", l.SequenceID)
		}
		holders[l.SequenceID] = l
	}
	for seq, tok := range expiring {
		l := holders[seq]
		if l == nil || l.Attempt != tok.Attempt+1 || l.LastError == nil || l.LastError.Code != resourcelease.CodeLeaseExpired {
			t.Fatalf("expired lease %v came back as %+v; want attempt %d with lastError lease_expired", tok, l, tok.Attempt+1)
		}
	}
	if s := engineStats(q); s.PendingCount != 0 {
		t.Fatalf("%d items still pending after leasing everything", s.PendingCount)
	}
	completedNow := len(live) - len(expiring)
	for _, l := range st.Leased {
		if _, ok := expiring[l.SequenceID]; ok || !ops.leased[l.Token] {
			// Expired (ours, or a lease granted just before the crash
			// whose acknowledgement never reached us): the next attempt.
			if h := holders[l.SequenceID]; h == nil || h.Attempt != l.Token.Attempt+1 {
				t.Fatalf("lease %v held at the crash came back as %+v, want attempt %d", l.Token, h, l.Token.Attempt+1)
			}
		}
	}
	if want := len(pending) + len(st.Leased) - completedNow; len(holders) != want {
		t.Fatalf("leased %d items after the restart, want every pending item and every expired lease (%d)", len(holders), want)
	}
	// The log continues without a gap across the restart.
	after := readLog(t, r, first-1)
	if len(after) == 0 || after[0].SequenceNumber != first {
		t.Fatalf("first event after the restart is %v, want sequence %d", after, first)
	}
	for i, ev := range after {
		if ev.SequenceNumber != first+int64(i) {
			t.Fatalf("gap after the restart at %d", ev.SequenceNumber)
		}
	}
}

func maxKey(ms ...any) int64 {
	m := int64(0)
	for _, x := range ms {
		switch v := x.(type) {
		case map[int64]*modelItem:
			for k := range v {
				m = max(m, k)
			}
		case map[int64]bool:
			for k := range v {
				m = max(m, k)
			}
		}
	}
	return m
}
