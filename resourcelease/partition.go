package resourcelease

// Fairness is how a queue chooses among the partitions that have an item
// ready to lease (QueueConfig.Fairness).
type Fairness string

// The fairness modes.
const (
	// FairnessFIFO leases the oldest ready item (lowest sequence id) of the
	// whole queue: one partition's backlog is worked off before a later
	// partition's first item. The default.
	FairnessFIFO Fairness = "fifo"
	// FairnessPartitions leases round-robin over the partitions that have a
	// leasable item, the oldest item first within each, so that one
	// partition's backlog never starves another's: a partition that became
	// leasable, or was just served, waits behind every other leasable one.
	FairnessPartitions Fairness = "partitions"
)

// Valid reports whether f is a fairness mode ("" counts as the default).
func (f Fairness) Valid() bool { return f == "" || f == FairnessFIFO || f == FairnessPartitions }

// partition is one partition key's pending items and live lease count, in
// the partitioned index.
type partition struct {
	key string
	// fresh and redo hold the partition's ready items and, when the
	// partitions are strict (MaxActivePerPartition 1), its delayed items
	// too, which keeps a delayed item at its place at the head: fresh in
	// ascending sequence order (new enqueues, O(1)), redo the rest (a heap
	// by sequence id), as the queue itself keeps them without partitions.
	fresh  seqRing
	redo   minHeap[*entry]
	ready  int // items in fresh and redo that are ready (readyAt 0)
	active int // live leases, counted only under a limit (MaxActivePerPartition)
	// delayed counts its delayed items (strict partitions only): while it is
	// zero the head is ready without looking at it.
	delayed int
	// heapSeq is the seq of the partition's valid entry in
	// partitionIndex.heap (fifo), 0 when it has none.
	heapSeq int64
	// prev and next link the partition into partitionIndex's ring
	// (partitions fairness) while inRing.
	prev, next *partition
	inRing     bool
}

func (p *partition) len() int { return p.fresh.Len() + p.redo.Len() }

// headSeq returns the sequence id of the partition's pending item with the
// lowest one, and whether it has any. It reads an item only when one is
// out of order (in redo).
func (p *partition) headSeq() (int64, bool) {
	fs, _ := p.fresh.Front()
	r, ok := p.redo.Peek()
	switch {
	case !ok:
		return fs, p.fresh.Len() > 0
	case p.fresh.Len() == 0 || r.seq < fs:
		return r.seq, true
	}
	return fs, true
}

// head returns the partition's pending item with the lowest sequence id,
// or nil.
func (p *partition) head() *entry {
	fs, f := p.fresh.Front()
	r, ok := p.redo.Peek()
	switch {
	case !ok:
		return f
	case f == nil || r.seq < fs:
		return r
	}
	return f
}

// popHead removes and returns head().
func (p *partition) popHead() *entry {
	fs, f := p.fresh.Front()
	r, ok := p.redo.Peek()
	if ok && (f == nil || r.seq < fs) {
		return p.redo.Pop()
	}
	return p.fresh.PopFront()
}

// add adds e in its place by sequence id.
func (p *partition) add(e *entry) {
	if p.fresh.Len() == 0 || p.fresh.Back() < e.seq {
		p.fresh.PushBack(e.seq, e)
		return
	}
	p.redo.Push(e)
}

// each calls f on every item of the partition.
func (p *partition) each(f func(*entry)) {
	p.fresh.Each(f)
	for _, e := range p.redo.items {
		f(e)
	}
}

// seqRing is a FIFO of items in ascending sequence order that keeps each
// item's sequence id next to it, and the last one's in the ring itself, so
// that the partition's head and back are known without reading an item (a
// cache miss, in a deep queue).
type seqRing struct {
	buf        []seqEntry
	head, size int
	back       int64 // seq of the last item pushed
}

type seqEntry struct {
	seq int64
	e   *entry
}

func (r *seqRing) Len() int { return r.size }

func (r *seqRing) PushBack(seq int64, e *entry) {
	if r.size == len(r.buf) {
		nb := make([]seqEntry, max(2*len(r.buf), 2))
		for i := 0; i < r.size; i++ {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = seqEntry{seq, e}
	r.size++
	r.back = seq
}

// Front returns the first item and its sequence id (0, nil when empty).
func (r *seqRing) Front() (int64, *entry) {
	if r.size == 0 {
		return 0, nil
	}
	f := r.buf[r.head]
	return f.seq, f.e
}

// Back returns the last item's sequence id (the ring is not empty).
func (r *seqRing) Back() int64 { return r.back }

func (r *seqRing) PopFront() *entry {
	if r.size == 0 {
		return nil
	}
	f := r.buf[r.head]
	r.buf[r.head] = seqEntry{}
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	if r.size == 0 {
		r.head = 0
		if len(r.buf) > 64 {
			r.buf = nil // a drained backlog gives its buffer back
		}
	}
	return f.e
}

func (r *seqRing) Each(f func(*entry)) {
	for i := 0; i < r.size; i++ {
		f(r.buf[(r.head+i)%len(r.buf)].e)
	}
}

// headEntry is a partition in the fifo heap with its head's sequence id,
// kept by the heap so that comparing two entries reads no partition.
type headEntry struct {
	seq int64
	p   *partition
}

func bySeq(a, b *entry) bool { return a.seq < b.seq }

// partitionIndex chooses the next item to lease when leasing depends on
// partitions (MaxActivePerPartition > 0, or partitions fairness). Each
// partition keeps its pending items in sequence order (a ring of new
// enqueues and a heap of the others); the partitions that have a leasable
// item (a ready head and a live lease count below the limit) are kept in a
// heap by their head's sequence id (fifo) or in a ring (partitions
// fairness). Leasing and every change of one partition are O(log n) for n
// items (O(1) within the partition for items in enqueue order), plus for
// fifo O(log P) in the heap of P partitions, whose entries carry their
// head's sequence id so that sifting touches no item.
//
// Delayed items are in Engine.delayed, by time; with strict partitions they
// are in their partition as well, since a delayed item at the head of a
// strict partition holds it.
type partitionIndex struct {
	max    int  // MaxActivePerPartition; 0 no limit
	strict bool // max == 1
	rr     bool // partitions fairness
	byKey  map[string]*partition
	ready  int // ready items in every partition

	heap               []headEntry // fifo: leasable partitions by head sequence id
	ringHead, ringTail *partition  // partitions fairness: leasable partitions, next first
}

func newPartitionIndex(cfg *QueueConfig) *partitionIndex {
	return &partitionIndex{
		max:    cfg.MaxActivePerPartition,
		strict: cfg.MaxActivePerPartition == 1,
		rr:     cfg.Fairness == FairnessPartitions,
		byKey:  make(map[string]*partition),
	}
}

// get returns the partition of key, creating it.
func (x *partitionIndex) get(key string) *partition {
	p := x.byKey[key]
	if p == nil {
		p = &partition{key: key}
		p.redo.less = bySeq
		x.byKey[key] = p
	}
	return p
}

// leasable reports whether p's head can be leased now.
func (x *partitionIndex) leasable(p *partition) bool {
	if (x.max > 0 && p.active >= x.max) || p.len() == 0 {
		return false
	}
	return p.delayed == 0 || p.head().readyAt == 0
}

// update puts p where its state says: among the leasable partitions or
// not, at its head's place in the fifo heap; and forgets a partition with
// nothing pending and no lease. Call it once after every change of p.
func (x *partitionIndex) update(p *partition) {
	ok := x.leasable(p)
	if x.rr {
		switch {
		case ok && !p.inRing:
			x.ringPush(p)
		case !ok && p.inRing:
			x.ringRemove(p)
		}
	} else if ok {
		if seq, _ := p.headSeq(); seq != p.heapSeq {
			p.heapSeq = seq // an older entry of p, if any, is stale now
			x.heapPush(headEntry{seq: seq, p: p})
		}
	} else {
		p.heapSeq = 0
	}
	if p.len() == 0 && p.active == 0 {
		delete(x.byKey, p.key)
	}
}

// push adds a ready item.
func (x *partitionIndex) push(e *entry) {
	p := x.get(e.item.PartitionKey)
	p.add(e)
	p.ready++
	x.ready++
	x.update(p)
}

// pushDelayed adds a delayed item to its strict partition (it is in
// Engine.delayed too).
func (x *partitionIndex) pushDelayed(e *entry) {
	p := x.get(e.item.PartitionKey)
	p.add(e)
	p.delayed++
	x.update(p)
}

// promoted tells a strict partition that its delayed item e is ready now
// (e.readyAt was cleared).
func (x *partitionIndex) promoted(e *entry) {
	p := x.byKey[e.item.PartitionKey]
	p.ready++
	p.delayed--
	x.ready++
	x.update(p)
}

// next returns the partition to lease from, or nil.
func (x *partitionIndex) next() *partition {
	if x.rr {
		return x.ringHead
	}
	for len(x.heap) > 0 {
		if top := x.heap[0]; top.p.heapSeq == top.seq {
			return top.p
		}
		x.heapPop() // stale
	}
	return nil
}

// peek returns the item pop would take, or nil.
func (x *partitionIndex) peek() *entry {
	if p := x.next(); p != nil {
		return p.head()
	}
	return nil
}

// pop takes the next item for a lease: the lease is counted against its
// partition, which (partitions fairness) goes to the back of the ring.
func (x *partitionIndex) pop() *entry {
	p := x.next()
	if p == nil {
		return nil
	}
	e := p.popHead()
	p.ready--
	x.ready--
	if x.max > 0 {
		p.active++
	}
	if x.rr {
		x.ringRemove(p) // served: back of the line if still leasable
	} else {
		x.heapPop() // p's entry, at the top: update pushes its next head
		p.heapSeq = 0
	}
	x.update(p)
	return e
}

// leased counts a live lease of key (a lease restored at a restart).
func (x *partitionIndex) leased(key string) {
	if x.max == 0 {
		return
	}
	p := x.get(key)
	p.active++
	x.update(p)
}

// unleased ends a live lease of e's partition.
func (x *partitionIndex) unleased(e *entry) {
	if x.max == 0 {
		return // nothing to count, and no partition to look up
	}
	p := x.byKey[e.item.PartitionKey]
	if p == nil || p.active == 0 {
		return // cannot happen: every live lease was counted
	}
	p.active--
	x.update(p)
}

// each calls f on every pending item the partitions hold (with strict
// partitions, delayed ones included).
func (x *partitionIndex) each(f func(*entry)) {
	for _, p := range x.byKey {
		p.each(f)
	}
}

// The fifo heap of partitions, by head sequence id. It is lazy: an entry
// is valid while its partition's heapSeq is its seq, and a change of a
// partition's head pushes a new entry rather than moving the old one, so
// sifting compares sequence ids in the array and never reads a partition.
// Stale entries are dropped when they reach the top, or all at once when
// they outnumber the partitions.

func (x *partitionIndex) heapPush(h headEntry) {
	x.heap = append(x.heap, h)
	j := len(x.heap) - 1
	for j > 0 {
		i := (j - 1) / 2
		if x.heap[i].seq <= x.heap[j].seq {
			break
		}
		x.heap[i], x.heap[j] = x.heap[j], x.heap[i]
		j = i
	}
	if len(x.heap) > 2*len(x.byKey)+64 {
		x.compact()
	}
}

func (x *partitionIndex) heapPop() {
	n := len(x.heap) - 1
	x.heap[0] = x.heap[n]
	x.heap[n] = headEntry{}
	x.heap = x.heap[:n]
	x.heapDown(0)
}

func (x *partitionIndex) heapDown(i int) {
	n := len(x.heap)
	for {
		j := 2*i + 1
		if j >= n {
			return
		}
		if j2 := j + 1; j2 < n && x.heap[j2].seq < x.heap[j].seq {
			j = j2
		}
		if x.heap[i].seq <= x.heap[j].seq {
			return
		}
		x.heap[i], x.heap[j] = x.heap[j], x.heap[i]
		i = j
	}
}

// compact drops the stale entries.
func (x *partitionIndex) compact() {
	kept := x.heap[:0]
	for _, h := range x.heap {
		if h.p.heapSeq == h.seq {
			kept = append(kept, h)
		}
	}
	clear(x.heap[len(kept):])
	x.heap = kept
	for i := len(x.heap)/2 - 1; i >= 0; i-- {
		x.heapDown(i)
	}
}

// The ring of partitions (partitions fairness): an intrusive doubly linked
// list, so a partition leaves it in O(1) wherever it is.

func (x *partitionIndex) ringPush(p *partition) {
	p.prev, p.next, p.inRing = x.ringTail, nil, true
	if x.ringTail != nil {
		x.ringTail.next = p
	} else {
		x.ringHead = p
	}
	x.ringTail = p
}

func (x *partitionIndex) ringRemove(p *partition) {
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		x.ringHead = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	} else {
		x.ringTail = p.prev
	}
	p.prev, p.next, p.inRing = nil, nil, false
}
