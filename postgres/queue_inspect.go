package postgres

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// inspectSQL are the operator's read-only queries: a page of items in one
// state, and one item. They read committed rows outside the writer, so a
// listing never holds up a commit; the page is as of the statement's
// snapshot.
type inspectSQL struct {
	list map[resourcelease.ItemState]string // by item state
	item string
}

func newInspectSQL(s *Store) inspectSQL {
	items := s.table("items")
	// A listing does not carry bodies: the body column is read as NULL and
	// its length apart.
	bodyless := strings.Replace(itemColumns, " body,", " NULL::bytea AS body,", 1)
	if bodyless == itemColumns {
		panic("postgres: itemColumns no longer lists the body")
	}
	row := `coalesce(octet_length(body), 0) AS body_size, ` + bodyless
	// scan is the rows in a state by sequence id after $1, at most $2 of
	// them. The states are literals, so that the planner uses the partial
	// indexes (a parameter would hide them from it): a pending item is
	// ready or scheduled, two ordered scans merged.
	scan := func(state resourcelease.ItemState) string {
		one := func(dbState string) string {
			return `SELECT ` + row + ` FROM ` + items + ` WHERE state = '` + dbState + `' AND sequence_id > $1 ORDER BY sequence_id LIMIT $2`
		}
		switch state {
		case resourcelease.ItemPending:
			return `SELECT * FROM ((` + one(statePending) + `) UNION ALL (` + one(stateScheduled) + `)) p ORDER BY sequence_id LIMIT $2`
		case resourcelease.ItemLeased:
			return one(stateLeased)
		}
		return one(stateDead)
	}
	cols := `body_size, ` + itemColumns
	is := inspectSQL{
		list: map[resourcelease.ItemState]string{},
		item: `SELECT coalesce(octet_length(body), 0), ` + itemColumns + ` FROM ` + items + ` WHERE sequence_id = $1`,
	}
	for _, state := range []resourcelease.ItemState{resourcelease.ItemPending, resourcelease.ItemLeased, resourcelease.ItemDead} {
		// A page looks at no more than $7 (MaxListScan) rows in the state,
		// as the engine bounds its scan, so that a filter that matches
		// little cannot read the whole table: the filters apply to the
		// scanned rows (the scan's LIMIT keeps them out of it), exact
		// matches, NULL matching everything. One row more than the page
		// ($6) tells whether it is the last. The scan reads one row past
		// the bound ($2 = $7 + 1): when there is one, the last row looked
		// at comes after the page, flagged, as where the next page goes on
		// from. One statement, so that the page and where its scan stopped
		// are of one snapshot.
		is.list[state] = `WITH scanned AS MATERIALIZED (
				SELECT row_number() OVER (ORDER BY sequence_id) AS rn, s.* FROM (` + scan(state) + `) s
			)
			(SELECT false, ` + cols + ` FROM scanned
				WHERE rn <= $7
					AND ($3::text IS NULL OR resource_type = $3)
					AND ($4::text IS NULL OR partition_key = $4)
					AND ($5::text IS NULL OR resource_id = $5)
				ORDER BY sequence_id LIMIT $6)
			UNION ALL
			(SELECT true, ` + cols + ` FROM scanned WHERE rn = $7 AND EXISTS (SELECT FROM scanned WHERE rn > $7))`
	}
	return is
}

// itemState is the item state of a row's state.
func itemState(state string) resourcelease.ItemState {
	switch state {
	case stateLeased:
		return resourcelease.ItemLeased
	case stateDead:
		return resourcelease.ItemDead
	}
	return resourcelease.ItemPending
}

// info is the row as an operator sees it.
func (r *itemRow) info(bodySize int) resourcelease.ItemInfo {
	in := resourcelease.ItemInfo{
		SequenceID: r.seq, State: itemState(r.state), Payload: r.item, BodySize: bodySize,
		Attempt: r.attempt, EnqueuedAt: r.enqueuedAt, LastError: r.lastError,
	}
	switch in.State {
	case resourcelease.ItemPending:
		if r.state == stateScheduled {
			in.ReadyAt = utc(r.notBefore)
		}
	case resourcelease.ItemLeased:
		if r.owner != nil {
			in.LeaseOwner = *r.owner
		}
		in.LeasedAt, in.LeaseExpiresAt = utc(r.leasedAt), utc(r.expiresAt)
	case resourcelease.ItemDead:
		in.DeadLetteredAt = utc(r.deadAt)
		if r.reason != nil {
			in.DeadLetterReason = *r.reason
		}
	}
	return in
}

// nullIfEmpty is s as a text parameter, NULL when empty (a filter that
// matches everything).
func nullIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// ListItems returns a page of the items in req.State that match its filters,
// by ascending sequence id after req.After, as the engine's ListItems does
// (the same bounds: DefaultListLimit, MaxListLimit, and at most MaxListScan
// items in the state looked at per page, the page then ending early with
// NextAfter where the scan stopped). It reads the committed rows with one
// query beside the writer, through the state's partial index from
// req.After (the page and where its scan stopped are of one snapshot): a
// page reads at most MaxListScan ready or dead rows whatever the table's
// size (the delayed and leased rows are found through their index and
// sorted, as the engine scans its delay heap and leases). No listing
// carries bodies (BodySize says how large each is).
func (q *Queue) ListItems(ctx context.Context, req resourcelease.ListItemsRequest) (resourcelease.ListItemsResponse, error) {
	if !req.State.Valid() {
		return resourcelease.ListItemsResponse{}, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"state must be %q, %q or %q, got %q", resourcelease.ItemPending, resourcelease.ItemLeased, resourcelease.ItemDead, req.State)
	}
	if req.After < 0 || req.Limit < 0 {
		return resourcelease.ListItemsResponse{}, resourcelease.Errorf(resourcelease.StatusInvalidArgument, resourcelease.CodeInvalidArgument,
			"after and limit must not be negative, got %d and %d", req.After, req.Limit)
	}
	limit := req.Limit
	if limit == 0 {
		limit = resourcelease.DefaultListLimit
	}
	limit = min(limit, resourcelease.MaxListLimit)
	if err := q.checkOpen("list items"); err != nil {
		return resourcelease.ListItemsResponse{}, err
	}
	if err := ctxErr(ctx); err != nil {
		return resourcelease.ListItemsResponse{}, err
	}
	rows, err := q.store.pool.Query(ctx, q.isql.list[req.State], req.After, resourcelease.MaxListScan+1,
		nullIfEmpty(req.ResourceType), nullIfEmpty(req.PartitionKey), nullIfEmpty(req.ResourceID), limit+1,
		resourcelease.MaxListScan)
	if err != nil {
		return resourcelease.ListItemsResponse{}, q.store.fail(ctx, "list items", err)
	}
	defer rows.Close()
	resp := resourcelease.ListItemsResponse{Items: []resourcelease.ItemInfo{}}
	more := false
	var scanStop int64 // where the scan stopped at its bound; 0 when it saw every row
	for rows.Next() {
		var stop bool
		var size int32
		r, err := scanItem(rows, &stop, &size)
		if err != nil {
			return resourcelease.ListItemsResponse{}, q.store.fail(ctx, "list items", err)
		}
		switch {
		case stop:
			scanStop = r.seq
		case len(resp.Items) == limit:
			more = true
		default:
			in := r.info(int(size))
			in.Payload.Body = nil
			resp.Items = append(resp.Items, in)
		}
	}
	if err := rows.Err(); err != nil {
		return resourcelease.ListItemsResponse{}, q.store.fail(ctx, "list items", err)
	}
	// The page's branch is ordered; the union need not keep it first.
	slices.SortFunc(resp.Items, func(a, b resourcelease.ItemInfo) int { return cmp.Compare(a.SequenceID, b.SequenceID) })
	switch {
	case more:
		resp.NextAfter = resp.Items[limit-1].SequenceID
	case scanStop != 0:
		resp.NextAfter = scanStop
	}
	return resp, nil
}

// Item returns the item with sequence id seq, with its body, wherever it
// is (pending, scheduled, leased or dead-lettered), or an error with
// resourcelease.ItemNotFound(seq).
func (q *Queue) Item(ctx context.Context, seq int64) (resourcelease.ItemInfo, error) {
	if err := q.checkOpen("item"); err != nil {
		return resourcelease.ItemInfo{}, err
	}
	if err := ctxErr(ctx); err != nil {
		return resourcelease.ItemInfo{}, err
	}
	rows, err := q.store.pool.Query(ctx, q.isql.item, seq)
	if err != nil {
		return resourcelease.ItemInfo{}, q.store.fail(ctx, "item", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return resourcelease.ItemInfo{}, q.store.fail(ctx, "item", err)
		}
		return resourcelease.ItemInfo{}, resourcelease.ItemNotFound(seq)
	}
	var size int32
	r, err := scanItem(rows, &size)
	if err != nil {
		return resourcelease.ItemInfo{}, q.store.fail(ctx, "item", err)
	}
	return r.info(int(size)), nil
}
