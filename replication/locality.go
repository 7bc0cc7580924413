package replication

import (
	"slices"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
)

// localities are the nodes' localities (kvd --locality) as a placement
// round reads them from the routing table. Placement compares replica sets
// by how many distinct places they span, tier by tier from the widest: a
// range in three regions survives more than one in three zones of a region.
// A node without a locality, or with one that does not parse (a newer
// release's), counts as one shared unknown place, so a cluster without
// localities places exactly as before.
type localities struct {
	of    map[string]rpctypes.Locality
	depth int // the most tiers any node has
}

func newLocalities(nodes []*kvpb.NodeInfo) localities {
	l := localities{of: map[string]rpctypes.Locality{}}
	for _, n := range nodes {
		loc, err := rpctypes.ParseLocality(n.GetLocality())
		if err != nil {
			continue
		}
		l.of[n.GetId()] = loc
		l.depth = max(l.depth, len(loc))
	}
	return l
}

// diversity counts the distinct places ids are in at each tier: regions,
// then zones (within their regions), and so on.
func (l localities) diversity(ids []string) []int {
	out := make([]int, l.depth)
	seen := map[string]bool{}
	for d := 1; d <= l.depth; d++ {
		clear(seen)
		for _, id := range ids {
			seen[l.of[id].Prefix(d)] = true
		}
		out[d-1] = len(seen)
	}
	return out
}

// without returns ids less drop, as a new slice.
func without(ids []string, drop string) []string {
	return slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == drop })
}

// target picks the node to put a new replica of a range on, the range
// keeping keep: among candidates not in exclude, the one that spreads the
// replicas over the most distinct places, then the least loaded.
func (l localities) target(keep, candidates, exclude []string, load map[string]int) string {
	best := ""
	var bestDiv []int
	for _, c := range candidates {
		if slices.Contains(exclude, c) {
			continue
		}
		div := l.diversity(append(slices.Clone(keep), c))
		if cmp := slices.Compare(div, bestDiv); best == "" || cmp > 0 || (cmp == 0 && load[c] < load[best]) {
			best, bestDiv = c, div
		}
	}
	return best
}

// surplus is the replica to remove from a range with one too many: the
// one whose removal leaves the replicas over the most distinct places,
// then the one on the most loaded node, a follower rather than the leader
// (whose removal would first hand its leadership to a replica Raft picks).
func (l localities) surplus(replicas []string, leader string, load map[string]int) string {
	best := ""
	var bestDiv []int
	for _, id := range replicas {
		div := l.diversity(without(replicas, id))
		cmp := slices.Compare(div, bestDiv)
		if best == "" || cmp > 0 || (cmp == 0 && (load[id] > load[best] || (load[id] == load[best] && best == leader))) {
			best, bestDiv = id, div
		}
	}
	return best
}

// spreadTarget finds a node whose replica would spread a healthy range
// over more distinct places than it spans now, once the replica that then
// becomes the surplus is removed; "" when none would. Of several, the one
// spreading it most, then the least loaded.
func (l localities) spreadTarget(replicas []string, leader string, candidates []string, load map[string]int) string {
	if l.depth == 0 {
		return ""
	}
	now := l.diversity(replicas)
	best := ""
	var bestDiv []int
	for _, c := range candidates {
		if slices.Contains(replicas, c) {
			continue
		}
		after := append(slices.Clone(replicas), c)
		victim := l.surplus(after, leader, load)
		if victim == c {
			continue
		}
		div := l.diversity(without(after, victim))
		if slices.Compare(div, now) <= 0 {
			continue
		}
		if cmp := slices.Compare(div, bestDiv); best == "" || cmp > 0 || (cmp == 0 && load[c] < load[best]) {
			best, bestDiv = c, div
		}
	}
	return best
}

// leaderPlaces counts, for every place at every tier, the leaderships its
// nodes hold.
func (l localities) leaderPlaces(leads map[string]int) []map[string]int {
	out := make([]map[string]int, l.depth)
	for d := range out {
		out[d] = map[string]int{}
		for id, n := range leads {
			out[d][l.of[id].Prefix(d+1)] += n
		}
	}
	return out
}

// placeLeads is how many leaderships id's places hold, widest tier first:
// a hand-over to the replica whose places lead fewest spreads leaders over
// localities too.
func (l localities) placeLeads(places []map[string]int, id string) []int {
	out := make([]int, len(places))
	for d, m := range places {
		out[d] = m[l.of[id].Prefix(d+1)]
	}
	return out
}
