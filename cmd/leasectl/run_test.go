package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// These tests call run in process (the tests in cli_test.go run the built
// binary): the parsing helpers, and a few paths that are easier to reach
// without a process boundary.

func TestParseToken(t *testing.T) {
	t.Parallel()
	id := uuid.MustParse("4b6c0c36-8f5c-4cde-9d53-0e7f3c1c2b11")
	want := resourcelease.OwnershipToken{SequenceID: 7, Attempt: 2, LeaseID: id}
	tests := []struct {
		name, in string
		wantErr  bool
	}{
		{name: "token", in: `{"sequenceId":7,"attempt":2,"leaseId":"4b6c0c36-8f5c-4cde-9d53-0e7f3c1c2b11"}`},
		{name: "lease", in: `{"payload":{"resourceType":"t"},"sequenceId":7,"attempt":2,"ownershipToken":{"sequenceId":7,"attempt":2,"leaseId":"4b6c0c36-8f5c-4cde-9d53-0e7f3c1c2b11"},"ownerPeerId":"w"}`},
		{name: "request body", in: `  {"ownershipToken":{"sequenceId":7,"attempt":2,"leaseId":"4b6c0c36-8f5c-4cde-9d53-0e7f3c1c2b11"}}` + "\n"},
		{name: "null", in: "null\n", wantErr: true},
		{name: "empty", in: " ", wantErr: true},
		{name: "not JSON", in: "seven", wantErr: true},
		{name: "no token", in: `{"success":true}`, wantErr: true},
		{name: "bad lease id", in: `{"sequenceId":7,"attempt":2,"leaseId":"nope"}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseToken([]byte(tt.in))
			if tt.wantErr {
				require.Error(t, err)
				assert.Equal(t, resourcelease.CodeTokenRequired, resourcelease.CodeOf(err))
				return
			}
			require.NoError(t, err)
			assert.Equal(t, want, *got)
		})
	}
}

func TestParseIDs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      []string
		want    []int64
		wantErr bool
	}{
		{in: nil, want: nil},
		{in: []string{"4"}, want: []int64{4}},
		{in: []string{"4", "5,6", " 7 ,"}, want: []int64{4, 5, 6, 7}},
		{in: []string{"0"}, wantErr: true},
		{in: []string{"-3"}, wantErr: true},
		{in: []string{"1,x"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseIDs(tt.in)
		if tt.wantErr {
			var ue *usageError
			assert.ErrorAs(t, err, &ue, "%q", tt.in)
			continue
		}
		require.NoError(t, err, "%q", tt.in)
		assert.Equal(t, tt.want, got, "%q", tt.in)
	}
}

func TestParseFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args     []string
		wantPos  []string
		wantAll  bool
		wantName string
	}{
		{args: nil},
		{args: []string{"redrive", "4", "--all", "5"}, wantPos: []string{"redrive", "4", "5"}, wantAll: true},
		{args: []string{"--name", "x", "a"}, wantPos: []string{"a"}, wantName: "x"},
		{args: []string{"a", "--", "--all", "-"}, wantPos: []string{"a", "--all", "-"}},
		{args: []string{"-", "--name=y"}, wantPos: []string{"-"}, wantName: "y"},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		all := fs.Bool("all", false, "")
		name := fs.String("name", "", "")
		pos, err := parseFlags(fs, tt.args)
		require.NoError(t, err, "%q", tt.args)
		assert.Equal(t, tt.wantPos, pos, "%q", tt.args)
		assert.Equal(t, tt.wantAll, *all, "%q", tt.args)
		assert.Equal(t, tt.wantName, *name, "%q", tt.args)
	}
}

func TestStdinPiped(t *testing.T) {
	t.Parallel()
	devNull, err := os.Open(os.DevNull)
	require.NoError(t, err)
	defer devNull.Close()
	file, err := os.CreateTemp(t.TempDir(), "stdin")
	require.NoError(t, err)
	defer file.Close()
	assert.False(t, stdinPiped(nil))
	assert.False(t, stdinPiped(devNull), "/dev/null is not input")
	assert.True(t, stdinPiped(file), "a redirected file is input")
	assert.True(t, stdinPiped(strings.NewReader("x")))
}

// runInProcess runs leasectl in this process against m.
func runInProcess(t *testing.T, m *mesh, stdin string, args ...string) result {
	t.Helper()
	env := map[string]string{}
	for _, kv := range m.env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var in *strings.Reader
	if stdin != "" {
		in = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	a := &app{ctx: context.Background(), stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }}
	if in != nil {
		a.stdin = in
	}
	code := a.main(args)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

func TestRunInProcess(t *testing.T) {
	t.Parallel()
	m := newMesh(t, meshOptions{})
	r := runInProcess(t, m, `{"hello":1}`, "enqueue", "--resource-type", "t", "--resource-id", "1", "--partition-key", "p", "--body-file", "-")
	require.Equal(t, 0, r.code, r.stderr)
	lease := runInProcess(t, m, "", "lease", "--raw")
	require.Equal(t, 0, lease.code, lease.stderr)
	l := decode[resourcelease.Lease](t, lease.stdout)
	assert.Equal(t, `{"hello":1}`, string(l.Payload.Body))
	assert.Equal(t, "leasectl", l.OwnerPeerID, "the caller is the peer when --peer is not given")

	r = runInProcess(t, m, "", "drain", "--out", filepath.Join(t.TempDir(), "missing", "dir", "out.json"))
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "error: cannot create --out: ")
	assert.Equal(t, 0, decode[resourcelease.Stats](t, runInProcess(t, m, "", "stats").stdout).PendingCount)

	r = runInProcess(t, m, "[", "restore")
	assert.Equal(t, 1, r.code)
	assert.Contains(t, r.stderr, "error: the items to restore are not drain output")

	r = runInProcess(t, m, "", "request", "--procedure", "stats", "--raw")
	require.Equal(t, 0, r.code, r.stderr)
	assert.JSONEq(t, `{"pendingCount":0,"activeLeaseCount":1,"deadLetterCount":0,"backpressureActive":false}`, r.stdout)

	r = runInProcess(t, m, "", "help", "tail")
	assert.Equal(t, 0, r.code)
	assert.Contains(t, r.stdout, "--interval duration")
}
