package connlimit

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// Listener is a net.Listener that hands out at most Max connections at a
// time; a connection counts until it is closed. Accept refuses the ones
// past the cap itself and keeps accepting, so the server above it only
// ever sees connections it may serve.
type Listener struct {
	net.Listener
	// slots holds one token per open connection; refusing holds one per
	// refusal in progress. Both are semaphores sized at construction.
	slots, refusing chan struct{}
	refuse          func(net.Conn)
	refused         atomic.Uint64
}

// NewListener limits ln to limit open connections (at least 1). refuse, when
// not nil, is given each connection past the cap in its own goroutine, at
// most RefusalSlots at a time; it must close the connection and return
// within a bounded time (set a deadline). When refuse is nil, or every
// refusal slot is busy, the connection is closed at once.
func NewListener(ln net.Listener, limit int, refuse func(net.Conn)) *Listener {
	return &Listener{
		Listener: ln,
		slots:    make(chan struct{}, max(limit, 1)),
		refusing: make(chan struct{}, RefusalSlots),
		refuse:   refuse,
	}
}

// Accept waits for a connection under the cap. Errors are the underlying
// listener's.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.slots <- struct{}{}:
			return &conn{Conn: c, release: func() { <-l.slots }}, nil
		default:
		}
		l.refused.Add(1)
		l.refuseConn(c)
	}
}

func (l *Listener) refuseConn(c net.Conn) {
	if l.refuse == nil {
		c.Close()
		return
	}
	select {
	case l.refusing <- struct{}{}:
		go func() {
			defer func() { <-l.refusing }()
			l.refuse(c)
		}()
	default:
		c.Close()
	}
}

// Max is the cap.
func (l *Listener) Max() int { return cap(l.slots) }

// Open is how many accepted connections are not closed yet.
func (l *Listener) Open() int { return len(l.slots) }

// Refused is how many connections have been refused since the start.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// conn gives its slot back on the first Close.
type conn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite passes through to a TCP connection: net/http half-closes a
// connection before closing it after an error, so that the client reads the
// error response instead of a reset.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
