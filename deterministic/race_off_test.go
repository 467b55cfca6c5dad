//go:build !race

package deterministic_test

// walSlack is how many MaxWALPages beyond the bound the WAL tests allow for
// checkpoints slowed by a loaded machine.
const walSlack = 6
