package backpressure

import (
	"container/list"
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// DefaultMaxKeys is the default of RateLimiterConfig.MaxKeys.
const DefaultMaxKeys = 10_000

// RateLimiterConfig configures a RateLimiter. The zero value of every field
// means its documented default; negative values are an error.
type RateLimiterConfig struct {
	// NormalLimit is the rate (events per second) allowed while backpressure
	// is off. 0 (the default) or rate.Inf means unlimited.
	NormalLimit rate.Limit
	// NormalBurst is the burst allowed while backpressure is off. Defaults to
	// the limit rounded up (at least 1).
	NormalBurst int
	// BackpressureLimit is the rate allowed while backpressure is on. 0 (the
	// default) or rate.Inf means unlimited.
	BackpressureLimit rate.Limit
	// BackpressureBurst is the burst allowed while backpressure is on.
	// Defaults to the limit rounded up (at least 1).
	BackpressureBurst int
	// PerKey gives every caller key its own pair of limiters; otherwise one
	// pair is shared by all callers (the key is ignored).
	PerKey bool
	// MaxKeys bounds the keys remembered with PerKey; beyond it the least
	// recently used key is forgotten (and starts afresh, with a full burst,
	// when it comes back). Defaults to 10000.
	MaxKeys int
	// Clock is the source of time. Nil means resourcelease.SystemClock.
	Clock resourcelease.Clock
}

func (c RateLimiterConfig) withDefaults() (RateLimiterConfig, error) {
	var err error
	if c.NormalBurst, err = checkLimit("Normal", c.NormalLimit, c.NormalBurst); err != nil {
		return c, err
	}
	if c.BackpressureBurst, err = checkLimit("Backpressure", c.BackpressureLimit, c.BackpressureBurst); err != nil {
		return c, err
	}
	if c.MaxKeys < 0 {
		return c, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: MaxKeys must not be negative, got %d", c.MaxKeys)
	}
	if c.MaxKeys == 0 {
		c.MaxKeys = DefaultMaxKeys
	}
	if c.Clock == nil {
		c.Clock = resourcelease.SystemClock
	}
	return c, nil
}

// checkLimit validates a limit and its burst and returns the burst to use.
func checkLimit(name string, limit rate.Limit, burst int) (int, error) {
	if math.IsNaN(float64(limit)) || limit < 0 {
		return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: %sLimit must not be negative, got %v", name, limit)
	}
	if burst < 0 {
		return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "backpressure: %sBurst must not be negative, got %d", name, burst)
	}
	if burst == 0 && !unlimited(limit) {
		burst = max(1, int(math.Ceil(float64(limit))))
	}
	return burst, nil
}

func unlimited(l rate.Limit) bool { return l == 0 || l == rate.Inf }

// RateLimiter is the backpressure-aware rate limiter: a
// resourcelease.BackpressureListener that holds a normal and a backpressure
// rate.Limiter, globally or per caller key, and applies the one the latest
// signal selects. Allow drops, Wait blocks (bounded by its context), Reserve
// schedules; Middleware applies it to HTTP requests, which is how most
// callers use it. It is also a prometheus.Collector
// (backpressure_rate_limited_total).
//
// Create one with NewRateLimiter and list it in the Monitor's
// Config.Listeners. It starts no goroutines and is safe for concurrent use.
type RateLimiter struct {
	cfg    RateLimiterConfig
	active atomic.Bool
	// inf is the limiter used for an unlimited rate; rate.Limiter keeps no
	// state for rate.Inf, so one is shared.
	inf     *rate.Limiter
	global  *limiterPair
	limited atomic.Uint64

	mu   sync.Mutex
	keys map[string]*list.Element // of *limiterPair, with PerKey
	lru  *list.List               // most recently used at the front

	limitedDesc *prometheus.Desc
}

var (
	_ resourcelease.BackpressureListener = (*RateLimiter)(nil)
	_ prometheus.Collector               = (*RateLimiter)(nil)
)

type limiterPair struct {
	key                  string
	normal, backpressure *rate.Limiter
}

// NewRateLimiter returns a RateLimiter configured by cfg, starting in the
// normal (no backpressure) state.
func NewRateLimiter(cfg RateLimiterConfig) (*RateLimiter, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &RateLimiter{
		cfg: cfg,
		inf: rate.NewLimiter(rate.Inf, 0),
		limitedDesc: prometheus.NewDesc("backpressure_rate_limited_total",
			"Requests refused by the backpressure-aware rate limiter.", nil, nil),
	}
	if cfg.PerKey {
		r.keys = make(map[string]*list.Element)
		r.lru = list.New()
	} else {
		r.global = r.newPair("")
	}
	return r, nil
}

func (r *RateLimiter) newPair(key string) *limiterPair {
	return &limiterPair{
		key:          key,
		normal:       r.newLimiter(r.cfg.NormalLimit, r.cfg.NormalBurst),
		backpressure: r.newLimiter(r.cfg.BackpressureLimit, r.cfg.BackpressureBurst),
	}
}

func (r *RateLimiter) newLimiter(limit rate.Limit, burst int) *rate.Limiter {
	if unlimited(limit) {
		return r.inf
	}
	return rate.NewLimiter(limit, burst)
}

// OnBackpressure switches to the backpressure limiters while s.IsActive and
// back to the normal ones when it clears.
func (r *RateLimiter) OnBackpressure(s resourcelease.BackpressureSignal) {
	r.active.Store(s.IsActive)
}

// BackpressureActive reports whether the backpressure limiters are in use.
func (r *RateLimiter) BackpressureActive() bool { return r.active.Load() }

// Limiter returns the rate.Limiter that applies to key now (key is ignored
// without PerKey). An unlimited rate is a limiter with rate.Inf.
func (r *RateLimiter) Limiter(key string) *rate.Limiter {
	active := r.active.Load()
	cfgLimit := r.cfg.NormalLimit
	if active {
		cfgLimit = r.cfg.BackpressureLimit
	}
	if unlimited(cfgLimit) {
		return r.inf // no need to remember the key
	}
	p := r.global
	if r.cfg.PerKey {
		p = r.pair(key)
	}
	if active {
		return p.backpressure
	}
	return p.normal
}

// pair returns key's limiters, creating them and forgetting the least
// recently used key beyond MaxKeys.
func (r *RateLimiter) pair(key string) *limiterPair {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.keys[key]; ok {
		r.lru.MoveToFront(e)
		return e.Value.(*limiterPair)
	}
	p := r.newPair(key)
	r.keys[key] = r.lru.PushFront(p)
	if r.lru.Len() > r.cfg.MaxKeys {
		old := r.lru.Back()
		r.lru.Remove(old)
		delete(r.keys, old.Value.(*limiterPair).key)
	}
	return p
}

// Keys returns how many caller keys are remembered (0 without PerKey).
func (r *RateLimiter) Keys() int {
	if !r.cfg.PerKey {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.keys)
}

// Allow reports whether one event for key may happen now, consuming a token
// if so. It is shorthand for AllowWithRetry with the retry hint dropped.
func (r *RateLimiter) Allow(key string) bool {
	ok, _ := r.AllowWithRetry(key)
	return ok
}

// AllowWithRetry reports whether one event for key may happen now,
// consuming a token if so; when not, it also returns how long until one
// would be allowed (at least one nanosecond).
func (r *RateLimiter) AllowWithRetry(key string) (bool, time.Duration) {
	lim := r.Limiter(key)
	now := r.cfg.Clock.Now()
	if lim.AllowN(now, 1) {
		return true, 0
	}
	r.limited.Add(1)
	return false, retryAfter(lim, now)
}

// AllowN takes as many of n tokens for key as are there now, at most n, and
// returns how many it took; when fewer than n, it also returns how long
// until the next whole token (at least one nanosecond). It charges a batch
// per item: the first allowed items go ahead, the rest are refused.
func (r *RateLimiter) AllowN(key string, n int) (allowed int, wait time.Duration) {
	if n <= 0 {
		return 0, 0
	}
	lim := r.Limiter(key)
	if lim.Limit() == rate.Inf {
		return n, 0
	}
	now := r.cfg.Clock.Now()
	// TokensAt and AllowN are two steps, so a concurrent caller may take
	// tokens in between: then ask for fewer.
	for k := min(n, int(lim.TokensAt(now))); k > 0; k-- {
		if lim.AllowN(now, k) {
			allowed = k
			break
		}
	}
	if allowed == n {
		return n, 0
	}
	r.limited.Add(uint64(n - allowed))
	return allowed, retryAfter(lim, now)
}

// retryAfter is how long until lim has a whole token again.
func retryAfter(lim *rate.Limiter, now time.Time) time.Duration {
	missing := 1 - lim.TokensAt(now)
	d := time.Duration(math.Ceil(missing / float64(lim.Limit()) * float64(time.Second)))
	return max(d, time.Nanosecond)
}

// Reserve reserves one event for key at the clock's now and returns the
// reservation, as rate.Limiter.Reserve does. Use the reservation's
// DelayFrom and CancelAt with the same clock (its Delay and Cancel use real
// time).
func (r *RateLimiter) Reserve(key string) *rate.Reservation {
	return r.Limiter(key).ReserveN(r.cfg.Clock.Now(), 1)
}

// Wait blocks until one event for key may happen, like rate.Limiter.Wait:
// it returns at once with a deadline-exceeded or cancelled
// *resourcelease.Error if ctx is already done, with an error matching
// resourcelease.ErrRateLimited if the wait would outlast ctx's deadline, and
// with ctx's error (the reservation given back) if ctx ends while waiting.
// A wait that began under one limiter finishes under it even if the signal
// switches meanwhile.
func (r *RateLimiter) Wait(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return resourcelease.AsError(err)
	}
	lim := r.Limiter(key)
	now := r.cfg.Clock.Now()
	res := lim.ReserveN(now, 1)
	if !res.OK() { // unreachable: every burst is at least 1
		r.limited.Add(1)
		return rateLimitedError(time.Second)
	}
	delay := res.DelayFrom(now)
	if delay == 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < delay {
		res.CancelAt(now)
		r.limited.Add(1)
		return rateLimitedError(delay)
	}
	t := r.cfg.Clock.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		res.CancelAt(r.cfg.Clock.Now())
		return resourcelease.AsError(ctx.Err())
	}
}

// retryAfterSeconds rounds d up to whole seconds, at least 1, as Retry-After
// wants.
func retryAfterSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}

// rateLimitedError is a refusal matching resourcelease.ErrRateLimited, with
// the retry hint in its message and metadata.
func rateLimitedError(retry time.Duration) *resourcelease.Error {
	secs := retryAfterSeconds(retry)
	return &resourcelease.Error{
		Status:   resourcelease.ErrRateLimited.Status,
		Code:     resourcelease.ErrRateLimited.Code,
		Message:  fmt.Sprintf("%s; retry after %ds", resourcelease.ErrRateLimited.Message, secs),
		Metadata: map[string]string{"retryAfterSeconds": strconv.FormatInt(secs, 10)},
	}
}

// Describe sends the descriptor of backpressure_rate_limited_total.
func (r *RateLimiter) Describe(ch chan<- *prometheus.Desc) { ch <- r.limitedDesc }

// Collect sends the value of backpressure_rate_limited_total.
func (r *RateLimiter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(r.limitedDesc, prometheus.CounterValue, float64(r.limited.Load()))
}
