package main

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/dialkv/dialkv/api/client/clienttest"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"google.golang.org/grpc/codes"
)

// leaseBatch is one message: a put, then a lease's two deletes at one
// index.
var leaseBatch = &kvpb.WatchResponse{Cursor: "7:122,9:44", Events: []*kvpb.Event{
	{Type: kvpb.EventType_EVENT_TYPE_PUT, Key: []byte("a"), Value: []byte("1"), RangeId: 7, Index: 121, Lease: 5},
	{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("b"), RangeId: 7, Index: 122, Cause: kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED, Lease: 5},
	{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("c"), RangeId: 7, Index: 122, Cause: kvpb.DeleteCause_DELETE_CAUSE_LEASE_REVOKED, Lease: 5},
}}

func TestPrintWatch(t *testing.T) {
	progress := &kvpb.WatchResponse{Cursor: "7:120", Ranges: []*kvpb.WatchRangeState{{RangeId: 7, ServedBy: "n2", AppliedIndex: 125, StalenessMs: 3}}}
	clientDelete := &kvpb.WatchResponse{Cursor: "7:130", Events: []*kvpb.Event{
		{Type: kvpb.EventType_EVENT_TYPE_DELETE, Key: []byte("k"), RangeId: 7, Index: 130, PrevValue: []byte{0xff}, PrevExists: true},
	}}
	tests := []struct {
		name     string
		f        format
		m        *kvpb.WatchResponse
		progress bool
		want     string
	}{
		{"text events", formatSimple, leaseBatch, false,
			"PUT a 1\nDELETE b (LEASE_EXPIRED lease 5)\nDELETE c (LEASE_REVOKED lease 5)\n"},
		{"text events with the cursor", formatSimple, leaseBatch, true,
			"PUT a 1\nDELETE b (LEASE_EXPIRED lease 5)\nDELETE c (LEASE_REVOKED lease 5)\nCURSOR 7:122,9:44\n"},
		{"text progress, hidden", formatSimple, progress, false, ""},
		{"text progress", formatSimple, progress, true, "CURSOR 7:120\n"},
		{"text client delete", formatTable, clientDelete, false, "DELETE k\n"},
		{"json events, the cursor on the last", formatJSON, leaseBatch, false,
			`{"type":"put","key":"a","value":"1","range_id":7,"index":121}` + "\n" +
				`{"type":"delete","key":"b","range_id":7,"index":122,"cause":"LEASE_EXPIRED","lease":5}` + "\n" +
				`{"type":"delete","key":"c","range_id":7,"index":122,"cause":"LEASE_REVOKED","lease":5,"cursor":"7:122,9:44"}` + "\n"},
		{"json previous value in base64", formatJSON, clientDelete, false,
			`{"type":"delete","key":"k","prev_value":{"base64":"/w=="},"range_id":7,"index":130,"cursor":"7:130"}` + "\n"},
		{"json progress, hidden", formatJSON, progress, false, ""},
		{"json progress", formatJSON, progress, true,
			`{"type":"progress","cursor":"7:120","ranges":[{"range_id":7,"served_by":"n2","applied_index":125,"staleness_ms":3}]}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := printWatch(&b, tt.f, tt.m, tt.progress); err != nil {
				t.Fatal(err)
			}
			if b.String() != tt.want {
				t.Fatalf("printed\n%s\nwant\n%s", b.String(), tt.want)
			}
		})
	}
}

// TestKvctl_WatchJSONHasExactlyTheDocumentedFields: type, key, value,
// range_id, index; cause and lease on a lease's deletes; cursor where a
// resume may start. Nothing else.
func TestKvctl_WatchJSONHasExactlyTheDocumentedFields(t *testing.T) {
	var b bytes.Buffer
	if err := printWatch(&b, formatJSON, leaseBatch, false); err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{"index", "key", "range_id", "type", "value"},
		{"cause", "index", "key", "lease", "range_id", "type"},
		{"cause", "cursor", "index", "key", "lease", "range_id", "type"},
	}
	for i, o := range decodeLines(t, b.String()) {
		if got := slices.Sorted(maps.Keys(o)); !slices.Equal(got, want[i]) {
			t.Errorf("event %d has fields %v; want %v", i, got, want[i])
		}
	}
}

func TestKvctl_WatchAgainstAFakeNode(t *testing.T) {
	srv := clienttest.Start(t)
	st := srv.Store
	st.Put([]byte("p/1"), []byte("a"))
	st.Put([]byte("q/1"), []byte("not watched"))
	grant := mustRun(t, invocation{}, at(srv.Addr, "-w", "json", "lease", "grant", "30")...)
	id := int64(decodeLines(t, grant)[0]["id"].(float64))
	mustRun(t, invocation{}, at(srv.Addr, "put", "p/2", "b", "--lease", fmt.Sprint(id))...)
	mustRun(t, invocation{}, at(srv.Addr, "lease", "revoke", fmt.Sprint(id))...)

	// From the start of the range, until --timeout ends it (exit 0).
	out := mustRun(t, invocation{}, at(srv.Addr, "watch", "--prefix", "p/", "--from", "1:0", "--timeout", "1s", "--progress")...)
	want := fmt.Sprintf("CURSOR 1:0\nPUT p/1 a\nPUT p/2 b\nDELETE p/2 (LEASE_REVOKED lease %v)\nCURSOR 1:%d\n", id, st.Rev())
	if out != want {
		t.Fatalf("watch printed\n%s\nwant\n%s", out, want)
	}
	objs := decodeLines(t, mustRun(t, invocation{}, at(srv.Addr, "-w", "json", "watch", "p/1", "--from", "1:0", "--timeout", "1s")...))
	if len(objs) != 1 || objs[0]["key"] != "p/1" || objs[0]["value"] != "a" || objs[0]["cursor"] != fmt.Sprintf("1:%d", st.Rev()) {
		t.Fatalf("watch -w json p/1: %v", objs)
	}
}

func TestKvctl_WatchAndLeaseExitCodes(t *testing.T) {
	tests := []struct {
		name   string
		script func(*clienttest.Server)
		args   []string
		want   int
	}{
		{"watch without a key", nil, []string{"watch"}, exitUsage},
		{"watch with a key and a prefix", nil, []string{"watch", "k", "--prefix", "p"}, exitUsage},
		{"watch with an empty prefix", nil, []string{"watch", "--prefix", ""}, exitUsage},
		{"watch from a malformed cursor", nil, []string{"watch", "k", "--from", "yesterday"}, exitUsage},
		{"watch from a compacted cursor", func(s *clienttest.Server) {
			s.Store.Put([]byte("k"), []byte("v"))
			s.Store.Put([]byte("k"), []byte("w"))
			s.Store.Compact(2)
		}, []string{"watch", "k", "--from", "1:1"}, exitError},
		{"watch refused", func(s *clienttest.Server) {
			s.Fail(clienttest.MethodWatch, 1, rpctypes.Error(codes.PermissionDenied, rpctypes.ReasonPermissionDenied, "no", nil))
		}, []string{"watch", "k"}, exitAuth},
		{"grant of 0 s", nil, []string{"lease", "grant", "0"}, exitUsage},
		{"grant of ten", nil, []string{"lease", "grant", "ten"}, exitUsage},
		{"revoke of a bad id", nil, []string{"lease", "revoke", "0x10"}, exitUsage},
		{"revoke of an unknown lease", nil, []string{"lease", "revoke", "12"}, exitNotFound},
		{"ttl of an unknown lease", nil, []string{"lease", "ttl", "12"}, exitNotFound},
		{"keepalive once of an unknown lease", nil, []string{"lease", "keepalive", "12", "--once"}, exitNotFound},
		{"keepalive of an unknown lease", nil, []string{"lease", "keepalive", "12"}, exitNotFound},
		{"put with an unknown lease", nil, []string{"put", "k", "v", "--lease", "12"}, exitNotFound},
		{"put with a negative lease", nil, []string{"put", "k", "v", "--lease", "-1"}, exitUsage},
		{"lease list", nil, []string{"lease", "list"}, exitOK},
		{"lease without a subcommand", nil, []string{"lease"}, exitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := clienttest.Start(t)
			if tt.script != nil {
				tt.script(srv)
			}
			if r := kvctl(t, invocation{}, at(srv.Addr, tt.args...)...); r.code != tt.want {
				t.Fatalf("exit %d (stderr %q); want %d", r.code, r.stderr, tt.want)
			}
		})
	}
}

func TestKvctl_LeaseCommands(t *testing.T) {
	srv := clienttest.Start(t)
	ep := srv.Addr
	out := mustRun(t, invocation{}, at(ep, "lease", "grant", "10")...)
	var id int64
	if _, err := fmt.Sscanf(out, "lease %d granted with TTL(10s)\n", &id); err != nil || id <= 0 {
		t.Fatalf("lease grant printed %q (%v); want etcdctl's line with a decimal id", out, err)
	}
	ids := fmt.Sprint(id)
	if o := decodeLines(t, mustRun(t, invocation{}, at(ep, "-w", "json", "lease", "grant", "7")...))[0]; len(o) != 2 || o["ttl"] != float64(7) || o["id"] == nil {
		t.Fatalf(`lease grant -w json printed %v; want exactly {"id", "ttl": 7}`, o)
	}
	mustRun(t, invocation{}, at(ep, "put", "a", "1", "--lease", ids)...)
	mustRun(t, invocation{}, at(ep, "put", "b", "2", "--lease", ids)...)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"lease", "ttl", ids}, fmt.Sprintf("lease %d granted with TTL(10s), remaining(10s)\n", id)},
		{[]string{"lease", "ttl", ids, "--keys"}, fmt.Sprintf("lease %d granted with TTL(10s), remaining(10s), attached keys([a b])\n", id)},
		{[]string{"-w", "json", "lease", "ttl", ids, "--keys"}, fmt.Sprintf(`{"id":%d,"granted_ttl":10,"ttl":10,"keys":["a","b"]}`+"\n", id)},
		{[]string{"lease", "keepalive", ids, "--once"}, fmt.Sprintf("lease %d keepalived with TTL(10)\n", id)},
		{[]string{"-w", "json", "lease", "keepalive", ids, "--once"}, fmt.Sprintf(`{"id":%d,"ttl":10}`+"\n", id)},
		{[]string{"lease", "list"}, fmt.Sprintf("found 2 leases\n%d\n%d\n", id, id+1)},
		{[]string{"-w", "json", "lease", "list"}, fmt.Sprintf(`{"leases":[{"id":%d,"granted_ttl":10,"ttl":10},{"id":%d,"granted_ttl":7,"ttl":7}]}`+"\n", id, id+1)},
		{[]string{"-w", "json", "lease", "revoke", ids}, fmt.Sprintf(`{"id":%d,"keys_deleted":2}`+"\n", id)},
	} {
		if got := mustRun(t, invocation{}, at(ep, tt.args...)...); got != tt.want {
			t.Errorf("kvctl %s printed %q; want %q", strings.Join(tt.args, " "), got, tt.want)
		}
	}
	if _, ok := srv.Store.Value([]byte("a")); ok {
		t.Fatal("key a outlived its revoked lease")
	}
	// keepalive runs until --timeout, renewing a third of the TTL apart
	// (the second lease's 7 s: once at the start within 1 s).
	out = mustRun(t, invocation{}, at(ep, "lease", "keepalive", fmt.Sprint(id+1), "--timeout", "1s")...)
	if out != fmt.Sprintf("lease %d keepalived with TTL(7)\n", id+1) {
		t.Fatalf("lease keepalive printed %q", out)
	}
}
