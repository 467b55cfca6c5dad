package transport

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// BearerToken returns an authorization hook (for HandlerConfig.Authorize or
// AuthorizeAdmin, or control.HandlerConfig.Authorize) that requires the
// header "Authorization: Bearer <token>" with one of tokens. A request
// without a bearer token gets unauthenticated (code CodeUnauthenticated); one
// with another token gets permission-denied (code CodePermissionDenied).
// Tokens are compared in constant time. Empty tokens match no request, so a
// missing secret locks the handler rather than opening it.
//
// With an admin token apart from the workers' one, the admin token must pass
// Authorize too:
//
//	transport.HandlerConfig{
//		Authorize:      transport.BearerToken(workerToken, adminToken),
//		AuthorizeAdmin: transport.BearerToken(adminToken),
//	}
func BearerToken(tokens ...string) func(*http.Request) error {
	var want [][]byte
	for _, t := range tokens {
		if t != "" {
			want = append(want, []byte(t))
		}
	}
	return func(r *http.Request) error {
		auth := r.Header.Get("Authorization")
		scheme, got, ok := strings.Cut(auth, " ")
		if auth == "" || !ok || !strings.EqualFold(scheme, "Bearer") {
			return resourcelease.Errorf(resourcelease.StatusUnauthenticated, CodeUnauthenticated,
				"a bearer token is required (Authorization: Bearer <token>)")
		}
		g := []byte(strings.TrimSpace(got))
		match := 0
		for _, w := range want { // every token, so the time does not tell which matched
			match |= subtle.ConstantTimeCompare(g, w)
		}
		if match != 1 {
			return resourcelease.Errorf(resourcelease.StatusPermissionDenied, CodePermissionDenied,
				"the bearer token is not valid")
		}
		return nil
	}
}

// AllowAll is an authorization hook that lets every request through: set
// HandlerConfig.AuthorizeAdmin to it to serve the admin procedures to anyone
// who can reach the handler (a loopback-only listener, tests).
func AllowAll(*http.Request) error { return nil }

// OnlyProcedures applies mw only to requests whose Rpc-Procedure header is one
// of procedures (full names, e.g. Procedure("resourcelease", VerbEnqueue));
// other requests bypass it. A nil mw gives a nil middleware, which NewHandler
// refuses. Use it in HandlerConfig.Middleware to throttle
// enqueue alone, as the backpressure rate limiter must: lease, heartbeat,
// complete and fail drain the queue and are never throttled.
func OnlyProcedures(mw func(http.Handler) http.Handler, procedures ...string) func(http.Handler) http.Handler {
	if mw == nil {
		return nil
	}
	set := make(map[string]bool, len(procedures))
	for _, p := range procedures {
		set[p] = true
	}
	return func(next http.Handler) http.Handler {
		wrapped := mw(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if set[r.Header.Get(HeaderProcedure)] {
				wrapped.ServeHTTP(w, r)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
