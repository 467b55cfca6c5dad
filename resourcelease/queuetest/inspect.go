package queuetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// Inspector is the operator's read side of a queue: a page of items in one
// state, and one item with its body. A store with Features.Inspect has it.
type Inspector interface {
	ListItems(ctx context.Context, req resourcelease.ListItemsRequest) (resourcelease.ListItemsResponse, error)
	Item(ctx context.Context, seq int64) (resourcelease.ItemInfo, error)
}

func (f *fixture) inspector() Inspector {
	f.t.Helper()
	in, ok := f.q.(Inspector)
	if !ok {
		f.t.Fatalf("%T has Features.Inspect but no ListItems and Item", f.q)
	}
	return in
}

func seqsOf(items []resourcelease.ItemInfo) []int64 {
	out := []int64{}
	for _, it := range items {
		out = append(out, it.SequenceID)
	}
	return out
}

// listAll pages through req's listing and returns every sequence id.
func (f *fixture) listAll(req resourcelease.ListItemsRequest) []int64 {
	f.t.Helper()
	var all []int64
	for range 100 {
		page, err := f.inspector().ListItems(bg, req)
		f.must(err, "ListItems")
		all = append(all, seqsOf(page.Items)...)
		if page.NextAfter == 0 {
			return all
		}
		if page.NextAfter <= req.After {
			f.t.Fatalf("ListItems(%+v): NextAfter %d does not move the cursor", req, page.NextAfter)
		}
		req.After = page.NextAfter
	}
	f.t.Fatal("the listing never ended")
	return nil
}

func testListItemsPending(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{RequeueDelay: time.Minute})
	for i := 1; i <= 7; i++ {
		it := item(fmt.Sprintf("o-%d", i))
		it.PartitionKey = fmt.Sprintf("tenant-%d", i%2)
		if _, err := f.q.Enqueue(bg, it); err != nil {
			t.Fatalf("Enqueue: %v", err)
		}
	}
	// Item 1 fails and waits out a requeue delay; item 2 is redriven from
	// the dead letters; the rest have not been leased.
	l1 := f.lease("w")
	f.must(f.q.Fail(bg, l1.OwnershipToken, requeue("boom", "x")), "Fail")
	l2 := f.lease("w")
	f.must(f.q.Fail(bg, l2.OwnershipToken, deadLetter("poison", "")), "Fail")
	if n, err := f.q.Redrive(bg, resourcelease.DeadLetterSelection{SequenceIDs: []int64{l2.SequenceID}}); err != nil || n != 1 {
		t.Fatalf("Redrive = %d, %v", n, err)
	}
	pending := resourcelease.ItemPending
	for _, tc := range []struct {
		name      string
		req       resourcelease.ListItemsRequest
		want      []int64
		wantAfter int64
	}{
		{"first page", resourcelease.ListItemsRequest{State: pending, Limit: 3}, []int64{1, 2, 3}, 3},
		{"second page", resourcelease.ListItemsRequest{State: pending, Limit: 3, After: 3}, []int64{4, 5, 6}, 6},
		{"last page", resourcelease.ListItemsRequest{State: pending, Limit: 3, After: 6}, []int64{7}, 0},
		{"exactly full last page", resourcelease.ListItemsRequest{State: pending, Limit: 7}, []int64{1, 2, 3, 4, 5, 6, 7}, 0},
		{"default limit", resourcelease.ListItemsRequest{State: pending}, []int64{1, 2, 3, 4, 5, 6, 7}, 0},
		{"after the end", resourcelease.ListItemsRequest{State: pending, After: 7}, []int64{}, 0},
		{"partition filter", resourcelease.ListItemsRequest{State: pending, PartitionKey: "tenant-1"}, []int64{1, 3, 5, 7}, 0},
		{"partition filter paged", resourcelease.ListItemsRequest{State: pending, PartitionKey: "tenant-0", Limit: 2}, []int64{2, 4}, 4},
		{"resource id filter", resourcelease.ListItemsRequest{State: pending, ResourceID: "o-2"}, []int64{2}, 0},
		{"resource type filter", resourcelease.ListItemsRequest{State: pending, ResourceType: "demo.order", ResourceID: "o-5"}, []int64{5}, 0},
		{"no match", resourcelease.ListItemsRequest{State: pending, ResourceType: "other"}, []int64{}, 0},
		{"exact match only", resourcelease.ListItemsRequest{State: pending, ResourceID: "o-"}, []int64{}, 0},
		{"no leases", resourcelease.ListItemsRequest{State: resourcelease.ItemLeased}, []int64{}, 0},
		{"no dead letters", resourcelease.ListItemsRequest{State: resourcelease.ItemDead}, []int64{}, 0},
	} {
		page, err := f.inspector().ListItems(bg, tc.req)
		f.must(err, tc.name)
		if page.Items == nil {
			t.Fatalf("%s: Items is nil; an empty page is [], not null", tc.name)
		}
		if got := seqsOf(page.Items); !slices.Equal(got, tc.want) || page.NextAfter != tc.wantAfter {
			t.Fatalf("%s: page %v next %d, want %v next %d", tc.name, got, page.NextAfter, tc.want, tc.wantAfter)
		}
		for _, it := range page.Items {
			if it.State != pending || it.Payload.Body != nil || it.BodySize != len(`{"id":"`+it.Payload.ResourceID+`"}`) {
				t.Fatalf("%s: item %+v: want pending, no body, the body's size", tc.name, it)
			}
		}
	}
	page, err := f.inspector().ListItems(bg, resourcelease.ListItemsRequest{State: pending, Limit: 2})
	f.must(err, "ListItems")
	delayed, redriven := page.Items[0], page.Items[1]
	if delayed.Attempt != 2 || delayed.LastError == nil || *delayed.LastError != (resourcelease.ErrorInfo{Message: "boom", Code: "x"}) ||
		!delayed.ReadyAt.Equal(f.clock.Now().Add(time.Minute)) || delayed.EnqueuedAt.IsZero() {
		t.Fatalf("delayed item %+v: want attempt 2, its last error, ready in a minute", delayed)
	}
	if redriven.Attempt != 1 || !redriven.ReadyAt.IsZero() {
		t.Fatalf("redriven item %+v: want attempt 1 (a redrive starts again), ready now", redriven)
	}
}

func testListItemsLeasedAndDead(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{LeaseDuration: time.Minute})
	f.enqueue("a", "b", "c", "d", "e")
	var leases []*resourcelease.Lease
	for _, peer := range []string{"w1", "w2", "w1", "w2"} {
		leases = append(leases, f.lease(peer))
	}
	// d (4) is dead-lettered first, then b (2): dead-letter order is not
	// sequence order, and a listing is by sequence id.
	f.must(f.q.Fail(bg, leases[3].OwnershipToken, deadLetter("bad d", "")), "Fail")
	f.clock.Advance(time.Second)
	f.must(f.q.Fail(bg, leases[1].OwnershipToken, deadLetter("bad b", "")), "Fail")

	leased, err := f.inspector().ListItems(bg, resourcelease.ListItemsRequest{State: resourcelease.ItemLeased})
	f.must(err, "ListItems(leased)")
	if got := seqsOf(leased.Items); !slices.Equal(got, []int64{1, 3}) {
		t.Fatalf("leased %v, want [1 3]", got)
	}
	for i, it := range leased.Items {
		l := leases[2*i]
		if it.State != resourcelease.ItemLeased || it.LeaseOwner != "w1" || it.Attempt != 1 ||
			!it.LeaseExpiresAt.Equal(l.LeaseExpiresAt) || it.LeasedAt.IsZero() {
			t.Fatalf("leased item %+v: want w1's lease of attempt 1 until %v", it, l.LeaseExpiresAt)
		}
	}
	dead, err := f.inspector().ListItems(bg, resourcelease.ListItemsRequest{State: resourcelease.ItemDead, Limit: 1})
	f.must(err, "ListItems(dead)")
	if got := seqsOf(dead.Items); !slices.Equal(got, []int64{2}) || dead.NextAfter != 2 {
		t.Fatalf("dead page %v next %d, want [2] next 2", got, dead.NextAfter)
	}
	if d := dead.Items[0]; d.DeadLetterReason != "failed without requeue: bad b" || !d.DeadLetteredAt.Equal(f.clock.Now()) {
		t.Fatalf("dead letter %+v: want its reason and time", d)
	}
	for _, tc := range []struct {
		req  resourcelease.ListItemsRequest
		want []int64
	}{
		{resourcelease.ListItemsRequest{State: resourcelease.ItemDead, Limit: 1}, []int64{2, 4}},
		{resourcelease.ListItemsRequest{State: resourcelease.ItemDead, ResourceID: "d"}, []int64{4}},
		{resourcelease.ListItemsRequest{State: resourcelease.ItemPending}, []int64{5}},
		{resourcelease.ListItemsRequest{State: resourcelease.ItemLeased, Limit: 1}, []int64{1, 3}},
	} {
		if got := f.listAll(tc.req); !slices.Equal(got, tc.want) {
			t.Fatalf("all of %+v: %v, want %v", tc.req, got, tc.want)
		}
	}
}

func testListItemsBadRequests(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{Capacity: -1})
	for _, req := range []resourcelease.ListItemsRequest{
		{},
		{State: "done"},
		{State: "PENDING"},
		{State: resourcelease.ItemPending, After: -1},
		{State: resourcelease.ItemPending, Limit: -1},
	} {
		_, err := f.inspector().ListItems(bg, req)
		wantCode(t, err, resourcelease.CodeInvalidArgument, fmt.Sprintf("ListItems(%+v)", req))
	}
	// A limit past MaxListLimit is cut to it.
	items := make([]resourcelease.Item, resourcelease.MaxListLimit+2)
	for i := range items {
		items[i] = item(fmt.Sprint("o-", i))
	}
	if _, err := f.q.EnqueueBatch(bg, items); err != nil {
		t.Fatalf("EnqueueBatch: %v", err)
	}
	page, err := f.inspector().ListItems(bg, resourcelease.ListItemsRequest{State: resourcelease.ItemPending, Limit: 100_000})
	f.must(err, "ListItems")
	if len(page.Items) != resourcelease.MaxListLimit || page.NextAfter != int64(resourcelease.MaxListLimit) {
		t.Fatalf("a page of 100,000 has %d items, next %d; want MaxListLimit (%d)", len(page.Items), page.NextAfter, resourcelease.MaxListLimit)
	}
	c, cancel := context.WithCancel(bg)
	cancel()
	if _, err := f.inspector().ListItems(c, resourcelease.ListItemsRequest{State: resourcelease.ItemPending}); resourcelease.StatusOf(err) != resourcelease.StatusCancelled {
		t.Fatalf("ListItems with a cancelled context: %v, want cancelled", err)
	}
	f.must(f.q.Close(), "Close")
	_, err = f.inspector().ListItems(bg, resourcelease.ListItemsRequest{State: resourcelease.ItemPending})
	wantCode(t, err, resourcelease.ErrClosed.Code, "ListItems after Close")
	_, err = f.inspector().Item(bg, 1)
	wantCode(t, err, resourcelease.ErrClosed.Code, "Item after Close")
}

func testItemDetail(t *testing.T, s suite) {
	f := s.newQueue(t, resourcelease.QueueConfig{RequeueDelay: time.Minute, LeaseDuration: time.Minute})
	a := item("a")
	a.Attributes = map[string]string{"tenant": "t1"}
	if _, err := f.q.Enqueue(bg, a); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	f.enqueue("b", "c", "d")
	l1 := f.lease("w") // a: fails, delayed
	f.must(f.q.Fail(bg, l1.OwnershipToken, requeue("boom", "")), "Fail")
	l2 := f.lease("w") // b: dead
	f.must(f.q.Fail(bg, l2.OwnershipToken, deadLetter("poison", "bad")), "Fail")
	l3 := f.lease("w3") // c: leased

	get := func(seq int64) resourcelease.ItemInfo {
		t.Helper()
		in, err := f.inspector().Item(bg, seq)
		f.must(err, fmt.Sprint("Item ", seq))
		return in
	}
	if in := get(1); in.State != resourcelease.ItemPending || string(in.Payload.Body) != `{"id":"a"}` || in.BodySize != len(`{"id":"a"}`) ||
		in.Payload.Attributes["tenant"] != "t1" || in.Attempt != 2 || in.LastError == nil || in.LastError.Message != "boom" ||
		in.ReadyAt.IsZero() || in.EnqueuedAt.IsZero() {
		t.Fatalf("item 1 %+v: want pending with its body and attributes, attempt 2, its last error, a ready time", in)
	}
	if in := get(2); in.State != resourcelease.ItemDead || in.DeadLetterReason != "failed without requeue: poison" ||
		in.LastError == nil || *in.LastError != (resourcelease.ErrorInfo{Message: "poison", Code: "bad"}) || in.DeadLetteredAt.IsZero() {
		t.Fatalf("item 2 %+v: want dead with its reason and last error", in)
	}
	if in := get(3); in.State != resourcelease.ItemLeased || in.LeaseOwner != "w3" || !in.LeaseExpiresAt.Equal(l3.LeaseExpiresAt) {
		t.Fatalf("item 3 %+v: want leased to w3 until %v", in, l3.LeaseExpiresAt)
	}
	if in := get(4); in.State != resourcelease.ItemPending || in.Attempt != 1 || !in.ReadyAt.IsZero() {
		t.Fatalf("item 4 %+v: want pending, attempt 1, ready now", in)
	}
	f.must(f.q.Complete(bg, l3.OwnershipToken), "Complete")
	for _, seq := range []int64{3, 5, 0, -1} {
		_, err := f.inspector().Item(bg, seq)
		wantCode(t, err, resourcelease.CodeItemNotFound, fmt.Sprint("Item ", seq))
		if resourcelease.StatusOf(err) != resourcelease.StatusNotFound {
			t.Fatalf("Item %d: status %v, want not-found", seq, resourcelease.StatusOf(err))
		}
	}
}
