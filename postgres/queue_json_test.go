package postgres

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// jsonCases put strings encoding/json escapes into every string field (the
// escaping itself is jsonappend's, tested there).
var jsonCases = []string{"", "plain", `<q "x"> & \`, "\n\u2028 bad \xff"}

// TestEventJSONMatchesEncodingJSON holds the writer's encoders to the
// bytes json.Marshal gives for items and tokens (jsonappend's own tests
// cover strings and string maps).
func TestEventJSONMatchesEncodingJSON(t *testing.T) {
	nb := time.Date(2026, 12, 2, 3, 4, 5, 678900000, time.UTC)
	items := []resourcelease.Item{
		{},
		{ResourceType: "bench.order", ResourceID: "order-1", PartitionKey: "tenant-1", PayloadEncoding: "application/json",
			Body: []byte(`{"id":42}`)},
		{ResourceType: "t", Body: []byte{}, Attributes: map[string]string{}},
		{ResourceType: "t", Body: []byte{0, 1, 2, 0xff}, Attributes: map[string]string{"b": "2", "a": "1", "": "empty"},
			RequestID: "req-1", NotBefore: nb},
		{ResourceType: "t", NotBefore: nb.In(time.FixedZone("x", 3600))},
		{ResourceType: "t", NotBefore: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, // encoding/json refuses it
	}
	for _, s := range jsonCases {
		items = append(items, resourcelease.Item{ResourceType: s, ResourceID: s, PartitionKey: s, PayloadEncoding: s,
			RequestID: s, Attributes: map[string]string{s: s, s + "x": s}})
	}
	for _, it := range items {
		checkItemJSON(t, &it)
	}
	for _, tok := range []resourcelease.OwnershipToken{
		{}, {SequenceID: 1, Attempt: 2, LeaseID: uuid.New()}, {SequenceID: -1 << 63, Attempt: -3},
	} {
		want, _ := json.Marshal(&tok)
		if got := appendTokenJSON(nil, &tok); !bytes.Equal(got, want) {
			t.Errorf("token %+v: got %s, want %s", tok, got, want)
		}
		// The final statement closes an open token with the sequence id.
		open := strconv.AppendInt(appendOpenTokenJSON(nil, &tok), tok.SequenceID, 10)
		var back resourcelease.OwnershipToken
		if err := json.Unmarshal(append(open, '}'), &back); err != nil || back != tok {
			t.Errorf("open token %+v: %s closed reads back as %+v, %v", tok, open, back, err)
		}
	}
}

func checkItemJSON(t *testing.T, it *resourcelease.Item) {
	t.Helper()
	want, err := json.Marshal(it)
	got := appendItemJSON(nil, it)
	if err != nil {
		if got != nil {
			t.Errorf("item %+v: json.Marshal fails (%v), appendItemJSON gave %s", it, err, got)
		}
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("item %+v:\n got %s\nwant %s", it, got, want)
	}
}

// FuzzEventJSON holds the encoders to json.Marshal on any strings and
// bodies.
func FuzzEventJSON(f *testing.F) {
	for _, s := range jsonCases {
		f.Add(s, s, []byte(s))
	}
	f.Fuzz(func(t *testing.T, a, b string, body []byte) {
		checkItemJSON(t, &resourcelease.Item{ResourceType: a, ResourceID: b, PartitionKey: a + b, PayloadEncoding: b,
			Body: body, Attributes: map[string]string{a: b, b: a}, RequestID: a})
	})
}
