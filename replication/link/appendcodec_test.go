package link

import (
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The layout carries every field of the pinned hashicorp/raft's structs.
// A release that adds one fails here, before the field is silently
// dropped on the wire.
func TestAppendLayout_KnowsEveryFieldOfRaftsStructs(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want []string
	}{
		{raft.AppendEntriesRequest{}, []string{"RPCHeader", "Term", "Leader", "PrevLogEntry", "PrevLogTerm", "Entries", "LeaderCommitIndex"}},
		{raft.AppendEntriesResponse{}, []string{"RPCHeader", "Term", "LastLog", "Success", "NoRetryBackoff"}},
		{raft.RPCHeader{}, []string{"ProtocolVersion", "ID", "Addr"}},
		{raft.Log{}, []string{"Index", "Term", "Type", "Data", "Extensions", "AppendedAt"}},
	} {
		rt := reflect.TypeOf(tc.v)
		var got []string
		for i := range rt.NumField() {
			got = append(got, rt.Field(i).Name)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s has fields %v; the layout carries %v", rt.Name(), got, tc.want)
		}
	}
}

func sampleAppends() map[string]*raft.AppendEntriesRequest {
	at := time.Date(2026, 12, 4, 20, 1, 2, 345678901, time.UTC)
	return map[string]*raft.AppendEntriesRequest{
		"empty":             {},
		"heartbeat":         {RPCHeader: header("127.0.0.1:7012"), Term: 9, Leader: []byte("127.0.0.1:7012")},
		"commit index only": {RPCHeader: header("n1"), Term: 3, PrevLogEntry: 41, PrevLogTerm: 3, LeaderCommitIndex: 41},
		"entries": {RPCHeader: header("n1"), Term: 1 << 40, PrevLogEntry: 1<<63 + 5, PrevLogTerm: 7, LeaderCommitIndex: 99, Entries: []*raft.Log{
			{Index: 1<<63 + 6, Term: 7, Type: raft.LogCommand, Data: []byte("put k v"), AppendedAt: at},
			{Index: 1<<63 + 7, Term: 7, Type: raft.LogNoop},
			{Index: 1<<63 + 8, Term: 7, Type: raft.LogConfiguration, Data: bytes.Repeat([]byte{0xff}, 700), Extensions: []byte{1, 2, 3}, AppendedAt: at.Add(-time.Hour)},
			{Index: 1<<63 + 9, Term: 7, Type: raft.LogType(255), AppendedAt: time.Unix(0, -1)},
		}},
		"negative protocol version": {RPCHeader: raft.RPCHeader{ProtocolVersion: -3}},
	}
}

// equalAppend compares as raft would read them: times by instant.
func equalAppend(a, b *raft.AppendEntriesRequest) bool {
	if len(a.Entries) != len(b.Entries) {
		return false
	}
	for i := range a.Entries {
		x, y := *a.Entries[i], *b.Entries[i]
		if !x.AppendedAt.Equal(y.AppendedAt) {
			return false
		}
		x.AppendedAt, y.AppendedAt = time.Time{}, time.Time{}
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	a2, b2 := *a, *b
	a2.Entries, b2.Entries = nil, nil
	return reflect.DeepEqual(a2, b2)
}

func TestAppendLayout_RequestsRoundTrip(t *testing.T) {
	for name, req := range sampleAppends() {
		b, err := encodeAppendRequest([]byte("junk before"), req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := decodeAppendRequest(b[len("junk before"):])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !equalAppend(got, req) {
			t.Errorf("%s: got %+v, want %+v", name, got, req)
		}
	}
	if _, err := encodeAppendRequest(nil, &raft.AppendEntriesRequest{Entries: []*raft.Log{nil}}); err == nil {
		t.Error("a nil entry was encoded")
	}
	many := &raft.AppendEntriesRequest{}
	for i := range maxWireEntries + 1 {
		many.Entries = append(many.Entries, &raft.Log{Index: uint64(i + 1)})
	}
	if _, err := encodeAppendRequest(nil, many); err == nil {
		t.Errorf("%d entries were encoded", len(many.Entries))
	}
	many.Entries = many.Entries[:maxWireEntries]
	b, err := encodeAppendRequest(nil, many)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := decodeAppendRequest(b); err != nil || len(got.Entries) != maxWireEntries {
		t.Errorf("%d entries: err %v", maxWireEntries, err)
	}
}

func TestAppendLayout_ResponsesRoundTrip(t *testing.T) {
	for _, want := range []raft.AppendEntriesResponse{
		{},
		{RPCHeader: header("n2"), Term: 4, LastLog: 1 << 62, Success: true},
		{Term: 5, NoRetryBackoff: true},
		{RPCHeader: raft.RPCHeader{ID: []byte("n3")}, Success: true, NoRetryBackoff: true},
	} {
		b := encodeAppendResponse(nil, &want)
		var got raft.AppendEntriesResponse
		if err := decodeAppendResponse(b, &got); err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got %+v, want %+v", got, want)
		}
		// The response's bytes are copies: the reader reuses its buffer.
		if len(got.ID) > 0 {
			clear(b)
			if string(got.ID) != string(want.ID) {
				t.Errorf("the decoded id changed with the buffer: %q", got.ID)
			}
		}
	}
}

// A body cut anywhere, with a byte too many, or of another layout is an
// error, never a panic or a partial value.
func TestAppendLayout_MalformedBodiesAreErrors(t *testing.T) {
	req := sampleAppends()["entries"]
	full, err := encodeAppendRequest(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	resp := encodeAppendResponse(nil, &raft.AppendEntriesResponse{RPCHeader: header("n2"), Term: 4, Success: true})
	for n := range len(full) {
		if _, err := decodeAppendRequest(slices.Clone(full[:n])); !errors.Is(err, errAppendLayout) {
			t.Fatalf("request cut at %d of %d: err %v", n, len(full), err)
		}
	}
	for n := range len(resp) {
		if err := decodeAppendResponse(resp[:n], &raft.AppendEntriesResponse{}); !errors.Is(err, errAppendLayout) {
			t.Fatalf("response cut at %d of %d: err %v", n, len(resp), err)
		}
	}
	for name, body := range map[string][]byte{
		"a byte too many":  append(slices.Clone(full), 0),
		"layout 2":         append([]byte{2}, full[1:]...),
		"huge entry count": append(encodeTail(t), 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 1, 1, 1, 1, 1, 1),
		// 1,025 entries of 7 bytes would fit the body, not raft's bound.
		"more entries than raft sends": append(append(encodeTail(t), 0x81, 0x08), bytes.Repeat([]byte{1, 1, 0, 0, 0, 0, 0}, 1025)...),
		"bad time flag":                badTimeFlag(t),
	} {
		if _, err := decodeAppendRequest(body); !errors.Is(err, errAppendLayout) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	for name, body := range map[string][]byte{
		"a byte too many": append(slices.Clone(resp), 0),
		"unknown flag":    append(slices.Clone(resp[:len(resp)-1]), 4),
		"layout 0":        append([]byte{0}, resp[1:]...),
	} {
		if err := decodeAppendResponse(body, &raft.AppendEntriesResponse{}); !errors.Is(err, errAppendLayout) {
			t.Errorf("response %s: err %v", name, err)
		}
	}
}

// encodeTail is a request without entries less its count: what precedes
// an entry count on the wire.
func encodeTail(t *testing.T) []byte {
	t.Helper()
	b, err := encodeAppendRequest(nil, &raft.AppendEntriesRequest{Term: 2})
	if err != nil {
		t.Fatal(err)
	}
	return b[:len(b)-1] // the count 0 is one byte
}

func badTimeFlag(t *testing.T) []byte {
	t.Helper()
	b, err := encodeAppendRequest(nil, &raft.AppendEntriesRequest{Entries: []*raft.Log{{Index: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] = 2 // the entry's last byte is its time flag, 0 here
	return b
}

func FuzzDecodeAppendRequest(f *testing.F) {
	for _, req := range sampleAppends() {
		b, err := encodeAppendRequest(nil, req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeAppendRequest(slices.Clone(body))
		if err != nil {
			return
		}
		again, err := encodeAppendRequest(nil, req)
		if err != nil {
			t.Fatal(err)
		}
		back, err := decodeAppendRequest(again)
		if err != nil || !equalAppend(back, req) {
			t.Fatalf("a decoded request does not survive its own round trip: %v", err)
		}
	})
}
