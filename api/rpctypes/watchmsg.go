package rpctypes

import (
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/dialkv/dialkv/api/kvpb"
)

// A watch's events are the same for every watcher of a range on a node,
// so a node encodes each event once and every watcher's gRPC stream
// copies the bytes, instead of each marshalling its own copy of the same
// events: with 100 watchers, marshalling was a quarter of what they cost
// the node. A repeated message field is on the wire the concatenation of
// its elements, each a tag, a length and the element's bytes, so a
// message is its events' encodings followed by its other fields.

// watchResponseEvents is kv.v1.WatchResponse's events field.
const watchResponseEvents = 1

// WatchMessage is one message of a watch. Encoded, when not nil, holds
// one encoding per event of Resp.Events, in order, from EncodeWatchEvent;
// a watch served over gRPC sends them as they are.
type WatchMessage struct {
	Resp    *kvpb.WatchResponse
	Encoded [][]byte
}

// EncodeWatchEvent encodes e as one element of WatchResponse.events: its
// field tag, its length and its bytes.
func EncodeWatchEvent(e *kvpb.Event) ([]byte, error) {
	size := proto.Size(e)
	b := make([]byte, 0, protowire.SizeTag(watchResponseEvents)+protowire.SizeBytes(size))
	b = protowire.AppendTag(b, watchResponseEvents, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, e)
	if err != nil {
		return nil, fmt.Errorf("rpctypes: encode watch event: %w", err)
	}
	return b, nil
}

// EncodeWatchEvents encodes each of events with EncodeWatchEvent, for a
// WatchMessage's Encoded.
func EncodeWatchEvents(events []*kvpb.Event) ([][]byte, error) {
	out := make([][]byte, 0, len(events))
	for _, e := range events {
		b, err := EncodeWatchEvent(e)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// AppendWire appends m's protobuf encoding to b: the same bytes a
// receiver decodes as m.Resp, with the events taken from m.Encoded when
// it is set.
func (m *WatchMessage) AppendWire(b []byte) ([]byte, error) {
	if m.Encoded == nil {
		return proto.MarshalOptions{}.MarshalAppend(b, m.Resp)
	}
	if len(m.Encoded) != len(m.Resp.Events) {
		return nil, fmt.Errorf("rpctypes: watch message has %d events and %d encodings", len(m.Resp.Events), len(m.Encoded))
	}
	for _, e := range m.Encoded {
		b = append(b, e...)
	}
	rest := &kvpb.WatchResponse{Cursor: m.Resp.Cursor, Ranges: m.Resp.Ranges}
	return proto.MarshalOptions{}.MarshalAppend(b, rest)
}

// WireSize is the length of m's encoding.
func (m *WatchMessage) WireSize() int {
	if m.Encoded == nil {
		return proto.Size(m.Resp)
	}
	n := proto.Size(&kvpb.WatchResponse{Cursor: m.Resp.Cursor, Ranges: m.Resp.Ranges})
	for _, e := range m.Encoded {
		n += len(e)
	}
	return n
}
