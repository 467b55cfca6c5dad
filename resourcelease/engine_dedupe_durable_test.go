package resourcelease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// heldAck is an Ack the test completes. Each Wait says so on waits first
// (when it has room), so the test knows who is waiting.
type heldAck struct {
	done  chan struct{}
	err   error
	waits chan struct{}
}

func newHeldAck(err error) *heldAck {
	return &heldAck{done: make(chan struct{}), err: err, waits: make(chan struct{}, 8)}
}

func (a *heldAck) Wait() error {
	select {
	case a.waits <- struct{}{}:
	default:
	}
	<-a.done
	return a.err
}

// TestDuplicateAnsweredAsTheOriginal: a retry of an enqueue (same request
// id) is acknowledged only once the original is durable, and refused when
// the original never became durable; a synchronous sink's failure, which
// comes after the commit, still counts as durable. Single and batch
// enqueues alike.
func TestDuplicateAnsweredAsTheOriginal(t *testing.T) {
	storageDown := &resourcelease.Error{Status: resourcelease.StatusUnavailable, Code: resourcelease.CodeStorageUnavailable, Message: "disk full"}
	sinkDown := &resourcelease.Error{Status: resourcelease.StatusUnavailable, Code: resourcelease.CodeReplicationFailed, Message: "sink failed"}
	cases := []struct {
		name    string
		origErr error
		wantDup error // nil: the duplicate is acknowledged
	}{
		{"durable", nil, nil},
		{"never durable", storageDown, storageDown},
		{"durable, a sink failed", sinkDown, nil},
	}
	for _, tc := range cases {
		for name, enqueue := range enqueuers {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				first := newHeldAck(tc.origErr)
				q := heldEngine(t, first)
				it := resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", PayloadEncoding: "e", RequestID: "req-1"}
				orig := make(chan error, 1)
				go func() { orig <- enqueue(context.Background(), q, it) }()
				<-first.waits // the original is in flight
				dup := make(chan error, 1)
				go func() { dup <- enqueue(context.Background(), q, it) }()
				<-first.waits // the duplicate found it and waits for it too
				select {
				case err := <-dup:
					t.Fatalf("the duplicate was answered (%v) before the original was durable", err)
				default:
				}
				close(first.done)
				if err := <-orig; !errors.Is(err, tc.origErr) && err != tc.origErr && resourcelease.CodeOf(err) != resourcelease.CodeOf(tc.origErr) {
					t.Fatalf("original: %v, want %v", err, tc.origErr)
				}
				err := <-dup
				if tc.wantDup == nil && err != nil || tc.wantDup != nil && resourcelease.CodeOf(err) != resourcelease.CodeOf(tc.wantDup) {
					t.Fatalf("duplicate: %v, want %v", err, tc.wantDup)
				}
				// Later, once settled, a retry gets the same answer at once.
				err = enqueue(context.Background(), q, it)
				if tc.wantDup == nil && err != nil || tc.wantDup != nil && resourcelease.CodeOf(err) != resourcelease.CodeOf(tc.wantDup) {
					t.Fatalf("a later retry: %v, want %v", err, tc.wantDup)
				}
			})
		}
	}
}

// TestDuplicateWaitBoundedByContext: a duplicate waiting for an original
// that is not durable yet gives up when its caller's context ends, rather
// than for as long as the journal takes.
func TestDuplicateWaitBoundedByContext(t *testing.T) {
	for name, enqueue := range enqueuers {
		t.Run(name, func(t *testing.T) {
			first := newHeldAck(nil)
			defer close(first.done)
			q := heldEngine(t, first)
			it := resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", PayloadEncoding: "e", RequestID: "req-1"}
			go func() { _ = enqueue(context.Background(), q, it) }()
			<-first.waits // the original is in flight
			ctx, cancel := context.WithCancel(context.Background())
			dup := make(chan error, 1)
			go func() { dup <- enqueue(ctx, q, it) }()
			<-first.waits // the duplicate waits for it
			cancel()
			select {
			case err := <-dup:
				if !errors.Is(err, context.Canceled) && resourcelease.CodeOf(err) != resourcelease.CodeOf(resourcelease.AsError(context.Canceled)) {
					t.Fatalf("duplicate after its context ended: %v, want canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the duplicate still waits 10 s after its context ended")
			}
		})
	}
}

var enqueuers = map[string]func(ctx context.Context, q *resourcelease.Engine, it resourcelease.Item) error{
	"single": func(ctx context.Context, q *resourcelease.Engine, it resourcelease.Item) error {
		_, err := q.Enqueue(ctx, it)
		return err
	},
	"batch": func(ctx context.Context, q *resourcelease.Engine, it resourcelease.Item) error {
		_, err := q.EnqueueBatch(ctx, []resourcelease.Item{it})
		return err
	},
}

// heldEngine is an engine whose journal answers the first change with
// first and every later one at once.
func heldEngine(t *testing.T, first resourcelease.Ack) *resourcelease.Engine {
	t.Helper()
	acks := make(chan resourcelease.Ack, 1)
	acks <- first
	q, err := resourcelease.NewEngine(resourcelease.QueueConfig{Journal: resourcelease.JournalFunc(func(*resourcelease.Change) resourcelease.Ack {
		select {
		case a := <-acks:
			return a
		default:
			return nil
		}
	})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}
