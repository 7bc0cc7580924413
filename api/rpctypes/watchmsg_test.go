package rpctypes

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/dialkv/dialkv/api/kvpb"
)

func TestWatchMessage_AppendWire(t *testing.T) {
	events := []*kvpb.Event{
		{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("a"), Value: []byte("1"), RangeId: 7, Index: 4, Lease: 9},
		{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("b"), RangeId: 7, Index: 5, Cause: kvpb.DeleteCause_DELETE_CAUSE_LEASE_REVOKED, Lease: 9},
	}
	encode := func(evs []*kvpb.Event) [][]byte {
		out, err := EncodeWatchEvents(evs)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name    string
		msg     *WatchMessage
		wantErr bool
	}{
		{"progress, nothing encoded", &WatchMessage{Resp: &kvpb.WatchResponse{Cursor: "7:3", Ranges: []*kvpb.WatchRangeState{{RangeId: 7, ServedBy: "n1"}}}}, false},
		{"events marshalled here", &WatchMessage{Resp: &kvpb.WatchResponse{Cursor: "7:5", Events: events}}, false},
		{"events encoded once", &WatchMessage{Resp: &kvpb.WatchResponse{Cursor: "7:5", Events: events}, Encoded: encode(events)}, false},
		{"encodings that do not match the events", &WatchMessage{Resp: &kvpb.WatchResponse{Cursor: "7:5", Events: events}, Encoded: encode(events[:1])}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.msg.AppendWire([]byte("prefix"))
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(b[:6]) != "prefix" {
				t.Fatal("the bytes before were overwritten")
			}
			if len(b)-6 != tc.msg.WireSize() {
				t.Fatalf("%d bytes, WireSize says %d", len(b)-6, tc.msg.WireSize())
			}
			var got kvpb.WatchResponse
			if err := proto.Unmarshal(b[6:], &got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(&got, tc.msg.Resp) {
				t.Fatalf("decoded %v, want %v", &got, tc.msg.Resp)
			}
		})
	}
}
