package replication

import (
	"context"
	"slices"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/shard"
)

// A voter of a range creates the replica of each new range a split makes
// of it when it applies the split. A voter that lagged behind and caught
// up from a snapshot taken after the split never applies it, so the new
// range lists a member that never hosts it: the range runs on one replica
// fewer, and one more failure stops it. Its leader keeps sending that
// member messages, which the link refuses as for a range not open here;
// adoptLoop hears of them (Link.OnUnknownRange) and creates the replica
// when the routing table lists this node for the range and no replica on
// this node covers any of its keys (one that does is yet to apply the
// split, which creates it). The leader then sends it a snapshot.
const (
	// adoptEvery spaces the loop's rounds: each reads the routing table
	// from the meta range.
	adoptEvery = 2 * time.Second
	// adoptRetry spaces the checks of one range: a replica that is about
	// to apply its split is asked about every few seconds until it has.
	adoptRetry = 5 * time.Second
	// adoptQueue bounds the ranges waiting for a round; more are dropped
	// (their leaders send again).
	adoptQueue = 64
)

// unknownRange is the link's OnUnknownRange: it never blocks.
func (n *Node) unknownRange(id uint64) {
	select {
	case n.unknownCh <- id:
	default:
	}
}

// adoptLoop runs adoptOnce for the ranges the link has heard of.
func (n *Node) adoptLoop() {
	defer n.wg.Done()
	checked := map[uint64]time.Time{} // range -> last check
	pending := map[uint64]bool{}
	t := time.NewTicker(adoptEvery)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case id := <-n.unknownCh:
			if time.Since(checked[id]) >= adoptRetry {
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
		ctx, cancel := context.WithTimeout(n.ctx, adoptEvery)
		n.adoptOnce(ctx, pending)
		cancel()
		clear(pending)
	}
}

// adoptOnce creates this node's replica of each range in ids that the
// routing table lists it for and that no replica here covers (see the
// top of this file).
func (n *Node) adoptOnce(ctx context.Context, ids map[uint64]bool) {
	t, err := n.fetchRoutes(ctx)
	if err != nil {
		n.log.Debug("could not read the routing table for ranges peers send to", "err", err)
		return
	}
	for _, d := range t.Ranges {
		if !ids[d.Id] || !slices.Contains(d.Replicas, n.cfg.NodeID) {
			continue
		}
		n.adopt(d)
	}
}

// adopt creates the replica of d unless a replica here covers any of its
// keys. splitMu keeps a split from creating it meanwhile (onSplit holds
// it while it narrows the parent and opens the child).
func (n *Node) adopt(d *kvpb.RangeDescriptor) {
	n.splitMu.Lock()
	defer n.splitMu.Unlock()
	if n.shardByID(d.Id) != nil {
		return
	}
	desc := shard.Descriptor{ID: d.Id, Start: d.Start, End: d.End, Generation: d.Generation, Replicas: d.Replicas}
	if desc.IsMeta() {
		return // never split, so never missed
	}
	for _, s := range n.Shards() {
		if sd := s.Descriptor(); !sd.IsMeta() && overlaps(sd, desc) {
			return
		}
	}
	n.log.Info("creating a replica of a range that lists this node and that it never created (a split it caught up past through a snapshot)", "range", d.Id)
	if _, err := n.openShard(desc); err != nil {
		n.log.Warn("creating a replica of a range that lists this node", "range", d.Id, "err", err)
	}
}

// overlaps reports whether two ranges share a key.
func overlaps(a, b shard.Descriptor) bool {
	endsAfter := func(end, start []byte) bool { return len(end) == 0 || string(end) > string(start) }
	return endsAfter(a.End, b.Start) && endsAfter(b.End, a.Start)
}
