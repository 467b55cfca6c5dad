package leasemesh_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh"
	"github.com/leasemesh/leasemesh/transport"
)

// TestOneAuthorizerGuardsBothHandlers: Handler.Authorize also guards the
// control plane's destructive endpoints (asked for the admin role) when
// Control.Authorize is unset.
func TestOneAuthorizerGuardsBothHandlers(t *testing.T) {
	d, err := leasemesh.Open(context.Background(), leasemesh.Config{Storage: leasemesh.Memory(), Logger: quiet,
		Handler: transport.HandlerConfig{Authorize: transport.BearerTokens(map[transport.Role][]string{
			transport.RoleWorker: {"w-tok"}, transport.RoleAdmin: {"a-tok"},
		})}})
	require.NoError(t, err)
	defer d.Close()
	mux := http.NewServeMux()
	mux.Handle("/yarpc/v1", d.Handler())
	mux.Handle("/omnirelay/control/", d.ControlHandler())
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func(path, procedure, token string) int {
		req, err := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader("{}"))
		require.NoError(t, err)
		if procedure != "" {
			req.Header.Set(transport.HeaderProcedure, procedure)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		_ = res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, 200, post("/yarpc/v1", "resourcelease::stats", "w-tok"))
	require.Equal(t, 401, post("/yarpc/v1", "resourcelease::stats", ""))
	require.Equal(t, 403, post("/yarpc/v1", "resourcelease::drain", "w-tok"))
	require.Equal(t, 200, post("/yarpc/v1", "resourcelease::drain", "a-tok"))
	require.Equal(t, 401, post("/omnirelay/control/drain", "", ""))
	require.Equal(t, 403, post("/omnirelay/control/drain", "", "w-tok"))
	require.Equal(t, 200, post("/omnirelay/control/drain", "", "a-tok"))
}
