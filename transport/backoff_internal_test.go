package transport

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestEndpointFailures: only probes count failures, capped, so that calls
// in flight when a dispatcher goes down do not jump its back-off to the
// cap, and the counter cannot overflow.
func TestEndpointFailures(t *testing.T) {
	const lo, hi = 100 * time.Millisecond, 5 * time.Second
	var ep endpoint
	var wg sync.WaitGroup
	for range 16 { // in flight together when it went down
		wg.Go(func() { ep.down(false, lo, hi) })
	}
	wg.Wait()
	require.Equal(t, int32(1), ep.failures.Load())
	require.LessOrEqual(t, time.Until(time.Unix(0, ep.downUntil.Load())), lo, "the first back-off")

	for range 100 {
		require.True(t, ep.probing.CompareAndSwap(false, true))
		ep.down(true, lo, hi)
	}
	require.Equal(t, int32(maxFailures), ep.failures.Load())
	require.False(t, ep.probing.Load(), "down ends the probe")
	for _, f := range []int32{1, 7, maxFailures, maxFailures + 1, 1 << 30, -1} {
		d := backoffFor(f, lo, hi)
		require.Positive(t, d, "failures %d", f)
		require.LessOrEqual(t, d, hi, "failures %d", f)
	}
	ep.up(false)
	require.Zero(t, ep.failures.Load())
}

// TestPickOneProbe: a failed endpoint whose back-off has passed is given to
// one call at a time, however long its probe takes.
func TestPickOneProbe(t *testing.T) {
	c := &Client{endpoints: []*endpoint{{url: "a"}, {url: "b"}}, epMin: time.Millisecond, epMax: time.Millisecond}
	a := c.endpoints[0]
	a.failures.Store(3) // backing off, back-off passed
	probes := 0
	for range 20 {
		i, probe := c.pick(make([]bool, 2), true)
		if probe {
			require.Equal(t, 0, i)
			probes++
		} else {
			require.Equal(t, 1, i, "the healthy one, while a's probe is in flight")
		}
	}
	require.Equal(t, 1, probes)
	a.up(true)
	i, probe := c.pick([]bool{false, true}, false)
	require.Equal(t, 0, i)
	require.False(t, probe)
}
