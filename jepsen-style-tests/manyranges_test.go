package jepsen

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
)

func TestPresplitPoints_SpreadOverTheRunsKeys(t *testing.T) {
	wl := WorkloadConfig{}
	wl.setDefaults() // 12 registers per 20s, 4 lists and the set per 30s
	tests := []struct {
		name string
		d    time.Duration
		n    int
		want int // points returned
		// has must be among the points, hasNot must not.
		has, hasNot []string
	}{
		{
			// 13 register, 9 list and 9 set generations: one point each.
			// Points beyond those go one per generation and pass, in
			// order: 13 register generations, then 3 list ones.
			name: "4m, 31 points: every generation starts a range",
			d:    4 * time.Minute, n: 31, want: 31,
			has:    []string{"r/0000/", "r/0012/", "l/0008/", "s/0000/", "s/0008/"},
			hasNot: []string{"r/0000/06", "r/0013/"},
		},
		{
			name: "4m, 47 points: registers and lists cut between their keys too",
			d:    4 * time.Minute, n: 47, want: 47,
			has:    []string{"r/0000/", "r/0000/06", "r/0012/06", "l/0000/02", "l/0002/02", "s/0004/"},
			hasNot: []string{"l/0003/02"},
		},
		{
			// 31 register, 21 list and 21 set generations: every 7th.
			name: "10m, 10 points: the generations split at spread over the run",
			d:    10 * time.Minute, n: 10, want: 10,
			has: []string{"r/0000/", "r/0029/", "l/0005/", "l/0020/", "s/0013/"},
		},
		{
			// 2 register generations of 12 keys, 1 list generation of 4,
			// 1 set generation: 24 + 4 + 1 points at most.
			name: "20s, 100 points: every key starts a range, and no more",
			d:    20 * time.Second, n: 100, want: 29,
			has: []string{"r/0001/11", "l/0000/03", "s/0000/"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := presplitPoints(wl, tc.d, tc.n)
			if len(got) != tc.want {
				t.Fatalf("%d points, want %d: %q", len(got), tc.want, got)
			}
			if !slices.IsSortedFunc(got, func(a, b string) int { return strings.Compare(b, a) }) || len(slices.Compact(slices.Clone(got))) != len(got) {
				t.Errorf("points not unique and highest first: %q", got)
			}
			kinds := map[string]bool{}
			for _, p := range got {
				kinds[p[:2]] = true
				// A set generation is one range: its scans must stay one page.
				if strings.HasPrefix(p, SetPrefix) && strings.Count(p, "/") != 2 {
					t.Errorf("a set generation is cut inside at %q", p)
				}
			}
			if len(kinds) != 3 {
				t.Errorf("points in %d of the 3 workloads' key spaces: %q", len(kinds), got)
			}
			for _, p := range tc.has {
				if !slices.Contains(got, p) {
					t.Errorf("no point %q in %q", p, got)
				}
			}
			for _, p := range tc.hasNot {
				if slices.Contains(got, p) {
					t.Errorf("point %q in %q", p, got)
				}
			}
		})
	}
}

// listedStatus is a scriptedStatus whose routing table lists ranges.
type listedStatus struct {
	*scriptedStatus
	ranges []uint64
	err    error
}

func (l *listedStatus) listRanges(context.Context) ([]uint64, error) { return l.ranges, l.err }

func TestCheckReplicas_EveryRangeOfTheRoutingTable(t *testing.T) {
	// Ranges 1 (meta), 2 and 3 are reported by every node.
	reported := func(_ int, node string) []*kvpb.RangeStatus {
		return []*kvpb.RangeStatus{replicaAt(1, role(node), 9, "m", three...), replicaAt(2, role(node), 100, "a", three...), replicaAt(3, role(node), 50, "b", three...)}
	}
	tests := []struct {
		name         string
		listed       []uint64
		err          error
		pass         bool
		ranges, cmpd int // user ranges seen and compared
		want         string
	}{
		{name: "every listed range compared", listed: []uint64{2, 3}, pass: true, ranges: 2, cmpd: 2},
		{name: "a listed range no node reports", listed: []uint64{2, 3, 4}, ranges: 3, cmpd: 2,
			want: "range 4: listed by the routing table, but no node reported a replica of it"},
		{name: "the routing table never answers", err: errors.New("no leader"), ranges: 2, cmpd: 2,
			want: "no node listed the ranges"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &listedStatus{scriptedStatus: &scriptedStatus{nodes: three, script: reported}, ranges: tc.listed, err: tc.err}
			r, stats := checkReplicas(context.Background(), src, fastWait, t.Logf)
			if tc.pass == r.Failing() || stats.userRanges != tc.ranges || stats.userCompared != tc.cmpd {
				t.Fatalf("verdict %s, %d user ranges of which %d compared; want pass=%v, %d of %d; violations %+v",
					r.Verdict, stats.userRanges, stats.userCompared, tc.pass, tc.cmpd, tc.ranges, r.Violations)
			}
			if tc.want != "" && !slices.ContainsFunc(r.Violations, func(v Violation) bool { return strings.Contains(v.Msg, tc.want) }) {
				t.Errorf("no violation says %q: %+v", tc.want, r.Violations)
			}
		})
	}
}

func TestPanicLine_SaysWhyThatProcessExited(t *testing.T) {
	log := strings.Join([]string{
		"=== jepsen harness: n5 is pid 10",
		"kvd: shard: bootstrap range 3: an older process's exit",
		"=== jepsen harness 2026-12-03T01:13:15Z: starting n5: kvd serve ...",
		"=== jepsen harness: n5 is pid 11",
		`time=2026-12-03T01:13:15Z level=INFO msg="initial configuration" node=n5 range=17`,
		"kvd: shard: bootstrap range 17: node is not a voter",
		"=== jepsen harness: n5 is pid 12",
		"panic: runtime error: index out of range",
		"=== jepsen harness: n5 is pid 13",
		"fatal error: concurrent map writes",
		"=== jepsen harness: n5 is pid 14",
		"time=... level=INFO msg=stopping",
	}, "\n")
	path := t.TempDir() + "/kvd.log"
	if err := os.WriteFile(path, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{nodes: []*node{{id: "n5", logPath: path}}}
	for _, tc := range []struct {
		pid  int
		want string
	}{
		{11, "kvd: shard: bootstrap range 17: node is not a voter"},
		{12, "panic: runtime error: index out of range"},
		{13, "fatal error: concurrent map writes"},
		{14, ""},
		{99, ""},
	} {
		if got := c.PanicLine(0, tc.pid); got != tc.want {
			t.Errorf("pid %d: %q, want %q", tc.pid, got, tc.want)
		}
	}
}
