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
