package link

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/dialkv/dialkv/replication/frame"
	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

// PeerMode is how this node reaches a peer.
type PeerMode int

const (
	// PeerUnknown: not dialled yet.
	PeerUnknown PeerMode = iota
	// PeerLink: over the shared link.
	PeerLink
	// PeerLegacy: the peer closed the link's hello unanswered (a release
	// before the link) or shares no version with this node, so each range
	// reaches it over its own per-range streams.
	PeerLegacy
)

func (m PeerMode) String() string {
	switch m {
	case PeerLink:
		return "link"
	case PeerLegacy:
		return "legacy"
	default:
		return "unknown"
	}
}

// redialBackoff is how long calls to a peer whose dial just failed fail at
// once with that error, instead of every range dialling it again.
const redialBackoff = 100 * time.Millisecond

// peer is what this node knows of one peer address and its outgoing
// connection.
type peer struct {
	l    *Link
	addr string
	asks asker // leadership questions (confirm.go)

	mu struct {
		sync.Mutex
		mode     PeerMode
		cc       *clientConn
		dialing  chan struct{} // closed when the dial under way ends
		probing  bool
		probeAt  time.Time // when a legacy peer is tried again
		failErr  error
		failedAt time.Time
	}
}

func (p *peer) currentMode() PeerMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.mode
}

// get returns the connection to the peer, dialling it if there is none.
// It returns ErrLegacyPeer for a peer that speaks only per-range streams.
// A caller that cannot fall back to them (fallback false: its range has
// no legacy transport) dials the link even to a peer held as legacy: a
// peer that crashed mid-handshake looks legacy too, and such a caller
// would otherwise be refused for a whole ProbeInterval.
func (p *peer) get(expire <-chan time.Time, fallback bool) (*clientConn, error) {
	for {
		p.mu.Lock()
		if cc := p.mu.cc; cc != nil && !cc.closed() {
			p.mu.Unlock()
			return cc, nil
		}
		if p.mu.mode == PeerLegacy && fallback {
			p.maybeProbeLocked()
			p.mu.Unlock()
			return nil, fmt.Errorf("%w: %s", ErrLegacyPeer, p.addr)
		}
		if ch := p.mu.dialing; ch != nil {
			p.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-expire:
				return nil, fmt.Errorf("%w: waiting for a dial to %s", ErrTimeout, p.addr)
			case <-p.l.done:
				return nil, ErrClosed
			}
		}
		if p.mu.failErr != nil && time.Since(p.mu.failedAt) < redialBackoff {
			err := p.mu.failErr
			p.mu.Unlock()
			return nil, err
		}
		ch := make(chan struct{})
		p.mu.dialing = ch
		p.mu.Unlock()

		cc, legacy, err := p.l.dialRPC(p.addr)

		p.mu.Lock()
		p.mu.dialing = nil
		close(ch)
		switch {
		case err != nil:
			p.mu.failErr, p.mu.failedAt = err, time.Now()
		case legacy:
			p.setLegacyLocked()
		default:
			p.mu.mode, p.mu.cc, p.mu.failErr = PeerLink, cc, nil
		}
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if legacy {
			return nil, fmt.Errorf("%w: %s", ErrLegacyPeer, p.addr)
		}
		return cc, nil
	}
}

func (p *peer) setLegacyLocked() {
	if p.mu.mode != PeerLegacy {
		p.l.st.fallbacks.Add(1)
		p.l.log.Info("link: peer speaks only per-range streams; reaching it through them", "peer", p.addr, "probe_in", p.l.cfg.ProbeInterval)
	}
	p.mu.mode, p.mu.failErr = PeerLegacy, nil
	p.mu.probeAt = time.Now().Add(p.l.cfg.ProbeInterval)
}

// markLegacy records that a snapshot stream found the peer legacy.
func (p *peer) markLegacy() {
	p.mu.Lock()
	p.setLegacyLocked()
	p.mu.Unlock()
}

// maybeProbeLocked tries the link again in the background once a legacy
// peer's probe interval has passed; calls keep using the per-range
// streams meanwhile.
func (p *peer) maybeProbeLocked() {
	if p.mu.probing || time.Now().Before(p.mu.probeAt) {
		return
	}
	p.mu.probing = true
	started := p.l.spawn(func() {
		cc, legacy, err := p.l.dialRPC(p.addr)
		p.mu.Lock()
		defer p.mu.Unlock()
		p.mu.probing = false
		if err != nil || legacy {
			p.mu.probeAt = time.Now().Add(p.l.cfg.ProbeInterval)
			return
		}
		p.mu.mode, p.mu.cc = PeerLink, cc
		p.l.log.Info("link: peer speaks the link now", "peer", p.addr)
	})
	if !started {
		p.mu.probing = false
	}
}

// dialRPC opens the multiplexed connection to addr. legacy reports a peer
// that does not speak the link.
func (l *Link) dialRPC(addr string) (*clientConn, bool, error) {
	nc, fr, fw, version, legacy, err := l.handshake(addr, modeRPC)
	if err != nil || legacy {
		return nil, legacy, err
	}
	cc := newClientConn(l, nc, fr, fw, addr)
	cc.version = version
	if !l.addConn(cc.conn) {
		nc.Close()
		return nil, false, ErrClosed
	}
	started := l.spawn(cc.writeLoop) && l.spawn(cc.readLoop) && l.spawn(cc.keepalive)
	if !started {
		cc.close(ErrClosed)
		return nil, false, ErrClosed
	}
	return cc, false, nil
}

// handshake dials addr and exchanges hellos. A peer that closes the
// connection without answering is a node from before the link: its mux
// closes a connection with a kind byte it does not know at once. legacy
// is true then, and when the peer answers that it shares no version.
func (l *Link) handshake(addr string, mode byte) (nc net.Conn, fr *frame.Reader, fw *frame.Writer, version uint16, legacy bool, err error) {
	nc, err = l.cfg.Dial(addr, l.cfg.Timeout)
	if err != nil {
		return nil, nil, nil, 0, false, fmt.Errorf("link: dial %s: %w", addr, err)
	}
	l.st.dials.Add(1)
	fail := func(err error) (net.Conn, *frame.Reader, *frame.Writer, uint16, bool, error) {
		nc.Close()
		if closedAtOnce(err) {
			return nil, nil, nil, 0, true, nil
		}
		return nil, nil, nil, 0, false, fmt.Errorf("link: handshake with %s: %w", addr, err)
	}
	nc.SetDeadline(time.Now().Add(l.cfg.Timeout))
	fw = frame.NewWriter(nc)
	h := hello{min: versionMin, max: l.cfg.topVersion(), mode: mode, addr: string(l.cfg.LocalAddr)}
	if _, err := fw.WriteVec([][]byte{h.encode()}); err != nil {
		return fail(err)
	}
	fr = frame.NewReader(nc)
	mr := msgReader{r: fr}
	typ, body, err := mr.next()
	if err != nil {
		return fail(err)
	}
	ack, err := decodeHelloAck(typ, body)
	if err != nil {
		nc.Close()
		return nil, nil, nil, 0, false, fmt.Errorf("link: handshake with %s: %w", addr, err)
	}
	if ack.version == 0 {
		nc.Close()
		l.log.Warn("link: peer shares no link version with this node; reaching it through per-range streams", "peer", addr, "reason", ack.reason)
		return nil, nil, nil, 0, true, nil
	}
	if ack.version < versionMin || ack.version > l.cfg.topVersion() {
		nc.Close()
		return nil, nil, nil, 0, false, fmt.Errorf("link: handshake with %s: %w: it chose version %d, not one of %d to %d", addr, errProtocol, ack.version, versionMin, l.cfg.topVersion())
	}
	nc.SetDeadline(time.Time{})
	return nc, fr, fw, ack.version, false, nil
}

// closedAtOnce reports an error that means the peer closed the
// connection without a byte of answer.
func closedAtOnce(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// clientConn is this node's outgoing connection to one peer: requests go
// out, responses come back matched by request id.
type clientConn struct {
	*conn
	version uint16         // the link version the peer chose
	dec     *codec.Decoder // the reader goroutine's, for responses
	mu      struct {
		sync.Mutex
		nextID  uint64
		pending map[uint64]*call // nil once the connection is closed
	}
}

// call is one request waiting for its response.
type call struct {
	resp any        // decoded into by the reader, only while pending
	done chan error // buffered; receives exactly one value
}

func newCall(resp any) *call { return &call{resp: resp, done: make(chan error, 1)} }

func newClientConn(l *Link, nc net.Conn, fr *frame.Reader, fw *frame.Writer, addr string) *clientConn {
	cc := &clientConn{conn: newConn(l, nc, fr, fw, addr), dec: codec.NewDecoderBytes(nil, l.h)}
	cc.mu.pending = map[uint64]*call{}
	cc.onClose = cc.failAll
	return cc
}

// register adds cl to the pending calls and returns its request id.
func (c *clientConn) register(cl *call) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.pending == nil {
		return 0, c.closedErr()
	}
	c.waitingSince.CompareAndSwap(0, time.Now().UnixNano())
	c.mu.nextID++
	c.mu.pending[c.mu.nextID] = cl
	return c.mu.nextID, nil
}

// cancel forgets call id. It reports whether the call was still pending:
// if not, its result is in (or about to be in) its done channel, and its
// response value may be being written right now.
func (c *clientConn) cancel(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.mu.pending[id]; !ok {
		return false
	}
	delete(c.mu.pending, id)
	return true
}

// failAll fails every pending call with the connection's error: none of
// them gets a response value.
func (c *clientConn) failAll(err error) {
	c.mu.Lock()
	pending := c.mu.pending
	c.mu.pending = nil
	c.mu.Unlock()
	for _, cl := range pending {
		cl.done <- fmt.Errorf("%w: %s: %v", ErrConnClosed, c.remote, err)
	}
}

// call sends one request and waits for its response, until expire fires
// or abort closes. ordered requests (a pipeline's) keep their order
// behind everything queued before them; others may overtake large ones.
func (c *clientConn) call(rangeID uint64, rpc byte, args, resp any, ordered bool, since uint64, expire <-chan time.Time, abort <-chan struct{}) error {
	cl := newCall(resp)
	id, err := c.start(cl, rangeID, rpc, args, ordered, since, expire)
	if err != nil {
		return err
	}
	return c.wait(id, cl, expire, abort)
}

// start registers and sends a request; since > 0 marks it lazy whatever
// it is, until a hurry (see AppendEntriesMayWait).
func (c *clientConn) start(cl *call, rangeID uint64, rpc byte, args any, ordered bool, since uint64, expire <-chan time.Time) (uint64, error) {
	id, err := c.register(cl)
	if err != nil {
		return 0, err
	}
	m, err := c.l.msgs.newRequest(rpc, id, rangeID, args, c.version)
	if err != nil {
		c.cancel(id)
		return 0, err
	}
	if since > 0 {
		m.lazy, m.since = true, since
	}
	if m.size() > maxMessage {
		l := m.size()
		c.l.msgs.put(m)
		c.cancel(id)
		return 0, fmt.Errorf("link: request of %d bytes is larger than a message may be (%d)", l, maxMessage)
	}
	high := !ordered && m.size() <= smallMessage
	if err := c.send(m, high, expire); err != nil {
		if c.cancel(id) {
			return 0, err
		}
		return 0, <-cl.done
	}
	return id, nil
}

func (c *clientConn) wait(id uint64, cl *call, expire <-chan time.Time, abort <-chan struct{}) error {
	select {
	case err := <-cl.done:
		return err
	case <-expire:
		if c.cancel(id) {
			return fmt.Errorf("%w: no response from %s", ErrTimeout, c.remote)
		}
		return <-cl.done
	case <-abort:
		if c.cancel(id) {
			return errAborted
		}
		return <-cl.done
	}
}

// errAborted is what a call returns when its transport or pipeline
// closed while it waited; callers replace it with Raft's own error.
var errAborted = errors.New("link: call aborted")

func (c *clientConn) readLoop() {
	for {
		typ, body, err := c.next()
		if err != nil {
			c.close(fmt.Errorf("read: %w", err))
			return
		}
		switch typ {
		case msgResponse:
			r, err := parseResponse(body)
			if err != nil {
				c.close(err)
				return
			}
			c.complete(r)
		case msgPing:
			c.send(c.l.msgs.newPing(msgPong, 0), true, nil)
		case msgPong:
		default:
			c.close(fmt.Errorf("%w: message type %d from the acceptor", errProtocol, typ))
			return
		}
	}
}

// complete hands a response to its call, if the call still waits.
func (c *clientConn) complete(r response) {
	c.mu.Lock()
	cl := c.mu.pending[r.id]
	delete(c.mu.pending, r.id)
	c.mu.Unlock()
	if cl == nil {
		return // timed out or cancelled: nobody reads its value any more
	}
	cl.done <- decodeResult(c.dec, r, cl.resp, c.remote, c.version)
}

// decodeResult turns a response from a connection of the given link
// version into the call's result: its value decoded into resp, or an
// error and resp untouched.
func decodeResult(dec *codec.Decoder, r response, resp any, remote string, version uint16) error {
	switch r.status {
	case statusOK:
		if raw, ok := resp.(*rawBody); ok {
			*raw = append((*raw)[:0], r.body...)
			return nil
		}
		if ae, ok := resp.(*raft.AppendEntriesResponse); ok && version >= versionAppendLayout {
			if err := decodeAppendResponse(r.body, ae); err != nil {
				return fmt.Errorf("link: decode response from %s: %w", remote, err)
			}
			return nil
		}
		dec.ResetBytes(r.body)
		if err := dec.Decode(resp); err != nil {
			return fmt.Errorf("link: decode response from %s: %w", remote, err)
		}
		return nil
	case statusRangeNotOpen:
		return fmt.Errorf("%w: %s", ErrRangeNotOpen, r.body)
	case statusBusy:
		return fmt.Errorf("%w: %s", ErrRangeBusy, r.body)
	case statusError:
		// The receiving Raft's own error, as NetworkTransport passes it.
		return errors.New(string(r.body))
	default:
		return fmt.Errorf("link: response status %d from %s: %s", r.status, remote, r.body)
	}
}

// keepalive closes a connection that hears nothing for Timeout after a
// request went out: a peer that died without a FIN, or a network that
// drops everything. After half that silence it pings, which a live peer's
// reader answers at once whatever its ranges are doing, so a peer whose
// Raft is merely slow keeps its connection.
func (c *clientConn) keepalive() {
	timeout := c.l.cfg.Timeout
	tick := time.NewTicker(timeout / 4)
	defer tick.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-tick.C:
		}
		since := c.waitingSince.Load()
		if since == 0 {
			continue
		}
		switch silent := time.Since(time.Unix(0, since)); {
		case silent > timeout:
			c.close(fmt.Errorf("peer silent for %v", silent.Round(time.Millisecond)))
			return
		case silent > timeout/2:
			// Never wait here: a full queue is its own answer.
			select {
			case c.high <- c.l.msgs.newPing(msgPing, 0):
			default:
			}
		}
	}
}
