package replication

import (
	"encoding/json"
	"strings"
)

// The attributes column of queue_items holds JSON, written without
// reflection by jsonappend.StringMap (the bytes encoding/json produces) and
// read back by parseStringMap.

// parseStringMap decodes a JSON object of strings. The objects this package
// writes (jsonappend.StringMap) have no escapes in the common case and are
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
