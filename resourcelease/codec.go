package resourcelease

import (
	"context"
	"encoding/json"
	"mime"
	"strings"
)

// A Codec turns Go values into item bodies and back. The encoding it names is
// written as the item's payloadEncoding, so that a worker can refuse a body
// it cannot read instead of misreading it.
type Codec interface {
	// Encoding is the payloadEncoding of the bodies this codec writes, such
	// as "application/json".
	Encoding() string
	// Accepts reports whether the codec reads bodies of the given
	// payloadEncoding.
	Accepts(payloadEncoding string) bool
	// Marshal encodes v.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data into v, a pointer.
	Unmarshal(data []byte, v any) error
}

// JSON is the default Codec: encoding/json, payloadEncoding
// "application/json" (it also reads "json", yarpc's name, and media types with
// parameters such as "application/json; charset=utf-8").
var JSON Codec = jsonCodec{}

type jsonCodec struct{}

func (jsonCodec) Encoding() string { return "application/json" }

func (jsonCodec) Accepts(enc string) bool {
	if mt, _, err := mime.ParseMediaType(enc); err == nil {
		enc = mt
	}
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "application/json", "json":
		return true
	}
	return false
}

func (jsonCodec) Marshal(v any) ([]byte, error)      { return json.Marshal(v) }
func (jsonCodec) Unmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

// CodeUnencodable is the code of EncodeItem's error when the codec cannot
// encode the value.
const CodeUnencodable = "resourcelease.payload.unencodable"

// EncodeItem returns item with its Body set to v encoded by codec (JSON when
// nil) and its PayloadEncoding set to the codec's encoding. The other fields
// (ResourceType, ResourceID, PartitionKey, Attributes, RequestID) are kept as
// given. A value the codec cannot encode is invalid-argument.
func EncodeItem(item Item, v any, codec Codec) (Item, error) {
	if codec == nil {
		codec = JSON
	}
	body, err := codec.Marshal(v)
	if err != nil {
		return Item{}, &Error{Status: StatusInvalidArgument, Code: CodeUnencodable,
			Message: "resourcelease: cannot encode the payload as " + codec.Encoding() + ": " + err.Error(), Err: err}
	}
	item.Body = body
	item.PayloadEncoding = codec.Encoding()
	return item, nil
}

// Enqueue enqueues v, encoded as JSON, as the body of item through d (a
// dispatcher in process or a transport.Client): item names the work
// (ResourceType, ResourceID, PartitionKey, and optionally Attributes and a
// RequestID for dedupe); its Body and PayloadEncoding are set from v. Use
// EncodeItem and d.Enqueue for another codec.
func Enqueue(ctx context.Context, d Dispatcher, item Item, v any) (*EnqueueResponse, error) {
	it, err := EncodeItem(item, v, JSON)
	if err != nil {
		return nil, err
	}
	return d.Enqueue(ctx, &EnqueueRequest{Payload: &it})
}
