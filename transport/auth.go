package transport

import (
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// BearerToken returns an Authorize function (for HandlerConfig.Authorize)
// that requires the header "Authorization: Bearer <token>". A request without
// a bearer token gets unauthenticated (code CodeUnauthenticated); one with a
// different token gets permission-denied (code CodePermissionDenied). Tokens
// are compared in constant time. An empty token matches no request, so a
// missing secret locks the handler rather than opening it.
func BearerToken(token string) func(*http.Request) error {
	want := []byte(token)
	return func(r *http.Request) error {
		auth := r.Header.Get("Authorization")
		scheme, got, ok := strings.Cut(auth, " ")
		if auth == "" || !ok || !strings.EqualFold(scheme, "Bearer") {
			return resourcelease.Errorf(resourcelease.StatusUnauthenticated, CodeUnauthenticated,
				"a bearer token is required (Authorization: Bearer <token>)")
		}
		if len(want) == 0 || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), want) != 1 {
			return resourcelease.Errorf(resourcelease.StatusPermissionDenied, CodePermissionDenied,
				"the bearer token is not valid")
		}
		return nil
	}
}

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
