package link

import (
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/internal/logadapt"
	"github.com/hashicorp/raft"
)

// listFSM records the commands it applies.
type listFSM struct {
	mu   sync.Mutex
	cmds []string
}

func (f *listFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, string(l.Data))
	return nil
}

func (f *listFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, fmt.Errorf("not in this test") }
func (f *listFSM) Restore(io.ReadCloser) error         { return fmt.Errorf("not in this test") }

func (f *listFSM) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cmds)
}

// raftCluster runs groups Raft groups on nodes nodes, every node a member
// of every group. Each node can run the link or be a node from before it,
// and can be restarted as either on the same address and stores.
type raftCluster struct {
	t      *testing.T
	groups int
	addrs  []string
	nodes  []*raftNode
	tweak  func(*Config)
	// version, when set, is the highest link version node i speaks
	// when it (re)starts (0: this release's).
	version func(i int) uint16
}

type raftNode struct {
	tn     *testNode
	rafts  []*raft.Raft
	trans  []raft.Transport
	fsms   []*listFSM
	stores []*raft.InmemStore
	snaps  []*raft.InmemSnapshotStore
}

func newRaftCluster(t *testing.T, nodes, groups int, old func(i int) bool) *raftCluster {
	return newRaftClusterOf(t, nodes, groups, old, nil)
}

// newRaftClusterOf is newRaftCluster whose nodes speak the link versions
// version names.
func newRaftClusterOf(t *testing.T, nodes, groups int, old func(i int) bool, version func(i int) uint16) *raftCluster {
	c := &raftCluster{t: t, groups: groups, tweak: func(cfg *Config) { cfg.ProbeInterval = 300 * time.Millisecond }, version: version}
	lns := make([]net.Listener, nodes)
	for i := range nodes {
		lns[i] = listenLow(t)
		c.addrs = append(c.addrs, lns[i].Addr().String())
	}
	for i := range nodes {
		n := &raftNode{}
		for range groups {
			n.stores = append(n.stores, raft.NewInmemStore())
			n.snaps = append(n.snaps, raft.NewInmemSnapshotStore())
		}
		c.nodes = append(c.nodes, n)
		c.start(i, old(i), lns[i], true)
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c
}

func (c *raftCluster) start(i int, old bool, ln net.Listener, bootstrap bool) {
	c.t.Helper()
	n := c.nodes[i]
	if ln == nil {
		ln = restartListener(c.t, c.addrs[i])
	}
	tweak := c.tweak
	if c.version != nil {
		v := c.version(i)
		tweak = func(cfg *Config) { c.tweak(cfg); cfg.maxVersion = v }
	}
	n.tn = newTestNode(c.t, nodeOpts{old: old, listen: ln, tweak: tweak})
	n.rafts, n.trans, n.fsms = nil, nil, nil
	var servers []raft.Server
	for j, a := range c.addrs {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(fmt.Sprintf("n%d", j+1)), Address: raft.ServerAddress(a)})
	}
	for g := range c.groups {
		cfg := raft.DefaultConfig()
		cfg.LocalID = raft.ServerID(fmt.Sprintf("n%d", i+1))
		cfg.HeartbeatTimeout = 500 * time.Millisecond
		cfg.ElectionTimeout = 500 * time.Millisecond
		cfg.LeaderLeaseTimeout = 250 * time.Millisecond
		cfg.CommitTimeout = 50 * time.Millisecond
		cfg.Logger = logadapt.HCLog(testLogger(c.t).With("node", i+1, "group", g+1))
		tr := n.tn.open(uint64(g + 1))
		fsm := &listFSM{}
		if bootstrap {
			if err := raft.BootstrapCluster(cfg, n.stores[g], n.stores[g], n.snaps[g], tr, raft.Configuration{Servers: servers}); err != nil {
				c.t.Fatal(err)
			}
		}
		r, err := raft.NewRaft(cfg, fsm, n.stores[g], n.stores[g], n.snaps[g], tr)
		if err != nil {
			c.t.Fatal(err)
		}
		n.rafts = append(n.rafts, r)
		n.trans = append(n.trans, tr)
		n.fsms = append(n.fsms, fsm)
	}
}

// stop shuts the node down as a process exit would; its stores survive.
func (c *raftCluster) stop(i int) {
	n := c.nodes[i]
	if n.tn == nil {
		return
	}
	for _, r := range n.rafts {
		if err := r.Shutdown().Error(); err != nil {
			c.t.Errorf("shutdown: %v", err)
		}
	}
	for _, tr := range n.trans {
		tr.(raft.WithClose).Close()
	}
	n.tn.close()
	n.tn, n.rafts = nil, nil
}

func (c *raftCluster) restart(i int, old bool) {
	c.stop(i)
	c.start(i, old, nil, false)
}

// leader returns group g's leader among the running nodes, if any.
func (c *raftCluster) leader(g int) *raft.Raft {
	for _, n := range c.nodes {
		if n.tn != nil && n.rafts[g].State() == raft.Leader {
			return n.rafts[g]
		}
	}
	return nil
}

// leadGroup makes node i lead group g.
func (c *raftCluster) leadGroup(i, g int) {
	c.t.Helper()
	id := raft.ServerID(fmt.Sprintf("n%d", i+1))
	harness.Eventually(c.t, fmt.Sprintf("node %d to lead group %d", i+1, g+1), 15*time.Second, func() bool {
		if c.nodes[i].rafts[g].State() == raft.Leader {
			return true
		}
		if r := c.leader(g); r != nil {
			r.LeadershipTransferToServer(id, raft.ServerAddress(c.addrs[i])).Error()
		}
		return c.nodes[i].rafts[g].State() == raft.Leader
	})
}

// applyAll commits cmd in every group, retrying through elections; it
// fails the test if a group cannot commit within 15 s.
func (c *raftCluster) applyAll(cmd string) {
	c.t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, c.groups)
	for g := range c.groups {
		wg.Go(func() {
			deadline := time.Now().Add(15 * time.Second)
			var last error
			for time.Now().Before(deadline) {
				r := c.leader(g)
				if r == nil {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				if last = r.Apply([]byte(cmd), time.Second).Error(); last == nil {
					return
				}
			}
			errs <- fmt.Errorf("group %d: %q not committed within 15 s, last error %v", g+1, cmd, last)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		c.t.Fatal(err)
	}
}

// caughtUp waits until every running node's FSM of every group holds
// want, in order (an entry committed twice after a retry appears twice
// everywhere alike, so only the suffix that holds want is compared).
func (c *raftCluster) caughtUp(want []string) {
	c.t.Helper()
	harness.Eventually(c.t, fmt.Sprintf("every replica to apply %v", want), 15*time.Second, func() bool {
		for _, n := range c.nodes {
			if n.tn == nil {
				continue
			}
			for g := range c.groups {
				got := slices.Compact(n.fsms[g].list())
				if !containsInOrder(got, want) {
					return false
				}
			}
		}
		return true
	})
}

func containsInOrder(got, want []string) bool {
	i := 0
	for _, s := range got {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	return i == len(want)
}

func TestRaft_GroupsOverTheLinkElectAndCommit(t *testing.T) {
	const groups = 20
	c := newRaftCluster(t, 3, groups, func(int) bool { return false })
	var want []string
	for i := range 5 {
		cmd := fmt.Sprintf("cmd-%d", i)
		c.applyAll(cmd)
		want = append(want, cmd)
	}
	c.caughtUp(want)
	for i, n := range c.nodes {
		st := n.tn.link.Stats()
		if st.LegacyCalls != 0 || st.Dials > 2+groups {
			t.Errorf("node %d: %+v; want no legacy calls and one link per peer (few redials)", i+1, st)
		}
		t.Logf("node %d: %d messages in %d writes (%.1f per write), %d bytes", i+1, st.MessagesSent, st.Writes, float64(st.MessagesSent)/float64(st.Writes), st.BytesSent)
	}
}

// A cluster of the release before the link is upgraded one node at a
// time (stop, replace, start on the same address and stores): every group
// commits at every step, old and new nodes replicate to each other both
// ways, and once all are new they talk over the link. Then one node is
// rolled back.
func TestRaft_RollingUpgradeKeepsEveryGroupCommitting(t *testing.T) {
	const nodes, groups = 3, 5
	c := newRaftCluster(t, nodes, groups, func(int) bool { return true })
	var want []string
	step := func(name string) {
		c.applyAll(name)
		want = append(want, name)
	}
	step("all old")
	c.caughtUp(want)
	for i := range nodes {
		c.stop(i)
		step(fmt.Sprintf("node %d down", i+1))
		c.start(i, false, nil, false)
		step(fmt.Sprintf("node %d new", i+1))
		c.caughtUp(want)
		if i == 0 {
			// The only new node leads group 1 from now on, so it sends
			// to old nodes as well as receiving from them; all of it goes
			// through per-range streams.
			c.leadGroup(0, 0)
			step("node 1 leads group 1")
			c.caughtUp(want)
			st := c.nodes[0].tn.link.Stats()
			if st.LegacyCalls == 0 || st.LegacyReceived == 0 || st.MessagesSent != 0 {
				t.Fatalf("node 1 among old nodes: %+v; want calls and receipts through per-range streams, nothing over the link", st)
			}
		}
	}
	// All new: within a probe interval or two, nothing goes through the
	// per-range streams any more (a node that sends a peer nothing may
	// still hold it as legacy: it would find the link on its next call).
	legacyCalls := func() (sum uint64) {
		for _, n := range c.nodes {
			sum += n.tn.link.Stats().LegacyCalls
		}
		return sum
	}
	for attempt := 0; ; attempt++ {
		before, received := legacyCalls(), c.nodes[0].tn.link.Stats().MessagesReceived
		step(fmt.Sprintf("all new %d", attempt))
		if legacyCalls() == before && c.nodes[0].tn.link.Stats().MessagesReceived > received {
			break
		}
		if attempt == 20 {
			t.Fatalf("still %d calls through per-range streams after the upgrade", legacyCalls()-before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.caughtUp(want)
	// A rollback of one node works the same way.
	c.restart(1, true)
	step("node 2 rolled back")
	c.caughtUp(want)
}

// Link versions 2 and 3 in one cluster: a node of the previous release
// (version 2, appends in msgpack) and two of this one (version 3, appends
// in the link's layout) commit in every group whoever leads it, and keep
// committing while the old node is upgraded and then rolled back, on the
// same address and stores.
func TestRaft_LinkVersionsMixInOneCluster(t *testing.T) {
	const nodes, groups = 3, 6
	versions := []uint16{versionConfirm, 0, 0}
	var mu sync.Mutex
	c := newRaftClusterOf(t, nodes, groups, func(int) bool { return false }, func(i int) uint16 {
		mu.Lock()
		defer mu.Unlock()
		return versions[i]
	})
	chosen := func(from, to int) uint16 { return connect(t, c.nodes[from].tn, c.addrs[to]).version }
	var want []string
	step := func(name string) {
		t.Helper()
		c.applyAll(name)
		want = append(want, name)
		c.caughtUp(want)
	}
	check := func(stage string, pairs map[[2]int]uint16) {
		t.Helper()
		for p, v := range pairs {
			if got := chosen(p[0], p[1]); got != v {
				t.Errorf("%s: node %d to %d chose link version %d, want %d", stage, p[0]+1, p[1]+1, got, v)
			}
		}
	}
	// Every node leads two groups, so appends go every way between them.
	for g := range groups {
		c.leadGroup(g%nodes, g)
	}
	step("mixed")
	check("mixed", map[[2]int]uint16{{0, 1}: 2, {1, 0}: 2, {1, 2}: 3, {2, 1}: 3})
	mu.Lock()
	versions[0] = 0
	mu.Unlock()
	c.restart(0, false)
	step("node 1 upgraded")
	for g := range groups {
		c.leadGroup(g%nodes, g)
	}
	step("node 1 upgraded and leading")
	check("upgraded", map[[2]int]uint16{{0, 1}: 3, {1, 0}: 3, {0, 2}: 3})
	mu.Lock()
	versions[0] = versionConfirm
	mu.Unlock()
	c.restart(0, false)
	step("node 1 rolled back")
	c.leadGroup(0, 0)
	step("node 1 rolled back and leading")
	check("rolled back", map[[2]int]uint16{{0, 2}: 2, {2, 0}: 2})
}
