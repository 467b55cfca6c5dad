package queuetest

import (
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Queue is the store-neutral queue contract the suite holds every store to.
type Queue = resourcelease.Queue

// requeue is a fail that requeues.
func requeue(reason, code string) resourcelease.FailOptions {
	return resourcelease.FailOptions{Reason: reason, ErrorCode: code}
}

// deadLetter is a fail that dead-letters.
func deadLetter(reason, code string) resourcelease.FailOptions {
	return resourcelease.FailOptions{Reason: reason, ErrorCode: code, DeadLetter: true}
}

// heartbeatInterval is a lease's advertised heartbeat interval.
func heartbeatInterval(l *resourcelease.Lease) time.Duration { return l.HeartbeatInterval }

// Engine presents a resourcelease.Engine as a Queue: the engine is one.
func Engine(e *resourcelease.Engine) Queue { return e }
