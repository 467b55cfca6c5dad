//go:build race

package deterministic_test

// walSlack is how many MaxWALPages beyond the bound the WAL tests allow: the
// race detector slows the checkpointer far more than SQLite's own writes.
const walSlack = 12
