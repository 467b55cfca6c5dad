package worker

import "errors"

// IsPermanent reports whether err, or an error it wraps, was marked with
// Permanent: the Worker dead-letters such a lease instead of requeueing it.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}
