package transport

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"net"
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

// endpoint is one dispatcher of a Client, with its back-off state. The
// fields are atomics so that picking an endpoint takes no lock.
type endpoint struct {
	url string
	// failures counts the failed probes in a row (capped at maxFailures);
	// 0 means healthy.
	failures atomic.Int32
	// downUntil (Unix ns) is when the endpoint may be tried again; while
	// it is in the future calls go elsewhere.
	downUntil atomic.Int64
	// probing is set while one call tries a failed endpoint again (the
	// probe): only one is in flight, however long it hangs, while the
	// others keep going elsewhere.
	probing atomic.Bool
	// batches remembers which batch procedures this dispatcher does not
	// serve (a mesh being upgraded mixes versions).
	batches batchSupport
}

// maxFailures caps endpoint.failures: the back-off stops doubling long
// before, and the counter cannot overflow.
const maxFailures = 32

// retryClass says when a call may be repeated on another dispatcher.
type retryClass int

const (
	// retryUnsent: only when no earlier try reached a dispatcher (drain,
	// restore, redrive, purge, raw calls: repeating them after a lost
	// answer is not safe).
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
	// batch, when not 0, is the batch procedure (batchEnqueue...) the
	// call is: an endpoint known not to serve it is not sent it.
	batch int
}

// tryInfo is what one try of a call learnt besides its answer.
type tryInfo struct {
	// reached is false when the request surely did not reach the
	// dispatcher (the connection could not be made, or the deadline had
	// passed before it was sent).
	reached bool
	// connected reports that a connection was made (httptrace GotConn).
	connected bool
	// expired: the deadline had passed before the try; nothing was sent
	// and nothing is to be learnt about the dispatcher.
	expired bool
}

// failover sends a call to the next dispatcher in turn and, when it fails
// with a failover error and o allows, to the others, each at most once.
// retried reports whether an earlier try may have reached a dispatcher;
// reached whether any try may have.
func (c *Client) failover(ctx context.Context, procedure string, body []byte, o callOpts) (out []byte, retried, reached bool, err error) {
	start := time.Now()
	tried := make([]bool, len(c.endpoints))
	// fresh: the last try failed on a dispatcher that was healthy, so a
	// later try may go to one that is backing off (it may have been
	// backed off wrongly) rather than give up.
	fresh := false
	// skipped: a try went to a dispatcher that does not serve the batch,
	// so the next is as a first.
	skipped := false
	for try := 0; ; try++ {
		i, probe := c.pick(tried, try == 0 || fresh || skipped)
		if i < 0 {
			if try == 0 {
				err = resourcelease.Errorf(resourcelease.StatusUnavailable, CodeTransportUnavailable,
					"transport: every dispatcher is backing off, each with a call already finding out whether it is back")
			}
			return nil, retried, reached, err
		}
		if try > 0 {
			if o.retry == retryUnsent && retried || ctx.Err() != nil {
				c.endpoints[i].release(probe)
				return nil, retried, reached, err
			}
			if o.rebody != nil {
				b, ok := o.rebody(time.Since(start))
				if !ok {
					c.endpoints[i].release(probe)
					return nil, retried, reached, err
				}
				body = b
			}
		}
		tried[i] = true
		ep := c.endpoints[i]
		wasHealthy := ep.failures.Load() == 0
		var ti tryInfo
		out, ti, err = c.sendBatchAware(ctx, ep, procedure, body, o)
		reached = reached || ti.reached
		if o.batch != 0 && isUnknownProcedure(err) {
			// An older dispatcher: another may serve the batch. Only when
			// none does, the caller falls back to per-item calls.
			if ti.expired {
				ep.release(probe) // known already, not asked
			} else {
				ep.up(probe)
			}
			skipped = true
			continue
		}
		if err == nil || !isFailover(ctx, err) {
			switch {
			case ti.expired:
				ep.release(probe) // nothing was sent: nothing learnt
			case err == nil || ctx.Err() == nil:
				ep.up(probe) // it answered
			case errors.Is(ctx.Err(), context.DeadlineExceeded) && !ti.connected:
				// The deadline passed before a connection was made: a
				// dispatcher that hangs (a host gone without a reset) is
				// avoided as a dead one is. One that was connected to may
				// only be slow (a long query, a long-poll whose wait
				// reaches the deadline): it is not backed off.
				ep.down(probe, c.epMin, c.epMax)
			default:
				ep.release(probe)
			}
			if err != nil && o.retry == retrySettle && retried && errors.Is(err, resourcelease.ErrUnknownToken) {
				err = resourcelease.PossiblySettledError(err)
			}
			return out, retried, reached, err
		}
		ep.down(probe, c.epMin, c.epMax)
		fresh, skipped = wasHealthy, false
		retried = retried || ti.reached
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

// notConnected reports whether a failed request surely never reached the
// server: the connection could not be made (refused, no route, DNS, the
// connect timeout).
func notConnected(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	var dns *net.DNSError
	return errors.As(err, &dns) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, errConnectTimeout)
}

// ErrNotConnected is matched (errors.Is) by the error of a Client call that
// surely reached no dispatcher: no connection could be made to any that
// was tried (refused, no route, the connect timeout), or the deadline had
// passed before it was sent. Nothing was applied, so a complete, fail or
// release that fails so and is then answered unknown_token was not
// settled by this caller (the Worker counts it Lost). The error's status
// stays what it was (unavailable, code CodeTransportUnavailable; or
// deadline-exceeded).
var ErrNotConnected = errors.New("transport: the request reached no dispatcher")

// notConnectedError marks an error as ErrNotConnected, keeping its cause.
type notConnectedError struct{ err error }

func (e *notConnectedError) Error() string        { return e.err.Error() }
func (e *notConnectedError) Unwrap() error        { return e.err }
func (e *notConnectedError) Is(target error) bool { return target == ErrNotConnected }

// markNotConnected returns err marked as ErrNotConnected: its
// *resourcelease.Error copied, with the mark in Err.
func markNotConnected(err error) error {
	if err == nil || errors.Is(err, ErrNotConnected) {
		return err
	}
	var e *resourcelease.Error
	if !errors.As(err, &e) {
		return &notConnectedError{err}
	}
	cp := *e
	cause := e.Err
	if cause == nil {
		cause = errors.New(e.Message)
	}
	cp.Err = &notConnectedError{cause}
	return &cp
}

// errConnectTimeout is the cause of a try cut by ClientConfig.DialTimeout.
var errConnectTimeout = errors.New("no connection within the dial timeout")

// pick returns the index of the endpoint for the next try: the next in
// round-robin order that is neither tried nor backing off. When every
// untried one is backing off, and fallback allows (the first try, or the
// last try failed on a dispatcher that had been healthy), it takes the one
// that comes back soonest, as its probe; otherwise it gives up (-1): a mesh
// that is down gets one try per call, not one per dispatcher. probe
// reports that the try is a failed endpoint's probe (release it after).
func (c *Client) pick(tried []bool, fallback bool) (int, bool) {
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
		if ep.failures.Load() == 0 {
			return i, false
		}
		if until <= now && ep.probing.CompareAndSwap(false, true) {
			return i, true
		}
		if !ep.probing.Load() && (soonest < 0 || until < soonestAt) {
			soonest, soonestAt = i, until
		}
	}
	if fallback && soonest >= 0 && c.endpoints[soonest].probing.CompareAndSwap(false, true) {
		return soonest, true
	}
	return -1, false
}

// release ends a probe that learnt nothing.
func (ep *endpoint) release(probe bool) {
	if probe {
		ep.probing.Store(false)
	}
}

// down records a failed try: the endpoint is left alone for its back-off.
// Only a probe (or the first failure of a healthy endpoint) counts a
// failure, so calls that were in flight when it went down do not jump the
// back-off to its cap.
func (ep *endpoint) down(probe bool, lo, hi time.Duration) {
	var f int32
	switch {
	case probe:
		if f = ep.failures.Load() + 1; f > maxFailures {
			f = maxFailures
		}
		ep.failures.Store(f)
	case ep.failures.CompareAndSwap(0, 1):
		f = 1
	default:
		f = max(ep.failures.Load(), 1)
	}
	ep.downUntil.Store(time.Now().Add(backoffFor(f, lo, hi)).UnixNano())
	ep.release(probe)
}

// up records an answer: the endpoint is healthy again.
func (ep *endpoint) up(probe bool) {
	if ep.failures.Load() != 0 {
		ep.failures.Store(0)
		ep.downUntil.Store(0)
	}
	ep.release(probe)
}

// backoffFor is the back-off after f failures in a row: lo doubled per
// failure after the first, capped at hi, with equal jitter.
func backoffFor(f int32, lo, hi time.Duration) time.Duration {
	d := hi
	if f >= 1 && f <= maxFailures {
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
