package postgres_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// The crash tests run the queue in a child process (this test binary,
// re-executed into TestQueueCrashChild) against the test server, SIGKILL
// it at a random point of a concurrent load, and check the durability
// guarantees against what the child acknowledged: the child prints an
// operation only after the queue call returned successfully, so every line
// the parent reads is an acknowledged operation. Nothing of the queue lives
// in the child: the database is the state, so "restarting" is opening a
// new Queue on it.

const (
	pgCrashChildEnv = "LEASEMESH_PG_CRASH_CHILD"
	pgCrashURLEnv   = "LEASEMESH_PG_CRASH_URL"
	pgCrashSeedEnv  = "LEASEMESH_PG_CRASH_SEED"
	pgCrashWorkers  = 6
	pgCrashReqDelay = 30 * time.Second
	pgCrashLeaseTTL = time.Minute
	pgCrashAttempts = 100
)

// pgCrashStart is the (manual) time of every run: child and parent agree
// on it, so requeue delays, expiries and the dedupe window are exact.
var pgCrashStart = time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)

func openCrashQueue(t testing.TB, url string, clock resourcelease.Clock) *postgres.Queue {
	return openQueue(t, url, clock, postgres.QueueConfig{
		Capacity: -1, LeaseDuration: pgCrashLeaseTTL, RequeueDelay: pgCrashReqDelay,
		MaxDeliveryAttempts: pgCrashAttempts, SweepInterval: time.Hour,
	})
}

// crashLoad runs pgCrashWorkers goroutines of enqueue, lease, then
// complete, fail (requeue or not), heartbeat-and-hold or hold, printing each
// operation to out after it was acknowledged, until a call fails or
// opsPerWorker rounds are done (0: until killed).
func crashLoad(q *postgres.Queue, seed uint64, out io.Writer, opsPerWorker int) error {
	var mu sync.Mutex
	emit := func(format string, args ...any) error {
		mu.Lock()
		defer mu.Unlock()
		_, err := fmt.Fprintf(out, "ACK "+format+"\n", args...)
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, pgCrashWorkers)
	for w := range pgCrashWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			for i := 0; opsPerWorker <= 0 || i < opsPerWorker; i++ {
				if err := crashStep(q, rng, fmt.Sprint("worker-", w), fmt.Sprintf("req-%d-%d-%d", seed, w, i), emit); err != nil {
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

func crashStep(q *postgres.Queue, rng *rand.Rand, peer, reqID string, emit func(string, ...any) error) error {
	it := qitem(reqID)
	it.RequestID = reqID
	res, err := q.Enqueue(bg, it)
	if err != nil {
		return err
	}
	if err := emit("E %d %s", res.SequenceID, reqID); err != nil {
		return err
	}
	l, err := q.Lease(bg, peer, 0)
	if err != nil || l == nil {
		return err
	}
	tok := l.OwnershipToken
	if err := emit("L %d %d %s", tok.SequenceID, tok.Attempt, tok.LeaseID); err != nil {
		return err
	}
	switch p := rng.IntN(100); {
	case p < 40:
		if err := q.Complete(bg, tok); err != nil {
			return err
		}
		return emit("C %d %d", tok.SequenceID, tok.Attempt)
	case p < 60:
		if err := q.Fail(bg, tok, resourcelease.FailOptions{Reason: fmt.Sprintf("boom-%d-%d", tok.SequenceID, tok.Attempt), ErrorCode: "e.boom"}); err != nil {
			return err
		}
		return emit("R %d %d", tok.SequenceID, tok.Attempt)
	case p < 70:
		if err := q.Fail(bg, tok, resourcelease.FailOptions{Reason: fmt.Sprintf("fatal-%d-%d", tok.SequenceID, tok.Attempt), DeadLetter: true}); err != nil {
			return err
		}
		return emit("D %d %d", tok.SequenceID, tok.Attempt)
	case p < 85:
		if _, err := q.Heartbeat(bg, tok); err != nil {
			return err
		}
		return emit("H %d %d", tok.SequenceID, tok.Attempt)
	}
	return nil // hold the lease, silently
}

// TestQueueCrashChild is the child process of the crash test when
// LEASEMESH_PG_CRASH_CHILD is set: it runs the load on the database at
// LEASEMESH_PG_CRASH_URL until it is killed. Run directly, it runs a short
// load in process, closes cleanly and checks the same guarantees with no
// call in flight. With LEASEMESH_PG_PART_CRASH_CHILD set it is the child of
// TestQueuePartitionCrash instead.
func TestQueueCrashChild(t *testing.T) {
	if os.Getenv(pgPartChildEnv) != "" {
		partitionCrashChild(t) // never returns
	}
	if os.Getenv(pgCrashChildEnv) != "" {
		seed, _ := strconv.ParseUint(os.Getenv(pgCrashSeedEnv), 10, 64)
		q := openCrashQueue(t, os.Getenv(pgCrashURLEnv), leasetest.NewManualClock(pgCrashStart))
		time.AfterFunc(60*time.Second, func() { os.Exit(3) }) // never outlive a lost parent
		err := crashLoad(q, seed, os.Stdout, 0)
		fmt.Fprintln(os.Stderr, "child: load stopped:", err)
		os.Exit(4) // a write to a closed pipe, or a failed call: either way not a clean run
	}
	t.Parallel()
	url := pgtest.NewDatabase(t)
	q := openCrashQueue(t, url, leasetest.NewManualClock(pgCrashStart))
	var out strings.Builder
	if err := crashLoad(q, 7, &out, 25); err != nil {
		t.Fatal(err)
	}
	q.Close()
	ops := newAckedOps()
	for line := range strings.Lines(out.String()) {
		ops.add(t, strings.TrimPrefix(strings.TrimSpace(line), "ACK "))
	}
	if len(ops.enqueued) != pgCrashWorkers*25 {
		t.Fatalf("parsed %d enqueues, want %d", len(ops.enqueued), pgCrashWorkers*25)
	}
	verifyQueueCrash(t, url, ops, 0)
}

// TestQueueCrashRecovery kills the child twice at random points of its load
// (the second run continues on the first one's database) and checks the
// guarantees after opening the queue again.
func TestQueueCrashRecovery(t *testing.T) {
	if os.Getenv(pgCrashChildEnv) != "" {
		t.Fatal("the crash child must run TestQueueCrashChild only")
	}
	t.Parallel()
	for run := range 2 {
		t.Run(fmt.Sprint("scenario-", run), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 0))
			url := pgtest.NewDatabase(t)
			ops := newAckedOps()
			const crashes = 2
			for c := range crashes {
				runQueueChild(t, url, seed+uint64(c), 100+rng.IntN(500), ops)
			}
			verifyQueueCrash(t, url, ops, pgCrashWorkers*crashes)
		})
	}
}

// runQueueChild runs the child on url, SIGKILLs it after killAfter
// acknowledged operations, and adds every acknowledged operation it printed
// to ops.
func runQueueChild(t *testing.T, url string, seed uint64, killAfter int, ops *ackedOps) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestQueueCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), pgCrashChildEnv+"=1", pgCrashURLEnv+"="+url, pgCrashSeedEnv+"="+strconv.FormatUint(seed, 10))
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
	t.Logf("child killed after %d acknowledged operations", killAfter)
}

// ackedOps are the operations the child acknowledged.
type ackedOps struct {
	enqueued  map[int64]string // seq → requestId
	completed map[int64]bool
	leased    map[resourcelease.OwnershipToken]bool
	ended     map[[2]int64]string // (seq, attempt) → "C", "R", "D"
}

func newAckedOps() *ackedOps {
	return &ackedOps{enqueued: map[int64]string{}, completed: map[int64]bool{},
		leased: map[resourcelease.OwnershipToken]bool{}, ended: map[[2]int64]string{}}
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
	case "H":
	default:
		t.Fatalf("unknown line %q", line)
	}
}

// crashRow is an item as the tables hold it.
type crashRow struct {
	state     string
	attempt   int
	token     resourcelease.OwnershipToken // the live lease
	lastError *resourcelease.ErrorInfo
	notBefore time.Time
	reason    string
}

func crashRows(t *testing.T, q *postgres.Queue) map[int64]*crashRow {
	t.Helper()
	rows, err := q.Store().Pool().Query(bg, `SELECT sequence_id, state, attempt, lease_id, last_error::text, not_before, reason
		FROM leasemesh.items`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]*crashRow{}
	for rows.Next() {
		var (
			seq       int64
			r         crashRow
			leaseID   *uuid.UUID
			lastErr   *string
			notBefore *time.Time
			reason    *string
		)
		if err := rows.Scan(&seq, &r.state, &r.attempt, &leaseID, &lastErr, &notBefore, &reason); err != nil {
			t.Fatal(err)
		}
		if leaseID != nil {
			r.token = resourcelease.OwnershipToken{SequenceID: seq, Attempt: r.attempt, LeaseID: *leaseID}
		}
		if lastErr != nil {
			r.lastError = &resourcelease.ErrorInfo{}
			if err := json.Unmarshal([]byte(*lastErr), r.lastError); err != nil {
				t.Fatal(err)
			}
		}
		if notBefore != nil {
			r.notBefore = notBefore.UTC()
		}
		if reason != nil {
			r.reason = *reason
		}
		out[seq] = &r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// verifyQueueCrash opens the queue on url again and checks the guarantees
// against ops. inFlight bounds the calls that were running (not
// acknowledged) when a child died: each may have committed without being
// acknowledged.
func verifyQueueCrash(t *testing.T, url string, ops *ackedOps, inFlight int) {
	t.Helper()
	clock := leasetest.NewManualClock(pgCrashStart)
	q := openCrashQueue(t, url, clock)
	state := crashRows(t, q)
	queueCounts(t, q.Store().Pool())

	// (4) The log is gap-free and increasing, and replaying it gives
	// exactly the state in the tables: no mutation without its event, no
	// event without its mutation.
	evs := readAll(t, q)
	for i, ev := range evs {
		if ev.SequenceNumber != int64(i)+1 {
			t.Fatalf("event %d has sequence %d: the log has a gap or is out of order", i, ev.SequenceNumber)
		}
	}
	model, completedInLog := replayLog(t, evs)
	if len(model) != len(state) {
		t.Fatalf("the log replays to %d live items, the tables hold %d", len(model), len(state))
	}
	for seq, m := range model {
		got := state[seq]
		switch {
		case got == nil:
			t.Fatalf("item %d: the log has it %s, the tables do not", seq, m.state)
		case (got.state == "scheduled" && m.state != "pending") || (got.state != "scheduled" && got.state != m.state):
			t.Fatalf("item %d: log says %s, tables say %s", seq, m.state, got.state)
		case got.state == "leased" && got.token != m.token:
			t.Fatalf("item %d: log's lease %v, tables' lease %v", seq, m.token, got.token)
		case got.attempt != m.attempt || fmt.Sprint(got.lastError) != fmt.Sprint(m.lastError):
			t.Fatalf("item %d: log says attempt %d lastError %v, tables say %d %v", seq, m.attempt, m.lastError, got.attempt, got.lastError)
		case got.state == "dead" && got.reason != m.reason:
			t.Fatalf("item %d: dead for %q in the log, %q in the tables", seq, m.reason, got.reason)
		}
	}

	// (1) Every acknowledged enqueue is there, or its completion is logged.
	for seq := range ops.enqueued {
		if state[seq] == nil && !completedInLog[seq] {
			t.Fatalf("acknowledged enqueue %d is lost", seq)
		}
	}
	// (2) No acknowledged completion comes back.
	for seq := range ops.completed {
		if state[seq] != nil {
			t.Fatalf("completed item %d came back as %s", seq, state[seq].state)
		}
	}
	// (5) Dead letters, attempts, lastError and requeue delays survive.
	for k, what := range ops.ended {
		seq, attempt := k[0], int(k[1])
		r := state[seq]
		switch what {
		case "D":
			if r == nil || r.state != "dead" || r.attempt != attempt || !strings.Contains(r.reason, fmt.Sprintf("fatal-%d-%d", seq, attempt)) {
				t.Fatalf("acknowledged dead letter %d (attempt %d) is %+v", seq, attempt, r)
			}
		case "R":
			switch {
			case r != nil && r.state == "scheduled" && r.attempt == attempt+1:
				if r.lastError == nil || r.lastError.Message != fmt.Sprintf("boom-%d-%d", seq, attempt) || r.lastError.Code != "e.boom" {
					t.Fatalf("requeued item %d: lastError %+v", seq, r.lastError)
				}
				if !r.notBefore.Equal(pgCrashStart.Add(pgCrashReqDelay)) {
					t.Fatalf("requeued item %d: ready at %v, want %v", seq, r.notBefore, pgCrashStart.Add(pgCrashReqDelay))
				}
			case r != nil && r.attempt > attempt+1, completedInLog[seq]:
				// a later attempt was acknowledged or in flight
			default:
				t.Fatalf("acknowledged requeue of %d (attempt %d) is %+v", seq, attempt, r)
			}
		}
	}
	// (3) Leases held at the crash keep their tokens.
	var live []resourcelease.OwnershipToken
	moved := 0
	for tok := range ops.leased {
		if _, ended := ops.ended[[2]int64{tok.SequenceID, int64(tok.Attempt)}]; ended {
			continue
		}
		if r := state[tok.SequenceID]; r != nil && r.state == "leased" && r.token == tok {
			live = append(live, tok)
			continue
		}
		moved++ // completed or failed by a call the crash cut short
	}
	if moved > inFlight {
		t.Fatalf("%d acknowledged leases are gone without an acknowledged end; at most %d calls were in flight", moved, inFlight)
	}
	if len(live) == 0 {
		t.Fatal("no lease survived: the load did not exercise recovery")
	}
	// The dedupe window survives: every acknowledged request id answers with
	// its first sequence id.
	for seq, req := range ops.enqueued {
		it := qitem(req)
		it.RequestID = req
		res, err := q.Enqueue(bg, it)
		if err != nil || !res.Duplicate || res.SequenceID != seq {
			t.Fatalf("re-enqueue of %s = %+v, %v; want the duplicate of %d", req, res, err, seq)
		}
	}
	first := q.LastSequence() + 1
	// Half the surviving leases are honoured by the new queue: their worker
	// heartbeats and completes with the old token.
	expiring := map[int64]resourcelease.OwnershipToken{}
	for i, tok := range live {
		if i%2 == 1 {
			expiring[tok.SequenceID] = tok
			continue
		}
		if _, err := q.Heartbeat(bg, tok); err != nil {
			t.Fatalf("heartbeat with pre-crash token %v: %v", tok, err)
		}
		if err := q.Complete(bg, tok); err != nil {
			t.Fatalf("complete with pre-crash token %v: %v", tok, err)
		}
	}
	// The others expire (nobody heartbeats them) and come back with their
	// next attempt: never lost, never leased twice at once.
	clock.Advance(pgCrashLeaseTTL)
	if _, err := q.Sweep(bg); err != nil {
		t.Fatal(err)
	}
	for _, tok := range expiring {
		if err := q.Complete(bg, tok); !errors.Is(err, resourcelease.ErrUnknownToken) {
			t.Fatalf("complete with expired token %v: %v, want unknown_token", tok, err)
		}
	}
	clock.Advance(pgCrashReqDelay)
	holders := map[int64]*resourcelease.Lease{}
	for {
		l, err := q.Lease(bg, "after-restart", 0)
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
	if st, _ := q.Stats(bg); st.PendingCount != 0 {
		t.Fatalf("%d items still pending after leasing everything", st.PendingCount)
	}
	// The log continues without a gap.
	after := readAll(t, q)[first-1:]
	if len(after) == 0 || after[0].SequenceNumber != first {
		t.Fatalf("the first event after the restart is %v, want sequence %d", after, first)
	}
	queueCounts(t, q.Store().Pool())
}

// replayItem is an item's state rebuilt from the log alone.
type replayItem struct {
	state     string // pending, leased, dead
	attempt   int
	token     resourcelease.OwnershipToken
	lastError *resourcelease.ErrorInfo
	reason    string
}

// replayLog folds the log into item states: what the log says the state is,
// to be compared with the tables.
func replayLog(t *testing.T, evs []resourcelease.Event) (map[int64]*replayItem, map[int64]bool) {
	t.Helper()
	items, completed := map[int64]*replayItem{}, map[int64]bool{}
	for _, ev := range evs {
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
			items[seq] = &replayItem{state: "pending", attempt: attempt}
		case resourcelease.EventLeaseGranted:
			it.state, it.token, it.attempt = "leased", *ev.Ownership, attempt
		case resourcelease.EventHeartbeat:
		case resourcelease.EventCompleted:
			delete(items, seq)
			completed[seq] = true
		case resourcelease.EventFailed, resourcelease.EventLeaseExpired, resourcelease.EventLeaseReleased:
			it.state, it.attempt, it.lastError = "pending", attempt, ev.Error
		case resourcelease.EventDeadLettered:
			it.state, it.attempt, it.reason = "dead", attempt, ev.Error.Message
		default:
			t.Fatalf("unexpected event type %s", ev.EventType)
		}
	}
	return items, completed
}
