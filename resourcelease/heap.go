package resourcelease

// minHeap is a binary min-heap.
type minHeap[T any] struct {
	items []T
	less  func(a, b T) bool
}

func (h *minHeap[T]) Len() int { return len(h.items) }

func (h *minHeap[T]) Peek() (T, bool) {
	if len(h.items) == 0 {
		var zero T
		return zero, false
	}
	return h.items[0], true
}

func (h *minHeap[T]) Push(x T) {
	h.items = append(h.items, x)
	h.up(len(h.items) - 1)
}

func (h *minHeap[T]) Pop() T {
	n := len(h.items) - 1
	h.swap(0, n)
	h.down(0, n)
	x := h.items[n]
	var zero T
	h.items[n] = zero
	h.items = h.items[:n]
	return x
}

// heapify restores the heap order after items was changed wholesale.
func (h *minHeap[T]) heapify() {
	n := len(h.items)
	for i := n/2 - 1; i >= 0; i-- {
		h.down(i, n)
	}
}

// fixTop restores the heap order after the top's key grew.
func (h *minHeap[T]) fixTop() { h.down(0, len(h.items)) }

// Drop empties the heap and returns its elements (in heap order).
func (h *minHeap[T]) Drop() []T {
	out := h.items
	h.items = nil
	return out
}

func (h *minHeap[T]) swap(i, j int) {
	h.items[i], h.items[j] = h.items[j], h.items[i]
}

func (h *minHeap[T]) up(j int) {
	for {
		i := (j - 1) / 2
		if i == j || !h.less(h.items[j], h.items[i]) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h *minHeap[T]) down(i, n int) {
	for {
		j1 := 2*i + 1
		if j1 >= n || j1 < 0 {
			break
		}
		j := j1
		if j2 := j1 + 1; j2 < n && h.less(h.items[j2], h.items[j1]) {
			j = j2
		}
		if !h.less(h.items[j], h.items[i]) {
			break
		}
		h.swap(i, j)
		i = j
	}
}

// ring is a FIFO deque of pointers that grows by doubling; pops clear their
// slot so popped entries can be collected.
type ring[T any] struct {
	buf        []*T
	head, size int
}

func (r *ring[T]) Len() int { return r.size }

func (r *ring[T]) PushBack(x *T) {
	if r.size == len(r.buf) {
		n := 2 * len(r.buf)
		if n == 0 {
			n = 16
		}
		nb := make([]*T, n)
		for i := 0; i < r.size; i++ {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.size)%len(r.buf)] = x
	r.size++
}

func (r *ring[T]) Front() *T {
	if r.size == 0 {
		return nil
	}
	return r.buf[r.head]
}

func (r *ring[T]) PopFront() *T {
	if r.size == 0 {
		return nil
	}
	x := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	if r.size == 0 {
		r.head = 0
	}
	return x
}

// Drop empties the ring and returns its elements in order.
func (r *ring[T]) Drop() []*T {
	out := make([]*T, 0, r.size)
	for r.size > 0 {
		out = append(out, r.PopFront())
	}
	r.buf, r.head = nil, 0
	return out
}

// Each calls f on every element in order.
func (r *ring[T]) Each(f func(*T)) {
	for i := 0; i < r.size; i++ {
		f(r.buf[(r.head+i)%len(r.buf)])
	}
}
