package worker_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/worker"
)

// SendEmail is the typed payload of "email.send" work.
type SendEmail struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

// A Mux hands each handler the decoded value of its resourceType's items. An
// item whose body does not decode is dead-lettered, never lost, and the
// worker goes on.
func ExampleHandle() {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	ctx := context.Background()

	// A producer enqueues Go values (JSON by default).
	poison := resourcelease.Item{ResourceType: "email.send", ResourceID: "mail-0", PartitionKey: "tenant-1",
		PayloadEncoding: "application/json", Body: []byte(`{"to": 42}`)}
	if _, err := d.Enqueue(ctx, &resourcelease.EnqueueRequest{Payload: &poison}); err != nil {
		log.Fatal(err)
	}
	for i, to := range []string{"ada@example.com", "grace@example.com"} {
		item := resourcelease.Item{ResourceType: "email.send", ResourceID: fmt.Sprintf("mail-%d", i+1), PartitionKey: "tenant-1"}
		if _, err := resourcelease.Enqueue(ctx, d, item, SendEmail{To: to, Subject: "hello"}); err != nil {
			log.Fatal(err)
		}
	}

	runCtx, stop := context.WithCancel(ctx)
	mux := worker.NewMux()
	worker.Handle(mux, "email.send", func(ctx context.Context, job *worker.Job[SendEmail]) error {
		fmt.Printf("to %s: %s (attempt %d)\n", job.Value.To, job.Value.Subject, job.Lease.Attempt)
		if job.Value.To == "grace@example.com" {
			stop() // a real worker runs until SIGTERM
		}
		return nil
	})
	w, err := worker.New(d, worker.Config{Handler: mux.Work, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	if err := w.Run(runCtx); err != nil {
		log.Fatal(err)
	}
	dead, err := d.DeadLetters(ctx, &resourcelease.DeadLettersRequest{})
	if err != nil {
		log.Fatal(err)
	}
	for _, dl := range dead.Items {
		fmt.Printf("dead letter %s: %s\n", dl.Payload.ResourceID, dl.LastError.Code)
	}
	// Output:
	// to ada@example.com: hello (attempt 1)
	// to grace@example.com: hello (attempt 1)
	// dead letter mail-0: resourcelease.worker.undecodable
}
