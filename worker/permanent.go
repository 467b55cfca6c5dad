package worker

import (
	"errors"
	"time"
)

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent: the Worker dead-letters such a lease instead of requeueing it.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// Decline marks a handler's error as "not for this worker now": the Worker
// releases the lease instead of failing it, so the item's attempt is not
// counted and no backoff applies, and it may be leased again after delay
// (by any worker). The dispatcher counts a run of releases of one item
// (QueueConfig.MaxReleases, 10 by default) as one failed attempt, so an item
// nobody takes is dead-lettered in the end rather than looping for ever. A
// dispatcher too old for release gets a fail with requeue instead.
func Decline(delay time.Duration, reason error) error {
	if reason == nil {
		reason = errors.New("declined")
	}
	return &declineError{delay: max(0, delay), err: reason}
}

type declineError struct {
	delay time.Duration
	err   error
}

func (e *declineError) Error() string { return e.err.Error() }
func (e *declineError) Unwrap() error { return e.err }

// declinedBy reports whether err was made by Decline, and its delay.
func declinedBy(err error) (time.Duration, bool) {
	var d *declineError
	if errors.As(err, &d) {
		return d.delay, true
	}
	return 0, false
}
