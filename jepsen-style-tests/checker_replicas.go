package jepsen

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
)

// CheckReplicas is the verdict on the replicas' own state: the replicas of
// a range that have applied the same log index must hold the same keys,
// values and revisions. The history-based checkers see a diverged replica
// only when a read happens to land on it; this compares every range
// directly, at the end of the run.
const CheckReplicas = "replicas"

// replicaResult asks every running node for its ranges' state digests
// (GET /v1/cluster/status?digest=true) until each range has been compared
// with all its replicas at one applied index, or attempts run out (writes
// to the meta range go on in the background, so replicas may need a few
// rounds to be seen at the same index).
func replicaResult(ctx context.Context, c *Cluster, logf func(string, ...any)) *CheckResult {
	r := newResult(CheckReplicas)
	start := time.Now()
	done := map[uint64]bool{}   // every replica compared at one index
	failed := map[uint64]bool{} // a mismatch is reported once per range
	seen := map[uint64]bool{}
	type replica struct {
		node string
		st   *kvpb.RangeStatus
	}
	for attempt := 0; attempt < 20 && ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			time.Sleep(500 * time.Millisecond) // nothing to await: replicas catch up on their own
		}
		byRange := map[uint64][]replica{}
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
				byRange[rs.GetId()] = append(byRange[rs.GetId()], replica{c.ID(i), rs})
				seen[rs.GetId()] = true
			}
		}
		for id, reps := range byRange {
			if done[id] || failed[id] {
				continue
			}
			byIndex := map[uint64][]replica{}
			for _, rep := range reps {
				byIndex[rep.st.GetDigestAppliedIndex()] = append(byIndex[rep.st.GetDigestAppliedIndex()], rep)
			}
			for index, group := range byIndex {
				for _, other := range group[1:] {
					a, b := group[0], other
					if a.st.GetDigest() != b.st.GetDigest() {
						failed[id] = true
						r.fail("", fmt.Sprintf("range %d: replicas %s and %s differ at applied index %d (%d vs %d keys; digests %.12s vs %.12s)",
							id, a.node, b.node, index, a.st.GetDigestKeys(), b.st.GetDigestKeys(), a.st.GetDigest(), b.st.GetDigest()))
						break
					}
				}
			}
			if len(byIndex) == 1 && len(reps) > 1 {
				done[id] = true
				r.Checked++
			}
		}
		if len(done)+len(failed) == len(seen) && len(seen) > 0 {
			break
		}
	}
	var open []uint64
	for id := range seen {
		if !done[id] && !failed[id] {
			open = append(open, id)
		}
	}
	sort.Slice(open, func(i, j int) bool { return open[i] < open[j] })
	r.note("%d ranges compared across their replicas at one applied index", r.Checked)
	if len(open) > 0 {
		r.note("ranges never seen with every replica at one index (not compared whole): %v", open)
	}
	r.Took = time.Since(start).Round(time.Millisecond).String()
	return r
}
