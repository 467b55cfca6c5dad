package resourcelease

import "context"

// ListItems returns a page of the items in one state (pending, leased or
// dead), filtered by resourceType, partitionKey and resourceId, by ascending
// sequence id after req.After (see Engine.ListItems for the bounds and the
// cost). A nil request is invalid: it names no state. The page's payloads
// are copies.
func (d *LocalDispatcher) ListItems(ctx context.Context, req *ListItemsRequest) (*ListItemsResponse, error) {
	var r ListItemsRequest
	if req != nil {
		r = *req
	}
	l, ok := d.q.(itemLister)
	if !ok {
		return nil, d.notSupported("listing items")
	}
	resp, err := l.ListItems(orBackground(ctx), r)
	if err != nil {
		return nil, d.done("listitems", err)
	}
	for i := range resp.Items {
		ownPayload(&resp.Items[i].Payload)
	}
	return &resp, nil
}

// Item returns the item with the given sequence id, wherever it is (pending,
// leased or dead-lettered), with its body; ErrItemNotFound (not-found) when
// there is none. The payload is a copy.
func (d *LocalDispatcher) Item(ctx context.Context, sequenceID int64) (*ItemInfo, error) {
	if sequenceID <= 0 {
		return nil, Errorf(StatusInvalidArgument, CodeInvalidArgument, "sequenceId must be positive, got %d", sequenceID)
	}
	ir, ok := d.q.(itemReader)
	if !ok {
		return nil, d.notSupported("reading an item")
	}
	in, err := ir.Item(orBackground(ctx), sequenceID)
	if err != nil {
		return nil, d.done("item", err)
	}
	ownPayload(&in.Payload)
	return &in, nil
}

// Pause stops the dispatcher from granting leases until Resume (see
// Engine.Pause): lease requests get nothing, long-polls wait bounded by
// their wait, and everything else keeps working. Stats reports Paused. On
// the in-memory engine (memory and SQLite storage) the state is kept in
// memory only, so a restarted dispatcher leases again; a queue that keeps
// its state in a database (Postgres) pauses every dispatcher of the queue
// until one resumes.
func (d *LocalDispatcher) Pause(ctx context.Context) error {
	p, ok := d.q.(leasePauser)
	if !ok {
		return d.notSupported("pause")
	}
	if err := p.Pause(orBackground(ctx)); err != nil {
		return d.done("pause", err)
	}
	d.log.Info("resourcelease: leasing paused")
	return nil
}

// Resume lets a paused dispatcher grant leases again, serving the
// long-polls that waited through the pause first.
func (d *LocalDispatcher) Resume(ctx context.Context) error {
	p, ok := d.q.(leasePauser)
	if !ok {
		return d.notSupported("resume")
	}
	if err := p.Resume(orBackground(ctx)); err != nil {
		return d.done("resume", err)
	}
	d.log.Info("resourcelease: leasing resumed")
	return nil
}

// Backlog returns the queue's backlog (see Engine.Backlog): the top
// partitions by ready items and the age of the oldest ready item. A queue
// without Backlog that reports its oldest ready item (OldestReadyReporter)
// gets a Backlog with that alone; any other is unimplemented
// (CodeNotSupported).
func (d *LocalDispatcher) Backlog(ctx context.Context, top int) (*Backlog, error) {
	ctx = orBackground(ctx)
	var bl Backlog
	var err error
	switch q := d.q.(type) {
	case backlogReader:
		bl, err = q.Backlog(ctx, top)
	case OldestReadyReporter:
		bl.OldestReadySince, err = q.OldestReady(ctx)
	default:
		return nil, d.notSupported("backlog")
	}
	if err != nil {
		return nil, d.done("backlog", err)
	}
	return &bl, nil
}
