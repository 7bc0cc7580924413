package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/raftstore"
	"github.com/hashicorp/raft"
)

// A follower that was down while its leader compacted the log past it is
// sent a snapshot. Its own log still holds the entries it had before, far
// fewer than TrailingLogs. hashicorp/raft keeps those entries after the
// install unless the log store says it is monotonic, and then appends the
// leader's next entry after a gap, which SegmentLog refuses: the follower
// installed the same snapshot every 20 s and never applied another entry
// (issue 12). Here the follower must install it, take new writes with a
// log that continues from the snapshot, and restart onto that log.
func TestSnapshotInstall_FollowerWithEntriesOfItsOwnContinuesFromTheSnapshot(t *testing.T) {
	tests := []struct {
		name    string
		compact func(t *testing.T, leader *benchNode)
	}{
		{"the leader's own snapshot, trailing entries kept", func(t *testing.T, leader *benchNode) {
			snapshotKeeping(t, leader, 64)
		}},
		{"CompactLog, as before adding a replica", func(t *testing.T, leader *benchNode) {
			if err := leader.shard.CompactLog(); err != nil {
				t.Fatalf("compact log: %v", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nodes := startGroup(t, 3, groupOptions{})
			leader := writeKeys(t, nodes, 0, 50)
			f := otherThan(nodes, leader)
			waitCaughtUp(t, nodes, f)
			oldLast, _ := f.shard.storage.Log().LastIndex()

			stopNode(t, nodes, f)
			leader = writeKeys(t, nodes, 50, 300)
			tc.compact(t, leader)
			// (An empty log, after CompactLog, holds none of them either.)
			if first, _ := leader.shard.storage.Log().FirstIndex(); first != 0 && first <= oldLast+1 {
				t.Fatalf("the leader's log still starts at %d: %s (last index %d) needs no snapshot", first, f.id, oldLast)
			}

			// It installs the snapshot, then takes new writes.
			restartNode(t, nodes, f)
			writeKeys(t, nodes, 300, 320)
			waitCaughtUp(t, nodes, f)
			snaps, err := f.shard.storage.Snapshots.List()
			if err != nil || len(snaps) == 0 {
				t.Fatalf("%s holds no snapshot (%v): it was never sent one", f.id, err)
			}
			snap := snaps[0].Index
			first, _ := f.shard.storage.Log().FirstIndex()
			last, _ := f.shard.storage.Log().LastIndex()
			if first <= oldLast || first > snap+1 || last <= snap {
				t.Fatalf("%s's log is [%d, %d] after installing the snapshot at %d: want it to continue from the snapshot, without its old entries (up to %d)", f.id, first, last, snap, oldLast)
			}
			checkReadable(t, f, first, last)

			// Then it restarts onto that log and goes on.
			stopNode(t, nodes, f)
			restartNode(t, nodes, f)
			writeKeys(t, nodes, 320, 340)
			waitCaughtUp(t, nodes, f)
			first, _ = f.shard.storage.Log().FirstIndex()
			last, _ = f.shard.storage.Log().LastIndex()
			if first <= oldLast || last <= snap {
				t.Fatalf("%s's log is [%d, %d] after the restart: want it past the snapshot at %d", f.id, first, last, snap)
			}
			checkReadable(t, f, first, last)
			checkSameState(t, nodes)
		})
	}
}

// otherThan returns the first of nodes that is not nd.
func otherThan(nodes []*benchNode, nd *benchNode) *benchNode {
	for _, o := range nodes {
		if o != nd {
			return o
		}
	}
	return nil
}

// snapshotKeeping has nd's replica take a snapshot that leaves trailing
// entries in its log.
func snapshotKeeping(t *testing.T, nd *benchNode, trailing uint64) {
	t.Helper()
	r := nd.shard.Raft()
	rc := r.ReloadableConfig()
	rc.TrailingLogs = trailing
	if err := r.ReloadConfig(rc); err != nil {
		t.Fatal(err)
	}
	if err := r.Snapshot().Error(); err != nil {
		t.Fatalf("%s's snapshot: %v", nd.id, err)
	}
}

// writeKeys puts keys k<from>..k<to-1> through whichever replica leads,
// eight at a time, and returns the leader that took the last of them.
func writeKeys(t *testing.T, nodes []*benchNode, from, to int) *benchNode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var leader *benchNode
	next := from
	for next < to {
		leader = waitReadyLeader(t, running(nodes))
		batch := min(8, to-next)
		errs := make(chan error, batch)
		var wg sync.WaitGroup
		for i := next; i < next+batch; i++ {
			wg.Go(func() {
				cmd := &raftstore.Command{Op: raftstore.OpPut, Key: fmt.Appendf(nil, "k%05d", i), Value: fmt.Appendf(nil, "v%d", i)}
				_, err := leader.shard.Propose(ctx, cmd)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		failed := false
		for err := range errs {
			switch {
			case err == nil:
			case errors.Is(err, ErrNotLeader), errors.Is(err, ErrIndeterminate):
				failed = true // a put is idempotent: write the batch again
			default:
				t.Fatalf("put: %v", err)
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("writing keys %d..%d: %v", from, to, ctx.Err())
		}
		if !failed {
			next += batch
		}
	}
	return leader
}

// running is the nodes whose shard runs.
func running(nodes []*benchNode) []*benchNode {
	var out []*benchNode
	for _, nd := range nodes {
		if nd.shard != nil {
			out = append(out, nd)
		}
	}
	return out
}

// waitCaughtUp waits up to 30 s until nd has applied as far as every other
// running replica.
func waitCaughtUp(t *testing.T, nodes []*benchNode, nd *benchNode) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var goal uint64
		for _, o := range running(nodes) {
			goal = max(goal, o.shard.FSM().AppliedIndex())
		}
		got := nd.shard.FSM().AppliedIndex()
		if got >= goal {
			return
		}
		if time.Now().After(deadline) {
			first, _ := nd.shard.storage.Log().FirstIndex()
			last, _ := nd.shard.storage.Log().LastIndex()
			t.Fatalf("%s applied only up to %d within 30 s, the others %d (its log [%d, %d], %d failed appends)", nd.id, got, goal, first, last, nd.shard.AppendFailures())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkReadable reads every entry of nd's log in [first, last].
func checkReadable(t *testing.T, nd *benchNode, first, last uint64) {
	t.Helper()
	for i := first; i <= last; i++ {
		var e raft.Log
		if err := nd.shard.storage.Log().GetLog(i, &e); err != nil || e.Index != i {
			t.Fatalf("%s's log entry %d: %v (index %d)", nd.id, i, err, e.Index)
		}
	}
}

// checkSameState compares the state digests of every running replica,
// once all have applied the same index.
func checkSameState(t *testing.T, nodes []*benchNode) {
	t.Helper()
	for _, nd := range running(nodes) {
		waitCaughtUp(t, nodes, nd)
	}
	var want raftstore.Digest
	for i, nd := range running(nodes) {
		d, err := nd.shard.FSM().Digest()
		if err != nil {
			t.Fatalf("digest of %s: %v", nd.id, err)
		}
		if i == 0 {
			want = d
			continue
		}
		if d.Applied != want.Applied || d.Sum != want.Sum || d.Keys != want.Keys {
			t.Fatalf("%s's state (index %d, %d keys, %.12s) differs from %s's (index %d, %d keys, %.12s)",
				nd.id, d.Applied, d.Keys, d.Sum, running(nodes)[0].id, want.Applied, want.Keys, want.Sum)
		}
	}
}

// stopNode stops nd's replica and closes its store, as a crash would
// (everything nd acknowledged is durable either way), and cuts the routes
// to it.
func stopNode(t *testing.T, nodes []*benchNode, nd *benchNode) {
	t.Helper()
	for _, o := range nodes {
		if o != nd {
			o.trans.Disconnect(nd.addr)
		}
	}
	if err := nd.shard.Shutdown(); err != nil {
		t.Fatalf("shutdown %s: %v", nd.id, err)
	}
	nd.shard = nil
	if err := nd.store.Close(); err != nil {
		t.Fatalf("close store %s: %v", nd.id, err)
	}
	nd.store = nil
}

// restartNode starts nd's replica again from its data directory, on a
// new transport at the same address.
func restartNode(t *testing.T, nodes []*benchNode, nd *benchNode) {
	t.Helper()
	nd.addr, nd.trans = raft.NewInmemTransport(nd.addr)
	for _, o := range nodes {
		if o != nd {
			o.trans.Connect(nd.addr, nd.trans)
			nd.trans.Connect(o.addr, o.trans)
		}
	}
	nd.store, nd.shard = openReplica(t, nd.dir, Descriptor{ID: 2, Generation: 1}, nd.id, nd.trans, false)
}

// A deposed leader's log can run past the snapshot it is later sent:
// entries it appended alone, in a term that never committed them. Raft
// empties the (monotonic) log after the install but goes on believing
// that its last entry is the old tail's, so it refused every append after
// the snapshot and the leader sent the snapshot again, forever. The shard
// restarts the Raft instance when an install leaves it so.
func TestSnapshotInstall_DeposedLeaderWithALongerLogContinuesFromTheSnapshot(t *testing.T) {
	nodes := startGroup(t, 3, groupOptions{})
	x := writeKeys(t, nodes, 0, 20)
	for _, nd := range nodes {
		waitCaughtUp(t, nodes, nd)
	}
	// Cut x off, and have it append entries nobody else will take before
	// it notices it no longer leads.
	for _, o := range nodes {
		if o != x {
			o.trans.Disconnect(x.addr)
		}
	}
	x.trans.DisconnectAll()
	r := x.shard.Raft()
	for i := range 300 {
		r.Apply((&raftstore.Command{Op: raftstore.OpPut, Key: fmt.Appendf(nil, "lost%03d", i), Value: []byte("x")}).Encode(nil), 0)
	}
	var others []*benchNode
	for _, nd := range nodes {
		if nd != x {
			others = append(others, nd)
		}
	}
	leader := writeKeys(t, others, 20, 30)
	xLast, _ := x.shard.storage.Log().LastIndex()
	snap := leader.shard.Raft().LastIndex()
	if err := leader.shard.CompactLog(); err != nil {
		t.Fatalf("compact log: %v", err)
	}
	if xLast <= snap {
		t.Fatalf("%s's log ends at %d, not past the new leader's snapshot at about %d: nothing to test", x.id, xLast, snap)
	}
	for _, o := range others {
		o.trans.Connect(x.addr, x.trans)
		x.trans.Connect(o.addr, o.trans)
	}
	writeKeys(t, others, 30, 40)
	waitCaughtUp(t, nodes, x)
	checkSameState(t, nodes)
}

// A new replica's first snapshot needs no restart of its Raft instance:
// its cached last entry is below the snapshot's and Raft takes the
// snapshot's. Every install used to restart the instance (166 times in a
// session 24 Jepsen run), and the leader's pipeline to it with it.
func TestSnapshotInstall_ANewReplicaKeepsItsRaftInstance(t *testing.T) {
	nodes := startGroup(t, 3, groupOptions{})
	leader := writeKeys(t, nodes, 0, 40)
	if err := leader.shard.CompactLog(); err != nil {
		t.Fatalf("compact log: %v", err)
	}
	nd := &benchNode{id: "n4", dir: t.TempDir()}
	nd.addr, nd.trans = raft.NewInmemTransport("")
	nodes = append(nodes, nd)
	restartNode(t, nodes, nd)
	t.Cleanup(func() {
		if nd.shard != nil {
			stopNode(t, nodes, nd)
		}
	})
	inst := nd.shard.inst.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := leader.shard.AddNonvoter(ctx, nd.id, string(nd.addr)); err != nil {
		t.Fatalf("add %s: %v", nd.id, err)
	}
	writeKeys(t, nodes, 40, 50)
	waitCaughtUp(t, nodes, nd)
	if snaps, err := nd.shard.storage.Snapshots.List(); err != nil || len(snaps) == 0 {
		t.Fatalf("%s holds no snapshot (%v): it was never sent one", nd.id, err)
	}
	if nd.shard.inst.Load() != inst {
		t.Fatalf("%s's Raft instance was restarted by its first install", nd.id)
	}
	checkSameState(t, nodes)
}

// A leader can send a follower a snapshot its log already runs past: a
// replicator for a peer removed while unreachable sleeps out its failure
// backoff, wakes after the peer was added back and sends it the leader's
// newest snapshot (see continuesPast). Raft installs whatever it is sent
// and empties the monotonic log; the follower forgot entries it had
// acknowledged (Jepsen, session 24). The install must keep them, in the
// three shapes such a log takes: holding the snapshot's entry, starting
// right after it because the follower installed that snapshot before, or
// starting after a later snapshot the follower took itself.
func TestSnapshotInstall_ASnapshotTheLogRunsPastKeepsTheLog(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, nodes []*benchNode, f *benchNode) (leader *benchNode)
	}{
		{"the log holds the snapshot's entry", func(t *testing.T, nodes []*benchNode, f *benchNode) *benchNode {
			leader := writeKeys(t, nodes, 0, 50)
			if err := leader.shard.Raft().Snapshot().Error(); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			return writeKeys(t, nodes, 50, 80)
		}},
		{"the log starts after the snapshot, installed before", func(t *testing.T, nodes []*benchNode, f *benchNode) *benchNode {
			writeKeys(t, nodes, 0, 50)
			stopNode(t, nodes, f)
			leader := writeKeys(t, nodes, 50, 100)
			if err := leader.shard.CompactLog(); err != nil {
				t.Fatalf("compact log: %v", err)
			}
			restartNode(t, nodes, f)
			writeKeys(t, nodes, 100, 110)
			waitCaughtUp(t, nodes, f)
			return writeKeys(t, nodes, 110, 140)
		}},
		{"the log starts after a later snapshot of the follower's own", func(t *testing.T, nodes []*benchNode, f *benchNode) *benchNode {
			leader := writeKeys(t, nodes, 0, 50)
			if err := leader.shard.Raft().Snapshot().Error(); err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			writeKeys(t, nodes, 50, 100)
			waitCaughtUp(t, nodes, f)
			snapshotKeeping(t, f, 4)
			return writeKeys(t, nodes, 100, 130)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nodes := startGroup(t, 3, groupOptions{})
			leader := waitReadyLeader(t, nodes)
			f := otherThan(nodes, leader)
			leader = tc.prepare(t, nodes, f)
			waitCaughtUp(t, nodes, f)
			last, _ := f.shard.storage.Log().LastIndex()
			applied := f.shard.FSM().AppliedIndex()

			first, _ := f.shard.storage.Log().FirstIndex()
			meta := sendNewestSnapshot(t, leader, f)
			t.Logf("%s's log [%d, %d], the leader's snapshot at %d", f.id, first, last, meta.Index)
			if meta.Index >= last {
				t.Fatalf("the snapshot ends at %d, %s's log at %d: the test needs the log past it", meta.Index, f.id, last)
			}
			if got, _ := f.shard.storage.Log().LastIndex(); got < last {
				t.Fatalf("%s's log ends at %d after the install, having held entries up to %d", f.id, got, last)
			}
			checkReadable(t, f, max(first, meta.Index+1), last)
			if got := f.shard.FSM().AppliedIndex(); got < applied {
				t.Fatalf("the install moved %s back from %d to %d", f.id, applied, got)
			}

			writeKeys(t, nodes, 200, 220)
			checkSameState(t, nodes)
			stopNode(t, nodes, f)
			restartNode(t, nodes, f)
			writeKeys(t, nodes, 220, 230)
			checkSameState(t, nodes)
		})
	}
}

// A log kept through the follower's own snapshot can leave it refusing
// its leader's appends at the snapshot's index (an entry of the kept log
// conflicts with the leader's), and the leader then sends the snapshot
// again: the same snapshot arriving while the log has not moved since an
// install kept it is installed as sent, and only then. An offer that was
// not installed (here one of an older term) does not count.
func TestSnapshotInstall_TheSameSnapshotOnAnUnmovedLogIsInstalledAsSent(t *testing.T) {
	nodes := startGroup(t, 3, groupOptions{})
	leader := waitReadyLeader(t, nodes)
	f := otherThan(nodes, leader)
	writeKeys(t, nodes, 0, 20)
	stopNode(t, nodes, f)
	leader = writeKeys(t, nodes, 20, 40)
	if err := leader.shard.CompactLog(); err != nil {
		t.Fatalf("compact log: %v", err)
	}
	restartNode(t, nodes, f)
	leader = writeKeys(t, nodes, 40, 50)
	waitCaughtUp(t, nodes, f)
	metas, err := f.shard.storage.Snapshots.List()
	if err != nil || len(metas) == 0 {
		t.Fatalf("%s holds no snapshot (%v)", f.id, err)
	}
	snap := metas[0]
	if first, _ := f.shard.storage.Log().FirstIndex(); first != snap.Index+1 {
		t.Fatalf("%s's log starts at %d, want right after its snapshot at %d", f.id, first, snap.Index)
	}
	lastKept := func() keptMark {
		f.shard.logs.mu.Lock()
		defer f.shard.logs.mu.Unlock()
		return f.shard.logs.lastKept
	}

	if _, resp, err := offerNewestSnapshot(t, leader, f, -1); err != nil || resp.Success {
		t.Fatalf("an offer of an older term was answered success %v, %v", resp.Success, err)
	}
	if got := lastKept(); got != (keptMark{}) {
		t.Fatalf("an offer that was not installed was recorded as kept: %v", got)
	}
	last, _ := f.shard.storage.Log().LastIndex()
	if meta := sendNewestSnapshot(t, leader, f); meta.Index != snap.Index || meta.Term != snap.Term {
		t.Fatalf("the leader's newest snapshot is %d/%d, %s's %d/%d", meta.Index, meta.Term, f.id, snap.Index, snap.Term)
	}
	if got, want := lastKept(), (keptMark{snap.Index, snap.Term, last}); got != want {
		t.Fatalf("after the kept install lastKept is %v, want %v", got, want)
	}
	if got, _ := f.shard.storage.Log().LastIndex(); got != last {
		t.Fatalf("%s's log ends at %d after the kept install, at %d before: the test needs it unmoved", f.id, got, last)
	}
	keep, _ := f.shard.keepLog(snap.Index, snap.Term)
	f.shard.logs.keepFrom.Store(0)
	if keep {
		t.Fatal("the same snapshot on an unmoved log would keep the log again")
	}
	writeKeys(t, nodes, 50, 55)
	waitCaughtUp(t, nodes, f)
	keep, _ = f.shard.keepLog(snap.Index, snap.Term)
	f.shard.logs.keepFrom.Store(0)
	if !keep {
		t.Fatal("once the log moved, the snapshot would not keep it")
	}
}

// sendNewestSnapshot sends to's replica from's newest snapshot, as from's
// Raft would, and returns its meta once to answered success.
func sendNewestSnapshot(t *testing.T, from, to *benchNode) *raft.SnapshotMeta {
	t.Helper()
	meta, resp, err := offerNewestSnapshot(t, from, to, 0)
	if err != nil || !resp.Success {
		t.Fatalf("install %s's snapshot at %d on %s: success %v, %v", from.id, meta.Index, to.id, resp.Success, err)
	}
	return meta
}

// offerNewestSnapshot sends to's replica from's newest snapshot in from's
// current term plus termDelta, and returns the answer.
func offerNewestSnapshot(t *testing.T, from, to *benchNode, termDelta int) (*raft.SnapshotMeta, *raft.InstallSnapshotResponse, error) {
	t.Helper()
	metas, err := from.shard.storage.Snapshots.List()
	if err != nil || len(metas) == 0 {
		t.Fatalf("list %s's snapshots: %d, %v", from.id, len(metas), err)
	}
	meta, rc, err := from.shard.storage.Snapshots.Open(metas[0].ID)
	if err != nil {
		t.Fatalf("open %s's snapshot: %v", from.id, err)
	}
	defer rc.Close()
	peer := from.trans.EncodePeer(raft.ServerID(from.id), from.addr)
	req := &raft.InstallSnapshotRequest{
		RPCHeader:          raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(from.id), Addr: peer},
		SnapshotVersion:    meta.Version,
		Term:               uint64(int(from.shard.Raft().CurrentTerm()) + termDelta),
		Leader:             peer,
		LastLogIndex:       meta.Index,
		LastLogTerm:        meta.Term,
		Size:               meta.Size,
		Configuration:      raft.EncodeConfiguration(meta.Configuration),
		ConfigurationIndex: meta.ConfigurationIndex,
	}
	var resp raft.InstallSnapshotResponse
	err = from.trans.InstallSnapshot(raft.ServerID(to.id), to.addr, req, &resp, rc)
	return meta, &resp, err
}

// A received snapshot that Raft never handed to the state machine (it
// stopped between the sink's Close and the restore) is listed and staged.
// A Raft instance restarted in the same process, as a wake or afterInstall
// does, takes the newest snapshot's index as applied: unless the start
// swaps the staged data in first, the replica skips every entry up to it.
func TestSnapshotInstall_InProcessRestartSwapsInAReceivedSnapshot(t *testing.T) {
	src := startGroup(t, 1, groupOptions{})
	writeKeys(t, src, 0, 64)
	dst := startGroup(t, 1, groupOptions{})[0]
	meta, _ := receiveWhileStopped(t, src[0], dst)
	if err := dst.shard.startInstance(); err != nil {
		t.Fatalf("restart the receiver's Raft: %v", err)
	}
	if got := dst.shard.fsm.AppliedIndex(); got < meta.Index {
		t.Fatalf("after the restart the receiver applied %d, below the snapshot's %d that Raft now counts as applied", got, meta.Index)
	}
	for i := range 64 {
		key := fmt.Appendf(nil, "k%05d", i)
		v, _, found, _, err := dst.shard.fsm.Get(key)
		if err != nil || !found || string(v) != fmt.Sprintf("v%d", i) {
			t.Fatalf("the receiver's %s = %q, found %v, %v; want v%d", key, v, found, err, i)
		}
	}
}

// The same with the receiver's state already past the snapshot: nothing
// restores the staged data after the start, so the start discards it;
// kept, it would go to a follower as a token for data only this node has.
func TestSnapshotInstall_InProcessRestartDiscardsAStagedSnapshotItIsPast(t *testing.T) {
	src := startGroup(t, 1, groupOptions{})
	writeKeys(t, src, 0, 16)
	dst := startGroup(t, 1, groupOptions{})
	writeKeys(t, dst, 0, 64)
	meta, id := receiveWhileStopped(t, src[0], dst[0])
	applied := dst[0].shard.fsm.AppliedIndex()
	if applied < meta.Index {
		t.Fatalf("the receiver applied %d, want at least the snapshot's %d", applied, meta.Index)
	}
	if err := dst[0].shard.startInstance(); err != nil {
		t.Fatalf("restart the receiver's Raft: %v", err)
	}
	if got := dst[0].shard.fsm.AppliedIndex(); got != applied {
		t.Fatalf("the restart moved the receiver from %d to %d", applied, got)
	}
	// Committed, as the state is within 500 ms: until then Open says the
	// state database is behind, and the leader tries again.
	if err := dst[0].store.Flush(); err != nil {
		t.Fatal(err)
	}
	_, rc, err := dst[0].shard.storage.Snapshots.Open(id)
	if err != nil {
		t.Fatalf("open the received snapshot to send it: %v", err)
	}
	defer rc.Close()
	head := make([]byte, 8)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatalf("read the received snapshot: %v", err)
	}
	if string(head) == "DKVSTGD\x01" { // raftstore's stagedMagic, unexported
		t.Fatal("the received snapshot still opens as a token for staged data after the start")
	}
}

// receiveWhileStopped stops dst's Raft instance and has it receive src's
// snapshot (taken now) as Raft's installSnapshot would, without the
// restore; it returns the snapshot's meta and the received one's id. The
// caller restarts dst's instance: dst's rmu is held until the test ends.
func receiveWhileStopped(t *testing.T, src, dst *benchNode) (*raft.SnapshotMeta, string) {
	t.Helper()
	if err := src.shard.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	metas, err := src.shard.storage.Snapshots.List()
	if err != nil || len(metas) == 0 {
		t.Fatalf("list the source's snapshots: %d, %v", len(metas), err)
	}
	meta, rc, err := src.shard.storage.Snapshots.Open(metas[0].ID)
	if err != nil {
		t.Fatalf("open the source's snapshot: %v", err)
	}
	defer rc.Close()
	dst.shard.rmu.Lock()
	t.Cleanup(dst.shard.rmu.Unlock)
	if err := dst.shard.stopInstance(dst.shard.inst.Load()); err != nil {
		t.Fatalf("stop the receiver's Raft: %v", err)
	}
	sink, err := dst.shard.storage.Snapshots.Create(meta.Version, meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex, dst.trans)
	if err != nil {
		t.Fatalf("create the received snapshot: %v", err)
	}
	if _, err := io.Copy(sink, rc); err != nil {
		t.Fatalf("receive the snapshot: %v", err)
	}
	if err := sink.Close(); err != nil {
		t.Fatalf("close the received snapshot: %v", err)
	}
	return meta, sink.ID()
}
