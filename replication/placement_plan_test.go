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

// adds are in-flight additions of target to ranges absent from the table.
func adds(target string, ids ...uint64) []move {
	var out []move
	for _, id := range ids {
		out = append(out, move{rangeID: id, req: &kvpb.ChangeReplicasRequest{RangeId: id, AddNode: target}})
	}
	return out
}

func TestPlanPlacement(t *testing.T) {
	const a, d = NodeActive, NodeDecommissioning
	three := []string{"n1", "n2", "n3"}
	four := set("n1", "n2", "n3", "n4")
	ledByN1 := []*kvpb.RangeDescriptor{rng(2, three...), rng(3, three...), rng(4, three...)}
	// Six ranges, replicas balanced over four nodes, leaders on n1 and n2.
	twoLeaders := []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3"), rng(3, "n1", "n3", "n4"), rng(4, "n1", "n2", "n4"),
		rng(5, "n2", "n3", "n4"), rng(6, "n2", "n1", "n3"), rng(7, "n2", "n4", "n1")}
	var sevenRemovals []move
	for id := uint64(20); id < 27; id++ {
		sevenRemovals = append(sevenRemovals, move{rangeID: id, req: &kvpb.ChangeReplicasRequest{RangeId: id, RemoveNode: "n9"}})
	}
	tests := []struct {
		name string
		v    placementView
		// newDriver: the driver took over less than leaderMoveInterval
		// ago (v.leaderMovesAllowed false); otherwise allowed.
		newDriver bool
		want      string
	}{
		{
			name: "a healthy range stays put",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, three...)}, nodes: nodes(a, a, a), live: set(three...), replicas: 3},
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
			name: "a surplus of live replicas loses the one on the busiest node, a follower before the leader",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3", "n4"), rng(3, "n4", "n1", "n2")}, nodes: nodes(a, a, a, a),
				live: four, replicas: 3},
			want: "remove n2 from 2",
		},
		{
			name: "a decommissioning node's replica is replaced before it is removed",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, three...)}, nodes: nodes(a, a, d, a), live: four, replicas: 3},
			want: "add n4 to 2",
		},
		{
			name: "and removed once the range has enough elsewhere",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3", "n4")}, nodes: nodes(a, a, d, a), live: four, replicas: 3},
			want: "remove n3 from 2",
		},
		{
			name: "a decommissioning node with nothing left is drained",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n4")}, nodes: nodes(a, a, d, a), live: set("n1", "n2", "n4"), replicas: 3},
			want: "drained n3",
		},
		{
			name: "a new node gets maxSnapshotsPerNode replicas at once from nodes two or more busier",
			v:    placementView{ranges: ledByN1, nodes: nodes(a, a, a, a), live: four, replicas: 3},
			want: "add n4 to 2; add n4 to 3",
		},
		{
			name: "a snapshot still on its way counts against maxSnapshotsPerNode, and its range waits",
			v:    placementView{ranges: ledByN1, nodes: nodes(a, a, a, a), live: four, replicas: 3, inFlight: adds("n4", 2)},
			want: "add n4 to 3",
		},
		{
			name: "a node receives at most maxSnapshotsPerNode replicas at once, repairs too",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2"), rng(3, "n1", "n2"), rng(4, "n1", "n2"), rng(5, "n1", "n2"), rng(6, "n1", "n2")},
				nodes: nodes(a, a, a), live: set(three...), replicas: 3},
			want: "add n3 to 2; add n3 to 3",
		},
		{
			name: "a short range goes to the next least loaded node when the least loaded is full",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2"), rng(3, "n1", "n2", "n3")}, nodes: nodes(a, a, a, a),
				live: four, replicas: 3, inFlight: adds("n4", 20, 21)},
			want: "add n3 to 2",
		},
		{
			name: "no more than maxMovesInFlight moves run at once",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2"), rng(3, "n1", "n2")}, nodes: nodes(a, a, a), live: set(three...),
				replicas: 3, inFlight: sevenRemovals},
			want: "add n3 to 2",
		},
		{
			name: "a range whose move just failed rests",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2"), rng(3, "n1", "n2")}, nodes: nodes(a, a, a), live: set(three...),
				replicas: 3, resting: rangeSet(2)},
			want: "add n3 to 3",
		},
		{
			name: "leaderships spread when one node leads two more than another, one hand-over per node at a time",
			v:    placementView{ranges: ledByN1, nodes: nodes(a, a, a), live: set(three...), replicas: 3},
			want: "lead 2 n2",
		},
		{
			name: "several nodes hand leaderships over at once, to the nodes leading fewest",
			v:    placementView{ranges: twoLeaders, nodes: nodes(a, a, a, a), live: four, replicas: 3},
			want: "lead 2 n3; lead 5 n4",
		},
		{
			name: "a range whose leadership was asked to move within leaderMoveInterval keeps it",
			v: placementView{ranges: ledByN1, nodes: nodes(a, a, a), live: set(three...), replicas: 3,
				leaderMoved: map[uint64]leaderMove{2: {from: "n1"}}},
			want: "lead 3 n2",
		},
		{
			name: "a hand-over the table does not show yet counts",
			v: placementView{ranges: ledByN1, nodes: nodes(a, a, a), live: set(three...), replicas: 3,
				leaderMoved: map[uint64]leaderMove{2: {from: "n1", to: "n2"}}},
			want: "lead 3 n3",
		},
		{
			name: "a node handing a leadership over hands over no other",
			v: placementView{ranges: ledByN1, nodes: nodes(a, a, a), live: set(three...), replicas: 3,
				inFlight: []move{{rangeID: 2, req: &kvpb.ChangeReplicasRequest{RangeId: 2, TransferLeaderTo: "n2"}, leader: "n1"}}},
			want: "",
		},
		{
			name: "no leadership moves while replicas move",
			v:    placementView{ranges: ledByN1, nodes: nodes(a, a, a), live: set(three...), replicas: 3, inFlight: adds("n2", 9)},
			want: "",
		},
		{
			name:      "a driver that just took over moves no leadership",
			v:         placementView{ranges: ledByN1, nodes: nodes(a, a, a), live: set(three...), replicas: 3},
			newDriver: true,
			want:      "",
		},
		{
			name: "the meta range's leadership is not the one moved while another can be",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(raftstore.MetaRangeID, three...), rng(2, three...)}, nodes: nodes(a, a, a), live: set(three...), replicas: 3},
			want: "lead 2 n2",
		},
		{
			name: "it moves last, alone",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(raftstore.MetaRangeID, three...), rng(2, three...)}, nodes: nodes(a, a, a), live: set(three...), replicas: 3,
				leaderMoved: map[uint64]leaderMove{2: {from: "n2", to: "n1"}}},
			want: "lead 1 n2",
		},
		{
			name: "not while another hand-over runs",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(raftstore.MetaRangeID, three...), rng(2, three...), rng(3, "n2", "n1", "n3")},
				nodes: nodes(a, a, a), live: set(three...), replicas: 3,
				leaderMoved: map[uint64]leaderMove{2: {from: "n2", to: "n1"}},
				inFlight:    []move{{rangeID: 3, req: &kvpb.ChangeReplicasRequest{RangeId: 3, TransferLeaderTo: "n1"}, leader: "n2"}}},
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
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.v.leaderMovesAllowed = !tc.newDriver
			p := planPlacement(tc.v)
			if got := describe(p); got != tc.want {
				t.Fatalf("plan = %q, want %q", got, tc.want)
			}
			checkPlanLimits(t, tc.v, p)
		})
	}
}

// checkPlanLimits asserts the bounds every plan keeps, with the moves in
// flight: one move per range, maxSnapshotsPerNode per receiving node, one
// leadership hand-over per node, maxMovesInFlight in all.
func checkPlanLimits(t *testing.T, v placementView, p placementPlan) {
	t.Helper()
	all := append(slices.Clone(v.inFlight), p.moves...)
	if len(all) > maxMovesInFlight {
		t.Fatalf("%d moves in flight, at most %d allowed", len(all), maxMovesInFlight)
	}
	ranges, snapshots, handing := map[uint64]int{}, map[string]int{}, map[string]int{}
	for _, m := range all {
		if ranges[m.rangeID]++; ranges[m.rangeID] > 1 {
			t.Fatalf("range %d has two moves: %q", m.rangeID, describe(p))
		}
		if m.req.AddNode != "" {
			if snapshots[m.req.AddNode]++; snapshots[m.req.AddNode] > maxSnapshotsPerNode {
				t.Fatalf("%s receives %d snapshots at once", m.req.AddNode, snapshots[m.req.AddNode])
			}
		}
		if m.req.TransferLeaderTo != "" {
			if handing[m.leader]++; handing[m.leader] > 1 {
				t.Fatalf("%s hands over %d leaderships at once", m.leader, handing[m.leader])
			}
		}
	}
}

func rangeSet(ids ...uint64) map[uint64]bool {
	m := map[uint64]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}
