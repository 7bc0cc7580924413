package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// routeCache is the node's copy of the routing table in the meta range:
// which range holds a key, its replicas and leader hint, and every node's
// addresses. It is refreshed when older than routeTTL or invalidated (after
// a split, a registration, or a request that found it wrong).
type routeCache struct {
	n *Node

	mu          sync.Mutex
	seeds       []string // peers' Raft addresses (internal gRPC via the mux)
	seedClients []string // members' public gRPC addresses (--join)
	seedConns   map[string]*grpc.ClientConn
	table       *kvpb.RangesResponse
	fetched     time.Time
}

const routeTTL = 2 * time.Second

func (r *routeCache) addSeed(raftAddr string) {
	r.mu.Lock()
	r.seeds = append(r.seeds, raftAddr)
	r.mu.Unlock()
}

func (r *routeCache) addSeedClient(grpcAddr string) {
	r.mu.Lock()
	r.seedClients = append(r.seedClients, grpcAddr)
	r.mu.Unlock()
}

func (r *routeCache) invalidate() {
	r.mu.Lock()
	r.fetched = time.Time{}
	r.mu.Unlock()
}

// joinCandidate stands for the --join address among metaCandidates.
const joinCandidate = "grpc://"

// peersFromSeed asks the --join address (a member's client port) for the
// members' peer addresses, and remembers them as seeds.
func (r *routeCache) peersFromSeed(ctx context.Context, n *Node) ([]string, error) {
	conn, err := r.seedConn(n)
	if err != nil {
		return nil, err
	}
	resp, err := kvpb.NewClusterClient(conn).Members(ctx, &kvpb.MembersRequest{})
	if err != nil {
		return nil, fmt.Errorf("replication: members from the --join address: %w", err)
	}
	var out []string
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range resp.Members {
		if m.RaftAddr == "" {
			continue
		}
		out = append(out, m.RaftAddr)
		if !slices.Contains(r.seeds, m.RaftAddr) {
			r.seeds = append(r.seeds, m.RaftAddr)
		}
	}
	return out, nil
}

// seedConn returns a connection to the --join address.
func (r *routeCache) seedConn(_ *Node) (*grpc.ClientConn, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seedClients) == 0 {
		return nil, fmt.Errorf("%w: no meta replica or seed known", ErrNoLeader)
	}
	addr := r.seedClients[0]
	if conn, ok := r.seedConns[addr]; ok {
		return conn, nil
	}
	conn, err := dialPublic(addr, r.n.cfg.ClientTLS)
	if err != nil {
		return nil, err
	}
	if r.seedConns == nil {
		r.seedConns = map[string]*grpc.ClientConn{}
	}
	r.seedConns[addr] = conn
	return conn, nil
}

func (r *routeCache) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.seedConns {
		c.Close()
	}
	r.seedConns = nil
}

// cached returns the table if fresh, else nil.
func (r *routeCache) cached() *kvpb.RangesResponse {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.table != nil && time.Since(r.fetched) < routeTTL {
		return r.table
	}
	return nil
}

// get returns the routing table, fetching it from the meta range if the
// cached copy is stale.
func (r *routeCache) get(ctx context.Context) (*kvpb.RangesResponse, error) {
	if t := r.cached(); t != nil {
		return t, nil
	}
	t, err := r.n.fetchRoutes(ctx)
	if err != nil {
		r.mu.Lock()
		old := r.table
		r.mu.Unlock()
		if old != nil {
			return old, nil // a stale table beats none; errors correct it
		}
		return nil, err
	}
	r.mu.Lock()
	r.table, r.fetched = t, time.Now()
	r.mu.Unlock()
	return t, nil
}

// metaCandidates lists whom to ask for meta requests, best first: the
// meta leader hint and meta replicas of the cached table, every other node
// it names, the initial cluster, then "grpc://" for the --join address.
func (r *routeCache) metaCandidates(self string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	seen := map[string]bool{self: true, "": true}
	add := func(a string) {
		if !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	if t := r.table; t != nil {
		addr := map[string]string{}
		for _, node := range t.Nodes {
			if node.State != NodeRemoved {
				addr[node.Id] = node.RaftAddr
			}
		}
		for _, d := range t.Ranges {
			if d.Id == raftstore.MetaRangeID {
				add(addr[d.Leader])
				for _, id := range d.Replicas {
					add(addr[id])
				}
			}
		}
		for _, node := range t.Nodes {
			add(addr[node.Id])
		}
	}
	for _, s := range r.seeds {
		add(s)
	}
	if len(r.seedClients) > 0 {
		add(joinCandidate)
	}
	return out
}

// metaLeaderAddr is the peer address of the meta range's leader as a
// fresh cached table names it, or "".
func (r *routeCache) metaLeaderAddr() string {
	t := r.cached()
	if t == nil {
		return ""
	}
	var leader string
	for _, d := range t.Ranges {
		if d.Id == raftstore.MetaRangeID {
			leader = d.Leader
		}
	}
	for _, node := range t.Nodes {
		if node.Id == leader && node.State != NodeRemoved {
			return node.RaftAddr
		}
	}
	return ""
}

func (r *routeCache) knowsNode(id, raftAddr string) bool {
	t := r.cached()
	if t == nil {
		return true // unknown: do not re-register on a guess
	}
	for _, node := range t.Nodes {
		if node.Id == id {
			return node.RaftAddr == raftAddr
		}
	}
	return false
}

// fetchRoutes reads the whole meta range and builds the routing table. The
// meta range's own descriptor is kept in Ranges (callers filter it out).
func (n *Node) fetchRoutes(ctx context.Context) (*kvpb.RangesResponse, error) {
	// Only the routing prefixes: the meta range also holds every lease,
	// which a routing table has no use for.
	resp, err := n.MetaScan(ctx, &kvpb.MetaScanRequest{Prefixes: [][]byte{
		[]byte(metaRangePrefix), []byte(metaLeaderPrefix), []byte(metaNodePrefix), []byte(metaNodeStatePrefix),
	}})
	if err != nil {
		return nil, err
	}
	ranges := map[uint64]*kvpb.RangeDescriptor{}
	leaders := map[uint64]string{}
	nodes := map[string]*kvpb.NodeInfo{}
	states := map[string]string{}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if len(kv.Value) < raftstore.VersionLen {
			continue
		}
		body := kv.Value[raftstore.VersionLen:]
		switch {
		case strings.HasPrefix(k, metaRangePrefix):
			d := &kvpb.RangeDescriptor{}
			if proto.Unmarshal(body, d) == nil {
				ranges[d.Id] = d
			}
		case strings.HasPrefix(k, metaLeaderPrefix) && len(kv.Key) == len(metaLeaderPrefix)+8:
			leaders[binary.BigEndian.Uint64(kv.Key[len(metaLeaderPrefix):])] = string(body)
		case strings.HasPrefix(k, metaNodeStatePrefix):
			states[k[len(metaNodeStatePrefix):]] = string(body)
		case strings.HasPrefix(k, metaNodePrefix):
			info := &kvpb.NodeInfo{}
			if proto.Unmarshal(body, info) == nil {
				nodes[info.Id] = info
			}
		}
	}
	out := &kvpb.RangesResponse{}
	for id, d := range ranges {
		if l, ok := leaders[id]; ok {
			d.Leader = l
		}
		out.Ranges = append(out.Ranges, d)
	}
	sort.Slice(out.Ranges, func(i, j int) bool {
		a, b := out.Ranges[i], out.Ranges[j]
		if (a.Id == raftstore.MetaRangeID) != (b.Id == raftstore.MetaRangeID) {
			return a.Id == raftstore.MetaRangeID
		}
		return bytes.Compare(a.Start, b.Start) < 0
	})
	for _, info := range nodes {
		info.State = NodeActive
		if st, ok := states[info.Id]; ok {
			info.State = st
		}
		out.Nodes = append(out.Nodes, info)
	}
	sort.Slice(out.Nodes, func(i, j int) bool { return out.Nodes[i].Id < out.Nodes[j].Id })
	return out, nil
}

// userRanges drops the meta range from a table's ranges.
func userRanges(t *kvpb.RangesResponse) []*kvpb.RangeDescriptor {
	out := make([]*kvpb.RangeDescriptor, 0, len(t.Ranges))
	for _, d := range t.Ranges {
		if d.Id != raftstore.MetaRangeID {
			out = append(out, d)
		}
	}
	return out
}

func containsKey(d *kvpb.RangeDescriptor, key []byte) bool {
	return bytes.Compare(key, d.Start) >= 0 && (len(d.End) == 0 || bytes.Compare(key, d.End) < 0)
}

// remoteTarget picks the node to send a request for key to when this node
// holds no replica of its range: the leader hint, else a replica.
func (n *Node) remoteTarget(ctx context.Context, key []byte) (raftAddr string, err error) {
	for attempt := 0; attempt < 2; attempt++ {
		t, err := n.routes.get(ctx)
		if err != nil {
			return "", err
		}
		addrs := map[string]string{}
		for _, node := range t.Nodes {
			addrs[node.Id] = node.RaftAddr
		}
		for _, d := range userRanges(t) {
			if !containsKey(d, key) {
				continue
			}
			for _, id := range append([]string{d.Leader}, d.Replicas...) {
				if a := addrs[id]; a != "" && id != n.cfg.NodeID {
					return a, nil
				}
			}
		}
		n.routes.invalidate()
	}
	return "", fmt.Errorf("%w: no known node holds key %q", ErrKeyOutOfRange, key)
}

// forwardRemote sends a request for key to a node that holds its range.
func forwardRemote[T any](ctx context.Context, n *Node, key []byte, call func(context.Context, grpc.ClientConnInterface) (T, error)) (T, error) {
	var zero T
	if hops(ctx) >= maxHops {
		return zero, fmt.Errorf("%w: key %q (forwarded %d times)", ErrKeyOutOfRange, key, hops(ctx))
	}
	addr, err := n.remoteTarget(ctx, key)
	if err != nil {
		return zero, err
	}
	conn, err := n.peer(addr)
	if err != nil {
		return zero, err
	}
	return call(forwardContext(ctx), conn)
}

// localShard returns this node's replica of the user range holding key.
func (n *Node) localShard(key []byte) (*shard.Shard, error) {
	n.splitMu.RLock()
	defer n.splitMu.RUnlock()
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, s := range n.shards {
		if s.FSM().HoldsUserKey(key) {
			return s, nil
		}
	}
	return nil, ErrKeyOutOfRange
}

// Ranges returns the routing table (user ranges in key order, and nodes).
func (n *Node) Ranges(ctx context.Context, _ *kvpb.RangesRequest) (*kvpb.RangesResponse, error) {
	t, err := n.fetchRoutes(ctx)
	if err != nil {
		return nil, err
	}
	return &kvpb.RangesResponse{Ranges: userRanges(t), Nodes: t.Nodes}, nil
}
