// Package backpressure turns queue depth into backpressure: a
// watermark [Monitor] that decides when backpressure is on, the listeners
// that react to its transitions, and a rate limiter for producers that
// tightens while it is on.
//
// # The monitor
//
// [Monitor] implements resourcelease.BackpressureController. The queue calls
// Observe with its pending count on every change, with its lock held; the
// Monitor compares it with two watermarks:
//
//	pending >= High  ──▶ active   (enqueue waits or is refused, by Mode)
//	pending <= Low   ──▶ cleared
//	Low < pending < High: no change (hysteresis)
//
// Two transitions are at least Cooldown apart. A transition the cooldown
// holds back is not lost: a clock timer re-evaluates the last observed
// pending count when the cooldown ends, so the state catches up even if the
// queue goes quiet. Observe never blocks and allocates only on a transition.
//
// Admit is what the dispatcher calls before each enqueue. In ModeWait it waits
// for backpressure to clear, bounded by the context (deadline-exceeded or
// cancelled); in ModeReject it returns an error matching
// resourcelease.ErrBackpressure (resource-exhausted). A clear wakes every
// waiter at once; they race for capacity like any other enqueue, which may
// take backpressure straight back on, and that is correct.
//
// # Delivery to listeners
//
// Each transition becomes a resourcelease.BackpressureSignal delivered to the
// listeners in order, one at a time, from the Monitor's own goroutine, never
// the queue's. A slow listener therefore delays only later signals, and a
// panicking listener is recovered, logged and counted; the other listeners
// still get the signal. Signals waiting for delivery are bounded
// (Config.SignalBuffer). Transitions are rare, so the buffer only fills when a
// listener is stuck; then the two oldest waiting signals are dropped (and
// counted in backpressure_signals_dropped_total). Transitions alternate
// between active and cleared, so dropping a pair keeps the sequence each
// listener sees alternating and ending in the true current state. Close stops
// the goroutine; it waits for a listener call in progress to return and
// discards signals not yet delivered.
//
// # Listeners
//
//   - [RateLimiter]: the BackpressureAwareRateLimiter. It keeps a normal and a
//     backpressure rate.Limiter (golang.org/x/time/rate), globally or per
//     caller, and uses the one the latest signal selects. As HTTP middleware
//     it throttles only producers (the enqueue procedure): lease, heartbeat,
//     complete and fail drain the queue and are never throttled. A refused
//     request gets 429 with Retry-After and the protocol's error body.
//   - [DiagnosticsListener]: the latest signal, a bounded history, and
//     subscriptions that stream transitions without ever blocking delivery.
//   - [LogListener]: one Info line per transition.
//   - [Listeners] composes several; [ListenerFunc] adapts a function.
//
// # Metrics
//
// Monitor and RateLimiter are prometheus.Collectors; nothing is registered
// globally. Monitor: backpressure_active, backpressure_pending_count,
// backpressure_high_watermark, backpressure_low_watermark,
// backpressure_transitions_total{state}, backpressure_signals_dropped_total
// and backpressure_listener_panics_total. RateLimiter:
// backpressure_rate_limited_total.
//
// # Time
//
// All time comes from a resourcelease.Clock (nil means real time), so tests
// drive cooldowns and rate limits with leasetest.ManualClock instead of
// sleeping.
package backpressure
