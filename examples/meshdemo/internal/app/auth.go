package app

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/transport"
)

// demoAuth is the dispatcher's one Authorizer, for the RPC handler, the
// control plane and /demo/enqueue: a role with a token needs it (the admin
// token holds every role); a role without one is open, as on a
// loopback-only node; reads (observer) are open while producers or workers
// are, and need any role's token once both have one.
type demoAuth struct {
	open   map[transport.Role]bool
	bearer transport.Authorizer
}

func newDemoAuth(producer, worker, admin string) *demoAuth {
	tokens := map[transport.Role][]string{}
	open := map[transport.Role]bool{}
	for role, tok := range map[transport.Role]string{transport.RoleProducer: producer, transport.RoleWorker: worker, transport.RoleAdmin: admin} {
		if tok == "" {
			open[role] = true
		} else {
			tokens[role] = []string{tok}
		}
	}
	open[transport.RoleObserver] = open[transport.RoleProducer] || open[transport.RoleWorker]
	return &demoAuth{open: open, bearer: transport.BearerTokens(tokens)}
}

// authorize implements transport.Authorizer.
func (a *demoAuth) authorize(r *http.Request, role transport.Role) error {
	if a.open[role] {
		return nil
	}
	return a.bearer(r, role)
}

// openRoles lists the roles that need no token, in the order of
// transport.Roles.
func (a *demoAuth) openRoles() []string {
	var out []string
	for _, r := range transport.Roles() {
		if a.open[r] {
			out = append(out, string(r))
		}
	}
	return out
}

// guardEnqueue makes POST /demo/enqueue need the producer role: it forwards
// through the node's own client, which holds the producer token, so
// without this check it would enqueue for anyone who reaches the page.
func (a *demoAuth) guardEnqueue(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/demo/enqueue" {
			if err := a.authorize(r, transport.RoleProducer); err != nil {
				w.Header().Set("WWW-Authenticate", "Bearer")
				transport.WriteError(w, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// securityWarnings are the loud warnings of a dispatcher that listens
// beyond loopback with calls anyone can make, or without TLS. Empty for a
// loopback-only node or one without the dispatcher role.
func securityWarnings(cfg *config.Config, auth *demoAuth) []string {
	if !cfg.Has(config.RoleDispatcher) || !cfg.Public() {
		return nil
	}
	var out []string
	var open []string
	for _, r := range auth.openRoles() {
		if r != string(transport.RoleObserver) {
			open = append(open, r)
		}
	}
	if len(open) > 0 {
		out = append(out, fmt.Sprintf("the dispatcher listens beyond loopback and the %s calls need no token: anyone who can reach it can make them; set %s",
			strings.Join(open, " and "), tokenKeys(open)))
	}
	var plain []string
	if !cfg.RPC.Loopback && !cfg.RPC.TLS {
		plain = append(plain, "rpcUrl "+cfg.RPC.URL)
	}
	for _, l := range cfg.URLs {
		if !l.Loopback && !l.TLS {
			plain = append(plain, "urls "+l.URL)
		}
	}
	if len(plain) > 0 {
		out = append(out, fmt.Sprintf("%s: bearer tokens and payloads cross the network in clear; use https:// with %s:tlsCertFile and %s:tlsKeyFile",
			strings.Join(plain, ", "), config.Section, config.Section))
	}
	return out
}

func tokenKeys(roles []string) string {
	keys := make([]string, len(roles))
	for i, r := range roles {
		keys[i] = config.Section + ":" + r + "Token"
	}
	return strings.Join(keys, " and ")
}
