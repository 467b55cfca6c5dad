package replication

// MaxStalledEntries is maxStalledEntries, for the stall tests.
const MaxStalledEntries = maxStalledEntries
