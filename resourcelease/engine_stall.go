package resourcelease

// storageStaller is what the engine asks of its Journal, when the Journal
// has it, before granting a lease or recording a heartbeat: a journal whose
// writer is stalled on a storage failure (retrying, answering every change
// unavailable at once) returns that failure. Those calls are refused up
// front then, so that long-polls, heartbeats and the lease/give-back pair
// of every lease attempt do not fill the journal's bounded backlog of
// changes waiting for the disk.
type storageStaller interface {
	StorageStalled() error
}

// StorageStalled forwards to the Replicator, so that the engine behind a
// LocalDispatcher sees its stall.
func (j dispatcherJournal) StorageStalled() error {
	if s, ok := j.d.repl.(storageStaller); ok {
		return s.StorageStalled()
	}
	return nil
}

// stalled returns the journal's stall, as an *Error, or nil. Callers hold
// q.mu (the journal's own lock comes after it, as in Record).
func (q *Engine) stalled() error {
	s, ok := q.journal.(storageStaller)
	if !ok {
		return nil
	}
	if err := s.StorageStalled(); err != nil {
		return AsError(err)
	}
	return nil
}
