package jepsen

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/harness"
)

// Network faults are injected by userspace TCP proxies on 127.0.0.1: every
// node dials each peer's Raft address through a proxy of its own (kvd's
// --peer-proxy), so the harness sits on every directed node-to-node link.
//
// A TCP connection opened by node A to node B carries bytes both ways: A's
// requests to B, and B's answers to A. The proxy for A->B therefore applies
// link A->B to the bytes A sends and link B->A to the bytes coming back, and
// so does every connection of the proxy B->A in the other sense. A directed
// link can be:
//
//   - up, optionally with a delay (and jitter) added to every chunk of bytes,
//     order preserved: a slow link;
//   - dropped: bytes sent over it vanish, as in a network partition where
//     packets are lost. Connections stay open (the sender sees nothing but
//     silence and must time out); a connection that lost bytes has a broken
//     stream, so it is closed when the link heals and the node redials;
//   - rejected: like dropped, but existing connections are reset at once and
//     new ones are closed as soon as they are accepted, as a firewall that
//     answers with RST would.
//
// A one-way partition A-/->B drops link A->B only: B still hears nothing
// from A, but A hears B.

// Link is the state of one directed link.
type Link struct {
	Drop   bool          // bytes sent over the link are lost
	Reject bool          // connections are reset (implies Drop)
	Delay  time.Duration // added to every chunk
	Jitter time.Duration // uniform extra delay in [0, Jitter), order preserved
}

// Up reports whether the link carries bytes at all.
func (l Link) Up() bool { return !l.Drop && !l.Reject }

func (l Link) String() string {
	switch {
	case l.Reject:
		return "reject"
	case l.Drop:
		return "drop"
	case l.Delay > 0 || l.Jitter > 0:
		return fmt.Sprintf("delay %v+%v", l.Delay, l.Jitter)
	}
	return "up"
}

// Net is the set of proxies between the nodes of one cluster. Create it
// before the cluster and pass its PeerAddr as Options.PeerAddr.
//
// Locking: acquire Net.mu before a proxy's mu (Stats), never the other way:
// a proxy reads its links (Net.link, taking Net.mu) before it takes its own
// mu, and Set releases Net.mu before it has the proxies reconsider.
type Net struct {
	logf func(string, ...any)

	// mu guards the fields below.
	mu      sync.Mutex
	n       int
	links   map[[2]int]Link
	proxies map[[2]int]*proxy
	closed  bool
}

// NewNet returns an empty network for n nodes; proxies are created by
// PeerAddr.
func NewNet(n int, logf func(string, ...any)) *Net {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Net{logf: logf, n: n, links: map[[2]int]Link{}, proxies: map[[2]int]*proxy{}}
}

// PeerAddr returns the address node from dials to reach node to: a proxy
// listening on 127.0.0.1, created on first use, that forwards to raftAddr.
func (nt *Net) PeerAddr(from, to int, raftAddr string) (string, error) {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	if nt.closed {
		return "", errors.New("jepsen: net is closed")
	}
	if host, _, err := net.SplitHostPort(raftAddr); err != nil || !net.ParseIP(host).IsLoopback() {
		return "", fmt.Errorf("jepsen: proxies only forward to 127.0.0.0/8, not %q", raftAddr)
	}
	key := [2]int{from, to}
	if p := nt.proxies[key]; p != nil {
		p.setTarget(raftAddr)
		return p.addr(), nil
	}
	p, err := newProxy(nt, from, to, raftAddr)
	if err != nil {
		return "", err
	}
	nt.proxies[key] = p
	return p.addr(), nil
}

// link returns the state of link from->to.
func (nt *Net) link(from, to int) Link {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	return nt.links[[2]int{from, to}]
}

// Set changes links: every from->to pair in pairs gets state l.
func (nt *Net) Set(l Link, pairs ...[2]int) {
	nt.mu.Lock()
	var affected []*proxy
	for _, p := range pairs {
		if p[0] == p[1] {
			continue
		}
		old := nt.links[p]
		if l == (Link{}) {
			delete(nt.links, p)
		} else {
			nt.links[p] = l
		}
		// Both proxies carry bytes of link p: a->b's requests and b->a's
		// answers.
		if !old.Up() || !l.Up() {
			affected = append(affected, nt.proxies[p], nt.proxies[[2]int{p[1], p[0]}])
		}
	}
	nt.mu.Unlock()
	for _, p := range affected {
		if p != nil {
			p.reconsider()
		}
	}
}

// Heal restores every link to up with no delay.
func (nt *Net) Heal() {
	nt.mu.Lock()
	var pairs [][2]int
	for p := range nt.links {
		pairs = append(pairs, p)
	}
	nt.mu.Unlock()
	nt.Set(Link{}, pairs...)
}

// Faulty lists the links that are not plainly up, as "n1->n2 drop".
func (nt *Net) Faulty() []string {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	var out []string
	for p, l := range nt.links {
		out = append(out, fmt.Sprintf("%s->%s %v", nodeID(p[0]), nodeID(p[1]), l))
	}
	sort.Strings(out)
	return out
}

// Stats returns, per proxy "n1->n2", the bytes forwarded and dropped.
func (nt *Net) Stats() map[string][2]int64 {
	nt.mu.Lock()
	defer nt.mu.Unlock()
	out := map[string][2]int64{}
	for k, p := range nt.proxies {
		p.mu.Lock()
		out[nodeID(k[0])+"->"+nodeID(k[1])] = [2]int64{p.forwarded, p.dropped}
		p.mu.Unlock()
	}
	return out
}

// Close stops every proxy and closes every proxied connection.
func (nt *Net) Close() error {
	nt.mu.Lock()
	nt.closed = true
	ps := make([]*proxy, 0, len(nt.proxies))
	for _, p := range nt.proxies {
		ps = append(ps, p)
	}
	nt.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
	return nil
}

// proxy forwards connections from node `from` to node `to`.
type proxy struct {
	nt       *Net
	from, to int
	ln       net.Listener

	// mu guards the fields below; see Net for the lock order.
	mu        sync.Mutex
	target    string
	conns     map[*pconn]struct{}
	closed    bool
	forwarded int64
	dropped   int64
}

func newProxy(nt *Net, from, to int, target string) (*proxy, error) {
	ln, err := harness.ListenLocal()
	if err != nil {
		return nil, fmt.Errorf("jepsen: proxy %s->%s: %w", nodeID(from), nodeID(to), err)
	}
	p := &proxy{nt: nt, from: from, to: to, ln: ln, target: target, conns: map[*pconn]struct{}{}}
	go p.accept()
	return p, nil
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) setTarget(t string) {
	p.mu.Lock()
	p.target = t
	p.mu.Unlock()
}

func (p *proxy) name() string { return nodeID(p.from) + "->" + nodeID(p.to) }

// up and down are the links for bytes sent by the dialling node and for
// the answers.
func (p *proxy) up() Link   { return p.nt.link(p.from, p.to) }
func (p *proxy) down() Link { return p.nt.link(p.to, p.from) }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if p.up().Reject || p.down().Reject {
			c.Close()
			continue
		}
		go p.serve(c)
	}
}

func (p *proxy) serve(client net.Conn) {
	p.mu.Lock()
	target := p.target
	p.mu.Unlock()
	server, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	pc := &pconn{p: p, client: client, server: server}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pc.close()
		return
	}
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	go pc.pump(client, server, p.up)
	go pc.pump(server, client, p.down)
}

// reconsider applies a link change to the open connections: reset them
// all when a link rejects, close those that lost bytes once both links
// are up again.
func (p *proxy) reconsider() {
	up, down := p.up(), p.down()
	p.mu.Lock()
	var victims []*pconn
	for pc := range p.conns {
		switch {
		case up.Reject || down.Reject:
			victims = append(victims, pc)
		case up.Up() && down.Up() && pc.lost.Load():
			victims = append(victims, pc)
		}
	}
	p.mu.Unlock()
	for _, pc := range victims {
		pc.close()
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	var all []*pconn
	for pc := range p.conns {
		all = append(all, pc)
	}
	p.mu.Unlock()
	for _, pc := range all {
		pc.close()
	}
}

// pconn is one proxied connection.
type pconn struct {
	p              *proxy
	client, server net.Conn
	once           sync.Once
	lost           atomic.Bool // bytes were dropped: the stream is broken
}

func (pc *pconn) close() {
	pc.once.Do(func() {
		pc.client.Close()
		pc.server.Close()
		pc.p.mu.Lock()
		delete(pc.p.conns, pc)
		pc.p.mu.Unlock()
	})
}

// chunk is a piece of the stream waiting for its delivery time.
type chunk struct {
	data []byte
	due  time.Time
}

// pump copies src to dst under the link state returned by link, read for
// every chunk. Delayed chunks go through a queue so that order is kept.
func (pc *pconn) pump(src, dst net.Conn, link func() Link) {
	defer pc.close()
	queue := make(chan chunk, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range queue {
			if d := time.Until(c.due); d > 0 {
				time.Sleep(d)
			}
			if _, err := dst.Write(c.data); err != nil {
				pc.close()
				for range queue {
				}
				return
			}
		}
	}()
	defer func() {
		close(queue)
		<-done
	}()
	var last time.Time
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			l := link()
			switch {
			case l.Reject:
				return
			case pc.lost.Load() && l.Up():
				// The link healed, but this stream already lost bytes:
				// forwarding the rest would splice two parts of the
				// stream together, which no real network does (TCP
				// delivers a stream whole or not at all) and which a
				// receiver may decode as a different, valid message.
				// Close it instead, as reconsider would, and let the node
				// redial.
				return
			case l.Drop:
				pc.lost.Store(true)
				pc.p.mu.Lock()
				pc.p.dropped += int64(n)
				pc.p.mu.Unlock()
			default:
				due := time.Now()
				if l.Delay > 0 || l.Jitter > 0 {
					due = due.Add(l.Delay)
					if l.Jitter > 0 {
						due = due.Add(rand.N(l.Jitter))
					}
				}
				if due.Before(last) {
					due = last
				}
				last = due
				queue <- chunk{data: append([]byte(nil), buf[:n]...), due: due}
				pc.p.mu.Lock()
				pc.p.forwarded += int64(n)
				pc.p.mu.Unlock()
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
				pc.p.nt.logf("jepsen: proxy %s: %v", pc.p.name(), err)
			}
			return
		}
	}
}
