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
	resp, err := d.queue.ListItems(orBackground(ctx), r)
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
	in, err := d.queue.Item(orBackground(ctx), sequenceID)
	if err != nil {
		return nil, d.done("item", err)
	}
	ownPayload(&in.Payload)
	return &in, nil
}

// Pause stops the dispatcher from granting leases until Resume (see
// Engine.Pause): lease requests get nothing, long-polls wait bounded by
// their wait, and everything else keeps working. Stats reports Paused. The
// state is kept in memory only: a restarted dispatcher leases again.
func (d *LocalDispatcher) Pause(ctx context.Context) error {
	if err := d.queue.Pause(orBackground(ctx)); err != nil {
		return d.done("pause", err)
	}
	d.log.Info("resourcelease: leasing paused")
	return nil
}

// Resume lets a paused dispatcher grant leases again, serving the
// long-polls that waited through the pause first.
func (d *LocalDispatcher) Resume(ctx context.Context) error {
	if err := d.queue.Resume(orBackground(ctx)); err != nil {
		return d.done("resume", err)
	}
	d.log.Info("resourcelease: leasing resumed")
	return nil
}
