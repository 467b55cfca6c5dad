package postgres_test

import (
	"testing"
	"time"

	"github.com/leasemesh/leasemesh/internal/pgtest"
	"github.com/leasemesh/leasemesh/postgres"
)

// TestReadEventsWithoutBodies: the same events, attributes kept, bodies
// left out.
func TestReadEventsWithoutBodies(t *testing.T) {
	t.Parallel()
	q := openQueue(t, pgtest.NewDatabase(t), nil, postgres.QueueConfig{PollInterval: time.Hour})
	it := qitem("a")
	it.Attributes = map[string]string{"tenant": "t1"}
	if _, err := q.Enqueue(bg, it); err != nil {
		t.Fatal(err)
	}
	whole, err := q.ReadEvents(bg, 0, 10)
	if err != nil || len(whole) != 1 || len(whole[0].Payload.Body) == 0 {
		t.Fatalf("ReadEvents = %+v, %v", whole, err)
	}
	light, err := q.ReadEventsWithoutBodies(bg, 0, 10)
	if err != nil || len(light) != 1 {
		t.Fatalf("ReadEventsWithoutBodies = %+v, %v", light, err)
	}
	p := light[0].Payload
	if p == nil || p.Body != nil || p.Attributes["tenant"] != "t1" || p.ResourceID != "a" || light[0].SequenceNumber != 1 {
		t.Fatalf("without bodies: %+v", p)
	}
}
