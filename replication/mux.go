package replication

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// A node has one Raft port. Every connection to it starts with a header
// that says what it carries, so that all of the node's Raft groups and its
// internal gRPC service share the port:
//
//	'F' + range id (8 bytes, big endian)   a Raft transport stream of that range, in checked frames (framing.go)
//	'R' + range id                         the same, unframed: accepted from nodes older than framing, never dialled
//	'G'                                    internal gRPC (forwarding, status)
//	'L'                                    the node's shared Raft link (package link): every range's
//	                                       messages to this node, versioned, in checked frames; a
//	                                       mux nobody took LinkListener from closes it at once, as a
//	                                       node from before the link does, so the dialler falls back
//	                                       to 'F' streams
const (
	connFramedRaft byte = 'F'
	connRaft       byte = 'R'
	connGRPC       byte = 'G'
	connLink       byte = 'L'
	// tlsHandshakeRecord starts a TLS ClientHello: a peer with TLS on
	// dialling a node without.
	tlsHandshakeRecord byte = 0x16

	headerTimeout = 5 * time.Second
)

var errMuxClosed = errors.New("replication: raft listener closed")

// Mux accepts connections on the node's Raft address and hands each to the
// range's stream layer or to the internal gRPC listener.
//
// With TLS, every connection, accepted or dialled, is a TLS connection from
// its first byte: the handshake (which checks the peer's node certificate)
// comes before the header, so nothing on the port is reachable without it.
type Mux struct {
	ln   net.Listener
	log  *slog.Logger
	dial func(addr string, timeout time.Duration) (net.Conn, error)
	// tlsServer wraps accepted connections; nil: plaintext.
	tlsServer *tls.Config

	mu     sync.Mutex
	ranges map[uint64]*streamLayer
	grpc   *chanListener
	link   *chanListener // nil until LinkListener is called
	closed bool
}

// NewMux listens on addr. dialAddr maps a peer's advertised Raft address to
// the address actually dialled (the identity unless a test routes links
// through proxies).
func NewMux(addr string, dialAddr func(string) string, log *slog.Logger) (*Mux, error) {
	return NewMuxTLS(addr, dialAddr, nil, nil, log)
}

// NewMuxTLS is NewMux with TLS on the port: server wraps every accepted
// connection and client every dialled one (both nil: plaintext).
func NewMuxTLS(addr string, dialAddr func(string) string, server, client *tls.Config, log *slog.Logger) (*Mux, error) {
	if (server == nil) != (client == nil) {
		return nil, errors.New("replication: peer TLS needs both a server and a client configuration")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("replication: listen on raft address %s: %w", addr, err)
	}
	m := &Mux{ln: ln, log: log, ranges: make(map[uint64]*streamLayer), tlsServer: server}
	m.dial = func(a string, timeout time.Duration) (net.Conn, error) {
		if dialAddr != nil {
			a = dialAddr(a)
		}
		deadline := time.Now().Add(timeout)
		c, err := net.DialTimeout("tcp", a, timeout)
		if err != nil || client == nil {
			return c, err
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		tc := tls.Client(c, client)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("replication: TLS handshake with peer %s: %w", a, err)
		}
		return tc, nil
	}
	m.grpc = newChanListener(ln.Addr())
	go m.serve()
	return m, nil
}

// Addr is the listening address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// GRPCListener yields the connections that carry internal gRPC.
func (m *Mux) GRPCListener() net.Listener { return m.grpc }

// DialGRPC opens a connection to a peer's internal gRPC service.
func (m *Mux) DialGRPC(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := m.dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{connGRPC}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// LinkListener yields the connections that carry the shared Raft link
// (kind byte read). Until it is first called, such connections are closed
// at once.
func (m *Mux) LinkListener() net.Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.link == nil {
		m.link = newChanListener(m.ln.Addr())
		if m.closed {
			m.link.Close()
		}
	}
	return m.link
}

// DialLink opens a connection to a peer's shared Raft link.
func (m *Mux) DialLink(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := m.dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{connLink}); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// RangeLayer returns the raft.StreamLayer of one range, registering it.
func (m *Mux) RangeLayer(id uint64) raft.StreamLayer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.ranges[id]; ok {
		return l
	}
	l := &streamLayer{mux: m, id: id, chanListener: newChanListener(m.ln.Addr())}
	m.ranges[id] = l
	return l
}

func (m *Mux) removeRange(id uint64) {
	m.mu.Lock()
	delete(m.ranges, id)
	m.mu.Unlock()
}

// Close stops accepting and closes every virtual listener.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	layers := m.ranges
	m.ranges = map[uint64]*streamLayer{}
	link := m.link
	m.mu.Unlock()
	err := m.ln.Close()
	for _, l := range layers {
		l.chanListener.Close()
	}
	m.grpc.Close()
	if link != nil {
		link.Close()
	}
	return err
}

func (m *Mux) serve() {
	backoff := 5 * time.Millisecond
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off and keep
			// serving, as net/http does; the port must not go silent.
			m.log.Warn("accept on the raft port failed; retrying", "err", err, "backoff", backoff)
			time.Sleep(backoff)
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		go m.route(c)
	}
}

func (m *Mux) route(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(headerTimeout))
	if m.tlsServer != nil {
		tc := tls.Server(c, m.tlsServer)
		// The whole handshake within the header's deadline: a peer that
		// never finishes it holds nothing.
		c.SetWriteDeadline(time.Now().Add(headerTimeout))
		if err := tc.Handshake(); err != nil {
			var plain tls.RecordHeaderError
			if errors.As(err, &plain) {
				m.log.Warn("refused a plaintext connection on the TLS raft port: is the peer started without --peer-cert-file?", "remote", c.RemoteAddr())
			} else {
				m.log.Warn("refused a connection on the raft port", "remote", c.RemoteAddr(), "err", err)
			}
			c.Close()
			return
		}
		c.SetWriteDeadline(time.Time{})
		c = tc
	}
	var kind [1]byte
	if _, err := io.ReadFull(c, kind[:]); err != nil {
		c.Close()
		return
	}
	switch kind[0] {
	case connGRPC:
		c.SetReadDeadline(time.Time{})
		if !m.grpc.deliver(c) {
			c.Close()
		}
	case connRaft, connFramedRaft:
		var id [8]byte
		if _, err := io.ReadFull(c, id[:]); err != nil {
			c.Close()
			return
		}
		c.SetReadDeadline(time.Time{})
		rangeID := binary.BigEndian.Uint64(id[:])
		m.mu.Lock()
		l := m.ranges[rangeID]
		m.mu.Unlock()
		if kind[0] == connFramedRaft {
			c = newFramedConn(c)
		}
		if l == nil || !l.deliver(c) {
			c.Close()
		}
	case connLink:
		c.SetReadDeadline(time.Time{})
		m.mu.Lock()
		l := m.link
		m.mu.Unlock()
		if l == nil || !l.deliver(c) {
			c.Close()
		}
	case tlsHandshakeRecord:
		m.log.Warn("closing a TLS connection on the plaintext raft port: is the peer started with --peer-cert-file and this node without?", "remote", c.RemoteAddr())
		c.Close()
	default:
		m.log.Warn("closing connection with unknown header", "remote", c.RemoteAddr(), "byte", kind[0])
		c.Close()
	}
}

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn, 16), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.conns <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, errMuxClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// streamLayer is one range's raft.StreamLayer over the mux.
type streamLayer struct {
	*chanListener
	mux *Mux
	id  uint64
}

func (s *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := s.mux.dial(string(addr), timeout)
	if err != nil {
		return nil, err
	}
	hdr := binary.BigEndian.AppendUint64([]byte{connFramedRaft}, s.id)
	if _, err := c.Write(hdr); err != nil {
		c.Close()
		return nil, err
	}
	return newFramedConn(c), nil
}

func (s *streamLayer) Close() error {
	s.mux.removeRange(s.id)
	return s.chanListener.Close()
}
