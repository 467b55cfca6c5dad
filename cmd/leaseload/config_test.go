package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/sqlitedb"
)

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want string // in the one line on stderr
	}{
		{name: "unknown flag", args: []string{"-bogus"}, want: "flag provided but not defined: -bogus"},
		{name: "bad number", args: []string{"-concurrency", "many"}, want: "invalid value"},
		{name: "positional argument", args: []string{"now"}, want: `unexpected argument "now"`},
		{name: "zero concurrency", args: []string{"-concurrency", "0"}, want: "invalid -concurrency 0"},
		{name: "too much concurrency", args: []string{"-concurrency", "1025"}, want: "invalid -concurrency 1025: want 1..1024"},
		{name: "zero duration", args: []string{"-duration", "0s"}, want: "invalid -duration 0s"},
		{name: "negative duration", args: []string{"-duration", "-1s"}, want: "invalid -duration -1s"},
		{name: "duration over 5 minutes", args: []string{"-duration", "5m1s"}, want: "at most 5m0s"},
		{name: "negative cycles", args: []string{"-cycles", "-1"}, want: "invalid -cycles -1"},
		{name: "negative warmup", args: []string{"-warmup", "-1s"}, want: "invalid -warmup -1s"},
		{name: "long warmup", args: []string{"-warmup", "2m"}, want: "invalid -warmup 2m0s"},
		{name: "negative wait", args: []string{"-wait-ms", "-1"}, want: "invalid -wait-ms -1"},
		{name: "long wait", args: []string{"-wait-ms", "60001"}, want: "invalid -wait-ms 60001"},
		{name: "negative max errors", args: []string{"-max-errors", "-1"}, want: "invalid -max-errors -1"},
		{name: "no rounds", args: []string{"-rounds", "0"}, want: "invalid -rounds 0: want 1..100"},
		{name: "batch of one", args: []string{"-batch", "1"}, want: "invalid -batch 1: want 0 (off) or 2..1000"},
		{name: "batch too large", args: []string{"-batch", "1001"}, want: "invalid -batch 1001"},
		{name: "negative batch", args: []string{"-batch", "-2"}, want: "invalid -batch -2"},
		{name: "empty caller", args: []string{"-caller", " "}, want: "-caller must not be empty"},
		{name: "unknown storage", args: []string{"-storage", "disk"}, want: `invalid -storage "disk": want memory or sqlite`},
		{name: "unknown synchronous", args: []string{"-storage", "sqlite", "-synchronous", "OFF"}, want: `invalid -synchronous "OFF"`},
		{name: "synchronous without sqlite", args: []string{"-synchronous", "FULL"}, want: "-synchronous applies only to -storage sqlite"},
		{name: "self and target", args: []string{"-self", "-target", "http://127.0.0.1:7420/yarpc/v1"}, want: "-self and -target exclude each other"},
		{name: "storage with target", args: []string{"-target", "http://127.0.0.1:7420/yarpc/v1", "-storage", "sqlite"}, want: "-storage applies only to -self"},
		{name: "synchronous with target", args: []string{"-target", "http://127.0.0.1:7420/yarpc/v1", "-synchronous", "FULL"}, want: "-synchronous applies only to -self"},
		{name: "self=false alone", args: []string{"-self=false"}, want: "-self=false needs -target URL"},
		{name: "remote target", args: []string{"-target", "http://example.com/yarpc/v1"}, want: `-target host "example.com" refused: leaseload sends load only to loopback`},
		{name: "private address target", args: []string{"-target", "http://10.1.2.3:7420/yarpc/v1"}, want: `-target host "10.1.2.3" refused`},
		{name: "remote target in a list", args: []string{"-target", "http://127.0.0.1:7420/yarpc/v1,http://example.com/yarpc/v1"}, want: `-target host "example.com" refused`},
		{name: "target without scheme", args: []string{"-target", "127.0.0.1:7420"}, want: `invalid -target "127.0.0.1:7420"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			res := runLeaseload(t, t.Context(), tt.args...)
			assert.Equal(t, exitUsage, res.code)
			assert.Empty(t, res.stdout)
			assert.True(t, strings.HasPrefix(res.stderr, "leaseload: "), "stderr: %q", res.stderr)
			assert.Equal(t, 1, strings.Count(res.stderr, "\n"), "one line, got %q", res.stderr)
			assert.Contains(t, res.stderr, tt.want)
		})
	}
}

func TestParseConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want config
	}{
		{
			name: "defaults",
			want: config{storage: "memory", namespace: "resourcelease", caller: "leaseload", concurrency: 8,
				duration: 10 * time.Second, warmup: time.Second, waitMs: 1000, echo: true, maxErrors: 100},
		},
		{
			name: "cycles alone are bounded by the longest duration",
			args: []string{"-cycles", "200", "-storage", "sqlite", "-synchronous", "normal"},
			want: config{storage: "sqlite", synchronous: sqlitedb.SynchronousNormal, namespace: "resourcelease", caller: "leaseload",
				concurrency: 8, duration: 5 * time.Minute, cycles: 200, warmup: time.Second, waitMs: 1000, echo: true, maxErrors: 100},
		},
		{
			name: "cycles and duration",
			args: []string{"-cycles", "200", "-duration", "3s", "-storage", "sqlite", "-warmup", "0", "-json"},
			want: config{storage: "sqlite", synchronous: sqlitedb.SynchronousFull, namespace: "resourcelease", caller: "leaseload",
				concurrency: 8, duration: 3 * time.Second, cycles: 200, waitMs: 1000, echo: true, json: true, maxErrors: 100},
		},
		{
			name: "batch in rounds",
			args: []string{"-batch", "32", "-rounds", "5"},
			want: config{storage: "memory", namespace: "resourcelease", caller: "leaseload", concurrency: 8,
				duration: 10 * time.Second, warmup: time.Second, waitMs: 1000, echo: true, maxErrors: 100, batch: 32, rounds: 5},
		},
		{
			name: "target",
			args: []string{"-target", "http://localhost:7420/yarpc/v1", "-service", "s", "-namespace", "n", "-echo=false", "-self=false"},
			want: config{target: "http://localhost:7420/yarpc/v1", service: "s", namespace: "n", caller: "leaseload",
				concurrency: 8, duration: 10 * time.Second, warmup: time.Second, waitMs: 1000, maxErrors: 100},
		},
	}
	for i := range tests {
		if tests[i].want.rounds == 0 {
			tests[i].want.rounds = 1 // the default
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseConfig(tt.args)
			require.NoError(t, err)
			assert.Equal(t, tt.want, *got)
		})
	}
}
