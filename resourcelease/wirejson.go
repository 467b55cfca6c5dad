package resourcelease

import (
	"encoding/json"
	"math"
	"time"
)

// The JSON of the request and response types whose Go fields are not their
// wire fields: durations travel as milliseconds (waitMs, delayMs, leaseTtlMs,
// heartbeatIntervalMs), a fail's DeadLetter as its wire opposite requeue, and
// responses that only say "it worked" carry success:true. Each type encodes
// through a mirror struct with the wire's tags, so the bytes are those of the
// protocol exactly.

// msCeil is d in whole milliseconds, rounded up: a positive wait or delay
// never becomes "none".
func msCeil(d time.Duration) int64 {
	if d <= 0 {
		return d.Milliseconds()
	}
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	return int64(ms)
}

// msFloor is d in whole milliseconds, rounded down: time left is never
// overstated.
func msFloor(d time.Duration) int64 { return d.Milliseconds() }

// fromMs is ms milliseconds as a Duration, saturating instead of
// overflowing.
func fromMs(ms int64) time.Duration {
	const most = math.MaxInt64 / int64(time.Millisecond)
	switch {
	case ms > most:
		return math.MaxInt64
	case ms < -most:
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}

type leaseRequestJSON struct {
	PeerID string `json:"peerId,omitempty"`
	WaitMs int64  `json:"waitMs,omitempty"`
}

// MarshalJSON encodes r as {"peerId","waitMs"}.
func (r LeaseRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(leaseRequestJSON{PeerID: r.PeerID, WaitMs: msCeil(r.Wait)})
}

// UnmarshalJSON decodes {"peerId","waitMs"}.
func (r *LeaseRequest) UnmarshalJSON(b []byte) error {
	var m leaseRequestJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = LeaseRequest{PeerID: m.PeerID, Wait: fromMs(m.WaitMs)}
	return nil
}

type leaseJSON struct {
	Payload             Item           `json:"payload"`
	SequenceID          int64          `json:"sequenceId"`
	Attempt             int            `json:"attempt"`
	EnqueuedAt          time.Time      `json:"enqueuedAt"`
	LastError           *ErrorInfo     `json:"lastError"`
	OwnershipToken      OwnershipToken `json:"ownershipToken"`
	OwnerPeerID         string         `json:"ownerPeerId"`
	LeaseExpiresAt      time.Time      `json:"leaseExpiresAt"`
	LeaseTTLMs          int64          `json:"leaseTtlMs,omitempty"`
	HeartbeatIntervalMs int64          `json:"heartbeatIntervalMs"`
}

func (l *Lease) wire() leaseJSON {
	return leaseJSON{
		Payload: l.Payload, SequenceID: l.SequenceID, Attempt: l.Attempt, EnqueuedAt: l.EnqueuedAt,
		LastError: l.LastError, OwnershipToken: l.OwnershipToken, OwnerPeerID: l.OwnerPeerID,
		LeaseExpiresAt: l.LeaseExpiresAt, LeaseTTLMs: msFloor(l.TTL), HeartbeatIntervalMs: msFloor(l.HeartbeatInterval),
	}
}

func (m *leaseJSON) lease() Lease {
	return Lease{
		Payload: m.Payload, SequenceID: m.SequenceID, Attempt: m.Attempt, EnqueuedAt: m.EnqueuedAt,
		LastError: m.LastError, OwnershipToken: m.OwnershipToken, OwnerPeerID: m.OwnerPeerID,
		LeaseExpiresAt: m.LeaseExpiresAt, TTL: fromMs(m.LeaseTTLMs), HeartbeatInterval: fromMs(m.HeartbeatIntervalMs),
	}
}

// MarshalJSON encodes l in the wire shape (see Lease).
func (l Lease) MarshalJSON() ([]byte, error) { return json.Marshal(l.wire()) }

// UnmarshalJSON decodes the wire shape (see Lease).
func (l *Lease) UnmarshalJSON(b []byte) error {
	var m leaseJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*l = m.lease()
	return nil
}

type heartbeatResponseJSON struct {
	Success        bool      `json:"success"`
	LeaseExpiresAt time.Time `json:"leaseExpiresAt"`
	LeaseTTLMs     int64     `json:"leaseTtlMs,omitempty"`
}

// MarshalJSON encodes r as {"success":true,"leaseExpiresAt","leaseTtlMs"}.
func (r HeartbeatResponse) MarshalJSON() ([]byte, error) {
	return json.Marshal(heartbeatResponseJSON{Success: true, LeaseExpiresAt: r.LeaseExpiresAt, LeaseTTLMs: msFloor(r.TTL)})
}

// UnmarshalJSON decodes {"success","leaseExpiresAt","leaseTtlMs"}.
func (r *HeartbeatResponse) UnmarshalJSON(b []byte) error {
	var m heartbeatResponseJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = HeartbeatResponse{LeaseExpiresAt: m.LeaseExpiresAt, TTL: fromMs(m.LeaseTTLMs)}
	return nil
}

type failRequestJSON struct {
	OwnershipToken OwnershipToken    `json:"ownershipToken"`
	Reason         string            `json:"reason,omitempty"`
	ErrorCode      string            `json:"errorCode,omitempty"`
	Requeue        *bool             `json:"requeue,omitempty"`
	Metadata       map[string]string `json:"metadata,omitempty"`
}

// MarshalJSON encodes r as {"ownershipToken","reason","errorCode","requeue",
// "metadata"}; requeue is always sent (it is !DeadLetter).
func (r FailRequest) MarshalJSON() ([]byte, error) {
	requeue := !r.DeadLetter
	return json.Marshal(failRequestJSON{OwnershipToken: r.OwnershipToken, Reason: r.Reason, ErrorCode: r.ErrorCode,
		Requeue: &requeue, Metadata: r.Metadata})
}

// UnmarshalJSON decodes the wire shape; an absent or null requeue means
// true (requeue), as it always has.
func (r *FailRequest) UnmarshalJSON(b []byte) error {
	var m failRequestJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = FailRequest{OwnershipToken: m.OwnershipToken, Reason: m.Reason, ErrorCode: m.ErrorCode,
		DeadLetter: m.Requeue != nil && !*m.Requeue, Metadata: m.Metadata}
	return nil
}

type releaseRequestJSON struct {
	OwnershipToken OwnershipToken `json:"ownershipToken"`
	DelayMs        int64          `json:"delayMs,omitempty"`
}

// MarshalJSON encodes r as {"ownershipToken","delayMs"}.
func (r ReleaseRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(releaseRequestJSON{OwnershipToken: r.OwnershipToken, DelayMs: msCeil(r.Delay)})
}

// UnmarshalJSON decodes {"ownershipToken","delayMs"}.
func (r *ReleaseRequest) UnmarshalJSON(b []byte) error {
	var m releaseRequestJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = ReleaseRequest{OwnershipToken: m.OwnershipToken, Delay: fromMs(m.DelayMs)}
	return nil
}

// itemErrorJSON is a per-item error of a batch response:
// {"status","code","message"}, and "metadata" when the error has any (a
// rate-limited item's retryAfterSeconds).
type itemErrorJSON struct {
	Status   Status            `json:"status"`
	Code     string            `json:"code"`
	Message  string            `json:"message"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// wireItemError is err as it goes on the wire: its *Error (a foreign error
// is internal, with a generic message: its text stays in this process).
func wireItemError(err error) *itemErrorJSON {
	if err == nil {
		return nil
	}
	e := AsError(err)
	if !e.Status.Valid() {
		e = &Error{Status: StatusInternal, Code: e.Code, Message: e.Message}
	}
	return &itemErrorJSON{Status: e.Status, Code: e.Code, Message: e.Message, Metadata: e.Metadata}
}

// err is the *Error of a decoded per-item error; nil stays nil.
func (e *itemErrorJSON) err() error {
	if e == nil {
		return nil
	}
	st := e.Status
	if !st.Valid() {
		st = StatusInternal
	}
	return &Error{Status: st, Code: e.Code, Message: e.Message, Metadata: e.Metadata}
}

type enqueueItemResultJSON struct {
	SequenceID int64          `json:"sequenceId,omitempty"`
	Duplicate  bool           `json:"duplicate,omitempty"`
	NotBefore  time.Time      `json:"notBefore,omitzero"`
	Error      *itemErrorJSON `json:"error,omitempty"`
}

// MarshalJSON encodes r as {"sequenceId","duplicate","notBefore"} or
// {"error":{...}}.
func (r EnqueueItemResult) MarshalJSON() ([]byte, error) {
	if r.Err != nil {
		return json.Marshal(enqueueItemResultJSON{Error: wireItemError(r.Err)})
	}
	return json.Marshal(enqueueItemResultJSON{SequenceID: r.SequenceID, Duplicate: r.Duplicate, NotBefore: r.NotBefore})
}

// UnmarshalJSON decodes {"sequenceId","duplicate","notBefore"} or
// {"error":{...}}.
func (r *EnqueueItemResult) UnmarshalJSON(b []byte) error {
	var m enqueueItemResultJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = EnqueueItemResult{SequenceID: m.SequenceID, Duplicate: m.Duplicate, NotBefore: m.NotBefore, Err: m.Error.err()}
	return nil
}

type enqueueRequestJSON struct {
	Payload *Item `json:"payload"`
	DelayMs int64 `json:"delayMs,omitempty"`
}

// MarshalJSON encodes r as {"payload","delayMs"}.
func (r EnqueueRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(enqueueRequestJSON{Payload: r.Payload, DelayMs: msCeil(r.Delay)})
}

// UnmarshalJSON decodes {"payload","delayMs"}.
func (r *EnqueueRequest) UnmarshalJSON(b []byte) error {
	var m enqueueRequestJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = EnqueueRequest{Payload: m.Payload, Delay: fromMs(m.DelayMs)}
	return nil
}

type enqueueBatchRequestJSON struct {
	Payloads []Item `json:"payloads"`
	DelayMs  int64  `json:"delayMs,omitempty"`
}

// MarshalJSON encodes r as {"payloads","delayMs"}.
func (r EnqueueBatchRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(enqueueBatchRequestJSON{Payloads: r.Payloads, DelayMs: msCeil(r.Delay)})
}

// UnmarshalJSON decodes {"payloads","delayMs"}.
func (r *EnqueueBatchRequest) UnmarshalJSON(b []byte) error {
	var m enqueueBatchRequestJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = EnqueueBatchRequest{Payloads: m.Payloads, Delay: fromMs(m.DelayMs)}
	return nil
}

type leaseBatchRequestJSON struct {
	PeerID   string `json:"peerId,omitempty"`
	WaitMs   int64  `json:"waitMs,omitempty"`
	MaxItems int    `json:"maxItems"`
	MaxBytes int64  `json:"maxBytes,omitempty"`
}

// MarshalJSON encodes r as {"peerId","waitMs","maxItems","maxBytes"}.
func (r LeaseBatchRequest) MarshalJSON() ([]byte, error) {
	return json.Marshal(leaseBatchRequestJSON{PeerID: r.PeerID, WaitMs: msCeil(r.Wait), MaxItems: r.MaxItems, MaxBytes: r.MaxBytes})
}

// UnmarshalJSON decodes {"peerId","waitMs","maxItems","maxBytes"}.
func (r *LeaseBatchRequest) UnmarshalJSON(b []byte) error {
	var m leaseBatchRequestJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = LeaseBatchRequest{PeerID: m.PeerID, Wait: fromMs(m.WaitMs), MaxItems: m.MaxItems, MaxBytes: m.MaxBytes}
	return nil
}

type leaseBatchResponseJSON struct {
	Items []leaseJSON `json:"items"`
}

// MarshalJSON encodes r as {"items":[lease,...]} (never null), in one pass:
// the leases are encoded as their wire mirrors, not one by one through
// Lease.MarshalJSON.
func (r LeaseBatchResponse) MarshalJSON() ([]byte, error) {
	m := leaseBatchResponseJSON{Items: make([]leaseJSON, len(r.Items))}
	for i, l := range r.Items {
		if l != nil {
			m.Items[i] = l.wire()
		}
	}
	return json.Marshal(m)
}

type heartbeatResultJSON struct {
	LeaseExpiresAt *time.Time     `json:"leaseExpiresAt,omitempty"`
	LeaseTTLMs     int64          `json:"leaseTtlMs,omitempty"`
	Error          *itemErrorJSON `json:"error,omitempty"`
}

// MarshalJSON encodes r as {"leaseExpiresAt","leaseTtlMs"} or
// {"error":{...}}.
func (r HeartbeatResult) MarshalJSON() ([]byte, error) {
	if r.Err != nil {
		return json.Marshal(heartbeatResultJSON{Error: wireItemError(r.Err)})
	}
	at := r.LeaseExpiresAt
	return json.Marshal(heartbeatResultJSON{LeaseExpiresAt: &at, LeaseTTLMs: msFloor(r.TTL)})
}

// UnmarshalJSON decodes {"leaseExpiresAt","leaseTtlMs"} or {"error":{...}}.
func (r *HeartbeatResult) UnmarshalJSON(b []byte) error {
	var m heartbeatResultJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*r = HeartbeatResult{Err: m.Error.err()}
	if m.LeaseExpiresAt != nil {
		r.LeaseExpiresAt = *m.LeaseExpiresAt
	}
	r.TTL = fromMs(m.LeaseTTLMs)
	return nil
}

type completeResultJSON struct {
	Success bool           `json:"success,omitempty"`
	Error   *itemErrorJSON `json:"error,omitempty"`
}

type completeBatchResponseJSON struct {
	Results []completeResultJSON `json:"results"`
}

// MarshalJSON encodes r as {"results":[{"success":true} or {"error":{...}}]}.
func (r CompleteBatchResponse) MarshalJSON() ([]byte, error) {
	m := completeBatchResponseJSON{Results: make([]completeResultJSON, len(r.Results))}
	for i, err := range r.Results {
		if err != nil {
			m.Results[i].Error = wireItemError(err)
		} else {
			m.Results[i].Success = true
		}
	}
	return json.Marshal(m)
}

// UnmarshalJSON decodes the wire shape; an entry that is neither a success
// nor an error is an internal error (the server said nothing about it).
func (r *CompleteBatchResponse) UnmarshalJSON(b []byte) error {
	var m completeBatchResponseJSON
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	r.Results = make([]error, len(m.Results))
	for i, res := range m.Results {
		switch {
		case res.Error != nil:
			r.Results[i] = res.Error.err()
		case !res.Success:
			r.Results[i] = Errorf(StatusInternal, CodeInternal, "completeBatch result %d is neither a success nor an error", i)
		}
	}
	return nil
}
