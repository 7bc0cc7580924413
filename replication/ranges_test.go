package replication_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/replication"
)

func (c *testCluster) split(i int, key string) *kvpb.SplitRangeResponse {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.nodes[i].SplitRange(ctx, &kvpb.SplitRangeRequest{Key: []byte(key)})
	if err != nil {
		c.t.Fatalf("split at %q via n%d: %v", key, i+1, err)
	}
	return resp
}

// scanAll pages through every key via node i, following next_key across
// ranges, and fails on a key seen twice or out of order.
func (c *testCluster) scanAll(i int, read *kvpb.ReadOptions) []string {
	c.t.Helper()
	var keys []string
	var start []byte
	for page := 0; page < 1000; page++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := c.nodes[i].Scan(ctx, &kvpb.ScanRequest{Start: start, Limit: 37, Read: read})
		cancel()
		if err != nil {
			c.t.Fatalf("scan from %q via n%d: %v", start, i+1, err)
		}
		for _, kv := range resp.Kvs {
			if n := len(keys); n > 0 && keys[n-1] >= string(kv.Key) {
				c.t.Fatalf("scan returned %q after %q", kv.Key, keys[n-1])
			}
			keys = append(keys, string(kv.Key))
		}
		if !resp.More {
			return keys
		}
		if bytes.Compare(resp.NextKey, start) <= 0 {
			c.t.Fatalf("scan cursor did not advance: %q after %q", resp.NextKey, start)
		}
		start = resp.NextKey
	}
	c.t.Fatal("scan did not finish in 1000 pages")
	return nil
}

func (c *testCluster) ranges(i int) *kvpb.RangesResponse {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.nodes[i].Ranges(ctx, &kvpb.RangesRequest{})
	if err != nil {
		c.t.Fatalf("ranges via n%d: %v", i+1, err)
	}
	return resp
}

// eventually is harness.Eventually, with every node's status dumped when
// the wait fails. Placement and publication run on timers, so there is no
// single event to await.
func (c *testCluster) eventually(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	harness.Eventually(statusOnFatal{c.t, c}, what, timeout, cond)
}

// statusOnFatal is the test, with every node's status logged before a
// fatal failure: what a failed wait needs to be understood.
type statusOnFatal struct {
	*testing.T
	c *testCluster
}

func (s statusOnFatal) Fatalf(format string, args ...any) {
	s.T.Helper()
	s.c.dumpStatus()
	s.T.Fatalf(format, args...)
}

func writeKeys(t *testing.T, c *testCluster, via, n int) map[string]string {
	t.Helper()
	keys := map[string]string{}
	for i := range n {
		k, v := fmt.Sprintf("k%04d", i), fmt.Sprintf("v%d", i)
		c.mustPut(via, k, v)
		keys[k] = v
	}
	return keys
}

func checkKeys(t *testing.T, c *testCluster, keys map[string]string) {
	t.Helper()
	for i, n := range c.nodes {
		if n == nil {
			continue
		}
		for k, v := range keys {
			c.mustGet(i, k, v, linearizable)
		}
		if got := c.scanAll(i, linearizable); len(got) != len(keys) {
			t.Fatalf("scan via n%d found %d keys, want %d", i+1, len(got), len(keys))
		}
	}
}

func TestRanges_SplitKeepsEveryKeyExactlyOnce(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	keys := writeKeys(t, c, l, 300)
	f := (l + 1) % 3
	resp := c.split(f, "k0100")
	if string(resp.Right.Start) != "k0100" || string(resp.Left.End) != "k0100" {
		t.Fatalf("split result %v", resp)
	}
	c.split(l, "k0200")
	c.eventually("routing table shows 3 user ranges", 10*time.Second, func() bool { return len(c.ranges(f).Ranges) == 3 })
	// Writes land in every range, including the new ones.
	for _, k := range []string{"a", "k0150", "k0250", "z"} {
		resp := c.mustPut(f, k, "new")
		keys[k] = "new"
		t.Logf("%s -> range %d", k, resp.Header.RangeId)
	}
	checkKeys(t, c, keys)

	// Splits survive a full restart.
	c.closeAll()
	for i := range c.nodes {
		c.start(i)
	}
	c.leader()
	checkKeys(t, c, keys)
}

func TestRanges_SplitAutomaticallyPastRangeMaxBytes(t *testing.T) {
	c := newTestClusterWith(t, 3, func(cfg *replicationConfig) { cfg.RangeMaxBytes = 32 << 10 })
	l := c.leader()
	keys := map[string]string{}
	val := string(bytes.Repeat([]byte("x"), 200))
	for i := range 600 {
		k := fmt.Sprintf("auto%04d", i)
		c.mustPut(l, k, val)
		keys[k] = val
	}
	c.eventually("at least 3 ranges after writing ~120 KiB with a 32 KiB limit", 30*time.Second, func() bool {
		return len(c.ranges(l).Ranges) >= 3
	})
	t.Logf("%d ranges", len(c.ranges(l).Ranges))
	checkKeys(t, c, keys)
}

func TestRanges_JoinGetsReplicasAndDecommissionMovesThemOff(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	keys := writeKeys(t, c, l, 200)
	c.split(l, "k0050")
	c.split(l, "k0150")
	n4 := c.join()
	hosts := func(i int) int {
		st, err := c.nodes[i].Status(context.Background(), &kvpb.StatusRequest{})
		if err != nil {
			return -1
		}
		return len(st.Node.Ranges)
	}
	c.eventually("the joined node hosts replicas", 60*time.Second, func() bool { return hosts(n4) >= 2 })
	checkKeys(t, c, keys)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.nodes[n4].RemoveMember(ctx, &kvpb.RemoveMemberRequest{Id: "n1"}); err != nil {
		t.Fatalf("decommission n1: %v", err)
	}
	c.eventually("n1 holds no replica", 90*time.Second, func() bool { return hosts(0) == 0 })
	c.eventually("every range has 3 replicas, none on n1", 30*time.Second, func() bool {
		for _, d := range c.ranges(n4).Ranges {
			if len(d.Replicas) != 3 || slices.Contains(d.Replicas, "n1") {
				return false
			}
		}
		return true
	})
	c.stop(0)
	checkKeys(t, c, keys)
}

// dumpStatus logs every live node's view of its ranges.
func (c *testCluster) dumpStatus() {
	for i, n := range c.nodes {
		if n == nil {
			continue
		}
		st, err := n.Status(context.Background(), &kvpb.StatusRequest{})
		if err != nil {
			c.t.Logf("n%d: status: %v", i+1, err)
			continue
		}
		for _, r := range st.Node.Ranges {
			c.t.Logf("n%d range %d [%q,%q) %s term %d leader %q replicas %v commit %d applied %d", i+1, r.Id, r.Start, r.End, r.State, r.Term, r.Leader, r.Replicas, r.CommitIndex, r.AppliedIndex)
		}
	}
}

// asleepReplicas counts the hibernating replicas of range id.
func (c *testCluster) asleepReplicas(id uint64) (n int) {
	for _, node := range c.nodes {
		if node == nil {
			continue
		}
		for _, s := range node.Shards() {
			if s.ID() == id && s.Asleep() {
				n++
			}
		}
	}
	return n
}

// An idle range's replicas all hibernate; a stale read is served without
// waking them, while a linearizable read, a write or a scan wakes the range
// and finds every key; the range then sleeps again. The meta range never
// sleeps.
func TestRanges_IdleRangesHibernateAndWake(t *testing.T) {
	c := newTestClusterWith(t, 3, func(cfg *replication.Config) { cfg.HibernateAfter = time.Second })
	l := c.leader()
	keys := writeKeys(t, c, l, 50)
	c.split(l, "k0025")

	asleep := c.asleepReplicas
	allAsleep := func() bool { return asleep(2) == 3 && asleep(3) == 3 }
	c.eventually("every replica of ranges 2 and 3 hibernating", 20*time.Second, allAsleep)
	if n := asleep(1); n != 0 {
		t.Fatalf("%d replicas of the meta range hibernate", n)
	}

	// Stale reads come from the sleeping replicas.
	for i := range c.nodes {
		c.mustGet(i, "k0001", keys["k0001"], &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_STALE})
	}
	if !allAsleep() {
		t.Fatal("a stale read woke a range")
	}

	start := time.Now()
	c.mustGet(0, "k0030", keys["k0030"], linearizable)
	t.Logf("first linearizable read of a hibernating range took %v", time.Since(start).Round(time.Millisecond))
	if asleep(3) == 3 {
		t.Fatal("a linearizable read left range 3 asleep")
	}
	c.mustPut(1, "k0002", "after-waking")
	keys["k0002"] = "after-waking"
	checkKeys(t, c, keys)

	c.eventually("ranges 2 and 3 hibernating again", 20*time.Second, allAsleep)
	checkKeys(t, c, keys)
}

// With a commit timeout near its limit (a quarter of the heartbeat
// timeout), followers hear that the hibernation entry committed up to two
// commit timeouts after the leader applied it: the leader must stay up
// that long, or its followers never apply the entry, stay awake and wake
// the range again with an election (with the fixed 150 ms delay of old,
// 120 ms here left replicas awake).
func TestRanges_HibernationWithALongCommitTimeout(t *testing.T) {
	c := newTestClusterWith(t, 3, func(cfg *replication.Config) {
		cfg.HibernateAfter = time.Second
		cfg.Timing.Commit = 120 * time.Millisecond // the test cluster's heartbeat is 500 ms
	})
	l := c.leader()
	c.mustPut(l, "k0001", "v1")
	c.eventually("every replica of range 2 hibernating", 20*time.Second, func() bool { return c.asleepReplicas(2) == 3 })
	c.mustPut((l+1)%3, "k0001", "v2")
	c.mustGet(l, "k0001", "v2", linearizable)
}

// A request that wakes the replica that led when its range went to sleep
// makes that replica stand for election at once, and a follower woken by a
// request forwards it there at once. Without that, a woken replica waits
// out its heartbeat timeout before anyone stands, so the first write after
// a sleep cannot be acknowledged sooner than that timeout: here 2 s,
// against a few milliseconds for the rest of a wake.
func TestRanges_WakeByRequestElectsTheSleepingLeaderAtOnce(t *testing.T) {
	const heartbeat = 2 * time.Second
	c := newTestClusterWith(t, 3, func(cfg *replication.Config) {
		cfg.HibernateAfter = time.Second
		cfg.Timing.Heartbeat, cfg.Timing.Election = heartbeat, heartbeat
	})
	l := c.leader()
	c.mustPut(l, "k0001", "v1")
	// The replica to stand at once on the wake is the one that led when
	// the range went to sleep, as the sleeping replicas recorded it:
	// placement may hand a leadership over before a range sleeps (it
	// balances leaders), and a follower that missed heartbeats may win
	// an election just before the sleep, too briefly for a poll of who
	// leads to notice.
	sleepLeader := -1
	asleep := func() bool {
		if c.asleepReplicas(2) != 3 {
			return false
		}
		sleepLeader = -1
		for i, n := range c.nodes {
			for _, s := range n.Shards() {
				if s.ID() != 2 {
					continue
				}
				_, leader, _, ok := s.Sleeping()
				if !ok || leader == "" {
					continue
				}
				j := slices.IndexFunc(c.nodes, func(n *replication.Node) bool { return n != nil && n.ID() == leader })
				if j < 0 || (sleepLeader >= 0 && j != sleepLeader) {
					t.Fatalf("n%d slept under leader %q; another replica under n%d", i+1, leader, sleepLeader+1)
				}
				sleepLeader = j
			}
		}
		return sleepLeader >= 0
	}
	c.eventually("every replica of range 2 hibernating", 30*time.Second, asleep)

	// Rounds 0-2 write through the sleeping leader; 3-5 through a
	// follower, which forwards to it at once instead of waiting for an
	// election.
	for round := range 6 {
		l := sleepLeader
		via, how := l, "the old leader"
		if round >= 3 {
			via, how = (l+1+round%2)%3, "a follower"
		}
		start := time.Now()
		resp := c.mustPut(via, "k0001", fmt.Sprintf("v%d", round+2))
		took := time.Since(start)
		t.Logf("round %d: the first write after the sleep, through %s n%d, took %v", round, how, via+1, took.Round(time.Millisecond))
		if took >= heartbeat {
			t.Fatalf("round %d: the waking write through %s took %v, at least the heartbeat timeout (%v): nobody stood for election at once", round, how, took, heartbeat)
		}
		if want := fmt.Sprintf("n%d", l+1); resp.Header.ServedBy != want {
			t.Fatalf("round %d: the waking write was committed by %s, want the leader when the range went to sleep, %s", round, resp.Header.ServedBy, want)
		}
		c.eventually("range 2 hibernating again", 30*time.Second, asleep)
	}
}

// A node wiped and rejoined under the same id while its decommissioning
// finishes must stay a member: the removal of the old incarnation landing
// after the rejoin once marked the new one removed, and placement never
// gave it a replica again (found by make jepsen).
func TestMembers_RejoinDuringDecommissionIsNotRemoved(t *testing.T) {
	c := newTestCluster(t, 3)
	defer c.closeAll()
	l := c.leader()
	node := c.nodes[l]
	// Nodes register in the meta range shortly after they start; a state
	// read before that finds no such member (CI run 65, 0.9 s in).
	c.eventually("every node registered", 10*time.Second, func() bool { return len(c.ranges(l).Nodes) == 3 })
	// The nodes decommissioned are the two others: the one the test acts
	// through must stay a member to answer for them.
	var others []string
	for i := range c.nodes {
		if i != l {
			others = append(others, fmt.Sprintf("n%d", i+1))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	state := func(t *testing.T, id string) string {
		t.Helper()
		st, err := node.NodeStateForTest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	tests := []struct {
		name        string
		rejoin      bool
		wantRemoved bool
		wantState   string
	}{
		{"decommission completes", false, true, replication.NodeRemoved},
		{"rejoined before the removal", true, false, replication.NodeActive},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := others[i]
			if err := node.SetNodeStateForTest(ctx, id, replication.NodeDecommissioning); err != nil {
				t.Fatal(err)
			}
			if tt.rejoin {
				if err := node.SetNodeStateForTest(ctx, id, replication.NodeActive); err != nil {
					t.Fatal(err)
				}
			}
			removed, err := node.FinishDecommissionForTest(ctx, id)
			if err != nil || removed != tt.wantRemoved {
				t.Fatalf("finishDecommission = %v, %v; want %v", removed, err, tt.wantRemoved)
			}
			if got := state(t, id); got != tt.wantState {
				t.Fatalf("%s is %q, want %q", id, got, tt.wantState)
			}
		})
	}
}

// A replica is deleted only once its range's descriptor no longer lists its
// node: a DropReplica that arrives while it is still a member (a stale or
// misdirected request) changes nothing.
func TestPlacement_DropReplicaRefusesWhileTheRangeListsTheNode(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	c.mustPut(l, "k", "v")
	f := (l + 1) % 3
	rangeID := c.userRange(f)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := c.nodes[f].DropReplica(ctx, &kvpb.DropReplicaRequest{RangeId: rangeID})
	if !errors.Is(err, replication.ErrStillAReplica) {
		t.Fatalf("DropReplica of a listed replica on n%d: %v; want ErrStillAReplica", f+1, err)
	}
	found := false
	for _, s := range c.nodes[f].Shards() {
		found = found || s.ID() == rangeID
	}
	if !found {
		t.Fatalf("n%d lost its replica of range %d", f+1, rangeID)
	}
	c.mustGet(f, "k", "v", &kvpb.ReadOptions{Consistency: kvpb.Consistency_CONSISTENCY_STALE})
}

// TransferLeader moves a range's leadership from any node, forwarding to
// the leader, and names an unknown range precisely.
func TestCluster_TransferLeaderFromAnyNode(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	rangeID := c.userRange(l)
	to := fmt.Sprintf("n%d", (l+2)%3+1)
	via := (l + 1) % 3
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.nodes[via].TransferLeader(ctx, &kvpb.TransferLeaderRequest{RangeId: rangeID, ToNode: to}); err != nil {
		t.Fatalf("transfer range %d to %s via n%d: %v", rangeID, to, via+1, err)
	}
	c.eventually(to+" leads the range", 10*time.Second, func() bool { return c.leader() == (l+2)%3 })
	if _, err := c.nodes[via].TransferLeader(ctx, &kvpb.TransferLeaderRequest{RangeId: 999, ToNode: to}); !errors.Is(err, replication.ErrUnknownRange) {
		t.Fatalf("transfer of range 999: %v; want ErrUnknownRange", err)
	}
}

// userRange waits until node i's routing table lists the one user range
// with all three replicas, and returns its id.
func (c *testCluster) userRange(i int) (id uint64) {
	c.t.Helper()
	c.eventually("the routing table lists the user range", 10*time.Second, func() bool {
		r := c.ranges(i).Ranges
		if len(r) == 1 && len(r[0].Replicas) == 3 {
			id = r[0].Id
		}
		return id != 0
	})
	return id
}

// TestMembers_ANodeWipedAndRejoinedGetsReplicasAgain decommissions a node
// of three until it is removed, wipes it and starts it again with --join
// under the same id (no TLS): it must become active again and be given a
// replica of every range. It used to stay "removed", so the ranges stayed
// on two nodes, and one more decommission left them on one. The second
// case starts it as if it had crashed after recording its join but before
// marking itself active: the join resumes.
func TestMembers_ANodeWipedAndRejoinedGetsReplicasAgain(t *testing.T) {
	for _, crashed := range []bool{false, true} {
		t.Run(fmt.Sprintf("crashed before activation %v", crashed), func(t *testing.T) {
			c := newTestCluster(t, 3)
			l := c.leader()
			c.mustPut(l, "a", "1")
			c.split(l, "m")
			x := (l + 1) % 3
			id := c.nodes[x].ID()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if _, err := c.nodes[l].RemoveMember(ctx, &kvpb.RemoveMemberRequest{Id: id}); err != nil {
				t.Fatal(err)
			}
			c.eventually(id+" removed", 30*time.Second, func() bool {
				st, err := c.nodes[l].NodeStateForTest(ctx, id)
				return err == nil && st == replication.NodeRemoved
			})
			c.stop(x)
			c.cfgs[x].DataDir = t.TempDir()
			c.cfgs[x].InitialCluster, c.cfgs[x].Join = nil, c.cfgs[l].GRPCAddr
			if crashed {
				ident := fmt.Sprintf(`{"id":%q,"raft_addr":%q,"initialized":true,"join_pending":true}`, id, c.cfgs[x].RaftAddr)
				if err := os.WriteFile(filepath.Join(c.cfgs[x].DataDir, "node.json"), []byte(ident), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			c.start(x)
			c.eventually(id+" active again", 30*time.Second, func() bool {
				st, err := c.nodes[l].NodeStateForTest(ctx, id)
				return err == nil && st == replication.NodeActive
			})
			c.eventually("every range back on three nodes, "+id+" among them", 60*time.Second, func() bool {
				r := c.ranges(l).Ranges
				for _, d := range r {
					if len(d.Replicas) != 3 || !slices.Contains(d.Replicas, id) {
						return false
					}
				}
				return len(r) == 2 // the two user ranges
			})
		})
	}
}
