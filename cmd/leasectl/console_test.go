package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func itemSeqs(page resourcelease.ListItemsResponse) []int64 {
	out := []int64{}
	for _, it := range page.Items {
		out = append(out, it.SequenceID)
	}
	return out
}

func TestItemsAndItem(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	for i := 1; i <= 4; i++ {
		m.ok("", "enqueue", "--resource-type", "demo.order", "--resource-id", fmt.Sprint("o-", i),
			"--partition-key", fmt.Sprint("tenant-", i%2), "--body", fmt.Sprintf(`{"n":%d}`, i))
	}
	lease := m.ok("", "lease", "--peer", "w1")
	m.ok(lease, "fail", "--no-requeue", "--reason", "poison")
	m.ok("", "lease", "--peer", "w2")

	pending := decode[resourcelease.ListItemsResponse](t, m.ok("", "items"))
	assert.Equal(t, []int64{3, 4}, itemSeqs(pending))
	first := decode[resourcelease.ListItemsResponse](t, m.ok("", "items", "--limit", "1"))
	assert.Equal(t, []int64{3}, itemSeqs(first))
	assert.Equal(t, int64(3), first.NextAfter)
	next := decode[resourcelease.ListItemsResponse](t, m.ok("", "items", "--limit", "1", "--after", "3"))
	assert.Equal(t, []int64{4}, itemSeqs(next))
	all := decode[resourcelease.ListItemsResponse](t, m.ok("", "items", "--limit", "1", "--all"))
	assert.Equal(t, []int64{3, 4}, itemSeqs(all))
	assert.Zero(t, all.NextAfter)
	assert.Equal(t, []int64{4}, itemSeqs(decode[resourcelease.ListItemsResponse](t, m.ok("", "items", "--partition-key", "tenant-0"))))
	assert.Equal(t, []int64{3}, itemSeqs(decode[resourcelease.ListItemsResponse](t, m.ok("", "items", "--resourceId", "o-3"))))

	leased := decode[resourcelease.ListItemsResponse](t, m.ok("", "items", "--state", "leased"))
	require.Equal(t, []int64{2}, itemSeqs(leased))
	assert.Equal(t, "w2", leased.Items[0].LeaseOwner)
	dead := decode[resourcelease.ListItemsResponse](t, m.ok("", "items", "--state", "dead"))
	require.Equal(t, []int64{1}, itemSeqs(dead))
	assert.Contains(t, dead.Items[0].DeadLetterReason, "poison")

	detail := decode[control.ItemDetail](t, m.ok("", "item", "1"))
	assert.Equal(t, resourcelease.ItemDead, detail.Item.State)
	assert.Equal(t, `{"n":1}`, string(detail.Item.Payload.Body))
	require.NotEmpty(t, detail.Events)
	assert.Equal(t, resourcelease.EventEnqueue, detail.Events[0].EventType)

	r := m.run("", "item", "99")
	assert.Equal(t, 1, r.code)
	assert.True(t, strings.HasPrefix(r.stderr, "error: not-found "+resourcelease.CodeItemNotFound+": "), "stderr %q", r.stderr)
	for _, args := range [][]string{
		{"item"}, {"item", "x"}, {"item", "0"}, {"item", "1", "2"},
		{"items", "--state", "done"}, {"items", "--limit", "-1"}, {"items", "--after", "-2"}, {"items", "extra"},
		{"pause", "now"},
	} {
		r := m.run("", args...)
		assert.Equal(t, 2, r.code, "%v: stderr %s", args, r.stderr)
	}
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{token: "s3cret"})
	r := m.run("", "pause")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "error: unauthenticated ")

	tok := []string{"--bearer-token", "s3cret"}
	m.ok("", "enqueue", "--resource-type", "t", "--resource-id", "1", "--partition-key", "p", "--bearer-token", "s3cret")
	assert.Equal(t, control.PauseState{Paused: true}, decode[control.PauseState](t, m.ok("", append([]string{"pause"}, tok...)...)))
	st := decode[resourcelease.Stats](t, m.ok("", "stats", "--bearer-token", "s3cret"))
	assert.True(t, st.Paused)
	assert.Equal(t, "null", strings.TrimSpace(m.ok("", "lease", "--bearer-token", "s3cret")), "no lease while paused")

	assert.Equal(t, control.PauseState{Paused: false}, decode[control.PauseState](t, m.ok("", append([]string{"resume"}, tok...)...)))
	l := decode[resourcelease.Lease](t, m.ok("", "lease", "--bearer-token", "s3cret"))
	assert.Equal(t, int64(1), l.SequenceID)
}
