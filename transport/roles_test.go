package transport_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

func TestRoleOf(t *testing.T) {
	t.Parallel()
	want := map[string]transport.Role{
		"enqueue": transport.RoleProducer, "enqueueBatch": transport.RoleProducer,
		"lease": transport.RoleWorker, "leaseBatch": transport.RoleWorker,
		"heartbeat": transport.RoleWorker, "heartbeatBatch": transport.RoleWorker,
		"complete": transport.RoleWorker, "completeBatch": transport.RoleWorker,
		"fail": transport.RoleWorker, "release": transport.RoleWorker,
		"stats": transport.RoleObserver, "deadletters": transport.RoleObserver,
		"drain": transport.RoleAdmin, "restore": transport.RoleAdmin, "redrive": transport.RoleAdmin,
		"purge": transport.RoleAdmin, "pause": transport.RoleAdmin, "resume": transport.RoleAdmin,
		// Unknown verbs are closed, not open.
		"": transport.RoleAdmin, "Enqueue": transport.RoleAdmin, "truncate": transport.RoleAdmin,
	}
	for verb, role := range want {
		require.Equal(t, role, transport.RoleOf(verb), "verb %q", verb)
	}
	for _, verb := range transport.Verbs() {
		_, ok := want[verb]
		require.True(t, ok, "verb %q has no role in this test: add it", verb)
	}
	for _, verb := range transport.AdminVerbs() {
		require.Equal(t, transport.RoleAdmin, transport.RoleOf(verb), verb)
	}
}

func TestRoleAllows(t *testing.T) {
	t.Parallel()
	o, p, w, a := transport.RoleObserver, transport.RoleProducer, transport.RoleWorker, transport.RoleAdmin
	allowed := map[[2]transport.Role]bool{
		{o, o}: true,
		{p, o}: true, {p, p}: true,
		{w, o}: true, {w, w}: true,
		{a, o}: true, {a, p}: true, {a, w}: true, {a, a}: true,
	}
	roles := append(transport.Roles(), "Admin", "")
	for _, held := range roles {
		for _, need := range roles {
			require.Equal(t, allowed[[2]transport.Role{held, need}], held.Allows(need), "%q allows %q", held, need)
		}
	}
	require.True(t, a.Valid())
	require.False(t, transport.Role("Admin").Valid())
}

func TestBearerTokens(t *testing.T) {
	t.Parallel()
	auth := transport.BearerTokens(map[transport.Role][]string{
		transport.RoleProducer: {"p-tok", "pw-tok", ""},
		transport.RoleWorker:   {"w-tok", "pw-tok"},
		transport.RoleObserver: {"o-tok"},
		transport.RoleAdmin:    {"a-tok"},
		"Admin":                {"typo-tok"},
	})
	tests := []struct {
		header string
		need   transport.Role
		want   resourcelease.Status // "" for allowed
		msg    string
	}{
		{"", transport.RoleObserver, resourcelease.StatusUnauthenticated, "required"},
		{"Basic cC10b2s=", transport.RoleProducer, resourcelease.StatusUnauthenticated, "required"},
		{"Bearer", transport.RoleProducer, resourcelease.StatusUnauthenticated, "required"},
		{"Bearer guess", transport.RoleObserver, resourcelease.StatusUnauthenticated, "not valid"},
		{"Bearer p-to", transport.RoleProducer, resourcelease.StatusUnauthenticated, "not valid"},
		{"Bearer ", transport.RoleProducer, resourcelease.StatusUnauthenticated, ""}, // an empty configured token matches nothing
		{"Bearer p-tok", transport.RoleProducer, "", ""},
		{"bearer p-tok", transport.RoleProducer, "", ""},
		{"Bearer  p-tok ", transport.RoleProducer, "", ""},
		{"Bearer p-tok", transport.RoleObserver, "", ""},
		{"Bearer p-tok", transport.RoleWorker, resourcelease.StatusPermissionDenied, "holds the producer role, not worker"},
		{"Bearer p-tok", transport.RoleAdmin, resourcelease.StatusPermissionDenied, "not admin"},
		{"Bearer w-tok", transport.RoleWorker, "", ""},
		{"Bearer w-tok", transport.RoleProducer, resourcelease.StatusPermissionDenied, "holds the worker role"},
		{"Bearer pw-tok", transport.RoleProducer, "", ""},
		{"Bearer pw-tok", transport.RoleWorker, "", ""},
		{"Bearer pw-tok", transport.RoleAdmin, resourcelease.StatusPermissionDenied, "producer and worker"},
		{"Bearer o-tok", transport.RoleObserver, "", ""},
		{"Bearer o-tok", transport.RoleProducer, resourcelease.StatusPermissionDenied, "observer"},
		{"Bearer a-tok", transport.RoleAdmin, "", ""},
		{"Bearer a-tok", transport.RoleProducer, "", ""},
		{"Bearer a-tok", transport.RoleWorker, "", ""},
		{"Bearer a-tok", transport.RoleObserver, "", ""},
		{"Bearer typo-tok", transport.RoleObserver, resourcelease.StatusPermissionDenied, "not a role"},
		{"Bearer a-tok", "bogus", resourcelease.StatusPermissionDenied, ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		err := auth(r, tt.need)
		if tt.want == "" {
			require.NoError(t, err, "%q as %s", tt.header, tt.need)
			continue
		}
		require.Error(t, err, "%q as %s", tt.header, tt.need)
		require.Equal(t, tt.want, resourcelease.StatusOf(err), "%q as %s: %v", tt.header, tt.need, err)
		code := transport.CodeUnauthenticated
		if tt.want == resourcelease.StatusPermissionDenied {
			code = transport.CodePermissionDenied
		}
		require.Equal(t, code, resourcelease.CodeOf(err))
		require.Contains(t, err.Error(), tt.msg)
		require.NotContains(t, err.Error(), "a-tok", "a refusal must not name another token")
	}

	one := transport.BearerToken("s3cret")
	for _, role := range transport.Roles() {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("Authorization", "Bearer s3cret")
		require.NoError(t, one(r, role), "BearerToken's token holds %s", role)
	}
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Authorization", "Bearer x")
	require.Error(t, transport.BearerToken()(r, transport.RoleObserver), "no tokens match nothing")
}

// TestHandlerAuthorizesByRole sends every procedure with every role's token
// through the real handler: each gets past authorization exactly when its
// token holds the procedure's role, and the Authorizer is asked for that role
// only.
func TestHandlerAuthorizesByRole(t *testing.T) {
	t.Parallel()
	tokens := map[transport.Role]string{
		transport.RoleObserver: "o-tok", transport.RoleProducer: "p-tok",
		transport.RoleWorker: "w-tok", transport.RoleAdmin: "a-tok",
	}
	cfg := map[transport.Role][]string{}
	for r, tok := range tokens {
		cfg[r] = []string{tok}
	}
	bearer := transport.BearerTokens(cfg)
	var mu sync.Mutex
	var asked []transport.Role
	h := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{Authorize: func(r *http.Request, role transport.Role) error {
		mu.Lock()
		asked = append(asked, role)
		mu.Unlock()
		return bearer(r, role)
	}})
	for _, verb := range transport.Verbs() {
		need := transport.RoleOf(verb)
		for held, tok := range tokens {
			mu.Lock()
			asked = nil
			mu.Unlock()
			rec := call(h, verb, "", hdr{"Authorization": "Bearer " + tok})
			mu.Lock()
			require.Equal(t, []transport.Role{need}, asked, "%s asks for its role", verb)
			mu.Unlock()
			if held.Allows(need) {
				require.NotContains(t, []int{401, 403}, rec.Code, "%s with the %s token: %s", verb, held, rec.Body)
			} else {
				requireError(t, rec, 403, resourcelease.StatusPermissionDenied, transport.CodePermissionDenied)
			}
		}
		rec := call(h, verb, "")
		requireError(t, rec, 401, resourcelease.StatusUnauthenticated, transport.CodeUnauthenticated)
		require.Equal(t, "Bearer", rec.Header().Get("WWW-Authenticate"))
	}

	// A procedure the handler does not serve: known callers learn it is not
	// found, strangers learn nothing.
	rec := call(h, "nope", "", hdr{"Authorization": "Bearer o-tok"})
	requireError(t, rec, 404, resourcelease.StatusNotFound, transport.CodeUnknownProcedure)
	rec = serve(h, http.MethodPost, hdr{transport.HeaderProcedure: "other::drain", "Authorization": "Bearer p-tok"}, "")
	requireError(t, rec, 404, resourcelease.StatusNotFound, transport.CodeUnknownProcedure)
	rec = call(h, "nope", "")
	requireError(t, rec, 401, resourcelease.StatusUnauthenticated, transport.CodeUnauthenticated)
}

// TestHandlerAuthorizeDefault: without Authorize the admin procedures are
// refused and every other one served; AllowAll opens them.
func TestHandlerAuthorizeDefault(t *testing.T) {
	t.Parallel()
	closed, err := transport.NewHandler(&leasetest.FakeDispatcher{}, transport.HandlerConfig{Logger: quietLogger})
	require.NoError(t, err)
	open, err := transport.NewHandler(&leasetest.FakeDispatcher{}, transport.HandlerConfig{Logger: quietLogger, Authorize: transport.AllowAll})
	require.NoError(t, err)
	for _, verb := range transport.Verbs() {
		rec := call(closed, verb, "")
		if transport.RoleOf(verb) == transport.RoleAdmin {
			we := requireError(t, rec, 403, resourcelease.StatusPermissionDenied, transport.CodeAdminNotConfigured)
			require.Contains(t, we.Message, "HandlerConfig.Authorize")
		} else {
			require.NotContains(t, []int{401, 403}, rec.Code, "%s without Authorize: %s", verb, rec.Body)
		}
		rec = call(open, verb, "")
		require.NotContains(t, []int{401, 403}, rec.Code, "%s with AllowAll: %s", verb, rec.Body)
	}
}

// TestHandlerAuthorizeErrors: an Authorizer's own *Error goes on the wire as
// it is; any other error as a generic unauthenticated, its text only in the
// log. A refused credential is logged at warn level.
func TestHandlerAuthorizeErrors(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	h := newHandler(t, &leasetest.FakeDispatcher{}, transport.HandlerConfig{Logger: logs.logger(), Authorize: func(r *http.Request, role transport.Role) error {
		switch r.Header.Get("X-Case") {
		case "foreign":
			return errors.New("ldap down: bind password xyz")
		case "custom":
			return resourcelease.Errorf(resourcelease.StatusPermissionDenied, "app.tenant", "tenant suspended")
		}
		return nil
	}})
	rec := call(h, transport.VerbStats, "", hdr{"X-Case": "foreign"})
	requireError(t, rec, 401, resourcelease.StatusUnauthenticated, transport.CodeUnauthenticated)
	wire := rec.Body.String()
	for _, v := range rec.Header() {
		wire += strings.Join(v, " ")
	}
	require.NotContains(t, wire, "xyz", "the cause stays off the wire")
	require.Contains(t, logs.String(), "xyz", "the cause is logged")

	rec = call(h, transport.VerbEnqueue, "", hdr{"X-Case": "custom"})
	we := requireError(t, rec, 403, resourcelease.StatusPermissionDenied, "app.tenant")
	require.Equal(t, "tenant suspended", we.Message)
	require.Contains(t, logs.String(), "level=WARN msg=\"transport: unauthorized request\" procedure=resourcelease::enqueue role=producer")
}
