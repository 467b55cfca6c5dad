package resourcelease

import (
	"context"
	"time"
)

// Queue is the store-neutral contract of a lease queue: what a Dispatcher
// needs from its storage. Engine implements it (in memory, or written
// through a durable Journal); a store that keeps its state elsewhere (a
// database) implements it on its own, and one conformance suite holds them
// all to the same semantics.
//
// Every method takes a context, which bounds how long the caller waits (for
// capacity, for a long-poll lease, for storage) and is never stored, and
// returns an error: a store can always fail.
type Queue interface {
	// Enqueue adds an item. With a RequestID seen within the dedupe window it
	// returns the first enqueue's result and adds nothing. An item whose
	// NotBefore is ahead is delayed until then (the result echoes it). At
	// capacity it waits for room (bounded by ctx) or returns ErrQueueFull,
	// by option.
	Enqueue(ctx context.Context, item Item) (EnqueueResult, error)
	// Lease leases the oldest ready item to peerID (with
	// QueueConfig.Fairness partitions, the oldest of the partition next in
	// line; with MaxActivePerPartition, only from partitions below it). With
	// wait > 0 it waits up to wait (or until ctx ends) for one; it returns
	// (nil, nil) when nothing arrived in time. Waiters are served first come,
	// first served. The lease's TTL is counted from when Lease was called.
	Lease(ctx context.Context, peerID string, wait time.Duration) (*Lease, error)
	// Heartbeat extends a live lease by the lease duration and returns the
	// new expiry and time left.
	Heartbeat(ctx context.Context, token OwnershipToken) (HeartbeatResponse, error)
	// Complete removes the leased item for good.
	Complete(ctx context.Context, token OwnershipToken) error
	// Fail ends the lease: requeue (attempt+1, after the requeue delay) or
	// dead-letter.
	Fail(ctx context.Context, token OwnershipToken, opts FailOptions) error
	// Release ends the lease without counting its attempt: the item is
	// pending again in its old place (by sequence id), at once or after
	// opts.Delay, with no backoff. A release beyond QueueConfig.MaxReleases
	// in a row of one item counts as a failed attempt instead (lastError
	// CodeReleaseLimit).
	Release(ctx context.Context, token OwnershipToken, opts ReleaseOptions) error
	// EnqueueBatch enqueues items as Enqueue does, each validated and
	// deduplicated on its own (a result's Err is its refusal), with one lock
	// and one journal commit for the whole batch. It never waits for
	// capacity: items past it get ErrQueueFull. The error is the batch's
	// (the context, a closed or failed store).
	EnqueueBatch(ctx context.Context, items []Item) ([]EnqueueResult, error)
	// LeaseBatch leases up to opts.MaxItems ready items to peerID in one
	// commit. When none is ready it waits (up to opts.Wait) for the first,
	// then takes what else is ready without waiting more; it returns no
	// leases when the wait ends empty.
	LeaseBatch(ctx context.Context, peerID string, opts LeaseBatchOptions) ([]*Lease, error)
	// HeartbeatBatch heartbeats each token, in one commit; a result's Err is
	// that token's refusal (ErrUnknownToken).
	HeartbeatBatch(ctx context.Context, tokens []OwnershipToken) ([]HeartbeatResult, error)
	// CompleteBatch completes each token, in one commit: one error per
	// token, nil for those completed.
	CompleteBatch(ctx context.Context, tokens []OwnershipToken) ([]error, error)
	// DrainN removes and returns the oldest pending items (ready or
	// delayed; leases are untouched): at most maxItems, and no more than fit
	// in about maxBytes of JSON, but at least one when any is pending (a
	// limit <= 0 is no limit). more reports whether pending items remain.
	DrainN(ctx context.Context, maxItems, maxBytes int) (items []PendingItem, more bool, err error)
	// Restore puts drained items back, keeping their sequence ids, attempts,
	// enqueue times and last errors. It is all or nothing.
	Restore(ctx context.Context, items []PendingItem) (int, error)
	// Stats returns the current counts.
	Stats(ctx context.Context) (Stats, error)
	// DeadLetters lists up to limit dead letters, oldest first (limit <= 0: all).
	DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error)
	// Redrive moves the selected dead letters back to pending with attempt 1
	// and returns how many moved. An empty selection is invalid-argument;
	// unknown ids are ignored.
	Redrive(ctx context.Context, sel DeadLetterSelection) (int, error)
	// Purge deletes the selected dead letters and returns how many it
	// deleted. An empty selection is invalid-argument; unknown ids are
	// ignored.
	Purge(ctx context.Context, sel DeadLetterSelection) (int, error)
	// Close stops background work and wakes every waiter with ErrClosed.
	// Safe to call twice.
	Close() error
}

// LeaseBatchOptions bound a LeaseBatch.
type LeaseBatchOptions struct {
	// Wait > 0 long-polls for the first item.
	Wait time.Duration
	// MaxItems is the most leases to return; <= 0 means 1.
	MaxItems int
	// MaxBytes, when positive, bounds the approximate JSON size of the
	// leases (at least one is always returned when any is ready).
	MaxBytes int
}

// FullMode says what Enqueue does at capacity.
type FullMode int

const (
	// FullWait makes Enqueue wait for room, bounded by its context.
	FullWait FullMode = iota
	// FullReject makes Enqueue return ErrQueueFull at once.
	FullReject
)

// Defaults of QueueConfig (those of the TaskQueue OmniRelay uses).
const (
	DefaultCapacity            = 512
	DefaultLeaseDuration       = 30 * time.Second
	DefaultHeartbeatInterval   = 5 * time.Second
	DefaultSweepInterval       = time.Second
	DefaultMaxDeliveryAttempts = 5
	DefaultDedupeWindow        = 10 * time.Minute
	DefaultMaxDedupeEntries    = 1_000_000
	DefaultMaxReleases         = 10
	DefaultDelayedCapacity     = 100_000
	DefaultMaxDeadLetters      = 100_000
	// MaxDuration bounds every duration in QueueConfig, so that times
	// computed from them (now + lease, backoff doubling) cannot overflow.
	MaxDuration = 10 * 365 * 24 * time.Hour
)

// QueueConfig configures an Engine. The zero value of every field means its
// documented default; negative values are an error.
type QueueConfig struct {
	// Capacity bounds the ready and leased items together: an enqueue
	// beyond it waits for a lease to end (or a drain), or is refused, by
	// FullMode. Delayed items (a NotBefore still ahead, a requeue delay or
	// a delayed release) are not counted: they have DelayedCapacity.
	// Defaults to 512; -1 means unbounded.
	Capacity int
	// DelayedCapacity bounds the delayed items, so that work scheduled for
	// later neither fills Capacity nor grows without bound: an enqueue with
	// a NotBefore ahead beyond it waits or is refused, by FullMode. Items
	// delayed by a requeue delay or a release are counted but never
	// refused. Defaults to 100,000; -1 means unbounded.
	DelayedCapacity int
	// FullMode: wait (the default) or reject at capacity.
	FullMode FullMode
	// LeaseDuration is how long a lease lives without a heartbeat. Defaults to 30s.
	LeaseDuration time.Duration
	// HeartbeatInterval is advertised to workers with each lease. Defaults to
	// 5s, or LeaseDuration/3 when that is shorter; it must be shorter than
	// LeaseDuration.
	HeartbeatInterval time.Duration
	// SweepInterval is how often expired leases are requeued. Defaults to 1s.
	SweepInterval time.Duration
	// RequeueDelay is how long a failed item waits before it can be leased
	// again. Defaults to 0.
	RequeueDelay time.Duration
	// MaxRequeueDelay, when set, turns RequeueDelay into exponential backoff:
	// RequeueDelay * 2^(attempt-2), capped at MaxRequeueDelay.
	MaxRequeueDelay time.Duration
	// MaxDeliveryAttempts: an item that failed or expired on this attempt is
	// dead-lettered. Defaults to 5.
	MaxDeliveryAttempts int
	// MaxReleases is how many releases in a row of one item are free: the
	// next one counts as a failed attempt (requeue delay and dead-lettering
	// apply as to any failure), so a handler that keeps declining an item
	// cannot loop on it forever. The count restarts whenever the item's
	// attempt changes. Defaults to DefaultMaxReleases (10); -1 means every
	// release is free.
	MaxReleases int
	// DedupeWindow is how long a RequestID is remembered. Defaults to 10 min;
	// -1 disables dedupe.
	DedupeWindow time.Duration
	// MaxActivePerPartition bounds the live leases of one partition key
	// (Item.PartitionKey). With 1 every partition is processed strictly in
	// order, one item at a time, like the message groups of an SQS FIFO
	// queue: its next item is leasable only once the previous one is
	// settled (completed or dead-lettered); a fail with requeue, an expiry
	// or a release puts the item back at the head of its partition, and a
	// delayed item at the head (a requeue delay, a delayed release, or a
	// NotBefore ahead of everything after it) holds the partition until its
	// time. With N > 1 at most N items of a partition are leased at once,
	// in no strict order. 0 (the default) means no limit.
	MaxActivePerPartition int
	// Fairness chooses among the partitions with a leasable item:
	// FairnessFIFO (the default) leases the oldest ready item of the
	// queue; FairnessPartitions goes round-robin over the partitions,
	// oldest first within each, so that one partition's backlog never
	// starves another's.
	Fairness Fairness
	// DeadLetterRetention, when positive, is how long a dead letter is
	// kept: older ones are purged by the sweeper (each with a
	// DeadLetterPurged event). Defaults to 0: kept until redriven or purged.
	DeadLetterRetention time.Duration
	// MaxDeadLetters bounds the dead letters kept: past it the oldest is
	// purged (each with a DeadLetterPurged event). Defaults to 100,000; -1
	// means no bound.
	MaxDeadLetters int
	// MaxDedupeEntries bounds how many RequestIDs are remembered, so that
	// producers sending unique request ids faster than the window forgets
	// them cannot grow memory without bound (each costs about 150 bytes
	// plus the id). Past it the oldest is forgotten before its window ends:
	// a retry of that request after so long is then enqueued again.
	// Defaults to 1,000,000; -1 means no bound.
	MaxDedupeEntries int
	// Clock defaults to SystemClock.
	Clock Clock
	// Journal receives every change in order; nil records nothing.
	Journal Journal
	// InitialState rebuilds the queue (from a durable Journal's LoadState).
	InitialState *QueueState
}
