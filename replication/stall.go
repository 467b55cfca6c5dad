package replication

import (
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// transient reports whether a failed write may succeed when retried as is:
// the database is busy or locked (another process holds it), the disk is
// full, or an I/O error — faults that clear outside the process. Anything
// else — a change the store cannot turn into rows, a constraint (an event
// row that already exists), a schema error (a missing table), the queue
// tables out of step with the log, any error SQLite did not raise — fails
// the same way every time, so the writer poisons at once rather than retry
// for ever. retryable judges the driver's error (SQLiteConfig.Retryable);
// nil judges SQLite's message.
func transient(e *resourcelease.Error, retryable func(error) bool) bool {
	if e.Metadata[MetaStage] == stageApply {
		return false
	}
	cause := e.Err
	if cause == nil {
		return false
	}
	if retryable != nil {
		return retryable(cause)
	}
	return retryableMessage(cause)
}

// retryableMessages are the messages SQLite gives its BUSY, LOCKED, FULL
// and IOERR results (sqlite3_errstr), which every driver passes on.
var retryableMessages = []string{
	"database is locked", "database table is locked", "database or disk is full", "disk I/O error",
}

// retryableMessage is transient's judgement without a driver: by SQLite's
// own message, since this package imports no driver.
func retryableMessage(err error) bool {
	msg := err.Error()
	for _, m := range retryableMessages {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}
