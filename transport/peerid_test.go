package transport_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// TestPeerIDLengthIsBounded: a caller or peer id longer than MaxPeerIDBytes
// is refused before the Dispatcher sees it (peer health and every event would
// otherwise keep it), and one of exactly MaxPeerIDBytes is served.
func TestPeerIDLengthIsBounded(t *testing.T) {
	t.Parallel()
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	h := newHandler(t, d, transport.HandlerConfig{})
	long := strings.Repeat("p", transport.MaxPeerIDBytes+1)
	fits := strings.Repeat("p", transport.MaxPeerIDBytes)
	for _, tc := range []struct {
		name    string
		verb    string
		body    string
		headers hdr
		refused bool
	}{
		{"long Rpc-Caller", "stats", `{}`, hdr{transport.HeaderCaller: long}, true},
		{"long x-peer-id", "stats", `{}`, hdr{transport.HeaderPeerID: long}, true},
		{"long lease peerId", "lease", `{"peerId":"` + long + `"}`, nil, true},
		{"longest allowed caller", "stats", `{}`, hdr{transport.HeaderCaller: fits}, false},
		{"longest allowed peerId", "lease", `{"peerId":"` + fits + `"}`, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := call(h, tc.verb, tc.body, tc.headers)
			if tc.refused {
				requireError(t, rec, http.StatusBadRequest, resourcelease.StatusInvalidArgument, transport.CodePeerIDTooLong)
				return
			}
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		})
	}
}
