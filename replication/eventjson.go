package replication

import (
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"
)

// The attributes column of queue_items holds JSON, written by the appenders
// below without reflection; they produce exactly the bytes encoding/json
// produces (a property test holds them to it), and loading uses encoding/json.

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

const hexDigits = "0123456789abcdef"

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

// parseStringMap decodes a JSON object of strings. The objects this package
// writes (appendStringMapJSON) have no escapes in the common case and are
// split directly; anything else goes through encoding/json.
func parseStringMap(s string) (map[string]string, error) {
	if m, ok := parseSimpleStringMap(s); ok {
		return m, nil
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, err
	}
	return m, nil
}

// parseSimpleStringMap parses {"k":"v",...} whose strings hold no escapes,
// reporting false for anything else.
func parseSimpleStringMap(s string) (map[string]string, bool) {
	if strings.IndexByte(s, '\\') >= 0 || len(s) < 2 || s[0] != '{' || s[len(s)-1] != '}' {
		return nil, false
	}
	body := s[1 : len(s)-1]
	m := make(map[string]string, strings.Count(body, `":"`))
	for body != "" {
		k, rest, ok := cutQuoted(body)
		if !ok || rest == "" || rest[0] != ':' {
			return nil, false
		}
		v, rest, ok := cutQuoted(rest[1:])
		if !ok {
			return nil, false
		}
		m[k] = v
		switch {
		case rest == "":
			body = ""
		case rest[0] == ',':
			body = rest[1:]
			if body == "" {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	return m, true
}

// cutQuoted splits "text"rest into text and rest.
func cutQuoted(s string) (string, string, bool) {
	if len(s) < 2 || s[0] != '"' {
		return "", "", false
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return "", "", false
	}
	return s[1 : 1+end], s[2+end:], true
}
