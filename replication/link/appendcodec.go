package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Link version 3 lays out AppendEntries requests and their responses
// itself instead of through msgpack. They are almost every message a busy
// node sends, and go-msgpack decodes a struct by matching each field's
// name through reflection: decoding appends took 7% of a follower's CPU
// under 64 writers over 16 ranges (docs/performance.md, session 20).
// Every other request and response keeps msgpack.
//
//	request   layout u8 (1) | header | term | leader bytes | prev log index |
//	          prev log term | leader commit | count | count × entry
//	entry     index | term | type u8 | data bytes | extensions bytes | appended at
//	response  layout u8 (1) | header | term | last log | flags u8 (1 success, 2 no retry backoff)
//	header    protocol version (varint) | id bytes | addr bytes
//	bytes     length | the bytes
//	appended  0 (the zero time) or 1 | Unix nanoseconds (varint)
//
// Numbers are uvarints unless marked. The layout byte lets a later version
// change this without a new link version; a decoder refuses one it does
// not know, and any byte left over, rather than guess.
const (
	appendLayout1 byte = 1

	appendFlagSuccess        byte = 1
	appendFlagNoRetryBackoff byte = 2

	// minEntryBytes is the least an entry takes on the wire, and
	// maxWireEntries the most entries an append may carry (hashicorp/raft
	// refuses a MaxAppendEntries above 1024): together they bound what a
	// count can ask the decoder to allocate (about 100 bytes an entry).
	minEntryBytes  = 6
	maxWireEntries = 1024
)

// errAppendLayout is a body that is not a well-formed layout 1.
var errAppendLayout = errors.New("link: malformed append body")

func appendRPCHeader(b []byte, h raft.RPCHeader) []byte {
	b = binary.AppendVarint(b, int64(h.ProtocolVersion))
	b = appendBytes(b, h.ID)
	return appendBytes(b, h.Addr)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// encodeAppendRequest appends r's layout to b.
func encodeAppendRequest(b []byte, r *raft.AppendEntriesRequest) ([]byte, error) {
	b = append(b, appendLayout1)
	b = appendRPCHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	//lint:ignore SA1019 raft still sends it, and reads it from old senders
	b = appendBytes(b, r.Leader)
	b = binary.AppendUvarint(b, r.PrevLogEntry)
	b = binary.AppendUvarint(b, r.PrevLogTerm)
	b = binary.AppendUvarint(b, r.LeaderCommitIndex)
	if len(r.Entries) > maxWireEntries {
		return nil, fmt.Errorf("link: encode append: %d entries, at most %d", len(r.Entries), maxWireEntries)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Entries)))
	for i, e := range r.Entries {
		if e == nil {
			return nil, fmt.Errorf("link: encode append: entry %d is nil", i)
		}
		b = binary.AppendUvarint(b, e.Index)
		b = binary.AppendUvarint(b, e.Term)
		b = append(b, byte(e.Type))
		b = appendBytes(b, e.Data)
		b = appendBytes(b, e.Extensions)
		if e.AppendedAt.IsZero() {
			b = append(b, 0)
		} else {
			b = append(b, 1)
			b = binary.AppendVarint(b, e.AppendedAt.UnixNano())
		}
	}
	return b, nil
}

// encodeAppendResponse appends r's layout to b.
func encodeAppendResponse(b []byte, r *raft.AppendEntriesResponse) []byte {
	b = append(b, appendLayout1)
	b = appendRPCHeader(b, r.RPCHeader)
	b = binary.AppendUvarint(b, r.Term)
	b = binary.AppendUvarint(b, r.LastLog)
	var flags byte
	if r.Success {
		flags |= appendFlagSuccess
	}
	if r.NoRetryBackoff {
		flags |= appendFlagNoRetryBackoff
	}
	return append(b, flags)
}

// appendReader reads a layout; the first error sticks and every read
// after it returns zero values.
type appendReader struct {
	b []byte
	// own: the byte slices read alias b (the caller owns b and never
	// reuses it); else they are copies.
	own bool
	err error
}

func (r *appendReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errAppendLayout, what)
	}
}

func (r *appendReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *appendReader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *appendReader) byte1(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail(what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// bytes reads a length and that many bytes; empty reads as nil, as
// msgpack decodes an absent value.
func (r *appendReader) bytes(what string) []byte {
	n := r.uvarint(what)
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail(what + " length")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	if n == 0 {
		return nil
	}
	if !r.own {
		v = append([]byte(nil), v...)
	}
	return v
}

func (r *appendReader) header() raft.RPCHeader {
	var h raft.RPCHeader
	h.ProtocolVersion = raft.ProtocolVersion(r.varint("protocol version"))
	h.ID = r.bytes("id")
	h.Addr = r.bytes("addr")
	return h
}

func (r *appendReader) layout() {
	if l := r.byte1("layout"); r.err == nil && l != appendLayout1 {
		r.err = fmt.Errorf("%w: layout %d, this node knows %d", errAppendLayout, l, appendLayout1)
	}
}

func (r *appendReader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d bytes after the end", len(r.b)))
	}
	return r.err
}

// decodeAppendRequest decodes a request's layout. The entries' byte
// slices alias body, which the caller must own and never reuse.
func decodeAppendRequest(body []byte) (*raft.AppendEntriesRequest, error) {
	r := appendReader{b: body, own: true}
	r.layout()
	req := &raft.AppendEntriesRequest{RPCHeader: r.header()}
	req.Term = r.uvarint("term")
	//lint:ignore SA1019 raft still sends it, and reads it from old senders
	req.Leader = r.bytes("leader")
	req.PrevLogEntry = r.uvarint("prev log index")
	req.PrevLogTerm = r.uvarint("prev log term")
	req.LeaderCommitIndex = r.uvarint("leader commit")
	n := r.uvarint("entry count")
	if r.err == nil && (n > uint64(len(r.b)/minEntryBytes) || n > maxWireEntries) {
		r.fail(fmt.Sprintf("%d entries in %d bytes", n, len(r.b)))
	}
	if r.err == nil && n > 0 {
		// Two allocations for the entries, not one per entry.
		logs := make([]raft.Log, n)
		req.Entries = make([]*raft.Log, n)
		for i := range logs {
			e := &logs[i]
			e.Index = r.uvarint("entry index")
			e.Term = r.uvarint("entry term")
			e.Type = raft.LogType(r.byte1("entry type"))
			e.Data = r.bytes("entry data")
			e.Extensions = r.bytes("entry extensions")
			switch r.byte1("appended at") {
			case 0:
			case 1:
				e.AppendedAt = time.Unix(0, r.varint("appended at"))
			default:
				r.fail("appended at flag")
			}
			req.Entries[i] = e
		}
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return req, nil
}

// decodeAppendResponse decodes a response's layout into resp; body may be
// reused by the caller afterwards.
func decodeAppendResponse(body []byte, resp *raft.AppendEntriesResponse) error {
	r := appendReader{b: body}
	r.layout()
	var out raft.AppendEntriesResponse
	out.RPCHeader = r.header()
	out.Term = r.uvarint("term")
	out.LastLog = r.uvarint("last log")
	flags := r.byte1("flags")
	if flags&^(appendFlagSuccess|appendFlagNoRetryBackoff) != 0 {
		r.fail(fmt.Sprintf("flags %#x", flags))
	}
	out.Success = flags&appendFlagSuccess != 0
	out.NoRetryBackoff = flags&appendFlagNoRetryBackoff != 0
	if err := r.end(); err != nil {
		return err
	}
	*resp = out
	return nil
}
