package replication

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/dialkv/dialkv/replication/frame"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// TestSplicedStream_DecodesAsDifferentEntry exists because of the
// diverged-replica-after-pause bug (#2): after a heal, a replica's entry at
// an index matched by (index, term) carried a different command than the
// leader's. hashicorp/raft's NetworkTransport frames nothing and checksums
// nothing: a request is one rpc-type byte followed by a bare msgpack value.
// So a TCP stream that loses bytes in the middle (from inside one message
// through part of a later one, as our old Jepsen proxy could do after a heal)
// can still decode as a valid AppendEntriesRequest, here one whose entry
// (102, term 5) carries entry 105's command. Raft's log-matching property is
// then broken silently: same index and term, different data.
//
// The splice has to respect how go-msgpack/v2 lays structs out: fields are
// encoded sorted by name (codec/helper.go, sfiSortedByEncName), so a Log is
// {AppendedAt, Data, Extensions, Index, Term, Type} and an
// AppendEntriesRequest is {Addr, Entries, ID, Leader, LeaderCommitIndex,
// PrevLogEntry, PrevLogTerm, ProtocolVersion, Term}. Data precedes Index, so
// cutting both entries at their Term key would keep entry 102's own Data.
// Instead the gap runs from just after entry 102's Term value (its last pair
// but one) to entry 105's Data key. The decoder reads 6 pairs for entry 102
// because of its map header: five from AE1, then entry 105's Data, which
// overwrites the Data decoded earlier; Type is missing and so decodes as 0,
// LogCommand. The rest of entry 105 (Extensions, Index, Term, Type) and AE2's
// ID, Leader and LeaderCommitIndex fill AE1's top-level map. Unknown keys are
// skipped, and Term sets the request's Term. PrevLogEntry/PrevLogTerm are
// never reached and decode as 0, which makes raft skip the previous-log
// check. The four pairs left over make the next read fail with an unknown rpc
// type, but only after the corrupt request has been acknowledged.
func TestSplicedStream_DecodesAsDifferentEntry(t *testing.T) {
	trans, err := raft.NewTCPTransport(freeLocalAddr(t), nil, 2, time.Second, io.Discard)
	if err != nil {
		t.Fatalf("NewTCPTransport: %v", err)
	}
	defer trans.Close()
	sc := newSpliceCase(t)
	header, log101, log102, log105 := sc.header, sc.log101, sc.log102, sc.log105
	enc1, enc2, p1, p2 := sc.enc1, sc.enc2, sc.p1, sc.p2

	stream := append(append([]byte{}, enc1[:p1]...), enc2[p2:]...)

	conn, err := net.Dial("tcp", string(trans.LocalAddr()))
	if err != nil {
		t.Fatalf("dial transport: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write(stream); err != nil {
		t.Fatalf("write spliced stream: %v", err)
	}

	var rpc raft.RPC
	select {
	case rpc = <-trans.Consumer():
	case <-time.After(5 * time.Second):
		t.Fatal("transport delivered no RPC for the spliced stream")
	}
	// Answer before checking anything, so that the transport's connection
	// goroutine is not left waiting.
	rpc.Respond(&raft.AppendEntriesResponse{RPCHeader: header, Term: 5, LastLog: 102, Success: true}, nil)

	req, ok := rpc.Command.(*raft.AppendEntriesRequest)
	if !ok {
		t.Fatalf("command is %T, want *raft.AppendEntriesRequest", rpc.Command)
	}
	if req.Term != 5 || req.PrevLogEntry != 0 || req.PrevLogTerm != 0 || req.LeaderCommitIndex != 102 {
		t.Fatalf("request = term %d prev (%d, %d) commit %d, want term 5 prev (0, 0) commit 102",
			req.Term, req.PrevLogEntry, req.PrevLogTerm, req.LeaderCommitIndex)
	}
	if len(req.Entries) != 2 {
		t.Fatalf("got %d entries, want 2", len(req.Entries))
	}
	if e := req.Entries[0]; e.Index != 101 || e.Term != 5 || e.Type != raft.LogCommand || !bytes.Equal(e.Data, log101.Data) {
		t.Fatalf("entry 0 = (%d, %d, %v, %q), want log101 intact", e.Index, e.Term, e.Type, e.Data)
	}
	got := req.Entries[1]
	if got.Index != 102 || got.Term != 5 || got.Type != raft.LogCommand {
		t.Fatalf("entry 1 = index %d term %d type %v, want index 102 term 5 LogCommand",
			got.Index, got.Term, got.Type)
	}
	if bytes.Equal(got.Data, log102.Data) {
		t.Fatalf("entry (102, 5) carries its own data %q; the splice had no effect", got.Data)
	}
	if !bytes.Equal(got.Data, log105.Data) {
		t.Fatalf("entry (102, 5) data = %q, want log105's %q", got.Data, log105.Data)
	}
	t.Logf("decoded entry (index %d, term %d) with data %q; the leader's entry there is %q",
		got.Index, got.Term, got.Data, log102.Data)

	// The transport answers the request on the same connection, so the
	// sender sees success; only afterwards do the leftover bytes make it
	// drop the connection.
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatalf("set read deadline: %v", err)
	}
	br := bufio.NewReader(conn)
	dec := codec.NewDecoder(br, &codec.MsgpackHandle{})
	var rpcErr string
	var resp raft.AppendEntriesResponse
	if err := dec.Decode(&rpcErr); err != nil {
		t.Fatalf("decode response error string: %v", err)
	}
	if err := dec.Decode(&resp); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	if rpcErr != "" || !resp.Success || resp.LastLog != 102 {
		t.Fatalf("response = (%q, %+v), want success with LastLog 102", rpcErr, resp)
	}
	var ne net.Error
	if _, err := br.ReadByte(); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("after the response: read error %v, want the transport to close the connection", err)
	}
}

// spliceCase is two AppendEntries requests as the leader sends them and
// where a gap must run for the stream to decode as a different entry.
type spliceCase struct {
	header                 raft.RPCHeader
	log101, log102, log105 *raft.Log
	enc1, enc2             []byte // wire encodings
	p1, p2                 int    // the gap runs from enc1[p1] to enc2[p2]
}

func newSpliceCase(t *testing.T) spliceCase {
	t.Helper()
	entry := func(index uint64) *raft.Log {
		return &raft.Log{
			Index: index,
			Term:  5,
			Type:  raft.LogCommand,
			// Equal lengths, distinct contents.
			Data: []byte(fmt.Sprintf("put key-%d = value-%d-padding", index, index)),
		}
	}
	header := raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax,
		ID:              []byte("leader-1"),
		Addr:            []byte("127.0.0.1:7001"),
	}
	log101, log102 := entry(101), entry(102)
	log103, log104, log105 := entry(103), entry(104), entry(105)
	if len(log102.Data) != len(log105.Data) || bytes.Equal(log102.Data, log105.Data) {
		t.Fatalf("payloads must have equal length and differ: %q vs %q", log102.Data, log105.Data)
	}
	ae1 := &raft.AppendEntriesRequest{
		RPCHeader:         header,
		Term:              5,
		PrevLogEntry:      100,
		PrevLogTerm:       5,
		Entries:           []*raft.Log{log101, log102},
		LeaderCommitIndex: 100,
	}
	ae2 := &raft.AppendEntriesRequest{
		RPCHeader:         header,
		Term:              5,
		PrevLogEntry:      102,
		PrevLogTerm:       5,
		Entries:           []*raft.Log{log103, log104, log105},
		LeaderCommitIndex: 102,
	}

	enc1 := spliceWireAppendEntries(t, ae1)
	enc2 := spliceWireAppendEntries(t, ae2)
	p1 := spliceKeyOffset(t, enc1, log102, "Type") // just after entry 102's Term value
	p2 := spliceKeyOffset(t, enc2, log105, "Data") // entry 105's Data key
	t.Logf("len(enc(AE1))=%d p1=%d; len(enc(AE2))=%d p2=%d; %d bytes lost",
		len(enc1), p1, len(enc2), p2, len(enc1)-p1+p2)

	return spliceCase{header: header, log101: log101, log102: log102, log105: log105, enc1: enc1, enc2: enc2, p1: p1, p2: p2}
}

// spliceWireAppendEntries encodes req exactly as NetworkTransport's sendRPC
// does on a transport from NewTCPTransport: the rpcAppendEntries type byte
// (0, the first iota in hashicorp/raft v1.8.0 net_transport.go), then the
// msgpack encoding with go-msgpack/v2's MsgpackHandle and TimeNotBuiltin =
// !MsgpackUseNewTimeFormat = true.
func spliceWireAppendEntries(t *testing.T, req *raft.AppendEntriesRequest) []byte {
	t.Helper()
	const rpcAppendEntries = 0
	var buf bytes.Buffer
	buf.WriteByte(rpcAppendEntries)
	if err := codec.NewEncoder(&buf, spliceMsgpackHandle()).Encode(req); err != nil {
		t.Fatalf("encode AppendEntriesRequest: %v", err)
	}
	return buf.Bytes()
}

func spliceMsgpackHandle() *codec.MsgpackHandle {
	mp := &codec.MsgpackHandle{}
	mp.TimeNotBuiltin = true
	return mp
}

// spliceKeyOffset returns the offset in msg of e's map key named key. It
// finds e's own encoding in msg, and checks the field order the splice relies
// on: Data, then Index, then Term, then Type.
func spliceKeyOffset(t *testing.T, msg []byte, e *raft.Log, key string) int {
	t.Helper()
	var buf bytes.Buffer
	if err := codec.NewEncoder(&buf, spliceMsgpackHandle()).Encode(e); err != nil {
		t.Fatalf("encode log %d: %v", e.Index, err)
	}
	own := buf.Bytes()
	at := bytes.Index(msg, own)
	if at < 0 || bytes.Contains(msg[at+1:], own) {
		t.Fatalf("entry %d's encoding is not found exactly once in the message", e.Index)
	}
	// fixstr keys: 0xa0|len, then the name.
	offset := func(name string) int {
		k := append([]byte{0xa0 | byte(len(name))}, name...)
		if bytes.Count(own, k) != 1 {
			t.Fatalf("entry %d: key %q not found exactly once in % x", e.Index, name, own)
		}
		return bytes.Index(own, k)
	}
	if !(offset("Data") < offset("Index") && offset("Index") < offset("Term") && offset("Term") < offset("Type")) {
		t.Fatalf("entry %d: fields not in the order Data, Index, Term, Type: % x", e.Index, own)
	}
	return at + offset(key)
}

// The same gap in a framed stream (what the mux dials and accepts) is
// refused: the transport gets no request at all, and the connection is
// closed, so the leader redials and resends from what the follower has.
func TestSplicedStream_FramedIsRefused(t *testing.T) {
	m, err := NewMux(freeLocalAddr(t), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const rangeID = 9
	trans := raft.NewNetworkTransport(m.RangeLayer(rangeID), 2, time.Second, io.Discard)
	defer trans.Close()
	sc := newSpliceCase(t)

	// Frame the two requests as a framed connection writes them, then cut
	// the same bytes out of the middle of the stream.
	tape := &tapeConn{}
	w := newFramedConn(tape)
	w.Write(sc.enc1)
	second := tape.out.Len()
	w.Write(sc.enc2)
	wire := tape.out.Bytes()
	from, to := frame.HeaderLen+sc.p1, second+frame.HeaderLen+sc.p2
	spliced := append(append([]byte{}, wire[:from]...), wire[to:]...)

	conn, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hdr := binary.BigEndian.AppendUint64([]byte{connFramedRaft}, rangeID)
	if _, err := conn.Write(append(hdr, spliced...)); err != nil {
		t.Fatal(err)
	}
	// A delivered request would hold the connection open, waiting for
	// its answer; the framed reader closes it instead.
	if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if n, err := conn.Read(make([]byte, 1)); err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read %d bytes, err %v: want the connection closed", n, err)
	}
	select {
	case rpc := <-trans.Consumer():
		rpc.Respond(nil, errors.New("test: unexpected"))
		t.Fatalf("the transport delivered %T from a spliced framed stream", rpc.Command)
	default:
	}
}
