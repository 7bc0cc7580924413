package replication_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
)

// A replica its range does not list, that hears from no leader (a split's
// child on a node that was only a non-voter of the parent, say), is
// dropped by its node, even one that serves nothing else and so never
// refreshes its routing table for another reason.
func TestNode_DropsAReplicaItsRangeDoesNotList(t *testing.T) {
	c := newTestCluster(t, 4)
	c.mustPut(c.leader(), "a", "1")
	c.split(c.leader(), "m")
	var desc *kvpb.RangeDescriptor
	c.eventually("the new range published with 3 replicas", 20*time.Second, func() bool {
		for _, d := range c.ranges(0).Ranges {
			if string(d.Start) == "m" && len(d.Replicas) == 3 {
				desc = d
				return true
			}
		}
		return false
	})
	outsider := -1
	for i := range c.nodes {
		if !slices.Contains(desc.Replicas, c.cfgs[i].NodeID) {
			outsider = i
		}
	}
	if outsider < 0 {
		t.Fatalf("range %d lists every node: %v", desc.Id, desc.Replicas)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.nodes[outsider].CreateReplica(ctx, &kvpb.CreateReplicaRequest{Range: desc}); err != nil {
		t.Fatal(err)
	}
	hosts := func() bool {
		for _, s := range c.nodes[outsider].Shards() {
			if s.ID() == desc.Id {
				return true
			}
		}
		return false
	}
	if !hosts() {
		t.Fatalf("n%d does not host range %d after CreateReplica", outsider+1, desc.Id)
	}
	// orphanGrace (10 s) after the node first sees it unlisted and unled.
	c.eventually("the unlisted replica dropped", 40*time.Second, func() bool { return !hosts() })
	for _, d := range c.ranges(0).Ranges {
		if d.Id == desc.Id && len(d.Replicas) != 3 {
			t.Fatalf("range %d lists %v after the drop, want its 3 replicas", d.Id, d.Replicas)
		}
	}
}
