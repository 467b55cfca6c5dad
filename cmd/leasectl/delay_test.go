package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// TestEnqueueDelay: --delay and --not-before delay the item (the response
// echoes its notBefore and the item is not leasable yet); --delay applies
// to every item of a --batch-file; bad values are usage errors.
func TestEnqueueDelay(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	before := time.Now()
	enq := decode[resourcelease.EnqueueResponse](t, m.ok("", "enqueue", "--resource-type", "t", "--resource-id", "1", "--partition-key", "p", "--delay", "1h"))
	assert.True(t, enq.NotBefore.After(before.Add(59*time.Minute)), "echoed notBefore %v", enq.NotBefore)
	at := time.Now().Add(48 * time.Hour).Truncate(time.Second).UTC()
	enq = decode[resourcelease.EnqueueResponse](t, m.ok("", "enqueue", "--resource-type", "t", "--resource-id", "2", "--partition-key", "p", "--not-before", at.Format(time.RFC3339)))
	assert.True(t, enq.NotBefore.Equal(at), "echoed notBefore %v", enq.NotBefore)

	batch := filepath.Join(t.TempDir(), "batch.json")
	require.NoError(t, os.WriteFile(batch, []byte(`[{"resourceType":"t","resourceId":"3","partitionKey":"p","payloadEncoding":"e"}]`), 0o600))
	res := decode[resourcelease.EnqueueBatchResponse](t, m.ok("", "enqueue", "--batch-file", batch, "--delay", "30m"))
	require.Len(t, res.Results, 1)
	assert.False(t, res.Results[0].NotBefore.IsZero(), "the batch item was delayed")

	st := decode[resourcelease.Stats](t, m.ok("", "stats"))
	assert.Equal(t, 3, st.PendingCount)
	assert.Equal(t, 3, st.DelayedCount)
	assert.Equal(t, "null", strings.TrimSpace(m.ok("", "lease", "--raw")), "nothing is leasable yet")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"negative delay", []string{"--delay", "-1s"}, "--delay must not be negative"},
		{"bad time", []string{"--not-before", "tomorrow"}, "is not an RFC 3339 time"},
		{"both", []string{"--delay", "1s", "--not-before", at.Format(time.RFC3339)}, "not both"},
	} {
		args := append([]string{"enqueue", "--resource-type", "t", "--resource-id", "x", "--partition-key", "p"}, tc.args...)
		r := m.run("", args...)
		assert.Equal(t, 2, r.code, tc.name)
		assert.Contains(t, r.stderr, tc.want, tc.name)
	}
}
