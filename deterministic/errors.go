package deterministic

import (
	"context"
	"errors"
	"fmt"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// CodeVersionConflict is the stable error code of [ErrVersionConflict].
const CodeVersionConflict = "error.resourcelease.version_conflict"

// ErrVersionConflict is returned by [VersionGate.Decide] when the change
// already has a different version decided. Its status is already-exists (HTTP
// 409 Conflict): a decision exists and retrying the same call cannot succeed.
// The returned errors carry both versions in their message and metadata and
// match this sentinel with errors.Is.
var ErrVersionConflict = &resourcelease.Error{
	Status:  resourcelease.StatusAlreadyExists,
	Code:    CodeVersionConflict,
	Message: "a different version is already decided",
}

// invalidArgument returns an invalid-argument *resourcelease.Error.
func invalidArgument(format string, args ...any) error {
	return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
		"deterministic: "+format, args...)
}

// storageError turns a failed store operation into an *resourcelease.Error.
// A cancelled or expired ctx is reported as such (cancelled or
// deadline-exceeded); an *resourcelease.Error from the store is kept as is;
// anything else becomes unavailable with code storage_unavailable, naming op.
func storageError(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return resourcelease.AsError(cerr)
	}
	var e *resourcelease.Error
	if errors.As(err, &e) {
		return e
	}
	return &resourcelease.Error{
		Status:  resourcelease.StatusUnavailable,
		Code:    resourcelease.CodeStorageUnavailable,
		Message: fmt.Sprintf("deterministic: %s: %v", op, err),
		Err:     err,
	}
}

// checkKey rejects the empty key, which every store refuses.
func checkKey(key string) error {
	if key == "" {
		return invalidArgument("key is required")
	}
	return nil
}

// ctxErr returns ctx's error as an *resourcelease.Error, or nil.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return resourcelease.AsError(err)
	}
	return nil
}
