package wire_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// TestWriteDecodeRoundTrip: every status written by WriteError decodes back
// to the same error, headers and body agreeing, a long message whole.
func TestWriteDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	statuses := []resourcelease.Status{
		resourcelease.StatusInvalidArgument, resourcelease.StatusNotFound, resourcelease.StatusResourceExhausted,
		resourcelease.StatusDeadlineExceeded, resourcelease.StatusCancelled, resourcelease.StatusUnavailable,
		resourcelease.StatusInternal, resourcelease.StatusAlreadyExists, resourcelease.StatusFailedPrecondition,
		resourcelease.StatusPermissionDenied, resourcelease.StatusUnauthenticated, resourcelease.StatusUnimplemented,
		resourcelease.StatusUnknown, resourcelease.StatusAborted, resourcelease.StatusOutOfRange, resourcelease.StatusDataLoss,
	}
	long := strings.Repeat("é", wire.MaxHeaderMessage) // 2 bytes a rune: the header is cut, the body is not
	for _, st := range statuses {
		t.Run(string(st), func(t *testing.T) {
			t.Parallel()
			in := &resourcelease.Error{Status: st, Code: "app.code", Message: long + "\nend", Metadata: map[string]string{"k": "v"}}
			rec := httptest.NewRecorder()
			wire.WriteError(rec, in)
			res := rec.Result()
			require.Equal(t, st.HTTPStatus(), res.StatusCode)
			require.Equal(t, string(st), res.Header.Get(wire.HeaderErrorCode))
			require.Equal(t, string(st), res.Header.Get(wire.HeaderStatus))
			require.Equal(t, "app.code", res.Header.Get(wire.HeaderErrorName))
			require.LessOrEqual(t, len(res.Header.Get(wire.HeaderErrorMessage)), wire.MaxHeaderMessage)
			require.Empty(t, res.Header.Get(wire.HeaderBothResponseError), "only the handler, which sees the request, marks it")
			require.Equal(t, st, wire.ResponseStatus(res))
			got := wire.DecodeError(res, rec.Body.Bytes())
			require.Equal(t, in, got)
		})
	}
}

// TestMarkBothResponseError: only an error in the protocol's format, to a
// request that accepts it.
func TestMarkBothResponseError(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		header   http.Header
		accepted bool
		want     string
	}{
		{"protocol error, accepted", http.Header{wire.HeaderErrorCode: {"not-found"}}, true, "true"},
		{"protocol error, not accepted", http.Header{wire.HeaderErrorCode: {"not-found"}}, false, ""},
		{"a plain-text error", http.Header{"Content-Type": {"text/plain"}}, true, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wire.MarkBothResponseError(tt.header, tt.accepted)
			require.Equal(t, tt.want, tt.header.Get(wire.HeaderBothResponseError))
		})
	}
	require.True(t, wire.AcceptsBothResponseError(http.Header{wire.HeaderAcceptsBothResponseError: {"true"}}))
	require.False(t, wire.AcceptsBothResponseError(http.Header{wire.HeaderAcceptsBothResponseError: {"yes"}}))
}

// TestWriteErrorForeign: an error that is no *resourcelease.Error goes on the
// wire as a generic internal error, its text never.
func TestWriteErrorForeign(t *testing.T) {
	t.Parallel()
	rec := httptest.NewRecorder()
	wire.WriteError(rec, errString("db password hunter2"))
	require.Equal(t, http.StatusInternalServerError, rec.Code)
	require.NotContains(t, rec.Body.String()+rec.Header().Get(wire.HeaderErrorMessage), "hunter2")
	require.Equal(t, "internal", rec.Header().Get(wire.HeaderErrorCode))
	require.Equal(t, resourcelease.CodeInternal, rec.Header().Get(wire.HeaderErrorName))
}

type errString string

func (e errString) Error() string { return string(e) }

// A Retry-After header without metadata (a proxy's 503, a yarpc server's
// 429) reaches the caller in the error's metadata, as ours does.
func TestDecodeErrorReadsRetryAfterHeader(t *testing.T) {
	for _, tt := range []struct {
		name, header, body, want string
	}{
		{"proxy 503", "7", "<html>busy</html>", "7"},
		{"the body wins", "7", `{"message":"m","status":"resource-exhausted","code":"c","metadata":{"retryAfterSeconds":"3"}}`, "3"},
		{"an HTTP date is not read", "Wed, 21 Oct 2015 07:28:00 GMT", "", ""},
		{"none", "", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: http.StatusServiceUnavailable, Header: http.Header{}}
			if tt.header != "" {
				resp.Header.Set("Retry-After", tt.header)
			}
			e := wire.DecodeError(resp, []byte(tt.body))
			if got := e.Metadata[wire.MetadataRetryAfter]; got != tt.want {
				t.Fatalf("retryAfterSeconds = %q, want %q", got, tt.want)
			}
		})
	}
}
