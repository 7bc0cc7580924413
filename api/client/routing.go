package client

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// Routing cache timings.
const (
	// RoutingTTL is how long a fetched routing table is trusted without
	// refreshing. An older table is still used while a refresh runs in the
	// background; an error naming a wrong range or a non-leader drops it.
	RoutingTTL = 5 * time.Second
	// routeFetchTimeout bounds one Ranges call made for routing.
	routeFetchTimeout = 2 * time.Second
	// routeRetryAfter is the pause after a failed fetch before the next, so
	// that a cluster without the Ranges RPC, or unreachable, is not asked
	// before every request.
	routeRetryAfter = time.Second
)

// Node states in the registry (kvpb.NodeInfo.State).
const (
	NodeActive          = "active"
	NodeDecommissioning = "decommissioning"
	NodeRemoved         = "removed"
)

// routeSpec says how a keyed request may be routed.
type routeSpec struct {
	key []byte
	// follower is set for reads at the weaker levels (bounded, session,
	// stale), which any replica may serve.
	follower bool
	// chosen is set by invoke when a routed attempt answered: why the
	// router picked that node (for a read explanation).
	chosen string
}

// explain puts why the router chose the node that answered in front of the
// node's own reason, when the read asked for an explanation.
func (s *routeSpec) explain(h *kvpb.ReadHeader) {
	if e := h.GetExplain(); e != nil && s.chosen != "" {
		e.ChosenBecause = s.chosen + "; " + e.GetChosenBecause()
	}
}

// readRoute returns the routeSpec of a read of key with read options o.
func readRoute(key []byte, o *kvpb.ReadOptions) *routeSpec {
	switch o.GetConsistency() {
	case kvpb.Consistency_CONSISTENCY_BOUNDED, kvpb.Consistency_CONSISTENCY_SESSION, kvpb.Consistency_CONSISTENCY_STALE:
		return &routeSpec{key: key, follower: true}
	}
	return &routeSpec{key: key}
}

// routeTable is one fetched RangesResponse, indexed.
type routeTable struct {
	version uint64
	fetched time.Time
	ranges  []*kvpb.RangeDescriptor // sorted by start key
	nodes   map[string]*kvpb.NodeInfo
	locs    map[string]rpctypes.Locality // the nodes' that parse
}

// find returns the range holding key, or nil.
func (t *routeTable) find(key []byte) *kvpb.RangeDescriptor {
	i := sort.Search(len(t.ranges), func(i int) bool { return bytes.Compare(t.ranges[i].GetStart(), key) > 0 }) - 1
	if i < 0 {
		return nil
	}
	d := t.ranges[i]
	if end := d.GetEnd(); len(end) > 0 && bytes.Compare(key, end) >= 0 {
		return nil
	}
	return d
}

// router caches the routing table and picks an endpoint for a key. It never
// decides whether a request may be retried: a request it cannot route, or
// whose routed attempt failed, goes to the sticky endpoint, which forwards.
type router struct {
	ttl   time.Duration
	now   func() time.Time
	log   *slog.Logger
	fetch func(ctx context.Context) (*kvpb.RangesResponse, error)
	rr    atomic.Uint64 // round-robin among equally near replicas
	// self is the client's own locality (Config.Locality) and endpoints
	// the endpoints it was given, in order: a weaker read goes to the
	// replica nearest by locality, else the first of them that holds one.
	self      rpctypes.Locality
	endpoints []string

	mu struct {
		sync.Mutex
		table    *routeTable
		version  uint64
		inflight chan struct{} // closed when the running fetch ends
		failedAt time.Time     // last failed fetch
		down     map[string]time.Time
	}
}

func newRouter(fetch func(context.Context) (*kvpb.RangesResponse, error), log *slog.Logger, self rpctypes.Locality, endpoints []string) *router {
	r := &router{ttl: RoutingTTL, now: time.Now, log: log, fetch: fetch, self: self, endpoints: endpoints}
	r.mu.down = make(map[string]time.Time)
	return r
}

// table returns a routing table, fetching one when there is none. An
// expired table is returned as is while a refresh runs in the background.
// It returns nil when no table could be had before ctx ended or when a
// recent fetch failed.
func (r *router) table(ctx context.Context) *routeTable {
	for waited := false; ; waited = true {
		r.mu.Lock()
		now := r.now()
		t := r.mu.table
		if t != nil && now.Sub(t.fetched) < r.ttl {
			r.mu.Unlock()
			return t
		}
		if r.mu.inflight == nil && !waited && (r.mu.failedAt.IsZero() || now.Sub(r.mu.failedAt) >= routeRetryAfter) {
			r.startFetchLocked(ctx)
		}
		ch := r.mu.inflight
		r.mu.Unlock()
		if t != nil || ch == nil || waited {
			return t
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		}
	}
}

// startFetchLocked fetches the table in the background. The fetch outlives
// the caller's cancellation so that the requests waiting on it, and the
// next ones, get its result.
func (r *router) startFetchLocked(ctx context.Context) {
	ch := make(chan struct{})
	r.mu.inflight = ch
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), routeFetchTimeout)
	go func() {
		defer cancel()
		resp, err := r.fetch(fctx)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.mu.inflight = nil
		close(ch)
		if err != nil {
			r.mu.failedAt = r.now()
			r.log.Debug("dialkv client: routing table fetch failed", "err", err)
			return
		}
		r.mu.failedAt = time.Time{}
		r.storeLocked(resp)
	}()
}

// store caches resp as the current table.
func (r *router) store(resp *kvpb.RangesResponse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.storeLocked(resp)
}

func (r *router) storeLocked(resp *kvpb.RangesResponse) {
	r.mu.version++
	t := &routeTable{
		version: r.mu.version,
		fetched: r.now(),
		ranges:  slices.Clone(resp.GetRanges()),
		nodes:   make(map[string]*kvpb.NodeInfo, len(resp.GetNodes())),
		locs:    map[string]rpctypes.Locality{},
	}
	slices.SortStableFunc(t.ranges, func(a, b *kvpb.RangeDescriptor) int { return bytes.Compare(a.GetStart(), b.GetStart()) })
	for _, n := range resp.GetNodes() {
		t.nodes[n.GetId()] = n
		if loc, err := rpctypes.ParseLocality(n.GetLocality()); err == nil && loc != nil {
			t.locs[n.GetId()] = loc
		}
	}
	r.mu.table = t
}

// invalidate drops the table of the given version, unless a newer one has
// replaced it meanwhile. The next request fetches a fresh one.
func (r *router) invalidate(version uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mu.table != nil && r.mu.table.version == version {
		r.mu.table = nil
	}
}

// invalidateAll drops the table whatever its version, after a change the
// client made itself (a split, a membership change).
func (r *router) invalidateAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.mu.table = nil
}

// markDown avoids addr for routing until the table's TTL has passed.
func (r *router) markDown(addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	for a, until := range r.mu.down {
		if !now.Before(until) {
			delete(r.mu.down, a)
		}
	}
	r.mu.down[addr] = now.Add(r.ttl)
}

// pick returns the gRPC address to send a request for spec to, the
// version of the table that named it, and why that node. ok is false when
// the request should go to the sticky endpoint instead.
//
// A write or a linearizable read goes to the range's leader. A weaker read
// goes to the nearest replica, leader included: the one sharing the most
// leading locality tiers with the client; of those, the first of the
// client's own endpoints that holds one (so "--endpoints NODE" reads from
// NODE when it can, as etcd's serializable reads do); of the rest, the
// followers in turn, sparing the leader.
func (r *router) pick(ctx context.Context, spec *routeSpec) (addr string, version uint64, why string, ok bool) {
	t := r.table(ctx)
	if t == nil {
		return "", 0, "", false
	}
	d := t.find(spec.key)
	if d == nil {
		return "", 0, "", false
	}
	r.mu.Lock()
	now := r.now()
	usable := func(id string) string {
		n := t.nodes[id]
		if id == "" || n == nil || n.GetState() == NodeRemoved || !dialable(n.GetGrpcAddr()) {
			return ""
		}
		if until, ok := r.mu.down[n.GetGrpcAddr()]; ok && now.Before(until) {
			return ""
		}
		return n.GetGrpcAddr()
	}
	leader := usable(d.GetLeader())
	var near []replicaChoice
	if spec.follower {
		for _, id := range d.GetReplicas() {
			if a := usable(id); a != "" {
				near = r.nearest(near, replicaChoice{addr: a, leader: id == d.GetLeader(), loc: t.locs[id]})
			}
		}
	}
	r.mu.Unlock()
	if len(near) > 0 {
		c := near[r.rr.Add(1)%uint64(len(near))]
		return c.addr, t.version, r.why(c), true
	}
	if leader == "" {
		return "", 0, "", false
	}
	return leader, t.version, "routed to the range's leader", true
}

// replicaChoice is a replica a weaker read may go to, with what makes it
// near: the locality tiers it shares with the client, its place in the
// client's endpoints (len(endpoints) when absent), whether it leads.
type replicaChoice struct {
	addr     string
	leader   bool
	loc      rpctypes.Locality
	shared   int
	endpoint int
}

// nearest adds c to best, the nearest replicas so far, or replaces them
// when c is nearer.
func (r *router) nearest(best []replicaChoice, c replicaChoice) []replicaChoice {
	c.shared = r.self.Shared(c.loc)
	c.endpoint = len(r.endpoints)
	if i := slices.Index(r.endpoints, c.addr); i >= 0 {
		c.endpoint = i
	}
	if len(best) == 0 {
		return []replicaChoice{c}
	}
	b := best[0]
	switch {
	case c.shared != b.shared:
		if c.shared > b.shared {
			return []replicaChoice{c}
		}
		return best
	case c.endpoint != b.endpoint:
		if c.endpoint < b.endpoint {
			return []replicaChoice{c}
		}
		return best
	case c.leader != b.leader:
		if !c.leader {
			return []replicaChoice{c}
		}
		return best
	}
	return append(best, c)
}

// why says why the router chose c.
func (r *router) why(c replicaChoice) string {
	switch {
	case c.shared > 0:
		return fmt.Sprintf("nearest replica by locality %s (the client's is %s)", c.loc[c.shared-1], r.self)
	case c.endpoint == 0:
		return fmt.Sprintf("the first endpoint given (%s) holds a replica", c.addr)
	case c.endpoint < len(r.endpoints):
		return fmt.Sprintf("the first endpoint given that holds a replica (%s)", c.addr)
	}
	none := "no endpoint given holds a replica"
	if len(r.self) > 0 {
		none = "no replica shares the client's locality " + r.self.String() + " and " + none
	}
	if c.leader {
		return none + ", and no follower is reachable: the leader"
	}
	return none + ": a follower, in turn"
}

// staleRoute reports whether a routed attempt's error says the table was
// wrong: the node does not hold the range, is not its leader, or the range
// has no leader.
func staleRoute(err error) bool {
	switch rpctypes.ReasonOf(err) {
	case rpctypes.ReasonWrongRange, rpctypes.ReasonUnknownRange, rpctypes.ReasonNotLeader,
		rpctypes.ReasonNoLeader, rpctypes.ReasonShuttingDown:
		return true
	}
	return false
}

// unreachable reports an error of the transport rather than of a dialkv
// server: the routed node could not be reached or did not answer.
func unreachable(err error) bool {
	if rpctypes.InfoOf(err) != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}
