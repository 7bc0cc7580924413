package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Version is reported by Status; cmd/kvd may override it at link time.
var Version = "dev"

// Status reports this node and the replicas it hosts.
func (n *Node) Status(ctx context.Context, req *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	ns := &kvpb.NodeStatus{
		Id:       n.cfg.NodeID,
		RaftAddr: n.cfg.RaftAddr,
		GrpcAddr: n.cfg.GRPCAddr,
		HttpAddr: n.cfg.HTTPAddr,
		Version:  Version,
		UptimeMs: time.Since(n.started).Milliseconds(),
	}
	for _, s := range n.Shards() {
		st := s.Status()
		keys, size := s.FSM().Size()
		rs := &kvpb.RangeStatus{
			Id:           st.Descriptor.ID,
			Start:        st.Descriptor.Start,
			End:          st.Descriptor.End,
			Generation:   st.Descriptor.Generation,
			Leader:       st.LeaderID,
			Replicas:     st.Replicas,
			State:        st.State,
			Term:         st.Term,
			CommitIndex:  st.CommitIndex,
			AppliedIndex: st.AppliedIndex,
			LastLogIndex: st.LastLogIndex,
			Keys:         keys,
			SizeBytes:    size,

			AppendFailures: st.AppendFailures,
			AppendError:    st.AppendError,
		}
		if req.GetDigest() {
			d, err := s.FSM().Digest()
			if err != nil {
				return nil, fmt.Errorf("range %d: %w", rs.Id, err)
			}
			rs.Digest, rs.DigestAppliedIndex, rs.DigestKeys = d.Sum, d.Applied, d.Keys
		}
		ns.Ranges = append(ns.Ranges, rs)
	}
	return &kvpb.StatusResponse{Node: ns, ClusterId: n.statusClusterID(ctx)}, nil
}

// Members lists the nodes registered in the meta range, with their
// addresses and state, whether this node could reach each within a second,
// and which of them lead ranges.
func (n *Node) Members(ctx context.Context, _ *kvpb.MembersRequest) (*kvpb.MembersResponse, error) {
	t, err := n.fetchRoutes(ctx)
	if err != nil {
		return nil, err
	}
	leads := map[string]bool{}
	replicas := map[string]bool{}
	for _, d := range t.Ranges {
		leads[d.Leader] = true
		for _, r := range d.Replicas {
			replicas[r] = true
		}
	}
	out := make([]*kvpb.Member, len(t.Nodes))
	var wg sync.WaitGroup
	for i, node := range t.Nodes {
		m := &kvpb.Member{Id: node.Id, RaftAddr: node.RaftAddr, GrpcAddr: node.GrpcAddr, HttpAddr: node.HttpAddr,
			Voter: node.State == NodeActive, Leader: leads[node.Id]}
		out[i] = m
		if m.Id == n.cfg.NodeID {
			m.Reachable = true
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Reachable = n.ping(ctx, m.RaftAddr) == nil
		}()
	}
	wg.Wait()
	return &kvpb.MembersResponse{Members: out}, nil
}

// ping asks a node for its status within a second.
func (n *Node) ping(ctx context.Context, raftAddr string) error {
	conn, err := n.peer(raftAddr)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err = kvpb.NewClusterClient(conn).Status(forwardContext(cctx), &kvpb.StatusRequest{})
	return err
}

// nodeState returns a registered node's info, or ErrUnknownNode.
func (n *Node) nodeInfo(ctx context.Context, id string) (*kvpb.NodeInfo, error) {
	t, err := n.fetchRoutes(ctx)
	if err != nil {
		return nil, err
	}
	for _, node := range t.Nodes {
		if node.Id == id {
			return node, nil
		}
	}
	return nil, fmt.Errorf("%w: %q is not a member", ErrUnknownNode, id)
}

func (n *Node) setNodeState(ctx context.Context, id, state string) error {
	_, err := n.MetaPut(ctx, &kvpb.MetaPutRequest{
		Key:   []byte(metaNodeStatePrefix + id),
		Value: append(version(uint64(time.Now().UnixNano()), 0), state...),
	})
	n.routes.invalidate()
	return err
}

// finishDecommission marks a decommissioned node removed, unless it has
// come back meanwhile. The removal is written just above the version of
// the decommissioning record it replaces, not at the time of writing: a
// node wiped and rejoined under the same id writes "active" at its own
// (later) time, and must win whichever write lands last. Otherwise the
// new member was taken for the old one, marked removed, and never given a
// replica; the cluster shrank by one node for good.
func (n *Node) finishDecommission(ctx context.Context, id string) (bool, error) {
	key := []byte(metaNodeStatePrefix + id)
	resp, err := n.MetaScan(ctx, &kvpb.MetaScanRequest{Prefix: key})
	if err != nil {
		return false, err
	}
	for _, kv := range resp.Kvs {
		at, seq, state, ok := parseVersion(kv.Value)
		if !ok || !bytes.Equal(kv.Key, key) {
			continue
		}
		if string(state) != NodeDecommissioning {
			return false, nil
		}
		put, err := n.MetaPut(ctx, &kvpb.MetaPutRequest{Key: key, Value: append(version(at, seq+1), NodeRemoved...)})
		n.routes.invalidate()
		if err != nil {
			return false, err
		}
		return put.GetWritten(), nil
	}
	return false, nil
}

// AddMember registers a node by id and Raft address, so the cluster knows
// it before it starts (a node started with --join registers itself too).
// Placement then gives it replicas.
func (n *Node) AddMember(ctx context.Context, req *kvpb.AddMemberRequest) (*kvpb.AddMemberResponse, error) {
	if existing, err := n.nodeInfo(ctx, req.Id); err == nil {
		if existing.RaftAddr != req.RaftAddr {
			return nil, fmt.Errorf("%w: node %s is already a member at %s", ErrMemberConflict, req.Id, existing.RaftAddr)
		}
	} else if !errors.Is(err, ErrUnknownNode) {
		return nil, err
	}
	t, err := n.fetchRoutes(ctx)
	if err != nil {
		return nil, err
	}
	for _, node := range t.Nodes {
		if node.RaftAddr == req.RaftAddr && node.Id != req.Id && node.State != NodeRemoved {
			return nil, fmt.Errorf("%w: address %s already belongs to node %s", ErrMemberConflict, req.RaftAddr, node.Id)
		}
	}
	body, _ := proto.Marshal(&kvpb.NodeInfo{Id: req.Id, RaftAddr: req.RaftAddr})
	// Version 0 time: the node's own registration, stamped later, wins.
	if _, err := n.MetaPut(ctx, &kvpb.MetaPutRequest{Key: []byte(metaNodePrefix + req.Id), Value: append(version(0, 0), body...)}); err != nil {
		return nil, err
	}
	if err := n.setNodeState(ctx, req.Id, NodeActive); err != nil {
		return nil, err
	}
	n.log.Info("member added", "member", req.Id, "raft_addr", req.RaftAddr)
	m, err := n.Members(ctx, &kvpb.MembersRequest{})
	if err != nil {
		return nil, err
	}
	return &kvpb.AddMemberResponse{Members: m.Members}, nil
}

// RemoveMember decommissions a node: placement moves its replicas to
// other nodes (never dropping a range below its replication factor while
// enough nodes remain), then marks it removed.
func (n *Node) RemoveMember(ctx context.Context, req *kvpb.RemoveMemberRequest) (*kvpb.RemoveMemberResponse, error) {
	info, err := n.nodeInfo(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	if info.State == NodeActive {
		if err := n.setNodeState(ctx, req.Id, NodeDecommissioning); err != nil {
			return nil, err
		}
		n.log.Info("member decommissioning", "member", req.Id)
	}
	m, err := n.Members(ctx, &kvpb.MembersRequest{})
	if err != nil {
		return nil, err
	}
	return &kvpb.RemoveMemberResponse{Members: m.Members}, nil
}

// SplitRange splits the range holding key at key, on its leader.
func (n *Node) SplitRange(ctx context.Context, req *kvpb.SplitRangeRequest) (*kvpb.SplitRangeResponse, error) {
	remote := func(ctx context.Context, conn grpc.ClientConnInterface) (*kvpb.SplitRangeResponse, error) {
		return kvpb.NewClusterClient(conn).SplitRange(ctx, req)
	}
	return route(ctx, n, req.Key, func(s *shard.Shard) (*kvpb.SplitRangeResponse, error) {
		if !s.IsLeader() {
			return forward(ctx, n, s, true, remote)
		}
		return n.split(ctx, s, req.Key)
	}, remote)
}
