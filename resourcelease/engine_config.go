package resourcelease

import "time"

func (c *QueueConfig) applyDefaults() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"LeaseDuration", c.LeaseDuration}, {"HeartbeatInterval", c.HeartbeatInterval},
		{"SweepInterval", c.SweepInterval}, {"RequeueDelay", c.RequeueDelay},
		{"MaxRequeueDelay", c.MaxRequeueDelay},
	} {
		if d.v < 0 {
			return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: %s must not be negative, got %v", d.name, d.v)
		}
		if d.v > MaxDuration {
			return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: %s must be at most %v, got %v", d.name, MaxDuration, d.v)
		}
	}
	if c.Capacity < -1 {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: Capacity must be -1 (unbounded), 0 (default) or positive, got %d", c.Capacity)
	}
	if c.MaxDeliveryAttempts < 0 {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: MaxDeliveryAttempts must not be negative, got %d", c.MaxDeliveryAttempts)
	}
	if c.MaxReleases < -1 {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: MaxReleases must be -1 (no limit), 0 (default) or positive, got %d", c.MaxReleases)
	}
	if c.MaxDedupeEntries < -1 {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: MaxDedupeEntries must be -1 (unbounded), 0 (default) or positive, got %d", c.MaxDedupeEntries)
	}
	if c.DedupeWindow < -1 {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: DedupeWindow must be -1 (off), 0 (default) or positive, got %v", c.DedupeWindow)
	}
	if c.DelayedCapacity < -1 {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: DelayedCapacity must be -1 (unbounded), 0 (default) or positive, got %d", c.DelayedCapacity)
	}
	if c.MaxActivePerPartition < 0 {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: MaxActivePerPartition must be 0 (no limit) or positive, got %d", c.MaxActivePerPartition)
	}
	if !c.Fairness.Valid() {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: Fairness must be %q or %q, got %q", FairnessFIFO, FairnessPartitions, c.Fairness)
	}
	if c.DeadLetterRetention < 0 || c.DeadLetterRetention > MaxDuration {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: DeadLetterRetention must be between 0 (keep them) and %v, got %v", MaxDuration, c.DeadLetterRetention)
	}
	if c.MaxDeadLetters < -1 {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: MaxDeadLetters must be -1 (unbounded), 0 (default) or positive, got %d", c.MaxDeadLetters)
	}
	if c.FullMode != FullWait && c.FullMode != FullReject {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: unknown FullMode %d", c.FullMode)
	}
	if c.Capacity == 0 {
		c.Capacity = DefaultCapacity
	}
	if c.DelayedCapacity == 0 {
		c.DelayedCapacity = DefaultDelayedCapacity
	}
	if c.Fairness == "" {
		c.Fairness = FairnessFIFO
	}
	if c.MaxDeadLetters == 0 {
		c.MaxDeadLetters = DefaultMaxDeadLetters
	}
	if c.LeaseDuration == 0 {
		c.LeaseDuration = DefaultLeaseDuration
	}
	if c.HeartbeatInterval == 0 {
		// A short lease gets a heartbeat that can still keep it alive.
		c.HeartbeatInterval = min(DefaultHeartbeatInterval, c.LeaseDuration/3)
	}
	if c.HeartbeatInterval >= c.LeaseDuration {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: HeartbeatInterval %v must be shorter than LeaseDuration %v, or every lease expires between heartbeats", c.HeartbeatInterval, c.LeaseDuration)
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.MaxDeliveryAttempts == 0 {
		c.MaxDeliveryAttempts = DefaultMaxDeliveryAttempts
	}
	if c.DedupeWindow == 0 {
		c.DedupeWindow = DefaultDedupeWindow
	}
	if c.MaxDedupeEntries == 0 {
		c.MaxDedupeEntries = DefaultMaxDedupeEntries
	}
	if c.MaxReleases == 0 {
		c.MaxReleases = DefaultMaxReleases
	}
	if c.MaxRequeueDelay > 0 && c.MaxRequeueDelay < c.RequeueDelay {
		return Errorf(StatusInvalidArgument, CodeInvalidArgument, "resourcelease: MaxRequeueDelay %v is below RequeueDelay %v", c.MaxRequeueDelay, c.RequeueDelay)
	}
	return nil
}

// Config returns the queue's configuration with defaults applied.
func (q *Engine) Config() QueueConfig {
	c := q.cfg
	c.InitialState = nil
	return c
}
