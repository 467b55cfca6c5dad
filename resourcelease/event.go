package resourcelease

import (
	"context"
	"strconv"
	"time"
)

// EventType names a replication event.
type EventType string

// The replication event types.
const (
	EventEnqueue         EventType = "Enqueue"
	EventLeaseGranted    EventType = "LeaseGranted"
	EventHeartbeat       EventType = "Heartbeat"
	EventCompleted       EventType = "Completed"
	EventFailed          EventType = "Failed"
	EventLeaseExpired    EventType = "LeaseExpired"
	EventDeadLettered    EventType = "DeadLettered"
	EventLeaseReleased   EventType = "LeaseReleased"
	EventDrainSnapshot   EventType = "DrainSnapshot"
	EventRestoreSnapshot EventType = "RestoreSnapshot"
	EventRedriven        EventType = "Redriven"
	EventPurged          EventType = "Purged"
	// EventDeadLetterPurged: the queue deleted one dead letter by itself
	// (retention or MaxDeadLetters; metadata deadletter.purge.reason).
	EventDeadLetterPurged EventType = "DeadLetterPurged"
)

// Metadata keys set on events.
const (
	MetaQueuePending    = "queue.pending"
	MetaQueueActive     = "queue.active"
	MetaFailureRequeued = "failure.requeued"
	MetaDrainCount      = "drain.count"
	MetaRestoreCount    = "restore.count"
	MetaRedriveCount    = "redrive.count"
	MetaPurgeCount      = "purge.count"
	MetaAttempt         = "attempt"
	MetaSequenceID      = "sequenceId"
	// MetaPurgeReason is why a DeadLetterPurged event's dead letter was
	// purged: PurgeReasonRetention or PurgeReasonMaxDeadLetters.
	MetaPurgeReason = "deadletter.purge.reason"
)

// Event is one entry of the ordered replication log. SequenceNumber is
// assigned by the Replicator: strictly increasing and gap-free.
type Event struct {
	SequenceNumber int64             `json:"sequenceNumber"`
	EventType      EventType         `json:"eventType"`
	Timestamp      time.Time         `json:"timestamp"`
	Ownership      *OwnershipToken   `json:"ownership"`
	PeerID         string            `json:"peerId,omitempty"`
	Payload        *Item             `json:"payload,omitempty"`
	Error          *ErrorInfo        `json:"error,omitempty"`
	Metadata       map[string]string `json:"metadata"`
}

// NewEvent builds the replication event of a change, without a sequence number.
// Metadata always carries queue.pending and queue.active; Failed events carry
// failure.requeued; snapshots carry their counts.
func NewEvent(c *Change) Event {
	e := Event{
		Timestamp: c.At.UTC(),
		PeerID:    c.PeerID,
		Error:     c.Error,
		Metadata:  make(map[string]string, 4+len(c.Metadata)),
	}
	for k, v := range c.Metadata {
		e.Metadata[k] = v
	}
	e.Metadata[MetaQueuePending] = strconv.Itoa(c.Pending)
	e.Metadata[MetaQueueActive] = strconv.Itoa(c.Active)
	if !c.Token.IsZero() {
		t := c.Token
		e.Ownership = &t
	}
	if c.Item != nil {
		p := c.Item.Payload
		e.Payload = &p
		e.Metadata[MetaSequenceID] = strconv.FormatInt(c.Item.SequenceID, 10)
		e.Metadata[MetaAttempt] = strconv.Itoa(c.Item.Attempt)
	}
	switch c.Kind {
	case ChangeEnqueued:
		e.EventType = EventEnqueue
	case ChangeLeased:
		e.EventType = EventLeaseGranted
	case ChangeHeartbeat:
		e.EventType = EventHeartbeat
	case ChangeCompleted:
		e.EventType = EventCompleted
	case ChangeRequeued:
		e.EventType = EventFailed
		e.Metadata[MetaFailureRequeued] = "true"
	case ChangeFailed:
		e.EventType = EventFailed
		e.Metadata[MetaFailureRequeued] = "false"
	case ChangeExpired:
		e.EventType = EventLeaseExpired
	case ChangeDeadLettered:
		e.EventType = EventDeadLettered
		if !c.Token.IsZero() {
			e.Metadata[MetaFailureRequeued] = "false"
		}
	case ChangeReleased:
		e.EventType = EventLeaseReleased
	case ChangeDrained:
		e.EventType = EventDrainSnapshot
		e.Metadata[MetaDrainCount] = strconv.Itoa(len(c.Items))
	case ChangeRestored:
		e.EventType = EventRestoreSnapshot
		e.Metadata[MetaRestoreCount] = strconv.Itoa(len(c.Items))
	case ChangeRedriven:
		e.EventType = EventRedriven
		e.Metadata[MetaRedriveCount] = strconv.Itoa(len(c.Items))
	case ChangePurged:
		e.EventType = EventPurged
		e.Metadata[MetaPurgeCount] = strconv.Itoa(len(c.SequenceIDs))
	case ChangeDeadLetterPurged:
		e.EventType = EventDeadLetterPurged
	}
	return e
}

// EventSink consumes replication events in sequence order.
type EventSink interface {
	// ApplyEvent applies one event. An error makes the replicator redeliver
	// the same event later; sinks that must apply once use a checkpoint.
	ApplyEvent(ctx context.Context, e Event) error
}

// BatchEventSink is an EventSink that can apply many events at once (the
// deterministic coordinator writes a whole commit batch in one transaction).
// Replicators deliver a batch through ApplyEvents when a sink implements it;
// on error the whole batch is redelivered, so ApplyEvents must be idempotent
// per event, as ApplyEvent is.
type BatchEventSink interface {
	EventSink
	// ApplyEvents applies events, which are in sequence order.
	ApplyEvents(ctx context.Context, events []Event) error
}

// ResumableSink is an EventSink that remembers how far it got, so a
// replicator can redeliver what it missed (a failed apply, or a crash between
// the log's commit and the apply) after a restart. LastApplied returns the
// sequence number up to which the sink has applied every event (0 if none);
// on AddSink the replicator starts the sink there instead of at the head of
// the log and redelivers from the next event on. Redelivered events may have
// been applied already, so applying must be idempotent per event.
type ResumableSink interface {
	EventSink
	// LastApplied returns the highest sequence number n such that every
	// event up to n has been applied.
	LastApplied(ctx context.Context) (int64, error)
}

// SinkOptions configure how a Replicator delivers to a sink.
type SinkOptions struct {
	// Synchronous sinks run in the commit path: an Ack completes only after
	// every synchronous sink applied the event, and a sink error is returned
	// to the caller (as an *Error naming the sink and the sequence). Others
	// are fed from a goroutine and never slow the queue.
	Synchronous bool
}

// Replicator is the ordered, durable event log. It is the queue's Journal: it
// turns every change into an Event (NewEvent), assigns it the next sequence
// number, persists it (a durable Replicator persists the queue state change in
// the same transaction) and delivers it to its sinks in order.
type Replicator interface {
	Journal
	// ReadEvents returns up to limit events with SequenceNumber > after, oldest
	// first, so another process can tail the log.
	ReadEvents(ctx context.Context, after int64, limit int) ([]Event, error)
	// LastSequence is the sequence number of the newest event (0 if none).
	LastSequence() int64
	// AddSink registers a sink under a name used in errors and metrics. Add
	// sinks before the queue starts. A plain sink starts at the head of the
	// log; a ResumableSink is first redelivered every event after its
	// LastApplied (an error if the log no longer holds them).
	AddSink(name string, sink EventSink, opts SinkOptions) error
	// Close flushes and stops the replicator. Safe to call twice.
	Close() error
}
