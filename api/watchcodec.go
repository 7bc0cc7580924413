package api

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/dialkv/dialkv/api/rpctypes"
)

// watchCodec is the gRPC servers' codec: protobuf, as gRPC's own, except
// that a watch message (rpctypes.WatchMessage) goes out with the
// encodings of its events that the node made once for all its watchers.
// The bytes are those protobuf would have written, so clients decode a
// WatchResponse as ever.
type watchCodec struct {
	proto encoding.CodecV2
	// pool holds the encoded watch messages' buffers. gRPC's default pool
	// serves every size from 32 KiB to 1 MiB with a 1 MiB buffer and
	// clears all of it on each Get: a batch of 150 events (48 KiB) to each
	// of 100 watchers cleared 1 MiB per message, 4% of a node's CPU, and
	// its garbage drove the collector (docs/performance.md, session 26).
	// Power-of-two tiers keep what is cleared within twice the message.
	pool mem.BufferPool
}

func newWatchCodec() watchCodec {
	// Tiers of 1 KiB to 16 MiB; larger messages get buffers of their own
	// size.
	pool, err := mem.NewBinaryTieredBufferPool(10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24)
	if err != nil {
		// Only invalid exponents fail, and these are constants.
		pool = mem.DefaultBufferPool()
	}
	return watchCodec{proto: encoding.GetCodecV2("proto"), pool: pool}
}

func (c watchCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(*rpctypes.WatchMessage)
	if !ok {
		return c.marshalProto(v)
	}
	if m.Encoded == nil {
		return c.marshalProto(m.Resp)
	}
	size := m.WireSize()
	if mem.IsBelowBufferPoolingThreshold(size) {
		if b, err := m.AppendWire(make([]byte, 0, size)); err == nil && len(b) == size {
			return mem.BufferSlice{mem.SliceBuffer(b)}, nil
		}
		return c.marshalProto(m.Resp)
	}
	pool := c.pool
	buf := pool.Get(size)
	b, err := m.AppendWire((*buf)[:0])
	if err != nil || len(b) != size {
		// Encodings that do not match their events (a bug, never
		// expected): the response marshalled here is always right.
		pool.Put(buf)
		return c.marshalProto(m.Resp)
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// marshalProto is gRPC's protobuf marshalling with the codec's pool, so
// that a large response (a scan's page, a watch message without shared
// encodings) gets a buffer near its size.
func (c watchCodec) marshalProto(v any) (mem.BufferSlice, error) {
	pm, ok := v.(proto.Message)
	if !ok {
		return c.proto.Marshal(v)
	}
	size := proto.Size(pm)
	// UseCachedSize reuses the sizes proto.Size just cached: the message
	// is not changed meanwhile.
	opts := proto.MarshalOptions{UseCachedSize: true}
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(pm)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	b, err := opts.MarshalAppend((*buf)[:0], pm)
	if err != nil || len(b) != size {
		c.pool.Put(buf)
		return c.proto.Marshal(v)
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

func (c watchCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is the content-subtype clients ask for: "proto".
func (c watchCodec) Name() string { return c.proto.Name() }
