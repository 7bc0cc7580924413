package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// The link protocol, versions 1 to 3. Every connection starts (after the mux's
// kind byte) with a hello from the dialler and an answer from the
// acceptor, each one message in the first checked frame of its direction.
// The hello names the versions the dialler speaks; the answer names the
// one chosen, or 0 and a reason when there is none in common. A later
// version may change anything after that exchange, and must keep the first
// frame and these two messages as they are, so that a node of this
// release and one of the next can still find out what they share.
//
// Messages, in the byte stream the frames carry:
//
//	length u32 (of what follows) | type u8 | body
//
//	hello      magic "DKVL" | min version u16 | max version u16 | mode u8 | addr length u16 | addr
//	hello ack  magic "DKVL" | version u16 | reason length u16 | reason
//	request    rpc u8 (| 0x80 for a heartbeat) | request id uvarint | range id uvarint | msgpack(request)
//	response   request id uvarint | status u8 | statusOK: msgpack(response), else: error text
//	ping/pong  nonce u64
//
// Version 2 adds one request, rpc rpcConfirmLeader with range id 0, and
// its answer (confirm.go):
//
//	question   count uvarint | count × (range id uvarint | term uvarint)
//	answer     statusOK: count × u8, 1 where the receiver's replica of the
//	           range is in that term and follows the sender, else 0
//
// A node sends it only on a connection whose peer chose version 2 or later.
//
// Version 3 changes only the bodies of AppendEntries requests and of
// their statusOK responses: the link's own layout (appendcodec.go)
// instead of msgpack. Everything else is as in version 2.
// (uvarint: encoding/binary's. Most messages are heartbeats of a hundred
// bytes or so, and fixed 8-byte ids would add a tenth to each.) The
// heartbeat bit is the sender's verdict by NetworkTransport's test: the
// receiver queues the request by it before decoding it, on the range's
// goroutine rather than the connection's reader; whether the heartbeat
// fast path is taken is decided again on the decoded request.
//
// The rpc numbers and the msgpack encoding are hashicorp/raft's
// NetworkTransport's, so the request and response values are the same
// bytes as on a per-range stream. A response that is not statusOK carries
// no response value at all: the sender never sees a made-up one.
const (
	versionMin uint16 = 1
	versionMax uint16 = 3
	// versionConfirm is the first version with rpcConfirmLeader.
	versionConfirm uint16 = 2
	// versionAppendLayout is the first version whose AppendEntries
	// requests and responses use the link's own layout (appendcodec.go).
	versionAppendLayout uint16 = 3

	magic = "DKVL"

	modeRPC      byte = 0 // requests and responses of every range, multiplexed
	modeSnapshot byte = 1 // one InstallSnapshot: request, data, response

	msgHello    byte = 1
	msgHelloAck byte = 2
	msgRequest  byte = 3
	msgResponse byte = 4
	msgPing     byte = 5
	msgPong     byte = 6

	// The values of hashicorp/raft's net_transport.go.
	rpcAppendEntries   byte = 0
	rpcRequestVote     byte = 1
	rpcInstallSnapshot byte = 2
	rpcTimeoutNow      byte = 3
	rpcRequestPreVote  byte = 4
	rpcHeartbeatBit    byte = 0x80
	// rpcConfirmLeader is the link's own request (version 2), not one of
	// Raft's: it carries many ranges' questions at once.
	rpcConfirmLeader byte = 0x10

	statusOK           byte = 0
	statusError        byte = 1 // the receiving Raft's error, as text
	statusRangeNotOpen byte = 2 // the receiver hosts no such range (now)
	statusBusy         byte = 3 // the range's queue on the receiver is full

	// maxMessage bounds one message, so that a length from a buggy peer
	// cannot make the reader allocate without limit. Raft's appends are
	// bounded by MaxAppendEntries times the largest command.
	maxMessage = 256 << 20

	lenPrefix = 4
	// maxHead is the longest message head: a request's.
	maxHead = lenPrefix + 1 + 1 + 2*binary.MaxVarintLen64
)

// errProtocol marks a message that breaks the protocol; the connection
// that carried it is closed.
var errProtocol = errors.New("link: protocol error")

// newHandle returns the msgpack settings NetworkTransport uses by default
// (time.Time in the old format that every go-msgpack decoder reads).
func newHandle() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{}
	h.TimeNotBuiltin = true
	return h
}

// outMsg is one encoded message: a fixed header and a body. Both go to
// the wire as they are (a vectored write), so the body is never copied.
type outMsg struct {
	head  [maxHead]byte
	headN int
	body  []byte
	enc   *codec.Encoder
	// lazy: nothing waits on this message at once (an empty append that
	// only carries the commit index, or the answer to one), so the writer
	// may hold it briefly to share a write with others (Config.CoalesceDelay).
	lazy bool
	// since, for a heartbeat sent with AppendEntriesMayWait, is the
	// link's hurry generation its sender read before deciding that no
	// read waits for it: once a hurry has come since, it is not lazy
	// (lazyNow). 0 for every other message.
	since uint64
}

// A pool, not a global: each Link has its own (see Link.msgs).
type msgPool struct {
	p sync.Pool
	h *codec.MsgpackHandle
}

func newMsgPool(h *codec.MsgpackHandle) *msgPool {
	mp := &msgPool{h: h}
	mp.p.New = func() any { return &outMsg{} }
	return mp
}

func (mp *msgPool) get() *outMsg { return mp.p.Get().(*outMsg) }

// put returns m for reuse unless its body grew large: one big append must
// not keep megabytes alive in the pool.
func (mp *msgPool) put(m *outMsg) {
	if cap(m.body) > 256<<10 {
		m.body = nil
	}
	m.body = m.body[:0]
	m.headN = 0
	m.lazy = false
	m.since = 0
	mp.p.Put(m)
}

func (mp *msgPool) encodeBody(m *outMsg, v any) error {
	if m.enc == nil {
		m.enc = codec.NewEncoderBytes(&m.body, mp.h)
	} else {
		m.enc.ResetBytes(&m.body)
	}
	if err := m.enc.Encode(v); err != nil {
		return fmt.Errorf("link: encode: %w", err)
	}
	return nil
}

func (m *outMsg) size() int { return m.headN + len(m.body) }

func (m *outMsg) setLen() {
	binary.BigEndian.PutUint32(m.head[0:], uint32(m.headN-lenPrefix+len(m.body)))
}

// newRequest encodes a request for a connection of the given link version.
// args must not change until it is written.
func (mp *msgPool) newRequest(rpc byte, id, rangeID uint64, args any, version uint16) (*outMsg, error) {
	if rpc == rpcAppendEntries && isHeartbeat(args) {
		rpc |= rpcHeartbeatBit
	}
	m := mp.get()
	if raw, ok := args.(rawBody); ok {
		m.body = append(m.body[:0], raw...)
		m.putRequestHead(rpc, id, rangeID)
		return m, nil
	}
	var err error
	if ae, ok := args.(*raft.AppendEntriesRequest); ok {
		// Size the buffer once: grown by the encoder, a large append
		// allocates about twice its size on the way.
		n := 256
		for _, e := range ae.Entries {
			n += len(e.Data) + len(e.Extensions) + 64
		}
		if cap(m.body) < n {
			m.body = make([]byte, 0, n)
		}
		if version >= versionAppendLayout {
			m.body, err = encodeAppendRequest(m.body[:0], ae)
		} else {
			err = mp.encodeBody(m, args)
		}
	} else {
		err = mp.encodeBody(m, args)
	}
	if err != nil {
		mp.put(m)
		return nil, err
	}
	m.lazy = isLazy(args)
	m.putRequestHead(rpc, id, rangeID)
	return m, nil
}

func (m *outMsg) putRequestHead(rpc byte, id, rangeID uint64) {
	m.head[4] = msgRequest
	m.head[5] = rpc
	n := 6
	n += binary.PutUvarint(m.head[n:], id)
	n += binary.PutUvarint(m.head[n:], rangeID)
	m.headN = n
	m.setLen()
}

// rawBody is a request or response value the link lays out itself
// (rpcConfirmLeader's), sent and received as it is rather than through
// msgpack.
type rawBody []byte

// newRawResponse is a statusOK response carrying body as it is.
func (mp *msgPool) newRawResponse(id uint64, body []byte) *outMsg {
	m := mp.get()
	m.body = append(m.body[:0], body...)
	m.putResponseHead(id, statusOK)
	return m
}

// newResponse encodes Raft's answer to request id, for a connection of the
// given link version: its response, or its error and nothing else.
func (mp *msgPool) newResponse(id uint64, resp raft.RPCResponse, version uint16) *outMsg {
	if resp.Error != nil {
		return mp.newStatus(id, statusError, resp.Error.Error())
	}
	if resp.Response == nil {
		// Raft always answers with a value; an empty success would read
		// as a zero response, which counts as contact with the follower.
		return mp.newStatus(id, statusError, "link: the receiving Raft answered with nothing")
	}
	m := mp.get()
	if ae, ok := resp.Response.(*raft.AppendEntriesResponse); ok && version >= versionAppendLayout {
		m.body = encodeAppendResponse(m.body[:0], ae)
		m.putResponseHead(id, statusOK)
		return m
	}
	if err := mp.encodeBody(m, resp.Response); err != nil {
		mp.put(m)
		return mp.newStatus(id, statusError, err.Error())
	}
	m.putResponseHead(id, statusOK)
	return m
}

// newStatus is a response without a value: an error of some kind.
func (mp *msgPool) newStatus(id uint64, status byte, text string) *outMsg {
	m := mp.get()
	m.body = append(m.body[:0], text...)
	m.putResponseHead(id, status)
	return m
}

func (m *outMsg) putResponseHead(id uint64, status byte) {
	m.head[4] = msgResponse
	n := 5 + binary.PutUvarint(m.head[5:], id)
	m.head[n] = status
	m.headN = n + 1
	m.setLen()
}

func (mp *msgPool) newPing(typ byte, nonce uint64) *outMsg {
	m := mp.get()
	m.head[4] = typ
	binary.BigEndian.PutUint64(m.head[5:], nonce)
	m.headN = lenPrefix + 1 + 8
	m.setLen()
	return m
}

// hello is the dialler's first message.
type hello struct {
	min, max uint16
	mode     byte
	addr     string
}

func (h hello) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, 0)
	b = append(b, msgHello)
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, h.min)
	b = binary.BigEndian.AppendUint16(b, h.max)
	b = append(b, h.mode)
	b = binary.BigEndian.AppendUint16(b, uint16(min(len(h.addr), 1<<16-1)))
	b = append(b, h.addr[:min(len(h.addr), 1<<16-1)]...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-lenPrefix))
	return b
}

func decodeHello(typ byte, b []byte) (hello, error) {
	if typ != msgHello || len(b) < 11 || string(b[:4]) != magic {
		return hello{}, fmt.Errorf("%w: not a link hello", errProtocol)
	}
	h := hello{min: binary.BigEndian.Uint16(b[4:]), max: binary.BigEndian.Uint16(b[6:]), mode: b[8]}
	n := int(binary.BigEndian.Uint16(b[9:]))
	if len(b) != 11+n {
		return hello{}, fmt.Errorf("%w: hello of %d bytes names an address of %d", errProtocol, len(b), n)
	}
	h.addr = string(b[11:])
	return h, nil
}

// helloAck is the acceptor's answer: the version chosen, or 0 and why.
type helloAck struct {
	version uint16
	reason  string
}

func (a helloAck) encode() []byte {
	b := binary.BigEndian.AppendUint32(nil, 0)
	b = append(b, msgHelloAck)
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, a.version)
	r := a.reason[:min(len(a.reason), 1024)]
	b = binary.BigEndian.AppendUint16(b, uint16(len(r)))
	b = append(b, r...)
	binary.BigEndian.PutUint32(b, uint32(len(b)-lenPrefix))
	return b
}

func decodeHelloAck(typ byte, b []byte) (helloAck, error) {
	if typ != msgHelloAck || len(b) < 8 || string(b[:4]) != magic {
		return helloAck{}, fmt.Errorf("%w: not a link hello answer", errProtocol)
	}
	a := helloAck{version: binary.BigEndian.Uint16(b[4:])}
	n := int(binary.BigEndian.Uint16(b[6:]))
	if len(b) != 8+n {
		return helloAck{}, fmt.Errorf("%w: hello answer of %d bytes has a reason of %d", errProtocol, len(b), n)
	}
	a.reason = string(b[8:])
	return a, nil
}

// chooseVersion is the acceptor's decision: the highest version both
// speak (this node up to top), or 0.
func chooseVersion(h hello, top uint16) uint16 {
	lo, hi := max(h.min, versionMin), min(h.max, top)
	if lo > hi {
		return 0
	}
	return hi
}

// msgReader reads messages from a checked byte stream. Unless fresh is
// set, its buffer is reused: a message's body is valid until the next
// read (msgpack decoding copies every []byte it fills in, so decoded
// values do not alias it, nor does a version 3 response). With fresh,
// each body is a new slice the caller owns: an acceptor hands requests to
// other goroutines, and a version 3 append's entries alias it.
type msgReader struct {
	r     io.Reader
	len   [lenPrefix + 1]byte
	buf   []byte
	fresh bool
}

func (mr *msgReader) next() (typ byte, body []byte, err error) {
	if _, err := io.ReadFull(mr.r, mr.len[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(mr.len[:])
	if n == 0 || n > maxMessage {
		return 0, nil, fmt.Errorf("%w: message of %d bytes", errProtocol, n)
	}
	n-- // the type byte is read already
	if mr.fresh {
		mr.buf = nil
	}
	if cap(mr.buf) < int(n) {
		mr.buf = make([]byte, n)
	}
	// Give a huge buffer back after use, so one large append does not
	// stay allocated for the connection's life.
	if cap(mr.buf) > 4<<20 && n < 64<<10 {
		mr.buf = make([]byte, n, 64<<10)
	}
	mr.buf = mr.buf[:n]
	if _, err := io.ReadFull(mr.r, mr.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return mr.len[4], mr.buf, nil
}

// request is a decoded request's header.
type request struct {
	rpc     byte
	hb      bool // the sender's heartbeat bit
	id      uint64
	rangeID uint64
	body    []byte
}

func parseRequest(b []byte) (request, error) {
	if len(b) < 3 {
		return request{}, fmt.Errorf("%w: request of %d bytes", errProtocol, len(b))
	}
	r := request{rpc: b[0] &^ rpcHeartbeatBit, hb: b[0]&rpcHeartbeatBit != 0}
	id, n := binary.Uvarint(b[1:])
	if n <= 0 {
		return request{}, fmt.Errorf("%w: request id", errProtocol)
	}
	rangeID, m := binary.Uvarint(b[1+n:])
	if m <= 0 {
		return request{}, fmt.Errorf("%w: range id", errProtocol)
	}
	r.id, r.rangeID, r.body = id, rangeID, b[1+n+m:]
	return r, nil
}

// response is a decoded response's header.
type response struct {
	id     uint64
	status byte
	body   []byte
}

func parseResponse(b []byte) (response, error) {
	id, n := binary.Uvarint(b)
	if n <= 0 || len(b) < n+1 {
		return response{}, fmt.Errorf("%w: response of %d bytes", errProtocol, len(b))
	}
	return response{id: id, status: b[n], body: b[n+1:]}, nil
}

// decodeCommand decodes a request's value into the type its rpc number
// names, as NetworkTransport's handleCommand does, from a connection of
// the given link version. An append's entries may alias body, which the
// caller must own.
func decodeCommand(dec *codec.Decoder, rpc byte, body []byte, version uint16) (any, error) {
	var cmd any
	switch rpc {
	case rpcAppendEntries:
		if version >= versionAppendLayout {
			ae, err := decodeAppendRequest(body)
			if err != nil {
				return nil, fmt.Errorf("link: decode rpc %d: %w", rpc, err)
			}
			return ae, nil
		}
		cmd = &raft.AppendEntriesRequest{}
	case rpcRequestVote:
		cmd = &raft.RequestVoteRequest{}
	case rpcRequestPreVote:
		cmd = &raft.RequestPreVoteRequest{}
	case rpcTimeoutNow:
		cmd = &raft.TimeoutNowRequest{}
	case rpcInstallSnapshot:
		cmd = &raft.InstallSnapshotRequest{}
	default:
		return nil, fmt.Errorf("link: unknown rpc type %d", rpc)
	}
	dec.ResetBytes(body)
	if err := dec.Decode(cmd); err != nil {
		return nil, fmt.Errorf("link: decode rpc %d: %w", rpc, err)
	}
	return cmd, nil
}

// isLazy reports whether a request may wait a moment for company on the
// wire, and its answer with it: an append without entries that is not a
// heartbeat. A leader sends one per follower every CommitTimeout to carry
// the commit index; nothing waits on it. A heartbeat is lazy only when
// its sender says so (AppendEntriesMayWait): a linearizable read waits for
// a round of them (VerifyLeader).
func isLazy(cmd any) bool {
	ae, ok := cmd.(*raft.AppendEntriesRequest)
	return ok && len(ae.Entries) == 0 && !isHeartbeat(cmd)
}

// isHeartbeat is NetworkTransport's test for the heartbeat fast path.
func isHeartbeat(cmd any) bool {
	req, ok := cmd.(*raft.AppendEntriesRequest)
	if !ok {
		return false
	}
	leaderAddr := req.Addr
	if len(leaderAddr) == 0 {
		//lint:ignore SA1019 the same test as NetworkTransport's, which reads it for old senders
		leaderAddr = req.Leader
	}
	return req.Term != 0 && leaderAddr != nil &&
		req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}
