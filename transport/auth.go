package transport

import (
	"crypto/subtle"
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// BearerTokens returns an Authorizer that requires the header
// "Authorization: Bearer <token>" with a token that holds the role asked
// for: tokens lists each role's tokens (a token listed under several roles
// holds them all; RoleAdmin's hold every role; every token holds
// RoleObserver). A request without a bearer token, or with one that is
// not listed, gets unauthenticated (HTTP 401, code CodeUnauthenticated); a
// listed token that does not hold the role gets permission-denied (HTTP 403,
// code CodePermissionDenied).
//
// Tokens are compared in constant time, all of them each time, so the time
// taken does not tell which one matched. Empty tokens match no request, so
// a missing secret locks the handler rather than opening it; so do tokens
// listed under a key that is not a Role (a typo fails closed, and the
// refusal names it).
//
//	transport.HandlerConfig{Authorize: transport.BearerTokens(map[transport.Role][]string{
//		transport.RoleProducer: {producerToken},
//		transport.RoleWorker:   {workerToken},
//		transport.RoleAdmin:    {adminToken},
//	})}
func BearerTokens(tokens map[Role][]string) Authorizer {
	type entry struct {
		token []byte
		roles []Role
	}
	var want []entry
	index := map[string]int{}
	for _, role := range slices.Sorted(maps.Keys(tokens)) {
		for _, t := range tokens[role] {
			if t == "" {
				continue
			}
			i, ok := index[t]
			if !ok {
				i = len(want)
				index[t] = i
				want = append(want, entry{token: []byte(t)})
			}
			want[i].roles = append(want[i].roles, role)
		}
	}
	return func(r *http.Request, need Role) error {
		auth := r.Header.Get("Authorization")
		scheme, got, ok := strings.Cut(auth, " ")
		if auth == "" || !ok || !strings.EqualFold(scheme, "Bearer") {
			return resourcelease.Errorf(resourcelease.StatusUnauthenticated, CodeUnauthenticated,
				"a bearer token is required (Authorization: Bearer <token>)")
		}
		g := []byte(strings.TrimSpace(got))
		found := -1
		for i, w := range want { // every token, so the time does not tell which matched
			if subtle.ConstantTimeCompare(g, w.token) == 1 {
				found = i
			}
		}
		if found < 0 {
			return resourcelease.Errorf(resourcelease.StatusUnauthenticated, CodeUnauthenticated,
				"the bearer token is not valid")
		}
		held := want[found].roles
		for _, role := range held {
			if role.Allows(need) {
				return nil
			}
		}
		for _, role := range held {
			if !role.Valid() {
				return resourcelease.Errorf(resourcelease.StatusPermissionDenied, CodePermissionDenied,
					"the bearer token is configured for %q, which is not a role (want observer, producer, worker or admin)",
					wire.HeaderSafe(string(role), 64))
			}
		}
		return resourcelease.Errorf(resourcelease.StatusPermissionDenied, CodePermissionDenied,
			"the bearer token holds the %s role, not %s", joinRoles(held), need)
	}
}

func joinRoles(roles []Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, " and ")
}

// BearerToken returns an Authorizer for one shared secret: each of tokens
// holds every role, RoleAdmin included (it is BearerTokens with RoleAdmin:
// tokens). Give producers, workers and operators tokens of their own with
// BearerTokens instead.
func BearerToken(tokens ...string) Authorizer {
	return BearerTokens(map[Role][]string{RoleAdmin: tokens})
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
