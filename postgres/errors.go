package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// CodeSchemaTooNew is the code of the error Open returns for a database
// whose schema was migrated by a newer leasemesh than this one: this build
// does not know what the newer version changed, so it refuses to touch it.
const CodeSchemaTooNew = "error.resourcelease.schema_too_new"

// errStoreClosed is the cause of the error every method returns after Close.
var errStoreClosed = errors.New("postgres store is closed")

func invalidArgument(format string, args ...any) error {
	return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
		"postgres: "+format, args...)
}

// closedError is what a closed store answers.
func closedError(op string) error {
	return &resourcelease.Error{
		Status:  resourcelease.StatusUnavailable,
		Code:    resourcelease.CodeClosed,
		Message: "postgres: " + op + ": store is closed",
		Err:     errStoreClosed,
	}
}

// ctxErr returns the context's error as an *resourcelease.Error if ctx is
// done, so a call with a dead context fails before it touches the database.
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return resourcelease.AsError(err)
	}
	return nil
}

// storageError turns a failure of the database into an *resourcelease.Error
// naming op:
//
//   - the caller's context ended: cancelled or deadline-exceeded;
//   - the server cancelled the statement (SQLSTATE 57014: statement_timeout,
//     or an operator's pg_cancel_backend): deadline-exceeded;
//   - a data exception (SQLSTATE class 22: a value the column cannot hold):
//     invalid-argument;
//   - anything else — connection refused, reset or timed out, the server
//     shutting down, starting up or in recovery, too many connections, a
//     read-only standby after a failover, a serialization failure, the
//     schema gone: unavailable with code storage_unavailable, which callers
//     retry (on another dispatcher, or on this one once the database is
//     back).
//
// The SQLSTATE, when the server sent one, is in the error's metadata under
// "sqlstate". The cause stays in Err (never sent on the wire); when the
// context ended it is the context's error joined with the driver's, so
// errors.Is(err, context.Canceled) holds whichever of them pgx returned.
func storageError(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var le *resourcelease.Error
	if errors.As(err, &le) {
		return le
	}
	msg := "postgres: " + op + ": " + oneLine(err)
	if cerr := ctx.Err(); cerr != nil {
		cause := err
		if !errors.Is(err, cerr) {
			cause = errors.Join(cerr, err)
		}
		e := resourcelease.AsError(cerr)
		return &resourcelease.Error{Status: e.Status, Code: e.Code, Message: msg, Err: cause}
	}
	// The context is live, so a timeout here is the store's own (the
	// connect timeout): the database did not answer in time, which is
	// unavailability, not the caller's deadline.
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return &resourcelease.Error{Status: resourcelease.StatusUnavailable, Code: resourcelease.CodeStorageUnavailable, Message: msg, Err: err}
	}
	meta := map[string]string{"sqlstate": pgErr.Code}
	switch {
	case pgErr.Code == "57014":
		return &resourcelease.Error{Status: resourcelease.StatusDeadlineExceeded, Code: resourcelease.CodeDeadlineExceeded, Message: msg, Metadata: meta, Err: err}
	case strings.HasPrefix(pgErr.Code, "22"):
		return &resourcelease.Error{Status: resourcelease.StatusInvalidArgument, Code: resourcelease.CodeInvalidArgument, Message: msg, Metadata: meta, Err: err}
	}
	return &resourcelease.Error{Status: resourcelease.StatusUnavailable, Code: resourcelease.CodeStorageUnavailable, Message: msg, Metadata: meta, Err: err}
}

// connectionLost reports whether err says an established connection is
// gone: the server closed it (shutting down, crashed, restarted, or an
// operator terminated the backend) or the network broke it. After a server
// restart every idle connection of the pool is dead, and each would fail
// one call before the pool learnt of it.
func connectionLost(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03": // admin_shutdown, crash_shutdown, cannot_connect_now
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection_exception
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return false // no connection was made
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false // pgx closes a connection a deadline cut; the pool drops it
	}
	var netErr net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		(errors.As(err, &netErr) && !netErr.Timeout())
}

// oneLine flattens pgx's multi-line connect errors (one line per address
// tried) so a message fits a log line.
func oneLine(err error) string {
	s := err.Error()
	if !strings.Contains(s, "\n") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

// schemaTooNew reports a database migrated past this build's migrations.
func schemaTooNew(schema string, have, know int) error {
	return &resourcelease.Error{
		Status: resourcelease.StatusFailedPrecondition,
		Code:   CodeSchemaTooNew,
		Message: fmt.Sprintf("postgres: schema %s is at version %d, newer than this build's %d: upgrade leasemesh",
			schema, have, know),
	}
}
