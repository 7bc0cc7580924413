package replication

import "context"

// Hooks for the external tests.

func (n *Node) SetNodeStateForTest(ctx context.Context, id, state string) error {
	return n.setNodeState(ctx, id, state)
}

func (n *Node) FinishDecommissionForTest(ctx context.Context, id string) (bool, error) {
	return n.finishDecommission(ctx, id)
}

func (n *Node) NodeStateForTest(ctx context.Context, id string) (string, error) {
	info, err := n.nodeInfo(ctx, id)
	if err != nil {
		return "", err
	}
	return info.State, nil
}

// NewAuthStoreForTest is an AuthStore that has not read the meta range
// yet and never will: what a node holds right after a restart.
func NewAuthStoreForTest(n *Node) *AuthStore {
	return &AuthStore{n: n, log: n.log, held: emptyAuthState(), stop: make(chan struct{})}
}

// SetWatchRemoteFirstForTest makes the node's watch feeds prefer other
// nodes' replicas to its own.
func (n *Node) SetWatchRemoteFirstForTest(on bool) { n.watchRemoteFirst.Store(on) }

// FeedHubsForTest counts the node's running range feed hubs.
func (n *Node) FeedHubsForTest() int {
	n.hubs.mu.Lock()
	defer n.hubs.mu.Unlock()
	return len(n.hubs.hubs)
}

// KeepAliveStreamsForTest counts the streams the node's keepalive sessions
// opened to the meta leader.
func (n *Node) KeepAliveStreamsForTest() uint64 { return n.keepAliveStreams.Load() }

// HoldLeasePutsForTest makes every put (or transaction) with a lease on
// the node call hold between its lease check and its proposal (or
// prepare); nil: no more.
func (n *Node) HoldLeasePutsForTest(hold func()) {
	if hold == nil {
		n.afterLeaseCheck.Store(nil)
		return
	}
	n.afterLeaseCheck.Store(&hold)
}

// LeaseDrainsForTest counts the revokes waiting on the node for its puts
// with a lease to settle.
func (n *Node) LeaseDrainsForTest() int { return n.leaseWrites.waiting() }
