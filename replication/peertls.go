package replication

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/internal/tlsconf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// errNotMember refuses a peer certificate naming a node the cluster does
// not have (never registered, or removed).
var errNotMember = errors.New("replication: peer certificate names a node that is not a member")

// peerGate decides, at the TLS handshake on the Raft port, whether the
// node a peer certificate names may talk to this node: a member of the
// routing table that was not removed, or a founding member the table does
// not list yet (bootstrap: members talk Raft before they register).
type peerGate struct {
	self    string
	initial map[string]bool
	node    atomic.Pointer[Node] // set once the node exists

	// refreshMu serialises refreshes of the table for unknown ids, and
	// lastRefresh throttles them: certificates of unknown nodes must not
	// turn into a stream of meta range scans.
	refreshMu   sync.Mutex
	lastRefresh time.Time
}

// gateRefresh bounds a handshake's wait for a fresh routing table, within
// the mux's header timeout.
const gateRefresh = 3 * time.Second

func newPeerGate(cfg Config) *peerGate {
	g := &peerGate{self: cfg.NodeID, initial: map[string]bool{}}
	for _, p := range cfg.InitialCluster {
		g.initial[p.ID] = true
	}
	return g
}

func (g *peerGate) allow(id string) error {
	if id == g.self {
		return nil
	}
	n := g.node.Load()
	if n == nil {
		return nilOr(g.initial[id], id)
	}
	if ok, known := g.member(n.routes.latest(), id); known {
		return nilOr(ok, id)
	}
	if g.initial[id] {
		// Not refreshed first: during bootstrap the meta range may not
		// have a leader until this very connection is let through.
		return nil
	}
	// Unknown to our copy of the table: a node added since (a join) is in
	// the meta range already, so look again, at most once a second.
	g.refreshMu.Lock()
	defer g.refreshMu.Unlock()
	if time.Since(g.lastRefresh) >= time.Second {
		g.lastRefresh = time.Now()
		ctx, cancel := context.WithTimeout(n.ctx, gateRefresh)
		n.routes.invalidate()
		_, err := n.routes.get(ctx)
		cancel()
		if err != nil {
			n.log.Debug("routing table refresh for a peer's handshake failed", "peer", id, "err", err)
		}
	}
	ok, _ := g.member(n.routes.latest(), id)
	return nilOr(ok, id)
}

func nilOr(ok bool, id string) error {
	if ok {
		return nil
	}
	return fmt.Errorf("%w: %q", errNotMember, id)
}

// member reports whether t lists id (known) and whether as a member that
// was not removed (ok).
func (g *peerGate) member(t *kvpb.RangesResponse, id string) (ok, known bool) {
	if t == nil {
		return false, false
	}
	for _, node := range t.Nodes {
		if node.Id == id {
			return node.State != NodeRemoved, true
		}
	}
	return false, false
}

// latest returns the last table fetched, however old (nil if none).
func (r *routeCache) latest() *kvpb.RangesResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.table
}

// peerTLS returns the Raft port's server and client TLS configurations
// (both nil without Config.PeerTLS).
func peerTLS(cfg Config, g *peerGate) (server, client *tls.Config, err error) {
	if cfg.PeerTLS == nil {
		return nil, nil, nil
	}
	if server, err = tlsconf.PeerServerConfig(cfg.PeerTLS, g.allow); err != nil {
		return nil, nil, err
	}
	if client, err = tlsconf.PeerClientConfig(cfg.PeerTLS); err != nil {
		return nil, nil, err
	}
	return server, client, nil
}

// dialPublic opens a client connection to a node's public gRPC address,
// over TLS when src is set (the client port's TLS is on).
func dialPublic(addr string, src *tlsconf.Source) (*grpc.ClientConn, error) {
	if src == nil {
		return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("replication: client address %q: %w", addr, err)
	}
	tc, err := tlsconf.ClientConfig(src, host)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
}

// announceJoin registers this node through the --join address before it
// dials any member: with peer TLS, members refuse the handshake of a node
// they do not know, so the node could not register itself over the Raft
// port. This is what `kvctl member add` does by hand.
func (n *Node) announceJoin(ctx context.Context) error {
	conn, err := n.routes.seedConn(n)
	if err != nil {
		return err
	}
	_, err = kvpb.NewClusterClient(conn).AddMember(ctx, &kvpb.AddMemberRequest{Id: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr})
	if err != nil {
		return fmt.Errorf("replication: add this node through the --join address: %w", err)
	}
	return nil
}
