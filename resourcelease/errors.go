package resourcelease

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// Status is a wire status of the yarpc-style protocol: one of yarpc's error
// code names (yarpcerrors.Code's text), sent as Rpc-Error-Code. Each maps to
// one HTTP status code, as yarpc's HTTP transport maps them.
type Status string

// The statuses of the protocol. leasemesh itself answers with the first twelve;
// StatusUnknown, StatusAborted, StatusOutOfRange and StatusDataLoss complete
// yarpc's set, so that an error from a yarpc server decodes to its own code.
const (
	StatusInvalidArgument    Status = "invalid-argument"
	StatusNotFound           Status = "not-found"
	StatusResourceExhausted  Status = "resource-exhausted"
	StatusDeadlineExceeded   Status = "deadline-exceeded"
	StatusCancelled          Status = "cancelled"
	StatusUnavailable        Status = "unavailable"
	StatusInternal           Status = "internal"
	StatusAlreadyExists      Status = "already-exists"
	StatusFailedPrecondition Status = "failed-precondition"
	StatusPermissionDenied   Status = "permission-denied"
	StatusUnauthenticated    Status = "unauthenticated"
	StatusUnimplemented      Status = "unimplemented"
	StatusUnknown            Status = "unknown"
	StatusAborted            Status = "aborted"
	StatusOutOfRange         Status = "out-of-range"
	StatusDataLoss           Status = "data-loss"
)

// statusHTTP is yarpc's table (transport/http codes.go): several statuses
// share an HTTP status (failed-precondition is 400 like invalid-argument).
var statusHTTP = map[Status]int{
	StatusInvalidArgument:    http.StatusBadRequest,
	StatusNotFound:           http.StatusNotFound,
	StatusResourceExhausted:  http.StatusTooManyRequests,
	StatusDeadlineExceeded:   http.StatusGatewayTimeout,
	StatusCancelled:          499,
	StatusUnavailable:        http.StatusServiceUnavailable,
	StatusInternal:           http.StatusInternalServerError,
	StatusAlreadyExists:      http.StatusConflict,
	StatusFailedPrecondition: http.StatusBadRequest,
	StatusPermissionDenied:   http.StatusForbidden,
	StatusUnauthenticated:    http.StatusUnauthorized,
	StatusUnimplemented:      http.StatusNotImplemented,
	StatusUnknown:            http.StatusInternalServerError,
	StatusAborted:            http.StatusConflict,
	StatusOutOfRange:         http.StatusBadRequest,
	StatusDataLoss:           http.StatusInternalServerError,
}

// httpStatus is the status a bare HTTP status code stands for: yarpc's first
// choice for each code its table knows.
var httpStatus = map[int]Status{
	http.StatusBadRequest:          StatusInvalidArgument,
	http.StatusUnauthorized:        StatusUnauthenticated,
	http.StatusForbidden:           StatusPermissionDenied,
	http.StatusNotFound:            StatusNotFound,
	http.StatusConflict:            StatusAborted,
	http.StatusUnprocessableEntity: StatusInvalidArgument,
	http.StatusTooManyRequests:     StatusResourceExhausted,
	499:                            StatusCancelled,
	http.StatusInternalServerError: StatusUnknown,
	http.StatusNotImplemented:      StatusUnimplemented,
	http.StatusServiceUnavailable:  StatusUnavailable,
	http.StatusGatewayTimeout:      StatusDeadlineExceeded,
}

// HTTPStatus returns the HTTP status code for s; unknown statuses map to 500.
func (s Status) HTTPStatus() int {
	if c, ok := statusHTTP[s]; ok {
		return c
	}
	return http.StatusInternalServerError
}

// Valid reports whether s is one of the protocol's statuses.
func (s Status) Valid() bool {
	_, ok := statusHTTP[s]
	return ok
}

// StatusFromHTTP returns the status a bare HTTP status code stands for, used
// when a response names none (a proxy's answer, say). It follows yarpc: where
// several statuses share a code the first of yarpc's list wins (400:
// invalid-argument, 409: aborted, 500: unknown); any other 3xx or 4xx is
// invalid-argument, anything else unknown.
func StatusFromHTTP(code int) Status {
	if s, ok := httpStatus[code]; ok {
		return s
	}
	if code >= 300 && code < 500 {
		return StatusInvalidArgument
	}
	return StatusUnknown
}

// Stable error codes. They travel on the wire (Rpc-Error-Name, and the body's
// "code") and never change meaning; clients match on them.
const (
	CodeUnknownToken           = "error.resourcelease.unknown_token"
	CodeLeaseExpired           = "error.resourcelease.lease_expired"
	CodePayloadRequired        = "resourcelease.payload.required"
	CodeResourceTypeRequired   = "resourcelease.payload.resource_type_required"
	CodeResourceIDRequired     = "resourcelease.payload.resource_id_required"
	CodePartitionKeyRequired   = "resourcelease.payload.partition_key_required"
	CodeEncodingRequired       = "resourcelease.payload.encoding_required"
	CodePendingItemRequired    = "resourcelease.restore.pending_item_required"
	CodeTokenRequired          = "resourcelease.ownership_token.required"
	CodeInvalidArgument        = "resourcelease.argument.invalid"
	CodeDuplicateSequence      = "resourcelease.restore.duplicate_sequence"
	CodeQueueFull              = "error.resourcelease.queue_full"
	CodeBackpressure           = "error.resourcelease.backpressure"
	CodeRateLimited            = "error.resourcelease.rate_limited"
	CodePeerIneligible         = "error.resourcelease.peer_ineligible"
	CodeClosed                 = "error.resourcelease.closed"
	CodeStorageUnavailable     = "error.resourcelease.storage_unavailable"
	CodeReplicationFailed      = "error.resourcelease.replication_failed"
	CodeDeterministicFailed    = "error.resourcelease.deterministic_failed"
	CodeDeadlineExceeded       = "error.resourcelease.deadline_exceeded"
	CodeCancelled              = "error.resourcelease.cancelled"
	CodeInternal               = "error.resourcelease.internal"
	CodeDeliveryAttemptsExceed = "error.resourcelease.max_delivery_attempts"
	// CodeSelectionRequired: a redrive or purge named neither sequence ids
	// nor all (or both).
	CodeSelectionRequired = "resourcelease.deadletters.selection_required"
	// CodeBatchTooLarge: a batch procedure got more than MaxBatchItems
	// items, or a leaseBatch a maxItems outside 1..MaxBatchItems.
	CodeBatchTooLarge = "resourcelease.batch.too_large"
	// CodeReleaseLimit: the lastError of an item whose release counted as a
	// failed attempt, because it was released MaxReleases times in a row.
	CodeReleaseLimit = "error.resourcelease.release_limit"
	// CodeDelayIgnored: a delayed enqueue (a delay, or a payload notBefore)
	// was answered without the notBefore a server that delays items
	// echoes: the server predates delayed enqueue, and the item was
	// enqueued ready at once. Status unimplemented; the Metadata's
	// "sequenceId" names the item.
	CodeDelayIgnored = "error.resourcelease.delay_ignored"
	// CodePossiblySettled: a complete, fail or release was sent again
	// after an earlier try of it may have reached a dispatcher (its answer
	// was lost), and the retry was answered unknown_token. Most likely the
	// earlier try settled the lease; it may also have expired meanwhile. A
	// client makes this error up; it never travels on the wire. Status
	// not-found, as the answer it replaces.
	CodePossiblySettled = "error.resourcelease.possibly_settled"
	// CodeNotSupported: the Dispatcher's queue does not have the optional
	// operation asked for (listing items, pause, say, on a store that
	// lacks them). Status unimplemented.
	CodeNotSupported = "error.resourcelease.not_supported"
)

// ErrNotSent is matched (errors.Is) by the error of a call that a client
// Dispatcher surely never delivered (no connection could be made, or the
// deadline had passed before sending): nothing was applied. A client marks
// its errors so (transport.ErrNotConnected is this error); a Worker counts a
// settle that failed so, and was then answered unknown_token, as lost work
// rather than as possibly settled.
var ErrNotSent = errors.New("resourcelease: the request reached no dispatcher")

// PossiblySettledError is the error a client returns for a settle whose
// retry was answered unknownToken (an ErrUnknownToken) after an earlier try
// may have been applied (see CodePossiblySettled). It wraps unknownToken,
// so errors.Is(err, ErrUnknownToken) holds too: check ErrPossiblySettled
// first.
func PossiblySettledError(unknownToken error) *Error {
	return &Error{Status: StatusNotFound, Code: CodePossiblySettled,
		Message: "possibly settled: a retry after a lost response found the token unknown (the earlier try most likely settled the lease; it may have expired instead)",
		Err:     unknownToken}
}

// DelayIgnoredError is the error a client returns for a delayed enqueue
// that the server answered without echoing its notBefore (see
// CodeDelayIgnored): item seq was enqueued, but ready now.
func DelayIgnoredError(seq int64) *Error {
	return &Error{Status: StatusUnimplemented, Code: CodeDelayIgnored,
		Message:  fmt.Sprintf("the dispatcher ignored the delay: item %d was enqueued ready now (upgrade the dispatcher to delay items)", seq),
		Metadata: map[string]string{"sequenceId": strconv.FormatInt(seq, 10)}}
}

// MetadataRetryAfterSeconds is the key of an Error's Metadata that says, in
// whole seconds, when the caller may try again; the transport also sends it
// as the Retry-After header.
const MetadataRetryAfterSeconds = "retryAfterSeconds"

// Error is the error type of leasemesh: a wire status, a stable code and a
// message, with optional metadata. It crosses the network intact (the transport
// sends all four and the client rebuilds an *Error), so errors.Is against the
// sentinels below works for local and remote queues alike.
type Error struct {
	Status   Status            `json:"status"`
	Code     string            `json:"code"`
	Message  string            `json:"message"`
	Metadata map[string]string `json:"metadata,omitempty"`
	// Err is the underlying cause, if any. It is not sent on the wire.
	Err error `json:"-"`
}

// Error returns the message, prefixed with the code.
func (e *Error) Error() string {
	if e.Code == "" {
		return e.Message
	}
	if e.Message == "" {
		return e.Code
	}
	return e.Code + ": " + e.Message
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error with the same code (or, when target
// has no code, the same status). Messages are not compared, so a sentinel
// matches the same error decoded from the wire.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	if t.Code != "" {
		return e.Code == t.Code
	}
	return t.Status != "" && e.Status == t.Status
}

// Sentinel errors, for errors.Is. Returned errors carry more specific messages
// but the same code.
var (
	// ErrUnknownToken: the token is not the live lease of any item (completed,
	// failed, expired, drained, superseded, or never issued).
	ErrUnknownToken = &Error{Status: StatusNotFound, Code: CodeUnknownToken, Message: "unknown or expired ownership token"}
	// ErrPossiblySettled: a settle retried after a lost response found its
	// token unknown; the earlier try most likely settled it (see
	// CodePossiblySettled). Not lost work.
	ErrPossiblySettled = &Error{Status: StatusNotFound, Code: CodePossiblySettled, Message: "possibly settled"}
	// ErrQueueFull: capacity reached and the queue refuses instead of waiting.
	ErrQueueFull = &Error{Status: StatusResourceExhausted, Code: CodeQueueFull, Message: "queue is at capacity"}
	// ErrBackpressure: backpressure is active and enqueue is refused.
	ErrBackpressure = &Error{Status: StatusResourceExhausted, Code: CodeBackpressure, Message: "backpressure is active"}
	// ErrRateLimited: the caller exceeded the enqueue rate limit.
	ErrRateLimited = &Error{Status: StatusResourceExhausted, Code: CodeRateLimited, Message: "rate limit exceeded"}
	// ErrClosed: the queue or dispatcher is shut down.
	ErrClosed = &Error{Status: StatusUnavailable, Code: CodeClosed, Message: "queue is closed"}
	// ErrStorageUnavailable: the durable store failed; the queue refuses work
	// rather than acknowledge what it cannot persist.
	ErrStorageUnavailable = &Error{Status: StatusUnavailable, Code: CodeStorageUnavailable, Message: "storage unavailable"}
	// ErrPeerIneligible: the dispatcher refuses the peer leases for a while,
	// because its recent leases expired without being settled. The refusal
	// carries MetadataRetryAfterSeconds.
	ErrPeerIneligible = &Error{Status: StatusFailedPrecondition, Code: CodePeerIneligible, Message: "peer is not eligible for leases"}
	// ErrDuplicateSequence: restore of an item whose sequenceId is already present.
	ErrDuplicateSequence = &Error{Status: StatusAlreadyExists, Code: CodeDuplicateSequence, Message: "sequence id already present"}
	// ErrInvalidArgument matches every invalid-argument error, whatever its code.
	ErrInvalidArgument = &Error{Status: StatusInvalidArgument}
)

// Errorf returns an *Error with the given status and code and a formatted message.
func Errorf(status Status, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError converts any error to an *Error: an *Error in the chain is returned
// as is; context errors become deadline-exceeded or cancelled; anything else is
// internal, with the cause kept in Err (never sent on the wire).
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Status: StatusDeadlineExceeded, Code: CodeDeadlineExceeded, Message: "deadline exceeded", Err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Status: StatusCancelled, Code: CodeCancelled, Message: "request cancelled", Err: err}
	}
	return &Error{Status: StatusInternal, Code: CodeInternal, Message: "internal error", Err: err}
}

// StatusOf returns the status of err (internal for foreign errors, "" for nil).
func StatusOf(err error) Status {
	if err == nil {
		return ""
	}
	return AsError(err).Status
}

// CodeOf returns the code of err ("" for nil).
func CodeOf(err error) string {
	if err == nil {
		return ""
	}
	return AsError(err).Code
}

func ctxError(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return AsError(err)
	}
	return nil
}
