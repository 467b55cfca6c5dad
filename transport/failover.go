package transport

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"
	"net/url"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Defaults of ClientConfig's endpoint back-off.
const (
	// DefaultEndpointMinBackoff is how long a dispatcher that just failed is
	// left alone, when the Client has several: 100 ms.
	DefaultEndpointMinBackoff = 100 * time.Millisecond
	// DefaultEndpointMaxBackoff caps that back-off: 5 s, so a dispatcher
	// that comes back is used again within 5 s.
	DefaultEndpointMaxBackoff = 5 * time.Second
)

func endpointBackoff(lo, hi time.Duration) (time.Duration, time.Duration, error) {
	if lo < 0 || hi < 0 {
		return 0, 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"transport: NewClient: EndpointMinBackoff and EndpointMaxBackoff must not be negative, got %v and %v", lo, hi)
	}
	lo, hi = cmpOr(lo, DefaultEndpointMinBackoff), cmpOr(hi, DefaultEndpointMaxBackoff)
	if lo > hi {
		return 0, 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"transport: NewClient: EndpointMinBackoff %v exceeds EndpointMaxBackoff %v", lo, hi)
	}
	return lo, hi, nil
}

func cmpOr(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

// URLs returns the dispatcher URLs the Client calls, in the order given.
func (c *Client) URLs() []string {
	out := make([]string, len(c.endpoints))
	for i, ep := range c.endpoints {
		out[i] = ep.url
	}
	return out
}

// endpoint is one dispatcher of a Client, with its back-off state. Both
// fields are atomics so that picking an endpoint takes no lock.
type endpoint struct {
	url string
	// failures counts the failed calls in a row; 0 means healthy.
	failures atomic.Int32
	// downUntil (Unix ns) is when the endpoint may be tried again; while
	// it is in the future calls go elsewhere. A call that tries a failed
	// endpoint again moves it forward first (claims the probe), so only
	// one call per back-off finds out whether it is back.
	downUntil atomic.Int64
}

// retryClass says when a call may be repeated on another dispatcher.
type retryClass int

const (
	// retryUnsent: only when no earlier try reached a dispatcher (drain,
	// restore, raw calls: repeating them after a lost answer is not safe).
	retryUnsent retryClass = iota
	// retrySafe: after any failover error (repeating changes nothing, or
	// the request carries what dedupes it).
	retrySafe
	// retrySettle: as retrySafe, and an unknown_token after a try that may
	// have been applied is ErrPossiblySettled.
	retrySettle
)

// callOpts are how one call is sent.
type callOpts struct {
	// minTimeout stretches the client's default timeout (for long-polls).
	minTimeout time.Duration
	retry      retryClass
	// rebody, when set, gives the body of a retry made spent after the
	// first try (a long-poll's wait shrinks by it); false: do not retry.
	rebody func(spent time.Duration) ([]byte, bool)
}

// failover sends a call to the next dispatcher in turn and, when it fails
// with a failover error and o allows, to the others, each at most once.
// retried reports whether an earlier try may have reached a dispatcher.
func (c *Client) failover(ctx context.Context, procedure string, body []byte, o callOpts) (out []byte, retried bool, err error) {
	start := time.Now()
	tried := make([]bool, len(c.endpoints))
	reachedBefore := false
	for try := 0; ; try++ {
		i := c.pick(tried, try == 0)
		if i < 0 {
			return nil, reachedBefore, err
		}
		if try > 0 {
			if o.retry == retryUnsent && reachedBefore || ctx.Err() != nil {
				return nil, reachedBefore, err
			}
			if o.rebody != nil {
				b, ok := o.rebody(time.Since(start))
				if !ok {
					return nil, reachedBefore, err
				}
				body = b
			}
		}
		tried[i] = true
		ep := c.endpoints[i]
		var reached bool
		out, reached, err = c.send(ctx, ep, procedure, body)
		if err == nil || !isFailover(ctx, err) {
			switch {
			case err == nil || ctx.Err() == nil:
				ep.up() // it answered
			case errors.Is(ctx.Err(), context.DeadlineExceeded) && noAnswer(err):
				// The deadline passed without an answer: a dispatcher that
				// hangs (a host gone without a reset) is avoided as a
				// dead one is. No time is left to try another.
				ep.down(c.epMin, c.epMax)
			}
			if err != nil && o.retry == retrySettle && reachedBefore && errors.Is(err, resourcelease.ErrUnknownToken) {
				err = resourcelease.PossiblySettledError(err)
			}
			return out, reachedBefore, err
		}
		ep.down(c.epMin, c.epMax)
		reachedBefore = reachedBefore || reached
	}
}

// isFailover reports whether err, the answer of one dispatcher, says to
// try another: no answer at all (while ctx is live), or unavailable
// (shutting down, its storage unreachable).
func isFailover(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	return resourcelease.StatusOf(err) == resourcelease.StatusUnavailable
}

// noAnswer reports whether a call failed without any response: the
// request or its answer did not travel, as opposed to a dispatcher's error.
func noAnswer(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}

// notConnected reports whether a failed request surely never reached the
// server: the connection could not be made (refused, no route, DNS).
func notConnected(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) || errors.Is(err, syscall.ECONNREFUSED)
}

// pick returns the index of the endpoint for the next try: the next in
// round-robin order that is neither tried nor backing off. When every
// untried one is backing off, the first try takes the one that comes back
// soonest (a call is always tried somewhere) and a later try gives up (-1):
// a mesh that is down gets one try per call, not one per dispatcher.
func (c *Client) pick(tried []bool, first bool) int {
	n := len(c.endpoints)
	at := int(c.next.Add(1) % uint64(n))
	now := time.Now().UnixNano()
	soonest, soonestAt := -1, int64(0)
	for k := range n {
		i := (at + k) % n
		if tried[i] {
			continue
		}
		ep := c.endpoints[i]
		until := ep.downUntil.Load()
		if until <= now && ep.claim(until, now, c.epMin, c.epMax) {
			return i
		}
		if until = ep.downUntil.Load(); soonest < 0 || until < soonestAt {
			soonest, soonestAt = i, until
		}
	}
	if first {
		return soonest
	}
	return -1
}

// claim reports whether the caller may use the endpoint, whose downUntil
// it read as until (past): a healthy one always; one that failed only if
// this caller is the one that moves downUntil forward, so one call probes
// it per back-off while the others keep going elsewhere.
func (ep *endpoint) claim(until, now int64, lo, hi time.Duration) bool {
	f := ep.failures.Load()
	if f == 0 {
		return true
	}
	return ep.downUntil.CompareAndSwap(until, now+int64(backoffFor(f, lo, hi)))
}

// down records a failed try: the endpoint is left alone for its back-off.
func (ep *endpoint) down(lo, hi time.Duration) {
	f := ep.failures.Add(1)
	ep.downUntil.Store(time.Now().Add(backoffFor(f, lo, hi)).UnixNano())
}

// up records an answer: the endpoint is healthy again.
func (ep *endpoint) up() {
	if ep.failures.Load() != 0 {
		ep.failures.Store(0)
		ep.downUntil.Store(0)
	}
}

// backoffFor is the back-off after f failures in a row: lo doubled per
// failure after the first, capped at hi, with equal jitter.
func backoffFor(f int32, lo, hi time.Duration) time.Duration {
	d := hi
	if f <= 32 {
		if e := lo << (f - 1); e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + rand.N(d-half+1)
}

// newRequestID is the requestId the Client gives an enqueue without one, so
// that its retry on another dispatcher dedupes: 128 random bits.
func newRequestID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return "lmc-" + hex.EncodeToString(b[:])
}
