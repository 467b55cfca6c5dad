package backpressure_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
)

var okHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusOK)
})

func rpcRequest(procedure, caller, remote string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/yarpc/v1", strings.NewReader(`{}`))
	if procedure != "" {
		r.Header.Set("Rpc-Procedure", procedure)
	}
	if caller != "" {
		r.Header.Set("Rpc-Caller", caller)
	}
	if remote != "" {
		r.RemoteAddr = remote
	}
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestMiddlewareThrottlesOnlyEnqueue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		procedure string
		throttled bool
	}{
		{"resourcelease::enqueue", true},
		{"resourcelease.mesh::enqueue", true},
		{"resourcelease::leaseBatch", false},
		{"resourcelease::release", false},
		{"resourcelease::lease", false},
		{"resourcelease::heartbeat", false},
		{"resourcelease::complete", false},
		{"resourcelease::fail", false},
		{"resourcelease::stats", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.procedure, func(t *testing.T) {
			t.Parallel()
			l, _ := setupLimiter(t, backpressure.RateLimiterConfig{BackpressureLimit: 1, BackpressureBurst: 1})
			l.OnBackpressure(active)
			h := l.Middleware(okHandler)
			assert.Equal(t, http.StatusOK, serve(h, rpcRequest(tt.procedure, "producer", "")).Code)
			want := http.StatusOK
			if tt.throttled {
				want = http.StatusTooManyRequests
			}
			assert.Equal(t, want, serve(h, rpcRequest(tt.procedure, "producer", "")).Code)
		})
	}
}

// A batch passes the middleware uncharged, with the limiter in its context:
// the dispatcher charges it per item.
func TestMiddlewareChargesABatchPerItem(t *testing.T) {
	t.Parallel()
	l, clk := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 5})
	var admitted []int
	var refusals []error
	h := l.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		admit := resourcelease.EnqueueAdmissionFrom(r.Context())
		if r.Header.Get("Rpc-Procedure") != "resourcelease::enqueueBatch" {
			assert.Nil(t, admit, "a single enqueue was charged by the middleware")
			w.WriteHeader(http.StatusOK)
			return
		}
		require.NotNil(t, admit, "a batch carries the limiter to the dispatcher")
		k, err := admit(3)
		admitted, refusals = append(admitted, k), append(refusals, err)
		w.WriteHeader(http.StatusOK)
	}))
	for range 3 {
		require.Equal(t, http.StatusOK, serve(h, rpcRequest("resourcelease::enqueueBatch", "p", "")).Code)
	}
	assert.Equal(t, []int{3, 2, 0}, admitted, "a burst of 5 admits 3, then 2, then none")
	assert.NoError(t, refusals[0])
	for _, err := range refusals[1:] {
		var e *resourcelease.Error
		require.ErrorAs(t, err, &e)
		assert.Equal(t, resourcelease.CodeRateLimited, e.Code)
		assert.Equal(t, "1", e.Metadata["retryAfterSeconds"])
	}
	assert.Equal(t, http.StatusTooManyRequests, serve(h, rpcRequest("resourcelease::enqueue", "p", "")).Code,
		"the batch's items took the single enqueue's token")
	clk.Advance(time.Second)
	assert.Equal(t, http.StatusOK, serve(h, rpcRequest("resourcelease::enqueue", "p", "")).Code)
}

func TestMiddlewareRefusal(t *testing.T) {
	t.Parallel()
	l, clk := setupLimiter(t, backpressure.RateLimiterConfig{BackpressureLimit: 0.4, BackpressureBurst: 1})
	l.OnBackpressure(active)
	h := l.Middleware(okHandler)
	require.Equal(t, http.StatusOK, serve(h, rpcRequest("resourcelease::enqueue", "p", "")).Code)

	tests := []struct {
		name       string
		advance    time.Duration
		wantRetry  string
		wantBody   string
		wantHeader string
	}{
		{
			name: "next token 2.5s away rounds up to 3", wantRetry: "3",
			wantBody:   `{"message":"rate limit exceeded; retry after 3s","status":"resource-exhausted","code":"error.resourcelease.rate_limited","metadata":{"retryAfterSeconds":"3"}}`,
			wantHeader: "rate limit exceeded; retry after 3s",
		},
		{
			name: "under a second is at least 1", advance: 2400 * time.Millisecond, wantRetry: "1",
			wantBody:   `{"message":"rate limit exceeded; retry after 1s","status":"resource-exhausted","code":"error.resourcelease.rate_limited","metadata":{"retryAfterSeconds":"1"}}`,
			wantHeader: "rate limit exceeded; retry after 1s",
		},
	}
	for _, tt := range tests {
		clk.Advance(tt.advance)
		w := serve(h, rpcRequest("resourcelease::enqueue", "p", ""))
		assert.Equal(t, http.StatusTooManyRequests, w.Code, tt.name)
		assert.Equal(t, tt.wantRetry, w.Header().Get("Retry-After"), tt.name)
		assert.Equal(t, "resource-exhausted", w.Header().Get("Rpc-Status"), tt.name)
		assert.Equal(t, "resource-exhausted", w.Header().Get("Rpc-Error-Code"), tt.name)
		assert.Equal(t, "error.resourcelease.rate_limited", w.Header().Get("Rpc-Error-Name"), tt.name)
		assert.Equal(t, tt.wantHeader, w.Header().Get("Rpc-Error-Message"), tt.name)
		assert.Equal(t, "application/json", w.Header().Get("Content-Type"), tt.name)
		assert.Equal(t, tt.wantBody, w.Body.String(), tt.name)
		var body map[string]any
		require.NoError(t, json.Unmarshal(w.Body.Bytes(), &body))
		assert.Len(t, body, 4, "exactly message, status, code, metadata")
	}
}

func TestMiddlewareKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		first, second *http.Request
		sameBucket    bool
		cfg           backpressure.MiddlewareConfig
	}{
		{
			name:       "same caller shares a bucket",
			first:      rpcRequest("ns::enqueue", "a", "10.0.0.1:1000"),
			second:     rpcRequest("ns::enqueue", "a", "10.0.0.2:2000"),
			sameBucket: true,
		},
		{
			name:   "different callers have their own",
			first:  rpcRequest("ns::enqueue", "a", "10.0.0.1:1000"),
			second: rpcRequest("ns::enqueue", "b", "10.0.0.1:1000"),
		},
		{
			name:       "without a caller, the remote IP (any port)",
			first:      rpcRequest("ns::enqueue", "", "10.0.0.1:1000"),
			second:     rpcRequest("ns::enqueue", "", "10.0.0.1:2000"),
			sameBucket: true,
		},
		{
			name:   "different remote IPs",
			first:  rpcRequest("ns::enqueue", "", "10.0.0.1:1000"),
			second: rpcRequest("ns::enqueue", "", "10.0.0.2:1000"),
		},
		{
			name:       "custom key",
			first:      rpcRequest("ns::enqueue", "a", ""),
			second:     rpcRequest("ns::enqueue", "b", ""),
			cfg:        backpressure.MiddlewareConfig{Key: func(*http.Request) string { return "everyone" }},
			sameBucket: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, _ := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 1, PerKey: true})
			h := l.MiddlewareWith(okHandler, tt.cfg)
			require.Equal(t, http.StatusOK, serve(h, tt.first).Code)
			want := http.StatusOK
			if tt.sameBucket {
				want = http.StatusTooManyRequests
			}
			assert.Equal(t, want, serve(h, tt.second).Code)
		})
	}
}

func TestMiddlewareCustomMatch(t *testing.T) {
	t.Parallel()
	l, _ := setupLimiter(t, backpressure.RateLimiterConfig{NormalLimit: 1, NormalBurst: 1})
	h := l.MiddlewareWith(okHandler, backpressure.MiddlewareConfig{
		Match: func(r *http.Request) bool { return r.URL.Path == "/demo/enqueue" },
	})
	demo := func() *http.Request { return httptest.NewRequest(http.MethodPost, "/demo/enqueue", nil) }
	assert.Equal(t, http.StatusOK, serve(h, demo()).Code)
	assert.Equal(t, http.StatusTooManyRequests, serve(h, demo()).Code)
	assert.Equal(t, http.StatusOK, serve(h, rpcRequest("resourcelease::enqueue", "p", "")).Code, "the default match no longer applies")
}

func TestCallerKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		caller, remote, want string
	}{
		{"worker-1", "10.0.0.1:1234", "worker-1"},
		{"", "10.0.0.1:1234", "10.0.0.1"},
		{"", "[::1]:80", "::1"},
		{"", "not-an-address", "not-an-address"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, backpressure.CallerKey(rpcRequest("", tt.caller, tt.remote)))
	}
}
