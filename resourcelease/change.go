package resourcelease

import (
	"context"
	"time"
)

// ChangeKind names one state transition of the queue.
type ChangeKind uint8

// The queue's state transitions, in the order a Journal sees them.
const (
	// ChangeEnqueued: a new item is pending. Item is set.
	ChangeEnqueued ChangeKind = iota + 1
	// ChangeLeased: an item was leased to PeerID. Item (with the attempt the
	// lease carries), Token and LeaseExpiresAt are set.
	ChangeLeased
	// ChangeHeartbeat: the lease Token was extended to LeaseExpiresAt.
	ChangeHeartbeat
	// ChangeCompleted: the item is gone for good. Item and Token are set.
	ChangeCompleted
	// ChangeRequeued: a worker failed the lease with requeue; Item is pending
	// again with its next attempt, LastError and ReadyAt.
	ChangeRequeued
	// ChangeExpired: the lease Token expired; Item is pending again with its
	// next attempt and LastError code CodeLeaseExpired.
	ChangeExpired
	// ChangeDeadLettered: Item is dead-lettered with Error as the reason (after
	// a fail without requeue, or when attempts ran out on fail or expiry; Token
	// is the lease that ended, if any).
	ChangeDeadLettered
	// ChangeReleased: a lease granted to a long-poll waiter that was gone by
	// the time it got it; Item is pending again with its attempt unchanged.
	ChangeReleased
	// ChangeDrained: Items (all pending items) were removed.
	ChangeDrained
	// ChangeRestored: Items were put back as pending.
	ChangeRestored
	// ChangeRedriven: dead letters Items are pending again with attempt 1.
	ChangeRedriven
	// ChangePurged: dead letters SequenceIDs were deleted.
	ChangePurged
	// ChangeFailed: a worker failed the lease Token and the item is not
	// requeued (it asked not to be, or it was on its last attempt). Error and
	// Metadata are the worker's; a ChangeDeadLettered of the item follows.
	// (A fail that requeues is ChangeRequeued.)
	ChangeFailed
	// ChangeDeadLetterPurged: the dead letter Item was deleted by the queue
	// itself, because it was older than DeadLetterRetention or the oldest
	// beyond MaxDeadLetters (Metadata MetaPurgeReason says which). One
	// change per dead letter.
	ChangeDeadLetterPurged
)

var changeKindNames = [...]string{
	ChangeEnqueued: "enqueued", ChangeLeased: "leased", ChangeHeartbeat: "heartbeat",
	ChangeCompleted: "completed", ChangeRequeued: "requeued", ChangeExpired: "expired",
	ChangeDeadLettered: "dead-lettered", ChangeReleased: "released", ChangeDrained: "drained",
	ChangeRestored: "restored", ChangeRedriven: "redriven", ChangePurged: "purged",
	ChangeFailed: "failed", ChangeDeadLetterPurged: "dead-letter-purged",
}

// String returns the kind's name.
func (k ChangeKind) String() string {
	if int(k) < len(changeKindNames) && changeKindNames[k] != "" {
		return changeKindNames[k]
	}
	return "unknown"
}

// Change is one state transition, a value snapshot taken under the engine's
// lock. Only the fields its Kind documents are set. Journals must not modify
// it or anything it points to.
type Change struct {
	Kind ChangeKind
	At   time.Time
	// PeerID is the lease owner for lease transitions, the caller otherwise.
	PeerID string
	// Item is the item after the transition (single-item kinds).
	Item *PendingItem
	// Token is the lease concerned (leased, heartbeat, completed, requeued,
	// expired, released, and dead-lettered when a lease ended).
	Token          OwnershipToken
	LeaseExpiresAt time.Time
	// LeasedAt is when the ending lease was granted (for hold-time metrics).
	LeasedAt time.Time
	// Error is the failure or dead-letter reason.
	Error *ErrorInfo
	// Metadata is the metadata a worker attached to a fail.
	Metadata map[string]string
	// Items are the items of a bulk transition (drained, restored, redriven).
	Items []PendingItem
	// SequenceIDs are the dead letters a purge deleted.
	SequenceIDs []int64
	// Counts after the transition. Pending counts ready and delayed items,
	// Delayed the delayed ones among them.
	Pending, Delayed, Active, DeadLettered int
}

// Ack reports when a recorded change is durable (and, for a Replicator, when
// its synchronous sinks have applied its event). A nil Ack is already done.
type Ack interface {
	// Wait blocks until the change is durable or has failed.
	Wait() error
}

// Journal receives every state change of a queue engine, in order. Record is
// called with the engine's lock held, so it must not block or call back into
// the queue: a durable Journal hands the change to its writer and returns an
// Ack. The engine returns to its caller only after the Ack of the last change
// the call produced succeeds; a failed Ack is returned to the caller as is
// (status unavailable), and the journal is expected to refuse everything after
// a failure it cannot recover from, since memory may now be ahead of disk.
type Journal interface {
	Record(c *Change) Ack
}

// BatchJournal is a Journal that can take the changes of one call at once
// (a batch procedure), so that a durable journal commits them together: one
// transaction, one fsync. The engine uses RecordAll when its Journal has it,
// with its lock held, as it does Record.
type BatchJournal interface {
	Journal
	// RecordAll records cs, in order, as one unit, and returns the Ack of
	// them all.
	RecordAll(cs []*Change) Ack
}

// JournalFunc adapts a function to the Journal interface.
type JournalFunc func(c *Change) Ack

// Record calls f(c).
func (f JournalFunc) Record(c *Change) Ack { return f(c) }

// LeasedItem is a live lease in a QueueState.
type LeasedItem struct {
	PendingItem
	Token  OwnershipToken
	PeerID string
	// LeasedAt is when the lease was granted. The engine gives a restored lease
	// a fresh lease duration counted from the restart.
	LeasedAt time.Time
}

// DedupeEntry records one enqueue with a RequestID.
type DedupeEntry struct {
	RequestID  string
	SequenceID int64
	SeenAt     time.Time
}

// QueueState is everything needed to rebuild an engine after a restart.
type QueueState struct {
	Pending     []PendingItem
	Leased      []LeasedItem
	DeadLetters []DeadLetter
	Dedupe      []DedupeEntry
	// NextSequenceID is at least one more than every sequence id ever issued.
	NextSequenceID int64
}

// StateLoader is implemented by durable journals: LoadState returns the state
// they persisted, for NewEngine's QueueConfig.InitialState.
type StateLoader interface {
	LoadState(ctx context.Context) (*QueueState, error)
}
