package backpressure_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
)

// The rate limiter throttles enqueue requests only while backpressure is
// active (here: 1 per second, burst 1); other procedures always pass.
func ExampleRateLimiter_Middleware() {
	clk := leasetest.NewManualClock(time.Time{})
	limiter, err := backpressure.NewRateLimiter(backpressure.RateLimiterConfig{
		BackpressureLimit: 1,
		BackpressureBurst: 1,
		PerKey:            true,
		Clock:             clk,
	})
	if err != nil {
		panic(err)
	}
	rpc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	})
	h := limiter.Middleware(rpc)

	call := func(procedure string) {
		req := httptest.NewRequest(http.MethodPost, "/yarpc/v1", nil)
		req.Header.Set("Rpc-Procedure", procedure)
		req.Header.Set("Rpc-Caller", "seeder")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		fmt.Println(procedure, w.Code, w.Header().Get("Retry-After"), w.Body.String())
	}

	call("resourcelease::enqueue")
	call("resourcelease::enqueue")

	// The Monitor tells the limiter (one of its listeners) that backpressure is on.
	limiter.OnBackpressure(resourcelease.BackpressureSignal{IsActive: true})
	call("resourcelease::enqueue")
	call("resourcelease::enqueue")
	call("resourcelease::lease")

	// Output:
	// resourcelease::enqueue 200  ok
	// resourcelease::enqueue 200  ok
	// resourcelease::enqueue 200  ok
	// resourcelease::enqueue 429 1 {"message":"rate limit exceeded; retry after 1s","status":"resource-exhausted","code":"error.resourcelease.rate_limited","metadata":{"retryAfterSeconds":"1"}}
	// resourcelease::lease 200  ok
}
