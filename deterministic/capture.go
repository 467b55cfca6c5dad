package deterministic

import (
	"context"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// CaptureWith records the effects of events (the records ApplyEvents
// would add) through addMany rather than through the Coordinator's store:
// for a store that writes them in the transaction of the events' own
// mutation, so that an effect commits, or rolls back, with its event and no
// checkpoint is needed (postgres.StateStore's TryAddManyTx, bound to the
// queue's transaction). addMany reports, per record, whether it was added;
// the Coordinator counts the outcomes as it counts its own. It writes no
// checkpoint. A store failure is returned as ApplyEvents returns one.
func (c *Coordinator) CaptureWith(ctx context.Context, events []resourcelease.Event, addMany func(context.Context, []KeyedRecord) ([]bool, error)) error {
	if len(events) == 0 {
		return nil
	}
	for i := range events {
		if seq := events[i].SequenceNumber; seq <= 0 {
			return invalidArgument("event sequence number must be positive, got %d%s", seq, batchPlace(i, len(events)))
		}
	}
	b := batchPool.Get().(*eventBatch)
	defer b.release() // addMany is done with the records when it returns
	recs, err := b.encode(c.changeID, events)
	if err != nil {
		return err
	}
	added, err := addMany(ctx, recs)
	if err != nil {
		return c.storeFailure(events, err)
	}
	c.count(added)
	return nil
}
