package main_test

// The chaos test: a dispatcher process (the demo binary, on SQLite), worker
// processes (this test binary, re-executed as a worker that prints every
// acknowledgement it gets) and a producer in the test, under load, while the
// test SIGKILLs and restarts the dispatcher and the workers at random points.
// Afterwards it checks what the producer and the workers were told against the
// replication log it tailed through the control plane. TestChaosPostgres
// (chaos_pg_test.go) runs the same with two dispatchers on one PostgreSQL
// database; runChaos is what both share.
//
//	LEASEMESH_CHAOS_SEED=42 LEASEMESH_CHAOS_DURATION=10m go test -run 'TestChaos$' -timeout 30m ./examples/meshdemo

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

const (
	// chaosSeedEnv seeds the kill schedule and the workers' choices; a
	// failing run prints the seed it used.
	chaosSeedEnv = "LEASEMESH_CHAOS_SEED"
	// chaosDurationEnv is how long the kills go on (a Go duration).
	chaosDurationEnv = "LEASEMESH_CHAOS_DURATION"
	// chaosWorkerEnv, set in a child process, makes TestMain run a chaos
	// worker against those RPC URLs (comma-separated) instead of the tests.
	chaosWorkerEnv = "LEASEMESH_CHAOS_WORKER"
	chaosPeerEnv   = "LEASEMESH_CHAOS_PEER"

	chaosDefaultDuration = 30 * time.Second
	chaosWorkers         = 3 // processes
	chaosSlots           = 3 // concurrent leases per worker process
	chaosMaxAttempts     = 5
	chaosLease           = 2 * time.Second
	// Every chaosPoisonEvery-th item is poison: the workers fail it with
	// requeue=false, so it must be dead-lettered on its first failure.
	chaosPoisonEvery  = 20
	chaosPoisonPrefix = "poison-"
)

// chaosRecord is one line a chaos worker prints: an acknowledgement from the
// dispatcher ("leased", "heartbeat", "completed", "failed", "deadlettered",
// "lost" for unknown_token), a call it is about to make ("completing",
// "failing", "deadlettering"), "possiblysettled" when a settle that failed
// over came back resourcelease.ErrPossiblySettled (no acknowledgement), or
// "gaveup" when its lease ran out while the dispatchers were unreachable.
type chaosRecord struct {
	Op    string                       `json:"op"`
	Peer  string                       `json:"peer"`
	Token resourcelease.OwnershipToken `json:"token"`
	ID    string                       `json:"id,omitempty"`
}

// chaosClient is a client of the dispatchers at urls, failing over between
// them when there are several.
func chaosClient(urls []string, caller string) (*transport.Client, error) {
	return transport.NewClient(urls[0], transport.ClientConfig{
		Service: "resourcelease-mesh-demo", Namespace: "resourcelease.mesh", Caller: caller, Timeout: 5 * time.Second,
		URLs: urls[1:],
	})
}

// chaosWorkerMain is a worker process: chaosSlots loops of lease, work,
// settle, each printing what it was acknowledged. urls are the dispatchers'
// RPC URLs, comma-separated. It runs until it is killed, or until the test
// that started it is gone.
func chaosWorkerMain(urls string) int {
	peer := os.Getenv(chaosPeerEnv)
	seed, _ := strconv.ParseUint(os.Getenv(chaosSeedEnv), 10, 64)
	client, err := chaosClient(strings.Split(urls, ","), peer)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout) // unbuffered: a line is written before the next call
	rec := func(op string, tok resourcelease.OwnershipToken, id string) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(chaosRecord{Op: op, Peer: peer, Token: tok, ID: id})
	}
	for slot := range chaosSlots {
		rng := rand.New(rand.NewPCG(seed, uint64(slot)))
		go chaosSlot(client, peer, rng, rec)
	}
	// An orphan (the test died without killing it) stops by itself.
	parent := os.Getppid()
	for os.Getppid() == parent {
		time.Sleep(500 * time.Millisecond)
	}
	return 3
}

func chaosSlot(c *transport.Client, peer string, rng *rand.Rand, rec func(string, resourcelease.OwnershipToken, string)) {
	ctx := context.Background()
	pause := func() { time.Sleep(time.Duration(50+rng.IntN(200)) * time.Millisecond) }
	for {
		sent := time.Now()
		l, err := c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: peer, Wait: 2 * time.Second})
		if err != nil {
			pause()
			continue
		}
		if l == nil {
			continue
		}
		tok, id := l.OwnershipToken, l.Payload.ResourceID
		rec("leased", tok, id)
		ttl := l.TTL
		if ttl <= 0 {
			ttl = chaosLease
		}
		deadline := sent.Add(ttl)
		// settle makes one settling call until it is acknowledged, the token
		// is unknown, or the lease has run out.
		settle := func(op string, call func() error) {
			rec(op+"ing", tok, id)
			for {
				err := call()
				switch {
				case err == nil:
					rec(op+"ed", tok, id)
					return
				case errors.Is(err, resourcelease.ErrPossiblySettled):
					// The client failed over after a try whose answer
					// it lost: not an acknowledgement; the log says
					// whether that try settled the lease.
					rec("possiblysettled", tok, id)
					return
				case errors.Is(err, resourcelease.ErrUnknownToken):
					rec("lost", tok, id)
					return
				case time.Now().After(deadline):
					rec("gaveup", tok, id)
					return
				}
				pause()
			}
		}
		complete := func() {
			settle("complet", func() error { return c.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: tok}) })
		}
		switch r := rng.Float64(); {
		case strings.HasPrefix(id, chaosPoisonPrefix):
			settle("deadletter", func() error {
				return c.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: tok, Reason: "poison", ErrorCode: "chaos.poison", DeadLetter: true})
			})
		case r < 0.10:
			settle("fail", func() error {
				return c.Fail(ctx, &resourcelease.FailRequest{OwnershipToken: tok, Reason: "flaky", ErrorCode: "chaos.flaky"})
			})
		case r < 0.15: // slow: outlives its lease unless the heartbeats extend it
			for range 5 {
				time.Sleep(ttl / 4)
				hbSent := time.Now()
				hb, err := c.Heartbeat(ctx, &resourcelease.HeartbeatRequest{OwnershipToken: tok})
				switch {
				case err == nil:
					rec("heartbeat", tok, id)
					if hb.TTL > 0 {
						deadline = hbSent.Add(hb.TTL)
					}
				case errors.Is(err, resourcelease.ErrUnknownToken):
					rec("lost", tok, id)
					return
				}
			}
			if time.Now().After(deadline) {
				rec("gaveup", tok, id)
				continue
			}
			complete()
		default:
			time.Sleep(time.Duration(rng.IntN(80)) * time.Millisecond)
			complete()
		}
	}
}

// chaosSettings reads the seed and duration from the environment.
func chaosSettings(t *testing.T) (uint64, time.Duration) {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(chaosSeedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", chaosSeedEnv, s, err)
		}
		seed = v
	}
	d := chaosDefaultDuration
	if s := os.Getenv(chaosDurationEnv); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil || v <= 0 {
			t.Fatalf("%s=%q: want a positive Go duration", chaosDurationEnv, s)
		}
		d = v
	}
	return seed, d
}

// chaosTail follows the replication log through the control plane, across
// dispatcher restarts, keeping every event and noting any gap.
type chaosTail struct {
	mu     sync.Mutex
	events []resourcelease.Event
	gaps   []string
}

func (ct *chaosTail) last() int64 {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if len(ct.events) == 0 {
		return 0
	}
	return ct.events[len(ct.events)-1].SequenceNumber
}

// poll reads what is new; it reports whether the dispatcher answered and
// how many events came.
func (ct *chaosTail) poll(ctx context.Context, c *control.Client) (int, bool) {
	since := ct.last()
	page, err := c.Replication(ctx, since, 1000)
	if err != nil {
		return 0, false
	}
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if page.Trimmed != nil {
		ct.gaps = append(ct.gaps, fmt.Sprintf("retention trimmed %d..%d before the tail read them", page.Trimmed.From, page.Trimmed.To))
	}
	for _, e := range page.Events {
		if e.SequenceNumber != since+1 {
			ct.gaps = append(ct.gaps, fmt.Sprintf("sequence %d follows %d", e.SequenceNumber, since))
		}
		since = e.SequenceNumber
		ct.events = append(ct.events, e)
	}
	return len(page.Events), true
}

// run polls until ctx ends, moving to the next of cs (dispatchers of one
// log) when one does not answer.
func (ct *chaosTail) run(ctx context.Context, cs []*control.Client) {
	for i := 0; ctx.Err() == nil; {
		n, ok := ct.poll(ctx, cs[i])
		if !ok {
			i = (i + 1) % len(cs)
		}
		if !ok || n == 0 {
			sleep := time.NewTimer(100 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-sleep.C:
			}
			sleep.Stop()
		}
	}
}

// chaosProducer enqueues unique items until its context ends, retrying each
// (same request id) until the dispatcher acknowledges it, and records the
// sequence id of every acknowledgement.
type chaosProducer struct {
	mu    sync.Mutex
	acked map[string]int64 // resource id -> sequence id acknowledged
	dups  int              // acknowledgements that were deduplicated retries
}

func (p *chaosProducer) run(ctx context.Context, c *transport.Client, seed uint64) {
	for n := 1; ctx.Err() == nil; n++ {
		id := fmt.Sprintf("item-%06d", n)
		if n%chaosPoisonEvery == 0 {
			id = fmt.Sprintf("%s%06d", chaosPoisonPrefix, n)
		}
		item := &resourcelease.Item{ResourceType: "chaos.order", ResourceID: id, PartitionKey: "tenant-" + strconv.Itoa(n%4),
			PayloadEncoding: "application/json", Body: []byte(`{}`), RequestID: fmt.Sprintf("chaos-%d-%s", seed, id)}
		for ctx.Err() == nil {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			resp, err := c.Enqueue(cctx, &resourcelease.EnqueueRequest{Payload: item})
			cancel()
			if err == nil {
				p.mu.Lock()
				p.acked[id] = resp.SequenceID
				if resp.Duplicate {
					p.dups++
				}
				p.mu.Unlock()
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// chaosWorker is one incarnation of a worker process.
type chaosWorker struct {
	peer   string
	p      *proc
	killed bool
}

// chaosMesh is what a chaos run kills and restarts: the dispatchers of one
// storage, by index, and how to reach them.
type chaosMesh struct {
	// test names the test in the rerun line of a failing run.
	test string
	// dataDirs are the dispatchers' data directories (none on Postgres),
	// kept with a failing run's evidence.
	dataDirs []string
	// rpcURLs are the dispatchers' RPC URLs, in the order of their
	// indexes; the producer and the workers fail over between them.
	rpcURLs []string
	// controlURLs are their control planes, in the same order; the tail
	// reads the log from whichever answers.
	controlURLs []string
	// kill SIGKILLs dispatcher i; start restarts it on the same ports and
	// returns once it serves.
	kill, start func(i int)
	// outage, when set, takes the storage itself down and back up once per
	// run (a PostgreSQL restart) and returns once every dispatcher serves.
	outage func()
}

// TestChaos runs the mesh on SQLite under load and kills its processes at
// random. See the file comment; the README's Development section has the
// long run.
func TestChaos(t *testing.T) {
	m := newMesh(t)
	dispArgs := []string{
		"--meshDemo:leaseDurationSeconds=" + strconv.FormatFloat(chaosLease.Seconds(), 'f', -1, 64),
		"--meshDemo:heartbeatIntervalSeconds=0.5",
		"--meshDemo:maxDeliveryAttempts=" + strconv.Itoa(chaosMaxAttempts),
		"--meshDemo:capacity=100000",
	}
	startDispatcher(t, m, dispArgs...)
	runChaos(t, &chaosMesh{
		test:        "TestChaos$",
		dataDirs:    []string{m.dataDir},
		rpcURLs:     []string{m.rpcURL},
		controlURLs: []string{m.base},
		kill:        func(int) { m.disp.kill() },
		start:       func(int) { startDispatcher(t, m, dispArgs...) },
	})
}

// runChaos is a chaos run against cm, whose dispatchers serve: workers,
// producer and tail start, the seeded schedule kills and restarts
// dispatchers and workers (and takes the storage down once, when cm can),
// then the queue drains and the checker holds the log against every
// acknowledgement.
func runChaos(t *testing.T, cm *chaosMesh) {
	seed, duration := chaosSettings(t)
	t.Logf("chaos: %s=%d %s=%s", chaosSeedEnv, seed, chaosDurationEnv, duration)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("chaos FAILED; rerun this schedule with %s=%d %s=%s go test -run '%s' ./examples/meshdemo",
				chaosSeedEnv, seed, chaosDurationEnv, duration, cm.test)
		}
	})
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	dispKills := 0

	incarnations := 0
	var all []*chaosWorker
	startWorker := func() *chaosWorker {
		incarnations++
		w := &chaosWorker{peer: fmt.Sprintf("chaos-worker-%d", incarnations)}
		w.p = startExec(t, w.peer, t.TempDir(), exe, []string{
			chaosWorkerEnv + "=" + strings.Join(cm.rpcURLs, ","), chaosPeerEnv + "=" + w.peer,
			chaosSeedEnv + "=" + strconv.FormatUint(seed+uint64(incarnations), 10),
		})
		all = append(all, w)
		return w
	}
	live := make([]*chaosWorker, chaosWorkers)
	for i := range live {
		live[i] = startWorker()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	producerClient, err := chaosClient(cm.rpcURLs, "chaos-producer")
	if err != nil {
		t.Fatal(err)
	}
	defer producerClient.Close()
	ctls := make([]*control.Client, len(cm.controlURLs))
	for i, u := range cm.controlURLs {
		if ctls[i], err = control.NewClient(u, control.ClientConfig{Timeout: 5 * time.Second}); err != nil {
			t.Fatal(err)
		}
		defer ctls[i].Close()
	}

	tail := &chaosTail{}
	tailCtx, stopTail := context.WithCancel(ctx)
	tailDone := make(chan struct{})
	go func() { defer close(tailDone); tail.run(tailCtx, ctls) }()
	defer func() { stopTail(); <-tailDone }()

	producer := &chaosProducer{acked: map[string]int64{}}
	prodCtx, stopProducer := context.WithCancel(ctx)
	prodDone := make(chan struct{})
	go func() { defer close(prodDone); producer.run(prodCtx, producerClient, seed) }()
	defer func() { stopProducer(); <-prodDone }()

	// The schedule: a kill every 1-4 s (a dispatcher first, then a worker,
	// then at random), then a restart 0-1 s later; with several
	// dispatchers only one is down at a time, but for a "both" kill that
	// restarts them together. The storage outage comes once, a third of
	// the way in. The seed fixes the schedule, not its interleaving with
	// the load.
	pick := func() int {
		if len(cm.rpcURLs) == 1 {
			return 0 // and the SQLite schedule of a seed stays what it was
		}
		return rng.IntN(len(cm.rpcURLs))
	}
	killDispatchers := func(down time.Duration, which ...int) {
		for _, i := range which {
			cm.kill(i)
			dispKills++
		}
		time.Sleep(down)
		for _, i := range which {
			cm.start(i)
		}
	}
	outages := 0
	outageDue := func() bool { return cm.outage != nil && outages == 0 }
	start := time.Now()
	for n := 0; n < 2 || time.Since(start) < duration || outageDue(); n++ {
		time.Sleep(time.Duration(1000+rng.IntN(3000)) * time.Millisecond)
		if outageDue() && time.Since(start) >= duration/3 {
			cm.outage()
			outages++
			continue
		}
		down := time.Duration(rng.IntN(1000)) * time.Millisecond
		a := rng.IntN(10)
		if n < 2 { // every run kills each kind at least once
			a = []int{0, 5}[n]
		}
		switch {
		case a == 3 && len(cm.rpcURLs) > 1: // every dispatcher at once
			every := make([]int, len(cm.rpcURLs))
			for i := range every {
				every[i] = i
			}
			killDispatchers(down, every...)
		case a < 4:
			killDispatchers(down, pick())
		default:
			i := rng.IntN(len(live))
			live[i].p.kill()
			live[i].killed = true
			if a == 9 { // a worker and a dispatcher at once
				killDispatchers(down, pick())
			} else {
				time.Sleep(down)
			}
			live[i] = startWorker()
		}
	}
	stopProducer()
	<-prodDone

	// Let the workers finish everything: nothing pending, nothing leased.
	eventually(t, 90*time.Second, "the queue to drain after the chaos", func() bool {
		st, err := ctls[0].Stats(ctx)
		return err == nil && st.PendingCount == 0 && st.ActiveLeaseCount == 0 && st.DelayedCount == 0
	})
	// The tail catches up with the whole log.
	lastSeq := int64(-1)
	eventually(t, 30*time.Second, "the tail to reach the end of the log", func() bool {
		page, err := ctls[0].Replication(ctx, 0, 1)
		if err != nil || page.LastSequence == nil {
			return false
		}
		lastSeq = *page.LastSequence
		return tail.last() >= lastSeq
	})
	stopTail()
	<-tailDone
	for _, w := range live {
		w.p.kill()
	}

	// Everything the workers printed, by token.
	var records []chaosRecord
	for _, w := range all {
		sc := bufio.NewScanner(strings.NewReader(w.p.stdout.String()))
		for sc.Scan() {
			var r chaosRecord
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				// A line cut short by SIGKILL can only be the last one.
				continue
			}
			records = append(records, r)
		}
	}
	producer.mu.Lock()
	acked := maps.Clone(producer.acked)
	dups := producer.dups
	producer.mu.Unlock()

	r := checkChaos(tail.events, acked, records)
	for _, g := range tail.gaps {
		r.errorf("replication log: %s", g)
	}
	if len(tail.events) == 0 || tail.events[0].SequenceNumber != 1 {
		r.errorf("the log does not start at sequence 1")
	}
	// Every dispatcher serves the whole log as the tail read it during the
	// chaos: several dispatchers on one database serve one log, and a
	// restarted dispatcher must serve the events an earlier one served. The
	// tail's gap check cannot see a restart that lost committed events and
	// reused their sequence numbers (the tail asks only for what follows
	// what it has); this re-read does.
	for i, u := range cm.controlURLs {
		if ev := readAllEvents(t, u); !reflect.DeepEqual(ev, tail.events) {
			r.errorf("dispatcher %d's log (%d events) differs from the one the tail read (%d), first at sequence %d",
				i, len(ev), len(tail.events), firstDifference(ev, tail.events))
		}
	}
	for _, e := range r.errs {
		t.Error(e)
	}
	if len(r.errs) > 0 {
		t.Logf("%d violations in total", r.total)
		keepChaosEvidence(t, seed, cm, all, tail.events)
	}
	killedWorkers := 0
	for _, w := range all {
		if w.killed {
			killedWorkers++
		}
	}
	t.Logf("chaos: %s, %d dispatcher kills, %d worker kills, %d storage outages; %d items acknowledged (%d after a retry), %d events; "+
		"%d completed (%d acknowledged to a worker, %d possibly settled), %d dead-lettered (%d poison), %d requeued by a worker, %d expiries",
		duration, dispKills, killedWorkers, outages, len(acked), dups, len(tail.events),
		r.completed, r.completeAcks, r.possiblySettled, r.deadLettered, r.poisonDead, r.failAcks, r.expired)
	// A run that killed nothing, or moved no work, proved nothing.
	if len(acked) < 100 || r.completeAcks < 50 || dispKills == 0 || killedWorkers == 0 {
		t.Errorf("too little chaos: %d acknowledged enqueues, %d acknowledged completions, %d dispatcher and %d worker kills",
			len(acked), r.completeAcks, dispKills, killedWorkers)
	}
}

// firstDifference is the sequence number of the first event where a and b
// differ (or where the shorter ends).
func firstDifference(a, b []resourcelease.Event) int64 {
	for i := range min(len(a), len(b)) {
		if !reflect.DeepEqual(a[i], b[i]) {
			return a[i].SequenceNumber
		}
	}
	return int64(min(len(a), len(b))) + 1
}

// chaosReport collects the violations (the first few in full) and counts.
type chaosReport struct {
	errs  []string
	total int

	completed, completeAcks, possiblySettled, deadLettered, poisonDead, failAcks, expired int
}

func (r *chaosReport) errorf(format string, args ...any) {
	r.total++
	if len(r.errs) < 30 {
		r.errs = append(r.errs, fmt.Sprintf(format, args...))
	}
}

// chaosItem is what the log says of one item.
type chaosItem struct {
	seq int64
	id  string
	// mustGrow: the last lease ended in a failure or an expiry, so the
	// next one carries a higher attempt (a release keeps it).
	mustGrow    bool
	enqueues    int
	live        *resourcelease.OwnershipToken // the lease live at this point of the log
	lastAttempt int
	completed   int
	dead        int
	deadAttempt int
}

// checkChaos replays the log as a state machine per item and holds it
// against the acknowledgements of the producer (acked: resource id ->
// sequence id) and of the workers (records).
func checkChaos(events []resourcelease.Event, acked map[string]int64, records []chaosRecord) *chaosReport {
	r := &chaosReport{}
	items := map[int64]*chaosItem{}
	granted := map[resourcelease.OwnershipToken]string{}  // token -> peer, from LeaseGranted
	completed := map[resourcelease.OwnershipToken]bool{}  // Completed events
	failedBy := map[resourcelease.OwnershipToken]string{} // Failed/DeadLettered events with a token -> type
	item := func(e resourcelease.Event) *chaosItem {
		seq, err := strconv.ParseInt(e.Metadata[resourcelease.MetaSequenceID], 10, 64)
		if err != nil && e.Ownership != nil {
			seq = e.Ownership.SequenceID
		}
		it := items[seq]
		if it == nil {
			it = &chaosItem{seq: seq}
			items[seq] = it
		}
		return it
	}
	for _, e := range events {
		switch e.EventType {
		case resourcelease.EventEnqueue:
			it := item(e)
			it.enqueues++
			it.id = e.Payload.ResourceID
			if it.enqueues > 1 {
				r.errorf("sequence %d (%s): enqueued %d times", it.seq, it.id, it.enqueues)
			}
		case resourcelease.EventLeaseGranted:
			it := item(e)
			tok := *e.Ownership
			if it.live != nil {
				r.errorf("%s: leased to %s (event %d, attempt %d) while lease %s (attempt %d) was still live",
					it.id, e.PeerID, e.SequenceNumber, tok.Attempt, it.live.LeaseID, it.live.Attempt)
			}
			if tok.Attempt < it.lastAttempt || (it.mustGrow && tok.Attempt <= it.lastAttempt) {
				r.errorf("%s: attempt %d after attempt %d (event %d)", it.id, tok.Attempt, it.lastAttempt, e.SequenceNumber)
			}
			it.mustGrow = false
			if it.completed > 0 || it.dead > 0 {
				r.errorf("%s: leased again (event %d) after it was completed or dead-lettered", it.id, e.SequenceNumber)
			}
			it.lastAttempt = tok.Attempt
			it.live = &tok
			granted[tok] = e.PeerID
		case resourcelease.EventHeartbeat:
			it := item(e)
			if it.live == nil || *it.live != *e.Ownership {
				r.errorf("%s: heartbeat accepted for token %s, which is not the live lease (event %d)", it.id, e.Ownership.LeaseID, e.SequenceNumber)
			}
		case resourcelease.EventCompleted, resourcelease.EventFailed, resourcelease.EventLeaseExpired, resourcelease.EventLeaseReleased:
			it := item(e)
			if e.Ownership == nil || it.live == nil || *it.live != *e.Ownership {
				r.errorf("%s: %s (event %d) for a lease that is not the live one", it.id, e.EventType, e.SequenceNumber)
			}
			it.live = nil
			switch e.EventType {
			case resourcelease.EventCompleted:
				it.completed++
				r.completed++
				completed[*e.Ownership] = true
			case resourcelease.EventFailed:
				failedBy[*e.Ownership] = string(e.EventType)
				it.mustGrow = true
			case resourcelease.EventLeaseExpired:
				r.expired++
				it.mustGrow = true
			}
		case resourcelease.EventDeadLettered:
			it := item(e)
			if e.Ownership != nil {
				if it.live != nil && *it.live != *e.Ownership {
					r.errorf("%s: dead-lettered (event %d) with a token that is not the live lease", it.id, e.SequenceNumber)
				}
				failedBy[*e.Ownership] = string(e.EventType)
			}
			it.live = nil
			it.dead++
			r.deadLettered++
			it.deadAttempt, _ = strconv.Atoi(e.Metadata[resourcelease.MetaAttempt])
		default:
			r.errorf("unexpected %s event %d in a run with no admin calls", e.EventType, e.SequenceNumber)
		}
	}

	// What the workers were told, against the log.
	completeAcks := map[int64]int{}
	completing := map[resourcelease.OwnershipToken]bool{} // a worker sent complete
	deadletterCalls := map[int64]bool{}
	for _, rec := range records {
		tok := rec.Token
		switch rec.Op {
		case "leased":
			if p, ok := granted[tok]; !ok || p != rec.Peer {
				r.errorf("%s: %s was acknowledged lease %s (attempt %d), which the log granted to %q", rec.ID, rec.Peer, tok.LeaseID, tok.Attempt, p)
			}
		case "completed":
			completeAcks[tok.SequenceID]++
			r.completeAcks++
			if !completed[tok] {
				r.errorf("%s: %s was acknowledged completing %s, but the log has no Completed for it: lost", rec.ID, rec.Peer, tok.LeaseID)
			}
		case "failed", "deadlettered":
			r.failAcks++
			if _, ok := failedBy[tok]; !ok {
				r.errorf("%s: %s was acknowledged %s of %s, but the log has no failure for it", rec.ID, rec.Peer, rec.Op, tok.LeaseID)
			}
			if rec.Op == "deadlettered" {
				r.failAcks--
			}
		case "possiblysettled":
			// Not an acknowledgement: the checks of the log (one
			// Completed per item, sent by some worker) decide.
			r.possiblySettled++
		case "deadlettering":
			deadletterCalls[tok.SequenceID] = true
		case "completing":
			completing[tok] = true
		}
	}
	for seq, n := range completeAcks {
		if n > 1 {
			r.errorf("sequence %d: %d successful completes acknowledged, want one", seq, n)
		}
	}
	// A Completed that no worker was acknowledged is one whose answer a
	// kill lost (the retry then finds the token unknown); but some worker
	// must have sent it.
	for tok := range completed {
		if !completing[tok] {
			r.errorf("sequence %d: completed with lease %s, which no worker was seen completing", tok.SequenceID, tok.LeaseID)
		}
	}

	// Every item in the log ends once: completed, or dead-lettered where
	// the rules put it; every acknowledged enqueue is in the log.
	for seq, it := range items {
		poison := strings.HasPrefix(it.id, chaosPoisonPrefix)
		switch {
		case it.enqueues != 1:
			r.errorf("sequence %d (%s): %d Enqueue events", seq, it.id, it.enqueues)
		case it.completed+it.dead != 1:
			r.errorf("%s (sequence %d): completed %d times, dead-lettered %d times; want exactly one of them", it.id, seq, it.completed, it.dead)
		case poison && it.completed > 0:
			r.errorf("%s: a poison item was completed", it.id)
		case it.dead > 0 && poison:
			r.poisonDead++
			if !deadletterCalls[seq] && it.deadAttempt < chaosMaxAttempts {
				r.errorf("%s: dead-lettered at attempt %d with no dead-letter call from a worker", it.id, it.deadAttempt)
			}
		case it.dead > 0 && it.deadAttempt < chaosMaxAttempts:
			r.errorf("%s: dead-lettered at attempt %d, below the %d delivery attempts, and it is not poison", it.id, it.deadAttempt, chaosMaxAttempts)
		}
	}
	bySeq := map[int64]string{}
	for seq, it := range items {
		bySeq[seq] = it.id
	}
	ids := make([]string, 0, len(acked))
	for id := range acked {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		seq := acked[id]
		if got, ok := bySeq[seq]; !ok || got != id {
			r.errorf("%s: enqueue acknowledged with sequence %d, which the log has as %q", id, seq, got)
		}
	}
	return r
}

// TestChaosCheckCatchesViolations: the chaos test's checker finds each kind
// of violation in a small log, and passes the same log unbroken.
func TestChaosCheckCatchesViolations(t *testing.T) {
	tok := func(attempt int, id byte) resourcelease.OwnershipToken {
		return resourcelease.OwnershipToken{SequenceID: 1, Attempt: attempt, LeaseID: [16]byte{id}}
	}
	t1, t2 := tok(1, 1), tok(2, 2)
	ev := func(n int64, typ resourcelease.EventType, tk *resourcelease.OwnershipToken, attempt int) resourcelease.Event {
		e := resourcelease.Event{SequenceNumber: n, EventType: typ, Ownership: tk, PeerID: "w",
			Metadata: map[string]string{resourcelease.MetaSequenceID: "1", resourcelease.MetaAttempt: strconv.Itoa(attempt)}}
		if typ == resourcelease.EventEnqueue {
			e.Payload = &resourcelease.Item{ResourceID: "item-000001"}
		}
		return e
	}
	good := []resourcelease.Event{
		ev(1, resourcelease.EventEnqueue, nil, 1),
		ev(2, resourcelease.EventLeaseGranted, &t1, 1),
		ev(3, resourcelease.EventFailed, &t1, 1),
		ev(4, resourcelease.EventLeaseGranted, &t2, 2),
		ev(5, resourcelease.EventCompleted, &t2, 2),
	}
	goodRecs := []chaosRecord{
		{Op: "leased", Peer: "w", Token: t1}, {Op: "failing", Peer: "w", Token: t1}, {Op: "failed", Peer: "w", Token: t1},
		{Op: "leased", Peer: "w", Token: t2}, {Op: "completing", Peer: "w", Token: t2}, {Op: "completed", Peer: "w", Token: t2},
	}
	acked := map[string]int64{"item-000001": 1}
	if r := checkChaos(good, acked, goodRecs); r.total != 0 {
		t.Fatalf("a good log has violations: %v", r.errs)
	}
	// A settle that failed over and came back possibly settled is no
	// acknowledgement: the log decides, whether it has the Completed or
	// the lease expired and another one completed the item.
	possibly := slices.Clone(goodRecs)
	possibly[5].Op = "possiblysettled"
	t3 := tok(3, 4)
	expired := append(slices.Clone(good[:4]), ev(5, resourcelease.EventLeaseExpired, &t2, 2),
		ev(6, resourcelease.EventLeaseGranted, &t3, 3), ev(7, resourcelease.EventCompleted, &t3, 3))
	expiredRecs := append(slices.Clone(possibly), chaosRecord{Op: "leased", Peer: "w", Token: t3},
		chaosRecord{Op: "completing", Peer: "w", Token: t3}, chaosRecord{Op: "completed", Peer: "w", Token: t3})
	for _, tc := range []struct {
		name   string
		events []resourcelease.Event
		recs   []chaosRecord
		acks   int
	}{
		{"possibly settled, and it was", good, possibly, 0},
		{"possibly settled, but it expired and was completed again", expired, expiredRecs, 1},
	} {
		r := checkChaos(tc.events, acked, tc.recs)
		if r.total != 0 || r.possiblySettled != 1 || r.completeAcks != tc.acks {
			t.Errorf("%s: violations %v, %d possibly settled, %d acknowledged completes; want none, 1, %d",
				tc.name, r.errs, r.possiblySettled, r.completeAcks, tc.acks)
		}
	}
	t1again := tok(1, 3)
	cases := []struct {
		name   string
		events []resourcelease.Event
		recs   []chaosRecord
		acked  map[string]int64
		want   string
	}{
		{"completion lost", good[:4], goodRecs, acked, "lost"},
		{"two live leases", slices.Insert(slices.Clone(good), 4, ev(5, resourcelease.EventLeaseGranted, &t1again, 2)), goodRecs, acked, "still live"},
		{"attempt did not grow after a failure", []resourcelease.Event{good[0], good[1], good[2], ev(4, resourcelease.EventLeaseGranted, &t1again, 1),
			ev(5, resourcelease.EventCompleted, &t1again, 1)}, nil, acked, "attempt 1 after attempt 1"},
		{"completed twice by the acks", good, append(slices.Clone(goodRecs), chaosRecord{Op: "completed", Peer: "w", Token: t2}), acked, "2 successful completes"},
		{"acknowledged enqueue missing", good, goodRecs, map[string]int64{"item-000001": 1, "item-000002": 2}, "item-000002"},
		{"dead letter against the rules", append(slices.Clone(good[:4]), ev(5, resourcelease.EventDeadLettered, &t2, 2)), goodRecs[:5], acked, "below the 5 delivery attempts"},
		{"completed by nobody", good, goodRecs[:4], acked, "no worker was seen completing"},
		{"possibly settled, and nothing completed it", good[:4], possibly, acked, "completed 0 times"},
		{"lease acknowledged to the wrong peer", good, append(slices.Clone(goodRecs), chaosRecord{Op: "leased", Peer: "x", Token: t2}), acked, "granted to"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := checkChaos(tc.events, tc.acked, tc.recs)
			if !slices.ContainsFunc(r.errs, func(e string) bool { return strings.Contains(e, tc.want) }) {
				t.Errorf("want a violation containing %q, got %q", tc.want, r.errs)
			}
		})
	}
}

// keepChaosEvidence saves what a failing run leaves behind, which the test's
// temporary directories would take with them: every worker's whole output,
// the log as the tail read it, and the dispatchers' data directories as
// they are now. It goes under artifactsDir ($ARTIFACTS_DIR in CI).
func keepChaosEvidence(t *testing.T, seed uint64, cm *chaosMesh, workers []*chaosWorker, events []resourcelease.Event) {
	t.Helper()
	dir := filepath.Join(artifactsDir(t), fmt.Sprintf("chaos-%s-%d", strings.Trim(cm.test, "$"), seed))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("keeping the evidence: %v", err)
		return
	}
	save := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Logf("keeping the evidence: %v", err)
		}
	}
	for _, w := range workers {
		save(w.peer+".stdout", []byte(w.p.stdout.String()))
	}
	var log strings.Builder
	enc := json.NewEncoder(&log)
	for _, e := range events {
		_ = enc.Encode(e)
	}
	save("tail-events.jsonl", []byte(log.String()))
	// A live dispatcher's database is not copied file by file: a checkpoint
	// between the copy of replication.db and that of its WAL (the
	// checkpointer resets the WAL when the writer is idle) would leave a copy
	// older than what was committed. After SIGKILL the files on disk are
	// what a restart recovers from.
	if cm.kill != nil {
		for i := range cm.dataDirs {
			cm.kill(i)
		}
	}
	for i, d := range cm.dataDirs {
		if err := os.CopyFS(filepath.Join(dir, fmt.Sprint("dispatcher-", i)), os.DirFS(d)); err != nil {
			t.Logf("keeping the evidence: copying %s: %v", d, err)
		}
	}
	t.Logf("chaos: the evidence of this run is in %s", dir)
}

// TestChaosKeepsEvidence: a failing run's evidence (each worker's output,
// the log as read, the data directories) lands under $ARTIFACTS_DIR.
func TestChaosKeepsEvidence(t *testing.T) {
	artifacts := t.TempDir()
	t.Setenv("ARTIFACTS_DIR", artifacts)
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "replication.db"), []byte("db"), 0o644); err != nil {
		t.Fatal(err)
	}
	w := &chaosWorker{peer: "chaos-worker-1", p: &proc{}}
	_, _ = w.p.stdout.Write([]byte(`{"op":"leased"}` + "\n"))
	keepChaosEvidence(t, 7, &chaosMesh{test: "TestChaos$", dataDirs: []string{data}}, []*chaosWorker{w},
		[]resourcelease.Event{{SequenceNumber: 1, EventType: resourcelease.EventEnqueue}})
	dir := filepath.Join(artifacts, "meshdemo", "chaos-TestChaos-7")
	for name, want := range map[string]string{
		"chaos-worker-1.stdout":       `{"op":"leased"}`,
		"tail-events.jsonl":           `"sequenceNumber":1`,
		"dispatcher-0/replication.db": "db",
	} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !strings.Contains(string(b), want) {
			t.Errorf("%s: %q, %v; want it to hold %q", name, b, err, want)
		}
	}
}
