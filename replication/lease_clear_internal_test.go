package replication

import (
	"testing"

	"github.com/dialkv/dialkv/api/kvpb"
)

func span(start, end string) *kvpb.RangeDescriptor {
	return &kvpb.RangeDescriptor{Start: []byte(start), End: []byte(end)}
}

// A revoke is answered only when the spans vouched for cover the whole
// key space; what is left names the gaps, in order.
func TestSpanCover(t *testing.T) {
	for _, tc := range []struct {
		name     string
		spans    [][]*kvpb.RangeDescriptor // added in steps
		complete bool
		gaps     string
	}{
		{"nothing", nil, false, `["", end)`},
		{"one range", [][]*kvpb.RangeDescriptor{{span("", "")}}, true, ""},
		{"two halves out of order", [][]*kvpb.RangeDescriptor{{span("m", "")}, {span("", "m")}}, true, ""},
		{"a split's left half only", [][]*kvpb.RangeDescriptor{{span("", "m")}}, false, `["m", end)`},
		{"a hole in the middle", [][]*kvpb.RangeDescriptor{{span("", "c"), span("f", "")}}, false, `["c", "f")`},
		{"overlapping spans from different rounds", [][]*kvpb.RangeDescriptor{{span("", "f")}, {span("c", "k"), span("k", "")}}, true, ""},
		{"a span inside another", [][]*kvpb.RangeDescriptor{{span("", "z"), span("c", "d")}}, false, `["z", end)`},
		{"three gaps", [][]*kvpb.RangeDescriptor{{span("b", "c"), span("d", "e")}}, false, `["", "b"), ["c", "d"), ["e", end)`},
		{"nil spans ignored", [][]*kvpb.RangeDescriptor{{nil, span("", "")}}, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c spanCover
			for _, step := range tc.spans {
				c.add(step...)
			}
			if c.complete() != tc.complete {
				t.Errorf("complete = %v, want %v", c.complete(), tc.complete)
			}
			if !tc.complete && c.gaps() != tc.gaps {
				t.Errorf("gaps = %s, want %s", c.gaps(), tc.gaps)
			}
		})
	}
}

// overlapsGap picks the ranges a further round must ask: those meeting
// an uncovered span.
func TestSpanCover_OverlapsGap(t *testing.T) {
	var c spanCover
	c.add(span("", "c"), span("f", ""))
	for _, tc := range []struct {
		d    *kvpb.RangeDescriptor
		want bool
	}{
		{span("", "c"), false},
		{span("b", "d"), true},
		{span("c", "f"), true},
		{span("d", "e"), true},
		{span("f", ""), false},
		{span("", ""), true},
	} {
		if got := c.overlapsGap(tc.d); got != tc.want {
			t.Errorf("overlapsGap([%q, %q)) = %v, want %v", tc.d.Start, tc.d.End, got, tc.want)
		}
	}
}

// Sleeping replicas vouch for a span only as a majority of the voters
// their range had when it went to sleep, all describing it the same way.
func TestAsleepMajorities(t *testing.T) {
	led := func(leader string, gen uint64, voters ...string) *kvpb.RangeDescriptor {
		return &kvpb.RangeDescriptor{Id: 2, Start: []byte("a"), End: []byte("m"), Generation: gen, Replicas: voters, Leader: leader}
	}
	desc := func(gen uint64, voters ...string) *kvpb.RangeDescriptor { return led("n1", gen, voters...) }
	v := func(node string, d *kvpb.RangeDescriptor) asleepVote { return asleepVote{node: node, d: d} }
	for _, tc := range []struct {
		name  string
		votes []asleepVote
		want  int
	}{
		{"two of three", []asleepVote{v("n1", desc(3, "n1", "n2", "n3")), v("n2", desc(3, "n2", "n1", "n3"))}, 1},
		{"one of three", []asleepVote{v("n1", desc(3, "n1", "n2", "n3"))}, 0},
		{"two of three, different generations", []asleepVote{v("n1", desc(3, "n1", "n2", "n3")), v("n2", desc(4, "n1", "n2", "n3"))}, 0},
		{"two of three, different voters", []asleepVote{v("n1", desc(3, "n1", "n2", "n3")), v("n2", desc(3, "n1", "n2", "n4"))}, 0},
		{"a removed replica does not vote", []asleepVote{v("n1", desc(3, "n1", "n2", "n3")), v("n9", desc(3, "n1", "n2", "n3"))}, 0},
		{"the same node twice counts once", []asleepVote{v("n1", desc(3, "n1", "n2", "n3")), v("n1", desc(3, "n1", "n2", "n3"))}, 0},
		{"two of four", []asleepVote{v("n1", desc(3, "n1", "n2", "n3", "n4")), v("n2", desc(3, "n1", "n2", "n3", "n4"))}, 0},
		{"no voters known", []asleepVote{v("n1", desc(3)), v("n2", desc(3))}, 0},
		{"two of three without the leader at sleep", []asleepVote{v("n2", desc(3, "n1", "n2", "n3")), v("n3", desc(3, "n1", "n2", "n3"))}, 0},
		{"two of three with the leader at sleep", []asleepVote{v("n2", led("n3", 3, "n1", "n2", "n3")), v("n3", led("n3", 3, "n1", "n2", "n3"))}, 1},
		{"two of three naming different leaders", []asleepVote{v("n1", led("n1", 3, "n1", "n2", "n3")), v("n2", led("n2", 3, "n1", "n2", "n3"))}, 0},
		{"no leader known at sleep", []asleepVote{v("n1", led("", 3, "n1", "n2", "n3")), v("n2", led("", 3, "n1", "n2", "n3"))}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := asleepMajorities(tc.votes); len(got) != tc.want {
				t.Errorf("%d spans vouched for, want %d", len(got), tc.want)
			}
		})
	}
}
