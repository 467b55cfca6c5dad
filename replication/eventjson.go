package replication

import (
	"encoding/base64"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/leasemesh/leasemesh/resourcelease"
)

// The SQLite log stores each event as JSON so that any tool can read it (and
// json_extract works on it). encoding/json's reflection costs more than the
// rest of a commit per event, so events are written by the appenders below,
// which produce exactly the bytes json.Marshal produces for the same Event
// (a property test holds them to it); reading back uses encoding/json.

// appendEventJSON appends the JSON encoding of ev to b.
func appendEventJSON(b []byte, ev *resourcelease.Event) []byte {
	b = append(b, `{"sequenceNumber":`...)
	b = strconv.AppendInt(b, ev.SequenceNumber, 10)
	b = append(b, `,"eventType":`...)
	b = appendJSONString(b, string(ev.EventType))
	b = append(b, `,"timestamp":`...)
	b = appendJSONTime(b, ev.Timestamp)
	b = append(b, `,"ownership":`...)
	if ev.Ownership == nil {
		b = append(b, "null"...)
	} else {
		b = appendTokenJSON(b, ev.Ownership)
	}
	if ev.PeerID != "" {
		b = append(b, `,"peerId":`...)
		b = appendJSONString(b, ev.PeerID)
	}
	if ev.Payload != nil {
		b = append(b, `,"payload":`...)
		b = appendItemJSON(b, ev.Payload)
	}
	if ev.Error != nil {
		b = append(b, `,"error":{"message":`...)
		b = appendJSONString(b, ev.Error.Message)
		if ev.Error.Code != "" {
			b = append(b, `,"code":`...)
			b = appendJSONString(b, ev.Error.Code)
		}
		b = append(b, '}')
	}
	b = append(b, `,"metadata":`...)
	b = appendStringMapJSON(b, ev.Metadata)
	return append(b, '}')
}

func appendTokenJSON(b []byte, t *resourcelease.OwnershipToken) []byte {
	b = append(b, `{"sequenceId":`...)
	b = strconv.AppendInt(b, t.SequenceID, 10)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(t.Attempt), 10)
	b = append(b, `,"leaseId":"`...)
	b = appendUUID(b, t.LeaseID)
	return append(b, `"}`...)
}

func appendItemJSON(b []byte, it *resourcelease.Item) []byte {
	b = append(b, `{"resourceType":`...)
	b = appendJSONString(b, it.ResourceType)
	b = append(b, `,"resourceId":`...)
	b = appendJSONString(b, it.ResourceID)
	b = append(b, `,"partitionKey":`...)
	b = appendJSONString(b, it.PartitionKey)
	b = append(b, `,"payloadEncoding":`...)
	b = appendJSONString(b, it.PayloadEncoding)
	if len(it.Body) > 0 {
		b = append(b, `,"body":"`...)
		b = base64.StdEncoding.AppendEncode(b, it.Body)
		b = append(b, '"')
	}
	if len(it.Attributes) > 0 {
		b = append(b, `,"attributes":`...)
		b = appendStringMapJSON(b, it.Attributes)
	}
	if it.RequestID != "" {
		b = append(b, `,"requestId":`...)
		b = appendJSONString(b, it.RequestID)
	}
	return append(b, '}')
}

// appendStringMapJSON appends m as a JSON object with sorted keys, or null.
func appendStringMapJSON(b []byte, m map[string]string) []byte {
	if m == nil {
		return append(b, "null"...)
	}
	var stack [16]string
	keys := stack[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, k)
		b = append(b, ':')
		b = appendJSONString(b, m[k])
	}
	return append(b, '}')
}

// appendJSONTime appends t as encoding/json does (RFC 3339 with nanoseconds).
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

func appendUUID(b []byte, u uuid.UUID) []byte {
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			b = append(b, '-')
		}
		b = append(b, hexDigits[x>>4], hexDigits[x&0xf])
	}
	return b
}

// appendJSONString appends s quoted and escaped exactly as encoding/json
// escapes it (HTML-safe, invalid UTF-8 as U+FFFD, U+2028/U+2029 escaped).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
