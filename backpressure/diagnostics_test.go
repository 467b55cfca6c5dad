package backpressure_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func sig(active bool, pending int) resourcelease.BackpressureSignal {
	return resourcelease.BackpressureSignal{IsActive: active, PendingCount: pending}
}

func pendings(ss []resourcelease.BackpressureSignal) []int {
	out := []int{}
	for _, s := range ss {
		out = append(out, s.PendingCount)
	}
	return out
}

func TestNewDiagnosticsListenerValidatesConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     backpressure.DiagnosticsConfig
		wantErr string
	}{
		{name: "zero value", cfg: backpressure.DiagnosticsConfig{}},
		{name: "explicit", cfg: backpressure.DiagnosticsConfig{HistorySize: 1, SubscriberBuffer: 1}},
		{name: "negative history", cfg: backpressure.DiagnosticsConfig{HistorySize: -1}, wantErr: "HistorySize"},
		{name: "negative buffer", cfg: backpressure.DiagnosticsConfig{SubscriberBuffer: -1}, wantErr: "SubscriberBuffer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := backpressure.NewDiagnosticsListener(tt.cfg)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.NotNil(t, d)
		})
	}
}

func TestDiagnosticsHistory(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		size     int
		signals  int
		wantKept []int
	}{
		{name: "empty", size: 3, signals: 0, wantKept: []int{}},
		{name: "under capacity", size: 3, signals: 2, wantKept: []int{1, 2}},
		{name: "exactly full", size: 3, signals: 3, wantKept: []int{1, 2, 3}},
		{name: "wrapped, oldest first", size: 3, signals: 7, wantKept: []int{5, 6, 7}},
		{name: "default size is 64", signals: 100, wantKept: func() []int {
			var out []int
			for i := 37; i <= 100; i++ {
				out = append(out, i)
			}
			return out
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, err := backpressure.NewDiagnosticsListener(backpressure.DiagnosticsConfig{HistorySize: tt.size})
			require.NoError(t, err)
			_, ok := d.Latest()
			assert.False(t, ok)
			for i := 1; i <= tt.signals; i++ {
				d.OnBackpressure(sig(i%2 == 1, i))
			}
			assert.Equal(t, tt.wantKept, pendings(d.History()))
			if tt.signals > 0 {
				latest, ok := d.Latest()
				require.True(t, ok)
				assert.Equal(t, tt.signals, latest.PendingCount)
			}
		})
	}
}

func TestDiagnosticsHistoryIsACopy(t *testing.T) {
	t.Parallel()
	d, err := backpressure.NewDiagnosticsListener(backpressure.DiagnosticsConfig{})
	require.NoError(t, err)
	d.OnBackpressure(sig(true, 1))
	h := d.History()
	h[0].PendingCount = 99
	assert.Equal(t, 1, d.History()[0].PendingCount)
}

func TestDiagnosticsSubscribe(t *testing.T) {
	t.Parallel()
	d, err := backpressure.NewDiagnosticsListener(backpressure.DiagnosticsConfig{})
	require.NoError(t, err)

	empty, cancelEmpty := d.Subscribe()
	defer cancelEmpty()
	d.OnBackpressure(sig(true, 1))
	assert.Equal(t, sig(true, 1), <-empty, "a subscriber with no latest gets the first signal")

	ch, cancel := d.Subscribe()
	assert.Equal(t, sig(true, 1), <-ch, "a new subscription starts with the latest signal")
	d.OnBackpressure(sig(false, 2))
	assert.Equal(t, sig(false, 2), <-ch)
	assert.Equal(t, sig(false, 2), <-empty)

	cancel()
	cancel() // idempotent
	_, open := <-ch
	assert.False(t, open, "cancel closes the channel")
	assert.NotPanics(t, func() { d.OnBackpressure(sig(true, 3)) }, "no send on a cancelled subscription")
	assert.Equal(t, sig(true, 3), <-empty, "other subscribers are unaffected")
}

func TestDiagnosticsSlowSubscriberKeepsNewest(t *testing.T) {
	t.Parallel()
	d, err := backpressure.NewDiagnosticsListener(backpressure.DiagnosticsConfig{SubscriberBuffer: 2})
	require.NoError(t, err)
	ch, cancel := d.Subscribe()
	defer cancel()
	for i := 1; i <= 5; i++ {
		d.OnBackpressure(sig(i%2 == 1, i)) // must not block though nobody reads
	}
	assert.Equal(t, 4, (<-ch).PendingCount)
	assert.Equal(t, 5, (<-ch).PendingCount, "the subscriber ends on the current state")
	assert.Equal(t, 5, len(d.History()))
}

func TestDiagnosticsConcurrentSubscribers(t *testing.T) {
	t.Parallel()
	d, err := backpressure.NewDiagnosticsListener(backpressure.DiagnosticsConfig{SubscriberBuffer: 4})
	require.NoError(t, err)
	const subscribers = 8
	last := make([]int, subscribers)
	cancels := make([]func(), subscribers)
	var wg sync.WaitGroup
	for i := range subscribers {
		ch, cancel := d.Subscribe()
		cancels[i] = cancel
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range ch { // until cancelled
				last[i] = s.PendingCount
			}
		}()
	}
	for i := range 200 {
		d.OnBackpressure(sig(i%2 == 0, i))
		_ = d.History()
	}
	d.OnBackpressure(sig(true, 1000))
	for _, cancel := range cancels {
		cancel()
	}
	wg.Wait()
	for i, got := range last {
		assert.Equal(t, 1000, got, "subscriber %d ends on the last signal", i)
	}
}
