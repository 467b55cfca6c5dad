package transport

import (
	"net/http"
	"slices"
)

// Role is what a caller may do through the handler. Each procedure requires
// one (RoleOf), and the handler's Authorizer decides whether a request holds
// it. RoleAdmin holds every role, and every role holds RoleObserver.
type Role string

// The roles.
const (
	// RoleObserver reads without changing anything: stats and deadletters
	// (which shows the dead items' payloads). Every other role holds it, so
	// a producer may watch the queue depth; give a dashboard its own
	// observer token.
	RoleObserver Role = "observer"
	// RoleProducer adds work: enqueue and enqueueBatch.
	RoleProducer Role = "producer"
	// RoleWorker works items off: lease, leaseBatch, heartbeat,
	// heartbeatBatch, complete, completeBatch, fail and release.
	RoleWorker Role = "worker"
	// RoleAdmin takes items out of the queue or rewrites it: drain,
	// restore, redrive, purge, pause and resume. It holds every other role.
	RoleAdmin Role = "admin"
)

// Roles returns every role, the least first.
func Roles() []Role { return []Role{RoleObserver, RoleProducer, RoleWorker, RoleAdmin} }

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool { return slices.Contains(Roles(), r) }

// Allows reports whether a caller holding r may act in role need: r is need,
// r is RoleAdmin, or need is RoleObserver.
func (r Role) Allows(need Role) bool {
	if !r.Valid() || !need.Valid() {
		return false
	}
	return r == need || r == RoleAdmin || need == RoleObserver
}

// verbRoles is the role each verb requires, by name, so that a verb the
// handler does not serve yet (pause and resume are control-plane endpoints
// today) is covered the day it is added.
var verbRoles = map[string]Role{
	VerbEnqueue:      RoleProducer,
	VerbEnqueueBatch: RoleProducer,

	VerbLease:          RoleWorker,
	VerbLeaseBatch:     RoleWorker,
	VerbHeartbeat:      RoleWorker,
	VerbHeartbeatBatch: RoleWorker,
	VerbComplete:       RoleWorker,
	VerbCompleteBatch:  RoleWorker,
	VerbFail:           RoleWorker,
	VerbRelease:        RoleWorker,

	VerbStats:       RoleObserver,
	VerbDeadLetters: RoleObserver,

	VerbDrain:   RoleAdmin,
	VerbRestore: RoleAdmin,
	VerbRedrive: RoleAdmin,
	VerbPurge:   RoleAdmin,
	"pause":     RoleAdmin,
	"resume":    RoleAdmin,
}

// RoleOf returns the role a procedure's verb requires (see the roles'
// docs). A verb it does not know requires RoleAdmin: a procedure added
// without a role is closed, not open.
func RoleOf(verb string) Role {
	if r, ok := verbRoles[verb]; ok {
		return r
	}
	return RoleAdmin
}

// Authorizer decides whether request r may act in role. nil lets the
// request through. A *resourcelease.Error is sent with its own status: use
// unauthenticated (HTTP 401, code CodeUnauthenticated) for missing or
// unknown credentials and permission-denied (HTTP 403, code
// CodePermissionDenied) for credentials that do not hold role. Any other
// error is sent as unauthenticated with a generic message (its text goes to
// the log, not the wire).
//
// HandlerConfig.Authorize and control.HandlerConfig.Authorize take one;
// BearerTokens builds one from tokens per role, AllowAll lets everything
// through, and a function of your own can check client certificates
// (r.TLS.PeerCertificates), a proxy's headers or a JWT.
type Authorizer func(r *http.Request, role Role) error

// AllowAll is an Authorizer that lets every request through, the admin
// procedures included: for a handler only this machine can reach (a
// loopback listener, tests), or one behind a proxy that authorizes.
func AllowAll(*http.Request, Role) error { return nil }
