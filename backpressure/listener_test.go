package backpressure_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestListeners(t *testing.T) {
	t.Parallel()
	var calls []string
	named := func(name string) resourcelease.BackpressureListener {
		return backpressure.ListenerFunc(func(s resourcelease.BackpressureSignal) {
			calls = append(calls, name)
		})
	}
	panicky := backpressure.ListenerFunc(func(resourcelease.BackpressureSignal) {
		calls = append(calls, "panicky")
		panic("first")
	})
	panicky2 := backpressure.ListenerFunc(func(resourcelease.BackpressureSignal) {
		calls = append(calls, "panicky2")
		panic("second")
	})

	tests := []struct {
		name      string
		ls        []resourcelease.BackpressureListener
		wantCalls []string
		wantPanic any
	}{
		{name: "none", wantCalls: nil},
		{name: "in order, nils skipped", ls: []resourcelease.BackpressureListener{named("a"), nil, named("b")}, wantCalls: []string{"a", "b"}},
		{name: "nested", ls: []resourcelease.BackpressureListener{backpressure.Listeners(named("a"), named("b")), named("c")}, wantCalls: []string{"a", "b", "c"}},
		{
			name:      "a panic does not stop the others and the first is raised again",
			ls:        []resourcelease.BackpressureListener{named("a"), panicky, named("b"), panicky2, named("c")},
			wantCalls: []string{"a", "panicky", "b", "panicky2", "c"},
			wantPanic: "first",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls = nil
			l := backpressure.Listeners(tt.ls...)
			call := func() { l.OnBackpressure(resourcelease.BackpressureSignal{IsActive: true}) }
			if tt.wantPanic != nil {
				assert.PanicsWithValue(t, tt.wantPanic, call)
			} else {
				assert.NotPanics(t, call)
			}
			assert.Equal(t, tt.wantCalls, calls)
		})
	}
}

func TestLogListener(t *testing.T) {
	t.Parallel()
	var buf strings.Builder
	l := backpressure.NewLogListener(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	l.OnBackpressure(resourcelease.BackpressureSignal{IsActive: true, PendingCount: 64, ObservedAt: at, HighWatermark: 64, LowWatermark: 16})
	l.OnBackpressure(resourcelease.BackpressureSignal{IsActive: false, PendingCount: 16, ObservedAt: at, HighWatermark: 64, LowWatermark: 16})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	assert.Equal(t, `level=INFO msg="backpressure activated" pendingCount=64 highWatermark=64 lowWatermark=16 observedAt=2026-01-02T03:04:05.000Z`, lines[0])
	assert.Equal(t, `level=INFO msg="backpressure cleared" pendingCount=16 highWatermark=64 lowWatermark=16 observedAt=2026-01-02T03:04:05.000Z`, lines[1])
}

func TestLogListenerZeroValue(t *testing.T) {
	t.Parallel()
	var l backpressure.LogListener // logs to slog.Default()
	assert.NotPanics(t, func() { l.OnBackpressure(resourcelease.BackpressureSignal{}) })
}
