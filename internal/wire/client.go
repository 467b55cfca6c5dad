package wire

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Defaults shared by the RPC and control-plane clients.
const (
	// DefaultClientTimeout bounds a call without a context deadline: 30 s.
	DefaultClientTimeout = 30 * time.Second
	// DefaultMaxResponseBytes bounds a response body: 64 MiB.
	DefaultMaxResponseBytes = 64 << 20
	// DefaultMaxIdleConnsPerHost is how many idle connections a client keeps
	// per dispatcher: 128, enough for a worker fleet's long-polls.
	DefaultMaxIdleConnsPerHost = 128
)

// Codes of the errors a client makes up itself (no response, or one it
// cannot use).
const (
	// CodeTransportUnavailable: no response (connection refused, reset...).
	CodeTransportUnavailable = "error.resourcelease.transport_unavailable"
	// CodeResponseTooLarge: the response exceeded the client's limit.
	CodeResponseTooLarge = "error.resourcelease.response_too_large"
	// CodeMalformedResponse: the response could not be decoded.
	CodeMalformedResponse = "error.resourcelease.malformed_response"
)

// CallLimits applies the Timeout and MaxResponseBytes defaults, which
// the RPC and control-plane clients document alike; fn names the
// constructor in the error.
func CallLimits(fn string, timeout time.Duration, maxResponse int64) (time.Duration, int64, error) {
	switch {
	case timeout == 0:
		timeout = DefaultClientTimeout
	case timeout < 0:
		timeout = 0
	}
	switch {
	case maxResponse < 0:
		return 0, 0, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument, "transport: %s: MaxResponseBytes must not be negative, got %d", fn, maxResponse)
	case maxResponse == 0:
		maxResponse = DefaultMaxResponseBytes
	}
	return timeout, maxResponse, nil
}

// NewHTTPTransport returns the default client's Transport: the standard one's
// settings (proxy from the environment, dial and TLS timeouts, HTTP/2) with
// more idle connections kept per host, and tlsCfg (a copy) when not nil.
func NewHTTPTransport(tlsCfg *tls.Config) *http.Transport {
	var t *http.Transport
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		t = dt.Clone()
	} else {
		t = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	t.MaxIdleConns = 4 * DefaultMaxIdleConnsPerHost
	t.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	t.IdleConnTimeout = 90 * time.Second
	if tlsCfg != nil {
		t.TLSClientConfig = tlsCfg.Clone()
	}
	return t
}

// Do does req with hc and reads the response body, at most maxResponse
// bytes; what names the call in the error of a larger one. Client and
// ControlClient share it so that both bound, report and recycle responses
// alike. The body is closed when Do returns; the status is the caller's.
// headersAt is when the response headers arrived.
func Do(hc *http.Client, req *http.Request, maxResponse int64, what string) (*http.Response, []byte, time.Time, error) {
	ctx := req.Context()
	resp, err := hc.Do(req)
	headersAt := time.Now()
	if err != nil {
		return nil, nil, headersAt, TransportError(ctx, err)
	}
	defer func() {
		// Drain a little so that the connection can be reused, then close.
		_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
		_ = resp.Body.Close()
	}()
	out, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, nil, headersAt, TransportError(ctx, err)
	}
	if int64(len(out)) > maxResponse {
		return nil, nil, headersAt, resourcelease.Errorf(resourcelease.StatusResourceExhausted, CodeResponseTooLarge,
			"transport: %s: response exceeds %d bytes", what, maxResponse)
	}
	return resp, out, headersAt, nil
}

// TransportError is the error of a call that got no (complete) response: the
// context's own error when it ended, unavailable otherwise.
func TransportError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		e := resourcelease.AsError(ctxErr)
		return &resourcelease.Error{Status: e.Status, Code: e.Code, Message: e.Message, Err: err}
	}
	return &resourcelease.Error{
		Status:  resourcelease.StatusUnavailable,
		Code:    CodeTransportUnavailable,
		Message: "transport: " + err.Error(),
		Err:     err,
	}
}

// MalformedResponse is the error of a response that could not be decoded.
func MalformedResponse(verb string, err error) error {
	return &resourcelease.Error{Status: resourcelease.StatusInternal, Code: CodeMalformedResponse,
		Message: "transport: malformed " + verb + " response: " + err.Error(), Err: err}
}

// OrEmpty sends {} rather than null for a nil request.
func OrEmpty[T any](req *T) *T {
	if req == nil {
		return new(T)
	}
	return req
}

// CheckClientTLS refuses, as invalid-argument, a client TLS configuration
// that would not be used:
// with an http:// URL (the caller believes the traffic is encrypted) or
// beside an HTTPClient of the caller's own. what prefixes the error
// ("transport: NewClient").
func CheckClientTLS(what string, u *url.URL, hc *http.Client, cfg *tls.Config) error {
	switch {
	case cfg == nil:
		return nil
	case hc != nil:
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"%s: TLS and HTTPClient are exclusive: set the TLSClientConfig of your HTTPClient's Transport", what)
	case u.Scheme != "https":
		return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"%s: TLS is set but the URL %q is not https://", what, u.Redacted())
	}
	return nil
}
