package api

import (
	"fmt"

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
	size := m.WireSize()
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	b, err := m.AppendWire((*buf)[:0])
	if err != nil {
		pool.Put(buf)
		return nil, err
	}
	if len(b) != size {
		pool.Put(buf)
		return nil, fmt.Errorf("api: watch message encoded to %d bytes, %d expected", len(b), size)
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

func (c watchCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is the content-subtype clients ask for: "proto".
func (c watchCodec) Name() string { return c.proto.Name() }
