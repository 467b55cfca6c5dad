package backpressure_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/leasemesh/leasemesh/backpressure"
)

// TestCallerKeyIsBounded: a huge Rpc-Caller costs the per-key limiter a
// fixed-size key, distinct callers keep distinct keys, and short callers are
// used as they are.
func TestCallerKeyIsBounded(t *testing.T) {
	key := func(caller string) string {
		r := httptest.NewRequest("POST", "/", nil)
		r.Header.Set("Rpc-Caller", caller)
		return backpressure.CallerKey(r)
	}
	a, b := key(strings.Repeat("a", 1<<20)), key(strings.Repeat("a", 1<<20-1)+"b")
	if len(a) > 128 || len(b) > 128 {
		t.Fatalf("keys of %d and %d bytes for 1 MiB callers, want at most 128", len(a), len(b))
	}
	if a == b {
		t.Fatal("two different long callers share a limiter key")
	}
	if got := key("producer-1"); got != "producer-1" {
		t.Fatalf("short caller key = %q, want it unchanged", got)
	}
}
