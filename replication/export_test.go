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
	t, err := n.fetchRoutes(ctx)
	if err != nil {
		return "", err
	}
	for _, node := range t.Nodes {
		if node.Id == id {
			return node.State, nil
		}
	}
	return "", nil
}
