package replication

import (
	"errors"
	"net"
	"sync"

	"github.com/dialkv/dialkv/replication/frame"
)

// A Raft stream of one range ('F' on the mux) carries its bytes in checked
// frames (package frame): hashicorp/raft's NetworkTransport writes bare
// msgpack, and a stream with a hole can decode as another valid message
// that Raft's log matching never repairs. A damaged, lost, repeated or
// reordered frame closes the connection instead, and Raft redials and
// resends from what the follower really has.

// ErrStreamCorrupt is returned by a framed stream's Read when a frame is
// damaged, missing or out of order; the connection is closed with it.
var ErrStreamCorrupt = frame.ErrCorrupt

// framedConn is a net.Conn whose byte stream is carried in checked
// frames. Both ends of a Raft connection must use it.
type framedConn struct {
	net.Conn

	wmu sync.Mutex // NetworkTransport may write from several goroutines
	w   *frame.Writer
	r   *frame.Reader // one reader at a time: the transport's
}

func newFramedConn(c net.Conn) *framedConn {
	return &framedConn{Conn: c, w: frame.NewWriter(c), r: frame.NewReader(c)}
}

// Write sends p as one frame (or several, if p is larger than a frame),
// headers and payload in one system call.
func (f *framedConn) Write(p []byte) (int, error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	return f.w.Write(p)
}

// Read returns bytes of frames that have been checked whole; on a corrupt
// stream it closes the connection.
func (f *framedConn) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if errors.Is(err, frame.ErrCorrupt) {
		f.Conn.Close()
	}
	return n, err
}
