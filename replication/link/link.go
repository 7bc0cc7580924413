package link

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-msgpack/v2/codec"
	"github.com/hashicorp/raft"
)

var (
	// ErrRangeNotOpen is returned by a call to a peer that does not host
	// the range (it never did, it was removed, or it is starting).
	ErrRangeNotOpen = errors.New("link: range not open on the peer")
	// ErrRangeBusy is returned when the peer's queue for the range is
	// full: its Raft takes messages slower than they come.
	ErrRangeBusy = errors.New("link: range busy on the peer")
	// ErrLegacyPeer is returned when the peer speaks only per-range
	// streams and the range has no legacy transport to reach it with.
	ErrLegacyPeer = errors.New("link: peer speaks only per-range streams")
	// ErrTimeout is returned when no response came within Config.Timeout.
	ErrTimeout = errors.New("link: rpc timed out")
	// ErrConnClosed is returned by a call whose connection broke before
	// its response arrived. The call may or may not have been delivered.
	ErrConnClosed = errors.New("link: connection closed")
	// ErrClosed is returned once the Link is closed.
	ErrClosed = errors.New("link: closed")
	// ErrRangeOpen is returned by Open for a range that is open already.
	ErrRangeOpen = errors.New("link: range already open")
)

// Config configures a Link.
type Config struct {
	// LocalAddr is the node's advertised Raft address: every range's
	// transport reports it as its own, and peers dial it.
	LocalAddr raft.ServerAddress
	// Listener yields the link connections peers open to this node, the
	// mux's kind byte already read. The Link closes it.
	Listener net.Listener
	// Dial opens a connection to a peer's link, the mux's kind byte
	// already written.
	Dial func(addr string, timeout time.Duration) (net.Conn, error)
	// Timeout bounds one RPC from call to response (NetworkTransport's
	// Timeout), a dial with its handshake, and the write of one batch. A
	// connection with requests outstanding that hears nothing, not even
	// an answer to a ping, for this long is closed.
	Timeout time.Duration
	// MaxInFlight bounds the requests of one AppendEntries pipeline, as
	// NetworkTransport's MaxRPCsInFlight does; at least 2.
	MaxInFlight int
	// ProbeInterval is how long a peer found to speak only per-range
	// streams is reached through them before the link is tried again:
	// the peer may have been upgraded meanwhile.
	ProbeInterval time.Duration
	// CoalesceDelay is how long a connection's writer may hold a batch of
	// lazy messages only (empty appends carrying a commit index, and their
	// answers; heartbeats sent with AppendEntriesMayWait) for others to
	// join it; anything else, or a Hurry, ends the wait. An idle
	// node with many awake ranges then writes (and its peers read) a few
	// of them at a time instead of each alone. 0 writes at once.
	CoalesceDelay time.Duration
	Logger        *slog.Logger

	// maxVersion, when not 0, is the highest link version spoken instead
	// of versionMax: a test's node of an earlier release.
	maxVersion uint16
}

// topVersion is the highest link version this node speaks.
func (c Config) topVersion() uint16 {
	if c.maxVersion != 0 {
		return c.maxVersion
	}
	return versionMax
}

// DefaultConfig returns the defaults; LocalAddr, Listener and Dial must
// be set.
func DefaultConfig() Config {
	return Config{Timeout: 2 * time.Second, MaxInFlight: 2, ProbeInterval: 10 * time.Second, CoalesceDelay: 5 * time.Millisecond}
}

// Validate reports a configuration the Link cannot run with.
func (c Config) Validate() error {
	switch {
	case c.LocalAddr == "":
		return errors.New("link: config: LocalAddr is empty")
	case c.Listener == nil:
		return errors.New("link: config: Listener is nil")
	case c.Dial == nil:
		return errors.New("link: config: Dial is nil")
	case c.Timeout <= 0:
		return fmt.Errorf("link: config: Timeout %v is not positive", c.Timeout)
	case c.MaxInFlight < 2:
		return fmt.Errorf("link: config: MaxInFlight %d is below 2", c.MaxInFlight)
	case c.ProbeInterval <= 0:
		return fmt.Errorf("link: config: ProbeInterval %v is not positive", c.ProbeInterval)
	}
	return nil
}

// Link is a node's end of its Raft links: at most one outgoing connection
// per peer, carrying the messages of every range, and the connections
// peers open to it. Each range reaches it through a RangeTransport (Open).
type Link struct {
	// hurries counts Hurry calls, from 1 (see outMsg.since).
	hurries atomic.Uint64
	// unknown is told of requests for ranges not open here
	// (OnUnknownRange); nil until set.
	unknown atomic.Pointer[func(rangeID uint64)]

	cfg Config
	// askSeed, a hash of LocalAddr, rotates the order peers are asked
	// leadership questions in (askOrder).
	askSeed uint32
	log     *slog.Logger
	h       *codec.MsgpackHandle
	msgs    *msgPool
	decs    sync.Pool // *codec.Decoder, for requests decoded on lanes
	st      stats
	done    chan struct{} // closed by Close

	// Lock order: a peer's mu, then this one. Nothing else is locked
	// while this one is held. rangesMu is a leaf, never held with mu.
	mu struct {
		sync.Mutex
		closed  bool
		peers   map[string]*peer
		conns   map[*conn]struct{}
		streams map[net.Conn]struct{} // snapshot streams, both ways
	}
	rangesMu sync.RWMutex
	ranges   map[uint64]*RangeTransport

	wg sync.WaitGroup
}

// New starts a Link: it accepts connections from cfg.Listener at once.
func New(cfg Config) (*Link, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	l := &Link{cfg: cfg, log: cfg.Logger, h: newHandle(), done: make(chan struct{}), ranges: map[uint64]*RangeTransport{}}
	l.hurries.Store(1)
	h := fnv.New32a()
	h.Write([]byte(cfg.LocalAddr))
	l.askSeed = h.Sum32()
	l.msgs = newMsgPool(l.h)
	l.decs.New = func() any { return codec.NewDecoderBytes(nil, l.h) }
	l.mu.peers = map[string]*peer{}
	l.mu.conns = map[*conn]struct{}{}
	l.mu.streams = map[net.Conn]struct{}{}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.accept()
	}()
	return l, nil
}

// Close closes the listener and every connection, fails every call in
// flight, and waits for the Link's goroutines. Close each RangeTransport
// first: Close does not close them.
func (l *Link) Close() error {
	l.mu.Lock()
	if l.mu.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.closed = true
	close(l.done)
	conns := make([]*conn, 0, len(l.mu.conns))
	for c := range l.mu.conns {
		conns = append(conns, c)
	}
	streams := make([]net.Conn, 0, len(l.mu.streams))
	for s := range l.mu.streams {
		streams = append(streams, s)
	}
	l.mu.Unlock()
	err := l.cfg.Listener.Close()
	for _, c := range conns {
		c.close(ErrClosed)
	}
	for _, s := range streams {
		s.Close()
	}
	l.wg.Wait()
	return err
}

// spawn runs fn on a goroutine that Close waits for, unless the Link is
// closed.
func (l *Link) spawn(fn func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return false
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		fn()
	}()
	return true
}

func (l *Link) addConn(c *conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return false
	}
	l.mu.conns[c] = struct{}{}
	return true
}

// OnUnknownRange has fn told, on the connection's reader, of every
// request for a range not open on this node, before it is answered with
// ErrRangeNotOpen: the range's leader may count this node a member whose
// replica was never created. fn must not block.
func (l *Link) OnUnknownRange(fn func(rangeID uint64)) { l.unknown.Store(&fn) }

// hurry ends every connection's hold, and makes every heartbeat that may
// wait and was decided before it not lazy (lazyNow): a read waits for a
// heartbeat that may be held, or on its way to a queue (RangeTransport.Hurry).
func (l *Link) hurry() {
	l.hurries.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.mu.conns {
		if c.holding.Load() {
			select {
			case c.hurry <- struct{}{}:
			default:
			}
		}
	}
}

// lazyNow reports whether m may still wait for company: it is lazy, and
// if it is a heartbeat that may wait, no hurry has come since its sender
// decided so.
func (l *Link) lazyNow(m *outMsg) bool {
	return m.lazy && (m.since == 0 || m.since == l.hurries.Load())
}

func (l *Link) removeConn(c *conn) {
	l.mu.Lock()
	delete(l.mu.conns, c)
	l.mu.Unlock()
}

func (l *Link) addStream(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.mu.closed {
		return false
	}
	l.mu.streams[c] = struct{}{}
	return true
}

func (l *Link) removeStream(c net.Conn) {
	l.mu.Lock()
	delete(l.mu.streams, c)
	l.mu.Unlock()
}

// peer returns the state of the peer at addr, creating it.
func (l *Link) peer(addr string) *peer {
	l.mu.Lock()
	defer l.mu.Unlock()
	p, ok := l.mu.peers[addr]
	if !ok {
		p = &peer{l: l, addr: addr}
		l.mu.peers[addr] = p
	}
	return p
}

// PeerMode reports how this node reaches the peer at addr.
func (l *Link) PeerMode(addr raft.ServerAddress) PeerMode {
	l.mu.Lock()
	p := l.mu.peers[string(addr)]
	l.mu.Unlock()
	if p == nil {
		return PeerUnknown
	}
	return p.currentMode()
}

// Open registers the range and returns its transport. legacy, if not nil,
// is the range's per-range transport (today's NetworkTransport on the
// mux's 'F' streams): calls to a peer that does not speak the link go
// through it, and what it receives from such peers is handed to the same
// Consumer. The returned transport's Close closes legacy too.
func (l *Link) Open(rangeID uint64, legacy raft.Transport) (*RangeTransport, error) {
	select {
	case <-l.done:
		return nil, ErrClosed
	default:
	}
	if legacy != nil && legacy.LocalAddr() != l.cfg.LocalAddr {
		// Raft puts the transport's address in every request; the two
		// ways to reach a peer must not make it two different servers.
		return nil, fmt.Errorf("link: range %d: legacy transport's address %q is not the link's %q", rangeID, legacy.LocalAddr(), l.cfg.LocalAddr)
	}
	t := &RangeTransport{l: l, id: rangeID, legacy: legacy, consumeCh: make(chan raft.RPC), done: make(chan struct{})}
	l.rangesMu.Lock()
	if _, ok := l.ranges[rangeID]; ok {
		l.rangesMu.Unlock()
		return nil, fmt.Errorf("%w: range %d", ErrRangeOpen, rangeID)
	}
	l.ranges[rangeID] = t
	l.rangesMu.Unlock()
	if legacy != nil {
		legacy.SetHeartbeatHandler(t.legacyHeartbeat)
		t.wg.Add(1)
		go t.mergeLegacy()
	}
	return t, nil
}

func (l *Link) rangeTransport(id uint64) *RangeTransport {
	l.rangesMu.RLock()
	defer l.rangesMu.RUnlock()
	return l.ranges[id]
}

func (l *Link) removeRange(t *RangeTransport) {
	l.rangesMu.Lock()
	if l.ranges[t.id] == t {
		delete(l.ranges, t.id)
	}
	l.rangesMu.Unlock()
}

// Stats are the Link's counters since it started.
type Stats struct {
	// MessagesSent counts requests, responses and pings written;
	// Writes counts the vectored writes that carried them, and BytesSent
	// their bytes on the wire (frame headers included).
	MessagesSent, Writes, BytesSent uint64
	// MessagesReceived and BytesReceived count the other way.
	MessagesReceived, BytesReceived uint64
	// Dials counts connections opened (link and snapshot streams);
	// LegacyFallbacks counts the times a peer was found to speak only
	// per-range streams.
	Dials, LegacyFallbacks uint64
	// LegacyCalls counts calls that went through a range's legacy
	// transport, LegacyReceived the RPCs that came in through one. Both
	// stay still once every node of the cluster speaks the link.
	LegacyCalls, LegacyReceived uint64
	// ConfirmRequests counts the leadership-question requests answered by
	// peers, ConfirmQuestions the ranges' questions they carried: their
	// ratio is how many ranges share one (link version 2).
	ConfirmRequests, ConfirmQuestions uint64
}

type stats struct {
	msgsSent, writes, bytesSent, msgsRecv, bytesRecv, dials, fallbacks, legacyCalls, legacyRecv atomic.Uint64
	confirmRequests, confirmQuestions                                                           atomic.Uint64
}

// Stats returns a snapshot of the counters.
func (l *Link) Stats() Stats {
	return Stats{
		MessagesSent: l.st.msgsSent.Load(), Writes: l.st.writes.Load(), BytesSent: l.st.bytesSent.Load(),
		MessagesReceived: l.st.msgsRecv.Load(), BytesReceived: l.st.bytesRecv.Load(),
		Dials: l.st.dials.Load(), LegacyFallbacks: l.st.fallbacks.Load(), LegacyCalls: l.st.legacyCalls.Load(), LegacyReceived: l.st.legacyRecv.Load(),
		ConfirmRequests: l.st.confirmRequests.Load(), ConfirmQuestions: l.st.confirmQuestions.Load(),
	}
}

// accept serves the connections peers open until the listener closes.
func (l *Link) accept() {
	backoff := 5 * time.Millisecond
	for {
		nc, err := l.cfg.Listener.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("link: accept failed; retrying", "err", err, "backoff", backoff)
			select {
			case <-time.After(backoff):
			case <-l.done:
				return
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 5 * time.Millisecond
		if !l.spawn(func() { l.serve(nc) }) {
			nc.Close()
			return
		}
	}
}
