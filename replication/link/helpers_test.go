package link

import (
	"encoding/binary"
	"github.com/dialkv/dialkv/replication/frame"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/internal/logadapt"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger writes to the test's log, warnings and above unless
// DIALKV_TEST_LOG=debug.
func testLogger(t testing.TB) *slog.Logger { return harness.TestLogger(t, slog.LevelWarn) }

// listenLow listens on 127.0.0.1 at a port below the kernel's ephemeral
// range (harness.ListenLocal), so that no outgoing connection can have
// been given it.
func listenLow(t testing.TB) net.Listener {
	t.Helper()
	ln, err := harness.ListenLocal()
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// testNode is one node's Raft port in a test: a small mux like
// replication's (kind byte 'L' for the link, 'F' + range id for a range's
// own streams) in front of a Link, or, with link false, a node of the
// release before the link, whose mux closes an 'L' connection at once.
type testNode struct {
	t    testing.TB
	ln   net.Listener
	addr string
	link *Link // nil on an old node
	lnk  *chanListener

	mu     sync.Mutex
	layers map[uint64]*chanListener
	dialed []net.Conn            // link connections this node opened
	conns  map[net.Conn]struct{} // every connection, closed with the node as a process exit would
	closed bool
	wg     sync.WaitGroup
	count  *counters // if set, per-range streams count their writes (benchmarks)
}

type counters struct{ writes, bytes *atomic.Uint64 }

// stream wraps a per-range stream as replication's mux does (checked
// frames: the same format as the link's), counting its writes for the
// benchmarks.
func (n *testNode) stream(c net.Conn) net.Conn {
	return &framedConn{Conn: c, fw: frame.NewWriter(c), fr: frame.NewReader(c), count: n.count}
}

// framedConn is replication's framedConn, for the per-range streams of
// the tests: each Write one frame, Read only checked bytes.
type framedConn struct {
	net.Conn
	wmu   sync.Mutex
	fw    *frame.Writer
	fr    *frame.Reader
	count *counters
}

// Write sends p as one frame in one writev (two frames past
// frame.MaxPayload, which NetworkTransport's 256 KiB buffer never reaches).
func (f *framedConn) Write(p []byte) (int, error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	n, err := f.fw.WriteVec([][]byte{p})
	if f.count != nil && err == nil {
		f.count.writes.Add(1)
		f.count.bytes.Add(uint64(n))
	}
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

func (f *framedConn) Read(p []byte) (int, error) { return f.fr.Read(p) }

type nodeOpts struct {
	old    bool // no link: a node of the previous release
	tweak  func(*Config)
	listen net.Listener // reuse (restart on the same address)
}

func newTestNode(t testing.TB, o nodeOpts) *testNode {
	t.Helper()
	ln := o.listen
	if ln == nil {
		ln = listenLow(t)
	}
	n := &testNode{t: t, ln: ln, addr: ln.Addr().String(), layers: map[uint64]*chanListener{}, conns: map[net.Conn]struct{}{}}
	if !o.old {
		n.lnk = newChanListener(ln.Addr())
		cfg := DefaultConfig()
		cfg.LocalAddr = raft.ServerAddress(n.addr)
		cfg.Listener = n.lnk
		cfg.Dial = n.dialLink
		cfg.Logger = testLogger(t)
		if o.tweak != nil {
			o.tweak(&cfg)
		}
		l, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		n.link = l
	}
	n.wg.Add(1)
	go n.serve()
	return n
}

// restartListener listens again on addr once the node that had it closed.
func restartListener(t testing.TB, addr string) net.Listener {
	t.Helper()
	var err error
	for range 100 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("listen again on %s: %v", addr, err)
	return nil
}

func (n *testNode) dialLink(addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write([]byte{'L'}); err != nil {
		c.Close()
		return nil, err
	}
	n.mu.Lock()
	n.dialed = append(n.dialed, c)
	n.mu.Unlock()
	n.track(c)
	return c, nil
}

// track remembers c so that close closes it. NetworkTransport's Close
// leaves its pooled and accepted connections open: in a process that
// exits anyway, but here their goroutines would outlive the test.
func (n *testNode) track(c net.Conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		c.Close()
		return
	}
	n.conns[c] = struct{}{}
}

// dropLinks closes the TCP connections this node dialled, as a network
// failure would.
func (n *testNode) dropLinks() {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.dialed {
		c.Close()
	}
	n.dialed = nil
}

func (n *testNode) serve() {
	defer n.wg.Done()
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		n.track(c)
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.route(c)
		}()
	}
}

func (n *testNode) route(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var kind [1]byte
	if _, err := io.ReadFull(c, kind[:]); err != nil {
		c.Close()
		return
	}
	switch {
	case kind[0] == 'L' && n.lnk != nil:
		c.SetReadDeadline(time.Time{})
		if !n.lnk.deliver(c) {
			c.Close()
		}
	case kind[0] == 'F':
		var id [8]byte
		if _, err := io.ReadFull(c, id[:]); err != nil {
			c.Close()
			return
		}
		c.SetReadDeadline(time.Time{})
		n.mu.Lock()
		l := n.layers[binary.BigEndian.Uint64(id[:])]
		n.mu.Unlock()
		if l == nil || !l.deliver(n.stream(c)) {
			c.Close()
		}
	default: // what a node from before the link does with 'L'
		c.Close()
	}
}

// legacy returns a NetworkTransport for the range on this node's 'F'
// streams, as replication's openShard builds today.
func (n *testNode) legacy(rangeID uint64) *raft.NetworkTransport {
	n.mu.Lock()
	l := newChanListener(n.ln.Addr())
	n.layers[rangeID] = l
	n.mu.Unlock()
	layer := &testLayer{chanListener: l, id: rangeID, node: n}
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 4, Timeout: 2 * time.Second,
		Logger: logadapt.HCLog(testLogger(n.t).With("range", rangeID)),
	})
}

// linkedPair starts two nodes (a with oa, b with ob) and opens range 1 on
// both; the test's end closes the transports, then the nodes.
func linkedPair(t testing.TB, oa, ob nodeOpts) (a, b *testNode, ta, tb *RangeTransport) {
	t.Helper()
	a, b = newTestNode(t, oa), newTestNode(t, ob)
	t.Cleanup(a.close)
	t.Cleanup(b.close)
	var err error
	if ta, err = a.link.Open(1, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ta.Close() })
	if tb, err = b.link.Open(1, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return a, b, ta, tb
}

// open returns the range's transport on this node: the link's with a
// legacy fallback on a new node, the NetworkTransport on an old one.
func (n *testNode) open(rangeID uint64) raft.Transport {
	n.t.Helper()
	if n.link == nil {
		return n.legacy(rangeID)
	}
	t, err := n.link.Open(rangeID, n.legacy(rangeID))
	if err != nil {
		n.t.Fatal(err)
	}
	return t
}

// close stops the node's port and link; close its ranges' transports
// first.
func (n *testNode) close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	n.mu.Unlock()
	n.ln.Close()
	if n.link != nil {
		n.link.Close()
	}
	n.mu.Lock()
	for _, l := range n.layers {
		l.Close()
	}
	for c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	n.wg.Wait()
}

type testLayer struct {
	*chanListener
	id   uint64
	node *testNode
}

func (s *testLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", string(addr), timeout)
	if err != nil {
		return nil, err
	}
	if _, err := c.Write(binary.BigEndian.AppendUint64([]byte{'F'}, s.id)); err != nil {
		c.Close()
		return nil, err
	}
	s.node.track(c)
	return s.node.stream(c), nil
}

func (s *testLayer) Close() error {
	s.node.mu.Lock()
	if s.node.layers[s.id] == s.chanListener {
		delete(s.node.layers, s.id)
	}
	s.node.mu.Unlock()
	return s.chanListener.Close()
}

// chanListener is a net.Listener fed by a test mux.
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
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// responder answers a range's RPCs with answer until stopped.
func responder(t testing.TB, tr raft.Transport, answer func(raft.RPC) (any, error)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case rpc := <-tr.Consumer():
				resp, err := answer(rpc)
				rpc.Respond(resp, err)
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}
