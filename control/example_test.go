package control_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/leasemesh/leasemesh/control"
	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// exampleControlLog is a replication log of three events.
type exampleControlLog struct{}

func (exampleControlLog) ReadEvents(_ context.Context, after int64, limit int) ([]resourcelease.Event, error) {
	var out []resourcelease.Event
	for seq := after + 1; seq <= 3 && len(out) < limit; seq++ {
		out = append(out, resourcelease.Event{
			SequenceNumber: seq,
			EventType:      resourcelease.EventEnqueue,
			Timestamp:      time.Date(2025, 1, 1, 0, 0, int(seq), 0, time.UTC),
			Metadata:       map[string]string{resourcelease.MetaQueuePending: fmt.Sprint(seq), resourcelease.MetaQueueActive: "0"},
		})
	}
	return out, nil
}

func ExampleNewHandler() {
	h, err := control.NewHandler(control.HandlerConfig{
		// Dispatcher: the dispatcher, to serve /stats, /drain, /restore and /deadletters.
		Events:       exampleControlLog{},
		Backpressure: func() (any, bool) { return nil, false }, // no signal yet
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/omnirelay/control/", h)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, path := range []string{
		"/omnirelay/control/replication?since=1&limit=1",
		"/omnirelay/control/backpressure",
		"/omnirelay/control/stats",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(strings.TrimSpace(fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get(transport.HeaderStatus), body)))
	}
	// Output:
	// 200  {"events":[{"sequenceNumber":2,"eventType":"Enqueue","timestamp":"2025-01-01T00:00:02Z","ownership":null,"metadata":{"queue.active":"0","queue.pending":"2"}}],"nextSince":2}
	// 204
	// 501 unimplemented {"message":"the control plane has no dispatcher (Dispatcher) configured","status":"unimplemented","code":"resourcelease.control.not_configured","metadata":{}}
}

// ExampleClient_Replication follows the replication log page by page,
// as `leasectl tail` does.
func ExampleClient_Replication() {
	h, err := control.NewHandler(control.HandlerConfig{Events: exampleControlLog{}})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, err := control.NewClient(srv.URL, control.ClientConfig{}) // adds /omnirelay/control
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()

	var since int64
	for {
		page, err := c.Replication(context.Background(), since, 2)
		if err != nil {
			fmt.Println(err)
			return
		}
		if len(page.Events) == 0 {
			break // caught up; a tail would wait and poll again
		}
		for _, e := range page.Events {
			fmt.Println(e.SequenceNumber, e.EventType, e.Metadata[resourcelease.MetaQueuePending])
		}
		since = page.NextSince
	}
	// Output:
	// 1 Enqueue 1
	// 2 Enqueue 2
	// 3 Enqueue 3
}
