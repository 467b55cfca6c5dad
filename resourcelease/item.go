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
}

// Validate reports the first missing required field as an invalid-argument
// *Error with that field's code.
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
// the worker must present to heartbeat, complete or fail it.
type Lease struct {
	Payload             Item           `json:"payload"`
	SequenceID          int64          `json:"sequenceId"`
	Attempt             int            `json:"attempt"`
	EnqueuedAt          time.Time      `json:"enqueuedAt"`
	LastError           *ErrorInfo     `json:"lastError"`
	OwnershipToken      OwnershipToken `json:"ownershipToken"`
	OwnerPeerID         string         `json:"ownerPeerId"`
	LeaseExpiresAt      time.Time      `json:"leaseExpiresAt"`
	HeartbeatIntervalMs int64          `json:"heartbeatIntervalMs"`
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
	// ReadyAt, when set, is the earliest time the item may be leased (requeue delay).
	ReadyAt time.Time `json:"readyAt,omitzero"`
}

// DeadLetter is an item that will not be delivered again until redriven.
type DeadLetter struct {
	PendingItem
	DeadLetteredAt time.Time `json:"deadLetteredAt"`
	Reason         string    `json:"reason"`
}

// Stats are the queue's counts. BackpressureActive is filled in by the Dispatcher.
type Stats struct {
	PendingCount       int  `json:"pendingCount"`
	ActiveLeaseCount   int  `json:"activeLeaseCount"`
	DeadLetterCount    int  `json:"deadLetterCount"`
	BackpressureActive bool `json:"backpressureActive"`
	// Paused is true while leasing is paused (Engine.Pause); omitted when
	// false, so older readers see the shape they know.
	Paused bool `json:"paused,omitempty"`
}

// EnqueueResult is what an enqueue returns. A repeated RequestID within the
// dedupe window returns the first enqueue's SequenceID with Duplicate set.
type EnqueueResult struct {
	SequenceID int64
	Duplicate  bool
	Stats      Stats
}

// FailOptions describe a failure reported by a worker.
type FailOptions struct {
	Reason    string
	ErrorCode string
	// Requeue puts the item back (attempt+1) unless it has reached the maximum
	// delivery attempts; false dead-letters it.
	Requeue  bool
	Metadata map[string]string
}
