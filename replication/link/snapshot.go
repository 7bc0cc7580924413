package link

import (
	"bufio"
	"fmt"
	"github.com/dialkv/dialkv/replication/frame"
	"io"
	"net"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// A snapshot travels on a connection of its own (hello mode
// modeSnapshot), in the same checked frames: the request message, then
// exactly the snapshot's bytes as Raft's reader yields them, then the
// acceptor's response message; then the connection is closed. Its data
// never sits in a link's queues, so heartbeats do not wait behind it.

// snapshotTimeout is NetworkTransport's deadline for a snapshot: the RPC
// timeout per 256 KiB (its TimeoutScale), and never less than one timeout.
func snapshotTimeout(timeout time.Duration, size int64) time.Duration {
	return max(timeout, timeout*time.Duration(size/raft.DefaultTimeoutScale))
}

func (t *RangeTransport) sendSnapshot(p *peer, args *raft.InstallSnapshotRequest, resp *raft.InstallSnapshotResponse, data io.Reader, legacy func(raft.Transport) error) error {
	l := t.l
	nc, fr, fw, _, isLegacy, err := l.handshake(p.addr, modeSnapshot)
	if isLegacy {
		p.markLegacy()
		return t.viaLegacy(fmt.Errorf("%w: %s", ErrLegacyPeer, p.addr), legacy)
	}
	if err != nil {
		return err
	}
	if !l.addStream(nc) {
		nc.Close()
		return ErrClosed
	}
	defer l.removeStream(nc)
	defer nc.Close()
	// Closing the transport mid-transfer ends it at once.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-t.done:
			nc.Close()
		case <-stop:
		}
	}()
	nc.SetDeadline(time.Now().Add(snapshotTimeout(l.cfg.Timeout, args.Size)))

	m, err := l.msgs.newRequest(rpcInstallSnapshot, 1, t.id, args, versionMin)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(fw, 256<<10)
	bw.Write(m.head[:m.headN])
	bw.Write(m.body)
	l.msgs.put(m)
	if _, err := io.Copy(bw, data); err != nil {
		return fmt.Errorf("link: send snapshot of range %d to %s: %w", t.id, p.addr, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("link: send snapshot of range %d to %s: %w", t.id, p.addr, err)
	}
	mr := msgReader{r: fr}
	typ, body, err := mr.next()
	if err != nil {
		if t.isClosed() {
			return raft.ErrTransportShutdown
		}
		return fmt.Errorf("link: snapshot of range %d to %s: no response: %w", t.id, p.addr, err)
	}
	if typ != msgResponse {
		return fmt.Errorf("%w: message type %d in answer to a snapshot", errProtocol, typ)
	}
	r, err := parseResponse(body)
	if err != nil {
		return err
	}
	if r.id != 1 {
		return fmt.Errorf("%w: snapshot answered as request %d", errProtocol, r.id)
	}
	return decodeResult(codec.NewDecoderBytes(nil, l.h), r, resp, p.addr, versionMin)
}

// serveSnapshot runs an accepted snapshot stream: one request whose data
// follows it, handed to the range's Raft with a reader of exactly that
// data, and one answer.
func (l *Link) serveSnapshot(nc net.Conn, fr *frame.Reader, fw *frame.Writer, remote string) {
	defer nc.Close()
	if !l.addStream(nc) {
		return
	}
	defer l.removeStream(nc)
	nc.SetReadDeadline(time.Now().Add(l.cfg.Timeout))
	mr := msgReader{r: fr}
	typ, body, err := mr.next()
	if err != nil {
		l.log.Warn("link: snapshot stream without a request", "peer", remote, "err", err)
		return
	}
	req, err := parseRequest(body)
	if err == nil && (typ != msgRequest || req.rpc != rpcInstallSnapshot) {
		err = fmt.Errorf("%w: message type %d, rpc %d on a snapshot stream", errProtocol, typ, req.rpc)
	}
	if err != nil {
		l.log.Warn("link: bad snapshot request", "peer", remote, "err", err)
		return
	}
	answer := func(m *outMsg) {
		defer l.msgs.put(m)
		nc.SetWriteDeadline(time.Now().Add(l.cfg.Timeout))
		if _, err := fw.WriteVec([][]byte{m.head[:m.headN], m.body}); err != nil {
			l.log.Warn("link: could not answer a snapshot", "peer", remote, "range", req.rangeID, "err", err)
		}
	}
	t := l.rangeTransport(req.rangeID)
	if t == nil {
		answer(l.msgs.newStatus(req.id, statusRangeNotOpen, fmt.Sprintf("range %d is not open on %s", req.rangeID, l.cfg.LocalAddr)))
		return
	}
	cmd, err := decodeCommand(codec.NewDecoderBytes(nil, l.h), req.rpc, req.body, versionMin)
	if err != nil {
		answer(l.msgs.newStatus(req.id, statusError, err.Error()))
		return
	}
	args := cmd.(*raft.InstallSnapshotRequest)
	nc.SetDeadline(time.Now().Add(snapshotTimeout(l.cfg.Timeout, args.Size)))
	respCh := make(chan raft.RPCResponse, 1)
	rpc := raft.RPC{Command: args, Reader: io.LimitReader(fr, args.Size), RespChan: respCh}
	resp, ok := t.deliver(rpc, respCh, false, snapshotTimeout(l.cfg.Timeout, args.Size), l.done)
	if !ok {
		return
	}
	answer(l.msgs.newResponse(req.id, resp, versionMin))
}
