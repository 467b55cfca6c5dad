package transport

import (
	"net/http"

	"github.com/leasemesh/leasemesh/internal/wire"
)

// WriteError writes err as a protocol error response: the HTTP status of its
// Status, the Rpc-Status, Rpc-Error-Code and Rpc-Error-Message headers, and the
// body {"message","status","code","metadata"}. An error that is not (and does
// not wrap) a *resourcelease.Error is written as internal with a generic
// message, never its own text. Middleware given to NewHandler (an
// authorization check, say) uses it to refuse requests in the protocol's own
// format.
func WriteError(w http.ResponseWriter, err error) { wire.WriteError(w, err) }
