package shard

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialkv/dialkv/raftstore"
	"github.com/hashicorp/raft"
)

// questionNet stands for the link's leadership questions between the
// replicas of a group over in-memory transports: a question reaches the
// peer's check (what its Shard gave SetLeadershipCheck) unless the test
// cut that peer off.
type questionNet struct {
	mu     sync.Mutex
	checks map[raft.ServerAddress]func(raft.ServerAddress, uint64) bool
	cut    map[raft.ServerAddress]bool
	asked  atomic.Int64
	yes    atomic.Int64 // questions a quorum said yes to
}

// confirmingTransport is one replica's transport with the questions.
type confirmingTransport struct {
	*raft.InmemTransport
	net *questionNet
}

func (c *confirmingTransport) SetLeadershipCheck(fn func(raft.ServerAddress, uint64) bool) {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	c.net.checks[c.LocalAddr()] = fn
}

func (c *confirmingTransport) ConfirmLeadership(_ context.Context, term uint64, peers []raft.ServerAddress, need int) (bool, error) {
	c.net.asked.Add(1)
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	yes := 0
	for _, p := range peers {
		if fn := c.net.checks[p]; fn != nil && !c.net.cut[p] && !c.net.cut[c.LocalAddr()] && fn(c.LocalAddr(), term) {
			yes++
		}
	}
	if yes >= need {
		c.net.yes.Add(1)
	}
	return yes >= need, nil
}

func startQuestionGroup(t *testing.T) ([]*benchNode, *questionNet) {
	t.Helper()
	qn := &questionNet{checks: map[raft.ServerAddress]func(raft.ServerAddress, uint64) bool{}, cut: map[raft.ServerAddress]bool{}}
	nodes := startGroup(t, 3, groupOptions{wrap: func(_ int, tr *raft.InmemTransport) raft.Transport {
		return &confirmingTransport{InmemTransport: tr, net: qn}
	}})
	return nodes, qn
}

// A read on the leader is confirmed by the peers' answers, and sees a
// write acknowledged before it.
func TestConfirmRead_PeersAnswersConfirmAReadIndex(t *testing.T) {
	nodes, qn := startQuestionGroup(t)
	leader := waitReadyLeader(t, nodes).shard
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := leader.Propose(ctx, &raftstore.Command{Op: raftstore.OpPut, Key: []byte("k"), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	before := qn.yes.Load()
	idx, err := leader.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if idx < res.Revision {
		t.Fatalf("read index %d is before the acknowledged write's %d", idx, res.Revision)
	}
	if qn.yes.Load() == before {
		t.Fatal("the read was not confirmed through the peers' answers")
	}

	// A membership change counts as under way (odd) for exactly its
	// length: the questions are not used across one.
	gen := leader.memberGen.Load()
	if err := leader.AddNonvoter(ctx, "n9", "n9"); err != nil {
		t.Fatal(err)
	}
	if got := leader.memberGen.Load(); got != gen+2 {
		t.Fatalf("membership generation %d after a change from %d, want %d", got, gen, gen+2)
	}
}

// A follower says yes only for the leader it follows, in its term, while
// its instance runs and is awake; a leader never does.
func TestFollowsLeader(t *testing.T) {
	nodes, _ := startQuestionGroup(t)
	leader := waitReadyLeader(t, nodes)
	term := leader.shard.r().CurrentTerm()
	follower := waitFollower(t, nodes, leader, func(r *raft.Raft) bool {
		addr, _ := r.LeaderWithID()
		return addr == leader.addr
	})
	other := nodes[0].addr
	for _, nd := range nodes {
		if nd != leader && nd != follower {
			other = nd.addr
		}
	}
	tests := []struct {
		name   string
		s      *Shard
		leader raft.ServerAddress
		term   uint64
		asleep bool
		want   bool
	}{
		{"its leader, its term", follower.shard, leader.addr, term, false, true},
		{"an earlier term", follower.shard, leader.addr, term - 1, false, false},
		{"a later term", follower.shard, leader.addr, term + 1, false, false},
		{"another node", follower.shard, other, term, false, false},
		{"asleep", follower.shard, leader.addr, term, true, false},
		{"the leader itself", leader.shard, leader.addr, term, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.s.asleep.Store(tt.asleep)
			defer tt.s.asleep.Store(false)
			if got := tt.s.followsLeader(tt.leader, tt.term); got != tt.want {
				t.Fatalf("followsLeader = %v, want %v", got, tt.want)
			}
		})
	}
}

// A leader that a quorum has left behind gets no confirmation from the
// peers (they are in a later term), and one whose membership is changing
// asks nobody.
func TestConfirmRead_DeposedLeaderIsNotConfirmed(t *testing.T) {
	nodes, qn := startQuestionGroup(t)
	old := waitReadyLeader(t, nodes)
	inst := old.shard.inst.Load()
	term := inst.raft.CurrentTerm()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !old.shard.confirmByLink(ctx, inst, term) {
		t.Fatal("the leader is not confirmed while it leads")
	}

	old.shard.memberGen.Add(1)
	asked := qn.asked.Load()
	if old.shard.confirmByLink(ctx, inst, term) || qn.asked.Load() != asked {
		t.Fatal("a leader whose membership is changing was confirmed through the peers")
	}
	old.shard.memberGen.Add(1)

	// Cut the leader off; the other two elect a leader of a later term.
	old.trans.DisconnectAll()
	for _, nd := range nodes {
		nd.trans.Disconnect(old.addr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var newTerm uint64
		for _, nd := range nodes {
			if nd != old && nd.shard.IsLeader() {
				newTerm = nd.shard.r().CurrentTerm()
			}
		}
		if newTerm > term {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no new leader within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The questions still reach the peers (only Raft's messages were
	// cut): their answers alone must say no.
	qn.mu.Lock()
	peerChecks := map[raft.ServerAddress]func(raft.ServerAddress, uint64) bool{}
	for a, fn := range qn.checks {
		peerChecks[a] = fn
	}
	qn.mu.Unlock()
	for a, fn := range peerChecks {
		if a != old.addr && fn(old.addr, term) {
			t.Fatalf("%s still says it follows the leader of term %d", a, term)
		}
	}
	// And a read there fails rather than answer.
	if _, err := old.shard.ReadIndex(ctx); err == nil {
		t.Fatal("a read on the deposed leader was served")
	}
}

// Raft's heartbeat fast path runs beside its main loop, so it may only
// take a heartbeat that cannot move the replica's term or state: a
// follower's, in its own term, with a leader heard from recently. A
// heartbeat of a later term reaching a leader (hashicorp/raft#695: the
// leader's loop could write a client's entry under the new term) or a
// follower goes through the main loop.
func TestFastHeartbeatSafe(t *testing.T) {
	nodes, _ := startQuestionGroup(t)
	leader := waitReadyLeader(t, nodes)
	term := leader.shard.r().CurrentTerm()
	follower := waitFollower(t, nodes, leader, func(r *raft.Raft) bool {
		return r.State() == raft.Follower && time.Since(r.LastContact()) < benchTiming.Heartbeat/4
	})
	hb := func(term uint64) raft.RPC {
		return raft.RPC{Command: &raft.AppendEntriesRequest{Term: term, RPCHeader: raft.RPCHeader{Addr: []byte(leader.addr)}}}
	}
	tests := []struct {
		name string
		s    *Shard
		rpc  raft.RPC
		want bool
	}{
		{"follower, its term", follower.shard, hb(term), true},
		{"follower, a later term", follower.shard, hb(term + 1), false},
		{"leader, a later term", leader.shard, hb(term + 1), false},
		{"leader, its own term", leader.shard, hb(term), false},
		{"not an append", follower.shard, raft.RPC{Command: &raft.RequestVoteRequest{Term: term}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.fastHeartbeatSafe(tt.rpc); got != tt.want {
				t.Fatalf("fastHeartbeatSafe = %v, want %v", got, tt.want)
			}
		})
	}
}

// waitFollower returns a replica other than leader for which ok holds,
// waiting up to 10 s for one.
func waitFollower(t *testing.T, nodes []*benchNode, leader *benchNode, ok func(*raft.Raft) bool) *benchNode {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, nd := range nodes {
			if nd != leader && ok(nd.shard.r()) {
				return nd
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no follower as wanted after 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
