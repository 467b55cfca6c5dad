package postgres

import (
	"encoding/base64"
	"strconv"

	"github.com/leasemesh/leasemesh/internal/jsonappend"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// The writer encodes every event's item, token and metadata on its one
// goroutine, between the transaction's two round trips, while the database
// waits: these append exactly the bytes encoding/json's Marshal gives
// (TestEventJSONMatchesEncodingJSON and FuzzEventJSON hold them to it),
// without its reflection; strings and string maps go through jsonappend.

// appendItemJSON appends it as json.Marshal encodes it, or returns nil
// where json.Marshal fails (a NotBefore it cannot encode: a year outside
// 0–9999 or a zone offset of a day or more); the event then has no payload,
// as before these encoders.
func appendItemJSON(b []byte, it *resourcelease.Item) []byte {
	b = append(b, `{"resourceType":`...)
	b = jsonappend.String(b, it.ResourceType)
	b = append(b, `,"resourceId":`...)
	b = jsonappend.String(b, it.ResourceID)
	b = append(b, `,"partitionKey":`...)
	b = jsonappend.String(b, it.PartitionKey)
	b = append(b, `,"payloadEncoding":`...)
	b = jsonappend.String(b, it.PayloadEncoding)
	if len(it.Body) > 0 {
		b = append(b, `,"body":"`...)
		b = base64.StdEncoding.AppendEncode(b, it.Body)
		b = append(b, '"')
	}
	if len(it.Attributes) > 0 {
		b = append(b, `,"attributes":`...)
		b = jsonappend.StringMap(b, it.Attributes)
	}
	if it.RequestID != "" {
		b = append(b, `,"requestId":`...)
		b = jsonappend.String(b, it.RequestID)
	}
	if !it.NotBefore.IsZero() {
		t, err := it.NotBefore.MarshalJSON()
		if err != nil {
			return nil
		}
		b = append(b, `,"notBefore":`...)
		b = append(b, t...)
	}
	return append(b, '}')
}

// appendOpenTokenJSON appends t as json.Marshal encodes it, but with its
// sequence id last and left out: `{"attempt":1,"leaseId":"…","sequenceId":`.
// The final statement appends the id the counter row draws, and the brace.
func appendOpenTokenJSON(b []byte, t *resourcelease.OwnershipToken) []byte {
	b = append(b, `{"attempt":`...)
	b = strconv.AppendInt(b, int64(t.Attempt), 10)
	b = append(b, `,"leaseId":"`...)
	b = append(b, t.LeaseID.String()...)
	return append(b, `","sequenceId":`...)
}

// appendTokenJSON appends t as json.Marshal encodes it.
func appendTokenJSON(b []byte, t *resourcelease.OwnershipToken) []byte {
	b = append(b, `{"sequenceId":`...)
	b = strconv.AppendInt(b, t.SequenceID, 10)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(t.Attempt), 10)
	b = append(b, `,"leaseId":"`...)
	b = append(b, t.LeaseID.String()...)
	return append(b, `"}`...)
}
