package replication_test

import (
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/shard"
)

// TestSplit_AVoterThatMissedItHostsBothHalves stops a voter, splits its
// range, and compacts the range's log so that the voter, restarted,
// catches up from a snapshot taken after the split: it never applies the
// split, so it must still come to host the new range, which lists it,
// with the keys the split moved (which the new range's log does not hold).
func TestSplit_AVoterThatMissedItHostsBothHalves(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	c.mustPut(l, "a", "1")
	c.mustPut(l, "p", "2") // moved to the new range by the split
	// The voter to lag leads neither range, so that the split does not
	// wait for an election.
	lag := -1
	for i, n := range c.nodes {
		leads := false
		for _, s := range n.Shards() {
			leads = leads || s.IsLeader()
		}
		if !leads {
			lag = i
		}
	}
	if lag < 0 {
		t.Fatal("every node leads a range of two")
	}
	c.stop(lag)
	resp := c.split(l, "m")
	child := resp.GetRight().GetId()
	if child == 0 {
		t.Fatalf("split answered no new range: %v", resp)
	}
	c.mustPut(l, "z", "3")
	// The parent's leader drops its log up to now: the lagging voter can
	// only catch up from a snapshot of the parent after the split.
	var parent *shard.Shard
	c.eventually("the parent's leader is known", 10*time.Second, func() bool {
		for _, n := range c.nodes {
			if n == nil {
				continue
			}
			for _, s := range n.Shards() {
				if s.ID() == resp.GetLeft().GetId() && s.IsLeader() {
					parent = s
					return true
				}
			}
		}
		return false
	})
	if err := parent.CompactLog(); err != nil {
		t.Fatal(err)
	}
	c.start(lag)
	c.eventually("the voter that missed the split hosts the new range", 30*time.Second, func() bool {
		for _, s := range c.nodes[lag].Shards() {
			if s.ID() == child {
				return true
			}
		}
		return false
	})
	for _, kv := range [][2]string{{"p", "2"}, {"z", "3"}} {
		c.eventually("the voter that missed the split serves "+kv[0], 30*time.Second, func() bool {
			r, err := c.get(lag, kv[0], &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_STALE})
			return err == nil && string(r.GetKv().GetValue()) == kv[1] && r.GetHeader().GetServedBy() == c.nodes[lag].ID()
		})
	}
}
