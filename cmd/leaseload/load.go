package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// Procedure names of the report.
const (
	procEcho          = "echo"
	procEnqueue       = "enqueue"
	procLease         = "lease"
	procComplete      = "complete"
	procEnqueueBatch  = "enqueueBatch"
	procLeaseBatch    = "leaseBatch"
	procCompleteBatch = "completeBatch"
)

// rpcTimeout bounds one echo POST, as transport.Client bounds a call whose
// context has no deadline (DefaultClientTimeout), so both phases pay for the
// same per-call timer.
const rpcTimeout = transport.DefaultClientTimeout

// itemResourceType marks the items leaseload enqueues, so that a lease of
// anything else (in -target mode, another producer's item) can be counted.
const itemResourceType = "leaseload.item"

// recorder collects one phase's measurements from all its workers.
type recorder struct {
	procs map[string]*histogram // fixed at creation: read concurrently, never written
	cycle histogram             // enqueue start to complete end, completed cycles only
	// emptyLease times leases that returned nothing within waitMs; they
	// are successes but are kept apart so the long-poll wait does not
	// pollute the lease percentiles.
	emptyLease histogram
	foreign    atomic.Int64 // leases of items leaseload did not enqueue
	nerr       atomic.Int64

	mu      sync.Mutex
	errs    map[string]map[resourcelease.Status]int64 // procedure → status → count
	samples map[resourcelease.Status]string           // the first message of each status
}

func newRecorder(procs ...string) *recorder {
	r := &recorder{
		procs:   make(map[string]*histogram, len(procs)),
		errs:    map[string]map[resourcelease.Status]int64{},
		samples: map[resourcelease.Status]string{},
	}
	for _, p := range procs {
		r.procs[p] = new(histogram)
	}
	return r
}

func (r *recorder) ok(proc string, d time.Duration) { r.procs[proc].record(d) }

func (r *recorder) fail(proc string, err error) {
	e := resourcelease.AsError(err)
	r.nerr.Add(1)
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.errs[proc]
	if m == nil {
		m = map[resourcelease.Status]int64{}
		r.errs[proc] = m
	}
	m[e.Status]++
	if _, ok := r.samples[e.Status]; !ok {
		msg := e.Message
		if e.Code != "" {
			msg = e.Code + ": " + msg
		}
		r.samples[e.Status] = proc + ": " + msg
	}
}

// unit is one unit of a phase's work (a cycle, or one echo POST): the i-th
// of worker w.
type unit func(ctx context.Context, w int, i int64, r *recorder)

// drive runs conc workers that repeat u until d has passed, limit units
// have been started (when limit > 0), more than maxErrors RPCs have failed
// or ctx ends. A unit in flight when the time is up is finished, not
// abandoned (its RPCs use ctx, not the deadline), so no RPC fails because
// the phase ended. It returns the measured wall time and why it stopped.
func drive(ctx context.Context, conc int, d time.Duration, limit, maxErrors int64, r *recorder, u unit) (time.Duration, string) {
	stop, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var started atomic.Int64
	var limited atomic.Bool
	var wg sync.WaitGroup
	begin := time.Now()
	for w := range conc {
		wg.Go(func() {
			for i := int64(0); stop.Err() == nil && r.nerr.Load() <= maxErrors; i++ {
				if limit > 0 && started.Add(1) > limit {
					limited.Store(true)
					return
				}
				u(ctx, w, i, r)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	switch {
	case ctx.Err() != nil:
		return elapsed, "interrupted"
	case r.nerr.Load() > maxErrors:
		return elapsed, "max-errors"
	case limited.Load():
		return elapsed, "cycles"
	default:
		return elapsed, "duration"
	}
}

// leasemeshWorkload is the leasemesh phase: enqueue → lease → complete
// through one shared transport.Client.
type leasemeshWorkload struct {
	client *transport.Client
	waitMs int64
	batch  int // items per batch cycle
	body   []byte
	seq    atomic.Int64
}

func newLeasemeshWorkload(client *transport.Client, waitMs int64) *leasemeshWorkload {
	return &leasemeshWorkload{client: client, waitMs: waitMs, body: []byte(`{"order":"leaseload","amount":1234,"note":"a small opaque body"}`)}
}

func (l *leasemeshWorkload) item(w int) *resourcelease.Item {
	n := l.seq.Add(1)
	return &resourcelease.Item{
		ResourceType:    itemResourceType,
		ResourceID:      "item-" + strconv.FormatInt(n, 10),
		PartitionKey:    "worker-" + strconv.Itoa(w),
		PayloadEncoding: "application/json",
		Body:            l.body,
	}
}

// cycle is one enqueue → lease → complete. A failed RPC ends the cycle; a
// lease that finds nothing (another consumer of a -target took the item)
// ends it too, without an error.
func (l *leasemeshWorkload) cycle(ctx context.Context, w int, _ int64, r *recorder) {
	t0 := time.Now()
	if _, err := l.client.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: l.item(w)}); err != nil {
		r.fail(procEnqueue, err)
		return
	}
	t1 := time.Now()
	r.ok(procEnqueue, t1.Sub(t0))
	lease, err := l.client.Lease(ctx, &resourcelease.LeaseRequest{Wait: time.Duration(l.waitMs) * time.Millisecond})
	t2 := time.Now()
	if err != nil {
		r.fail(procLease, err)
		return
	}
	if lease == nil {
		r.emptyLease.record(t2.Sub(t1))
		return
	}
	r.ok(procLease, t2.Sub(t1))
	if lease.Payload.ResourceType != itemResourceType {
		r.foreign.Add(1)
	}
	if err := l.client.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: lease.OwnershipToken}); err != nil {
		r.fail(procComplete, err)
		return
	}
	t3 := time.Now()
	r.ok(procComplete, t3.Sub(t2))
	r.cycle.record(t3.Sub(t0))
}

// batchCycle is one enqueueBatch → leaseBatch → completeBatch of up to
// l.batch items; the completed ones count as cycles, each taking the whole
// batch's time. A refused item fails its batch's procedure (one error, the
// first); the leases of a batch may be other goroutines' items (they share
// one queue), so a leaseBatch can return fewer than were enqueued, as a
// per-item lease can return nothing.
func (l *leasemeshWorkload) batchCycle(ctx context.Context, w int, _ int64, r *recorder) {
	t0 := time.Now()
	payloads := make([]resourcelease.Item, l.batch)
	for i := range payloads {
		payloads[i] = *l.item(w)
	}
	resp, err := l.client.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: payloads})
	if err == nil {
		err = firstItemError(resp)
	}
	if err != nil {
		r.fail(procEnqueueBatch, err)
		return
	}
	t1 := time.Now()
	r.ok(procEnqueueBatch, t1.Sub(t0))
	leases, err := l.client.LeaseBatch(ctx, &resourcelease.LeaseBatchRequest{
		Wait: time.Duration(l.waitMs) * time.Millisecond, MaxItems: l.batch,
	})
	t2 := time.Now()
	if err != nil {
		r.fail(procLeaseBatch, err)
		return
	}
	if len(leases) == 0 {
		r.emptyLease.record(t2.Sub(t1))
		return
	}
	r.ok(procLeaseBatch, t2.Sub(t1))
	tokens := make([]resourcelease.OwnershipToken, len(leases))
	for i, lease := range leases {
		tokens[i] = lease.OwnershipToken
		if lease.Payload.ResourceType != itemResourceType {
			r.foreign.Add(1)
		}
	}
	errs, err := l.client.CompleteBatch(ctx, &resourcelease.CompleteBatchRequest{OwnershipTokens: tokens})
	if err == nil {
		for _, e := range errs {
			if e != nil {
				err = e
				break
			}
		}
	}
	if err != nil {
		r.fail(procCompleteBatch, err)
		return
	}
	t3 := time.Now()
	r.ok(procCompleteBatch, t3.Sub(t2))
	r.cycle.recordN(t3.Sub(t0), uint64(len(leases)))
}

func firstItemError(resp *resourcelease.EnqueueBatchResponse) error {
	for _, res := range resp.Results {
		if res.Err != nil {
			return res.Err
		}
	}
	return nil
}

// echoItem, echoToken and echoRequest mirror the shapes of the enqueue,
// lease and complete requests, so the echo handler decodes what the
// dispatcher decodes, give or take.
type echoItem struct {
	ResourceType    string `json:"resourceType"`
	ResourceID      string `json:"resourceId"`
	PartitionKey    string `json:"partitionKey"`
	PayloadEncoding string `json:"payloadEncoding"`
	Body            []byte `json:"body,omitempty"`
}

type echoToken struct {
	SequenceID int64  `json:"sequenceId"`
	Attempt    int    `json:"attempt"`
	LeaseID    string `json:"leaseId"`
}

type echoRequest struct {
	Payload        *echoItem  `json:"payload,omitempty"`
	WaitMs         int64      `json:"waitMs,omitempty"`
	OwnershipToken *echoToken `json:"ownershipToken,omitempty"`
}

// echoResponse is about the size of an enqueue or complete response.
type echoResponse struct {
	Success    bool  `json:"success"`
	SequenceID int64 `json:"sequenceId"`
	Bytes      int   `json:"bytes"`
}

// echoHandler is the ceiling: a bare net/http handler that decodes a small
// JSON request and encodes a small JSON response, nothing else.
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req echoRequest
		if err := json.Unmarshal(body, &req); err != nil {
			http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
			return
		}
		resp := echoResponse{Success: true, Bytes: len(body)}
		if req.OwnershipToken != nil {
			resp.SequenceID = req.OwnershipToken.SequenceID
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

// echoWorkload is the echo phase: POSTs to echoHandler with the same HTTP
// client, rotating through request bodies shaped like the three RPCs of a
// cycle, so it sends the same mix of sizes.
type echoWorkload struct {
	hc   *http.Client
	url  string
	reqs [3]echoRequest
}

func newEchoWorkload(hc *http.Client, url string, body []byte) *echoWorkload {
	e := &echoWorkload{hc: hc, url: url}
	e.reqs[0] = echoRequest{Payload: &echoItem{ResourceType: itemResourceType, ResourceID: "item-1234567", PartitionKey: "worker-0", PayloadEncoding: "application/json", Body: body}}
	e.reqs[1] = echoRequest{WaitMs: 1000}
	e.reqs[2] = echoRequest{OwnershipToken: &echoToken{SequenceID: 1234567, Attempt: 1, LeaseID: "5f0c8f2e-8d0a-4a53-9a4e-0d6a1c2b3e4f"}}
	return e
}

func (e *echoWorkload) post(ctx context.Context, _ int, i int64, r *recorder) {
	req := &e.reqs[i%int64(len(e.reqs))]
	t0 := time.Now()
	if err := e.call(ctx, req); err != nil {
		r.fail(procEcho, err)
		return
	}
	r.ok(procEcho, time.Since(t0))
}

// call does what transport.Client does around a call: encode, POST with a
// timeout, read the body, decode.
func (e *echoWorkload) call(ctx context.Context, req *echoRequest) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := e.hc.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return resourcelease.AsError(ctx.Err())
		}
		return resourcelease.Errorf(resourcelease.StatusUnavailable, transport.CodeTransportUnavailable, "echo: %v", err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resourcelease.Errorf(resourcelease.StatusUnavailable, transport.CodeTransportUnavailable, "echo: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		return resourcelease.Errorf(resourcelease.StatusFromHTTP(resp.StatusCode), "", "echo: HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(out))
	}
	var er echoResponse
	if err := json.Unmarshal(out, &er); err != nil || !er.Success {
		return resourcelease.Errorf(resourcelease.StatusInternal, "", "echo: bad response %q", out)
	}
	return nil
}

// phaseSpec is one phase to run.
type phaseSpec struct {
	name  string
	url   string
	procs []string
	limit int64 // units (0: none)
	unit  unit
}

// runPhase runs the warmup (unmeasured, but its errors count) and then the
// measured load of p, and summarises it.
func runPhase(ctx context.Context, cfg *config, p phaseSpec) *phaseReport {
	var warmupErrs int64
	if cfg.warmup > 0 {
		wr := newRecorder(p.procs...)
		drive(ctx, cfg.concurrency, cfg.warmup, 0, cfg.maxErrors, wr, p.unit)
		warmupErrs = wr.nerr.Load()
	}
	r := newRecorder(p.procs...)
	elapsed, why := time.Duration(0), "interrupted"
	if ctx.Err() == nil && warmupErrs <= cfg.maxErrors {
		elapsed, why = drive(ctx, cfg.concurrency, cfg.duration, p.limit, cfg.maxErrors, r, p.unit)
	} else if ctx.Err() == nil {
		why = "max-errors"
	}
	return summarise(p, r, elapsed, why, warmupErrs)
}

// errSummary is the one-line stderr summary of a failed run.
func errSummary(rep *report) string {
	var n int64
	for _, p := range rep.Phases {
		n += p.Errors + p.WarmupErrors
	}
	if rep.Interrupted {
		return fmt.Sprintf("interrupted; %d RPCs failed", n)
	}
	return fmt.Sprintf("%d RPCs failed (see the report's errors)", n)
}
