package replication

import "github.com/dialkv/dialkv/replication/link"

// LinkStats returns the counters of the node's shared Raft link, and false
// when the node runs per-range streams instead (Config.PerRangeStreams).
func (n *Node) LinkStats() (link.Stats, bool) {
	if n.link == nil {
		return link.Stats{}, false
	}
	return n.link.Stats(), true
}
