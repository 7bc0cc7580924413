package replication_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/client"
	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/replication"
	"google.golang.org/protobuf/types/known/durationpb"
)

// zoneOf puts n1, n2 in zone a, n3, n4 in b, n5, n6 in c (and a node that
// joins later, with n1's configuration, in a).
var zoneOf = map[string]string{"n1": "a", "n2": "a", "n3": "b", "n4": "b", "n5": "c", "n6": "c", "n7": "a"}

func inZones(cfg *replication.Config) {
	cfg.Locality = "region=eu,zone=" + zoneOf[cfg.NodeID]
}

// replicaSets returns every range's replicas, the meta range's as its
// leader sees them, the others' from the routing table read via node i.
// A routing table that cannot be read now (the meta range electing after
// a kill) is nil: the caller polls again.
func (c *testCluster) replicaSets(i int) map[uint64][]string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	t, err := c.nodes[i].Ranges(ctx, &kvpb.RangesRequest{})
	if err != nil {
		return nil
	}
	out := map[uint64][]string{}
	for _, d := range t.Ranges {
		out[d.Id] = d.Replicas
	}
	for _, n := range c.nodes {
		if n == nil {
			continue
		}
		st, err := n.Status(context.Background(), &kvpb.StatusRequest{})
		if err != nil {
			continue
		}
		for _, r := range st.Node.Ranges {
			if r.Id == raftstore.MetaRangeID && r.State == "Leader" {
				out[r.Id] = r.Replicas
			}
		}
	}
	return out
}

// spread reports whether every range has want replicas in three zones,
// none on a node in avoid, and describes the first that does not.
func spread(sets map[uint64][]string, want int, avoid ...string) (bool, string) {
	if _, ok := sets[raftstore.MetaRangeID]; !ok {
		return false, "the meta range's leader is not known"
	}
	for id, replicas := range sets {
		zones := map[string]bool{}
		for _, r := range replicas {
			zones[zoneOf[r]] = true
		}
		if len(replicas) != want || len(zones) != 3 || slices.ContainsFunc(replicas, func(r string) bool { return slices.Contains(avoid, r) }) {
			return false, fmt.Sprintf("range %d on %v", id, replicas)
		}
	}
	return true, ""
}

// TestLocality_ReplicasStayInThreeZones runs six nodes in three zones:
// placement spreads every range over the three zones (the founding ranges
// start on n1..n3, two in zone a) and keeps them there through a join, a
// decommission and a node killed for good; weaker reads from a client
// with a locality are served in its zone.
func TestLocality_ReplicasStayInThreeZones(t *testing.T) {
	c := newTestClusterWith(t, 6, inZones)
	l := c.leader()
	keys := writeKeys(t, c, l, 60)
	c.split(l, "k0020")
	c.split(l, "k0040")

	var last string
	converged := func(avoid ...string) func() bool {
		return func() bool {
			sets := c.replicaSets(l)
			if sets == nil {
				last = "routing table unreadable"
				return false
			}
			ok, why := spread(sets, 3, avoid...)
			last = why
			return ok
		}
	}
	c.eventually("every range in three zones", 60*time.Second, converged())
	t.Logf("spread: %v", c.replicaSets(l))
	// Clients route by the published routing table, which follows the
	// ranges' own membership by up to a publish round: a client that read
	// it before picked a replica since moved away (CI run 40).
	c.eventually("the routing table shows every range in three zones", 30*time.Second, func() bool {
		for _, d := range c.ranges(l).Ranges {
			zones := map[string]bool{}
			for _, r := range d.Replicas {
				zones[zoneOf[r]] = true
			}
			if len(d.Replicas) != 3 || len(zones) != 3 {
				return false
			}
		}
		return true
	})

	// Weaker reads with a locality are answered in that zone.
	for _, zone := range []string{"a", "b", "c"} {
		t.Run("reads in zone "+zone, func(t *testing.T) {
			cl, err := client.New(client.Config{Endpoints: []string{c.cfgs[0].GRPCAddr}, Locality: "region=eu,zone=" + zone})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			levels := map[string][]client.ReadOption{
				"stale":   {client.WithConsistency(kvpb.Consistency_CONSISTENCY_STALE)},
				"bounded": {client.WithConsistency(kvpb.Consistency_CONSISTENCY_BOUNDED), client.WithMaxStaleness(5 * time.Second)},
			}
			for name, opts := range levels {
				for _, k := range []string{"k0005", "k0025", "k0045"} {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					resp, err := cl.Get(ctx, []byte(k), append(opts, client.WithExplain())...)
					cancel()
					if err != nil {
						t.Fatalf("%s get %s: %v", name, k, err)
					}
					h := resp.GetHeader()
					if got := zoneOf[h.GetServedBy()]; got != zone || string(resp.GetKv().GetValue()) != keys[k] {
						t.Fatalf("%s get %s = %q served by %s in zone %s, want %q from zone %s (%v)",
							name, k, resp.GetKv().GetValue(), h.GetServedBy(), got, keys[k], zone, h.GetExplain())
					}
					e := h.GetExplain()
					if !strings.HasSuffix(e.GetLocality(), "zone="+zone) || !strings.Contains(e.GetChosenBecause(), "nearest replica by locality zone="+zone) {
						t.Fatalf("%s get %s explained as %v", name, k, e)
					}
				}
			}
		})
	}

	// A node joins (in zone a): it takes replicas, and no range narrows.
	n7 := c.join()
	hosts := func(i int) int {
		st, err := c.nodes[i].Status(context.Background(), &kvpb.StatusRequest{})
		if err != nil {
			return -1
		}
		return len(st.Node.Ranges)
	}
	c.eventually("the joined node hosts replicas, every range in three zones", 90*time.Second, func() bool {
		return hosts(n7) >= 1 && converged()()
	})

	// A zone-b node is decommissioned: its replicas move to the other
	// zone-b node.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.nodes[l].RemoveMember(ctx, &kvpb.RemoveMemberRequest{Id: "n3"}); err != nil {
		t.Fatalf("decommission n3: %v", err)
	}
	c.eventually("n3 holds nothing, every range in three zones", 90*time.Second, func() bool {
		return hosts(2) == 0 && converged("n3")()
	})
	if l == 2 {
		l = c.leader()
	}

	// A zone-c node dies for good: once it has been gone deadNodeTimeout,
	// its replicas are made again on the other zone-c node.
	c.stop(4)
	if l == 4 {
		l = c.leader()
	}
	c.eventually("n5's replicas replaced in zone c", 120*time.Second, converged("n3", "n5"))
	if t.Failed() {
		t.Logf("last unspread: %s", last)
	}
	for k, v := range keys {
		c.mustGet(l, k, v, linearizable)
	}
}

// TestExplain_SaysWhoAnsweredAndWhy asks each level for an explanation,
// on the leader and on a follower.
func TestExplain_SaysWhoAnsweredAndWhy(t *testing.T) {
	c := newTestClusterWith(t, 3, inZones)
	l := c.leader()
	put := c.mustPut(l, "k", "v")
	f := (l + 1) % 3
	explained := func(level kvpb.Consistency) *kvpb.ReadOptions {
		o := &kvpb.ReadOptions{Consistency: level, Explain: true}
		switch level {
		case kvpb.Consistency_CONSISTENCY_BOUNDED:
			o.MaxStaleness = durationpb.New(5 * time.Second)
		case kvpb.Consistency_CONSISTENCY_SESSION:
			o.SessionToken = put.Header.SessionToken
		}
		return o
	}
	tests := []struct {
		name      string
		via       int
		level     kvpb.Consistency
		servedBy  int
		role      string
		chosen    string
		staleness string
	}{
		{"linearizable on the leader", l, kvpb.Consistency_CONSISTENCY_LINEARIZABLE, l, "leader", "the node asked leads the range", "confirmed by a quorum"},
		{"linearizable via a follower", f, kvpb.Consistency_CONSISTENCY_LINEARIZABLE, l, "leader", "forwarded to the leader for a linearizable read", "confirmed by a quorum"},
		{"bounded on a follower", f, kvpb.Consistency_CONSISTENCY_BOUNDED, f, "follower", "the node asked holds a replica", "<= max_staleness 5s"},
		{"session on a follower", f, kvpb.Consistency_CONSISTENCY_SESSION, f, "follower", "the node asked holds a replica",
			fmt.Sprintf(">= the token's index %d", put.Header.Revision)},
		{"stale on a follower", f, kvpb.Consistency_CONSISTENCY_STALE, f, "follower", "the node asked holds a replica", "stale: no bound was asked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := c.mustGet(tt.via, "k", "v", explained(tt.level))
			h, e := resp.Header, resp.Header.GetExplain()
			want := c.cfgs[tt.servedBy].NodeID
			if h.ServedBy != want || e == nil {
				t.Fatalf("served by %s with explanation %v, want %s with one", h.ServedBy, e, want)
			}
			if e.ReplicaRole != tt.role || e.ChosenBecause != tt.chosen || !strings.Contains(e.StalenessReason, tt.staleness) ||
				e.Locality != c.cfgs[tt.servedBy].Locality {
				t.Fatalf("explanation %v, want role %q, chosen %q, staleness saying %q, locality %q",
					e, tt.role, tt.chosen, tt.staleness, c.cfgs[tt.servedBy].Locality)
			}
		})
	}
	if resp := c.mustGet(l, "k", "v", linearizable); resp.Header.Explain != nil {
		t.Fatalf("a read that did not ask was explained: %v", resp.Header.Explain)
	}
}
