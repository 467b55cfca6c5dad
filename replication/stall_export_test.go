package replication

// MaxStalledEntries is maxStalledEntries, for the stall tests.
const MaxStalledEntries = maxStalledEntries

// Poisoned reports whether r gave up for good (as opposed to stalled,
// retrying), for the stall tests.
func Poisoned(r *SQLiteReplicator) bool {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	return r.c.failed != nil
}
