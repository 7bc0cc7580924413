package client

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
)

// maxPoolSize bounds how far leader hints can grow the endpoint list, and
// how many connections routing may open, so a misbehaving server cannot make
// the client hoard connections.
const maxPoolSize = 64

// errPoolFull is returned by routedConn when a new address would exceed
// maxPoolSize; the caller then uses the sticky endpoint instead.
var errPoolFull = errors.New("dialkv client: connection pool full")

// pool holds the failover order, the sticky current endpoint and one
// connection per address ever used.
type pool struct {
	dial func(addr string) (*grpc.ClientConn, error)

	mu struct {
		sync.Mutex
		endpoints []string // failover order; leader hints append to it
		cur       int      // index into endpoints
		conns     map[string]*grpc.ClientConn
		closed    bool
	}
}

func newPool(endpoints []string, dial func(string) (*grpc.ClientConn, error)) *pool {
	p := &pool{dial: dial}
	p.mu.endpoints = endpoints
	p.mu.conns = make(map[string]*grpc.ClientConn)
	return p
}

// current returns the sticky endpoint and its connection.
func (p *pool) current() (string, *grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ep := p.mu.endpoints[p.mu.cur]
	cc, err := p.connLocked(ep)
	return ep, cc, err
}

// conn returns the connection to addr, which need not be in the failover
// order (Status asks arbitrary nodes).
func (p *pool) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.connLocked(addr)
}

// routedConn returns the connection to addr, a node the routing table named.
// Routed addresses join the connections but not the failover order, and a
// new one is refused with errPoolFull once maxPoolSize connections exist.
func (p *pool) routedConn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return nil, ErrClosed
	}
	if cc, ok := p.mu.conns[addr]; ok {
		return cc, nil
	}
	if len(p.mu.conns) >= maxPoolSize {
		return nil, errPoolFull
	}
	return p.connLocked(addr)
}

func (p *pool) connLocked(addr string) (*grpc.ClientConn, error) {
	if p.mu.closed {
		return nil, ErrClosed
	}
	if cc, ok := p.mu.conns[addr]; ok {
		return cc, nil
	}
	cc, err := p.dial(addr)
	if err != nil {
		return nil, fmt.Errorf("dialkv client: connect %s: %w", addr, err)
	}
	p.mu.conns[addr] = cc
	return cc, nil
}

// advance moves the sticky endpoint after failed refused a request: to hint
// when the server named a leader, else to the next endpoint. If another
// goroutine already moved away from failed, the move is not repeated.
func (p *pool) advance(failed, hint string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	eps := p.mu.endpoints
	if hint != "" && hint != failed {
		if i := slices.Index(eps, hint); i >= 0 {
			p.mu.cur = i
			return hint
		}
		if len(eps) < maxPoolSize {
			p.mu.endpoints = append(eps, hint)
			p.mu.cur = len(p.mu.endpoints) - 1
			return hint
		}
	}
	if eps[p.mu.cur] == failed {
		p.mu.cur = (p.mu.cur + 1) % len(eps)
	}
	return p.mu.endpoints[p.mu.cur]
}

func (p *pool) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.mu.endpoints)
}

func (p *pool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mu.closed {
		return nil
	}
	p.mu.closed = true
	var errs []error
	for addr, cc := range p.mu.conns {
		if err := cc.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", addr, err))
		}
	}
	p.mu.conns = nil
	return errors.Join(errs...)
}

// dialable reports whether addr, announced by a server, can be dialled: a
// valid host:port that is not a wildcard listen address.
func dialable(addr string) bool {
	if validateEndpoint(addr) != nil {
		return false
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return false
	}
	return true
}

// validateEndpoint accepts host:port with a non-empty host and a port in
// 1..65535.
func validateEndpoint(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		return fmt.Errorf("endpoint %q: want host:port: %w", ep, err)
	}
	if host == "" {
		return fmt.Errorf("endpoint %q: missing host", ep)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("endpoint %q: bad port %q", ep, port)
	}
	return nil
}

// normalizeEndpoints trims, validates and de-duplicates, keeping order.
func normalizeEndpoints(in []string) ([]string, error) {
	var out []string
	for _, ep := range in {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		if err := validateEndpoint(ep); err != nil {
			return nil, fmt.Errorf("dialkv client: %w", err)
		}
		if !slices.Contains(out, ep) {
			out = append(out, ep)
		}
	}
	if len(out) == 0 {
		return nil, ErrNoEndpoints
	}
	return out, nil
}
