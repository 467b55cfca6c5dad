package main

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The histogram is HDR-style: log-linear buckets of nanoseconds. Values below
// 2·histSub are exact; above, each power of two is split into histSub
// buckets, so a bucket is at most 1/histSub (1.6 %) of its values wide. Its
// memory is fixed (histBuckets counters) however many values it records.
const (
	histSubBits = 6
	histSub     = 1 << histSubBits // buckets per power of two
	// histMaxValue is the largest value kept apart; larger ones (over 18
	// minutes, longer than any run) are counted as this.
	histMaxValue = 1<<40 - 1
	histBuckets  = histSub*(40-histSubBits-1) + 2*histSub
)

// histogram records latencies from many goroutines at once with atomic adds
// (no lock: a recording costs a few nanoseconds next to a loopback RPC's tens
// of microseconds). Read it with snapshot once the recording goroutines are
// done.
type histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds; overflows only after 584 years
	max    atomic.Uint64
}

// bucketOf returns the bucket index of v.
func bucketOf(v uint64) int {
	v = min(v, histMaxValue)
	shift := max(0, bits.Len64(v)-(histSubBits+1))
	return histSub*shift + int(v>>shift)
}

// bucketHigh returns the largest value that falls in bucket i.
func bucketHigh(i int) uint64 {
	if i < 2*histSub {
		return uint64(i)
	}
	shift := i/histSub - 1
	m := uint64(i - histSub*shift)
	return (m+1)<<shift - 1
}

// record adds one latency. Negative durations (a clock step) count as zero.
func (h *histogram) record(d time.Duration) { h.recordN(d, 1) }

// recordN records n observations of d (the items of one batch).
func (h *histogram) recordN(d time.Duration, n uint64) {
	v := uint64(max(d, 0))
	h.counts[bucketOf(v)].Add(n)
	h.n.Add(n)
	h.sum.Add(v * n)
	for {
		old := h.max.Load()
		if v <= old || h.max.CompareAndSwap(old, v) {
			return
		}
	}
}

// snapshot copies the histogram. Call it when nothing records any more.
func (h *histogram) snapshot() *histSnapshot {
	s := &histSnapshot{n: h.n.Load(), sum: h.sum.Load(), max: h.max.Load()}
	for i := range h.counts {
		s.counts[i] = h.counts[i].Load()
	}
	return s
}

// histSnapshot is a plain copy of a histogram, for merging and percentiles.
type histSnapshot struct {
	counts [histBuckets]uint64
	n      uint64
	sum    uint64
	max    uint64
}

// merge adds o's values to s.
func (s *histSnapshot) merge(o *histSnapshot) {
	for i := range s.counts {
		s.counts[i] += o.counts[i]
	}
	s.n += o.n
	s.sum += o.sum
	s.max = max(s.max, o.max)
}

// quantile returns the value at or below which a fraction q of the values
// lie: the highest value of the bucket holding the ceil(q·n)-th value, but
// never more than the largest value recorded. So quantiles never decrease in
// q and never pass max. It is 0 when nothing was recorded.
func (s *histSnapshot) quantile(q float64) time.Duration {
	if s.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.n)))
	rank = min(max(rank, 1), s.n)
	var seen uint64
	for i, c := range s.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(bucketHigh(i), s.max))
		}
	}
	return time.Duration(s.max)
}

// mean returns the exact mean of the values recorded, 0 when there are none.
func (s *histSnapshot) mean() time.Duration {
	if s.n == 0 {
		return 0
	}
	return time.Duration(s.sum / s.n)
}
