package worker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
	"github.com/leasemesh/leasemesh/worker"
)

// procedureCounter serves h and counts the calls of each procedure; with
// old set, it answers the batch procedures as a server that predates them.
type procedureCounter struct {
	h   http.Handler
	old bool

	mu    sync.Mutex
	calls map[string]int
}

func (p *procedureCounter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	proc := r.Header.Get(transport.HeaderProcedure)
	_, verb, _ := transport.SplitProcedure(proc)
	p.mu.Lock()
	p.calls[verb]++
	p.mu.Unlock()
	if p.old && strings.HasSuffix(verb, "Batch") {
		transport.WriteError(w, resourcelease.Errorf(resourcelease.StatusNotFound, transport.CodeUnknownProcedure, "unknown procedure %q", proc))
		return
	}
	p.h.ServeHTTP(w, r)
}

func (p *procedureCounter) count(verb string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[verb]
}

// TestWorkerBatchesOverTheWire: a worker with several slots leases with
// leaseBatch and completes with completeBatch (no per-item lease or complete
// call), and works every item once; against a server without the batch
// procedures it works every item just the same, with per-item calls.
func TestWorkerBatchesOverTheWire(t *testing.T) {
	t.Parallel()
	for _, old := range []bool{false, true} {
		t.Run(map[bool]string{false: "batch server", true: "old server"}[old], func(t *testing.T) {
			t.Parallel()
			local, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{Capacity: -1})
			defer closeDispatcher()
			counter := &procedureCounter{h: newHandler(t, local, transport.HandlerConfig{}), old: old, calls: map[string]int{}}
			srv := httptest.NewServer(counter)
			defer srv.Close()
			c, err := transport.NewClient(srv.URL, transport.ClientConfig{Caller: "batcher"})
			require.NoError(t, err)
			defer c.Close()

			const n = 120
			payloads := make([]resourcelease.Item, n)
			for i := range payloads {
				payloads[i] = item
				payloads[i].ResourceID = fmt.Sprint("order-", i)
			}
			_, err = c.EnqueueBatch(context.Background(), &resourcelease.EnqueueBatchRequest{Payloads: payloads})
			require.NoError(t, err)

			var mu sync.Mutex
			seen := map[string]int{}
			done := make(chan struct{})
			w := newWorker(t, c, worker.Config{Concurrency: 8, LeaseWait: time.Second, Handler: func(_ context.Context, l *resourcelease.Lease) error {
				mu.Lock()
				defer mu.Unlock()
				seen[l.Payload.ResourceID]++
				if len(seen) == n {
					close(done)
				}
				return nil
			}})
			stop := startWorker(t, w)
			<-done
			require.Eventually(t, func() bool { return w.Stats().Completed == n }, 10*time.Second, time.Millisecond)
			stop()
			for id, k := range seen {
				require.Equal(t, 1, k, "%s worked twice", id)
			}
			st, err := local.Stats(context.Background(), nil)
			require.NoError(t, err)
			assert.Equal(t, resourcelease.Stats{}, *st)
			assert.Equal(t, worker.Stats{Leased: n, Completed: n}, w.Stats())
			if old {
				assert.LessOrEqual(t, counter.count(transport.VerbLeaseBatch), 2, "tried, then not again for a while")
				assert.LessOrEqual(t, counter.count(transport.VerbCompleteBatch), 1)
				assert.Equal(t, n, counter.count(transport.VerbComplete), "fell back to per-item completes")
				return
			}
			assert.Zero(t, counter.count(transport.VerbLease), "no per-item lease")
			assert.Zero(t, counter.count(transport.VerbComplete), "no per-item complete")
			// How many leases a call carries depends on how fast the handlers free
			// their slots (a loaded machine frees them one at a time), so this
			// asks only that batching happened at all.
			assert.Less(t, counter.count(transport.VerbLeaseBatch), n, "leases came several per call")
			assert.Less(t, counter.count(transport.VerbCompleteBatch), n, "completions came several per call")
		})
	}
}

// TestWorkerBatchNeverHoldsMoreThanConcurrency: a batching worker asks for
// no more leases than it has free slots, so it never holds more leases than
// Concurrency, and LeaseBatch bounds each call.
func TestWorkerBatchNeverHoldsMoreThanConcurrency(t *testing.T) {
	t.Parallel()
	const conc, batch, total = 6, 4, 40
	var (
		mu       sync.Mutex
		held     int // leases given and not yet settled
		maxHeld  int
		asked    []int
		given    int
		complete = make(chan struct{}, total)
	)
	d := &leasetest.FakeDispatcher{
		LeaseBatchFn: func(ctx context.Context, r *resourcelease.LeaseBatchRequest) ([]*resourcelease.Lease, error) {
			mu.Lock()
			asked = append(asked, r.MaxItems)
			if r.MaxItems > conc-held {
				mu.Unlock()
				t.Errorf("asked for %d leases with %d of %d slots busy", r.MaxItems, held, conc)
				return nil, nil
			}
			var out []*resourcelease.Lease
			for len(out) < r.MaxItems && given < total {
				given++
				out = append(out, &resourcelease.Lease{Payload: item, SequenceID: int64(given), Attempt: 1,
					OwnershipToken: resourcelease.OwnershipToken{SequenceID: int64(given), Attempt: 1, LeaseID: uuid.New()}, TTL: time.Minute})
			}
			held += len(out)
			maxHeld = max(maxHeld, held)
			mu.Unlock()
			if len(out) == 0 {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return out, nil
		},
		CompleteBatchFn: func(_ context.Context, r *resourcelease.CompleteBatchRequest) ([]error, error) {
			mu.Lock()
			held -= len(r.OwnershipTokens)
			mu.Unlock()
			for range r.OwnershipTokens {
				complete <- struct{}{}
			}
			return make([]error, len(r.OwnershipTokens)), nil
		},
	}
	w := newWorker(t, d, worker.Config{Concurrency: conc, LeaseBatch: batch, Handler: func(context.Context, *resourcelease.Lease) error {
		return nil
	}})
	stop := startWorker(t, w)
	for range total {
		<-complete
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	assert.LessOrEqual(t, maxHeld, conc)
	for _, a := range asked {
		assert.LessOrEqual(t, a, batch, "LeaseBatch bounds every call")
		assert.GreaterOrEqual(t, a, 1)
	}
	assert.Equal(t, worker.Stats{Leased: total, Completed: total}, w.Stats())
}

// TestWorkerBatchShutdownReleases: a batching worker releases its in-flight
// leases when Run's context ends, one release per lease.
func TestWorkerBatchShutdownReleases(t *testing.T) {
	t.Parallel()
	const n = 3
	var given atomic.Bool
	released := make(chan resourcelease.OwnershipToken, n)
	d := &leasetest.FakeDispatcher{
		LeaseBatchFn: func(ctx context.Context, r *resourcelease.LeaseBatchRequest) ([]*resourcelease.Lease, error) {
			if given.Swap(true) {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			out := make([]*resourcelease.Lease, n)
			for i := range out {
				out[i] = &resourcelease.Lease{Payload: item, SequenceID: int64(i + 1), Attempt: 1, TTL: time.Minute,
					OwnershipToken: resourcelease.OwnershipToken{SequenceID: int64(i + 1), Attempt: 1, LeaseID: uuid.New()}}
			}
			return out, nil
		},
		ReleaseFn: func(_ context.Context, r *resourcelease.ReleaseRequest) error {
			released <- r.OwnershipToken
			return nil
		},
	}
	var running sync.WaitGroup
	running.Add(n)
	w := newWorker(t, d, worker.Config{Concurrency: n, Handler: func(ctx context.Context, _ *resourcelease.Lease) error {
		running.Done()
		<-ctx.Done()
		return ctx.Err()
	}})
	stop := startWorker(t, w)
	running.Wait()
	stop()
	require.Len(t, released, n)
	assert.Equal(t, worker.Stats{Leased: n, Released: n}, w.Stats())
}

// TestWorkerBatchConfig: LeaseBatch and CompleteBatch default to the
// concurrency and are bounded by MaxBatchItems.
func TestWorkerBatchConfig(t *testing.T) {
	t.Parallel()
	h := func(context.Context, *resourcelease.Lease) error { return nil }
	for _, tt := range []struct {
		name    string
		cfg     worker.Config
		wantErr string
	}{
		{"defaults", worker.Config{Concurrency: 4}, ""},
		{"explicit", worker.Config{Concurrency: 4, LeaseBatch: 2, CompleteBatch: 1}, ""},
		{"negative lease batch", worker.Config{LeaseBatch: -1}, "LeaseBatch"},
		{"negative complete batch", worker.Config{CompleteBatch: -1}, "CompleteBatch"},
		{"too large", worker.Config{LeaseBatch: resourcelease.MaxBatchItems + 1}, "at most"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Handler = h
			_, err := worker.New(&leasetest.FakeDispatcher{}, tt.cfg)
			if tt.wantErr == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}
