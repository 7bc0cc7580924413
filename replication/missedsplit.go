package replication

import (
	"context"
	"slices"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/shard"
)

// A voter of a range creates its replica of each new range a split makes
// of it when it applies the split. A voter that lagged behind and caught
// up from a snapshot taken after the split never applies it, so the new
// range lists a member that never hosts it: the range runs on one replica
// fewer, and one more failure stops it. The node cannot simply create the
// replica: the new range's log starts with its first configuration, and
// the keys the split moved exist only in its members' state, so an empty
// replica fed that log would lack them. Instead the node asks the range's
// leader to remove it (it holds nothing of the range to lose), and
// placement adds a replica back the usual way, from a snapshot.
//
// Its leader keeps sending such a member messages, which the link refuses
// as for a range not open here; missedSplitLoop hears of them
// (Link.OnUnknownRange) and asks when the routing table lists this node
// for the range and no replica on this node covers any of its keys (one
// that does is yet to apply the split, which creates it).
const (
	// missedEvery spaces the loop's rounds: each reads the routing table
	// from the meta range.
	missedEvery = 2 * time.Second
	// missedRetry spaces the checks of one range: a replica that is about
	// to apply its split is asked about every few seconds until it has.
	missedRetry = 5 * time.Second
	// missedQueue bounds the ranges waiting for a round; more are dropped
	// (their leaders send again).
	missedQueue = 64
)

// unknownRange is the link's OnUnknownRange: it never blocks.
func (n *Node) unknownRange(id uint64) {
	select {
	case n.unknownCh <- id:
	default:
	}
}

// missedSplitLoop runs leaveMissedRanges for the ranges the link has
// heard of.
func (n *Node) missedSplitLoop() {
	defer n.wg.Done()
	checked := map[uint64]time.Time{} // range -> last check
	pending := map[uint64]bool{}
	t := time.NewTicker(missedEvery)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case id := <-n.unknownCh:
			if time.Since(checked[id]) >= missedRetry {
				pending[id] = true
			}
			continue
		case <-t.C:
		}
		if len(pending) == 0 {
			continue
		}
		now := time.Now()
		for id := range pending {
			checked[id] = now
		}
		for id, at := range checked {
			if now.Sub(at) > time.Minute {
				delete(checked, id)
			}
		}
		ctx, cancel := context.WithTimeout(n.ctx, missedEvery)
		n.leaveMissedRanges(ctx, pending)
		cancel()
		clear(pending)
	}
}

// leaveMissedRanges asks the leader of each range in ids that the routing
// table lists this node for, and that no replica here covers, to remove
// this node from it (see the top of this file).
func (n *Node) leaveMissedRanges(ctx context.Context, ids map[uint64]bool) {
	t, err := n.fetchRoutes(ctx)
	if err != nil {
		n.log.Debug("could not read the routing table for ranges peers send to", "err", err)
		return
	}
	addrOf := map[string]string{}
	for _, node := range t.Nodes {
		addrOf[node.Id] = node.RaftAddr
	}
	for _, d := range t.Ranges {
		if !ids[d.Id] || !slices.Contains(d.Replicas, n.cfg.NodeID) || !n.missed(d) {
			continue
		}
		leader := addrOf[d.Leader]
		if leader == "" || d.Leader == n.cfg.NodeID {
			continue // asked again when its leader sends next
		}
		n.log.Info("asking to leave a range that lists this node but that it never created (it caught up past the split through a snapshot); placement adds a replica back from a snapshot", "range", d.Id, "leader", d.Leader)
		if err := n.requestChange(ctx, leader, &kvpb.ChangeReplicasRequest{RangeId: d.Id, RemoveNode: n.cfg.NodeID}); err != nil {
			n.log.Info("asking to leave a range this node never created", "range", d.Id, "err", err)
		}
	}
}

// missed reports whether d is a range this node does not host and no
// replica here covers any key of: no split here will ever create it.
// splitMu keeps a split from creating it while this looks (onSplit holds
// it while it narrows the parent and opens the new range).
func (n *Node) missed(d *kvpb.RangeDescriptor) bool {
	n.splitMu.RLock()
	defer n.splitMu.RUnlock()
	desc := shard.Descriptor{ID: d.Id, Start: d.Start, End: d.End}
	if desc.IsMeta() || n.shardByID(d.Id) != nil {
		return false
	}
	for _, s := range n.Shards() {
		if sd := s.Descriptor(); !sd.IsMeta() && spansOverlap(sd.Start, sd.End, desc.Start, desc.End) {
			return false
		}
	}
	return true
}
