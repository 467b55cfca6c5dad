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
		{"a refused peer is told the rest of its cool-down", &resourcelease.Error{Status: resourcelease.StatusFailedPrecondition, Code: resourcelease.CodePeerIneligible,
			Metadata: map[string]string{resourcelease.MetadataRetryAfterSeconds: "30"}}, "", "30"},
		{"an overload that says when", &resourcelease.Error{Status: resourcelease.StatusResourceExhausted, Code: resourcelease.CodeRateLimited,
			Metadata: map[string]string{resourcelease.MetadataRetryAfterSeconds: "5"}}, "", "5"},
		{"a malformed delay is not sent", &resourcelease.Error{Status: resourcelease.StatusFailedPrecondition, Code: resourcelease.CodePeerIneligible,
			Metadata: map[string]string{resourcelease.MetadataRetryAfterSeconds: "+5\r\nX: y"}}, "", ""},
		{"a malformed delay on an overload falls back to one second", &resourcelease.Error{Status: resourcelease.StatusResourceExhausted, Code: resourcelease.CodeQueueFull,
			Metadata: map[string]string{resourcelease.MetadataRetryAfterSeconds: "soon"}}, "", "1"},
		{"breaker open: the metadata's delay, whatever the status", withRetryAfter(resourcelease.ErrPeerIneligible, "30"), "", "30"},
		{"rate limit: the metadata's delay", withRetryAfter(resourcelease.ErrRateLimited, "4"), "", "4"},
		{"any status with the metadata", withRetryAfter(resourcelease.ErrClosed, "2"), "", "2"},
		{"unusable metadata is ignored", withRetryAfter(resourcelease.ErrPeerIneligible, "soon"), "", ""},
		{"a zero delay is ignored", withRetryAfter(resourcelease.ErrPeerIneligible, "0"), "", ""},
		{"unusable metadata on an overload: 1 s", withRetryAfter(resourcelease.ErrQueueFull, "-3"), "", "1"},
		{"a preset header wins over the metadata", withRetryAfter(resourcelease.ErrPeerIneligible, "30"), "9", "9"},
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

// withRetryAfter returns a copy of e with metadata retryAfterSeconds.
func withRetryAfter(e *resourcelease.Error, secs string) *resourcelease.Error {
	c := *e
	c.Metadata = map[string]string{"retryAfterSeconds": secs}
	return &c
}
