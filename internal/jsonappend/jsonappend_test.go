package jsonappend

import (
	"bytes"
	"encoding/json"
	"testing"
)

// cases are strings encoding/json treats specially.
var cases = []string{
	"", "plain", `quote " and \ backslash`, "\b\f\n\r\t", "\x00\x01\x1f\x7f", "<script>&amp;</script>",
	"é ü 日本 🎉", "\u2028 line \u2029 para", "bad \xff utf8 \xc3", "\xed\xa0\x80 surrogate", "tail\xe2\x82",
}

func check(t *testing.T, got []byte, v any) {
	t.Helper()
	want, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%#v:\n got %s\nwant %s", v, got, want)
	}
}

// TestMatchesEncodingJSON holds String and StringMap to json.Marshal.
func TestMatchesEncodingJSON(t *testing.T) {
	for _, s := range cases {
		check(t, String(nil, s), s)
		check(t, StringMap(nil, map[string]string{s: s, s + "x": "y"}), map[string]string{s: s, s + "x": "y"})
	}
	check(t, StringMap(nil, nil), map[string]string(nil))
	check(t, StringMap(nil, map[string]string{}), map[string]string{})
	many := map[string]string{}
	for i := range 40 { // more keys than StringMap's stack array
		many[string(rune('a'+i%26))+string(rune('A'+i))] = "v"
	}
	check(t, StringMap(nil, many), many)
	check(t, String([]byte("prefix"), "x")[len("prefix"):], "x")
}

// FuzzMatchesEncodingJSON holds String and StringMap to json.Marshal on any
// strings.
func FuzzMatchesEncodingJSON(f *testing.F) {
	for _, s := range cases {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		check(t, String(nil, a), a)
		check(t, StringMap(nil, map[string]string{a: b, b + a: a}), map[string]string{a: b, b + a: a})
	})
}
