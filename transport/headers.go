package transport

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// checkEncoding accepts an absent Rpc-Encoding, "json" and "application/json"
// (case-insensitive, media-type parameters ignored).
func checkEncoding(v string) *resourcelease.Error {
	if i := strings.IndexByte(v, ';'); i >= 0 {
		v = v[:i]
	}
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "json", "application/json":
		return nil
	}
	return resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeUnsupportedEncoding,
		"unsupported %s %q: want json or application/json", HeaderEncoding, wire.HeaderSafe(v, 64))
}

// maxTTLMs is the largest TTL in milliseconds that fits a time.Duration.
const maxTTLMs = math.MaxInt64 / int64(time.Millisecond)

// parseTTLMs parses a TTL header value: a decimal number of milliseconds that
// fits a time.Duration, positive, or zero when allowZero (yarpc takes a
// Context-TTL-MS of 0 as a deadline already past).
func parseTTLMs(name, v string, allowZero bool) (time.Duration, *resourcelease.Error) {
	ms, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	switch {
	case err != nil:
		return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeInvalidDeadline,
			"%s %q is not a number of milliseconds", name, wire.HeaderSafe(v, 64))
	case ms < 0 && allowZero:
		return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeInvalidDeadline,
			"%s must not be negative, got %d", name, ms)
	case ms <= 0 && !allowZero:
		return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeInvalidDeadline,
			"%s must be positive, got %d", name, ms)
	case ms > maxTTLMs:
		return 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeInvalidDeadline,
			"%s %d is out of range", name, ms)
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// requestDeadline computes a request's deadline from Context-TTL-MS (yarpc's),
// Rpc-Ttl-Ms and Rpc-Deadline: every one present must be valid, the earliest
// wins, and none may be later than now+maxTTL (later ones are cut to it).
// Without any, the deadline is now+maxTTL.
func requestDeadline(h http.Header, now time.Time, maxTTL time.Duration) (time.Time, *resourcelease.Error) {
	deadline := now.Add(maxTTL)
	for _, name := range [...]string{HeaderContextTTLMs, HeaderTTLMs} {
		v := h.Get(name)
		if v == "" {
			continue
		}
		ttl, err := parseTTLMs(name, v, name == HeaderContextTTLMs)
		if err != nil {
			return time.Time{}, err
		}
		if ttl < maxTTL {
			deadline = minTime(deadline, now.Add(ttl))
		}
	}
	if v := strings.TrimSpace(h.Get(HeaderDeadline)); v != "" {
		d, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeInvalidDeadline,
				"%s %q is not an RFC 3339 time", HeaderDeadline, wire.HeaderSafe(v, 64))
		}
		deadline = minTime(deadline, d)
	}
	return deadline, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
