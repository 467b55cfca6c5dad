package postgres

import (
	"encoding/base64"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/leasemesh/leasemesh/resourcelease"
)

// The writer encodes every event's item, token and metadata on its one
// goroutine, between the transaction's two round trips, while the database
// waits: these append exactly the bytes encoding/json's Marshal gives
// (TestEventJSONMatchesEncodingJSON and FuzzEventJSON hold them to it),
// without its reflection.

// appendItemJSON appends it as json.Marshal encodes it, or returns nil
// where json.Marshal fails (a NotBefore it cannot encode: a year outside
// 0–9999 or a zone offset of a day or more); the event then has no payload,
// as before these encoders.
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
		b = appendStringMap(b, it.Attributes)
		b = append(b, '}')
	}
	if it.RequestID != "" {
		b = append(b, `,"requestId":`...)
		b = appendJSONString(b, it.RequestID)
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

// appendStringMap appends m as json.Marshal encodes it (keys sorted),
// without its closing brace.
func appendStringMap(b []byte, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
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
	return b
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as json.Marshal quotes it: HTML
// characters, U+2028 and U+2029 escaped, invalid UTF-8 as U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
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
