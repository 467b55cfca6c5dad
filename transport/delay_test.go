package transport_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

// oldDelayServer is a dispatcher that predates delayed enqueue, as the
// Client sees it: it enqueues every item ready at once and its answers
// carry no notBefore.
func oldDelayServer() *leasetest.FakeDispatcher {
	seq := int64(0)
	return &leasetest.FakeDispatcher{
		EnqueueFn: func(context.Context, *resourcelease.EnqueueRequest) (*resourcelease.EnqueueResponse, error) {
			seq++
			return &resourcelease.EnqueueResponse{SequenceID: seq}, nil
		},
		EnqueueBatchFn: func(_ context.Context, r *resourcelease.EnqueueBatchRequest) (*resourcelease.EnqueueBatchResponse, error) {
			resp := &resourcelease.EnqueueBatchResponse{}
			for range r.Payloads {
				seq++
				resp.Results = append(resp.Results, resourcelease.EnqueueItemResult{SequenceID: seq})
			}
			return resp, nil
		},
	}
}

// TestClientRefusesAnIgnoredDelay: a delayed enqueue (delayMs, or a
// payload notBefore) answered without notBefore is an error naming the
// item, per item in a batch; an undelayed one is not.
func TestClientRefusesAnIgnoredDelay(t *testing.T) {
	t.Parallel()
	c := newClientServer(t, oldDelayServer(), transport.HandlerConfig{}, transport.ClientConfig{})
	ctx := context.Background()
	scheduled := item
	scheduled.NotBefore = time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name string
		req  resourcelease.EnqueueRequest
		seq  string
	}{
		{"delayMs", resourcelease.EnqueueRequest{Payload: &item, Delay: time.Minute}, "1"},
		{"notBefore", resourcelease.EnqueueRequest{Payload: &scheduled}, "2"},
	} {
		resp, err := c.Enqueue(ctx, &tc.req)
		require.Error(t, err, tc.name)
		assert.Nil(t, resp, tc.name)
		assert.True(t, errors.Is(err, resourcelease.DelayIgnoredError(0)), "%s: %v", tc.name, err)
		assert.Equal(t, resourcelease.StatusUnimplemented, resourcelease.StatusOf(err), tc.name)
		var e *resourcelease.Error
		require.True(t, errors.As(err, &e))
		assert.Equal(t, tc.seq, e.Metadata["sequenceId"], tc.name)
	}
	resp, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &item})
	require.NoError(t, err, "an undelayed enqueue")
	assert.Equal(t, int64(3), resp.SequenceID)

	br, err := c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{item, scheduled}})
	require.NoError(t, err)
	require.Len(t, br.Results, 2)
	assert.NoError(t, br.Results[0].Err, "the undelayed payload")
	assert.Equal(t, resourcelease.CodeDelayIgnored, resourcelease.CodeOf(br.Results[1].Err), "the delayed payload")
	br, err = c.EnqueueBatch(ctx, &resourcelease.EnqueueBatchRequest{Payloads: []resourcelease.Item{item}, Delay: time.Second})
	require.NoError(t, err)
	assert.Equal(t, resourcelease.CodeDelayIgnored, resourcelease.CodeOf(br.Results[0].Err), "a batch delay")
}

// TestDelayedEnqueueOverTheWire: against a current dispatcher the delay
// and notBefore cross the wire, are echoed, and hold the item back; a bad
// notBefore or a negative delay is invalid-argument.
func TestDelayedEnqueueOverTheWire(t *testing.T) {
	t.Parallel()
	clock := leasetest.NewManualClock(time.Time{})
	d, err := resourcelease.NewDispatcher(resourcelease.DispatcherConfig{Clock: clock, Queue: resourcelease.QueueConfig{SweepInterval: time.Hour}})
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	c := newClientServer(t, d, transport.HandlerConfig{}, transport.ClientConfig{})
	ctx := context.Background()
	resp, err := c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &item, Delay: 1500 * time.Millisecond})
	require.NoError(t, err)
	assert.True(t, resp.NotBefore.Equal(clock.Now().Add(1500*time.Millisecond)), "echoed %v", resp.NotBefore)
	l, err := c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	assert.Nil(t, l, "leased before its time")
	st, err := c.Stats(ctx, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, st.DelayedCount)
	clock.Advance(1500 * time.Millisecond)
	d.Queue().Sweep()
	l, err = c.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "w"})
	require.NoError(t, err)
	require.NotNil(t, l)
	assert.True(t, l.Payload.NotBefore.Equal(resp.NotBefore))

	h := newHandler(t, d, transport.HandlerConfig{})
	for _, body := range []string{
		`{"payload":{"resourceType":"t","resourceId":"r","partitionKey":"p","payloadEncoding":"e","notBefore":"tomorrow"}}`,
		`{"payload":{"resourceType":"t","resourceId":"r","partitionKey":"p","payloadEncoding":"e"},"delayMs":-1}`,
	} {
		rec := call(h, transport.VerbEnqueue, body)
		assert.Equal(t, 400, rec.Code, body)
		assert.Equal(t, string(resourcelease.StatusInvalidArgument), rec.Header().Get("Rpc-Error-Code"), body)
	}
	rec := call(h, transport.VerbEnqueueBatch, `{"payloads":[],"delayMs":-5}`)
	assert.Equal(t, string(resourcelease.StatusInvalidArgument), rec.Header().Get("Rpc-Error-Code"))
}
