package resourcelease

// LiveLeasesForTest is how many live leases d's metrics keep.
func LiveLeasesForTest(d *LocalDispatcher) int { return d.liveLeases() }
