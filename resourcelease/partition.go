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
	// pending holds the partition's ready items by sequence id and, when the
	// partitions are strict (MaxActivePerPartition 1), its delayed items
	// too, which keeps a delayed item at its place at the head.
	pending minHeap[*entry]
	ready   int // items in pending that are ready (readyAt 0)
	active  int // live leases
	// heapIdx is the partition's place in partitionIndex.heap (fifo), or -1.
	heapIdx int
	// prev and next link the partition into partitionIndex's ring
	// (partitions fairness) while inRing.
	prev, next *partition
	inRing     bool
}

func bySeq(a, b *entry) bool { return a.seq < b.seq }

// partitionIndex chooses the next item to lease when leasing depends on
// partitions (MaxActivePerPartition > 0, or partitions fairness). Each
// partition keeps its pending items in a heap by sequence id; the
// partitions that have a leasable item (a ready head and a live lease count
// below the limit) are kept in a heap by their head's sequence id (fifo) or
// in a ring (partitions fairness). Leasing and every change of one
// partition are O(log n) for n items: the heap of the partition plus, for
// fifo, the heap of partitions.
//
// Delayed items are in Engine.delayed, by time; with strict partitions they
// are in their partition's heap as well, since a delayed item at the head
// of a strict partition holds it.
type partitionIndex struct {
	max    int  // MaxActivePerPartition; 0 no limit
	strict bool // max == 1
	rr     bool // partitions fairness
	byKey  map[string]*partition
	ready  int // ready items in every partition

	heap               []*partition // fifo: leasable partitions by head sequence id
	ringHead, ringTail *partition   // partitions fairness: leasable partitions, next first
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
		p = &partition{key: key, heapIdx: -1}
		p.pending.less = bySeq
		x.byKey[key] = p
	}
	return p
}

// leasable reports whether p's head can be leased now.
func (x *partitionIndex) leasable(p *partition) bool {
	if p.pending.Len() == 0 || (x.max > 0 && p.active >= x.max) {
		return false
	}
	return p.pending.items[0].readyAt == 0
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
	} else {
		switch {
		case ok && p.heapIdx < 0:
			p.heapIdx = len(x.heap)
			x.heap = append(x.heap, p)
			x.up(p.heapIdx)
		case ok:
			x.fix(p.heapIdx)
		case p.heapIdx >= 0:
			x.remove(p.heapIdx)
		}
	}
	if p.pending.Len() == 0 && p.active == 0 {
		delete(x.byKey, p.key)
	}
}

// push adds a ready item.
func (x *partitionIndex) push(e *entry) {
	p := x.get(e.item.PartitionKey)
	p.pending.Push(e)
	p.ready++
	x.ready++
	x.update(p)
}

// pushDelayed adds a delayed item to its strict partition (it is in
// Engine.delayed too).
func (x *partitionIndex) pushDelayed(e *entry) {
	p := x.get(e.item.PartitionKey)
	p.pending.Push(e)
	x.update(p)
}

// promoted tells a strict partition that its delayed item e is ready now
// (e.readyAt was cleared).
func (x *partitionIndex) promoted(e *entry) {
	p := x.byKey[e.item.PartitionKey]
	p.ready++
	x.ready++
	x.update(p)
}

// next returns the partition to lease from, or nil.
func (x *partitionIndex) next() *partition {
	if x.rr {
		return x.ringHead
	}
	if len(x.heap) == 0 {
		return nil
	}
	return x.heap[0]
}

// peek returns the item pop would take, or nil.
func (x *partitionIndex) peek() *entry {
	if p := x.next(); p != nil {
		return p.pending.items[0]
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
	e := p.pending.Pop()
	p.ready--
	x.ready--
	p.active++
	if x.rr {
		x.ringRemove(p) // served: back of the line if still leasable
	}
	x.update(p)
	return e
}

// leased counts a live lease of key (a lease restored at a restart).
func (x *partitionIndex) leased(key string) {
	p := x.get(key)
	p.active++
	x.update(p)
}

// unleased ends a live lease of e's partition.
func (x *partitionIndex) unleased(e *entry) {
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
		for _, e := range p.pending.items {
			f(e)
		}
	}
}

// The fifo heap of partitions, by head sequence id, with each partition's
// index kept in heapIdx.

func (x *partitionIndex) lessAt(i, j int) bool {
	return x.heap[i].pending.items[0].seq < x.heap[j].pending.items[0].seq
}

func (x *partitionIndex) swap(i, j int) {
	x.heap[i], x.heap[j] = x.heap[j], x.heap[i]
	x.heap[i].heapIdx = i
	x.heap[j].heapIdx = j
}

func (x *partitionIndex) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !x.lessAt(j, i) {
			break
		}
		x.swap(i, j)
		j = i
	}
}

func (x *partitionIndex) down(i int) bool {
	start, n := i, len(x.heap)
	for {
		j := 2*i + 1
		if j >= n {
			break
		}
		if j2 := j + 1; j2 < n && x.lessAt(j2, j) {
			j = j2
		}
		if !x.lessAt(j, i) {
			break
		}
		x.swap(i, j)
		i = j
	}
	return i > start
}

func (x *partitionIndex) fix(i int) {
	if !x.down(i) {
		x.up(i)
	}
}

func (x *partitionIndex) remove(i int) {
	n := len(x.heap) - 1
	p := x.heap[i]
	if i != n {
		x.swap(i, n)
	}
	x.heap[n] = nil
	x.heap = x.heap[:n]
	if i != n {
		x.fix(i)
	}
	p.heapIdx = -1
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
