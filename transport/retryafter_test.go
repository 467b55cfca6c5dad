package transport_test

import (
	"net/http/httptest"
	"testing"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

func TestWriteErrorRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		preset string
		want   string
	}{
		{"backpressure refusal", resourcelease.ErrBackpressure, "", "1"},
		{"queue full", resourcelease.ErrQueueFull, "", "1"},
		{"middleware set its own", resourcelease.ErrRateLimited, "7", "7"},
		{"not an overload", resourcelease.ErrUnknownToken, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			if tc.preset != "" {
				rec.Header().Set("Retry-After", tc.preset)
			}
			transport.WriteError(rec, tc.err)
			if got := rec.Header().Get("Retry-After"); got != tc.want {
				t.Fatalf("Retry-After = %q, want %q", got, tc.want)
			}
		})
	}
}
