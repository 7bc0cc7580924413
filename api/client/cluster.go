package client

import (
	"context"
	"fmt"

	"google.golang.org/grpc"

	"github.com/dialkv/dialkv/api/kvpb"
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
	err := c.invoke(ctx, "status", classRead, endpoint, func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = cluster(cc).Status(ctx, &kvpb.StatusRequest{}, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// Members lists the cluster's nodes.
func (c *Client) Members(ctx context.Context) (*kvpb.MembersResponse, error) {
	var resp *kvpb.MembersResponse
	err := c.invoke(ctx, "members", classRead, "", func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
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
	err := c.invoke(ctx, "add member", classWrite, "", func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = cluster(cc).AddMember(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// RemoveMember removes node id from the cluster.
func (c *Client) RemoveMember(ctx context.Context, id string) (*kvpb.RemoveMemberResponse, error) {
	req := &kvpb.RemoveMemberRequest{Id: id}
	var resp *kvpb.RemoveMemberResponse
	err := c.invoke(ctx, "remove member", classWrite, "", func(ctx context.Context, cc *grpc.ClientConn, opts ...grpc.CallOption) (err error) {
		resp, err = cluster(cc).RemoveMember(ctx, req, opts...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return resp, nil
}
