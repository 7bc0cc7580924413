package replication

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
)

// rng is a range led by the first of its replicas, ids from 2 up.
func rng(id uint64, replicas ...string) *kvpb.RangeDescriptor {
	return &kvpb.RangeDescriptor{Id: id, Leader: replicas[0], Replicas: replicas}
}

func nodes(states ...string) []*kvpb.NodeInfo {
	var out []*kvpb.NodeInfo
	for i, st := range states {
		out = append(out, &kvpb.NodeInfo{Id: fmt.Sprintf("n%d", i+1), State: st})
	}
	return out
}

func set(ids ...string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// describe renders a plan as "add n4 to 2; remove n3 from 3; lead 4 n2;
// drained n5", in plan order.
func describe(p placementPlan) string {
	var parts []string
	for _, m := range p.moves {
		switch r := m.req; {
		case r.AddNode != "":
			parts = append(parts, fmt.Sprintf("add %s to %d", r.AddNode, r.RangeId))
		case r.RemoveNode != "":
			parts = append(parts, fmt.Sprintf("remove %s from %d", r.RemoveNode, r.RangeId))
		case r.TransferLeaderTo != "":
			parts = append(parts, fmt.Sprintf("lead %d %s", r.RangeId, r.TransferLeaderTo))
		}
	}
	for _, id := range p.drained {
		parts = append(parts, "drained "+id)
	}
	return strings.Join(parts, "; ")
}

func TestPlanPlacement(t *testing.T) {
	const a, d = NodeActive, NodeDecommissioning
	three := []string{"n1", "n2", "n3"}
	tests := []struct {
		name string
		v    placementView
		want string
	}{
		{
			name: "a healthy range stays put",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, three...)}, nodes: nodes(a, a, a), live: set(three...), replicas: 3, leaderMoveAllowed: true},
			want: "",
		},
		{
			name: "a range short of a replica gets one on the usable node",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2")}, nodes: nodes(a, a, a), live: set(three...), replicas: 3},
			want: "add n3 to 2",
		},
		{
			name: "a dead replica is kept until its node has been gone long enough",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, three...)}, nodes: nodes(a, a, a, a), live: set("n1", "n2", "n4"), replicas: 3},
			want: "",
		},
		{
			name: "a long-dead replica is replaced first",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, three...)}, nodes: nodes(a, a, a, a), live: set("n1", "n2", "n4"),
				longDead: set("n3"), replicas: 3},
			want: "add n4 to 2",
		},
		{
			name: "then the dead replica is the surplus removed",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3", "n4")}, nodes: nodes(a, a, a, a), live: set("n1", "n2", "n4"),
				longDead: set("n3"), replicas: 3},
			want: "remove n3 from 2",
		},
		{
			name: "a surplus of live replicas loses the one on the busiest node",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3", "n4"), rng(3, "n4", "n1", "n2")}, nodes: nodes(a, a, a, a),
				live: set("n1", "n2", "n3", "n4"), replicas: 3},
			want: "remove n1 from 2",
		},
		{
			name: "a decommissioning node's replica is replaced before it is removed",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, three...)}, nodes: nodes(a, a, d, a), live: set("n1", "n2", "n3", "n4"), replicas: 3},
			want: "add n4 to 2",
		},
		{
			name: "and removed once the range has enough elsewhere",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3", "n4")}, nodes: nodes(a, a, d, a),
				live: set("n1", "n2", "n3", "n4"), replicas: 3},
			want: "remove n3 from 2",
		},
		{
			name: "a decommissioning node with nothing left is drained",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n4")}, nodes: nodes(a, a, d, a), live: set("n1", "n2", "n4"), replicas: 3},
			want: "drained n3",
		},
		{
			name: "a new node gets a replica from a node two or more busier",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, three...), rng(3, three...), rng(4, three...)}, nodes: nodes(a, a, a, a),
				live: set("n1", "n2", "n3", "n4"), replicas: 3},
			want: "add n4 to 2",
		},
		{
			name: "leaderships spread when one node leads two more than another",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, three...), rng(3, three...), rng(4, three...)}, nodes: nodes(a, a, a),
				live: set(three...), replicas: 3, leaderMoveAllowed: true},
			want: "lead 2 n2",
		},
		{
			name: "but not more often than leaderMoveInterval",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, three...), rng(3, three...), rng(4, three...)}, nodes: nodes(a, a, a),
				live: set(three...), replicas: 3},
			want: "",
		},
		{
			name: "the meta range keeps three replicas even at one replica per range",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(raftstore.MetaRangeID, "n1")}, nodes: nodes(a, a, a), live: set(three...), replicas: 1},
			want: "add n2 to 1",
		},
		{
			name: "no more than the nodes there are",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2")}, nodes: nodes(a, a), live: set("n1", "n2"), replicas: 3},
			want: "",
		},
		{
			name: "at most maxMovesPerRound moves a round",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2"), rng(3, "n1", "n2"), rng(4, "n1", "n2"), rng(5, "n1", "n2"), rng(6, "n1", "n2")},
				nodes: nodes(a, a, a), live: set(three...), replicas: 3},
			want: "add n3 to 2; add n3 to 3; add n3 to 4; add n3 to 5",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := planPlacement(tc.v)
			if got := describe(p); got != tc.want {
				t.Fatalf("plan = %q, want %q", got, tc.want)
			}
			if p.leaderMoved != slices.ContainsFunc(p.moves, func(m move) bool { return m.req.TransferLeaderTo != "" }) {
				t.Fatalf("leaderMoved = %v for %q", p.leaderMoved, describe(p))
			}
		})
	}
}
