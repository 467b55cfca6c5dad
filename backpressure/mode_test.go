package backpressure_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/backpressure"
	"github.com/leasemesh/leasemesh/resourcelease"
)

func TestParseMode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    backpressure.Mode
		wantErr bool
	}{
		{"", backpressure.ModeWait, false},
		{"wait", backpressure.ModeWait, false},
		{" Reject ", backpressure.ModeReject, false},
		{"REJECT", backpressure.ModeReject, false},
		{"drop", backpressure.ModeWait, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := backpressure.ParseMode(tt.in)
			if tt.wantErr {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.in)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestModeText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode    backpressure.Mode
		text    string
		wantErr bool
	}{
		{backpressure.ModeWait, "wait", false},
		{backpressure.ModeReject, "reject", false},
		{backpressure.Mode(9), "Mode(9)", true},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tt.text, tt.mode.String())
			b, err := tt.mode.MarshalText()
			if tt.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.text, string(b))
			var back backpressure.Mode
			require.NoError(t, back.UnmarshalText(b))
			assert.Equal(t, tt.mode, back)
		})
	}
	var m backpressure.Mode
	assert.Error(t, m.UnmarshalText([]byte("sometimes")))
}

func TestStateJSON(t *testing.T) {
	t.Parallel()
	m, clk, rec := setupMonitor(t, backpressure.Config{HighWatermark: 64, LowWatermark: 16, Mode: backpressure.ModeReject})
	b, err := json.Marshal(m.State())
	require.NoError(t, err)
	assert.JSONEq(t, `{"isActive":false,"pendingCount":0,"highWatermark":64,"lowWatermark":16,"mode":"reject","cooldownMs":0,"latest":null}`, string(b))

	m.Observe(70, clk.Now())
	rec.next(t)
	b, err = json.Marshal(m.State())
	require.NoError(t, err)
	assert.JSONEq(t, `{"isActive":true,"pendingCount":70,"highWatermark":64,"lowWatermark":16,"mode":"reject","cooldownMs":0,
		"latest":{"isActive":true,"pendingCount":70,"observedAt":"2026-01-02T03:04:05Z","highWatermark":64,"lowWatermark":16}}`, string(b))

	var decoded struct {
		Latest resourcelease.BackpressureSignal `json:"latest"`
		Mode   backpressure.Mode                `json:"mode"`
	}
	require.NoError(t, json.Unmarshal(b, &decoded))
	assert.Equal(t, backpressure.ModeReject, decoded.Mode)
	assert.Equal(t, 70, decoded.Latest.PendingCount)
}
