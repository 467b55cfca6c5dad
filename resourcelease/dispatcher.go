package resourcelease

import (
	"context"
	"time"
)

// Dispatcher is the RPC-level face of a queue: the procedures of the wire
// protocol (DESIGN §9), taking and returning their JSON request and response
// types. The transport serves a Dispatcher; the transport's Client implements
// it too, so code written against Dispatcher runs in process or over the
// network unchanged.
//
// The caller and peer of a request travel in the context (WithCallInfo). A
// lease's peer id is the request's PeerID, else CallInfo.PeerID, else
// CallInfo.Caller (ResolvePeerID).
type Dispatcher interface {
	Enqueue(ctx context.Context, req *EnqueueRequest) (*EnqueueResponse, error)
	// Lease returns (nil, nil) when nothing was available within the wait.
	Lease(ctx context.Context, req *LeaseRequest) (*Lease, error)
	Heartbeat(ctx context.Context, req *HeartbeatRequest) (*HeartbeatResponse, error)
	Complete(ctx context.Context, req *CompleteRequest) (*SuccessResponse, error)
	Fail(ctx context.Context, req *FailRequest) (*SuccessResponse, error)
	Drain(ctx context.Context, req *DrainRequest) (*DrainResponse, error)
	Restore(ctx context.Context, req *RestoreRequest) (*RestoreResponse, error)
	Stats(ctx context.Context, req *StatsRequest) (*Stats, error)
	DeadLetters(ctx context.Context, req *DeadLettersRequest) (*DeadLettersResponse, error)
	Redrive(ctx context.Context, req *RedriveRequest) (*RedriveResponse, error)
	Purge(ctx context.Context, req *PurgeRequest) (*PurgeResponse, error)
}

// EnqueueRequest is the body of `enqueue`.
type EnqueueRequest struct {
	Payload *Item `json:"payload"`
}

// QueueCounts are the counts returned by enqueue.
type QueueCounts struct {
	PendingCount     int `json:"pendingCount"`
	ActiveLeaseCount int `json:"activeLeaseCount"`
}

// EnqueueResponse is the result of `enqueue`. SequenceID and Duplicate are
// additions to the OmniRelay shape; older clients ignore them.
type EnqueueResponse struct {
	Stats      QueueCounts `json:"stats"`
	SequenceID int64       `json:"sequenceId,omitempty"`
	Duplicate  bool        `json:"duplicate,omitempty"`
}

// LeaseRequest is the body of `lease`. WaitMs > 0 long-polls.
type LeaseRequest struct {
	PeerID string `json:"peerId,omitempty"`
	WaitMs int64  `json:"waitMs,omitempty"`
}

// HeartbeatRequest is the body of `heartbeat`.
type HeartbeatRequest struct {
	OwnershipToken *OwnershipToken `json:"ownershipToken"`
}

// HeartbeatResponse is the result of `heartbeat`.
type HeartbeatResponse struct {
	Success        bool      `json:"success"`
	LeaseExpiresAt time.Time `json:"leaseExpiresAt"`
}

// CompleteRequest is the body of `complete`.
type CompleteRequest struct {
	OwnershipToken *OwnershipToken `json:"ownershipToken"`
}

// SuccessResponse is the result of `complete` and `fail`.
type SuccessResponse struct {
	Success bool `json:"success"`
}

// FailRequest is the body of `fail`. Requeue defaults to true when absent.
type FailRequest struct {
	OwnershipToken *OwnershipToken   `json:"ownershipToken"`
	Reason         string            `json:"reason,omitempty"`
	ErrorCode      string            `json:"errorCode,omitempty"`
	Requeue        *bool             `json:"requeue,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
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

// RedriveRequest is the body of `redrive`; no ids means all dead letters.
type RedriveRequest struct {
	SequenceIDs []int64 `json:"sequenceIds,omitempty"`
}

// RedriveResponse is the result of `redrive`.
type RedriveResponse struct {
	RedrivenCount int `json:"redrivenCount"`
}

// PurgeRequest is the body of `purge`; no ids means all dead letters.
type PurgeRequest struct {
	SequenceIDs []int64 `json:"sequenceIds,omitempty"`
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

// BackpressureController decides backpressure from the pending count
// (backpressure.Monitor implements it).
type BackpressureController interface {
	// Observe is called on every queue change with the queue's lock held; it
	// must not block.
	Observe(pending int, at time.Time)
	// Admit is called before each enqueue: nil when backpressure is off;
	// otherwise it waits for it to clear (bounded by ctx: deadline-exceeded)
	// or returns ErrBackpressure, by its mode.
	Admit(ctx context.Context) error
	// Active reports the current state.
	Active() bool
}
