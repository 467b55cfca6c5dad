package resourcelease

import (
	"context"
	"time"
)

// Dispatcher is the queue as a service talks to it: the procedures of the
// wire protocol, with Go types. The transport serves a Dispatcher, and the
// transport's Client implements it too, so code written against Dispatcher
// (a Worker, a producer) runs in process or over the network unchanged.
// LocalDispatcher is the in-process one.
//
// Producers Enqueue; workers Lease, Heartbeat while they work, then
// Complete, Fail or Release; operators read Stats, Drain and Restore, and
// inspect, Redrive or Purge the dead letters. A Dispatcher that can also take
// work in batches implements BatchDispatcher.
//
// Requests are pointers so that they can grow without breaking callers; a
// nil request means the zero one. Errors are *Error with a wire status and
// a stable code, so errors.Is(err, ErrUnknownToken) holds locally and across
// the network alike.
//
// The caller and peer of a request travel in the context (WithCallInfo). A
// lease's peer id is the request's PeerID, else CallInfo.PeerID, else
// CallInfo.Caller (ResolvePeerID).
type Dispatcher interface {
	// Enqueue adds one item (see EnqueueRequest).
	Enqueue(ctx context.Context, req *EnqueueRequest) (*EnqueueResponse, error)
	// Lease leases the next ready item (the oldest, or by the queue's
	// fairness and per-partition limit), long-polling up to req.Wait. It
	// returns (nil, nil) when nothing was available within the wait.
	Lease(ctx context.Context, req *LeaseRequest) (*Lease, error)
	// Heartbeat extends a live lease by the lease duration.
	Heartbeat(ctx context.Context, req *HeartbeatRequest) (*HeartbeatResponse, error)
	// Complete removes the leased item for good.
	Complete(ctx context.Context, req *CompleteRequest) error
	// Fail ends a lease because the work failed: the item is requeued with
	// its next attempt, or dead-lettered (see FailRequest).
	Fail(ctx context.Context, req *FailRequest) error
	// Release gives a lease back without counting its attempt (see
	// ReleaseRequest): for a worker shutting down, or a handler declining.
	Release(ctx context.Context, req *ReleaseRequest) error
	// Stats returns the queue's counts.
	Stats(ctx context.Context, req *StatsRequest) (*Stats, error)
	// Drain removes pending items (all, or one page) and returns them.
	Drain(ctx context.Context, req *DrainRequest) (*DrainResponse, error)
	// Restore puts drained items back, all or nothing.
	Restore(ctx context.Context, req *RestoreRequest) (*RestoreResponse, error)
	// DeadLetters lists dead letters, oldest first.
	DeadLetters(ctx context.Context, req *DeadLettersRequest) (*DeadLettersResponse, error)
	// Redrive moves the selected dead letters back to pending with attempt 1.
	Redrive(ctx context.Context, req *RedriveRequest) (*RedriveResponse, error)
	// Purge deletes the selected dead letters.
	Purge(ctx context.Context, req *PurgeRequest) (*PurgeResponse, error)
}

// MaxBatchItems is the most items one batch procedure takes (enqueueBatch,
// heartbeatBatch, completeBatch) or returns (leaseBatch).
const MaxBatchItems = 1000

// BatchDispatcher is a Dispatcher that also takes work in batches: one call,
// and one durable commit, for many items, each with its own result. The
// transport's Client and LocalDispatcher implement it; PerItem serves the
// batches of any other Dispatcher with per-item calls.
//
// A batch succeeds or fails as a whole only when it cannot be done at all
// (a bad request, a closed or failed store); otherwise every item gets its
// own result, in the order of the request.
type BatchDispatcher interface {
	Dispatcher
	// EnqueueBatch adds up to MaxBatchItems items, each validated and
	// deduplicated on its own; every accepted one is committed together.
	// It never waits for capacity: items past it are refused one by one
	// (ErrQueueFull).
	EnqueueBatch(ctx context.Context, req *EnqueueBatchRequest) (*EnqueueBatchResponse, error)
	// LeaseBatch leases up to req.MaxItems items. It returns as soon as at
	// least one is there (then takes up to MaxItems of those ready without
	// waiting more), or no leases when req.Wait ends.
	LeaseBatch(ctx context.Context, req *LeaseBatchRequest) ([]*Lease, error)
	// HeartbeatBatch extends each of the leases, with one result per token.
	HeartbeatBatch(ctx context.Context, req *HeartbeatBatchRequest) ([]HeartbeatResult, error)
	// CompleteBatch completes each of the leases: one error per token, nil
	// for those completed.
	CompleteBatch(ctx context.Context, req *CompleteBatchRequest) ([]error, error)
}

// EnqueueRequest is the body of `enqueue` (wire: {"payload","delayMs"}).
type EnqueueRequest struct {
	Payload *Item
	// Delay, when positive, keeps the item from being leased for that long
	// (from when the dispatcher received it): the item's NotBefore becomes
	// now + Delay, or stays the payload's own NotBefore when that is later.
	// It travels as whole milliseconds, rounded up; negative is
	// invalid-argument.
	Delay time.Duration
}

// QueueCounts are the counts returned by enqueue.
type QueueCounts struct {
	PendingCount     int `json:"pendingCount"`
	ActiveLeaseCount int `json:"activeLeaseCount"`
}

// EnqueueResponse is the result of `enqueue`. SequenceID, Duplicate and
// NotBefore are additions to the OmniRelay shape; older clients ignore them.
type EnqueueResponse struct {
	Stats      QueueCounts `json:"stats"`
	SequenceID int64       `json:"sequenceId,omitempty"`
	Duplicate  bool        `json:"duplicate,omitempty"`
	// NotBefore echoes the time before which the item will not be leased
	// (RFC 3339, UTC), when it has one; not set on a Duplicate. A client
	// that asked for a delay and gets no NotBefore back is talking to a
	// server that ignored it (the transport's Client refuses that answer).
	NotBefore time.Time `json:"notBefore,omitzero"`
}

// LeaseRequest is the body of `lease` (wire: {"peerId","waitMs"}).
type LeaseRequest struct {
	// PeerID names the worker; empty means the caller's (see Dispatcher).
	PeerID string
	// Wait > 0 long-polls: wait up to that long (or the request's deadline)
	// for an item to arrive. It travels as whole milliseconds, rounded up.
	Wait time.Duration
}

// HeartbeatRequest is the body of `heartbeat`.
type HeartbeatRequest struct {
	OwnershipToken OwnershipToken `json:"ownershipToken"`
}

// HeartbeatResponse is the result of `heartbeat` (wire:
// {"success":true,"leaseExpiresAt","leaseTtlMs"}).
type HeartbeatResponse struct {
	// LeaseExpiresAt is the new expiry in the dispatcher's clock. It is for
	// display: compare TTL with your own clock instead.
	LeaseExpiresAt time.Time
	// TTL is how long the lease has left, counted from when the dispatcher
	// received the request: a worker that adds it to the time it sent the
	// request gets a deadline never later than the dispatcher's, whatever
	// the two clocks say. Zero when the dispatcher did not say (a server
	// that predates it).
	TTL time.Duration
}

// EnqueueBatchRequest is the body of `enqueueBatch` (wire:
// {"payloads","delayMs"}): at most MaxBatchItems payloads.
type EnqueueBatchRequest struct {
	Payloads []Item
	// Delay, when positive, delays every payload as EnqueueRequest.Delay
	// does; each payload may also have its own NotBefore.
	Delay time.Duration
}

// EnqueueBatchResponse is the result of `enqueueBatch`: one result per
// payload, in order, and the queue's counts after the batch (wire:
// {"results":[...],"stats"}).
type EnqueueBatchResponse struct {
	Results []EnqueueItemResult `json:"results"`
	Stats   QueueCounts         `json:"stats"`
}

// EnqueueItemResult is the outcome of one payload of an enqueueBatch: its
// sequence id (Duplicate when its RequestID was seen within the dedupe
// window) and the NotBefore it was given, or Err, an *Error (wire:
// {"sequenceId","duplicate","notBefore"} or
// {"error":{"status","code","message"}}).
type EnqueueItemResult struct {
	SequenceID int64
	Duplicate  bool
	NotBefore  time.Time
	Err        error
}

// LeaseBatchRequest is the body of `leaseBatch` (wire: {"peerId","waitMs",
// "maxItems","maxBytes"}).
type LeaseBatchRequest struct {
	// PeerID names the worker; empty means the caller's (see Dispatcher).
	PeerID string
	// Wait > 0 long-polls for the first item (see LeaseRequest.Wait).
	Wait time.Duration
	// MaxItems is the most leases to return: 1 to MaxBatchItems.
	MaxItems int
	// MaxBytes, when positive, bounds the approximate JSON size of the
	// leases returned, though at least one is always returned when any is
	// ready.
	MaxBytes int64
}

// LeaseBatchResponse is the wire shape of a `leaseBatch` response:
// {"items":[lease,...]}. BatchDispatcher.LeaseBatch returns its Items.
type LeaseBatchResponse struct {
	Items []*Lease `json:"items"`
}

// HeartbeatBatchRequest is the body of `heartbeatBatch`: at most
// MaxBatchItems tokens.
type HeartbeatBatchRequest struct {
	OwnershipTokens []OwnershipToken `json:"ownershipTokens"`
}

// HeartbeatResult is the outcome of one token of a heartbeatBatch: the
// lease's new expiry and time left, or Err, an *Error such as
// ErrUnknownToken (wire: {"leaseExpiresAt","leaseTtlMs"} or {"error":{...}}).
type HeartbeatResult struct {
	HeartbeatResponse
	Err error
}

// HeartbeatBatchResponse is the wire shape of a `heartbeatBatch` response:
// {"results":[...]}. BatchDispatcher.HeartbeatBatch returns its Results.
type HeartbeatBatchResponse struct {
	Results []HeartbeatResult `json:"results"`
}

// CompleteBatchRequest is the body of `completeBatch`: at most
// MaxBatchItems tokens.
type CompleteBatchRequest struct {
	OwnershipTokens []OwnershipToken `json:"ownershipTokens"`
}

// CompleteBatchResponse is the wire shape of a `completeBatch` response:
// {"results":[{"success":true} or {"error":{...}}]}, one per token.
// BatchDispatcher.CompleteBatch returns its Results (nil for a success).
type CompleteBatchResponse struct {
	Results []error
}

// CompleteRequest is the body of `complete`.
type CompleteRequest struct {
	OwnershipToken OwnershipToken `json:"ownershipToken"`
}

// FailRequest is the body of `fail` (wire: {"ownershipToken","reason",
// "errorCode","requeue","metadata"}).
type FailRequest struct {
	OwnershipToken OwnershipToken
	// Reason and ErrorCode become the item's lastError.
	Reason    string
	ErrorCode string
	// DeadLetter dead-letters the item at once instead of requeueing it
	// (wire: requeue false). By default a failed item is requeued with its
	// next attempt, after the requeue delay, unless that was its last.
	DeadLetter bool
	// Metadata goes into the replication event of the failure.
	Metadata map[string]string
}

// ReleaseRequest is the body of `release` (wire: {"ownershipToken",
// "delayMs"}). A released item is pending again at once, in its old place
// (by sequence id), its attempt not counted and no backoff applied. A
// release beyond QueueConfig.MaxReleases in a row of the same item counts as
// a failed attempt instead, so a handler that keeps declining cannot loop hot.
type ReleaseRequest struct {
	OwnershipToken OwnershipToken
	// Delay, when positive, keeps the item from being leased again for that
	// long. It travels as whole milliseconds, rounded up.
	Delay time.Duration
}

// DrainRequest is the body of `drain`. Without limits (the default) a drain
// removes every pending item; with Limit or MaxBytes it removes only the
// oldest ones that fit (at least one) and the response says whether More
// remain, so that a caller can drain page by page and keep each page safe
// before asking for the next.
type DrainRequest struct {
	// Limit is the most items to remove (0: no limit).
	Limit int `json:"limit,omitempty"`
	// MaxBytes bounds the approximate JSON size of the items returned
	// (0: no limit).
	MaxBytes int64 `json:"maxBytes,omitempty"`
}

// DrainResponse is the result of `drain`.
type DrainResponse struct {
	Items []PendingItem `json:"items"`
	// More is true when pending items remain after this drain.
	More bool `json:"more,omitempty"`
}

// RestoreRequest is the body of `restore`.
type RestoreRequest struct {
	Items []PendingItem `json:"items"`
}

// RestoreResponse is the result of `restore`.
type RestoreResponse struct {
	RestoredCount int `json:"restoredCount"`
}

// StatsRequest is the body of `stats`.
type StatsRequest struct{}

// DeadLettersRequest is the body of `deadletters`. Limit 0 lists all; a
// negative limit is invalid-argument.
type DeadLettersRequest struct {
	Limit int `json:"limit,omitempty"`
}

// DeadLettersResponse is the result of `deadletters`.
type DeadLettersResponse struct {
	Items []DeadLetter `json:"items"`
}

// RedriveRequest is the body of `redrive`: the dead letters with the given
// SequenceIDs, or All of them. A request with neither (or both) is
// invalid-argument, so that a forgotten filter never moves every dead letter.
type RedriveRequest struct {
	SequenceIDs []int64 `json:"sequenceIds,omitempty"`
	All         bool    `json:"all,omitempty"`
}

// Validate refuses a request that selects nothing, or is ambiguous
// (invalid-argument, CodeSelectionRequired). A nil request selects nothing.
func (r *RedriveRequest) Validate() error {
	if r == nil {
		return DeadLetterSelection{}.validate("redrive")
	}
	return DeadLetterSelection{SequenceIDs: r.SequenceIDs, All: r.All}.validate("redrive")
}

// RedriveResponse is the result of `redrive`.
type RedriveResponse struct {
	RedrivenCount int `json:"redrivenCount"`
}

// PurgeRequest is the body of `purge`: the dead letters with the given
// SequenceIDs, or All of them. A request with neither (or both) is
// invalid-argument: an empty filter must never wipe the dead letters.
type PurgeRequest struct {
	SequenceIDs []int64 `json:"sequenceIds,omitempty"`
	All         bool    `json:"all,omitempty"`
}

// Validate refuses a request that selects nothing, or is ambiguous
// (invalid-argument, CodeSelectionRequired). A nil request selects nothing.
func (r *PurgeRequest) Validate() error {
	if r == nil {
		return DeadLetterSelection{}.validate("purge")
	}
	return DeadLetterSelection{SequenceIDs: r.SequenceIDs, All: r.All}.validate("purge")
}

// PurgeResponse is the result of `purge`.
type PurgeResponse struct {
	PurgedCount int `json:"purgedCount"`
}

// CallInfo is what the transport knows about a request's origin.
type CallInfo struct {
	// Caller is the Rpc-Caller header: in yarpc, the calling service's name,
	// the same for every instance of it.
	Caller string
	// PeerID is the peer id the request's headers name: the application
	// header Rpc-Header-Peer-Id, else x-peer-id.
	PeerID string
	// Service is the Rpc-Service header.
	Service string
}

type callInfoKey struct{}

// WithCallInfo returns a context carrying ci.
func WithCallInfo(ctx context.Context, ci CallInfo) context.Context {
	return context.WithValue(ctx, callInfoKey{}, ci)
}

// CallInfoFrom returns the CallInfo in ctx (zero if none).
func CallInfoFrom(ctx context.Context) CallInfo {
	ci, _ := ctx.Value(callInfoKey{}).(CallInfo)
	return ci
}

// ResolvePeerID applies the peer id rule: explicit (a lease's peerId), else
// the peer id header (ci.PeerID), else the caller. The caller comes last
// because a yarpc caller names a service, not one of its instances.
func ResolvePeerID(explicit string, ci CallInfo) string {
	switch {
	case explicit != "":
		return explicit
	case ci.PeerID != "":
		return ci.PeerID
	}
	return ci.Caller
}

// PeerHealth is what the Dispatcher tells the peer-health tracker about each
// peer, and what it asks before serving a peer's lease request
// (peerhealth.Tracker implements it). The Record calls that follow a change
// (assignment, heartbeat, release, disconnect) are made in change order with
// the queue's lock held; AdmitLease and RecordLeaseMiss are made without it.
// Implementations must be quick and must not call back into the queue.
//
// Only a lease that expired without being settled is a disconnect: a fail,
// with or without requeue, is the decision of a worker that is talking to the
// dispatcher, so it is a release.
type PeerHealth interface {
	// RecordAssignment: a lease was granted to peerID; metadata are the
	// item's attributes.
	RecordAssignment(peerID string, token OwnershipToken, metadata map[string]string, at time.Time)
	// RecordHeartbeat: peerID extended its lease; pendingCount is the queue's.
	RecordHeartbeat(peerID string, token OwnershipToken, pendingCount int, at time.Time)
	// RecordRelease: the lease ended without expiring; outcome says how.
	RecordRelease(peerID string, token OwnershipToken, outcome ReleaseOutcome, at time.Time)
	// RecordDisconnect: the lease expired without being settled (the peer went
	// silent); reason is DisconnectLeaseExpired, or DisconnectMaxAttempts when
	// the expiry dead-lettered the item. Expiries found by one sweep share
	// their at.
	RecordDisconnect(peerID string, token OwnershipToken, reason string, at time.Time)
	// AdmitLease is asked before a lease request of peerID is served. It
	// returns zero to serve it, or how long the peer should wait before it
	// asks again; the Dispatcher refuses the request only with
	// RefuseUnhealthyPeers. The request is proof of life either way.
	AdmitLease(peerID string, at time.Time) (retryAfter time.Duration)
	// RecordLeaseMiss: a lease request AdmitLease was asked about ended
	// without a lease (nothing was ready within its wait, or it failed).
	RecordLeaseMiss(peerID string, at time.Time)
}

// ReleaseOutcome is how a lease ended without expiring, as PeerHealth's
// RecordRelease is told.
type ReleaseOutcome uint8

// The release outcomes.
const (
	// ReleaseCompleted: the peer completed the item.
	ReleaseCompleted ReleaseOutcome = iota + 1
	// ReleaseRequeued: the peer failed the item and it went back to pending.
	ReleaseRequeued
	// ReleaseDeadLettered: the peer failed the item and it was dead-lettered
	// (requeue false, or its last attempt). A worker that dead-letters a
	// poison item is healthy: this is a release, not a disconnect.
	ReleaseDeadLettered
	// ReleaseGivenBack: the lease went back unused, because the lease request
	// it was granted to was gone by then; the peer never held it.
	ReleaseGivenBack
)

var releaseOutcomeNames = [...]string{
	ReleaseCompleted: "completed", ReleaseRequeued: "requeued",
	ReleaseDeadLettered: "dead_lettered", ReleaseGivenBack: "given_back",
}

// String returns the outcome's name (completed, requeued, dead_lettered or
// given_back), as used in metric labels.
func (o ReleaseOutcome) String() string {
	if int(o) < len(releaseOutcomeNames) && releaseOutcomeNames[o] != "" {
		return releaseOutcomeNames[o]
	}
	return "unknown"
}

// BackpressureSignal is one backpressure transition.
type BackpressureSignal struct {
	IsActive      bool      `json:"isActive"`
	PendingCount  int       `json:"pendingCount"`
	ObservedAt    time.Time `json:"observedAt"`
	HighWatermark int       `json:"highWatermark"`
	LowWatermark  int       `json:"lowWatermark"`
}

// BackpressureListener is told about every transition. Listeners are called
// from the controller's own goroutine, never the queue's.
type BackpressureListener interface {
	OnBackpressure(s BackpressureSignal)
}

// BackpressureController decides backpressure from the queue's load
// (backpressure.Monitor implements it).
type BackpressureController interface {
	// Observe is called on every queue change with the queue's lock held; it
	// must not block. pending is the count of ready and leased items, the
	// work the queue holds now: delayed items are not counted, so that work
	// scheduled for later does not hold backpressure on.
	Observe(pending int, at time.Time)
	// Admit is called before each enqueue: nil when backpressure is off;
	// otherwise it waits for it to clear (bounded by ctx: deadline-exceeded)
	// or returns ErrBackpressure, by its mode.
	Admit(ctx context.Context) error
	// Active reports the current state.
	Active() bool
}
