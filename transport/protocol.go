package transport

import (
	"strings"

	"github.com/leasemesh/leasemesh/internal/wire"
)

// Header names of the wire protocol: yarpc's HTTP transport (its
// transport/http constants.go) plus a few of leasemesh's own. They are given
// in Go's canonical form; HTTP header names are case-insensitive.
const (
	// HeaderProcedure names the procedure, "<namespace>::<verb>". Required.
	HeaderProcedure = wire.HeaderProcedure
	// HeaderService names the service; when present it must match the
	// handler's service, and the handler echoes it in the response.
	HeaderService = wire.HeaderService
	// HeaderCaller names the calling service (yarpc's caller: one name for
	// every instance of a service). It is the lease's peer id of last resort.
	HeaderCaller = wire.HeaderCaller
	// HeaderEncoding is the request encoding: "json" (yarpc's name) or
	// "application/json".
	HeaderEncoding = "Rpc-Encoding"
	// HeaderContextTTLMs is yarpc's time to live of a request, in
	// milliseconds ("Context-TTL-MS"). The Client sends it.
	HeaderContextTTLMs = "Context-Ttl-Ms"
	// HeaderTTLMs is another name of HeaderContextTTLMs, accepted for older
	// clients.
	HeaderTTLMs = "Rpc-Ttl-Ms"
	// HeaderDeadline is the request's absolute deadline in RFC 3339.
	HeaderDeadline = "Rpc-Deadline"
	// HeaderShardKey, HeaderRoutingKey, HeaderRoutingDelegate and
	// HeaderCallerProcedure are yarpc's routing headers: accepted, not used.
	HeaderShardKey        = "Rpc-Shard-Key"
	HeaderRoutingKey      = "Rpc-Routing-Key"
	HeaderRoutingDelegate = "Rpc-Routing-Delegate"
	HeaderCallerProcedure = "Rpc-Caller-Procedure"
	// ApplicationHeaderPrefix starts yarpc's application headers
	// ("Rpc-Header-<name>"); they are accepted, and one is read:
	// HeaderApplicationPeerID.
	ApplicationHeaderPrefix = "Rpc-Header-"
	// HeaderApplicationPeerID is the application header peer-id: the lease's
	// peer id when the request body names none.
	HeaderApplicationPeerID = ApplicationHeaderPrefix + "Peer-Id"
	// HeaderPeerID is the peer id when neither the body nor
	// HeaderApplicationPeerID names one ("x-peer-id").
	HeaderPeerID = "X-Peer-Id"
	// HeaderAcceptsBothResponseError is sent by a client that reads an
	// error's message from Rpc-Error-Message (yarpc clients and the Client
	// do).
	HeaderAcceptsBothResponseError = wire.HeaderAcceptsBothResponseError
	// HeaderStatus is Rpc-Status: "success" (StatusSuccess) on a success,
	// the error's status on an error.
	HeaderStatus = wire.HeaderStatus
	// HeaderErrorCode carries the status of an error response (yarpc's code
	// name, e.g. "not-found").
	HeaderErrorCode = wire.HeaderErrorCode
	// HeaderErrorName carries the stable code of an error response, e.g.
	// "error.resourcelease.unknown_token".
	HeaderErrorName = wire.HeaderErrorName
	// HeaderErrorMessage carries the message of an error response.
	HeaderErrorMessage = wire.HeaderErrorMessage
	// HeaderBothResponseError answers HeaderAcceptsBothResponseError on an
	// error response.
	HeaderBothResponseError = wire.HeaderBothResponseError
)

// StatusSuccess is the Rpc-Status of a success.
const StatusSuccess = wire.StatusSuccess

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

// AdminVerbs returns the verbs of the admin procedures the handler serves,
// which take items out of the queue or rewrite it: RoleOf says they need
// RoleAdmin.
func AdminVerbs() []string {
	return []string{VerbDrain, VerbRestore, VerbRedrive, VerbPurge}
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
	// CodePeerIDTooLong: Rpc-Caller, Rpc-Header-Peer-Id, x-peer-id or a
	// lease's peerId is longer than MaxPeerIDBytes.
	CodePeerIDTooLong = "resourcelease.transport.peer_id_too_long"
	// CodeMethodNotAllowed: the request was not a POST.
	CodeMethodNotAllowed = wire.CodeMethodNotAllowed
	// CodeUnauthenticated: the request carries no (valid) credentials.
	CodeUnauthenticated = wire.CodeUnauthenticated
	// CodePermissionDenied: the credentials do not allow the request.
	CodePermissionDenied = wire.CodePermissionDenied
	// CodeAdminNotConfigured: an admin procedure was called on a handler
	// without HandlerConfig.Authorize (status permission-denied).
	CodeAdminNotConfigured = "error.resourcelease.admin_not_configured"
	// CodeServiceMismatch: the response names another service than the
	// Client's (Rpc-Service), as a yarpc client checks (status internal).
	CodeServiceMismatch = "error.resourcelease.service_mismatch"
	// CodeTransportUnavailable: the client could not reach the server (the
	// cause is kept in the error's Err).
	CodeTransportUnavailable = wire.CodeTransportUnavailable
	// CodeResponseTooLarge: a response body exceeded the client's limit.
	CodeResponseTooLarge = wire.CodeResponseTooLarge
	// CodeMalformedResponse: a response body could not be decoded.
	CodeMalformedResponse = wire.CodeMalformedResponse
)
