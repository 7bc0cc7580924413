package replication

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// The meta range (raftstore.MetaRangeID) is an ordinary range whose keys
// describe the cluster. Every value starts with a raftstore.VersionLen-byte
// version and is written with OpPutIfNewer, so publishers may race and
// retry freely: an older fact never overwrites a newer one.
//
//	range/<id>      version(generation, config index) + RangeDescriptor
//	leader/<id>     version(term) + node id
//	node/<id>       version(registration time) + NodeInfo (addresses)
//	nodestate/<id>  version(change counter) + state (active, decommissioning, removed)
//	next-range-id   8-byte counter (OpIncrement)
//
// The range leaders keep their own entries current (publishLoop), and each
// node registers itself (registerLoop): the meta range is derived state
// that heals itself, while each range's own descriptor, replicated with
// its data, is the truth.
const (
	metaRangePrefix     = "range/"
	metaLeaderPrefix    = "leader/"
	metaNodePrefix      = "node/"
	metaNodeStatePrefix = "nodestate/"
	metaNextRangeID     = "next-range-id"

	// Node states.
	NodeActive          = "active"
	NodeDecommissioning = "decommissioning"
	NodeRemoved         = "removed"
)

func version(a, b uint64) []byte {
	return binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(make([]byte, 0, raftstore.VersionLen), a), b)
}

// parseVersion splits a versioned meta value into its version and body;
// ok is false for a value too short to hold a version.
func parseVersion(v []byte) (a, b uint64, body []byte, ok bool) {
	if len(v) < raftstore.VersionLen {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), v[raftstore.VersionLen:], true
}

func metaKeyID(prefix string, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(prefix), id)
}

// hops returns how many times the request has been forwarded.
func hops(ctx context.Context) int {
	v := metadata.ValueFromIncomingContext(ctx, rpctypes.ForwardedHeader)
	if len(v) == 0 {
		return 0
	}
	n, err := strconv.Atoi(v[len(v)-1])
	if err != nil {
		return 1 // an older peer's non-numeric mark: treat as one hop
	}
	return n
}

func metaHops(ctx context.Context) int {
	v := metadata.ValueFromIncomingContext(ctx, rpctypes.MetaHopsHeader)
	if len(v) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(v[len(v)-1])
	return n
}

func metaForwardContext(ctx context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(rpctypes.MetaHopsHeader, strconv.Itoa(metaHops(ctx)+1))
	return metadata.NewOutgoingContext(ctx, md)
}

// maxHops bounds forwarding: a node that does not hold a range sends the
// request to one that does (hop 1), which may send it to the leader (hop 2).
const maxHops = 2

// forwardContext marks ctx as forwarded once more.
func forwardContext(ctx context.Context) context.Context {
	h := hops(ctx) + 1
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(rpctypes.ForwardedHeader, strconv.Itoa(h))
	return metadata.NewOutgoingContext(ctx, md)
}

// metaDo runs a meta-range request: locally when this node leads the meta
// range, on its leader when this node holds a meta replica, and otherwise
// on the first node that can take it among the meta replicas and other
// nodes the routing table names (a node without a meta replica that is
// asked on someone's behalf refuses, so requests never wander).
func metaDo[T any](ctx context.Context, n *Node, local func(*shard.Shard) (T, error), remote func(context.Context, kvpb.InternalClient) (T, error)) (T, error) {
	return metaDoConn(ctx, n, local, func(ctx context.Context, cc grpc.ClientConnInterface) (T, error) {
		return remote(ctx, kvpb.NewInternalClient(cc))
	})
}

// metaDoConn is metaDo for a request another service of the meta leader's
// peer port takes (the Lease service): remote gets the connection.
func metaDoConn[T any](ctx context.Context, n *Node, local func(*shard.Shard) (T, error), remote func(context.Context, grpc.ClientConnInterface) (T, error)) (T, error) {
	var zero T
	s := n.shardByID(raftstore.MetaRangeID)
	if h := metaHops(ctx); h >= maxHops || (s == nil && h > 0) {
		if l := n.localMetaLeader(); l != nil {
			return local(l)
		}
		return zero, fmt.Errorf("%w for the meta range on %s", shard.ErrNotLeader, n.cfg.NodeID)
	}
	if s != nil {
		for attempt := 0; attempt < 3; attempt++ {
			if s.IsLeader() {
				resp, err := local(s)
				if !errors.Is(err, shard.ErrNotLeader) {
					return resp, err
				}
			}
			// A replica removed from the meta range never hears of a
			// leader again: wait briefly, then ask around.
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			id, addr, werr := s.WaitLeader(wctx)
			cancel()
			if werr != nil {
				break
			}
			if id == n.cfg.NodeID {
				continue // we just became its leader
			}
			conn, err := n.peer(addr)
			if err != nil {
				return zero, err
			}
			rc := &recordingConn{cc: conn}
			resp, err := remote(metaForwardContext(ctx), rc)
			if err == nil || !metaRetryable(err, rc) {
				return resp, err
			}
			break
		}
	}
	var lastErr error = fmt.Errorf("%w for the meta range: no node to ask", ErrNoLeader)
	candidates := n.routes.metaCandidates(n.cfg.RaftAddr)
	for i := 0; i < len(candidates) && i < 64; i++ {
		addr := candidates[i]
		if addr == joinCandidate {
			// The --join address is a client port, which serves no
			// Internal: learn the members' peer addresses from it and ask
			// them instead.
			peers, err := n.routes.peersFromSeed(ctx, n)
			if err != nil {
				lastErr = err
			}
			for _, p := range peers {
				if !slices.Contains(candidates, p) && p != n.cfg.RaftAddr {
					candidates = append(candidates, p)
				}
			}
			continue
		}
		conn, err := n.peer(addr)
		if err != nil {
			lastErr = err
			continue
		}
		rc := &recordingConn{cc: conn}
		resp, err := remote(metaForwardContext(ctx), rc)
		if err == nil || !metaRetryable(err, rc) {
			return resp, err
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return zero, fmt.Errorf("%w for the meta range: %w", ErrNoLeader, lastErr)
}

// metaRetryable reports whether another node may take a meta request that
// this one refused or could not be reached for (rc made the call).
func metaRetryable(err error, rc *recordingConn) bool {
	switch rpctypes.ReasonOf(err) {
	case rpctypes.ReasonNotLeader, rpctypes.ReasonNoLeader, rpctypes.ReasonShuttingDown:
		return true
	}
	return rc.neverSent(err)
}

// MetaPut writes a versioned value into the meta range.
func (n *Node) MetaPut(ctx context.Context, req *kvpb.MetaPutRequest) (*kvpb.MetaPutResponse, error) {
	return metaDo(ctx, n, func(s *shard.Shard) (*kvpb.MetaPutResponse, error) {
		res, err := s.Propose(ctx, &raftstore.Command{Op: raftstore.OpPutIfNewer, Key: req.Key, Value: req.Value})
		if err != nil {
			return nil, err
		}
		return &kvpb.MetaPutResponse{Written: !res.Existed}, nil
	}, func(ctx context.Context, c kvpb.InternalClient) (*kvpb.MetaPutResponse, error) {
		return c.MetaPut(ctx, req)
	})
}

// MetaIncrement adds one to a meta counter and returns the new value.
func (n *Node) MetaIncrement(ctx context.Context, req *kvpb.MetaIncrementRequest) (*kvpb.MetaIncrementResponse, error) {
	return metaDo(ctx, n, func(s *shard.Shard) (*kvpb.MetaIncrementResponse, error) {
		res, err := s.Propose(ctx, &raftstore.Command{Op: raftstore.OpIncrement, Key: req.Key})
		if err != nil {
			return nil, err
		}
		return &kvpb.MetaIncrementResponse{Value: binary.BigEndian.Uint64(res.Value)}, nil
	}, func(ctx context.Context, c kvpb.InternalClient) (*kvpb.MetaIncrementResponse, error) {
		return c.MetaIncrement(ctx, req)
	})
}

// MetaScan reads every meta key with the prefix, linearizably.
func (n *Node) MetaScan(ctx context.Context, req *kvpb.MetaScanRequest) (*kvpb.MetaScanResponse, error) {
	return metaDo(ctx, n, func(s *shard.Shard) (*kvpb.MetaScanResponse, error) {
		if _, err := s.ReadIndex(ctx); err != nil {
			return nil, err
		}
		if len(req.Prefixes) > 0 {
			out := &kvpb.MetaScanResponse{}
			for _, p := range req.Prefixes {
				resp, err := metaScanLocal(s, p)
				if err != nil {
					return nil, err
				}
				out.Kvs = append(out.Kvs, resp.Kvs...)
			}
			return out, nil
		}
		return metaScanLocal(s, req.Prefix)
	}, func(ctx context.Context, c kvpb.InternalClient) (*kvpb.MetaScanResponse, error) {
		return c.MetaScan(ctx, req)
	})
}

func metaScanLocal(s *shard.Shard, prefix []byte) (*kvpb.MetaScanResponse, error) {
	resp := &kvpb.MetaScanResponse{}
	start, end := prefix, PrefixEnd(prefix)
	for page := 0; page < 10000; page++ {
		kvs, more, next, _, err := s.FSM().Scan(start, end, 1000)
		if err != nil {
			return nil, err
		}
		for _, kv := range kvs {
			resp.Kvs = append(resp.Kvs, &kvpb.KeyValue{Key: kv.Key, Value: kv.Value, Revision: kv.Revision})
		}
		if !more {
			return resp, nil
		}
		start = next
	}
	return nil, errors.New("replication: meta range scan did not end")
}

// allocRangeID returns a range id never used before. A failed increment,
// even one that may have applied (the meta leader lost its leadership
// while committing it), is tried again: at worst an id is skipped, never
// handed out twice. Up to allocAttempts tries, while ctx lasts.
func (n *Node) allocRangeID(ctx context.Context) (uint64, error) {
	var err error
	for attempt := range allocAttempts {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("replication: allocate range id: %w (then %w)", err, ctx.Err())
			case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, 500*time.Millisecond)):
			}
		}
		var resp *kvpb.MetaIncrementResponse
		resp, err = n.MetaIncrement(ctx, &kvpb.MetaIncrementRequest{Key: []byte(metaNextRangeID)})
		if err == nil {
			return resp.Value + firstUserRangeID, nil // ids 1 and 2 exist from bootstrap
		}
	}
	return 0, fmt.Errorf("replication: allocate range id: %w", err)
}

// allocAttempts bounds allocRangeID's tries, about 2.5 s in all: long
// enough for the meta range to elect a new leader.
const allocAttempts = 8

// activate marks this joining node active, stamped with the time it
// started: later than any removal of a node of its id before it was
// wiped, so that removal (which finishDecommission writes just above its
// decommissioning record) does not hide the new member, and earlier than
// any removal an operator asks for after it started, which stays.
func (n *Node) activate(ctx context.Context) error {
	resp, err := n.MetaPut(ctx, &kvpb.MetaPutRequest{
		Key:   []byte(metaNodeStatePrefix + n.cfg.NodeID),
		Value: append(version(uint64(n.started.UnixNano()), 0), NodeActive...),
	})
	n.routes.invalidate()
	if err != nil {
		return err
	}
	if resp.GetWritten() {
		n.log.Info("joined: marked active")
	} else {
		n.log.Info("joined, but a newer membership record stands (removed again since this node started?)")
	}
	return nil
}

// registerLoop keeps this node's addresses in the meta range.
func (n *Node) registerLoop() {
	defer n.wg.Done()
	info := &kvpb.NodeInfo{Id: n.cfg.NodeID, RaftAddr: n.cfg.RaftAddr, GrpcAddr: n.cfg.GRPCAddr, HttpAddr: n.cfg.HTTPAddr, Features: nodeFeatures, Locality: n.cfg.Locality}
	body, _ := proto.Marshal(info)
	registered := false
	// A node joining with peer TLS on is added through --join first
	// (peertls.go); without TLS it registers itself over the Raft port.
	announced := !n.joining || n.cfg.PeerTLS == nil
	// A joining node (an empty data directory) is a new member, even
	// under the id of one decommissioned before: without TLS it marks
	// itself active (activate). With TLS, AddMember through --join did.
	// Until both are done the join stays pending in node.json, so a
	// crash before resumes it on restart.
	activated := !n.joining || n.cfg.PeerTLS != nil
	backoff := 100 * time.Millisecond
	for attempt := 0; attempt < 1<<20; attempt++ {
		wait := 30 * time.Second
		if !announced {
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			if err := n.announceJoin(ctx); err != nil {
				n.log.Info("joining: not added yet; will retry", "err", err)
			} else {
				announced = true
			}
			cancel()
		}
		if !registered && announced {
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			_, err := n.MetaPut(ctx, &kvpb.MetaPutRequest{
				Key:   []byte(metaNodePrefix + n.cfg.NodeID),
				Value: append(version(uint64(time.Now().UnixNano()), 0), body...),
			})
			cancel()
			if err == nil {
				registered = true
				n.log.Info("registered in the meta range")
				n.routes.invalidate()
			} else {
				n.log.Debug("registration not done yet", "err", err)
				wait = backoff
				backoff = min(2*backoff, 2*time.Second)
			}
		}
		if registered && !activated {
			ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
			if err := n.activate(ctx); err == nil {
				activated = true
			} else {
				n.log.Debug("joined, not marked active yet", "err", err)
				wait = backoff
				backoff = min(2*backoff, 2*time.Second)
			}
			cancel()
		}
		if n.joining && registered && announced && activated {
			if err := n.markInitialized(false); err != nil {
				n.log.Warn("joined, but could not record it; the join resumes on restart", "err", err)
			} else {
				n.joining = false
			}
		}
		select {
		case <-n.stop:
			return
		case <-time.After(wait):
			if registered {
				registered = n.routes.knowsNode(n.cfg.NodeID, n.cfg.RaftAddr)
			}
		}
	}
}

// published remembers what this node last wrote to the meta range for
// each range it leads, so that unchanged descriptors are not written again.
type published struct {
	mu          sync.Mutex
	content     map[uint64][]byte // range id -> descriptor content last written
	contentTerm map[uint64]uint64 // range id -> term in which that content was written
	term        map[uint64]uint64 // range id -> term whose leadership was last written
}

// publishLoop keeps the descriptor and leader of every range this node
// leads current in the meta range.
func (n *Node) publishLoop() {
	defer n.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		// Publish concurrently: one slow meta write must not hold back
		// every other range's routing update.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for _, s := range n.Shards() {
			if !s.IsLeader() {
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				ctx, cancel := context.WithTimeout(n.ctx, 2*time.Second)
				n.publish(ctx, s)
				cancel()
			}()
		}
		wg.Wait()
	}
}

// publish writes the range's live descriptor and leadership to the meta
// range if they changed since this node last wrote them.
func (n *Node) publish(ctx context.Context, s *shard.Shard) error {
	d, ver, err := n.liveDescriptor(s)
	if err != nil {
		return err
	}
	content := []byte(fmt.Sprint(d.Generation, d.Replicas, string(d.Start), string(d.End)))
	term := s.Raft().CurrentTerm()
	p := &n.pub
	p.mu.Lock()
	if p.content == nil {
		p.content, p.contentTerm, p.term = map[uint64][]byte{}, map[uint64]uint64{}, map[uint64]uint64{}
	}
	publishedTerm := p.term[d.Id]
	// What this node wrote is current only if it wrote it in this term:
	// in a term it did not lead, another leader may have written another
	// replica set (a replica removed), and a configuration that has come
	// back to what this node wrote before (the replica added again) would
	// otherwise never be written again.
	same := bytes.Equal(p.content[d.Id], content) && p.contentTerm[d.Id] == term
	p.mu.Unlock()
	if !same {
		body, _ := proto.Marshal(d)
		resp, err := n.MetaPut(ctx, &kvpb.MetaPutRequest{Key: metaKeyID(metaRangePrefix, d.Id), Value: append(ver, body...)})
		n.log.Debug("published range descriptor", "range", d.Id, "replicas", d.Replicas, "generation", d.Generation, "written", resp.GetWritten(), "err", err)
		if err != nil {
			n.log.Info("could not publish a range descriptor; will retry", "range", d.Id, "err", err)
			return err
		}
		if resp.Written {
			p.mu.Lock()
			p.content[d.Id], p.contentTerm[d.Id] = content, term
			p.mu.Unlock()
			n.routes.invalidate()
		}
	}
	if publishedTerm != term {
		if _, err := n.MetaPut(ctx, &kvpb.MetaPutRequest{Key: metaKeyID(metaLeaderPrefix, d.Id), Value: append(version(term, 0), n.cfg.NodeID...)}); err == nil {
			p.mu.Lock()
			p.term[d.Id] = term
			p.mu.Unlock()
		}
	}
	return nil
}

// liveDescriptor is the range's descriptor with its replicas taken from the
// current Raft configuration, and the version it is published under:
// (generation, commit index). The commit index orders publications of one
// generation: a leader's is at least that of any leader before it once it
// has committed an entry of its own term, and a configuration read after
// a change committed comes with a higher one.
func (n *Node) liveDescriptor(s *shard.Shard) (*kvpb.RangeDescriptor, []byte, error) {
	commit := s.DurableCommitIndex()
	servers, err := s.Configuration()
	if err != nil {
		return nil, nil, err
	}
	desc := s.Descriptor()
	d := &kvpb.RangeDescriptor{Id: desc.ID, Start: desc.Start, End: desc.End, Generation: desc.Generation, Leader: n.cfg.NodeID}
	for _, srv := range servers {
		d.Replicas = append(d.Replicas, string(srv.ID))
	}
	return d, version(desc.Generation, commit), nil
}

// localMetaLeader returns the meta shard when this node leads it.
func (n *Node) localMetaLeader() *shard.Shard {
	if s := n.shardByID(raftstore.MetaRangeID); s != nil && s.IsLeader() {
		return s
	}
	return nil
}
