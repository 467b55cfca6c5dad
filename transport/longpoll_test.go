package transport_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/resourcelease/leasetest"
	"github.com/leasemesh/leasemesh/transport"
)

// TestLongPollEndsWhenClientDisconnects: a lease long-poll whose client goes
// away ends at once (the Dispatcher's context is cancelled), long before its
// wait or deadline, and leaves no goroutine behind. Not parallel, so that
// goleak.VerifyNone sees only this test's goroutines.
func TestLongPollEndsWhenClientDisconnects(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan error, 1)
	d := &leasetest.FakeDispatcher{LeaseFn: func(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
		assert.Equal(t, time.Minute, r.Wait) // a server goroutine: assert, not require
		close(started)
		<-ctx.Done()
		ended <- ctx.Err()
		return nil, ctx.Err()
	}}
	srv := httptest.NewServer(newHandler(t, d, transport.HandlerConfig{}))
	c, err := transport.NewClient(srv.URL, transport.ClientConfig{})
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Lease(ctx, &resourcelease.LeaseRequest{Wait: 60000 * time.Millisecond})
		done <- err
	}()
	<-started
	cancel()
	select {
	case err := <-ended:
		require.ErrorIs(t, err, context.Canceled, "the dispatcher's context was cancelled, not timed out")
	case <-time.After(10 * time.Second):
		t.Fatal("the long-poll did not end when the client went away")
	}
	err = <-done
	require.ErrorIs(t, err, resourcelease.AsError(context.Canceled))
	require.Equal(t, resourcelease.StatusCancelled, resourcelease.StatusOf(err))

	require.NoError(t, c.Close())
	srv.Close()
	goleak.VerifyNone(t)
}

// TestNoGoroutineLeftPerRequest sends successes, errors, panics, refusals and
// timed-out long-polls over a real connection, then checks that nothing is
// left running once the server and client are closed.
func TestNoGoroutineLeftPerRequest(t *testing.T) {
	d := &leasetest.FakeDispatcher{
		LeaseFn: func(ctx context.Context, _ *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
		StatsFn: func(context.Context, *resourcelease.StatsRequest) (*resourcelease.Stats, error) { panic("boom") },
		DrainFn: func(context.Context, *resourcelease.DrainRequest) (*resourcelease.DrainResponse, error) {
			return nil, errors.New("foreign")
		},
	}
	srv := httptest.NewServer(newHandler(t, d, transport.HandlerConfig{MaxBodyBytes: 1024}))
	c, err := transport.NewClient(srv.URL, transport.ClientConfig{})
	require.NoError(t, err)
	ctx := context.Background()
	for range 3 {
		_, err = c.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &item})
		require.NoError(t, err)
		_, err = c.Stats(ctx, nil)
		require.Equal(t, resourcelease.StatusInternal, resourcelease.StatusOf(err))
		_, err = c.Drain(ctx, nil)
		require.Equal(t, resourcelease.StatusInternal, resourcelease.StatusOf(err))
		_, err = c.Call(ctx, "resourcelease::enqueue", []byte(`{"payload":{"body":"`+strings.Repeat("A", 2000)+`"}}`))
		require.Equal(t, resourcelease.StatusResourceExhausted, resourcelease.StatusOf(err))
		tctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		_, err = c.Lease(tctx, &resourcelease.LeaseRequest{Wait: 1000 * time.Millisecond})
		cancel()
		require.Equal(t, resourcelease.StatusDeadlineExceeded, resourcelease.StatusOf(err))
		res, err := http.Get(srv.URL)
		require.NoError(t, err)
		require.NoError(t, res.Body.Close())
		require.Equal(t, http.StatusMethodNotAllowed, res.StatusCode)
	}
	http.DefaultClient.CloseIdleConnections()
	require.NoError(t, c.Close())
	srv.Close()
	goleak.VerifyNone(t)
}
