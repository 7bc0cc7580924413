package replication

import (
	"fmt"
	"slices"
	"testing"

	"github.com/dialkv/dialkv/api/kvpb"
)

// zoned returns active nodes n1, n2, ... in region eu, one zone each as
// given ("" for a node without a locality).
func zoned(zones ...string) []*kvpb.NodeInfo {
	var out []*kvpb.NodeInfo
	for i, z := range zones {
		n := &kvpb.NodeInfo{Id: fmt.Sprintf("n%d", i+1), State: NodeActive}
		if z != "" {
			n.Locality = "region=eu,zone=" + z
		}
		out = append(out, n)
	}
	return out
}

func TestPlanPlacement_Locality(t *testing.T) {
	const d = NodeDecommissioning
	six := set("n1", "n2", "n3", "n4", "n5", "n6")
	// n1, n2 in zone a; n3, n4 in b; n5, n6 in c.
	threeZones := zoned("a", "a", "b", "b", "c", "c")
	decommissioningN3 := zoned("a", "a", "b", "b", "c", "c")
	decommissioningN3[2].State = d
	tests := []struct {
		name string
		v    placementView
		want string
	}{
		{
			name: "a healthy range in three zones stays put",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n3", "n5")}, nodes: threeZones, live: six, replicas: 3},
			want: "",
		},
		{
			name: "a healthy range in two zones gets a replica in the third",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3")}, nodes: threeZones, live: six, replicas: 3},
			want: "add n5 to 2",
		},
		{
			name: "then the follower that shared a zone is the surplus removed",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3", "n5")}, nodes: threeZones, live: six, replicas: 3},
			want: "remove n2 from 2",
		},
		{
			name: "the surplus is the replica sharing a zone even when another node is busier",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3", "n5"), rng(3, "n3", "n6", "n1"), rng(4, "n3", "n5", "n2")},
				nodes: threeZones, live: six, replicas: 3},
			// (and n4, idle, takes a zone-b replica off n3, the busiest)
			want: "remove n2 from 2; add n4 to 3",
		},
		{
			name: "a short range's replica goes to the zone it lacks, not to the idlest node",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n3"), rng(3, "n5", "n2", "n4"), rng(4, "n6", "n2", "n4")},
				nodes: threeZones, live: six, replicas: 3},
			want: "add n5 to 2",
		},
		{
			name: "a decommissioning node's replica is replaced in its zone",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n3", "n5")}, nodes: decommissioningN3, live: six, replicas: 3},
			want: "add n4 to 2",
		},
		{
			name: "a long-dead node's replica is replaced in its zone",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n3", "n5")}, nodes: threeZones, live: set("n1", "n2", "n3", "n4", "n6"),
				longDead: set("n5"), replicas: 3},
			want: "add n6 to 2",
		},
		{
			name: "then the dead one is the surplus removed",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n3", "n5", "n6")}, nodes: threeZones, live: set("n1", "n2", "n3", "n4", "n6"),
				longDead: set("n5"), replicas: 3},
			want: "remove n5 from 2",
		},
		{
			name: "with fewer zones than replicas, two zones hold them and nothing churns",
			v:    placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3")}, nodes: zoned("a", "a", "b", "b"), live: set("n1", "n2", "n3", "n4"), replicas: 3},
			want: "",
		},
		{
			name: "regions count before zones",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n2", "n3")},
				nodes: []*kvpb.NodeInfo{
					{Id: "n1", State: NodeActive, Locality: "region=eu,zone=a"},
					{Id: "n2", State: NodeActive, Locality: "region=eu,zone=b"},
					{Id: "n3", State: NodeActive, Locality: "region=eu,zone=c"},
					{Id: "n4", State: NodeActive, Locality: "region=us,zone=a"},
				}, live: set("n1", "n2", "n3", "n4"), replicas: 3},
			want: "add n4 to 2",
		},
		{
			// n5 (zone a) is idle and n3, n4 (zones b, c) are busy, but
			// moving one of their replicas to n5 would leave two in zone
			// a; the zone-a replicas it could take over are on nodes
			// only one busier.
			name: "rebalancing never narrows a range's spread",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n3", "n4"), rng(3, "n2", "n3", "n4")},
				nodes: zoned("a", "a", "b", "c", "a"), live: set("n1", "n2", "n3", "n4", "n5"), replicas: 3},
			want: "",
		},
		{
			name: "the same cluster without localities rebalances",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n3", "n4"), rng(3, "n2", "n3", "n4")},
				nodes: zoned("", "", "", "", ""), live: set("n1", "n2", "n3", "n4", "n5"), replicas: 3},
			want: "add n5 to 2",
		},
		{
			name: "a joining node takes over replicas in its own zone",
			v: placementView{ranges: []*kvpb.RangeDescriptor{rng(2, "n1", "n3", "n5"), rng(3, "n2", "n4", "n6"), rng(4, "n1", "n4", "n5"), rng(5, "n1", "n3", "n6")},
				nodes: zoned("a", "a", "b", "b", "c", "c", "a"), live: set("n1", "n2", "n3", "n4", "n5", "n6", "n7"), replicas: 3},
			// n1 (zone a) holds the most; n7 takes one of its replicas,
			// then the nodes are within one of each other.
			want: "add n7 to 2",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.v.leaderMovesAllowed = true
			p := planPlacement(tc.v)
			if got := describe(p); got != tc.want {
				t.Fatalf("plan = %q, want %q", got, tc.want)
			}
			checkPlanLimits(t, tc.v, p)
		})
	}
}

func TestLocalities_Diversity(t *testing.T) {
	locs := newLocalities([]*kvpb.NodeInfo{
		{Id: "eu-a1", Locality: "region=eu,zone=a"},
		{Id: "eu-a2", Locality: "region=eu,zone=a"},
		{Id: "eu-b", Locality: "region=eu,zone=b"},
		{Id: "us-a", Locality: "region=us,zone=a"},
		{Id: "bad", Locality: "region"},
		{Id: "none"},
	})
	tests := []struct {
		ids  []string
		want []int
	}{
		{[]string{"eu-a1", "eu-a2"}, []int{1, 1}},
		{[]string{"eu-a1", "eu-b"}, []int{1, 2}},
		{[]string{"eu-a1", "us-a"}, []int{2, 2}}, // zone a of eu and of us differ
		{[]string{"eu-a1", "eu-b", "us-a"}, []int{2, 3}},
		{[]string{"none", "bad"}, []int{1, 1}}, // one unknown place
		{[]string{"none", "eu-a1"}, []int{2, 2}},
	}
	for _, tt := range tests {
		if got := locs.diversity(tt.ids); !slices.Equal(got, tt.want) {
			t.Errorf("diversity(%v) = %v, want %v", tt.ids, got, tt.want)
		}
	}
	if got := newLocalities(nodes(NodeActive, NodeActive)).diversity([]string{"n1", "n2"}); len(got) != 0 {
		t.Errorf("diversity without localities = %v, want none", got)
	}
}

func TestLeaderMoveFor_SpreadsLeadersOverLocalities(t *testing.T) {
	// n1 leads two ranges; n2 and n3 lead none, but n3's zone already has
	// a leader (n4's), so of the two equal hand-overs n2 gets it.
	locs := newLocalities(zoned("a", "b", "c", "c"))
	ranges := []*kvpb.RangeDescriptor{rng(2, "n1", "n3", "n2"), rng(3, "n1", "n3", "n4"), rng(4, "n4", "n2", "n1")}
	leads := map[string]int{"n1": 2, "n4": 1}
	all := func(*kvpb.RangeDescriptor) bool { return true }
	leaderOf := func(d *kvpb.RangeDescriptor) string { return d.Leader }
	tests := []struct {
		name   string
		locs   localities
		wantTo string
	}{
		{"with localities: the zone leading fewest", locs, "n2"},
		{"without: the first found", newLocalities(nil), "n3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, to, ok := leaderMoveFor(tt.locs, ranges, leaderOf, leads, all, func(string) bool { return true })
			if !ok || d.Id != 2 || to != tt.wantTo {
				t.Fatalf("leaderMoveFor = range %v to %q (%v), want range 2 to %s", d.GetId(), to, ok, tt.wantTo)
			}
		})
	}
}

func TestConfig_ValidatesTheLocality(t *testing.T) {
	tests := []struct {
		locality string
		ok       bool
	}{
		{"", true},
		{"region=eu,zone=a", true},
		{"region", false},
		{"region=eu,region=us", false},
		{"zone=", false},
	}
	for _, tt := range tests {
		c := DefaultConfig()
		c.NodeID, c.DataDir, c.RaftAddr, c.GRPCAddr = "n1", t.TempDir(), "127.0.0.1:7012", "127.0.0.1:7010"
		c.Locality = tt.locality
		if err := c.Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate with locality %q: %v, want ok=%v", tt.locality, err, tt.ok)
		}
	}
}
