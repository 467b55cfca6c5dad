// Package wire is the one place where leasemesh's HTTP error format is
// written and read: the RPC handler, the control plane and the rate
// limiter's middleware answer errors through WriteError, and the Go clients
// read them back with DecodeError, so the format cannot drift between them.
package wire

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Header names of the protocol that the error format uses, in Go's
// canonical form (yarpc's transport/http constants.go spells the same names).
const (
	// HeaderProcedure names the procedure of a request.
	HeaderProcedure = "Rpc-Procedure"
	// HeaderCaller names the calling service.
	HeaderCaller = "Rpc-Caller"
	// HeaderService names the service a request is for; yarpc servers echo
	// it in every response.
	HeaderService = "Rpc-Service"
	// HeaderStatus is yarpc's Rpc-Status: "success" on a success; on an
	// error leasemesh puts the status there (yarpc-go leaves "success" or
	// puts "error").
	HeaderStatus = "Rpc-Status"
	// HeaderErrorCode carries the status of an error response: yarpc's code
	// name, e.g. "not-found". leasemesh servers before the yarpc alignment
	// put the stable code here.
	HeaderErrorCode = "Rpc-Error-Code"
	// HeaderErrorName carries the stable code of an error response, e.g.
	// "error.resourcelease.unknown_token" (yarpc's error name).
	HeaderErrorName = "Rpc-Error-Name"
	// HeaderErrorMessage carries the message of an error response.
	HeaderErrorMessage = "Rpc-Error-Message"
	// HeaderAcceptsBothResponseError is sent by a client that reads an
	// error's message from Rpc-Error-Message and leaves the body alone.
	HeaderAcceptsBothResponseError = "Rpc-Accepts-Both-Response-Error"
	// HeaderBothResponseError answers HeaderAcceptsBothResponseError on an
	// error response.
	HeaderBothResponseError = "Rpc-Both-Response-Error"
	// HeaderRetryAfter tells a refused client when to come back, in seconds.
	HeaderRetryAfter = "Retry-After"
)

// Header values of the protocol.
const (
	// StatusSuccess is the Rpc-Status of a success.
	StatusSuccess = "success"
	// AcceptTrue is the value of HeaderAcceptsBothResponseError and
	// HeaderBothResponseError.
	AcceptTrue = "true"
	// MetadataRetryAfter is the metadata key whose value (whole seconds)
	// WriteError also sends as Retry-After, whatever the status.
	MetadataRetryAfter = "retryAfterSeconds"
)

// ErrorBody is the JSON body of an error response:
// {"message","status","code","metadata"}. Metadata is always an object.
type ErrorBody struct {
	Message  string            `json:"message"`
	Status   string            `json:"status"`
	Code     string            `json:"code"`
	Metadata map[string]string `json:"metadata"`
}

// MaxHeaderMessage bounds the Rpc-Error-Message header; the body carries the
// full message.
const MaxHeaderMessage = 1024

// Normalize converts err to the *resourcelease.Error that is put on the wire.
// An *Error in the chain is sent as is (its Err never is), except that an
// unknown status becomes internal; context errors become deadline-exceeded or
// cancelled; anything else becomes internal with a generic message.
func Normalize(err error) *resourcelease.Error {
	e := resourcelease.AsError(err)
	if e == nil {
		e = &resourcelease.Error{Status: resourcelease.StatusInternal, Code: resourcelease.CodeInternal, Message: "internal error"}
	}
	if !e.Status.Valid() {
		e = &resourcelease.Error{Status: resourcelease.StatusInternal, Code: e.Code, Message: e.Message, Metadata: e.Metadata}
	}
	return e
}

// IsForeign reports whether err carries no *resourcelease.Error and is not a
// context error: such errors are internal and their text stays in the log.
func IsForeign(err error) bool {
	var e *resourcelease.Error
	return !errors.As(err, &e) && resourcelease.AsError(err).Status == resourcelease.StatusInternal
}

// WriteError writes err as a protocol error response, yarpc's layout with
// leasemesh's JSON body: the HTTP status of its Status (yarpc's table), the
// headers Rpc-Status and Rpc-Error-Code (the status), Rpc-Error-Name (the
// stable code), Rpc-Error-Message and, when the metadata has
// retryAfterSeconds or the status is resource-exhausted, Retry-After; and
// the body {"message","status","code","metadata"}. An error that is not (and
// does not wrap) a *resourcelease.Error is written as internal with a generic
// message, never its own text. The RPC handler, the control plane and the
// rate limiter's middleware all answer errors through it.
func WriteError(w http.ResponseWriter, err error) {
	WriteNormalized(w, Normalize(err))
}

// WriteNormalized writes an already normalised error.
func WriteNormalized(w http.ResponseWriter, e *resourcelease.Error) {
	WriteNormalizedStatus(w, e, e.Status.HTTPStatus())
}

// WriteNormalizedStatus writes e with the given HTTP status (for an answer
// whose HTTP status is not e.Status's, such as 405).
func WriteNormalizedStatus(w http.ResponseWriter, e *resourcelease.Error, httpStatus int) {
	md := e.Metadata
	if md == nil {
		md = map[string]string{}
	}
	body, err := json.Marshal(ErrorBody{Message: e.Message, Status: string(e.Status), Code: e.Code, Metadata: md})
	if err != nil { // unreachable: strings only
		body = []byte(`{"message":"internal error","status":"internal","code":"` + resourcelease.CodeInternal + `","metadata":{}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set(HeaderStatus, string(e.Status))
	h.Set(HeaderErrorCode, string(e.Status))
	if e.Code != "" {
		h.Set(HeaderErrorName, HeaderSafe(e.Code, MaxHeaderMessage))
	}
	if e.Message != "" {
		h.Set(HeaderErrorMessage, HeaderSafe(e.Message, MaxHeaderMessage))
	}
	// Every refusal that knows when to come back says so (a breaker's
	// cool-down, a rate limit's refill); every overload refusal (backpressure,
	// queue full) says at least 1 s. A middleware that knows better sets the
	// header first.
	if h.Get(HeaderRetryAfter) == "" {
		if secs, err := strconv.ParseInt(md[MetadataRetryAfter], 10, 64); err == nil && secs > 0 {
			h.Set(HeaderRetryAfter, strconv.FormatInt(secs, 10))
		} else if e.Status == resourcelease.StatusResourceExhausted {
			h.Set(HeaderRetryAfter, "1")
		}
	}
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// AcceptsBothResponseError reports whether request headers h carry
// Rpc-Accepts-Both-Response-Error: true.
func AcceptsBothResponseError(h http.Header) bool {
	return h.Get(HeaderAcceptsBothResponseError) == AcceptTrue
}

// MarkBothResponseError adds Rpc-Both-Response-Error: true to the response
// headers h when the request accepted it and h are those of an error written
// in the protocol's format (they have Rpc-Error-Code). A yarpc client then
// reads the message from Rpc-Error-Message instead of taking the whole body
// for it. A plain-text error of some middleware is left alone: its body is
// its message.
func MarkBothResponseError(h http.Header, accepted bool) {
	if accepted && h.Get(HeaderErrorCode) != "" {
		h.Set(HeaderBothResponseError, AcceptTrue)
	}
}

// HeaderSafe returns s with control characters replaced by spaces and
// invalid UTF-8 dropped, cut to at most max bytes on a rune boundary, so that
// it is a valid header value.
func HeaderSafe(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError {
			continue
		}
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// maxTextMessage bounds the message taken from a plain-text error body.
const maxTextMessage = 4 << 10

// DecodeError rebuilds the *resourcelease.Error of an error response. It
// understands the layouts a client meets:
//
//   - yarpc's (a leasemesh server's, or a yarpc-go server's): the status in
//     Rpc-Error-Code, the stable code in Rpc-Error-Name, the message in
//     Rpc-Error-Message;
//   - leasemesh's JSON body {"message","status","code","metadata"}, which
//     fills in what the headers lack (and gives the full message and the
//     metadata when it agrees with them);
//   - an older leasemesh server's, whose Rpc-Error-Code is the stable code
//     (a value that is no status name) and whose status is in the body or
//     Rpc-Status;
//   - an older yarpc server's (or one whose client did not accept both
//     response and error), whose message is the text/plain body;
//
// and falls back to the status the HTTP status code stands for, and to the
// message "HTTP <code> <text>".
func DecodeError(resp *http.Response, body []byte) *resourcelease.Error {
	e := &resourcelease.Error{}
	if v := strings.TrimSpace(resp.Header.Get(HeaderErrorCode)); v != "" {
		if st := resourcelease.Status(strings.ToLower(v)); st.Valid() {
			e.Status = st
			e.Code = resp.Header.Get(HeaderErrorName)
		} else {
			e.Code = v // an older leasemesh server
		}
	}
	e.Message = resp.Header.Get(HeaderErrorMessage)

	headerStatus := e.Status
	var eb ErrorBody
	if json.Unmarshal(body, &eb) == nil && (eb.Status != "" || eb.Code != "" || eb.Message != "") {
		// A body of ours. It fills in what the headers lack unless it names
		// another status than they do: then it is no error body (the
		// response half of a yarpc "both response and error", say).
		if st := resourcelease.Status(eb.Status); headerStatus == "" || st == headerStatus {
			if e.Status == "" && st.Valid() {
				e.Status = st
			}
			if e.Code == "" {
				e.Code = eb.Code
			}
			if eb.Code == e.Code { // the same error: the body has the message uncut
				if eb.Message != "" {
					e.Message = eb.Message
				}
				if len(eb.Metadata) > 0 {
					e.Metadata = eb.Metadata
				}
			}
		}
	} else if e.Message == "" && isPlainText(resp.Header.Get("Content-Type")) {
		// yarpc's message when the client did not accept both response and
		// error (and every yarpc server's before that header).
		e.Message = HeaderSafe(strings.TrimSpace(string(body)), maxTextMessage)
	}
	if e.Status == "" {
		e.Status = resourcelease.Status(resp.Header.Get(HeaderStatus)) // an older leasemesh server; never "success"
	}
	if !e.Status.Valid() {
		e.Status = resourcelease.StatusFromHTTP(resp.StatusCode)
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace("HTTP " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode))
	}
	// A proxy's Retry-After (delay seconds) reaches the caller the way ours
	// does, in the metadata. Our own errors carry a code and say it in the
	// metadata when they mean it, so only a foreign error is read this way.
	if secs, err := strconv.ParseInt(strings.TrimSpace(resp.Header.Get(HeaderRetryAfter)), 10, 64); err == nil && secs > 0 && e.Code == "" && e.Metadata[MetadataRetryAfter] == "" {
		md := make(map[string]string, len(e.Metadata)+1)
		for k, v := range e.Metadata {
			md[k] = v
		}
		md[MetadataRetryAfter] = strconv.FormatInt(secs, 10)
		e.Metadata = md
	}
	return e
}

// isPlainText reports whether a Content-Type is text/plain (yarpc writes
// "text/plain; charset=utf8").
func isPlainText(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/plain")
}

// ResponseStatus returns the status of a response: "" for a 2xx, else its
// Rpc-Error-Code when that is a status name, else its Rpc-Status when that
// is one (an older leasemesh server), else the status its HTTP status code
// stands for. It reads headers only, so it suits a RoundTripper that labels
// metrics (a misbehaving server cannot make up label values).
func ResponseStatus(resp *http.Response) resourcelease.Status {
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return ""
	}
	for _, v := range [...]string{resp.Header.Get(HeaderErrorCode), resp.Header.Get(HeaderStatus)} {
		if st := resourcelease.Status(strings.ToLower(strings.TrimSpace(v))); st.Valid() {
			return st
		}
	}
	return resourcelease.StatusFromHTTP(resp.StatusCode)
}
