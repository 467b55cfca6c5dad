package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// DefaultMaxBodyBytes is the default request body limit of the RPC handler
// and the control plane: 4 MiB.
const DefaultMaxBodyBytes = 4 << 20

// Codes of the errors a server makes up before any procedure runs.
const (
	// CodeMethodNotAllowed: the request was not a POST.
	CodeMethodNotAllowed = "resourcelease.transport.method_not_allowed"
	// CodeUnauthenticated: the request carries no (valid) credentials.
	CodeUnauthenticated = "error.resourcelease.unauthenticated"
	// CodePermissionDenied: the credentials do not allow the request.
	CodePermissionDenied = "error.resourcelease.permission_denied"
	// CodeBodyTooLarge: the request body exceeded the server's limit.
	CodeBodyTooLarge = "resourcelease.transport.body_too_large"
	// CodeBodyTimeout: the request body did not arrive within the server's
	// body read timeout.
	CodeBodyTimeout = "resourcelease.transport.body_timeout"
)

// DecodeRequest decodes a request body into req. An empty body is {}.
func DecodeRequest(body []byte, req any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	err := json.Unmarshal(body, req)
	if err == nil {
		return nil
	}
	var (
		typeErr   *json.UnmarshalTypeError
		syntaxErr *json.SyntaxError
		msg       string
	)
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		msg = fmt.Sprintf("malformed request body: field %q: cannot use JSON %s as %s", typeErr.Field, typeErr.Value, jsonKind(typeErr.Type.Kind().String()))
	case errors.As(err, &typeErr):
		msg = fmt.Sprintf("malformed request body: cannot use JSON %s here", typeErr.Value)
	case errors.As(err, &syntaxErr):
		msg = fmt.Sprintf("malformed request body: invalid JSON at offset %d", syntaxErr.Offset)
	default:
		msg = "malformed request body: " + HeaderSafe(strings.TrimPrefix(err.Error(), "json: "), 200)
	}
	return &resourcelease.Error{Status: resourcelease.StatusInvalidArgument, Code: resourcelease.CodeInvalidArgument, Message: msg}
}

// jsonKind names a Go kind the way a JSON client thinks of it.
func jsonKind(kind string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float32", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "map", "struct":
		return "an object"
	case "slice", "array":
		return "an array"
	}
	return "this field"
}

// AuthError is the error sent for a failed Authorize: its own *Error, or
// unauthenticated with a generic message.
func AuthError(err error) *resourcelease.Error {
	var e *resourcelease.Error
	if errors.As(err, &e) {
		return Normalize(e)
	}
	return &resourcelease.Error{Status: resourcelease.StatusUnauthenticated, Code: CodeUnauthenticated, Message: "request is not authenticated", Err: err}
}

// BodyTimeout is the error of a request body whose read passed the
// connection's read deadline (transport.ServerConfig.BodyReadTimeout), or
// nil when err is not that.
func BodyTimeout(err error) error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return resourcelease.Errorf(resourcelease.StatusDeadlineExceeded, CodeBodyTimeout, "the request body did not arrive in time")
}

// BodyTooLarge is the error of a request body over its limit.
func BodyTooLarge(limit int64) error {
	return resourcelease.Errorf(resourcelease.StatusResourceExhausted, CodeBodyTooLarge, "request body exceeds %d bytes", limit)
}
