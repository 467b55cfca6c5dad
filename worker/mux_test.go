package worker_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/worker"
)

// upperCodec is a Codec of its own encoding, to show that HandleCodec
// honours payloadEncoding.
type upperCodec struct{}

func (upperCodec) Encoding() string              { return "text/x-upper" }
func (upperCodec) Accepts(enc string) bool       { return enc == "text/x-upper" }
func (upperCodec) Marshal(v any) ([]byte, error) { return []byte(v.(string)), nil }
func (upperCodec) Unmarshal(b []byte, v any) error {
	if len(b) == 0 {
		return errors.New("empty body")
	}
	*v.(*string) = string(b)
	return nil
}

func TestMuxRoutesAndDecodes(t *testing.T) {
	mux := worker.NewMux()
	var gotEmail SendEmail
	var gotText string
	worker.Handle(mux, "email.send", func(_ context.Context, job *worker.Job[SendEmail]) error {
		gotEmail = job.Value
		return nil
	})
	worker.HandleCodec(mux, "text", upperCodec{}, func(_ context.Context, job *worker.Job[string]) error {
		gotText = job.Value
		return nil
	})
	failing := errors.New("smtp down")
	worker.Handle(mux, "email.fail", func(context.Context, *worker.Job[SendEmail]) error { return failing })
	require.Equal(t, []string{"email.fail", "email.send", "text"}, mux.ResourceTypes())

	lease := func(rt, enc, body string) *resourcelease.Lease {
		return &resourcelease.Lease{Payload: resourcelease.Item{ResourceType: rt, ResourceID: "r", PartitionKey: "p",
			PayloadEncoding: enc, Body: []byte(body)}}
	}
	tests := []struct {
		name      string
		lease     *resourcelease.Lease
		wantCode  string // "" for success
		permanent bool
	}{
		{"typed JSON", lease("email.send", "application/json", `{"to":"a@b","subject":"s"}`), "", false},
		{"JSON under yarpc's name", lease("email.send", "json", `{"to":"a@b","subject":"s"}`), "", false},
		{"own codec", lease("text", "text/x-upper", "HELLO"), "", false},
		{"no handler", lease("sms.send", "application/json", `{}`), worker.CodeNoHandler, false},
		{"body does not decode", lease("email.send", "application/json", `{"to":42}`), worker.CodeUndecodable, true},
		{"not JSON at all", lease("email.send", "application/json", `<xml/>`), worker.CodeUndecodable, true},
		{"another encoding", lease("email.send", "application/protobuf", `{}`), worker.CodeUndecodable, true},
		{"own codec refuses JSON", lease("text", "application/json", `"x"`), worker.CodeUndecodable, true},
		{"own codec fails", lease("text", "text/x-upper", ""), worker.CodeUndecodable, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := mux.Work(context.Background(), tt.lease)
			if tt.wantCode == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			e := resourcelease.AsError(err)
			require.Equal(t, tt.wantCode, e.Code, "code of %v", err)
			require.Equal(t, tt.permanent, worker.IsPermanent(err), "permanent")
		})
	}
	require.Equal(t, SendEmail{To: "a@b", Subject: "s"}, gotEmail)
	require.Equal(t, "HELLO", gotText)
	require.ErrorIs(t, mux.Work(context.Background(), lease("email.fail", "application/json", `{}`)), failing)
}

func TestMuxRegistrationMistakesPanic(t *testing.T) {
	h := func(context.Context, *worker.Job[SendEmail]) error { return nil }
	tests := []struct {
		name string
		reg  func(m *worker.Mux)
	}{
		{"blank resourceType", func(m *worker.Mux) { worker.Handle(m, "", h) }},
		{"duplicate", func(m *worker.Mux) { worker.Handle(m, "a", h); worker.Handle(m, "a", h) }},
		{"nil typed handler", func(m *worker.Mux) { worker.Handle[SendEmail](m, "a", nil) }},
		{"nil raw handler", func(m *worker.Mux) { m.HandleLease("a", nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Panics(t, func() { tt.reg(worker.NewMux()) })
		})
	}
}

// releaseRecorder tells the test of every release a worker makes.
type releaseRecorder struct {
	resourcelease.Dispatcher
	released chan *resourcelease.ReleaseRequest
}

func (d *releaseRecorder) Release(ctx context.Context, r *resourcelease.ReleaseRequest) error {
	err := d.Dispatcher.Release(ctx, r)
	if err == nil {
		d.released <- r
	}
	return err
}

// An item whose resourceType has no handler is declined: released for
// NoHandlerDelay with its attempt not counted, so a worker that has the
// handler (after a deploy) takes it; it is neither failed nor lost.
func TestMuxDeclinesItemsWithoutAHandler(t *testing.T) {
	local, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	ctx := context.Background()
	_, err := resourcelease.Enqueue(ctx, local, resourcelease.Item{ResourceType: "sms.send", ResourceID: "s-1", PartitionKey: "p"}, map[string]string{"to": "+1"})
	require.NoError(t, err)

	rec := &releaseRecorder{Dispatcher: local, released: make(chan *resourcelease.ReleaseRequest, 1)}
	old := worker.NewMux()
	worker.Handle(old, "email.send", func(context.Context, *worker.Job[SendEmail]) error { return nil })
	w := newWorker(t, rec, worker.Config{Handler: old.Work})
	stop := startWorker(t, w)
	r := <-rec.released
	stop()
	require.Equal(t, worker.NoHandlerDelay, r.Delay)
	require.Equal(t, worker.Stats{Leased: 1, Released: 1}, w.Stats())

	st, err := local.Stats(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, 1, st.PendingCount, "the item is pending again")
	require.Zero(t, st.DeadLetterCount)
	l, err := local.Lease(ctx, &resourcelease.LeaseRequest{PeerID: "new-worker"})
	require.NoError(t, err)
	require.Nil(t, l, "out of reach for NoHandlerDelay")
	drained, err := local.Drain(ctx, nil)
	require.NoError(t, err)
	require.Len(t, drained.Items, 1)
	require.Equal(t, 1, drained.Items[0].Attempt, "its attempt was not counted")
}
