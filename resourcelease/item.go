package resourcelease

import (
	"strings"
	"time"

	"github.com/google/uuid"
)

// Item is a unit of work (wire name "payload"). ResourceType, ResourceID,
// PartitionKey and PayloadEncoding are required and must not be blank; Body is
// opaque to the queue (base64 in JSON).
type Item struct {
	ResourceType    string            `json:"resourceType"`
	ResourceID      string            `json:"resourceId"`
	PartitionKey    string            `json:"partitionKey"`
	PayloadEncoding string            `json:"payloadEncoding"`
	Body            []byte            `json:"body,omitempty"`
	Attributes      map[string]string `json:"attributes,omitempty"`
	// RequestID, when set, makes enqueue idempotent within the dedupe window.
	RequestID string `json:"requestId,omitempty"`
	// NotBefore, when set at enqueue and in the future, delays the item: it
	// is pending (counted, drained and restored with its time) but not
	// leased before then. Among ready items the order stays by sequence
	// id. The queue keeps it in UTC.
	NotBefore time.Time `json:"notBefore,omitzero"`
}

// Validate reports the first missing required field as an invalid-argument
// *Error with that field's code, or a NotBefore outside the years 1 to 9999
// (one that no JSON time, on the wire or in an event, can carry) with
// CodeInvalidArgument.
func (it *Item) Validate() error {
	if it == nil {
		return Errorf(StatusInvalidArgument, CodePayloadRequired, "payload is required")
	}
	for _, f := range [...]struct{ v, code, name string }{
		{it.ResourceType, CodeResourceTypeRequired, "resourceType"},
		{it.ResourceID, CodeResourceIDRequired, "resourceId"},
		{it.PartitionKey, CodePartitionKeyRequired, "partitionKey"},
		{it.PayloadEncoding, CodeEncodingRequired, "payloadEncoding"},
	} {
		if strings.TrimSpace(f.v) == "" {
			return Errorf(StatusInvalidArgument, f.code, "payload.%s is required", f.name)
		}
	}
	if !it.NotBefore.IsZero() {
		if y := it.NotBefore.UTC().Year(); y < 1 || y > 9999 {
			return Errorf(StatusInvalidArgument, CodeInvalidArgument, "payload.notBefore must be in the years 1 to 9999, got year %d", y)
		}
	}
	return nil
}

// OwnershipToken identifies one lease of one item. SequenceID is the item's,
// Attempt the delivery number, LeaseID fresh per lease: a token is valid only
// while the lease it was issued for is live.
type OwnershipToken struct {
	SequenceID int64     `json:"sequenceId"`
	Attempt    int       `json:"attempt"`
	LeaseID    uuid.UUID `json:"leaseId"`
}

// IsZero reports whether t is the zero token (never valid).
func (t OwnershipToken) IsZero() bool { return t == OwnershipToken{} }

func validateToken(t *OwnershipToken) error {
	if t == nil || t.IsZero() {
		return Errorf(StatusInvalidArgument, CodeTokenRequired, "ownershipToken is required")
	}
	return nil
}

// ErrorInfo is a failure carried to the next attempt (lastError) or an event.
type ErrorInfo struct {
	Message string `json:"message"`
	Code    string `json:"code,omitempty"`
}

// Lease is a granted lease: the item, its delivery bookkeeping and the token
// the worker must present to heartbeat, complete, fail or release it.
//
// On the wire it is {"payload","sequenceId","attempt","enqueuedAt",
// "lastError","ownershipToken","ownerPeerId","leaseExpiresAt","leaseTtlMs",
// "heartbeatIntervalMs"}.
type Lease struct {
	Payload    Item
	SequenceID int64
	Attempt    int
	EnqueuedAt time.Time
	// LastError is the failure of the previous attempt; nil on a first
	// delivery.
	LastError      *ErrorInfo
	OwnershipToken OwnershipToken
	OwnerPeerID    string
	// LeaseExpiresAt is the expiry in the dispatcher's clock. It is for
	// display: a worker times the lease with TTL and its own clock.
	LeaseExpiresAt time.Time
	// TTL is how long the lease has left, counted from when the dispatcher
	// received the lease request (for a long-poll, the wait is included):
	// the time the worker sent the request plus TTL is never later than
	// the dispatcher's expiry, whatever the two clocks say. Zero when the
	// dispatcher did not say (a server that predates it).
	TTL time.Duration
	// HeartbeatInterval is how often the dispatcher advises heartbeating.
	HeartbeatInterval time.Duration
}

// PendingItem is an item waiting to be leased, as drain returns it and restore
// takes it. Attempt is the attempt number its next lease will carry.
type PendingItem struct {
	Payload    Item       `json:"payload"`
	Attempt    int        `json:"attempt"`
	EnqueuedAt time.Time  `json:"enqueuedAt"`
	LastError  *ErrorInfo `json:"lastError,omitempty"`
	SequenceID int64      `json:"sequenceId"`
	// LastOwnershipToken is the token of the item's most recent lease, if any.
	LastOwnershipToken *OwnershipToken `json:"lastOwnershipToken,omitempty"`
	// ReadyAt, when set, is the earliest time the item may be leased (its
	// NotBefore, a requeue delay or a delayed release).
	ReadyAt time.Time `json:"readyAt,omitzero"`
	// Releases counts the releases of the item since its attempt last
	// changed; at QueueConfig.MaxReleases the next release counts as a
	// failed attempt.
	Releases int `json:"releases,omitempty"`
}

// DeadLetter is an item that will not be delivered again until redriven.
type DeadLetter struct {
	PendingItem
	DeadLetteredAt time.Time `json:"deadLetteredAt"`
	Reason         string    `json:"reason"`
}

// Stats are the queue's counts. BackpressureActive is filled in by the Dispatcher.
type Stats struct {
	// PendingCount counts the items waiting to be leased, ready or
	// delayed.
	PendingCount int `json:"pendingCount"`
	// DelayedCount counts the pending items not leasable before a later
	// time (a NotBefore, a requeue delay, a delayed release); omitted when
	// zero, so older readers see the shape they know.
	DelayedCount       int  `json:"delayedCount,omitempty"`
	ActiveLeaseCount   int  `json:"activeLeaseCount"`
	DeadLetterCount    int  `json:"deadLetterCount"`
	BackpressureActive bool `json:"backpressureActive"`
	// Paused is true while leasing is paused (Engine.Pause); omitted when
	// false, so older readers see the shape they know.
	Paused bool `json:"paused,omitempty"`
}

// EnqueueResult is what an enqueue returns. A repeated RequestID within the
// dedupe window returns the first enqueue's SequenceID with Duplicate set.
// In an EnqueueBatch, Err is the refusal of that one item (and Stats are the
// counts after the batch).
type EnqueueResult struct {
	SequenceID int64
	Duplicate  bool
	// NotBefore is the item's NotBefore as the queue keeps it (in UTC);
	// zero for an item without one, and for a Duplicate.
	NotBefore time.Time
	Stats     Stats
	Err       error
}

// FailOptions describe a failure reported by a worker.
type FailOptions struct {
	Reason    string
	ErrorCode string
	// DeadLetter dead-letters the item at once. By default it is requeued
	// with its next attempt, unless it has reached the maximum delivery
	// attempts.
	DeadLetter bool
	Metadata   map[string]string
}

// ReleaseOptions describe a release: a lease given back without counting
// its attempt.
type ReleaseOptions struct {
	// Delay, when positive, keeps the item from being leased again for that
	// long; by default it is ready at once.
	Delay time.Duration
}

// DeadLetterSelection names the dead letters a redrive or purge acts on:
// those with the given SequenceIDs, or All of them. The zero value selects
// nothing and is refused (invalid-argument), so that a forgotten filter
// never wipes the dead letters.
type DeadLetterSelection struct {
	SequenceIDs []int64
	All         bool
}

// validate refuses an empty or ambiguous selection.
func (s DeadLetterSelection) validate(verb string) error {
	switch {
	case s.All && len(s.SequenceIDs) > 0:
		return Errorf(StatusInvalidArgument, CodeSelectionRequired, "%s: give sequenceIds or all, not both", verb)
	case !s.All && len(s.SequenceIDs) == 0:
		return Errorf(StatusInvalidArgument, CodeSelectionRequired, "%s needs sequenceIds, or all:true for every dead letter", verb)
	}
	return nil
}
