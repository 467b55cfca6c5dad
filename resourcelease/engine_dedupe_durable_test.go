package resourcelease_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// heldAck is an Ack the test completes.
type heldAck struct {
	done chan struct{}
	err  error
}

func (a *heldAck) Wait() error { <-a.done; return a.err }

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
	enqueuers := map[string]func(q *resourcelease.Engine, it resourcelease.Item) error{
		"single": func(q *resourcelease.Engine, it resourcelease.Item) error {
			_, err := q.Enqueue(context.Background(), it)
			return err
		},
		"batch": func(q *resourcelease.Engine, it resourcelease.Item) error {
			_, err := q.EnqueueBatch(context.Background(), []resourcelease.Item{it})
			return err
		},
	}
	for _, tc := range cases {
		for name, enqueue := range enqueuers {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				first := &heldAck{done: make(chan struct{}), err: tc.origErr}
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
				defer q.Close()
				it := resourcelease.Item{ResourceType: "t", ResourceID: "r", PartitionKey: "p", PayloadEncoding: "e", RequestID: "req-1"}
				orig := make(chan error, 1)
				go func() { orig <- enqueue(q, it) }()
				// The original is in flight; its duplicate waits for it.
				dup := make(chan error, 1)
				go func() {
					for {
						st, _ := q.Stats(context.Background())
						if st.PendingCount == 1 {
							break
						}
						time.Sleep(time.Millisecond)
					}
					dup <- enqueue(q, it)
				}()
				select {
				case err := <-dup:
					t.Fatalf("the duplicate was answered (%v) before the original was durable", err)
				case <-time.After(100 * time.Millisecond):
				}
				close(first.done)
				if err := <-orig; !errors.Is(err, tc.origErr) && err != tc.origErr && resourcelease.CodeOf(err) != resourcelease.CodeOf(tc.origErr) {
					t.Fatalf("original: %v, want %v", err, tc.origErr)
				}
				err = <-dup
				if tc.wantDup == nil && err != nil || tc.wantDup != nil && resourcelease.CodeOf(err) != resourcelease.CodeOf(tc.wantDup) {
					t.Fatalf("duplicate: %v, want %v", err, tc.wantDup)
				}
				// Later, once settled, a retry gets the same answer at once.
				err = enqueue(q, it)
				if tc.wantDup == nil && err != nil || tc.wantDup != nil && resourcelease.CodeOf(err) != resourcelease.CodeOf(tc.wantDup) {
					t.Fatalf("a later retry: %v, want %v", err, tc.wantDup)
				}
			})
		}
	}
}
