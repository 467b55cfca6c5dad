package replication

import (
	"errors"

	"github.com/mattn/go-sqlite3"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// transient reports whether a failed write may succeed when retried as is:
// SQLite said the database is busy or locked (another process holds it),
// the disk is full, or an I/O error — faults that clear outside the
// process. Anything else — a change the store cannot turn into rows, a
// constraint (an event row that already exists), a schema error (a missing
// table), the queue tables out of step with the log, any error SQLite did
// not raise — fails the same way every time, so the writer poisons at once
// rather than retry for ever.
func transient(e *resourcelease.Error) bool {
	if e.Metadata[MetaStage] == stageApply {
		return false
	}
	var se sqlite3.Error
	if !errors.As(e, &se) {
		return false
	}
	switch se.Code {
	case sqlite3.ErrBusy, sqlite3.ErrLocked, sqlite3.ErrFull, sqlite3.ErrIoErr:
		return true
	}
	return false
}
