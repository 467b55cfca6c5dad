package postgres

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgtype"
)

func ptr[T any](v T) *T { return &v }

// arrayValues are the writer's slice types at the edges: nil, empty, NULL
// elements first, last and only, empty and non-ASCII strings, extreme
// integers.
var arrayValues = []struct {
	oid   uint32
	value any
}{
	{pgtype.TextArrayOID, []string(nil)},
	{pgtype.TextArrayOID, []string{}},
	{pgtype.TextArrayOID, []string{"", "a", "ünïcode ✓", "with\x00nul"}},
	{pgtype.TextArrayOID, []*string(nil)},
	{pgtype.TextArrayOID, []*string{}},
	{pgtype.TextArrayOID, []*string{nil}},
	{pgtype.TextArrayOID, []*string{nil, ptr("x"), ptr(""), nil}},
	{pgtype.TextArrayOID, []*string{ptr("a"), ptr("b")}},
	{pgtype.Int8ArrayOID, []int64(nil)},
	{pgtype.Int8ArrayOID, []int64{}},
	{pgtype.Int8ArrayOID, []int64{0, 1, -1, 1<<63 - 1, -1 << 63}},
	{pgtype.Int8ArrayOID, []*int64(nil)},
	{pgtype.Int8ArrayOID, []*int64{nil}},
	{pgtype.Int8ArrayOID, []*int64{ptr[int64](7), nil, ptr[int64](-7)}},
	{pgtype.ByteaArrayOID, [][]byte(nil)},
	{pgtype.ByteaArrayOID, [][]byte{}},
	{pgtype.ByteaArrayOID, [][]byte{nil, {}, {0, 1, 0xff}, nil}},
	{pgtype.ByteaArrayOID, [][]byte{[]byte("body")}},
}

// TestArrayEncodingMatchesPgx: the direct encoders give pgx's bytes for
// every value, and values of other types still go to pgx's codec.
func TestArrayEncodingMatchesPgx(t *testing.T) {
	for _, v := range arrayValues {
		checkArrayEncoding(t, v.oid, v.value)
	}
	// A type the direct encoders do not know is pgx's to encode.
	checkArrayEncoding(t, pgtype.Int8ArrayOID, []int32{1, 2})
	checkArrayEncoding(t, pgtype.TextArrayOID, []any{"a", nil})
	fast := pgtype.NewMap()
	registerArrayCodecs(fast)
	registerArrayCodecs(fast) // a second registration keeps the first
	if typ, _ := fast.TypeForOID(pgtype.TextArrayOID); typ.Codec.(*arrayCodec).ArrayCodec == nil {
		t.Fatal("registered twice: the inner codec is lost")
	}
}

func checkArrayEncoding(t *testing.T, oid uint32, value any) {
	t.Helper()
	want, werr := pgtype.NewMap().Encode(oid, pgtype.BinaryFormatCode, value, []byte("prefix"))
	fast := pgtype.NewMap()
	registerArrayCodecs(fast)
	got, gerr := fast.Encode(oid, pgtype.BinaryFormatCode, value, []byte("prefix"))
	if (werr == nil) != (gerr == nil) || !bytes.Equal(got, want) || (got == nil) != (want == nil) {
		t.Errorf("%T %v:\n got %x, %v\nwant %x, %v", value, value, got, gerr, want, werr)
	}
}

// FuzzArrayEncoding holds the direct encoders to pgx's bytes on any
// strings, integers and bytes.
func FuzzArrayEncoding(f *testing.F) {
	f.Add("a", "", int64(1), int64(-1), []byte{0}, true)
	f.Fuzz(func(t *testing.T, a, b string, x, y int64, body []byte, null bool) {
		var sp, ip = []*string{&a, &b}, []*int64{&x, &y}
		bs := [][]byte{body, []byte(a)}
		if null {
			sp[1], ip[0], bs[1] = nil, nil, nil
		}
		checkArrayEncoding(t, pgtype.TextArrayOID, []string{a, b})
		checkArrayEncoding(t, pgtype.TextArrayOID, sp)
		checkArrayEncoding(t, pgtype.Int8ArrayOID, []int64{x, y})
		checkArrayEncoding(t, pgtype.Int8ArrayOID, ip)
		checkArrayEncoding(t, pgtype.ByteaArrayOID, bs)
	})
}
