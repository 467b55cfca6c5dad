package transport

import (
	"strings"

	"github.com/leasemesh/leasemesh/internal/wire"
)

// Header names of the wire protocol (DESIGN §9). They are given in Go's
// canonical form; HTTP header names are case-insensitive.
const (
	// HeaderProcedure names the procedure, "<namespace>::<verb>". Required.
	HeaderProcedure = wire.HeaderProcedure
	// HeaderService names the service; when present it must match the
	// handler's service.
	HeaderService = "Rpc-Service"
	// HeaderCaller names the calling service or worker. It is also the
	// lease's peer id when the request carries none.
	HeaderCaller = wire.HeaderCaller
	// HeaderEncoding is the request encoding: "json" or "application/json".
	HeaderEncoding = "Rpc-Encoding"
	// HeaderTTLMs is the request's time to live in milliseconds.
	HeaderTTLMs = "Rpc-Ttl-Ms"
	// HeaderContextTTLMs is the alternative name of HeaderTTLMs
	// ("Context-TTL-MS").
	HeaderContextTTLMs = "Context-Ttl-Ms"
	// HeaderDeadline is the request's absolute deadline in RFC 3339.
	HeaderDeadline = "Rpc-Deadline"
	// HeaderPeerID is the peer id of last resort ("x-peer-id").
	HeaderPeerID = "X-Peer-Id"
	// HeaderStatus carries the status name of an error response.
	HeaderStatus = wire.HeaderStatus
	// HeaderErrorCode carries the stable code of an error response.
	HeaderErrorCode = wire.HeaderErrorCode
	// HeaderErrorMessage carries the message of an error response.
	HeaderErrorMessage = wire.HeaderErrorMessage
)

// DefaultNamespace is the procedure namespace used when none is configured.
const DefaultNamespace = "resourcelease"

// The verbs of the protocol. A procedure is Procedure(namespace, verb).
const (
	VerbEnqueue        = "enqueue"
	VerbEnqueueBatch   = "enqueueBatch"
	VerbLease          = "lease"
	VerbLeaseBatch     = "leaseBatch"
	VerbHeartbeat      = "heartbeat"
	VerbHeartbeatBatch = "heartbeatBatch"
	VerbComplete       = "complete"
	VerbCompleteBatch  = "completeBatch"
	VerbFail           = "fail"
	VerbRelease        = "release"
	VerbDrain          = "drain"
	VerbRestore        = "restore"
	VerbStats          = "stats"
	VerbDeadLetters    = "deadletters"
	VerbRedrive        = "redrive"
	VerbPurge          = "purge"
)

// Verbs returns every verb of the protocol: the first eleven in the order of
// the original protocol, then the ones added since (release and the batch
// procedures).
func Verbs() []string {
	return []string{
		VerbEnqueue, VerbLease, VerbHeartbeat, VerbComplete, VerbFail, VerbDrain,
		VerbRestore, VerbStats, VerbDeadLetters, VerbRedrive, VerbPurge,
		VerbRelease, VerbEnqueueBatch, VerbLeaseBatch, VerbHeartbeatBatch, VerbCompleteBatch,
	}
}

// Procedure returns the full procedure name "<namespace>::<verb>"; an empty
// namespace means DefaultNamespace.
func Procedure(namespace, verb string) string {
	if namespace == "" {
		namespace = DefaultNamespace
	}
	return namespace + "::" + verb
}

// SplitProcedure splits a full procedure name into its namespace and verb. ok
// is false when procedure has no "::" separator or either side is empty.
func SplitProcedure(procedure string) (namespace, verb string, ok bool) {
	i := strings.LastIndex(procedure, "::")
	if i <= 0 || i+2 >= len(procedure) {
		return "", "", false
	}
	return procedure[:i], procedure[i+2:], true
}

// Codes of the errors the transport itself produces, in addition to those of
// package resourcelease. Argument errors use the "resourcelease.transport."
// prefix, run-time failures "error.resourcelease.".
const (
	// CodeProcedureRequired: the Rpc-Procedure header is missing.
	CodeProcedureRequired = "resourcelease.transport.procedure_required"
	// CodeUnknownProcedure: the procedure is not one the handler serves.
	CodeUnknownProcedure = "resourcelease.transport.unknown_procedure"
	// CodeUnknownService: Rpc-Service names another service.
	CodeUnknownService = "resourcelease.transport.unknown_service"
	// CodeUnsupportedEncoding: Rpc-Encoding is neither json nor application/json.
	CodeUnsupportedEncoding = "resourcelease.transport.encoding_unsupported"
	// CodeInvalidDeadline: a TTL or deadline header is malformed, zero,
	// negative or out of range.
	CodeInvalidDeadline = "resourcelease.transport.deadline_invalid"
	// CodeBodyTooLarge: the request body exceeds the handler's limit.
	CodeBodyTooLarge = wire.CodeBodyTooLarge
	// CodePeerIDTooLong: Rpc-Caller, x-peer-id or a lease's peerId is longer
	// than MaxPeerIDBytes.
	CodePeerIDTooLong = "resourcelease.transport.peer_id_too_long"
	// CodeMethodNotAllowed: the request was not a POST.
	CodeMethodNotAllowed = wire.CodeMethodNotAllowed
	// CodeUnauthenticated: the request carries no (valid) credentials.
	CodeUnauthenticated = wire.CodeUnauthenticated
	// CodePermissionDenied: the credentials do not allow the request.
	CodePermissionDenied = wire.CodePermissionDenied
	// CodeTransportUnavailable: the client could not reach the server (the
	// cause is kept in the error's Err).
	CodeTransportUnavailable = wire.CodeTransportUnavailable
	// CodeResponseTooLarge: a response body exceeded the client's limit.
	CodeResponseTooLarge = wire.CodeResponseTooLarge
	// CodeMalformedResponse: a response body could not be decoded.
	CodeMalformedResponse = wire.CodeMalformedResponse
)
