package replication

import (
	"fmt"
	"strconv"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Metadata keys set on the errors this package returns, so callers (and the
// wire) can tell which stage failed and at which event without parsing the
// message.
const (
	// MetaStage names the failing stage: "sink:<name>" for a sink, or a
	// storage stage such as "commit".
	MetaStage = "stage"
	// MetaSequence is the sequence number of the event that failed.
	MetaSequence = "sequence"
	// MetaPath is the database path of a storage error.
	MetaPath = "path"
)

// errClosed is returned (through a failed Ack) by Record after Close, and by
// AddSink after Close. errors.Is(err, resourcelease.ErrClosed) holds.
var errClosed = &resourcelease.Error{
	Status:  resourcelease.StatusUnavailable,
	Code:    resourcelease.CodeClosed,
	Message: "replication: replicator is closed",
}

// sinkError is the error a synchronous sink failure puts on the Acks of the
// event it failed on and of every later event of the batch.
func sinkError(name string, seq int64, cause error) *resourcelease.Error {
	return &resourcelease.Error{
		Status:  resourcelease.StatusUnavailable,
		Code:    resourcelease.CodeReplicationFailed,
		Message: fmt.Sprintf("replication: sink %q failed at sequence %d: %v", name, seq, cause),
		Metadata: map[string]string{
			MetaStage:    "sink:" + name,
			MetaSequence: strconv.FormatInt(seq, 10),
		},
		Err: cause,
	}
}

// stageApply is the stage of a change the store cannot turn into rows: a
// bug, not a storage fault, so retrying it cannot help.
const stageApply = "apply change"

// storageError is the error of a failed database operation: unavailable,
// naming the path and the stage, with the driver's error as the cause.
func storageError(path, stage string, cause error) *resourcelease.Error {
	return &resourcelease.Error{
		Status:   resourcelease.StatusUnavailable,
		Code:     resourcelease.CodeStorageUnavailable,
		Message:  fmt.Sprintf("replication: sqlite %s: %s: %v", path, stage, cause),
		Metadata: map[string]string{MetaStage: stage, MetaPath: path},
		Err:      cause,
	}
}

// invalidArg is the error of a bad option or argument.
func invalidArg(format string, args ...any) *resourcelease.Error {
	return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
		"replication: "+format, args...)
}

// failedAck is an Ack that has already failed.
type failedAck struct{ err error }

func (a failedAck) Wait() error { return a.err }
