package postgres

import (
	"encoding/binary"

	"github.com/jackc/pgx/v5/pgtype"
)

// The writer sends every commit's changes as arrays, a few dozen of them
// with one element per change. pgx encodes an array element by element
// through its generic plans (each element boxed, and slices of pointers
// through reflection), which was a tenth of the writer's CPU on its one
// goroutine, between the transaction's round trips. arrayCodec encodes the
// slice types the writer sends directly, byte for byte as pgx does
// (TestArrayEncodingMatchesPgx and FuzzArrayEncoding hold it to that), and
// leaves every other value, and all decoding, to pgx's codec.

// registerArrayCodecs puts arrayCodec in front of pgx's codecs for text[],
// int8[] and bytea[] on one connection's type map.
func registerArrayCodecs(m *pgtype.Map) {
	for _, a := range []struct {
		name      string
		oid, elem uint32
	}{
		{"_text", pgtype.TextArrayOID, pgtype.TextOID},
		{"_int8", pgtype.Int8ArrayOID, pgtype.Int8OID},
		{"_bytea", pgtype.ByteaArrayOID, pgtype.ByteaOID},
	} {
		t, ok := m.TypeForOID(a.oid)
		if !ok {
			continue
		}
		inner, ok := t.Codec.(*pgtype.ArrayCodec)
		if !ok {
			continue // already ours, or a codec someone else registered
		}
		m.RegisterType(&pgtype.Type{Name: a.name, OID: a.oid, Codec: &arrayCodec{ArrayCodec: inner, elem: a.elem}})
	}
}

// arrayCodec is pgx's array codec with direct binary encoders for the
// writer's slice types.
type arrayCodec struct {
	*pgtype.ArrayCodec
	elem uint32 // the element type's OID
}

// PlanEncode returns a direct plan for a slice the codec knows in binary
// format, and pgx's plan for anything else.
func (c *arrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case []string, []*string:
			if c.elem == pgtype.TextOID {
				return textArrayPlan{}
			}
		case []int64, []*int64:
			if c.elem == pgtype.Int8OID {
				return int8ArrayPlan{}
			}
		case [][]byte:
			if c.elem == pgtype.ByteaOID {
				return byteaArrayPlan{}
			}
		}
	}
	return c.ArrayCodec.PlanEncode(m, oid, format, value)
}

// appendArrayHeader appends a one-dimensional array's header as
// PostgreSQL's array_recv reads it: one dimension, whether any element is
// NULL, the element type, then the length and the lower bound (1). An empty
// slice is one dimension of length 0, as pgx sends it.
func appendArrayHeader(buf []byte, n int, hasNull bool, elem uint32) []byte {
	flags := uint32(0)
	if hasNull {
		flags = 1
	}
	buf = binary.BigEndian.AppendUint32(buf, 1)
	buf = binary.BigEndian.AppendUint32(buf, flags)
	buf = binary.BigEndian.AppendUint32(buf, elem)
	buf = binary.BigEndian.AppendUint32(buf, uint32(n))
	return binary.BigEndian.AppendUint32(buf, 1)
}

// nullElement is an element's length word for NULL.
const nullElement = 0xffffffff

type textArrayPlan struct{}

// Encode encodes a []string or []*string (nil elements NULL); a nil slice
// is NULL, as pgx encodes it.
func (textArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	switch v := value.(type) {
	case []string:
		if v == nil {
			return nil, nil
		}
		buf = appendArrayHeader(buf, len(v), false, pgtype.TextOID)
		for _, s := range v {
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(s)))
			buf = append(buf, s...)
		}
	case []*string:
		if v == nil {
			return nil, nil
		}
		hasNull := false
		for _, s := range v {
			hasNull = hasNull || s == nil
		}
		buf = appendArrayHeader(buf, len(v), hasNull, pgtype.TextOID)
		for _, s := range v {
			if s == nil {
				buf = binary.BigEndian.AppendUint32(buf, nullElement)
				continue
			}
			buf = binary.BigEndian.AppendUint32(buf, uint32(len(*s)))
			buf = append(buf, *s...)
		}
	}
	return buf, nil
}

type int8ArrayPlan struct{}

// Encode encodes a []int64 or []*int64 (nil elements NULL); a nil slice is
// NULL.
func (int8ArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	switch v := value.(type) {
	case []int64:
		if v == nil {
			return nil, nil
		}
		buf = appendArrayHeader(buf, len(v), false, pgtype.Int8OID)
		for _, n := range v {
			buf = binary.BigEndian.AppendUint32(buf, 8)
			buf = binary.BigEndian.AppendUint64(buf, uint64(n))
		}
	case []*int64:
		if v == nil {
			return nil, nil
		}
		hasNull := false
		for _, n := range v {
			hasNull = hasNull || n == nil
		}
		buf = appendArrayHeader(buf, len(v), hasNull, pgtype.Int8OID)
		for _, n := range v {
			if n == nil {
				buf = binary.BigEndian.AppendUint32(buf, nullElement)
				continue
			}
			buf = binary.BigEndian.AppendUint32(buf, 8)
			buf = binary.BigEndian.AppendUint64(buf, uint64(*n))
		}
	}
	return buf, nil
}

type byteaArrayPlan struct{}

// Encode encodes a [][]byte, nil elements NULL (as pgx encodes a nil
// []byte); a nil slice is NULL.
func (byteaArrayPlan) Encode(value any, buf []byte) ([]byte, error) {
	v := value.([][]byte)
	if v == nil {
		return nil, nil
	}
	hasNull := false
	for _, b := range v {
		hasNull = hasNull || b == nil
	}
	buf = appendArrayHeader(buf, len(v), hasNull, pgtype.ByteaOID)
	for _, b := range v {
		if b == nil {
			buf = binary.BigEndian.AppendUint32(buf, nullElement)
			continue
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(b)))
		buf = append(buf, b...)
	}
	return buf, nil
}
