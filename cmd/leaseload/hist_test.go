package main

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestBuckets(t *testing.T) {
	t.Parallel()
	// Exact below 2·histSub; above, every bucket holds its values and is at
	// most 1/histSub of them wide; indices never decrease with the value.
	values := []uint64{0, 1, 127, 128, 129, 255, 256, 1000, 999_999, 1_000_000, 123_456_789, 5 * 60 * 1e9, histMaxValue}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10_000 {
		values = append(values, rng.Uint64N(histMaxValue))
	}
	for _, v := range values {
		i := bucketOf(v)
		require.Less(t, i, histBuckets, v)
		high := bucketHigh(i)
		assert.GreaterOrEqual(t, high, v, v)
		if v < 2*histSub {
			assert.Equal(t, v, high, "small values are exact")
			continue
		}
		low := uint64(0)
		if i > 0 {
			low = bucketHigh(i-1) + 1
		}
		assert.LessOrEqual(t, low, v, v)
		assert.LessOrEqual(t, float64(high-low+1), float64(low)/histSub, "bucket of %d too wide", v)
		assert.LessOrEqual(t, bucketOf(v-1), i, v)
		if high < histMaxValue {
			assert.Equal(t, i+1, bucketOf(high+1), "bucket of %d ends at %d", v, high)
		}
	}
	assert.Equal(t, histBuckets-1, bucketOf(1<<63), "values past the range go to the last bucket")
}

func TestQuantiles(t *testing.T) {
	t.Parallel()
	var h histogram
	// 1 µs … 10 ms in steps of 1 µs, shuffled.
	const n = 10_000
	rng := rand.New(rand.NewPCG(3, 4))
	for _, i := range rng.Perm(n) {
		h.record(time.Duration(i+1) * time.Microsecond)
	}
	s := h.snapshot()
	assert.Equal(t, uint64(n), s.n)
	assert.Equal(t, 10*time.Millisecond, time.Duration(s.max))
	assert.Equal(t, 5000500*time.Nanosecond, s.mean())
	tests := []struct {
		q    float64
		want time.Duration
	}{
		{0.5, 5 * time.Millisecond},
		{0.9, 9 * time.Millisecond},
		{0.99, 9900 * time.Microsecond},
		{0.999, 9990 * time.Microsecond},
		{1, 10 * time.Millisecond},
	}
	prev := time.Duration(0)
	for _, tt := range tests {
		got := s.quantile(tt.q)
		assert.GreaterOrEqual(t, got, tt.want, "q=%v: the upper bound of the bucket", tt.q)
		assert.InEpsilon(t, float64(tt.want), float64(got), 1.0/histSub, "q=%v", tt.q)
		assert.LessOrEqual(t, got, time.Duration(s.max), "q=%v", tt.q)
		assert.GreaterOrEqual(t, got, prev, "quantiles never decrease")
		prev = got
	}
}

func TestQuantileEdges(t *testing.T) {
	t.Parallel()
	var empty histogram
	s := empty.snapshot()
	assert.Zero(t, s.quantile(0.5))
	assert.Zero(t, s.mean())

	var one histogram
	one.record(1234567 * time.Nanosecond)
	one.record(-time.Second) // a clock step counts as zero
	s = one.snapshot()
	assert.Equal(t, time.Duration(0), s.quantile(0.5))
	assert.Equal(t, 1234567*time.Nanosecond, s.quantile(0.99), "clamped to the maximum, not the bucket's end")
}

func TestMerge(t *testing.T) {
	t.Parallel()
	var a, b histogram
	for i := range 100 {
		a.record(time.Duration(i) * time.Millisecond)
		b.record(time.Duration(i+100) * time.Millisecond)
	}
	s := a.snapshot()
	s.merge(b.snapshot())
	assert.Equal(t, uint64(200), s.n)
	assert.Equal(t, 199*time.Millisecond, time.Duration(s.max))
	assert.InEpsilon(t, float64(100*time.Millisecond), float64(s.quantile(0.5)), 1.0/histSub)
}
