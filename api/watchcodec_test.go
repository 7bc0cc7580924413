package api

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

func TestWatchCodec_Marshal(t *testing.T) {
	small := []*kvpb.Event{{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("k"), Value: []byte("v"), RangeId: 7, Index: 2}}
	large := []*kvpb.Event{
		{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("k1"), Value: bytes.Repeat([]byte("x"), 40<<10), RangeId: 7, Index: 3},
		{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("k2"), RangeId: 7, Index: 4},
	}
	encode := func(evs []*kvpb.Event) [][]byte {
		out, err := rpctypes.EncodeWatchEvents(evs)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name string
		v    any
		want proto.Message
	}{
		{"a plain message", &kvpb.WatchRangeState{RangeId: 7, ServedBy: "n1"}, &kvpb.WatchRangeState{RangeId: 7, ServedBy: "n1"}},
		{"progress, nothing encoded", &rpctypes.WatchMessage{Resp: &kvpb.WatchResponse{Cursor: "7:1"}}, &kvpb.WatchResponse{Cursor: "7:1"}},
		{"small, unpooled", &rpctypes.WatchMessage{Resp: &kvpb.WatchResponse{Cursor: "7:2", Events: small}, Encoded: encode(small)}, &kvpb.WatchResponse{Cursor: "7:2", Events: small}},
		{"large, pooled", &rpctypes.WatchMessage{Resp: &kvpb.WatchResponse{Cursor: "7:4", Events: large}, Encoded: encode(large)}, &kvpb.WatchResponse{Cursor: "7:4", Events: large}},
		{"large, nothing encoded", &rpctypes.WatchMessage{Resp: &kvpb.WatchResponse{Cursor: "7:5", Events: large}}, &kvpb.WatchResponse{Cursor: "7:5", Events: large}},
		{"a large plain message", &kvpb.ScanResponse{Kvs: []*kvpb.KeyValue{{Key: []byte("k1"), Value: bytes.Repeat([]byte("y"), 40<<10)}}},
			&kvpb.ScanResponse{Kvs: []*kvpb.KeyValue{{Key: []byte("k1"), Value: bytes.Repeat([]byte("y"), 40<<10)}}}},
		// Encodings that do not match their events are never sent: the
		// response is marshalled afresh.
		{"encodings of other events", &rpctypes.WatchMessage{Resp: &kvpb.WatchResponse{Cursor: "7:4", Events: large}, Encoded: encode(large[:1])}, &kvpb.WatchResponse{Cursor: "7:4", Events: large}},
	}
	c := newWatchCodec()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := c.Marshal(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			// A pooled buffer is near the message's size: gRPC's default
			// pool would hand a 40 KiB message 1 MiB, cleared whole.
			for _, b := range data {
				if n, c := len(b.ReadOnlyData()), cap(b.ReadOnlyData()); c > 2*n && c > 1<<10 {
					t.Errorf("a buffer of %d bytes for %d bytes of message", c, n)
				}
			}
			got := tc.want.ProtoReflect().New().Interface()
			if err := proto.Unmarshal(data.Materialize(), got); err != nil {
				t.Fatal(err)
			}
			data.Free()
			if !proto.Equal(got, tc.want) {
				t.Fatalf("decoded %v, want %v", got, tc.want)
			}
		})
	}
}

// A Service registered on a server without the watch codec still
// serves watches, as plain responses.
func TestWatch_ServedByAPlainGRPCServer(t *testing.T) {
	svc, fb, _ := newTestService(t, testLimits())
	srv := grpc.NewServer()
	kvpb.RegisterKVServer(srv, svc)
	lis := bufconn.Listen(1 << 20)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	want := &kvpb.WatchResponse{Cursor: "7:2", Events: []*kvpb.Event{{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("p1"), Value: []byte("v"), RangeId: 7, Index: 2}}}
	fb.setHook(func(context.Context, string, any) (any, error) { return watchScript[*kvpb.WatchResponse]{want}, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := kvpb.NewKVClient(conn).Watch(ctx, &kvpb.WatchRequest{Prefix: []byte("p")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
