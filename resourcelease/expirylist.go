package resourcelease

// expiryList holds the live leases in expiry order as an intrusive doubly
// linked list, so granting, heartbeating and ending a lease are O(1) and touch
// only the entry and its two neighbours, where a heap would touch O(log n)
// entries, each likely a cache miss.
//
// The order needs no comparisons: every lease expires at its change time plus
// the queue's one LeaseDuration, and change times never go backwards (see
// Engine.stamp), so an entry given a new expiry always belongs at the
// back.
type expiryList struct {
	head, tail *entry
}

// Front returns the lease that expires first, or nil.
func (l *expiryList) Front() *entry { return l.head }

// PushBack adds e, whose expiry is not before any in the list.
func (l *expiryList) PushBack(e *entry) {
	e.prevLease, e.nextLease = l.tail, nil
	if l.tail != nil {
		l.tail.nextLease = e
	} else {
		l.head = e
	}
	l.tail = e
}

// Remove takes e out of the list; an entry not in it is left alone (its nil
// neighbours would otherwise empty the list).
func (l *expiryList) Remove(e *entry) {
	if e.prevLease == nil && l.head != e {
		return
	}
	if e.prevLease != nil {
		e.prevLease.nextLease = e.nextLease
	} else {
		l.head = e.nextLease
	}
	if e.nextLease != nil {
		e.nextLease.prevLease = e.prevLease
	} else {
		l.tail = e.prevLease
	}
	e.prevLease, e.nextLease = nil, nil
}

// MoveToBack moves e, whose expiry was just extended, to the back.
func (l *expiryList) MoveToBack(e *entry) {
	if l.tail != e {
		l.Remove(e)
		l.PushBack(e)
	}
}
