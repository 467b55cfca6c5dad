package postgres_test

import (
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

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

// TestEventTextMigration: events written before the log's columns became
// text (with bodies inside the payload's JSON) read back whole after the
// migration, with and without bodies, beside events written after it.
func TestEventTextMigration(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	conn, err := pgx.Connect(bg, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(bg)
	if err := postgres.MigrateThrough(bg, conn, "leasemesh", 3); err != nil {
		t.Fatalf("migrations 1–3: %v", err)
	}
	lease := uuid.New()
	if _, err := conn.Exec(bg, `INSERT INTO leasemesh.events (sequence_number, event_type, ts, ownership, peer_id, item_sequence_id, payload, error, metadata) VALUES
		(1, 'enqueued', now(), NULL, NULL, 1,
			'{"resourceType":"t","resourceId":"a","partitionKey":"p","payloadEncoding":"application/json","body":"eyJ4IjoxfQ==","attributes":{"k":"v"}}',
			NULL, '{"queue.pending":"1","queue.active":"0","sequenceId":"1"}'),
		(2, 'failed', now(), $1::jsonb, 'w1', 1,
			'{"resourceType":"t","resourceId":"a","partitionKey":"p","payloadEncoding":"application/json"}',
			'{"message":"boom","code":"x"}', '{}')`,
		`{"sequenceId":1,"attempt":1,"leaseId":"`+lease.String()+`"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(bg, `UPDATE leasemesh.queue_state SET next_event_sequence = 3, next_sequence_id = 2`); err != nil {
		t.Fatal(err)
	}
	q := openQueue(t, url, nil, postgres.QueueConfig{PollInterval: time.Hour})
	it := qitem("b")
	if _, err := q.Enqueue(bg, it); err != nil {
		t.Fatal(err)
	}
	// What a dispatcher of the older build, still running beside this one,
	// writes after the migration: the body inside the payload.
	if _, err := conn.Exec(bg, `INSERT INTO leasemesh.events (sequence_number, event_type, ts, item_sequence_id, payload, metadata) VALUES
		(4, 'enqueued', now(), 3, '{"resourceType":"t","resourceId":"c","partitionKey":"p","payloadEncoding":"application/json","body":"eyJ4IjoxfQ=="}'::jsonb, '{}'::jsonb)`); err != nil {
		t.Fatal(err)
	}
	whole, err := q.ReadEvents(bg, 0, 10)
	if err != nil || len(whole) != 4 {
		t.Fatalf("ReadEvents = %+v, %v", whole, err)
	}
	if p := whole[0].Payload; p == nil || string(p.Body) != `{"x":1}` || p.Attributes["k"] != "v" || whole[0].Metadata["queue.pending"] != "1" {
		t.Errorf("old enqueue event read back as %+v", whole[0])
	}
	if e := whole[1]; e.Ownership == nil || e.Ownership.LeaseID != lease || e.Error == nil || e.Error.Message != "boom" ||
		e.Error.Code != "x" || e.PeerID != "w1" || e.Payload == nil || e.Payload.Body != nil {
		t.Errorf("old failed event read back as %+v", e)
	}
	if p := whole[2].Payload; p == nil || string(p.Body) != string(it.Body) || whole[2].Metadata["sequenceId"] != "2" {
		t.Errorf("new enqueue event read back as %+v", whole[2])
	}
	if p := whole[3].Payload; p == nil || string(p.Body) != `{"x":1}` {
		t.Errorf("an older build's event read back as %+v", whole[3])
	}
	light, err := q.ReadEventsWithoutBodies(bg, 0, 10)
	if err != nil || len(light) != 4 {
		t.Fatalf("ReadEventsWithoutBodies = %+v, %v", light, err)
	}
	for _, e := range light {
		if e.Payload == nil || e.Payload.Body != nil || e.Payload.ResourceType == "" {
			t.Errorf("event %d without bodies: %+v", e.SequenceNumber, e.Payload)
		}
	}
}
