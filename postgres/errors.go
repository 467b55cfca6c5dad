package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
//   - the caller's context ended, or the statement ran out of time (the
//     client-side deadline or the server's statement_timeout):
//     cancelled or deadline-exceeded;
//   - a data exception (SQLSTATE class 22: a value the column cannot hold):
//     invalid-argument;
//   - anything else — connection refused or reset, the server shutting
//     down, starting up or in recovery, too many connections, a read-only
//     standby after a failover, a serialization failure, the schema gone:
//     unavailable with code storage_unavailable, which callers retry
//     (another dispatcher, or this one once the database is back).
//
// The SQLSTATE, when the server sent one, is in the error's metadata under
// "sqlstate". The cause stays in Err (never sent on the wire); it is the
// context's error joined with the driver's when the context ended, so
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
	var pgErr *pgconn.PgError
	isPg := errors.As(err, &pgErr)
	var meta map[string]string
	if isPg {
		meta = map[string]string{"sqlstate": pgErr.Code}
	}
	switch {
	case pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) || (isPg && pgErr.Code == "57014"):
		// 57014 query_canceled: statement_timeout, or a cancel request.
		return &resourcelease.Error{Status: resourcelease.StatusDeadlineExceeded, Code: resourcelease.CodeDeadlineExceeded, Message: msg, Metadata: meta, Err: err}
	case errors.Is(err, context.Canceled):
		return &resourcelease.Error{Status: resourcelease.StatusCancelled, Code: resourcelease.CodeCancelled, Message: msg, Metadata: meta, Err: err}
	case isPg && strings.HasPrefix(pgErr.Code, "22"):
		return &resourcelease.Error{Status: resourcelease.StatusInvalidArgument, Code: resourcelease.CodeInvalidArgument, Message: msg, Metadata: meta, Err: err}
	}
	return &resourcelease.Error{Status: resourcelease.StatusUnavailable, Code: resourcelease.CodeStorageUnavailable, Message: msg, Metadata: meta, Err: err}
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
