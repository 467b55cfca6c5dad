package transport_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// slowDelivery grants a lease through the real dispatcher, then holds it until
// the request's context ends: the client leaves while its lease is on the way.
type slowDelivery struct {
	*resourcelease.LocalDispatcher
	granted  chan struct{}
	released chan resourcelease.OwnershipToken
}

func (s *slowDelivery) Lease(ctx context.Context, r *resourcelease.LeaseRequest) (*resourcelease.Lease, error) {
	l, err := s.LocalDispatcher.Lease(ctx, r)
	close(s.granted)
	<-ctx.Done()
	return l, err
}

func (s *slowDelivery) Release(ctx context.Context, r *resourcelease.ReleaseRequest) error {
	err := s.LocalDispatcher.Release(ctx, r)
	s.released <- r.OwnershipToken
	return err
}

// TestLeaseToAGoneClientIsGivenBack: a lease granted to a client that is gone
// by the time it arrives goes straight back to the queue, attempt uncounted,
// instead of waiting out its lease duration.
func TestLeaseToAGoneClientIsGivenBack(t *testing.T) {
	t.Parallel()
	local, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	ctx := context.Background()
	_, err := local.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &item})
	require.NoError(t, err)
	d := &slowDelivery{LocalDispatcher: local, granted: make(chan struct{}), released: make(chan resourcelease.OwnershipToken, 1)}
	h := newHandler(t, d, transport.HandlerConfig{})

	reqCtx, leave := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(reqCtx, http.MethodPost, "/yarpc/v1", strings.NewReader(`{}`))
	require.NoError(t, err)
	req.Header.Set(transport.HeaderProcedure, transport.Procedure("", transport.VerbLease))
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(newDiscardWriter(), req)
	}()
	<-d.granted
	leave() // the client goes away while the lease is being delivered
	var token resourcelease.OwnershipToken
	select {
	case token = <-d.released:
	case <-time.After(10 * time.Second): // a bound on the test, not synchronisation
		t.Fatal("the lease granted to a gone client was not given back")
	}
	<-done

	stats, err := local.Stats(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, resourcelease.Stats{PendingCount: 1}, *stats, "the item is back at once")
	err = local.Complete(ctx, &resourcelease.CompleteRequest{OwnershipToken: token})
	require.ErrorIs(t, err, resourcelease.ErrUnknownToken, "the undelivered token is dead")
	l, err := local.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "next"})
	require.NoError(t, err)
	require.Equal(t, 1, l.Attempt, "the undelivered lease did not count as an attempt")
}

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{ h http.Header }

func newDiscardWriter() *discardWriter               { return &discardWriter{h: http.Header{}} }
func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}
