package jepsen

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
)

// scriptedStatus is a cluster whose nodes report what script says for
// each round of status requests (a round begins when node 0 is asked).
type scriptedStatus struct {
	nodes  []string
	round  int
	script func(round int, node string) []*kvpb.RangeStatus
}

func (s *scriptedStatus) N() int             { return len(s.nodes) }
func (s *scriptedStatus) ID(i int) string    { return s.nodes[i] }
func (s *scriptedStatus) Running(i int) bool { return true }

func (s *scriptedStatus) status(_ context.Context, i int, digest bool) (*kvpb.StatusResponse, error) {
	if !digest {
		return nil, fmt.Errorf("asked for a status without digests")
	}
	if i == 0 {
		s.round++
	}
	return &kvpb.StatusResponse{Node: &kvpb.NodeStatus{Id: s.nodes[i], Ranges: s.script(s.round, s.nodes[i])}}, nil
}

// replicaAt is a replica of range id at applied index applied, whose
// state digest is sum.
func replicaAt(id uint64, state string, applied uint64, sum string, replicas ...string) *kvpb.RangeStatus {
	return &kvpb.RangeStatus{Id: id, State: state, Term: 3, Replicas: replicas, AppliedIndex: applied,
		Digest: sum, DigestAppliedIndex: applied, DigestKeys: applied / 10}
}

var three = []string{"n1", "n2", "n3"}

// fastWait keeps the hand-made cases quick: up to 50 rounds.
var fastWait = replicaWait{Timeout: 200 * time.Millisecond, Interval: 4 * time.Millisecond}

func TestReplicaResult_ComparesEveryRangeWholeOrFails(t *testing.T) {
	tests := []struct {
		name   string
		script func(round int, node string) []*kvpb.RangeStatus
		pass   bool
		// checked is how many ranges must be compared whole; want, what
		// the violation says when the check fails.
		checked int
		want    []string
	}{
		{
			name: "replicas at one index from the first round",
			script: func(_ int, node string) []*kvpb.RangeStatus {
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 100, "same", three...)}
			},
			pass: true, checked: 1,
		},
		{
			name: "a lagging replica that catches up after the heal",
			script: func(round int, node string) []*kvpb.RangeStatus {
				if node == "n3" && round < 5 {
					return []*kvpb.RangeStatus{replicaAt(2, "Follower", 40+uint64(round), "old", three...)}
				}
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 100, "same", three...)}
			},
			pass: true, checked: 1,
		},
		{
			// The meta range keeps taking writes: its replicas are never
			// at one index in one round, but each passes through every
			// index, and a digest names the index it is of.
			name: "replicas seen at one index in different rounds",
			script: func(round int, node string) []*kvpb.RangeStatus {
				skew := map[string]int{"n1": 2, "n2": 1, "n3": 0}[node]
				return []*kvpb.RangeStatus{replicaAt(1, role(node), uint64(10+round+skew), fmt.Sprintf("at-%d", 10+round+skew), three...)}
			},
			pass: true, checked: 1,
		},
		{
			// Issue 12: a follower whose log refused every append after a
			// snapshot install stayed at the snapshot's index for good.
			name: "a replica stuck behind for good",
			script: func(_ int, node string) []*kvpb.RangeStatus {
				if node == "n1" {
					st := replicaAt(2, "Follower", 40055, "stale", three...)
					st.AppendError = "its log has refused 9 appends in a row over 3m0s: raftstore: log entry 40056 stored out of order (want 55)"
					return []*kvpb.RangeStatus{st, replicaAt(3, "Follower", 7, "r3", three...)}
				}
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 244832, "fresh", three...), replicaAt(3, role(node), 7, "r3", three...)}
			},
			checked: 1,
			want:    []string{"range 2:", "never all seen at one applied index", "n1 at 40055 (its log has refused 9 appends", "n2 at 244832"},
		},
		{
			name: "replicas that differ at one index",
			script: func(_ int, node string) []*kvpb.RangeStatus {
				sum := "same"
				if node == "n2" {
					sum = "tampered"
				}
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 100, sum, three...)}
			},
			want: []string{"range 2: replicas n1 and n2 differ at applied index 100"},
		},
		{
			name: "replicas that differ at an index seen in different rounds",
			script: func(round int, node string) []*kvpb.RangeStatus {
				if node == "n3" {
					return []*kvpb.RangeStatus{replicaAt(2, "Follower", 50, "diverged", three...)}
				}
				if round == 1 {
					return []*kvpb.RangeStatus{replicaAt(2, role(node), 50, "at-50", three...)}
				}
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 60, "at-60", three...)}
			},
			want: []string{"range 2: replicas n1 and n3 differ at applied index 50"},
		},
		{
			// n4 was removed from the range but still reports its old copy.
			name: "a replica the range dropped is not waited for",
			script: func(_ int, node string) []*kvpb.RangeStatus {
				if node == "n4" {
					return []*kvpb.RangeStatus{replicaAt(2, "Follower", 12, "old", "n1", "n2", "n3", "n4")}
				}
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 100, "same", three...)}
			},
			pass: true, checked: 1,
		},
		{
			name: "a replica that never reports the range",
			script: func(_ int, node string) []*kvpb.RangeStatus {
				if node == "n3" {
					return nil
				}
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 100, "same", three...)}
			},
			want: []string{"range 2:", "n3 never reported it"},
		},
		{
			name:   "no range at all",
			script: func(int, string) []*kvpb.RangeStatus { return nil },
			want:   []string{"no node reported any range"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &scriptedStatus{nodes: []string{"n1", "n2", "n3", "n4"}, script: tc.script}
			start := time.Now()
			r := replicaResult(context.Background(), src, fastWait, t.Logf)
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("the check took %v with a %v bound", took, fastWait.Timeout)
			}
			if tc.pass != !r.Failing() || r.Checked != tc.checked {
				t.Fatalf("verdict %s with %d ranges compared, want pass=%v with %d; violations %+v, notes %v",
					r.Verdict, r.Checked, tc.pass, tc.checked, r.Violations, r.Notes)
			}
			if tc.pass {
				return
			}
			msg := r.Violations[0].Msg
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("violation %q does not say %q", msg, w)
				}
			}
		})
	}
}

// role makes n1 the leader of every range.
func role(node string) string {
	if node == "n1" {
		return "Leader"
	}
	return "Follower"
}

// countedStatus is a scriptedStatus that also says how many nodes are
// running members, round by round (a memberCounter).
type countedStatus struct {
	*scriptedStatus
	factor  int
	members func(round int) (int, error)
}

func (c *countedStatus) replicationFactor() int { return c.factor }

func (c *countedStatus) runningMembers(context.Context) (int, error) {
	// Asked before the round's status requests, which begin it.
	return c.members(c.round + 1)
}

func TestReplicaResult_FailsUnderReplicatedRanges(t *testing.T) {
	allThree := func(int) (int, error) { return 3, nil }
	tests := []struct {
		name    string
		nodes   []string
		factor  int
		members func(round int) (int, error)
		script  func(round int, node string) []*kvpb.RangeStatus
		pass    bool
		checked int
		want    []string // what the violation says when the check fails
	}{
		{
			// Issue 13: a node wiped and rejoined was never given
			// replicas again, and every range ended with one.
			name:  "a range left with one replica",
			nodes: three, factor: 3, members: allThree,
			script: func(_ int, node string) []*kvpb.RangeStatus {
				if node != "n3" {
					return nil
				}
				return []*kvpb.RangeStatus{replicaAt(7, "Leader", 100, "only", "n3")}
			},
			want: []string{"range 7: 1 replica [n3], want 3: under-replicated after the heal", "replication factor 3, 3 running members"},
		},
		{
			name:  "a range left with two replicas of three",
			nodes: three, factor: 3, members: allThree,
			script: func(_ int, node string) []*kvpb.RangeStatus {
				if node == "n3" {
					return []*kvpb.RangeStatus{replicaAt(1, "Follower", 50, "meta", three...)}
				}
				return []*kvpb.RangeStatus{replicaAt(1, role(node), 50, "meta", three...), replicaAt(4, role(node), 100, "same", "n1", "n2")}
			},
			checked: 1,
			want:    []string{"range 4: 2 replicas [n1 n2], want 3: under-replicated"},
		},
		{
			name:  "a range that gets its replicas back while polled",
			nodes: three, factor: 3, members: allThree,
			script: func(round int, node string) []*kvpb.RangeStatus {
				if round < 5 {
					if node != "n1" {
						return nil
					}
					return []*kvpb.RangeStatus{replicaAt(2, "Leader", 90, "early", "n1")}
				}
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 100, "same", three...)}
			},
			pass: true, checked: 1,
		},
		{
			// Until the membership is known, a range with one replica
			// cannot be told from a single-node cluster's.
			name:  "a membership known only after a few rounds",
			nodes: three, factor: 3,
			members: func(round int) (int, error) {
				if round < 4 {
					return 0, fmt.Errorf("members via n1: unavailable")
				}
				return 3, nil
			},
			script: func(_ int, node string) []*kvpb.RangeStatus {
				if node != "n1" {
					return nil
				}
				return []*kvpb.RangeStatus{replicaAt(2, "Leader", 100, "only", "n1")}
			},
			want: []string{"range 2: 1 replica [n1], want 3: under-replicated"},
		},
		{
			name:  "a single-node cluster",
			nodes: []string{"n1"}, factor: 3,
			members: func(int) (int, error) { return 1, nil },
			script: func(int, string) []*kvpb.RangeStatus {
				return []*kvpb.RangeStatus{replicaAt(1, "Leader", 30, "meta", "n1"), replicaAt(2, "Leader", 100, "user", "n1")}
			},
			pass: true,
		},
		{
			name:  "a replication factor of one",
			nodes: three, factor: 1, members: allThree,
			script: func(_ int, node string) []*kvpb.RangeStatus {
				return []*kvpb.RangeStatus{replicaAt(map[string]uint64{"n1": 2, "n2": 3, "n3": 4}[node], "Leader", 100, "own", node)}
			},
			pass: true,
		},
		{
			// The membership nemesis's removed node is not a member:
			// two replicas are all the range can have.
			name:  "two running members",
			nodes: three, factor: 3,
			members: func(int) (int, error) { return 2, nil },
			script: func(_ int, node string) []*kvpb.RangeStatus {
				if node == "n3" {
					return nil
				}
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 100, "same", "n1", "n2")}
			},
			pass: true, checked: 1,
		},
		{
			name:  "a membership no node would list",
			nodes: three, factor: 3,
			members: func(int) (int, error) { return 0, fmt.Errorf("members via n1: unavailable") },
			script: func(_ int, node string) []*kvpb.RangeStatus {
				return []*kvpb.RangeStatus{replicaAt(2, role(node), 100, "same", three...)}
			},
			checked: 1,
			want:    []string{"no node listed the members"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := &countedStatus{scriptedStatus: &scriptedStatus{nodes: tc.nodes, script: tc.script}, factor: tc.factor, members: tc.members}
			r := replicaResult(context.Background(), src, fastWait, t.Logf)
			if tc.pass != !r.Failing() || r.Checked != tc.checked {
				t.Fatalf("verdict %s with %d ranges compared, want pass=%v with %d; violations %+v, notes %v",
					r.Verdict, r.Checked, tc.pass, tc.checked, r.Violations, r.Notes)
			}
			if tc.pass {
				return
			}
			if len(r.Violations) != 1 {
				t.Errorf("violations %+v, want one", r.Violations)
			}
			msg := r.Violations[0].Msg
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("violation %q does not say %q", msg, w)
				}
			}
		})
	}
}

func TestKvdReplicas(t *testing.T) {
	tests := []struct {
		args []string
		want int
	}{
		{nil, defaultReplicationFactor},
		{[]string{"--range-max-bytes", "4096"}, defaultReplicationFactor},
		{[]string{"--replicas", "5"}, 5},
		{[]string{"--replicas=1", "--log-level", "debug"}, 1},
		{[]string{"-replicas", "2"}, 2},
		{[]string{"--replicas"}, defaultReplicationFactor},
		{[]string{"--replicas", "none"}, defaultReplicationFactor},
		{[]string{"--peer-proxy", "replicas=1"}, defaultReplicationFactor},
	}
	for _, tc := range tests {
		if got := kvdReplicas(tc.args); got != tc.want {
			t.Errorf("kvdReplicas(%q) = %d, want %d", tc.args, got, tc.want)
		}
	}
}

func TestCountRunningMembers(t *testing.T) {
	up := map[string]bool{"n1": true, "n2": true, "n3": true}
	tests := []struct {
		name    string
		members []*kvpb.Member
		want    int
	}{
		{"every member runs", []*kvpb.Member{{Id: "n1", Voter: true}, {Id: "n2", Voter: true}, {Id: "n3", Voter: true}}, 3},
		{"a removed member", []*kvpb.Member{{Id: "n1", Voter: true}, {Id: "n2", Voter: true}, {Id: "n3"}}, 2},
		{"a member not running", []*kvpb.Member{{Id: "n1", Voter: true}, {Id: "n4", Voter: true}}, 1},
		{"a member listed twice", []*kvpb.Member{{Id: "n1", Voter: true}, {Id: "n1", Voter: true}}, 1},
		{"no member", nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := countRunningMembers(tc.members, func(id string) bool { return up[id] }); got != tc.want {
				t.Errorf("countRunningMembers = %d, want %d", got, tc.want)
			}
		})
	}
}
