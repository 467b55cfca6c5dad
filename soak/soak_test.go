package soak_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/peerhealth"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/sqlitestore"
	"github.com/leasemesh/leasemesh/transport"
	"github.com/leasemesh/leasemesh/worker"
)

var (
	duration = flag.Duration("soak.duration", 40*time.Second, "how long the churn runs (the README's long run: 10m)")
	samples  = flag.Int("soak.samples", 20, "how many samples of heap, goroutines and open files to take")
)

// The bounds: the median of the last quarter of the samples against the
// median of the first quarter after the warm-up (the first fifth of the
// run, in which the dedupe window, the peer retention and the dead-letter
// bound fill up).
const (
	heapSlackFactor = 1.25    // late heap may be at most 1.25× the early one...
	heapSlackBytes  = 8 << 20 // ...plus 8 MiB of noise
	goroutineSlack  = 25
	fdSlack         = 16
)

// The churn's settings: each bound the queue keeps is reached within the
// warm-up, so that what grows after it is a leak.
const (
	dedupeWindow    = 5 * time.Second
	peerRetention   = 5 * time.Second
	maxDeadLetters  = 200
	liveWorkers     = 4
	peerLifetime    = 1500 * time.Millisecond
	poisonEvery     = 20 // every 20th item is dead-lettered by its worker
	flakyEvery      = 7  // every 7th delivery fails with requeue
	targetDepth     = 200
	dispatcherQueue = 5000
)

type sample struct {
	at                       time.Duration
	heap                     uint64
	goroutines, fds          int
	enqueued, completed      int64
	deadLettered, peers, ids int64
}

func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

func take(start time.Time, c *counters) sample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return sample{at: time.Since(start).Round(time.Second), heap: ms.HeapAlloc, goroutines: runtime.NumGoroutine(), fds: openFDs(),
		enqueued: c.enqueued.Load(), completed: c.completed.Load(), deadLettered: c.dead.Load(), peers: c.peers.Load(), ids: c.enqueued.Load()}
}

type counters struct {
	enqueued, completed, dead, failed, peers atomic.Int64
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestSoak runs churn against a dispatcher on SQLite over loopback HTTP —
// producers with a unique request id per item, workers that come and go
// with fresh peer ids, dead letters, requeues, a log tailer, metric scrapes
// and dead-letter purges — and samples the process's heap (after a GC),
// goroutines and open files. It fails when the late samples have grown past
// the bounds above the early ones.
//
//	go test ./soak -run TestSoak -soak.duration 10m -timeout 20m -v
func TestSoak(t *testing.T) {
	if *samples < 8 {
		t.Fatalf("-soak.samples must be at least 8, got %d", *samples)
	}
	reg := prometheus.NewRegistry()
	d, err := leasemesh.Open(context.Background(), leasemesh.Config{
		Storage: sqlitestore.Dir(t.TempDir()),
		Queue: resourcelease.QueueConfig{Capacity: dispatcherQueue, DedupeWindow: dedupeWindow, MaxDeadLetters: maxDeadLetters,
			LeaseDuration: 5 * time.Second, MaxDeliveryAttempts: 3},
		PeerHealth: peerhealth.Config{Retention: peerRetention},
		Registerer: reg,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	mux := http.NewServeMux()
	mux.Handle("/yarpc/v1", d.Handler())
	mux.Handle("/omnirelay/control/", d.ControlHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()
	rpcURL := srv.URL + "/yarpc/v1"

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var c counters
	errs := make(chan error, 16)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}

	// Producers: unique request ids, partitions spread, poison now and then;
	// they hold the depth near targetDepth so the queue is busy, not growing.
	var seq atomic.Int64
	for p := range 2 {
		client, err := transport.NewClient(rpcURL, transport.ClientConfig{Service: "soak", Caller: fmt.Sprintf("producer-%d", p)})
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		wg.Go(func() {
			for ctx.Err() == nil {
				n := seq.Add(1)
				id := fmt.Sprintf("item-%d", n)
				if n%poisonEvery == 0 {
					id = fmt.Sprintf("poison-%d", n)
				}
				resp, err := client.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &resourcelease.Item{
					ResourceType: "soak", ResourceID: id, PartitionKey: fmt.Sprintf("p-%d", n%16), PayloadEncoding: "application/json",
					Body: []byte(`{"n":` + fmt.Sprint(n) + `}`), RequestID: fmt.Sprintf("req-%d", n),
					Attributes: map[string]string{"n": fmt.Sprint(n)},
				}})
				if err != nil {
					if ctx.Err() == nil {
						report(fmt.Errorf("enqueue: %w", err))
					}
					return
				}
				c.enqueued.Add(1)
				if resp.Stats.PendingCount > targetDepth {
					time.Sleep(10 * time.Millisecond)
				}
			}
		})
	}

	// Workers: liveWorkers at a time, each with a fresh peer id, replaced
	// every peerLifetime (the oldest stops cleanly, releasing what it holds).
	handler := func(_ context.Context, l *resourcelease.Lease) error {
		switch {
		case strings.HasPrefix(l.Payload.ResourceID, "poison-"):
			c.dead.Add(1)
			return worker.Permanent(errors.New("poison"))
		case rand.IntN(flakyEvery) == 0:
			c.failed.Add(1)
			return errors.New("flaky")
		}
		c.completed.Add(1)
		return nil
	}
	type liveWorker struct {
		stop   context.CancelFunc
		done   chan struct{}
		client *transport.Client
	}
	startWorker := func() (*liveWorker, error) {
		n := c.peers.Add(1)
		peer := fmt.Sprintf("soak-peer-%d", n)
		client, err := transport.NewClient(rpcURL, transport.ClientConfig{Service: "soak", Caller: peer})
		if err != nil {
			return nil, err
		}
		w, err := worker.New(client, worker.Config{PeerID: peer, Handler: handler, Concurrency: 4, LeaseWait: 500 * time.Millisecond,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ShutdownTimeout: 3 * time.Second})
		if err != nil {
			return nil, err
		}
		wctx, stop := context.WithCancel(ctx)
		lw := &liveWorker{stop: stop, done: make(chan struct{}), client: client}
		go func() {
			defer close(lw.done)
			if err := w.Run(wctx); err != nil && !errors.Is(err, context.Canceled) {
				report(fmt.Errorf("worker %s: %w", peer, err))
			}
		}()
		return lw, nil
	}
	stopWorker := func(lw *liveWorker) {
		lw.stop()
		<-lw.done
		lw.client.Close()
	}
	wg.Go(func() {
		var live []*liveWorker
		defer func() {
			for _, lw := range live {
				stopWorker(lw)
			}
		}()
		tick := time.NewTicker(peerLifetime / liveWorkers)
		defer tick.Stop()
		for {
			lw, err := startWorker()
			if err != nil {
				report(err)
				return
			}
			live = append(live, lw)
			if len(live) > liveWorkers {
				stopWorker(live[0])
				live = live[1:]
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})

	// Operators: a log tailer, metric scrapes, dead-letter purges.
	ctl, err := control.NewClient(srv.URL, control.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	wg.Go(func() {
		since := int64(0)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			page, err := ctl.Replication(ctx, since, 1000)
			if err != nil {
				if ctx.Err() == nil {
					report(fmt.Errorf("tail: %w", err))
				}
				return
			}
			since = page.NextSince
			if _, err := reg.Gather(); err != nil {
				report(fmt.Errorf("gather: %w", err))
				return
			}
			if n%10 == 0 {
				if _, err := d.Purge(ctx, &resourcelease.PurgeRequest{All: true}); err != nil && ctx.Err() == nil {
					report(fmt.Errorf("purge: %w", err))
					return
				}
			}
		}
	})

	start := time.Now()
	every := *duration / time.Duration(*samples)
	var got []sample
	tick := time.NewTicker(every)
	defer tick.Stop()
	for len(got) < *samples {
		select {
		case err := <-errs:
			t.Fatalf("churn failed: %v", err)
		case <-tick.C:
		}
		got = append(got, take(start, &c))
	}
	cancel()
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("churn failed: %v", err)
	default:
	}

	var b strings.Builder
	fmt.Fprintf(&b, "%8s %10s %10s %9s %10s %10s %9s %7s\n", "elapsed", "heap MiB", "goroutines", "open fds", "enqueued", "completed", "poison", "peers")
	for _, s := range got {
		fmt.Fprintf(&b, "%8s %10.1f %10d %9d %10d %10d %9d %7d\n", s.at, float64(s.heap)/(1<<20), s.goroutines, s.fds, s.enqueued, s.completed, s.deadLettered, s.peers)
	}
	t.Logf("soak over %s:\n%s", *duration, b.String())

	summary, violations := growth(got)
	t.Log(summary)
	for _, v := range violations {
		t.Error(v)
	}
	last := got[len(got)-1]
	if last.completed < 300 || last.deadLettered < 10 || last.peers < 10 {
		t.Errorf("too little churn to judge: %d completed, %d dead-lettered, %d peers", last.completed, last.deadLettered, last.peers)
	}
}

// growth compares the median of the last quarter of the samples with that
// of the first quarter after the warm-up (the first fifth), and returns a
// summary and what grew past its bound.
func growth(got []sample) (summary string, violations []string) {
	warm := len(got) / 5
	q := max((len(got)-warm)/4, 2)
	early, late := got[warm:warm+q], got[len(got)-q:]
	med := func(ss []sample, f func(sample) float64) float64 {
		xs := make([]float64, len(ss))
		for i, s := range ss {
			xs[i] = f(s)
		}
		return median(xs)
	}
	heapE, heapL := med(early, func(s sample) float64 { return float64(s.heap) }), med(late, func(s sample) float64 { return float64(s.heap) })
	grE, grL := med(early, func(s sample) float64 { return float64(s.goroutines) }), med(late, func(s sample) float64 { return float64(s.goroutines) })
	fdE, fdL := med(early, func(s sample) float64 { return float64(s.fds) }), med(late, func(s sample) float64 { return float64(s.fds) })
	summary = fmt.Sprintf("early → late medians: heap %.1f → %.1f MiB, goroutines %.0f → %.0f, open files %.0f → %.0f",
		heapE/(1<<20), heapL/(1<<20), grE, grL, fdE, fdL)
	if heapL > heapE*heapSlackFactor+heapSlackBytes {
		violations = append(violations, fmt.Sprintf("heap grew from %.1f to %.1f MiB (bound: ×%.2f + %d MiB)", heapE/(1<<20), heapL/(1<<20), heapSlackFactor, heapSlackBytes>>20))
	}
	if grL > grE+goroutineSlack {
		violations = append(violations, fmt.Sprintf("goroutines grew from %.0f to %.0f (bound: +%d)", grE, grL, goroutineSlack))
	}
	if fdL > fdE+fdSlack {
		violations = append(violations, fmt.Sprintf("open files grew from %.0f to %.0f (bound: +%d)", fdE, fdL, fdSlack))
	}
	return summary, violations
}

// TestGrowthVerdict: the verdict passes flat samples with noise, a peak
// in the warm-up and a one-off spike, and fails a steady leak of heap,
// goroutines or open files.
func TestGrowthVerdict(t *testing.T) {
	series := func(f func(i int) sample) []sample {
		out := make([]sample, 20)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	const mib = 1 << 20
	flat := func(i int) sample {
		return sample{heap: uint64(7*mib + (i%3)*mib), goroutines: 70 + i%5, fds: 47 + i%3}
	}
	cases := []struct {
		name string
		got  []sample
		want string // "" for none
	}{
		{"flat with noise", series(flat), ""},
		{"a peak in the warm-up", series(func(i int) sample {
			s := flat(i)
			if i < 4 {
				s.heap, s.goroutines, s.fds = 60*mib, 300, 200
			}
			return s
		}), ""},
		{"one spike late", series(func(i int) sample {
			s := flat(i)
			if i == 18 {
				s.heap, s.goroutines, s.fds = 80*mib, 400, 300
			}
			return s
		}), ""},
		{"heap leak", series(func(i int) sample { s := flat(i); s.heap += uint64(i) * mib; return s }), "heap grew"},
		{"goroutine leak", series(func(i int) sample { s := flat(i); s.goroutines += 3 * i; return s }), "goroutines grew"},
		{"open file leak", series(func(i int) sample { s := flat(i); s.fds += 2 * i; return s }), "open files grew"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, v := growth(tc.got)
			switch {
			case tc.want == "" && len(v) > 0:
				t.Errorf("violations %q, want none", v)
			case tc.want != "" && !slices.ContainsFunc(v, func(s string) bool { return strings.Contains(s, tc.want) }):
				t.Errorf("violations %q, want one with %q", v, tc.want)
			}
		})
	}
}
