package replication

import (
	"fmt"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/shard"
	"github.com/hashicorp/raft"
)

// explainRead says, for ReadOptions.explain, which replica served a read
// and in what role, why the request reached it, and why the staleness of
// its answer is within what was asked. It speaks only of what this node
// knows: why a client picked this node (its locality, its endpoint list)
// is the client's to add (package client does).
func (n *Node) explainRead(s *shard.Shard, plan readPlan, applied uint64) *kvpb.ReadExplain {
	return &kvpb.ReadExplain{
		ReplicaRole:     n.replicaRole(s),
		ChosenBecause:   chosenBecause(plan),
		StalenessReason: stalenessReason(s.ID(), plan, applied),
		Locality:        n.cfg.Locality,
	}
}

// replicaRole is "leader", "follower" or "non-voter", with ", asleep" for
// a hibernating replica.
func (n *Node) replicaRole(s *shard.Shard) string {
	role := "follower"
	if s.IsLeader() {
		role = "leader"
	} else if servers, err := s.Configuration(); err == nil {
		for _, srv := range servers {
			if string(srv.ID) == n.cfg.NodeID && srv.Suffrage != raft.Voter {
				role = "non-voter"
			}
		}
	}
	if s.Asleep() {
		role += ", asleep"
	}
	return role
}

func chosenBecause(plan readPlan) string {
	switch {
	case plan.hops > 0 && plan.level == kvpb.Consistency_CONSISTENCY_LINEARIZABLE:
		return "forwarded to the leader for a linearizable read"
	case plan.hops > 0:
		return "forwarded here by a node that holds no replica of the range"
	case plan.level == kvpb.Consistency_CONSISTENCY_LINEARIZABLE:
		return "the node asked leads the range"
	default:
		return "the node asked holds a replica"
	}
}

func stalenessReason(rangeID uint64, plan readPlan, applied uint64) string {
	switch plan.level {
	case kvpb.Consistency_CONSISTENCY_LINEARIZABLE:
		return fmt.Sprintf("not stale: read index %d was confirmed by a quorum of the range's voters after the read arrived, and applied (%d) before reading, so every write acknowledged before the read is in the answer",
			plan.readIndex, applied)
	case kvpb.Consistency_CONSISTENCY_BOUNDED:
		return fmt.Sprintf("staleness_ms %d <= max_staleness %v: this replica has applied a read index the leader confirmed at most %d ms ago (timed on this node's clock), so every write acknowledged before then is in the answer",
			plan.stalenessMS, plan.maxStaleness, plan.stalenessMS)
	case kvpb.Consistency_CONSISTENCY_SESSION:
		need := plan.token[rangeID]
		if need == 0 {
			return fmt.Sprintf("session: the token names no index of range %d, so any state this replica applied meets it; applied %d is now the session's index here", rangeID, applied)
		}
		return fmt.Sprintf("session: applied %d >= the token's index %d for range %d, so the session's own earlier writes and reads are in the answer", applied, need, rangeID)
	default:
		if plan.stalenessMS < 0 {
			return "stale: no bound was asked, and none is known: this replica has not confirmed its freshness with the leader lately"
		}
		return fmt.Sprintf("stale: no bound was asked; this replica's last freshness check shows it at most %d ms behind", plan.stalenessMS)
	}
}
