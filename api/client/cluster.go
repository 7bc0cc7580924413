package client

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

func cluster(cc *grpc.ClientConn) kvpb.ClusterClient { return kvpb.NewClusterClient(cc) }

// Status asks the node at endpoint, which need not be one of the Client's
// endpoints, about itself and its ranges. It retries like a read but never
// fails over: the point is to hear from that node.
func (c *Client) Status(ctx context.Context, endpoint string) (*kvpb.StatusResponse, error) {
	if err := validateEndpoint(endpoint); err != nil {
		return nil, fmt.Errorf("dialkv client: status: %w", err)
	}
	var resp *kvpb.StatusResponse
	err := c.invoke(ctx, "status", classRead, endpoint, nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = cluster(cc).Status(ctx, &kvpb.StatusRequest{}, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Members lists the nodes registered in the cluster, removed ones included:
// Voter is set for an active node, Leader for a node that leads at least
// one range, and Reachable when the answering node could reach it.
func (c *Client) Members(ctx context.Context) (*kvpb.MembersResponse, error) {
	var resp *kvpb.MembersResponse
	err := c.invoke(ctx, "members", classRead, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = cluster(cc).Members(ctx, &kvpb.MembersRequest{}, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// AddMember adds node id, reachable for Raft at raftAddr, as a voter or a
// non-voter. Like CompareAndSwap it is retried only when provably not
// applied.
func (c *Client) AddMember(ctx context.Context, id, raftAddr string, nonvoter bool) (*kvpb.AddMemberResponse, error) {
	req := &kvpb.AddMemberRequest{Id: id, RaftAddr: raftAddr, Nonvoter: nonvoter}
	var resp *kvpb.AddMemberResponse
	err := c.invoke(ctx, "add member", classWrite, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = cluster(cc).AddMember(ctx, req, opts...)
		return err
	})
	c.invalidateRoutes()
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// RemoveMember decommissions node id: the cluster moves its replicas to
// other nodes, then marks it removed. The response lists the members as they
// are when the decommission starts. Like AddMember it is retried only when
// provably not applied.
func (c *Client) RemoveMember(ctx context.Context, id string) (*kvpb.RemoveMemberResponse, error) {
	req := &kvpb.RemoveMemberRequest{Id: id}
	var resp *kvpb.RemoveMemberResponse
	err := c.invoke(ctx, "remove member", classWrite, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = cluster(cc).RemoveMember(ctx, req, opts...)
		return err
	})
	c.invalidateRoutes()
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Ranges returns the cluster's routing table: every user range in key order
// with its replicas and leader hint, and every registered node with its
// addresses and state. It retries like a read, and refreshes the Client's
// routing cache.
func (c *Client) Ranges(ctx context.Context) (*kvpb.RangesResponse, error) {
	var resp *kvpb.RangesResponse
	err := c.invoke(ctx, "ranges", classRead, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = cluster(cc).Ranges(ctx, &kvpb.RangesRequest{}, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	if c.router != nil {
		c.router.store(resp)
	}
	return resp, nil
}

// SplitRange splits the range holding key so that key becomes the first
// key of a new range, and returns both halves. A key that already starts a
// range is an error for which IsInvalid is true. Like CompareAndSwap it is
// retried only when provably not applied.
func (c *Client) SplitRange(ctx context.Context, key []byte) (*kvpb.SplitRangeResponse, error) {
	req := &kvpb.SplitRangeRequest{Key: key}
	var resp *kvpb.SplitRangeResponse
	err := c.invoke(ctx, "split range", classWrite, "", nil, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = cluster(cc).SplitRange(ctx, req, opts...)
		return err
	})
	c.invalidateRoutes()
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// invalidateRoutes drops the routing cache after a change this Client made
// to the ranges or the nodes.
func (c *Client) invalidateRoutes() {
	if c.router != nil {
		c.router.invalidateAll()
	}
}

// fetchRoutes asks the sticky endpoint for the routing table, once: a
// failure only means that requests are not routed until the next fetch.
// An endpoint that could not serve moves the sticky endpoint on, as a
// request's failure would.
func (c *Client) fetchRoutes(ctx context.Context) (*kvpb.RangesResponse, error) {
	ep, cc, err := c.pool.current()
	if err != nil {
		return nil, err
	}
	resp, err := cluster(cc).Ranges(ctx, &kvpb.RangesRequest{})
	if err != nil {
		if rpctypes.Retryable(err) {
			c.pool.advance(ep, leaderHint(err))
		}
		return nil, err
	}
	return resp, nil
}
