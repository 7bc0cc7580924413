package replication

import (
	"context"
	"errors"

	"github.com/dialkv/dialkv/api/kvpb"
)

var errLeaseTODO = errors.New("replication: leases not implemented yet")

// LeaseGrant grants a lease of req.Ttl seconds.
func (n *Node) LeaseGrant(ctx context.Context, req *kvpb.LeaseGrantRequest) (*kvpb.LeaseGrantResponse, error) {
	return nil, errLeaseTODO
}

// LeaseKeepAlive renews one lease once (the Lease.KeepAlive stream calls it
// per request it receives). ErrLeaseNotFound when the lease has ended.
func (n *Node) LeaseKeepAlive(ctx context.Context, req *kvpb.LeaseKeepAliveRequest) (*kvpb.LeaseKeepAliveResponse, error) {
	return nil, errLeaseTODO
}

// LeaseRevoke ends a lease and deletes its keys.
func (n *Node) LeaseRevoke(ctx context.Context, req *kvpb.LeaseRevokeRequest) (*kvpb.LeaseRevokeResponse, error) {
	return nil, errLeaseTODO
}

// LeaseList lists the live leases.
func (n *Node) LeaseList(ctx context.Context, req *kvpb.LeaseListRequest) (*kvpb.LeaseListResponse, error) {
	return nil, errLeaseTODO
}

// LeaseTimeToLive reports a lease's TTL and, on request, its keys.
func (n *Node) LeaseTimeToLive(ctx context.Context, req *kvpb.LeaseTimeToLiveRequest) (*kvpb.LeaseTimeToLiveResponse, error) {
	return nil, errLeaseTODO
}

// LeaseRevokeLocal deletes a lease's keys in this node's replicas
// (Internal.LeaseRevokeLocal).
func (n *Node) LeaseRevokeLocal(ctx context.Context, req *kvpb.LeaseRevokeLocalRequest) (*kvpb.LeaseRevokeLocalResponse, error) {
	return nil, errLeaseTODO
}

// LeaseKeys lists a lease's keys in this node's replicas (Internal.LeaseKeys).
func (n *Node) LeaseKeys(ctx context.Context, req *kvpb.LeaseKeysRequest) (*kvpb.LeaseKeysResponse, error) {
	return nil, errLeaseTODO
}
