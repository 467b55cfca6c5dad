package postgres

import (
	"strconv"
	"time"

	"github.com/leasemesh/leasemesh/internal/jsonappend"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// changeLog collects the changes of one transaction, in log order, with
// what the final statement needs to number them and to write their events:
// the count deltas, and the item rows the transaction creates. Events are
// built by resourcelease.NewEvent, so they have exactly the shape every
// other replicator gives them; their counts, numbers and (for new items)
// sequence ids are filled in once the counter row is taken.
type changeLog struct {
	changes []resourcelease.Change
	events  []resourcelease.Event
	dp, da  []int64 // after each change: the change of pending (ready + delayed) and active since the batch began
	dd      []int64 // the same for dead letters
	dl      []int64 // the same for delayed items
	nord    []*int64

	dReady, dDelayed, dActive, dDead int64
	madeReady                        bool // some item became ready to lease
	freed                            bool // ready + active went down
	deadLettered                     bool // some item was dead-lettered

	deadSeq, deadOrd []int64 // dead letters and the index of their DeadLettered event

	// touched are the partitions whose items changed (queue with partition
	// rules), each with the place of the transaction's last lease from it
	// (1, 2, ...; 0 for none); served counts those places.
	touched map[string]int64
	served  int64
}

// unserved reports whether a partition changed other than by a lease from
// it (it may have become leasable).
func (l *changeLog) unserved() bool {
	for _, n := range l.touched {
		if n == 0 {
			return true
		}
	}
	return false
}

// add appends c, whose count deltas have been applied. newOrd, when set, is
// the 1-based position of the new item c enqueues among the transaction's
// new items.
func (l *changeLog) add(c resourcelease.Change, newOrd int64) {
	l.changes = append(l.changes, c)
	l.dp = append(l.dp, l.dReady+l.dDelayed)
	l.da = append(l.da, l.dActive)
	l.dd = append(l.dd, l.dDead)
	l.dl = append(l.dl, l.dDelayed)
	if newOrd > 0 {
		n := newOrd
		l.nord = append(l.nord, &n)
	} else {
		l.nord = append(l.nord, nil)
	}
	if c.Kind == resourcelease.ChangeDeadLettered && c.Item != nil {
		l.deadLettered = true
		l.deadSeq = append(l.deadSeq, c.Item.SequenceID)
		l.deadOrd = append(l.deadOrd, int64(len(l.changes)))
	}
}

// moved applies an item's move between states to the deltas; "" is no
// state (a new item, or one deleted).
func (l *changeLog) moved(from, to string) {
	l.adjust(from, -1)
	l.adjust(to, 1)
	if (counted(from) && !counted(to)) || (from == stateScheduled && to != stateScheduled) {
		l.freed = true // room under Capacity, or under DelayedCapacity
	}
	if to == statePending && from != statePending {
		l.madeReady = true
	}
}

func (l *changeLog) adjust(state string, d int64) {
	switch state {
	case statePending:
		l.dReady += d
	case stateScheduled:
		l.dDelayed += d
	case stateLeased:
		l.dActive += d
	case stateDead:
		l.dDead += d
	}
}

// counted reports whether an item in state counts against capacity.
func counted(state string) bool { return state == statePending || state == stateLeased }

// eventArgs are the events' columns for the final statement, without the
// parts the counter row decides (counts; a new item's sequence id).
type eventArgs struct {
	typ, own, peer, payload, err, meta []*string
	iseq                               []*int64
	// body is each event's item body, apart from its payload (which leaves
	// it out): a reader that does not want bodies does not read them.
	body [][]byte
}

func (l *changeLog) eventArgs() eventArgs {
	n := len(l.changes)
	a := eventArgs{
		typ: make([]*string, n), own: make([]*string, n), peer: make([]*string, n), payload: make([]*string, n),
		err: make([]*string, n), meta: make([]*string, n), iseq: make([]*int64, n), body: make([][]byte, n),
	}
	l.events = make([]resourcelease.Event, n)
	// One allocation for all the batch's JSON rather than one per value:
	// every value is appended to one buffer, copied once into a string,
	// and the columns' values are slices of it.
	const (
		colOwn = iota
		colPayload
		colMeta
		jsonCols
	)
	buf := make([]byte, 0, 384*n)
	ends := make([]int, jsonCols*n) // where each value ends in buf; -1 for NULL
	iseq := make([]int64, n)
	for i := range l.changes {
		e := resourcelease.NewEvent(&l.changes[i])
		delete(e.Metadata, resourcelease.MetaQueuePending)
		delete(e.Metadata, resourcelease.MetaQueueActive)
		if l.nord[i] != nil {
			delete(e.Metadata, resourcelease.MetaSequenceID)
		} else if c := l.changes[i]; c.Item != nil {
			iseq[i] = c.Item.SequenceID
			a.iseq[i] = &iseq[i]
		}
		t := string(e.EventType)
		a.typ[i] = &t
		if e.PeerID != "" {
			p := e.PeerID
			a.peer[i] = &p
		}
		a.err[i] = errorJSON(e.Error)
		ends[jsonCols*i+colOwn] = -1
		if e.Ownership != nil && l.nord[i] != nil {
			buf = appendOpenTokenJSON(buf, e.Ownership)
			ends[jsonCols*i+colOwn] = len(buf)
		} else if e.Ownership != nil {
			buf = appendTokenJSON(buf, e.Ownership)
			ends[jsonCols*i+colOwn] = len(buf)
		}
		ends[jsonCols*i+colPayload] = -1
		if e.Payload != nil {
			it := *e.Payload
			it.Body = nil
			if b := appendItemJSON(buf, &it); b != nil {
				if len(e.Payload.Body) > 0 {
					a.body[i] = e.Payload.Body
				}
				buf = b
				ends[jsonCols*i+colPayload] = len(buf)
			}
		}
		// The metadata as an open object the final statement closes: a
		// comma after the keys, if any, for the counts it appends.
		if len(e.Metadata) == 0 {
			buf = append(buf, '{')
		} else {
			buf = jsonappend.StringMap(buf, e.Metadata)
			buf[len(buf)-1] = ',' // its closing brace
		}
		ends[jsonCols*i+colMeta] = len(buf)
		l.events[i] = e
	}
	all := string(buf)
	vals := make([]string, jsonCols*n)
	start := 0
	for i := range n {
		for col, into := range [jsonCols][]*string{a.own, a.payload, a.meta} {
			k := jsonCols*i + col
			if ends[k] < 0 {
				continue
			}
			vals[k] = all[start:ends[k]]
			into[i] = &vals[k]
			start = ends[k]
		}
	}
	return a
}

// number fills in what the counter row decided: each change's event
// number, time and counts, and the sequence ids of new items.
func (l *changeLog) number(firstSeq, firstEv int64, after counts, ts time.Time) []Committed {
	pendBefore := after.ready + after.delayed - l.dReady - l.dDelayed
	actBefore := after.active - l.dActive
	deadBefore := after.dead - l.dDead
	delayedBefore := after.delayed - l.dDelayed
	out := make([]Committed, len(l.changes))
	for i := range l.changes {
		c, e := &l.changes[i], &l.events[i]
		c.At, e.Timestamp = ts, ts
		c.Pending, c.Active, c.DeadLettered = int(pendBefore+l.dp[i]), int(actBefore+l.da[i]), int(deadBefore+l.dd[i])
		c.Delayed = int(delayedBefore + l.dl[i])
		e.SequenceNumber = firstEv + int64(i)
		e.Metadata[resourcelease.MetaQueuePending] = strconv.Itoa(c.Pending)
		e.Metadata[resourcelease.MetaQueueActive] = strconv.Itoa(c.Active)
		if l.nord[i] != nil {
			seq := firstSeq + *l.nord[i] - 1
			item := *c.Item
			item.SequenceID, item.EnqueuedAt = seq, ts
			c.Item = &item
			e.Metadata[resourcelease.MetaSequenceID] = strconv.FormatInt(seq, 10)
			if !c.Token.IsZero() { // a lease of the new item
				c.Token.SequenceID = seq
				t := c.Token
				e.Ownership = &t
			}
		}
		out[i] = Committed{Change: *c, Event: *e}
	}
	return out
}
