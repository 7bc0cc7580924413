package layout

import (
	"fmt"
	"testing"
)

// layoutOf builds a Layout of n ranges, each replicated on every node of
// ids, led as leaders says (leaders[i] leads range i+2; "" unknown).
func layoutOf(ids []string, leaders []string) *Layout {
	l := &Layout{}
	for _, id := range ids {
		l.Nodes = append(l.Nodes, Node{ID: id, GRPCAddr: id + ":1"})
	}
	for i, lead := range leaders {
		l.Ranges = append(l.Ranges, Range{ID: uint64(i + 2), Replicas: ids, Leader: lead})
		for j := range l.Nodes {
			l.Nodes[j].Replicas++
			if l.Nodes[j].ID == lead {
				l.Nodes[j].Leaders++
			}
		}
		if lead == "" {
			l.Unled++
		}
	}
	return l
}

func repeat(id string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = id
	}
	return out
}

// apply carries out moves on l, as the cluster would.
func apply(t *testing.T, l *Layout, moves []Move) {
	t.Helper()
	seen := map[uint64]bool{}
	for _, m := range moves {
		if seen[m.RangeID] {
			t.Fatalf("range %d moved twice in one plan: %v", m.RangeID, moves)
		}
		seen[m.RangeID] = true
		for i := range l.Ranges {
			r := &l.Ranges[i]
			if r.ID != m.RangeID {
				continue
			}
			if r.Leader != m.From {
				t.Fatalf("move %+v: range is led by %s", m, r.Leader)
			}
			r.Leader = m.To
			l.Node(m.From).Leaders--
			l.Node(m.To).Leaders++
		}
	}
}

func TestPlanLeaderMoves_BalancesInOneRoundWithTheFewestMoves(t *testing.T) {
	three := []string{"n1", "n2", "n3"}
	for _, tc := range []struct {
		name      string
		ids       []string
		leaders   []string
		wantMoves int
	}{
		{"16 ranges all on n1", three, repeat("n1", 16), 10},
		{"16 ranges, 10/6/0", three, append(repeat("n1", 10), repeat("n2", 6)...), 5},
		{"16 ranges, 6/5/5 is already balanced", three, append(append(repeat("n3", 6), repeat("n1", 5)...), repeat("n2", 5)...), 0},
		{"23 ranges on 3 nodes, a 4th joins leading none", []string{"n1", "n2", "n3", "n4"},
			append(append(repeat("n1", 8), repeat("n2", 8)...), repeat("n3", 7)...), 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := layoutOf(tc.ids, tc.leaders)
			moves := PlanLeaderMoves(l)
			if len(moves) != tc.wantMoves {
				t.Errorf("%d moves %v, want %d", len(moves), moves, tc.wantMoves)
			}
			apply(t, l, moves)
			if !l.LeadersBalanced() {
				t.Fatalf("after the plan: %s, want leaders within one", l)
			}
		})
	}
}

// With the meta range led by the node the user ranges alone would leave
// leading most, the plan balances every group's leadership, as kvd does,
// so kvd has nothing left to move.
func TestPlanLeaderMoves_CountsTheMetaLeadership(t *testing.T) {
	l := layoutOf([]string{"n1", "n2", "n3"}, append(repeat("n1", 10), repeat("n2", 6)...))
	l.MetaLeader = "n1"
	moves := PlanLeaderMoves(l)
	apply(t, l, moves)
	if !l.LeadershipsBalanced() || !l.LeadersBalanced() {
		t.Fatalf("after the plan (%d moves): %s, want every group's leadership and the user ranges' within one", len(moves), l)
	}
	// 17 groups on 3 nodes: 6/6/5, the meta leader's node one of the 6s.
	if n := l.Node("n1").Leaders; n != 5 {
		t.Fatalf("n1 leads %d user ranges and the meta range, want 5 and meta", n)
	}
	// And for every placement of the meta leadership and of 15 to 18
	// user leaderships, both balances hold after one plan.
	for total := 15; total <= 18; total++ {
		for _, meta := range []string{"n1", "n2", "n3"} {
			l := layoutOf([]string{"n1", "n2", "n3"}, append(repeat("n2", total-3), repeat("n3", 3)...))
			l.MetaLeader = meta
			apply(t, l, PlanLeaderMoves(l))
			if !l.LeadershipsBalanced() || !l.LeadersBalanced() {
				t.Fatalf("%d user ranges, meta led by %s: after the plan %s", total, meta, l)
			}
		}
	}
}

// BalanceLeaders stops only when both balances hold: with the meta range
// on n1, 4/6/6 user leaders balance every group's leadership (5/6/6) but
// not the user ranges'.
func TestLayout_BalancedWantsBoth(t *testing.T) {
	cases := []struct {
		name    string
		leaders []string
		meta    string
		want    bool
	}{
		{"4+meta/6/6", append(append(repeat("n1", 4), repeat("n2", 6)...), repeat("n3", 6)...), "n1", false},
		{"5+meta/6/5", append(append(repeat("n1", 5), repeat("n2", 6)...), repeat("n3", 5)...), "n1", true},
		{"6+meta/5/5", append(append(repeat("n1", 6), repeat("n2", 5)...), repeat("n3", 5)...), "n1", false},
		{"6/5/5, meta unknown", append(append(repeat("n1", 6), repeat("n2", 5)...), repeat("n3", 5)...), "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := layoutOf([]string{"n1", "n2", "n3"}, c.leaders)
			l.MetaLeader = c.meta
			if got := l.balanced(); got != c.want {
				t.Fatalf("balanced() = %v, want %v (%s)", got, c.want, l)
			}
			if !c.want {
				apply(t, l, PlanLeaderMoves(l))
				if !l.balanced() {
					t.Fatalf("after one plan: %s, still not balanced", l)
				}
			}
		})
	}
}

func TestPlanLeaderMoves_MovesOnlyToAReplica(t *testing.T) {
	// n3 holds no replica of any range: nothing can move there, and the
	// plan must not pretend otherwise.
	l := layoutOf([]string{"n1", "n2"}, repeat("n1", 4))
	l.Nodes = append(l.Nodes, Node{ID: "n3"})
	moves := PlanLeaderMoves(l)
	for _, m := range moves {
		if m.To == "n3" {
			t.Fatalf("move %+v to a node without a replica", m)
		}
	}
	if len(moves) == 0 {
		t.Fatal("no move from n1 (4 leaders) to n2 (0)")
	}
}

func TestLayout_LeadersBalanced(t *testing.T) {
	three := []string{"n1", "n2", "n3"}
	for _, tc := range []struct {
		name    string
		leaders []string
		want    bool
	}{
		{"6/5/5", append(append(repeat("n1", 6), repeat("n2", 5)...), repeat("n3", 5)...), true},
		{"6/6/4", append(append(repeat("n1", 6), repeat("n2", 6)...), repeat("n3", 4)...), false},
		{"one range without a leader", append(append(repeat("n1", 5), repeat("n2", 5)...), append(repeat("n3", 5), "")...), false},
		{"16/0/0", repeat("n1", 16), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := layoutOf(three, tc.leaders).LeadersBalanced(); got != tc.want {
				t.Fatalf("LeadersBalanced() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLayout_HasFairShare(t *testing.T) {
	// 23 ranges of 3 replicas on 4 nodes: 17.25 each, so 16.25 to 18.25.
	mk := func(n4 int) *Layout {
		l := &Layout{Nodes: []Node{{ID: "n1"}, {ID: "n2"}, {ID: "n3"}, {ID: "n4"}}}
		for i := range 23 {
			reps := []string{"n1", "n2", "n3"}
			if i < n4 {
				reps[i%3] = "n4"
			}
			l.Ranges = append(l.Ranges, Range{ID: uint64(i + 2), Replicas: reps})
			for _, id := range reps {
				l.Node(id).Replicas++
			}
		}
		return l
	}
	for _, tc := range []struct {
		n4   int
		want bool
	}{{0, false}, {16, false}, {17, true}, {18, true}, {19, false}} {
		t.Run(fmt.Sprintf("n4 holds %d", tc.n4), func(t *testing.T) {
			if got := mk(tc.n4).HasFairShare("n4", 3); got != tc.want {
				t.Fatalf("HasFairShare = %v, want %v", got, tc.want)
			}
		})
	}
	l := mk(17)
	l.Ranges[0].Replicas = append(l.Ranges[0].Replicas, "n9")
	if l.HasFairShare("n4", 3) {
		t.Fatal("a range with a 4th replica still in place counted as settled")
	}
}

func TestSplitKeys_CutTheKeySpaceEvenly(t *testing.T) {
	keys, err := SplitKeys("kvbench/", 10000, 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 15 || string(keys[0]) != "kvbench/0000000625" || string(keys[14]) != "kvbench/0000009375" {
		t.Fatalf("got %d keys %q ... %q, want 15 from kvbench/0000000625 to kvbench/0000009375", len(keys), keys[0], keys[len(keys)-1])
	}
	for i := 1; i < len(keys); i++ {
		if string(keys[i-1]) >= string(keys[i]) {
			t.Fatalf("keys not ascending at %d: %q, %q", i, keys[i-1], keys[i])
		}
	}
	if _, err := SplitKeys("k", 10, 16); err == nil {
		t.Fatal("16 ranges of a 10-key space accepted")
	}
}

func TestLayout_LeadershipsBalancedCountsTheMetaRange(t *testing.T) {
	// 24 user ranges led 7/6/6/5: not balanced on their own, but with the
	// meta range led by the node leading 5, every node leads 7 or 6 groups.
	l := layoutOf([]string{"n1", "n2", "n3", "n4"},
		append(append(append(repeat("n1", 7), repeat("n2", 6)...), repeat("n3", 6)...), repeat("n4", 5)...))
	if l.LeadersBalanced() {
		t.Fatal("user leaders 7/6/6/5 counted as balanced")
	}
	if l.LeadershipsBalanced() {
		t.Fatal("balanced with no meta leader known")
	}
	l.MetaLeader = "n4"
	if !l.LeadershipsBalanced() {
		t.Fatalf("%s: 7/6/6/6 groups counted as unbalanced", l)
	}
	l.MetaLeader = "n1"
	if l.LeadershipsBalanced() {
		t.Fatalf("%s: 8/6/6/5 groups counted as balanced", l)
	}
}
