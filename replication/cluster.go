package replication

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/shard"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc/metadata"
)

// Version is reported by Status; cmd/kvd may override it at link time.
var Version = "dev"

// Status reports this node and the replicas it hosts.
func (n *Node) Status(ctx context.Context, _ *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
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
		keys, size, _ := s.FSM().Size()
		ns.Ranges = append(ns.Ranges, &kvpb.RangeStatus{
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
		})
	}
	return &kvpb.StatusResponse{Node: ns}, nil
}

// membershipShard is the range whose Raft configuration defines the
// cluster's members.
func (n *Node) membershipShard() (*shard.Shard, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	s, ok := n.shards[firstRangeID]
	if !ok {
		return nil, fmt.Errorf("%w: range %d", ErrKeyOutOfRange, firstRangeID)
	}
	return s, nil
}

// Members lists the members with the client addresses each announces. A
// member that cannot be asked within a second is listed as unreachable.
func (n *Node) Members(ctx context.Context, _ *kvpb.MembersRequest) (*kvpb.MembersResponse, error) {
	s, err := n.membershipShard()
	if err != nil {
		return nil, err
	}
	servers, err := s.Configuration()
	if err != nil {
		return nil, err
	}
	leaderID, _ := s.Leader()
	out := make([]*kvpb.Member, len(servers))
	var wg sync.WaitGroup
	for i, srv := range servers {
		m := &kvpb.Member{
			Id:       string(srv.ID),
			RaftAddr: string(srv.Address),
			Voter:    srv.Suffrage == raft.Voter,
			Leader:   string(srv.ID) == leaderID,
		}
		out[i] = m
		if m.Id == n.cfg.NodeID {
			m.GrpcAddr, m.HttpAddr, m.Reachable = n.cfg.GRPCAddr, n.cfg.HTTPAddr, true
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := n.peer(m.RaftAddr)
			if err != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			cctx = metadata.AppendToOutgoingContext(cctx, rpctypes.ForwardedHeader, n.cfg.NodeID)
			st, err := kvpb.NewClusterClient(conn).Status(cctx, &kvpb.StatusRequest{})
			if err != nil {
				return
			}
			m.GrpcAddr, m.HttpAddr, m.Reachable = st.Node.GrpcAddr, st.Node.HttpAddr, true
		}()
	}
	wg.Wait()
	return &kvpb.MembersResponse{Members: out}, nil
}

// forwardCluster sends a membership change to the leader.
func forwardCluster[T any](ctx context.Context, n *Node, s *shard.Shard, call func(context.Context, kvpb.ClusterClient) (T, error)) (T, error) {
	return forward(ctx, n, s, func(ctx context.Context, _ kvpb.KVClient) (T, error) {
		_, addr := s.Leader()
		conn, err := n.peer(addr)
		if err != nil {
			var zero T
			return zero, err
		}
		return call(ctx, kvpb.NewClusterClient(conn))
	})
}

// AddMember adds a node to the cluster (every range it should replicate;
// for now the one range). Adding a member that is already present with the
// same address succeeds, so a joining node may retry.
func (n *Node) AddMember(ctx context.Context, req *kvpb.AddMemberRequest) (*kvpb.AddMemberResponse, error) {
	s, err := n.membershipShard()
	if err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return forwardCluster(ctx, n, s, func(ctx context.Context, c kvpb.ClusterClient) (*kvpb.AddMemberResponse, error) {
			return c.AddMember(ctx, req)
		})
	}
	servers, err := s.Configuration()
	if err != nil {
		return nil, err
	}
	for _, srv := range servers {
		sameID, sameAddr := string(srv.ID) == req.Id, string(srv.Address) == req.RaftAddr
		switch {
		case sameID && sameAddr && (srv.Suffrage == raft.Voter) != req.Nonvoter:
			return n.membersAfterChange(ctx)
		case sameID && !sameAddr:
			return nil, fmt.Errorf("%w: node %s is already a member at %s", ErrMemberConflict, req.Id, srv.Address)
		case !sameID && sameAddr:
			return nil, fmt.Errorf("%w: address %s already belongs to node %s", ErrMemberConflict, req.RaftAddr, srv.ID)
		}
	}
	if req.Nonvoter {
		err = s.AddNonvoter(ctx, req.Id, req.RaftAddr)
	} else {
		err = s.AddVoter(ctx, req.Id, req.RaftAddr)
	}
	if err != nil {
		return nil, err
	}
	n.log.Info("member added", "member", req.Id, "raft_addr", req.RaftAddr, "voter", !req.Nonvoter)
	resp, err := n.membersAfterChange(ctx)
	return resp, err
}

func (n *Node) membersAfterChange(ctx context.Context) (*kvpb.AddMemberResponse, error) {
	m, err := n.Members(ctx, &kvpb.MembersRequest{})
	if err != nil {
		return nil, err
	}
	return &kvpb.AddMemberResponse{Members: m.Members}, nil
}

// RemoveMember removes a node from the cluster.
func (n *Node) RemoveMember(ctx context.Context, req *kvpb.RemoveMemberRequest) (*kvpb.RemoveMemberResponse, error) {
	s, err := n.membershipShard()
	if err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return forwardCluster(ctx, n, s, func(ctx context.Context, c kvpb.ClusterClient) (*kvpb.RemoveMemberResponse, error) {
			return c.RemoveMember(ctx, req)
		})
	}
	servers, err := s.Configuration()
	if err != nil {
		return nil, err
	}
	found := false
	for _, srv := range servers {
		found = found || string(srv.ID) == req.Id
	}
	if !found {
		return nil, fmt.Errorf("%w: %q is not a member", ErrUnknownNode, req.Id)
	}
	if err := s.RemoveServer(ctx, req.Id); err != nil {
		return nil, err
	}
	n.log.Info("member removed", "member", req.Id)
	m, err := n.Members(ctx, &kvpb.MembersRequest{})
	if err != nil {
		return nil, err
	}
	return &kvpb.RemoveMemberResponse{Members: m.Members}, nil
}
