package link

import (
	"bytes"
	"errors"
	"github.com/dialkv/dialkv/replication/frame"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// frames writes msgs through a frameWriter, one writeVec each, and
// returns the wire bytes and where each frame starts.
func frames(t *testing.T, msgs [][]byte) (wire []byte, starts []int) {
	t.Helper()
	var out bytes.Buffer
	w := frame.NewWriter(&out)
	for _, m := range msgs {
		starts = append(starts, out.Len())
		// Two parts per frame: the vector must be checked as one payload.
		if _, err := w.WriteVec([][]byte{m[:len(m)/2], m[len(m)/2:]}); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes(), starts
}

func TestFrameReader_DeliversOnlyCheckedFrames(t *testing.T) {
	msgs := [][]byte{
		bytes.Repeat([]byte("a"), 100),
		bytes.Repeat([]byte("b"), 5000),
		bytes.Repeat([]byte("c"), 70),
		bytes.Repeat([]byte("d"), 300),
	}
	var sent []byte
	for _, m := range msgs {
		sent = append(sent, m...)
	}
	wire, starts := frames(t, msgs)
	cut := func(b []byte, from, to int) []byte { return append(append([]byte{}, b[:from]...), b[to:]...) }
	flip := func(at int) []byte {
		b := bytes.Clone(wire)
		b[at] ^= 1
		return b
	}
	tests := []struct {
		name    string
		wire    []byte
		wantErr error // nil: the whole stream, then io.EOF
	}{
		{"whole stream", wire, nil},
		{"bit flipped in a payload", flip(starts[1] + frame.HeaderLen + 10), frame.ErrCorrupt},
		{"bit flipped in a sequence number", flip(starts[2] + 5), frame.ErrCorrupt},
		{"bit flipped in a checksum", flip(starts[3] + 9), frame.ErrCorrupt},
		{"frame lost", cut(wire, starts[1], starts[2]), frame.ErrCorrupt},
		{"frame repeated", append(bytes.Clone(wire[:starts[2]]), wire[starts[1]:]...), frame.ErrCorrupt},
		{"bytes lost across frames", cut(wire, starts[0]+frame.HeaderLen+40, starts[2]+frame.HeaderLen+40), frame.ErrCorrupt},
		{"absurd length", flip(starts[1]), frame.ErrCorrupt},
		{"cut in the middle of a frame", wire[:starts[2]+frame.HeaderLen+3], io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := frame.NewReader(bytes.NewReader(tt.wire))
			got, err := io.ReadAll(r)
			if tt.wantErr == nil {
				if err != nil || !bytes.Equal(got, sent) {
					t.Fatalf("got %d bytes, err %v; want all %d", len(got), err, len(sent))
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var want []byte
			prefix := bytes.Equal(got, want)
			for _, m := range msgs {
				want = append(want, m...)
				prefix = prefix || bytes.Equal(got, want)
			}
			if !prefix {
				t.Fatalf("delivered %d bytes that are not whole frames from the start", len(got))
			}
			if _, again := r.Read(make([]byte, 1)); !errors.Is(again, tt.wantErr) {
				t.Fatalf("a broken stream must stay broken, got %v", again)
			}
		})
	}
}

func TestFrameWriter_SplitsLargeBatches(t *testing.T) {
	big := make([]byte, 2*frame.MaxPayload+123)
	for i := range big {
		big[i] = byte(i * 7)
	}
	var out bytes.Buffer
	w := frame.NewWriter(&out)
	parts := [][]byte{big[:10], big[10 : frame.MaxPayload+5], big[frame.MaxPayload+5:]}
	n, err := w.WriteVec(parts)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(big) + 3*frame.HeaderLen); n != want || int64(out.Len()) != want {
		t.Fatalf("wrote %d (reported %d) bytes, want %d: three frames", out.Len(), n, want)
	}
	got, err := io.ReadAll(frame.NewReader(&out))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("round trip of %d bytes: got %d, err %v", len(big), len(got), err)
	}
}

// What a request decodes into must not change when the next message is
// read: msgpack copies out of the reader's reused buffer; the version 3
// layout aliases the body, which is why an acceptor reads each message
// into a fresh one.
func TestMsgReader_DecodedRequestsDoNotAliasTheBuffer(t *testing.T) {
	for _, tc := range []struct {
		version uint16
		fresh   bool
	}{{versionConfirm, false}, {versionAppendLayout, true}} {
		mp := newMsgPool(newHandle())
		var wire bytes.Buffer
		fw := frame.NewWriter(&wire)
		for i := range 2 {
			m, err := mp.newRequest(rpcAppendEntries, uint64(i), 1, &raft.AppendEntriesRequest{Entries: []*raft.Log{{Index: 1, Data: bytes.Repeat([]byte{byte('a' + i)}, 64)}}}, tc.version)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fw.WriteVec([][]byte{m.head[:m.headN], m.body}); err != nil {
				t.Fatal(err)
			}
		}
		mr := msgReader{r: frame.NewReader(&wire), fresh: tc.fresh}
		var got []*raft.AppendEntriesRequest
		dec := codec.NewDecoderBytes(nil, newHandle())
		for range 2 {
			typ, body, err := mr.next()
			if err != nil || typ != msgRequest {
				t.Fatalf("version %d: type %d, err %v", tc.version, typ, err)
			}
			req, err := parseRequest(body)
			if err != nil {
				t.Fatal(err)
			}
			cmd, err := decodeCommand(dec, req.rpc, req.body, tc.version)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, cmd.(*raft.AppendEntriesRequest))
		}
		if d := got[0].Entries[0].Data; !bytes.Equal(d, bytes.Repeat([]byte{'a'}, 64)) {
			t.Fatalf("version %d: the first request's entry changed to %q when the second was read", tc.version, d)
		}
	}
}

// Which body an append and its answer carry is the connection's version's:
// msgpack (a map) before version 3, the link's layout from it.
func TestMsgPool_AppendBodiesFollowTheVersion(t *testing.T) {
	mp := newMsgPool(newHandle())
	for v, layout := range map[uint16]bool{1: false, 2: false, 3: true} {
		m, err := mp.newRequest(rpcAppendEntries, 1, 1, &raft.AppendEntriesRequest{Term: 3, Entries: []*raft.Log{{Index: 1, Data: []byte("x")}}}, v)
		if err != nil {
			t.Fatal(err)
		}
		r := mp.newResponse(1, raft.RPCResponse{Response: &raft.AppendEntriesResponse{Term: 3, Success: true}}, v)
		if got := m.body[0] == appendLayout1; got != layout {
			t.Errorf("version %d: request body starts %#x", v, m.body[0])
		}
		if got := r.body[0] == appendLayout1; got != layout {
			t.Errorf("version %d: response body starts %#x", v, r.body[0])
		}
	}
}

// rawHello dials n's link and sends a hello by hand.
func rawHello(t *testing.T, n *testNode, h hello) (helloAck, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", n.addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte{'L'}); err != nil {
		t.Fatal(err)
	}
	if _, err := frame.NewWriter(c).WriteVec([][]byte{h.encode()}); err != nil {
		t.Fatal(err)
	}
	mr := msgReader{r: frame.NewReader(c)}
	typ, body, err := mr.next()
	if err != nil {
		return helloAck{}, err
	}
	return decodeHelloAck(typ, body)
}

func TestHandshake_ChoosesTheHighestCommonVersionOrRefuses(t *testing.T) {
	n := newTestNode(t, nodeOpts{})
	defer n.close()
	tests := []struct {
		name        string
		h           hello
		wantVersion uint16
	}{
		{"this release", hello{min: 1, max: 3, mode: modeRPC}, 3},
		{"the release before the append layout", hello{min: 1, max: 2, mode: modeRPC}, 2},
		{"the release before leadership questions", hello{min: 1, max: 1, mode: modeRPC}, 1},
		{"a later release that still speaks 3", hello{min: 1, max: 5, mode: modeRPC}, 3},
		{"a release that dropped 1 to 3", hello{min: 4, max: 5, mode: modeRPC}, 0},
		{"an unknown connection mode", hello{min: 1, max: 1, mode: 9}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack, err := rawHello(t, n, tt.h)
			if err != nil {
				t.Fatal(err)
			}
			if ack.version != tt.wantVersion {
				t.Fatalf("version %d (%q), want %d", ack.version, ack.reason, tt.wantVersion)
			}
			if ack.version == 0 && ack.reason == "" {
				t.Fatal("a refusal must say why")
			}
		})
	}
}

// A peer that answers the hello with "no common version" is reached
// through per-range streams, like a node from before the link.
func TestHandshake_RefusalFallsBackToPerRangeStreams(t *testing.T) {
	a := newTestNode(t, nodeOpts{})
	defer a.close()
	ln := listenLow(t)
	served := make(chan struct{})
	go func() {
		defer close(served)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var kind [1]byte
		io.ReadFull(c, kind[:])
		mr := msgReader{r: frame.NewReader(c)}
		mr.next()
		frame.NewWriter(c).WriteVec([][]byte{helloAck{reason: "speaks 7 to 9"}.encode()})
	}()
	defer func() { ln.Close(); <-served }()
	ta, _ := a.link.Open(1, nil)
	defer ta.Close()
	err := ta.RequestVote("x", raft.ServerAddress(ln.Addr().String()), &raft.RequestVoteRequest{Term: 1}, &raft.RequestVoteResponse{})
	if !errors.Is(err, ErrLegacyPeer) {
		t.Fatalf("err = %v, want ErrLegacyPeer", err)
	}
}
