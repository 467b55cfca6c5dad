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

// Header names of the error format, in Go's canonical form.
const (
	// HeaderProcedure names the procedure of a request.
	HeaderProcedure = "Rpc-Procedure"
	// HeaderCaller names the calling service.
	HeaderCaller = "Rpc-Caller"
	// HeaderStatus carries the status name of an error response.
	HeaderStatus = "Rpc-Status"
	// HeaderErrorCode carries the stable code of an error response.
	HeaderErrorCode = "Rpc-Error-Code"
	// HeaderErrorMessage carries the message of an error response.
	HeaderErrorMessage = "Rpc-Error-Message"
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

// WriteError writes err as a protocol error response: the HTTP status of its
// Status, the Rpc-Status, Rpc-Error-Code and Rpc-Error-Message headers, and the
// body {"message","status","code","metadata"}. An error that is not (and does
// not wrap) a *resourcelease.Error is written as internal with a generic
// message, never its own text. The RPC handler, the control plane and the rate
// limiter's middleware all answer errors through it.
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
	if e.Code != "" {
		h.Set(HeaderErrorCode, HeaderSafe(e.Code, MaxHeaderMessage))
	}
	if e.Message != "" {
		h.Set(HeaderErrorMessage, HeaderSafe(e.Message, MaxHeaderMessage))
	}
	// Every overload refusal (backpressure, queue full, rate limit) tells the
	// client when to come back, and so does any error whose metadata says when
	// (a lease refused to a peer whose breaker is open); a middleware that
	// knows better sets it first.
	if h.Get("Retry-After") == "" {
		if secs := e.Metadata[resourcelease.MetadataRetryAfterSeconds]; isDelaySeconds(secs) {
			h.Set("Retry-After", secs)
		} else if e.Status == resourcelease.StatusResourceExhausted {
			h.Set("Retry-After", "1")
		}
	}
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// isDelaySeconds reports whether s is a Retry-After delay: whole seconds,
// digits only.
func isDelaySeconds(s string) bool {
	_, err := strconv.ParseUint(s, 10, 63) // no sign, no spaces
	return err == nil
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

// DecodeError rebuilds the *resourcelease.Error of a non-200 response from its
// body and headers, falling back to the HTTP status code.
func DecodeError(resp *http.Response, body []byte) *resourcelease.Error {
	var eb ErrorBody
	_ = json.Unmarshal(body, &eb) // a proxy's HTML page is not an error body; the headers still help
	e := &resourcelease.Error{
		Status:   resourcelease.Status(eb.Status),
		Code:     eb.Code,
		Message:  eb.Message,
		Metadata: eb.Metadata,
	}
	if len(e.Metadata) == 0 {
		e.Metadata = nil
	}
	if !e.Status.Valid() {
		e.Status = resourcelease.Status(resp.Header.Get(HeaderStatus))
	}
	if !e.Status.Valid() {
		e.Status = resourcelease.StatusFromHTTP(resp.StatusCode)
	}
	if e.Code == "" {
		e.Code = resp.Header.Get(HeaderErrorCode)
	}
	if e.Message == "" {
		e.Message = resp.Header.Get(HeaderErrorMessage)
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace("HTTP " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode))
	}
	return e
}
