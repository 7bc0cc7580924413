package link

import (
	"fmt"
	"github.com/dialkv/dialkv/replication/frame"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// laneKind separates a range's incoming messages on one connection so
// that a slow kind does not hold up another: Raft's run loop takes every
// RPC of a range one at a time anyway, but a heartbeat has its fast path,
// and a vote must not wait for an append's disk write.
type laneKind uint8

const (
	laneHeartbeat laneKind = iota // heartbeats, to the heartbeat handler
	laneAppend                    // other AppendEntries: in arrival order, which is the pipeline's
	laneOther                     // votes, pre-votes, TimeoutNow
)

// maxLaneQueue bounds what waits in one lane. Raft keeps only a few
// requests per follower and range outstanding, so a full lane means the
// range's Raft is stuck; further requests are refused with statusBusy
// instead of piling up.
const maxLaneQueue = 64

type laneKey struct {
	rangeID uint64
	kind    laneKind
}

// lane is one queue of incoming requests; it has a goroutine exactly
// while it is in its connection's map.
type lane struct {
	q []inbound
}

// inbound is a request waiting in a lane, still encoded: the lane's
// goroutine decodes it, so that one connection's requests are decoded on
// as many cores as there are busy ranges.
type inbound struct {
	id   uint64
	t    *RangeTransport
	rpc  byte
	body []byte // the reader's, fresh for each message
}

// serverConn is a connection a peer opened to this node: requests come
// in, each range's go to that range's transport, and responses go back.
type serverConn struct {
	*conn
	version uint16 // the link version chosen in the hello
	mu      sync.Mutex
	lanes   map[laneKey]*lane
}

// serve runs an accepted connection: the handshake, then its mode.
func (l *Link) serve(nc net.Conn) {
	nc.SetDeadline(time.Now().Add(l.cfg.Timeout))
	fr := frame.NewReader(nc)
	mr := msgReader{r: fr}
	typ, body, err := mr.next()
	if err != nil {
		l.log.Debug("link: no hello on an accepted connection", "remote", nc.RemoteAddr(), "err", err)
		nc.Close()
		return
	}
	h, err := decodeHello(typ, body)
	if err != nil {
		l.log.Warn("link: bad hello; closing", "remote", nc.RemoteAddr(), "err", err)
		nc.Close()
		return
	}
	ack := helloAck{version: chooseVersion(h, l.cfg.topVersion())}
	switch {
	case ack.version == 0:
		ack.reason = fmt.Sprintf("this node speaks link versions %d to %d, the dialler %d to %d", versionMin, l.cfg.topVersion(), h.min, h.max)
	case h.mode != modeRPC && h.mode != modeSnapshot:
		ack.version, ack.reason = 0, fmt.Sprintf("unknown connection mode %d", h.mode)
	}
	fw := frame.NewWriter(nc)
	if _, err := fw.WriteVec([][]byte{ack.encode()}); err != nil || ack.version == 0 {
		if ack.version == 0 {
			l.log.Warn("link: refused a connection", "peer", h.addr, "reason", ack.reason)
		}
		nc.Close()
		return
	}
	nc.SetDeadline(time.Time{})
	if h.mode == modeSnapshot {
		l.serveSnapshot(nc, fr, fw, h.addr)
		return
	}
	sc := &serverConn{conn: newConn(l, nc, fr, fw, h.addr), version: ack.version, lanes: map[laneKey]*lane{}}
	sc.mr.fresh = true
	if !l.addConn(sc.conn) {
		nc.Close()
		return
	}
	if !l.spawn(sc.writeLoop) {
		sc.close(ErrClosed)
		return
	}
	sc.readLoop()
}

func (s *serverConn) readLoop() {
	for {
		typ, body, err := s.next()
		if err != nil {
			s.close(fmt.Errorf("read: %w", err))
			return
		}
		switch typ {
		case msgRequest:
			if err := s.dispatch(body); err != nil {
				s.close(err)
				return
			}
		case msgPing:
			s.send(s.l.msgs.newPing(msgPong, 0), true, nil)
		case msgPong:
		default:
			s.close(fmt.Errorf("%w: message type %d from the dialler", errProtocol, typ))
			return
		}
	}
}

// dispatch hands one request to its range's lane. It never waits for the
// range: the reader serves every range of the connection. Only a request
// that breaks the protocol returns an error (and closes the connection);
// any other failure is answered.
func (s *serverConn) dispatch(body []byte) error {
	req, err := parseRequest(body)
	if err != nil {
		return err
	}
	if req.rpc == rpcConfirmLeader {
		if s.version < versionConfirm {
			s.reply(s.l.msgs.newStatus(req.id, statusError, fmt.Sprintf("link: leadership questions need link version %d; this connection chose %d", versionConfirm, s.version)))
			return nil
		}
		s.answerConfirm(req)
		return nil
	}
	t := s.l.rangeTransport(req.rangeID)
	switch {
	case t == nil:
		if fn := s.l.unknown.Load(); fn != nil {
			(*fn)(req.rangeID)
		}
		s.reply(s.l.msgs.newStatus(req.id, statusRangeNotOpen, fmt.Sprintf("range %d is not open on %s", req.rangeID, s.l.cfg.LocalAddr)))
		return nil
	case req.rpc == rpcInstallSnapshot:
		s.reply(s.l.msgs.newStatus(req.id, statusError, "link: a snapshot travels on a stream of its own"))
		return nil
	}
	in := inbound{id: req.id, t: t, rpc: req.rpc, body: req.body}
	key := laneKey{rangeID: req.rangeID, kind: laneOther}
	switch {
	case req.rpc == rpcAppendEntries && req.hb:
		key.kind = laneHeartbeat
	case req.rpc == rpcAppendEntries:
		key.kind = laneAppend
	}
	s.push(key, in)
	return nil
}

func (s *serverConn) push(key laneKey, in inbound) {
	s.mu.Lock()
	ln, running := s.lanes[key]
	if !running {
		ln = &lane{}
		s.lanes[key] = ln
	}
	if len(ln.q) >= maxLaneQueue {
		s.mu.Unlock()
		s.reply(s.l.msgs.newStatus(in.id, statusBusy, fmt.Sprintf("range %d has %d requests waiting on %s", key.rangeID, len(ln.q), s.l.cfg.LocalAddr)))
		return
	}
	ln.q = append(ln.q, in)
	s.mu.Unlock()
	if !running {
		s.l.spawn(func() { s.runLane(key, ln) }) // fails only when the Link closes, and this connection with it
	}
}

// runLane hands the lane's requests to the range one at a time and sends
// each answer back; it ends when the lane is empty.
func (s *serverConn) runLane(key laneKey, ln *lane) {
	for {
		s.mu.Lock()
		if len(ln.q) == 0 {
			delete(s.lanes, key)
			s.mu.Unlock()
			return
		}
		in := ln.q[0]
		ln.q[0] = inbound{}
		ln.q = ln.q[1:]
		s.mu.Unlock()
		dec := s.l.decs.Get().(*codec.Decoder)
		cmd, err := decodeCommand(dec, in.rpc, in.body, s.version)
		s.l.decs.Put(dec)
		if err != nil {
			s.reply(s.l.msgs.newStatus(in.id, statusError, err.Error()))
			continue
		}
		respCh := make(chan raft.RPCResponse, 1)
		rpc := raft.RPC{Command: cmd, RespChan: respCh}
		resp, ok := in.t.deliver(rpc, respCh, isHeartbeat(cmd), s.l.cfg.Timeout, s.done)
		if !ok {
			continue // the connection closed: nobody to answer
		}
		m := s.l.msgs.newResponse(in.id, resp, s.version)
		m.lazy = isLazy(cmd)
		s.reply(m)
	}
}

// reply queues a response; it waits only for room in the queue, and not
// at all once the connection is closed.
func (s *serverConn) reply(m *outMsg) {
	s.send(m, true, nil)
}
