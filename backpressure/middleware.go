package backpressure

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// MiddlewareConfig says which requests the middleware throttles and how it
// tells callers apart. The zero value throttles enqueue requests per
// Rpc-Caller (else remote IP).
type MiddlewareConfig struct {
	// Key returns the caller key of a request (used with
	// RateLimiterConfig.PerKey). Nil means CallerKey.
	Key func(*http.Request) string
	// Match reports whether a request is throttled at all; others pass
	// straight through. Nil means MatchEnqueue.
	Match func(*http.Request) bool
}

// CallerKey is the default MiddlewareConfig.Key: the Rpc-Caller header, else
// the remote IP address.
func CallerKey(r *http.Request) string {
	if c := r.Header.Get(wire.HeaderCaller); c != "" {
		return boundedKey(c)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// maxKeyBytes bounds a limiter key: MaxKeys bounds how many keys are kept, and
// this bounds what each costs, whatever a client puts in its header.
const maxKeyBytes = 128

// boundedKey returns k, or a digest of it when it is longer than maxKeyBytes.
func boundedKey(k string) string {
	if len(k) <= maxKeyBytes {
		return k
	}
	sum := sha256.Sum256([]byte(k))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// MatchEnqueue is the default MiddlewareConfig.Match: requests whose
// Rpc-Procedure header ends with "::enqueue" or "::enqueueBatch". Only
// producers are throttled; lease, heartbeat, complete, fail and release
// drain the queue and never are. A batch is charged per item (see
// MiddlewareWith).
func MatchEnqueue(r *http.Request) bool {
	p := r.Header.Get(wire.HeaderProcedure)
	return strings.HasSuffix(p, "::enqueue") || strings.HasSuffix(p, "::enqueueBatch")
}

// Middleware is shorthand for MiddlewareWith(next, MiddlewareConfig{}): it
// throttles enqueue requests per caller.
func (r *RateLimiter) Middleware(next http.Handler) http.Handler {
	return r.MiddlewareWith(next, MiddlewareConfig{})
}

// MiddlewareWith returns a handler that passes the requests cfg.Match
// selects through the limiter before next. A refused request gets 429 Too
// Many Requests with the protocol's error: headers Retry-After (whole
// seconds, at least 1), Rpc-Status and Rpc-Error-Code (resource-exhausted),
// Rpc-Error-Name (error.resourcelease.rate_limited) and Rpc-Error-Message,
// and the body {"message","status","code","metadata"} with the metadata
// retryAfterSeconds.
//
// An enqueueBatch request (Rpc-Procedure ending "::enqueueBatch") is not
// charged here: the middleware hands the limiter to the dispatcher in the
// request's context (resourcelease.WithEnqueueAdmission), which charges one
// token per item, enqueues the items the tokens cover and refuses each of
// the rest with that same error, so a batch costs what its items would cost
// one by one and a partly admitted batch still makes progress.
func (r *RateLimiter) MiddlewareWith(next http.Handler, cfg MiddlewareConfig) http.Handler {
	key, match := cfg.Key, cfg.Match
	if key == nil {
		key = CallerKey
	}
	if match == nil {
		match = MatchEnqueue
	}
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !match(req) {
			next.ServeHTTP(w, req)
			return
		}
		if strings.HasSuffix(req.Header.Get(wire.HeaderProcedure), "::enqueueBatch") {
			k := key(req)
			admit := func(n int) (int, error) {
				allowed, wait := r.AllowN(k, n)
				if allowed == n {
					return n, nil
				}
				return allowed, rateLimitedError(wait)
			}
			next.ServeHTTP(w, req.WithContext(resourcelease.WithEnqueueAdmission(req.Context(), admit)))
			return
		}
		ok, retry := r.AllowWithRetry(key(req))
		if ok {
			next.ServeHTTP(w, req)
			return
		}
		writeRateLimited(w, retry)
	})
}

// writeRateLimited refuses a request in the protocol's error format; the
// writer sends the limiter's estimate (metadata retryAfterSeconds) as
// Retry-After.
func writeRateLimited(w http.ResponseWriter, retry time.Duration) {
	wire.WriteError(w, rateLimitedError(retry))
}
