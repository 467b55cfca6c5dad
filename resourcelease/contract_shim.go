package resourcelease

// This file carries the parts of the store-neutral queue contract that the
// Postgres queue and the queuetest suite are written against and that main
// does not have yet (they arrive with the branch that changes Queue). It is
// a merge shim: when that branch lands, delete this file and rename
// StoreQueue to Queue and HeartbeatResult to HeartbeatResponse where they
// are used (package postgres, resourcelease/queuetest).

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

// HeartbeatResult is what a queue's Heartbeat returns: the new expiry (for
// display) and the time left, counted from when the heartbeat was received.
type HeartbeatResult struct {
	LeaseExpiresAt time.Time
	TTL            time.Duration
}

// StoreQueue is the store-neutral contract of a lease queue: every method
// takes a context and returns an error, since a store can always fail.
type StoreQueue interface {
	Enqueue(ctx context.Context, item Item) (EnqueueResult, error)
	Lease(ctx context.Context, peerID string, wait time.Duration) (*Lease, error)
	Heartbeat(ctx context.Context, token OwnershipToken) (HeartbeatResult, error)
	Complete(ctx context.Context, token OwnershipToken) error
	Fail(ctx context.Context, token OwnershipToken, opts FailOptions) error
	Release(ctx context.Context, token OwnershipToken, opts ReleaseOptions) error
	DrainN(ctx context.Context, maxItems, maxBytes int) (items []PendingItem, more bool, err error)
	Restore(ctx context.Context, items []PendingItem) (int, error)
	Stats(ctx context.Context) (Stats, error)
	DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error)
	Redrive(ctx context.Context, sel DeadLetterSelection) (int, error)
	Purge(ctx context.Context, sel DeadLetterSelection) (int, error)
	Close() error
}
