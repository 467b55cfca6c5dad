package control

import (
	"context"
	"net/http"
	"strconv"
	"strings"

	"github.com/leasemesh/leasemesh/internal/wire"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// Bounds of GET /items/{sequenceId}.
const (
	// DefaultItemEventWindow is how many of the newest replication events
	// GET /items/{sequenceId} searches when HandlerConfig.ItemEventWindow is
	// zero.
	DefaultItemEventWindow = 1000
	// MaxItemEventWindow is the largest HandlerConfig.ItemEventWindow: the
	// most events one read of the log returns, so the window searched is
	// always the one reported.
	MaxItemEventWindow = 10_000
)

// ItemReader is what GET /items and GET /items/{sequenceId} need of
// HandlerConfig.Dispatcher; resourcelease.LocalDispatcher has it. Without it
// those endpoints answer unimplemented.
type ItemReader interface {
	// ListItems returns a page of the items in one state.
	ListItems(ctx context.Context, req *resourcelease.ListItemsRequest) (*resourcelease.ListItemsResponse, error)
	// Item returns one item, with its body, or resourcelease.ErrItemNotFound.
	Item(ctx context.Context, sequenceID int64) (*resourcelease.ItemInfo, error)
}

// LeasingPauser is what POST /pause and POST /resume need of
// HandlerConfig.Dispatcher; resourcelease.LocalDispatcher has it. Without it
// those endpoints answer unimplemented.
type LeasingPauser interface {
	// Pause stops granting leases until Resume.
	Pause(ctx context.Context) error
	// Resume grants leases again.
	Resume(ctx context.Context) error
}

// ItemDetail is the response of GET /items/{sequenceId}.
type ItemDetail struct {
	// Item is the item, with its body.
	Item resourcelease.ItemInfo `json:"item"`
	// Events are the replication events that name the item (by its
	// ownership token or its sequenceId metadata) among those in
	// EventWindow, oldest first, without their payload's body (Item has
	// it); never null. Snapshot events (drain, restore, redrive, purge)
	// carry counts, not ids, so they are not among them.
	Events []resourcelease.Event `json:"events"`
	// EventWindow is the range of sequence numbers searched: the newest
	// HandlerConfig.ItemEventWindow events. It is absent when the
	// handler has no Events that reports LastSequence, and then Events is
	// empty.
	EventWindow *SequenceRange `json:"eventWindow,omitempty"`
}

// PauseState is the response of POST /pause and POST /resume.
type PauseState struct {
	Paused bool `json:"paused"`
}

// itemReader returns the Dispatcher as an ItemReader, or writes
// unimplemented and returns nil.
func (h *controlHandler) itemReader(w http.ResponseWriter) ItemReader {
	d := h.dispatcher(w)
	if d == nil {
		return nil
	}
	ir, ok := d.(ItemReader)
	if !ok {
		h.writeError(w, notConfigured("dispatcher that can list items (ItemReader)"))
	}
	return ir
}

func (h *controlHandler) items(w http.ResponseWriter, r *http.Request) {
	ir := h.itemReader(w)
	if ir == nil {
		return
	}
	q := r.URL.Query()
	state := resourcelease.ItemState(strings.TrimSpace(q.Get("state")))
	if state == "" {
		state = resourcelease.ItemPending
	}
	if !state.Valid() {
		h.writeError(w, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeInvalidQuery,
			"query parameter state=%q must be %s, %s or %s", wire.HeaderSafe(string(state), 32),
			resourcelease.ItemPending, resourcelease.ItemLeased, resourcelease.ItemDead))
		return
	}
	after, err := queryInt(r, "after", 0, 0, 1<<62)
	if err != nil {
		h.writeError(w, err)
		return
	}
	limit, err := queryInt(r, "limit", resourcelease.DefaultListLimit, 1, 1<<31-1)
	if err != nil {
		h.writeError(w, err)
		return
	}
	resp, err := ir.ListItems(r.Context(), &resourcelease.ListItemsRequest{
		State:        state,
		ResourceType: q.Get("resourceType"),
		PartitionKey: q.Get("partitionKey"),
		ResourceID:   q.Get("resourceId"),
		After:        after,
		Limit:        int(min(limit, resourcelease.MaxListLimit)),
	})
	if err == nil && resp != nil && resp.Items == nil {
		resp.Items = []resourcelease.ItemInfo{}
	}
	respond(h, w, resp, err)
}

func (h *controlHandler) item(w http.ResponseWriter, r *http.Request) {
	ir := h.itemReader(w)
	if ir == nil {
		return
	}
	raw := strings.TrimPrefix(r.URL.Path, h.prefix+"/items/")
	seq, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || seq <= 0 {
		h.writeError(w, resourcelease.Errorf(resourcelease.StatusInvalidArgument, CodeInvalidQuery,
			"/items/%s: the sequenceId must be a positive integer", wire.HeaderSafe(raw, 32)))
		return
	}
	it, err := ir.Item(r.Context(), seq)
	if err != nil {
		h.writeError(w, err)
		return
	}
	detail := ItemDetail{Item: *it, Events: []resourcelease.Event{}}
	if err := h.itemEvents(r.Context(), seq, &detail); err != nil {
		h.writeError(w, err)
		return
	}
	h.writeJSON(w, detail)
}

// itemEvents fills in the replication events of item seq among the newest
// ItemEventWindow. Reading them costs what GET /replication does for that
// many events; only the matches are kept.
func (h *controlHandler) itemEvents(ctx context.Context, seq int64, detail *ItemDetail) error {
	ls, ok := h.opts.Events.(lastSequencer)
	if !ok || h.opts.Events == nil {
		return nil
	}
	last := ls.LastSequence()
	window := int64(h.opts.ItemEventWindow)
	from := max(0, last-window)
	detail.EventWindow = &SequenceRange{From: from + 1, To: last}
	if last == 0 {
		return nil
	}
	events, err := h.opts.Events.ReadEvents(ctx, from, int(window))
	if err != nil {
		return err
	}
	id := strconv.FormatInt(seq, 10)
	for _, e := range events {
		if (e.Ownership != nil && e.Ownership.SequenceID == seq) || e.Metadata[resourcelease.MetaSequenceID] == id {
			if e.Payload != nil && e.Payload.Body != nil {
				p := *e.Payload
				p.Body = nil
				e.Payload = &p
			}
			detail.Events = append(detail.Events, e)
		}
	}
	return nil
}

// pauser returns the Dispatcher as a LeasingPauser, or writes unimplemented
// and returns nil.
func (h *controlHandler) pauser(w http.ResponseWriter) LeasingPauser {
	d := h.dispatcher(w)
	if d == nil {
		return nil
	}
	p, ok := d.(LeasingPauser)
	if !ok {
		h.writeError(w, notConfigured("dispatcher that can pause leasing (LeasingPauser)"))
	}
	return p
}

func (h *controlHandler) pause(w http.ResponseWriter, r *http.Request) {
	if p := h.pauser(w); p != nil {
		if err := p.Pause(r.Context()); err != nil {
			h.writeError(w, err)
			return
		}
		h.writeJSON(w, PauseState{Paused: true})
	}
}

func (h *controlHandler) resume(w http.ResponseWriter, r *http.Request) {
	if p := h.pauser(w); p != nil {
		if err := p.Resume(r.Context()); err != nil {
			h.writeError(w, err)
			return
		}
		h.writeJSON(w, PauseState{Paused: false})
	}
}
