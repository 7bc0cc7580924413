package jepsen

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
)

// CheckReplicas is the verdict on the replicas' own state: the replicas of
// a range that have applied the same log index must hold the same keys,
// values and revisions. The history-based checkers see a diverged replica
// only when a read happens to land on it; this compares every range
// directly, at the end of the run.
//
// Every range must be compared with all its replicas at one index. A
// range whose replicas never get there fails the check: a replica stuck
// behind its leader is a fault of its own (issue 12: a follower that
// could not append after a snapshot install served stale reads for good,
// and this check, which then only wrote a note, passed).
//
// Every range must also have as many replicas as the cluster can give it
// (see memberCounter). A range with a single replica has nothing to be
// compared with, and issue 13's did pass as such: a node wiped and
// rejoined was never given replicas again, and every range ended with
// one.
const CheckReplicas = "replicas"

// replicaSource is what the replicas checker asks of the cluster.
type replicaSource interface {
	N() int
	ID(i int) string
	Running(i int) bool
	status(ctx context.Context, i int, digest bool) (*kvpb.StatusResponse, error)
}

// rangeLister is a replicaSource that also knows every range the routing
// table lists (Cluster.Ranges): each must be compared too, so that a range
// whose every replica is missing from the nodes' reports fails the check
// rather than go unseen.
type rangeLister interface {
	listRanges(ctx context.Context) ([]uint64, error)
}

// memberCounter is a replicaSource that knows how many replicas each range
// can have: the replication factor, capped by the running nodes that are
// members of the cluster. A range with fewer fails the check, once
// placement has had until the checker's deadline to add the missing ones.
type memberCounter interface {
	// replicationFactor is kvd's --replicas.
	replicationFactor() int
	// runningMembers counts the running nodes that are active members:
	// a node removed (and not yet rejoined) or being drained cannot be
	// given a replica, so it does not count.
	runningMembers(ctx context.Context) (int, error)
}

// defaultReplicationFactor is kvd serve's --replicas default.
const defaultReplicationFactor = 3

// kvdReplicas is the --replicas among kvd serve's arguments, or its
// default when they have none.
func kvdReplicas(args []string) int {
	n := defaultReplicationFactor
	for k, a := range args {
		name, value, inline := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "replicas" {
			continue
		}
		if !inline {
			if k+1 >= len(args) {
				continue
			}
			value = args[k+1]
		}
		if r, err := strconv.Atoi(value); err == nil && r > 0 {
			n = r
		}
	}
	return n
}

// countRunningMembers counts the active members (Voter: neither removed
// nor being removed) for which running is true.
func countRunningMembers(members []*kvpb.Member, running func(id string) bool) int {
	seen := map[string]bool{}
	for _, m := range members {
		if m.GetVoter() && running(m.GetId()) {
			seen[m.GetId()] = true
		}
	}
	return len(seen)
}

// replicaStats counts what the replicas checker saw: user ranges (the
// meta range left out) reported by a node or listed by the routing table,
// and those among them compared across all their replicas.
type replicaStats struct {
	userRanges, userCompared int
}

// replicaWait bounds how long the checker waits for each range's replicas
// to be seen at one applied index.
type replicaWait struct {
	Timeout  time.Duration // in all
	Interval time.Duration // between rounds of status requests
}

// defaultReplicaWait: a replica that was down or cut off for most of a
// run catches up within seconds of the heal, by log or by snapshot.
var defaultReplicaWait = replicaWait{Timeout: 90 * time.Second, Interval: 500 * time.Millisecond}

// replicaSeen is one replica's latest report of a range.
type replicaSeen struct {
	applied     uint64 // DigestAppliedIndex
	appendError string
}

// replicaDigest is a state digest taken at one applied index.
type replicaDigest struct {
	sum  string
	keys uint64
}

// replicaResult asks every running node for its ranges' state digests
// (GET /v1/cluster/status?digest=true), round after round, until each
// range has a digest from every one of its replicas at one applied index,
// or w.Timeout passes. A digest is of the state at the index it names,
// whenever it was taken, so digests from different rounds are compared
// too: replicas that catch up one by one, or a range that keeps taking
// writes (the meta range), need not be caught at one index in one round.
func replicaResult(ctx context.Context, c replicaSource, w replicaWait, logf func(string, ...any)) *CheckResult {
	r, _ := checkReplicas(ctx, c, w, logf)
	return r
}

// checkReplicas is replicaResult, with counts of what it saw. When c is a
// rangeLister, every range of the routing table (asked each round) must
// also be compared. When c is a memberCounter, every range must also
// have as many replicas as it can (asked each round): a range short of
// them is polled until it has them or the deadline passes, and then
// fails.
func checkReplicas(ctx context.Context, c replicaSource, w replicaWait, logf func(string, ...any)) (*CheckResult, replicaStats) {
	r := newResult(CheckReplicas)
	lister, _ := c.(rangeLister)
	counter, _ := c.(memberCounter)
	want, factor, running := 0, 0, 0 // replicas each range must have: min(factor, running members)
	wantKnown := false
	listed := map[uint64]bool{} // every range the routing table listed in any round
	listedOnce := false
	start := time.Now()
	deadline := start.Add(w.Timeout)
	digests := map[uint64]map[uint64]map[string]replicaDigest{} // range -> index -> node -> digest
	members := map[uint64][]string{}                            // range -> its replicas, as the freshest report has them
	latest := map[uint64]map[string]replicaSeen{}               // range -> node -> its latest report
	done := map[uint64]bool{}                                   // compared whole at one index
	failed := map[uint64]bool{}                                 // a mismatch is reported once per range
	single := map[uint64]bool{}                                 // one replica, and no more wanted: nothing to compare
	var short []uint64                                          // fewer replicas than want, as the last round saw them
	rounds := 0
	for maxRounds := int(w.Timeout/max(w.Interval, time.Millisecond)) + 1; rounds < maxRounds && ctx.Err() == nil; rounds++ {
		if rounds > 0 {
			if !time.Now().Add(w.Interval).Before(deadline) {
				break
			}
			select {
			case <-time.After(w.Interval): // nothing to await: replicas catch up on their own
			case <-ctx.Done():
			}
		}
		type report struct {
			node string
			st   *kvpb.RangeStatus
		}
		byRange := map[uint64][]report{}
		if lister != nil {
			ids, err := lister.listRanges(ctx)
			if err != nil {
				logf("jepsen: replicas: %v", err)
			}
			listedOnce = listedOnce || err == nil
			for _, id := range ids {
				listed[id] = true
			}
		}
		if counter != nil {
			n, err := counter.runningMembers(ctx)
			if err != nil {
				logf("jepsen: replicas: %v", err)
			} else {
				factor, running, wantKnown = counter.replicationFactor(), n, true
				want = min(factor, running)
			}
		}
		for i := range c.N() {
			if !c.Running(i) {
				continue
			}
			st, err := c.status(ctx, i, true)
			if err != nil {
				logf("jepsen: replicas: %v", err)
				continue
			}
			for _, rs := range st.GetNode().GetRanges() {
				byRange[rs.GetId()] = append(byRange[rs.GetId()], report{c.ID(i), rs})
			}
		}
		for id, reps := range byRange {
			sts := make([]*kvpb.RangeStatus, len(reps))
			for i, rep := range reps {
				sts[i] = rep.st
			}
			members[id] = rangeMembers(sts)
			if latest[id] == nil {
				latest[id] = map[string]replicaSeen{}
				digests[id] = map[uint64]map[string]replicaDigest{}
			}
			for _, rep := range reps {
				latest[id][rep.node] = replicaSeen{applied: rep.st.GetDigestAppliedIndex(), appendError: rep.st.GetAppendError()}
				if rep.st.GetDigest() == "" {
					continue
				}
				at := digests[id][rep.st.GetDigestAppliedIndex()]
				if at == nil {
					at = map[string]replicaDigest{}
					digests[id][rep.st.GetDigestAppliedIndex()] = at
				}
				at[rep.node] = replicaDigest{sum: rep.st.GetDigest(), keys: rep.st.GetDigestKeys()}
			}
		}
		short = short[:0]
		for id := range latest {
			if failed[id] {
				continue
			}
			if len(members[id]) < want {
				// Placement may still be adding its replicas: it is asked
				// again next round, and compared once it has them all.
				short = append(short, id)
				delete(single, id)
				continue
			}
			if done[id] || single[id] {
				continue
			}
			if msg := digestMismatch(id, digests[id]); msg != "" {
				failed[id] = true
				r.fail("", msg)
				continue
			}
			if len(members[id]) < 2 {
				single[id] = true // nothing to compare it with
				continue
			}
			for _, at := range digests[id] {
				if everyOne(members[id], at) {
					done[id] = true
					r.Checked++
					break
				}
			}
		}
		if len(latest) > 0 && len(done)+len(failed)+len(single) == len(latest) && len(short) == 0 &&
			(lister == nil || listedOnce) && (counter == nil || wantKnown) && reportedAll(listed, latest) {
			break
		}
	}
	slices.Sort(short)
	for _, id := range short {
		// A mismatch found before the range lost replicas still fails it.
		if msg := digestMismatch(id, digests[id]); msg != "" {
			failed[id] = true
			r.fail("", msg)
			continue
		}
		failed[id] = true
		r.fail("", fmt.Sprintf("range %d: %s %v, want %d: under-replicated after the heal (replication factor %d, %d running members; %d rounds over %v)",
			id, plural(len(members[id]), "replica"), members[id], want, factor, running, rounds, time.Since(start).Round(time.Second)))
	}
	var open []uint64
	for id := range latest {
		if !done[id] && !failed[id] && !single[id] {
			open = append(open, id)
		}
	}
	slices.Sort(open)
	for _, id := range open {
		r.fail("", fmt.Sprintf("range %d: its replicas %v were never all seen at one applied index (%d rounds over %v): %s",
			id, members[id], rounds, time.Since(start).Round(time.Second), describeReplicas(members[id], latest[id])))
	}
	var unseen []uint64
	for id := range listed {
		if latest[id] == nil {
			unseen = append(unseen, id)
		}
	}
	slices.Sort(unseen)
	for _, id := range unseen {
		r.fail("", fmt.Sprintf("range %d: listed by the routing table, but no node reported a replica of it (%d rounds over %v)", id, rounds, time.Since(start).Round(time.Second)))
	}
	if lister != nil && !listedOnce {
		r.fail("", "no node listed the ranges (Cluster.Ranges), so the ranges compared cannot be checked against the routing table")
	}
	if counter != nil && !wantKnown {
		r.fail("", "no node listed the members (Cluster.Members), so under-replicated ranges cannot be told")
	}
	if len(latest) == 0 {
		r.fail("", "no node reported any range")
	}
	var stats replicaStats
	for id := range latest {
		if id != raftstore.MetaRangeID {
			stats.userRanges++
			if done[id] {
				stats.userCompared++
			}
		}
	}
	stats.userRanges += len(unseen)
	r.note("%d of %d ranges compared across all their replicas at one applied index (%d rounds)", r.Checked, len(latest)+len(unseen), rounds)
	if lister != nil {
		r.note("the routing table listed %d user ranges", len(listed))
	}
	if wantKnown {
		r.note("every range must have %d replicas (replication factor %d, %d running members)", want, factor, running)
	}
	if len(single) > 0 {
		ids := slices.Sorted(maps.Keys(single))
		r.note("ranges with a single replica, nothing to compare: %v", ids)
	}
	r.Took = time.Since(start).Round(time.Millisecond).String()
	return r, stats
}

// plural is "1 replica" or "n replicas".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// reportedAll reports whether every listed range was reported by a node.
func reportedAll(listed map[uint64]bool, latest map[uint64]map[string]replicaSeen) bool {
	for id := range listed {
		if latest[id] == nil {
			return false
		}
	}
	return true
}

// rangeMembers is the range's replica set as the freshest of its reports
// has it: the leader's of the highest term, else (a hibernating range,
// or no leader) the one that has applied the most. A replica the range
// has since dropped may still report it, with the membership it last saw.
func rangeMembers(reports []*kvpb.RangeStatus) []string {
	best := reports[0]
	better := func(a, b *kvpb.RangeStatus) bool {
		aLeads, bLeads := a.GetState() == "Leader", b.GetState() == "Leader"
		if aLeads != bLeads {
			return aLeads
		}
		if aLeads && a.GetTerm() != b.GetTerm() {
			return a.GetTerm() > b.GetTerm()
		}
		return a.GetDigestAppliedIndex() > b.GetDigestAppliedIndex()
	}
	for _, st := range reports[1:] {
		if better(st, best) {
			best = st
		}
	}
	out := slices.Clone(best.GetReplicas())
	slices.Sort(out)
	return out
}

// digestMismatch describes two replicas of range id that hold different
// state at the same applied index, or is empty.
func digestMismatch(id uint64, byIndex map[uint64]map[string]replicaDigest) string {
	indexes := make([]uint64, 0, len(byIndex))
	for index := range byIndex {
		indexes = append(indexes, index)
	}
	slices.Sort(indexes)
	for _, index := range indexes {
		nodes := make([]string, 0, len(byIndex[index]))
		for node := range byIndex[index] {
			nodes = append(nodes, node)
		}
		sort.Strings(nodes)
		a := byIndex[index][nodes[0]]
		for _, other := range nodes[1:] {
			if b := byIndex[index][other]; b.sum != a.sum {
				return fmt.Sprintf("range %d: replicas %s and %s differ at applied index %d (%d vs %d keys; digests %.12s vs %.12s)",
					id, nodes[0], other, index, a.keys, b.keys, a.sum, b.sum)
			}
		}
	}
	return ""
}

// everyOne reports whether at holds a digest from every member.
func everyOne(members []string, at map[string]replicaDigest) bool {
	for _, m := range members {
		if _, ok := at[m]; !ok {
			return false
		}
	}
	return true
}

// describeReplicas says where each member was last seen, and why its log
// refused appends if it did.
func describeReplicas(members []string, latest map[string]replicaSeen) string {
	var parts []string
	for _, m := range members {
		seen, ok := latest[m]
		switch {
		case !ok:
			parts = append(parts, m+" never reported it")
		case seen.appendError != "":
			parts = append(parts, fmt.Sprintf("%s at %d (%s)", m, seen.applied, seen.appendError))
		default:
			parts = append(parts, fmt.Sprintf("%s at %d", m, seen.applied))
		}
	}
	return strings.Join(parts, ", ")
}
