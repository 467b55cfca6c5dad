package transport

import (
	"net/http"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// WriteError writes err as a protocol error response: the HTTP status of its
// Status, the headers Rpc-Status and Rpc-Error-Code (the status),
// Rpc-Error-Name (the stable code), Rpc-Error-Message and, when the metadata
// has retryAfterSeconds or the status is resource-exhausted, Retry-After; and
// the body {"message","status","code","metadata"}. An error that is not (and
// does not wrap) a *resourcelease.Error is written as internal with a generic
// message, never its own text. Middleware given to NewHandler (an
// authorization check, say) uses it to refuse requests in the protocol's own
// format; the handler adds Rpc-Both-Response-Error when the request asked
// for it.
func WriteError(w http.ResponseWriter, err error) { wire.WriteError(w, err) }

// ResponseStatus returns the status of a protocol response from its headers
// alone: "" for a 2xx; else Rpc-Error-Code when it is a status name (a
// leasemesh or yarpc-go server), else Rpc-Status when it is one (a leasemesh
// server before the yarpc error headers), else the status the HTTP status
// code stands for (resourcelease.StatusFromHTTP). A RoundTripper that labels
// metrics by status can use it: the result is always a valid status or "".
func ResponseStatus(resp *http.Response) resourcelease.Status { return wire.ResponseStatus(resp) }
