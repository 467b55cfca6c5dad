package replication

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/leasemesh/leasemesh/internal/jsonappend"
	"github.com/leasemesh/leasemesh/resourcelease"
	"pgregory.net/rapid"
)

func genStringMap(t *rapid.T, label string) map[string]string {
	if !rapid.Bool().Draw(t, label+"?") {
		return nil
	}
	return rapid.MapOfN(rapid.String(), rapid.String(), 0, 5).Draw(t, label)
}

func genEvent(t *rapid.T) resourcelease.Event {
	types := append([]resourcelease.EventType{"Custom"}, knownEventTypes...)
	ev := resourcelease.Event{
		SequenceNumber: rapid.Int64Min(1).Draw(t, "seq"),
		EventType:      rapid.SampledFrom(types).Draw(t, "type"),
		PeerID:         rapid.String().Draw(t, "peer"),
		Metadata:       genStringMap(t, "metadata"),
	}
	if rapid.Bool().Draw(t, "ts?") {
		ev.Timestamp = time.Unix(0, rapid.Int64Range(-1<<60, 1<<60).Draw(t, "ts")).UTC()
	}
	if rapid.Bool().Draw(t, "meta-known?") {
		if ev.Metadata == nil {
			ev.Metadata = map[string]string{}
		}
		ev.Metadata[rapid.SampledFrom(metaKeys).Draw(t, "known key")] = rapid.String().Draw(t, "known value")
	}
	if rapid.Bool().Draw(t, "ownership?") {
		ev.Ownership = &resourcelease.OwnershipToken{
			SequenceID: rapid.Int64().Draw(t, "tseq"), Attempt: rapid.Int().Draw(t, "attempt"),
			LeaseID: uuid.UUID(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "lease")),
		}
	}
	if rapid.Bool().Draw(t, "payload?") {
		ev.Payload = &resourcelease.Item{
			ResourceType: rapid.String().Draw(t, "rt"), ResourceID: rapid.String().Draw(t, "rid"),
			PartitionKey: rapid.String().Draw(t, "pk"), PayloadEncoding: rapid.String().Draw(t, "enc"),
			Body: rapid.SliceOf(rapid.Byte()).Draw(t, "body"), Attributes: genStringMap(t, "attrs"),
			RequestID: rapid.String().Draw(t, "req"),
		}
	}
	if rapid.Bool().Draw(t, "error?") {
		ev.Error = &resourcelease.ErrorInfo{Message: rapid.String().Draw(t, "msg"), Code: rapid.String().Draw(t, "code")}
	}
	return ev
}

// TestEventCodecRoundTrip: the stored form decodes to the same event, as
// encoding/json sees it (nil and empty bodies and attribute maps are one).
func TestEventCodecRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		ev := genEvent(t)
		b := appendEvent(nil, &ev)
		got, err := decodeEvent(ev.SequenceNumber, b)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(ev)
		have, _ := json.Marshal(got)
		if string(want) != string(have) {
			t.Fatalf("round trip changed the event:\n got  %s\n want %s", have, want)
		}
		// Every strict prefix is rejected, never misread.
		for n := range len(b) {
			if _, err := decodeEvent(1, b[:n]); err == nil {
				t.Fatalf("a %d-byte prefix of a %d-byte event decoded", n, len(b))
			}
		}
	})
}

// TestStringMapJSON: the attributes column's encoder writes exactly what
// encoding/json writes, and the parser reads back any such object.
func TestStringMapJSON(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := genStringMap(t, "m")
		want, _ := json.Marshal(m)
		got := jsonappend.StringMap(nil, m)
		if string(got) != string(want) {
			t.Fatalf("appendStringMapJSON = %s, json.Marshal = %s", got, want)
		}
		if m == nil {
			return
		}
		back, err := parseStringMap(string(got))
		if err != nil {
			t.Fatal(err)
		}
		b2, _ := json.Marshal(back)
		if string(b2) != string(want) {
			t.Fatalf("parse(%s) = %s", got, b2)
		}
	})
}

func TestParseStringMapRejectsMalformed(t *testing.T) {
	for _, s := range []string{``, `{`, `{"a"}`, `{"a":}`, `{"a":"b",}`, `{"a":"b"`, `["a"]`, `{"a":1}`} {
		if _, err := parseStringMap(s); err == nil {
			t.Errorf("parseStringMap(%q) succeeded", s)
		}
	}
	if m, err := parseStringMap(`{ "a" : "b\u0041" }`); err != nil || m["a"] != "bA" {
		t.Errorf("parseStringMap with spaces and escapes = %v, %v", m, err)
	}
}
