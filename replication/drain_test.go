package replication_test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A node asked to drain hands over every range it leads (the meta range
// and split user ranges too), and writes through it keep working: what
// kvd does on SIGTERM, so that a stop leaves no range waiting for an
// election.
func TestDrainLeadership_HandsEveryLedRangeOver(t *testing.T) {
	c := newTestCluster(t, 3)
	defer c.closeAll()
	l := c.leader()
	for i := range 6 {
		c.mustPut(l, fmt.Sprintf("k%04d", i*10), "v")
	}
	c.split(l, "k0020")
	c.split(l, "k0040")
	// Drain the node leading the most ranges (the meta range's leader at
	// least leads one).
	most, led := 0, -1
	for i, n := range c.nodes {
		k := 0
		for _, s := range n.Shards() {
			if s.IsLeader() {
				k++
			}
		}
		if k > led {
			most, led = i, k
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := c.nodes[most].DrainLeadership(ctx)
	t.Logf("drained n%d: led %d, transferred %d in %v", most+1, res.Led, res.Transferred, res.Elapsed)
	if res.Led == 0 || res.Transferred != res.Led {
		t.Fatalf("drain of n%d: led %d, transferred %d; want every led range handed over", most+1, res.Led, res.Transferred)
	}
	for _, s := range c.nodes[most].Shards() {
		if s.IsLeader() {
			t.Errorf("n%d still leads range %d after the drain", most+1, s.ID())
		}
	}
	for i := range 6 {
		c.mustPut(most, fmt.Sprintf("k%04d", i*10), "after")
	}
}
