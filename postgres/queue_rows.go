package postgres

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Item states in the items table.
const (
	statePending   = "pending"   // ready to lease
	stateScheduled = "scheduled" // waiting for not_before (a requeue delay)
	stateLeased    = "leased"
	stateDead      = "dead"
)

// itemRow is one row of the items table (itemColumns, in order).
type itemRow struct {
	seq        int64
	state      string
	item       resourcelease.Item
	attempt    int
	releases   int
	enqueuedAt time.Time
	notBefore  *time.Time
	leaseID    pgtype.UUID
	leasedAt   *time.Time
	expiresAt  *time.Time
	owner      *string
	lastError  *resourcelease.ErrorInfo
	tokAttempt *int32
	tokLease   pgtype.UUID
	deadAt     *time.Time
	reason     *string
	reasonCode *string
	itemNB     *time.Time
}

// scanItem scans a row of extra values followed by itemColumns.
func scanItem(rows pgx.Rows, extra ...any) (*itemRow, error) {
	r := &itemRow{}
	var (
		attempt, releases int32
		attrs             []byte
		reqID             *string
		lastErr           []byte
	)
	dest := append(extra, &r.seq, &r.state, &r.item.ResourceType, &r.item.ResourceID, &r.item.PartitionKey,
		&r.item.PayloadEncoding, &r.item.Body, &attrs, &reqID, &attempt, &releases, &r.enqueuedAt, &r.notBefore,
		&r.leaseID, &r.leasedAt, &r.expiresAt, &r.owner, &lastErr, &r.tokAttempt, &r.tokLease, &r.deadAt,
		&r.reason, &r.reasonCode, &r.itemNB)
	if err := rows.Scan(dest...); err != nil {
		return nil, err
	}
	r.attempt, r.releases = int(attempt), int(releases)
	if reqID != nil {
		r.item.RequestID = *reqID
	}
	if len(attrs) > 0 && string(attrs) != "null" {
		if err := json.Unmarshal(attrs, &r.item.Attributes); err != nil {
			return nil, fmt.Errorf("item %d: attributes: %w", r.seq, err)
		}
	}
	if len(lastErr) > 0 && string(lastErr) != "null" {
		r.lastError = &resourcelease.ErrorInfo{}
		if err := json.Unmarshal(lastErr, r.lastError); err != nil {
			return nil, fmt.Errorf("item %d: last_error: %w", r.seq, err)
		}
	}
	r.enqueuedAt = r.enqueuedAt.UTC()
	if r.itemNB != nil {
		r.item.NotBefore = r.itemNB.UTC()
	}
	return r, nil
}

// token is the row's live lease token (valid when state is leased).
func (r *itemRow) token() resourcelease.OwnershipToken {
	return resourcelease.OwnershipToken{SequenceID: r.seq, Attempt: r.attempt, LeaseID: uuid.UUID(r.leaseID.Bytes)}
}

// pendingItem is the row as a PendingItem.
func (r *itemRow) pendingItem() resourcelease.PendingItem {
	p := resourcelease.PendingItem{
		Payload:    r.item,
		Attempt:    r.attempt,
		EnqueuedAt: r.enqueuedAt,
		LastError:  r.lastError,
		SequenceID: r.seq,
	}
	if r.notBefore != nil {
		p.ReadyAt = r.notBefore.UTC()
	}
	if r.tokAttempt != nil && r.tokLease.Valid {
		t := resourcelease.OwnershipToken{SequenceID: r.seq, Attempt: int(*r.tokAttempt), LeaseID: uuid.UUID(r.tokLease.Bytes)}
		p.LastOwnershipToken = &t
	}
	setReleases(&p, r.releases)
	return p
}

func (r *itemRow) deadLetter() resourcelease.DeadLetter {
	d := resourcelease.DeadLetter{PendingItem: r.pendingItem()}
	if r.deadAt != nil {
		d.DeadLetteredAt = r.deadAt.UTC()
	}
	if r.reason != nil {
		d.Reason = *r.reason
	}
	return d
}

func pgUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

func utc(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// jsonText is v as JSON text for a jsonb parameter, or nil (NULL) for a
// nil v.
func jsonText(v any) *string {
	b, err := json.Marshal(v)
	if err != nil || string(b) == "null" {
		return nil
	}
	s := string(b)
	return &s
}

func errorJSON(e *resourcelease.ErrorInfo) *string {
	if e == nil {
		return nil
	}
	return jsonText(e)
}

// textProblem says why s cannot be stored in a text column of a UTF8
// database (PostgreSQL refuses NUL and invalid UTF-8), or "".
func textProblem(s string) string {
	if !utf8.ValidString(s) {
		return "is not valid UTF-8"
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return "contains NUL"
		}
	}
	return ""
}

// checkItemText refuses an item the items table cannot hold, before it
// joins a batch: one bad item must not fail the transaction it shares with
// other callers.
func checkItemText(it *resourcelease.Item) error {
	for _, f := range [...]struct{ name, v string }{
		{"resourceType", it.ResourceType}, {"resourceId", it.ResourceID}, {"partitionKey", it.PartitionKey},
		{"payloadEncoding", it.PayloadEncoding}, {"requestId", it.RequestID},
	} {
		if p := textProblem(f.v); p != "" {
			return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
				"postgres: payload.%s %s", f.name, p)
		}
	}
	for k, v := range it.Attributes {
		if p := textProblem(k); p != "" {
			return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
				"postgres: payload.attributes key %q %s", k, p)
		}
		if p := textProblem(v); p != "" {
			return resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
				"postgres: payload.attributes[%q] %s", k, p)
		}
	}
	return nil
}

// cleanText makes s storable in a text column: invalid UTF-8 and NUL
// become U+FFFD. It is for free-form text a caller cannot be refused for
// (a failure's reason, a peer id), where a replaced character is better
// than a lost call.
func cleanText(s string) string {
	if textProblem(s) == "" {
		return s
	}
	b := make([]rune, 0, len(s))
	for _, r := range s {
		if r == 0 {
			r = utf8.RuneError
		}
		b = append(b, r)
	}
	return string(b)
}

func cleanMeta(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[cleanText(k)] = cleanText(v)
	}
	return out
}
