package main

import (
	"errors"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/protoadapt"

	"github.com/dialkv/dialkv/api/kvpb"
)

// The raw parsers must read what the systems' generated types write, with
// every other field present to be skipped.
func TestParseDialkvWatch(t *testing.T) {
	cases := []struct {
		name string
		resp *kvpb.WatchResponse
		want []event
	}{
		{"progress only", &kvpb.WatchResponse{Cursor: "7:120", Ranges: []*kvpb.WatchRangeState{{RangeId: 7, ServedBy: "n1", AppliedIndex: 120}}}, nil},
		{"puts and a delete", &kvpb.WatchResponse{Cursor: "7:122", Events: []*kvpb.Event{
			{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("b/1"), Value: []byte("v1"), PrevValue: []byte("old"), PrevExists: true, RangeId: 7, Index: 121, Lease: 5},
			{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("b/2"), RangeId: 7, Index: 122, Cause: kvpb.DeleteCause_DELETE_CAUSE_LEASE_REVOKED, Lease: 5},
			{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("b/3"), RangeId: 9, Index: 1},
		}}, []event{
			{put: true, key: []byte("b/1"), value: []byte("v1"), group: 7, index: 121},
			{put: false, key: []byte("b/2"), group: 7, index: 122},
			{put: true, key: []byte("b/3"), group: 9, index: 1},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(tc.resp)
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseDialkvWatch(b, nil)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !eventsEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseEtcdWatch(t *testing.T) {
	cases := []struct {
		name    string
		resp    *pb.WatchResponse
		want    []event
		wantErr string
	}{
		{"created", &pb.WatchResponse{Header: &pb.ResponseHeader{Revision: 5}, WatchId: 1, Created: true}, nil, ""},
		{"a put, a delete and one without its key-value", &pb.WatchResponse{WatchId: 1, Events: []*mvccpb.Event{
			{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("b/1"), Value: []byte("v1"), CreateRevision: 3, ModRevision: 9, Version: 2, Lease: 4}, PrevKv: &mvccpb.KeyValue{Key: []byte("b/1"), Value: []byte("old")}},
			{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte("b/2"), ModRevision: 10}},
			{Type: mvccpb.PUT},
		}}, []event{
			{put: true, key: []byte("b/1"), value: []byte("v1"), index: 9},
			{put: false, key: []byte("b/2"), index: 10},
		}, ""},
		{"canceled", &pb.WatchResponse{Canceled: true, CompactRevision: 42, CancelReason: "compacted"}, nil, "etcd canceled the watch: compacted (compact revision 42)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(protoadapt.MessageV2Of(tc.resp))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseEtcdWatch(b, nil)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if !eventsEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseWatch_TruncatedBytesFail(t *testing.T) {
	b, err := proto.Marshal(&kvpb.WatchResponse{Events: []*kvpb.Event{{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("b/1"), Value: []byte("value"), RangeId: 7, Index: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	for cut := 1; cut < len(b); cut++ {
		if _, err := parseDialkvWatch(b[:cut], nil); !errors.Is(err, errTruncated) {
			t.Fatalf("dialkv message cut to %d of %d bytes: error %v, want errTruncated", cut, len(b), err)
		}
		if _, err := parseEtcdWatch(b[:cut], nil); err == nil {
			t.Fatalf("etcd parser read a message cut to %d of %d bytes", cut, len(b))
		}
	}
}

func TestRawCodec(t *testing.T) {
	c := newRawCodec()
	if c.Name() != "proto" {
		t.Fatalf("name %q: the servers answer the proto content-subtype", c.Name())
	}
	req := &kvpb.WatchRequest{Prefix: []byte("b/")}
	out, err := c.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.Marshal(req)
	if got := out.Materialize(); string(got) != string(want) {
		t.Fatalf("request bytes %x, want %x", got, want)
	}
	// A message in two buffers arrives whole, and the next one replaces it.
	var m rawMsg
	for _, parts := range [][]string{{"abc", "def"}, {"xy"}} {
		var data mem.BufferSlice
		for _, p := range parts {
			data = append(data, mem.SliceBuffer(p))
		}
		if err := c.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		if got := string(m.buf); got != strings.Join(parts, "") {
			t.Fatalf("got %q, want %q", got, strings.Join(parts, ""))
		}
	}
	// Anything else is decoded as protobuf.
	var back kvpb.WatchRequest
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(want)}, &back); err != nil || string(back.Prefix) != "b/" {
		t.Fatalf("proto fallback: %v, prefix %q", err, back.Prefix)
	}
}

func eventsEqual(a, b []event) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.put != y.put || string(x.key) != string(y.key) || string(x.value) != string(y.value) || x.group != y.group || x.index != y.index {
			return false
		}
	}
	return true
}
