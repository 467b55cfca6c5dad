package resourcelease

// This file carries the parts of the store-neutral queue contract that the
// Postgres queue and the queuetest suite are written against and that main
// does not have yet (they arrive with the branch that changes Queue). It is
// a merge shim: when that branch lands, delete this file and, where they
// are used (package postgres, resourcelease/queuetest), rename StoreQueue
// to Queue, HeartbeatReply to HeartbeatResponse, HeartbeatBatchResult to
// HeartbeatResult and EnqueueBatchResult to EnqueueResult (which gains the
// Err field there; the one literal, in postgres.Queue.EnqueueBatch, then
// sets the fields directly).

import (
	"context"
	"time"
)

// DefaultMaxReleases is how many releases in a row of one item are free
// before the next counts as a failed attempt.
const DefaultMaxReleases = 10

const (
	// CodeSelectionRequired: a redrive or purge named neither sequence ids
	// nor all (or both).
	CodeSelectionRequired = "resourcelease.deadletters.selection_required"
	// CodeReleaseLimit: the lastError of an item whose release counted as a
	// failed attempt, because it was released MaxReleases times in a row.
	CodeReleaseLimit = "error.resourcelease.release_limit"
)

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

// HeartbeatReply is what a queue's Heartbeat returns: the new expiry (for
// display) and the time left, counted from when the heartbeat was received.
type HeartbeatReply struct {
	LeaseExpiresAt time.Time
	TTL            time.Duration
}

// HeartbeatBatchResult is one token's outcome in HeartbeatBatch: Err is
// its refusal (ErrUnknownToken).
type HeartbeatBatchResult struct {
	HeartbeatReply
	Err error
}

// EnqueueBatchResult is one item's outcome in EnqueueBatch: Err is its
// refusal (invalid, or the queue at capacity).
type EnqueueBatchResult struct {
	EnqueueResult
	Err error
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

// StoreQueue is the store-neutral contract of a lease queue: every method
// takes a context and returns an error, since a store can always fail.
type StoreQueue interface {
	Enqueue(ctx context.Context, item Item) (EnqueueResult, error)
	Lease(ctx context.Context, peerID string, wait time.Duration) (*Lease, error)
	Heartbeat(ctx context.Context, token OwnershipToken) (HeartbeatReply, error)
	Complete(ctx context.Context, token OwnershipToken) error
	Fail(ctx context.Context, token OwnershipToken, opts FailOptions) error
	Release(ctx context.Context, token OwnershipToken, opts ReleaseOptions) error
	// EnqueueBatch, LeaseBatch, HeartbeatBatch and CompleteBatch each commit
	// once; per-item refusals are in the results, the error is the batch's.
	EnqueueBatch(ctx context.Context, items []Item) ([]EnqueueBatchResult, error)
	LeaseBatch(ctx context.Context, peerID string, opts LeaseBatchOptions) ([]*Lease, error)
	HeartbeatBatch(ctx context.Context, tokens []OwnershipToken) ([]HeartbeatBatchResult, error)
	CompleteBatch(ctx context.Context, tokens []OwnershipToken) ([]error, error)
	DrainN(ctx context.Context, maxItems, maxBytes int) (items []PendingItem, more bool, err error)
	Restore(ctx context.Context, items []PendingItem) (int, error)
	Stats(ctx context.Context) (Stats, error)
	DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error)
	Redrive(ctx context.Context, sel DeadLetterSelection) (int, error)
	Purge(ctx context.Context, sel DeadLetterSelection) (int, error)
	Close() error
}
