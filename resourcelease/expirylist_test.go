package resourcelease

import "testing"

// TestExpiryList: push, move to back and remove keep the list linked both
// ways, and removing an entry that is not in the list changes nothing.
func TestExpiryList(t *testing.T) {
	var l expiryList
	e := make([]*entry, 4)
	for i := range e {
		e[i] = &entry{seq: int64(i + 1)}
		l.PushBack(e[i])
	}
	order := func() []int64 {
		var fwd, back []int64
		for x := l.head; x != nil; x = x.nextLease {
			fwd = append(fwd, x.seq)
		}
		for x := l.tail; x != nil; x = x.prevLease {
			back = append([]int64{x.seq}, back...)
		}
		if len(fwd) != len(back) {
			t.Fatalf("forward %v, backward %v", fwd, back)
		}
		for i := range fwd {
			if fwd[i] != back[i] {
				t.Fatalf("forward %v, backward %v", fwd, back)
			}
		}
		return fwd
	}
	steps := []struct {
		name string
		do   func()
		want []int64
	}{
		{"pushed", func() {}, []int64{1, 2, 3, 4}},
		{"front to back", func() { l.MoveToBack(e[0]) }, []int64{2, 3, 4, 1}},
		{"back to back", func() { l.MoveToBack(e[0]) }, []int64{2, 3, 4, 1}},
		{"middle removed", func() { l.Remove(e[2]) }, []int64{2, 4, 1}},
		{"removed again: not in the list", func() { l.Remove(e[2]) }, []int64{2, 4, 1}},
		{"never added", func() { l.Remove(&entry{seq: 9}) }, []int64{2, 4, 1}},
		{"head removed", func() { l.Remove(e[1]) }, []int64{4, 1}},
		{"tail removed", func() { l.Remove(e[0]) }, []int64{4}},
		{"last removed", func() { l.Remove(e[3]) }, nil},
		{"re-added", func() { l.PushBack(e[2]) }, []int64{3}},
	}
	for _, st := range steps {
		st.do()
		got := order()
		if len(got) != len(st.want) {
			t.Fatalf("%s: list %v, want %v", st.name, got, st.want)
		}
		for i := range got {
			if got[i] != st.want[i] {
				t.Fatalf("%s: list %v, want %v", st.name, got, st.want)
			}
		}
	}
}
