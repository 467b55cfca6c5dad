package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Events are stored in the SQLite log in a compact binary form rather than
// JSON. Page writes dominate a commit's cost (each dirty page is a WAL frame
// written at COMMIT), and an event's JSON is about three times larger: keys,
// base64 bodies and decimal numbers make every batch spill onto more pages
// and allocate new ones (which also dirties the B-tree's interior page and the
// header page). The format is private to this package; SQLiteLogReader reads
// it for other processes.
//
// Format (version 1): a version byte, the event type (a one-byte code, or 0
// and a string), a flags byte, then the present parts in order. Integers are
// varints, strings and bytes are length-prefixed, well-known metadata keys
// are one-byte codes.
const eventFormatV1 = 1

const (
	flagOwnership = 1 << iota
	flagPayload
	flagError
	flagMetadata
	flagTimestamp
	flagNotBefore // the payload has a NotBefore, after its request id
)

var eventTypeCodes = func() map[resourcelease.EventType]byte {
	m := make(map[resourcelease.EventType]byte, len(knownEventTypes))
	for i, t := range knownEventTypes {
		m[t] = byte(i + 1)
	}
	return m
}()

// metaKeys are metadata keys common enough to be stored as one byte
// (their index + 1); 0 introduces a key spelled out.
var metaKeys = []string{
	resourcelease.MetaQueuePending, resourcelease.MetaQueueActive, resourcelease.MetaFailureRequeued,
	resourcelease.MetaDrainCount, resourcelease.MetaRestoreCount, resourcelease.MetaRedriveCount,
	resourcelease.MetaPurgeCount, resourcelease.MetaAttempt, resourcelease.MetaSequenceID,
}

var metaKeyCodes = func() map[string]byte {
	m := make(map[string]byte, len(metaKeys))
	for i, k := range metaKeys {
		m[k] = byte(i + 1)
	}
	return m
}()

// appendEvent appends the stored form of ev (without its sequence number,
// which is the row's key).
func appendEvent(b []byte, ev *resourcelease.Event) []byte {
	b = append(b, eventFormatV1)
	if c, ok := eventTypeCodes[ev.EventType]; ok {
		b = append(b, c)
	} else {
		b = append(b, 0)
		b = appendStr(b, string(ev.EventType))
	}
	var flags byte
	if ev.Ownership != nil {
		flags |= flagOwnership
	}
	if ev.Payload != nil {
		flags |= flagPayload
	}
	if ev.Error != nil {
		flags |= flagError
	}
	if ev.Metadata != nil {
		flags |= flagMetadata
	}
	if !ev.Timestamp.IsZero() {
		flags |= flagTimestamp
	}
	if ev.Payload != nil && !ev.Payload.NotBefore.IsZero() {
		flags |= flagNotBefore
	}
	b = append(b, flags)
	if flags&flagTimestamp != 0 {
		b = binary.AppendVarint(b, ev.Timestamp.UnixNano())
	}
	if o := ev.Ownership; o != nil {
		b = binary.AppendVarint(b, o.SequenceID)
		b = binary.AppendVarint(b, int64(o.Attempt))
		b = append(b, o.LeaseID[:]...)
	}
	b = appendStr(b, ev.PeerID)
	if p := ev.Payload; p != nil {
		b = appendStr(b, p.ResourceType)
		b = appendStr(b, p.ResourceID)
		b = appendStr(b, p.PartitionKey)
		b = appendStr(b, p.PayloadEncoding)
		b = binary.AppendUvarint(b, uint64(len(p.Body)))
		b = append(b, p.Body...)
		b = binary.AppendUvarint(b, uint64(len(p.Attributes)))
		for k, v := range p.Attributes {
			b = appendStr(b, k)
			b = appendStr(b, v)
		}
		b = appendStr(b, p.RequestID)
		if flags&flagNotBefore != 0 {
			b = binary.AppendVarint(b, p.NotBefore.UnixNano())
		}
	}
	if e := ev.Error; e != nil {
		b = appendStr(b, e.Message)
		b = appendStr(b, e.Code)
	}
	if ev.Metadata != nil {
		b = binary.AppendUvarint(b, uint64(len(ev.Metadata)))
		for k, v := range ev.Metadata {
			if c, ok := metaKeyCodes[k]; ok {
				b = append(b, c)
			} else {
				b = append(b, 0)
				b = appendStr(b, k)
			}
			b = appendStr(b, v)
		}
	}
	return b
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

var errShortEvent = errors.New("truncated event")

// eventReader decodes the stored form; the first error sticks.
type eventReader struct {
	b   []byte
	err error
}

func (r *eventReader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errShortEvent
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *eventReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShortEvent
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *eventReader) count() int {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 || v > uint64(len(r.b)) || v > math.MaxInt32 {
		r.err = errShortEvent
		return 0
	}
	r.b = r.b[n:]
	return int(v)
}

func (r *eventReader) bytes() []byte {
	n := r.count()
	if r.err != nil || n > len(r.b) {
		r.err = errShortEvent
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *eventReader) str() string { return string(r.bytes()) }

// decodeEvent decodes the stored form of an event.
func decodeEvent(seq int64, b []byte) (resourcelease.Event, error) {
	r := &eventReader{b: b}
	ev := resourcelease.Event{SequenceNumber: seq}
	if v := r.byte(); r.err == nil && v != eventFormatV1 {
		return ev, fmt.Errorf("unknown event format %d", v)
	}
	if c := r.byte(); c == 0 {
		ev.EventType = resourcelease.EventType(r.str())
	} else if int(c) <= len(knownEventTypes) {
		ev.EventType = knownEventTypes[c-1]
	} else {
		r.err = fmt.Errorf("unknown event type code %d", c)
	}
	flags := r.byte()
	if flags&flagTimestamp != 0 {
		ev.Timestamp = time.Unix(0, r.varint()).UTC()
	}
	if flags&flagOwnership != 0 {
		o := &resourcelease.OwnershipToken{SequenceID: r.varint(), Attempt: int(r.varint())}
		if r.err == nil && len(r.b) < len(o.LeaseID) {
			r.err = errShortEvent
		}
		if r.err == nil {
			o.LeaseID = uuid.UUID(r.b[:16])
			r.b = r.b[16:]
		}
		ev.Ownership = o
	}
	ev.PeerID = r.str()
	if flags&flagPayload != 0 {
		p := &resourcelease.Item{ResourceType: r.str(), ResourceID: r.str(), PartitionKey: r.str(), PayloadEncoding: r.str()}
		if body := r.bytes(); len(body) > 0 {
			p.Body = append([]byte(nil), body...)
		}
		if n := r.count(); n > 0 {
			p.Attributes = make(map[string]string, n)
			for range n {
				k := r.str()
				p.Attributes[k] = r.str()
			}
		}
		p.RequestID = r.str()
		if flags&flagNotBefore != 0 {
			p.NotBefore = time.Unix(0, r.varint()).UTC()
		}
		ev.Payload = p
	}
	if flags&flagError != 0 {
		ev.Error = &resourcelease.ErrorInfo{Message: r.str(), Code: r.str()}
	}
	if flags&flagMetadata != 0 {
		n := r.count()
		ev.Metadata = make(map[string]string, n)
		for range n {
			var k string
			switch c := r.byte(); {
			case c == 0:
				k = r.str()
			case int(c) <= len(metaKeys):
				k = metaKeys[c-1]
			default:
				r.err = fmt.Errorf("unknown metadata key code %d", c)
			}
			ev.Metadata[k] = r.str()
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return resourcelease.Event{}, fmt.Errorf("event %d: %w", seq, r.err)
	}
	return ev, nil
}
