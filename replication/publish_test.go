package replication_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"google.golang.org/protobuf/proto"
)

// A leader publishes its range's descriptor to the meta range only when
// it changed since it last wrote it. What it wrote in an earlier term may
// have been overwritten meanwhile by another leader (one that removed a
// replica); a node leading again with the configuration it had then must
// write it again, or the routing table keeps the other leader's replica
// set for good. (Seen in CI: a node wiped and rejoined was given its
// replicas back, yet the routing table never listed it.)
func TestPublish_ALeaderAgainRewritesWhatAnotherLeaderChanged(t *testing.T) {
	c := newTestCluster(t, 3)
	rangeID := c.userRange(0)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	transfer := func(to int) {
		t.Helper()
		name := fmt.Sprintf("n%d", to+1)
		leads := false
		for _, s := range c.nodes[to].Shards() {
			leads = leads || (s.Descriptor().ID == rangeID && s.IsLeader())
		}
		if !leads {
			if _, err := c.nodes[0].TransferLeader(ctx, &kvpb.TransferLeaderRequest{RangeId: rangeID, ToNode: name}); err != nil {
				t.Fatalf("transfer range %d to %s: %v", rangeID, name, err)
			}
		}
		c.eventually("the routing table names "+name+" leader", 20*time.Second, func() bool {
			for _, d := range c.ranges(0).Ranges {
				if d.Id == rangeID {
					return d.Leader == name
				}
			}
			return false
		})
	}
	key := append([]byte("range/"), binary.BigEndian.AppendUint64(nil, rangeID)...)
	stored := func() (gen, commit uint64, d *kvpb.RangeDescriptor) {
		t.Helper()
		resp, err := c.nodes[0].MetaScan(ctx, &kvpb.MetaScanRequest{Prefixes: [][]byte{key}})
		if err != nil || len(resp.Kvs) != 1 || len(resp.Kvs[0].Value) < 16 {
			t.Fatalf("meta record of range %d: %v, %v", rangeID, resp, err)
		}
		v := resp.Kvs[0].Value
		d = &kvpb.RangeDescriptor{}
		if err := proto.Unmarshal(v[16:], d); err != nil {
			t.Fatal(err)
		}
		return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), d
	}

	// n2 leads and writes the descriptor, all three replicas in it.
	transfer(1)
	c.eventually("n2's descriptor in the meta range", 20*time.Second, func() bool {
		_, _, d := stored()
		return d.Leader == "n2" && len(d.Replicas) == 3
	})
	// n1 leads; then another leader writes another replica set, newer
	// than any written so far: as one would after removing n3.
	transfer(0)
	gen, commit, d := stored()
	d.Replicas = slices.DeleteFunc(slices.Clone(d.Replicas), func(r string) bool { return r == "n3" })
	d.Leader = "n1"
	body, err := proto.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	v := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, gen), commit+1)
	if resp, err := c.nodes[1].MetaPut(ctx, &kvpb.MetaPutRequest{Key: key, Value: append(v, body...)}); err != nil || !resp.Written {
		t.Fatalf("write the other leader's descriptor: %v, %v", resp, err)
	}
	// Writes to the range take its commit index past that version.
	for i := range 3 {
		c.mustPut(0, fmt.Sprint("k", i), "v")
	}
	// n2 leads again, in a later term, with the configuration it wrote
	// before: it must write it over the other one.
	transfer(1)
	c.eventually("the routing table lists all three replicas again", 20*time.Second, func() bool {
		for _, d := range c.ranges(0).Ranges {
			if d.Id == rangeID {
				return len(d.Replicas) == 3
			}
		}
		return false
	})
}
