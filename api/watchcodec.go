package api

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"

	"github.com/dialkv/dialkv/api/rpctypes"
)

// watchCodec is the gRPC servers' codec: protobuf, as gRPC's own, except
// that a watch message (rpctypes.WatchMessage) goes out with the
// encodings of its events that the node made once for all its watchers.
// The bytes are those protobuf would have written, so clients decode a
// WatchResponse as ever.
type watchCodec struct{ proto encoding.CodecV2 }

func newWatchCodec() watchCodec { return watchCodec{proto: encoding.GetCodecV2("proto")} }

func (c watchCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rpctypes.WatchMessage)
	if !ok {
		return c.proto.Marshal(v)
	}
	if m.Encoded == nil {
		return c.proto.Marshal(m.Resp)
	}
	size := m.WireSize()
	if mem.IsBelowBufferPoolingThreshold(size) {
		if b, err := m.AppendWire(make([]byte, 0, size)); err == nil && len(b) == size {
			return mem.BufferSlice{mem.SliceBuffer(b)}, nil
		}
		return c.proto.Marshal(m.Resp)
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	b, err := m.AppendWire((*buf)[:0])
	if err != nil || len(b) != size {
		// Encodings that do not match their events (a bug, never
		// expected): the response marshalled here is always right.
		pool.Put(buf)
		return c.proto.Marshal(m.Resp)
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (c watchCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is the content-subtype clients ask for: "proto".
func (c watchCodec) Name() string { return c.proto.Name() }
