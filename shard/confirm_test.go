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
	before := qn.asked.Load()
	idx, err := leader.ReadIndex(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if idx < res.Revision {
		t.Fatalf("read index %d is before the acknowledged write's %d", idx, res.Revision)
	}
	if qn.asked.Load() == before {
		t.Fatal("the read was not confirmed through the peers' answers")
	}
}

// A leader that a quorum has left behind gets no confirmation from the
// peers (they are in a later term), and one whose membership is changing
// asks nobody.
func TestConfirmRead_DeposedLeaderIsNotConfirmed(t *testing.T) {
	nodes, qn := startQuestionGroup(t)
	old := waitReadyLeader(t, nodes)
	r := old.shard.r()
	term := r.CurrentTerm()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !old.shard.confirmByLink(ctx, r, term) {
		t.Fatal("the leader is not confirmed while it leads")
	}

	old.shard.memberGen.Add(1)
	asked := qn.asked.Load()
	if old.shard.confirmByLink(ctx, r, term) || qn.asked.Load() != asked {
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
	if old.shard.confirmByLink(ctx, r, term) {
		t.Fatalf("the leader of term %d was confirmed after a later leader was elected", term)
	}
}
