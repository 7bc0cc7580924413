package link

import (
	"fmt"
	"github.com/dialkv/dialkv/replication/frame"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// queueLen bounds each of a connection's two send queues. A sender
	// that finds its queue full waits, at most until its call times out:
	// that is the back-pressure of a slow peer, and it stays with the
	// callers of that peer.
	queueLen = 1024
	// A batch ends when the queues are empty or it reaches these sizes,
	// so that a high-priority message waits for at most one batch.
	maxBatchBytes = 512 << 10
	maxBatchMsgs  = 1024
	// smallMessage is the size up to which a call that is not part of a
	// pipeline goes in the high-priority queue: heartbeats, votes and
	// empty appends, never the large appends they should not wait behind.
	smallMessage = 4 << 10
)

// conn is what both ends of a link connection share: the socket, its
// checked frames and the writer goroutine that batches what is queued.
type conn struct {
	l      *Link
	nc     net.Conn
	remote string // the peer's address, for logs
	fw     *frame.Writer
	fr     *frame.Reader
	mr     msgReader

	high, low chan *outMsg
	// hurry ends a hold at once (Link.hurry); holding says one is on. A
	// hurry that comes as a hold ends may cut the next one short: harmless.
	hurry   chan struct{}
	holding atomic.Bool
	done    chan struct{}
	once    sync.Once
	err     error // why it closed; written before done is closed

	// waitingSince is when the first request (or ping) went out that
	// nothing has been read after, in unix nanoseconds; 0 when every
	// request so far was followed by something from the peer.
	waitingSince atomic.Int64

	onClose func(error) // the side's own cleanup, run once by close
}

func newConn(l *Link, nc net.Conn, fr *frame.Reader, fw *frame.Writer, remote string) *conn {
	c := &conn{
		l: l, nc: nc, remote: remote, fw: fw, fr: fr,
		high: make(chan *outMsg, queueLen), low: make(chan *outMsg, queueLen),
		hurry: make(chan struct{}, 1), done: make(chan struct{}),
	}
	c.mr.r = fr
	return c
}

// close closes the connection once, for the reason err.
func (c *conn) close(err error) {
	c.once.Do(func() {
		c.err = err
		close(c.done)
		c.nc.Close()
		c.l.removeConn(c)
		if c.onClose != nil {
			c.onClose(err)
		}
	})
}

func (c *conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// closedErr is the error a call on a closed connection gets.
func (c *conn) closedErr() error {
	<-c.done
	return fmt.Errorf("%w: %s: %v", ErrConnClosed, c.remote, c.err)
}

// send queues m. It owns m from then on (or frees it on failure). It
// waits while the queue is full, until expire fires or the connection
// closes; a nil expire waits as long as the connection lives.
func (c *conn) send(m *outMsg, high bool, expire <-chan time.Time) error {
	q := c.low
	if high {
		q = c.high
	}
	select {
	case q <- m:
		return nil
	default:
	}
	select {
	case q <- m:
		return nil
	case <-c.done:
		c.l.msgs.put(m)
		return c.closedErr()
	case <-expire:
		c.l.msgs.put(m)
		return fmt.Errorf("%w: the send queue to %s stayed full", ErrTimeout, c.remote)
	}
}

// writeLoop writes what is queued, high priority first, everything that
// is pending at once in one vectored write.
func (c *conn) writeLoop() {
	batch := make([]*outMsg, 0, 64)
	parts := make([][]byte, 0, 128)
	hold := time.NewTimer(time.Hour)
	hold.Stop()
	for {
		m, ok := c.poll()
		if !ok {
			select {
			case m = <-c.high:
			case m = <-c.low:
			case <-c.done:
				return
			}
		}
		// Let the goroutines that are ready to send run first: on a busy
		// node many ranges queue within microseconds of each other, and
		// one write for all of them is the point of the link.
		runtime.Gosched()
		var size int
		batch, size = c.fill(append(batch[:0], m), m.size())
		if c.l.cfg.CoalesceDelay > 0 && c.allLazy(batch) {
			var more, open bool
			batch, size, more, open = c.hold(batch, size, hold)
			if !open {
				return
			}
			if more {
				batch, _ = c.fill(batch, size)
			}
		}
		parts = parts[:0]
		for _, m := range batch {
			parts = append(parts, m.head[:m.headN])
			if len(m.body) > 0 {
				parts = append(parts, m.body)
			}
		}
		c.nc.SetWriteDeadline(time.Now().Add(c.l.cfg.Timeout))
		n, err := c.fw.WriteVec(parts)
		clear(parts)
		for _, m := range batch {
			c.l.msgs.put(m)
		}
		clear(batch)
		if err != nil {
			c.close(fmt.Errorf("write: %w", err))
			return
		}
		c.l.st.writes.Add(1)
		c.l.st.msgsSent.Add(uint64(len(batch)))
		c.l.st.bytesSent.Add(uint64(n))
	}
}

// fill adds to batch whatever is queued, high priority first, up to the
// batch bounds.
func (c *conn) fill(batch []*outMsg, size int) ([]*outMsg, int) {
	for size < maxBatchBytes && len(batch) < maxBatchMsgs {
		m, ok := c.poll()
		if !ok {
			break
		}
		batch = append(batch, m)
		size += m.size()
	}
	return batch, size
}

// poll takes a queued message without waiting, high priority first.
func (c *conn) poll() (*outMsg, bool) {
	select {
	case m := <-c.high:
		return m, true
	default:
		select {
		case m := <-c.high:
			return m, true
		case m := <-c.low:
			return m, true
		default:
			return nil, false
		}
	}
}

// hold keeps a batch of lazy messages for up to CoalesceDelay, adding
// what arrives meanwhile. more says a message that is not lazy arrived
// (or someone hurried the link), so the caller should take whatever else
// is queued and write at once; open is false once the connection has
// closed.
func (c *conn) hold(batch []*outMsg, size int, t *time.Timer) (_ []*outMsg, _ int, more, open bool) {
	c.holding.Store(true)
	defer c.holding.Store(false)
	// A hurry between the caller's check and holding set would be missed:
	// check again now that it is set.
	if !c.allLazy(batch) {
		return batch, size, true, true
	}
	t.Reset(c.l.cfg.CoalesceDelay)
	defer t.Stop()
	for size < maxBatchBytes && len(batch) < maxBatchMsgs {
		var m *outMsg
		select {
		case m = <-c.high:
		case m = <-c.low:
		case <-c.hurry:
			return batch, size, true, true
		case <-t.C:
			return batch, size, false, true
		case <-c.done:
			return batch, size, false, false
		}
		batch = append(batch, m)
		size += m.size()
		if !c.l.lazyNow(m) {
			return batch, size, true, true
		}
	}
	return batch, size, false, true
}

func (c *conn) allLazy(batch []*outMsg) bool {
	for _, m := range batch {
		if !c.l.lazyNow(m) {
			return false
		}
	}
	return true
}

// next reads the next message.
func (c *conn) next() (byte, []byte, error) {
	before := c.fr.WireBytes()
	typ, body, err := c.mr.next()
	if err != nil {
		return 0, nil, err
	}
	c.waitingSince.Store(0)
	c.l.st.msgsRecv.Add(1)
	c.l.st.bytesRecv.Add(uint64(c.fr.WireBytes() - before))
	return typ, body, nil
}
