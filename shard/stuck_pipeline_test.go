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

// stuckTransport's pipelines, once stuck is set, block in AppendEntries
// until they are closed, as hashicorp/raft's NetworkTransport pipeline
// does when its decoder waits to hand on a result that nobody reads.
type stuckTransport struct {
	*raft.InmemTransport
	stuck   atomic.Bool
	blocked chan struct{} // receives once per AppendEntries that blocked

	mu    sync.Mutex
	pipes []*stuckPipeline
}

// release frees every blocked pipeline, so that a failed test can still
// stop its replicas.
func (t *stuckTransport) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.pipes {
		p.once.Do(func() { close(p.closed) })
	}
}

func (t *stuckTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.InmemTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	sp := &stuckPipeline{AppendPipeline: p, t: t, closed: make(chan struct{})}
	t.mu.Lock()
	t.pipes = append(t.pipes, sp)
	t.mu.Unlock()
	return sp, nil
}

type stuckPipeline struct {
	raft.AppendPipeline
	t      *stuckTransport
	once   sync.Once
	closed chan struct{}
}

func (p *stuckPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if !p.t.stuck.Load() {
		return p.AppendPipeline.AppendEntries(args, resp)
	}
	select {
	case p.t.blocked <- struct{}{}:
	default:
	}
	<-p.closed
	return nil, raft.ErrPipelineShutdown
}

func (p *stuckPipeline) Close() error {
	p.once.Do(func() { close(p.closed) })
	return p.AppendPipeline.Close()
}

// A replica stopping while Raft's replication is blocked inside a pipeline
// must still stop: the shard closes its pipelines once Raft is told to shut
// down (raft only closes a pipeline after the blocked call returns).
func TestShutdown_EndsAPipelineRaftIsStuckIn(t *testing.T) {
	trans := make([]*stuckTransport, 3)
	nodes := startGroup(t, 3, groupOptions{
		wrap: func(i int, tr *raft.InmemTransport) raft.Transport {
			trans[i] = &stuckTransport{InmemTransport: tr, blocked: make(chan struct{}, 1)}
			return trans[i]
		},
	})
	leader := waitReadyLeader(t, nodes)
	var lt *stuckTransport
	for i, nd := range nodes {
		if nd == leader {
			lt = trans[i]
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A first write puts the followers' replication on its pipelines.
	if _, err := leader.shard.Propose(ctx, &raftstore.Command{Op: raftstore.OpPut, Key: []byte("a"), Value: []byte("1")}); err != nil {
		t.Fatalf("first write: %v", err)
	}
	lt.stuck.Store(true)
	go func() {
		wctx, wcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer wcancel()
		leader.shard.Propose(wctx, &raftstore.Command{Op: raftstore.OpPut, Key: []byte("a"), Value: []byte("2")})
	}()
	select {
	case <-lt.blocked:
	case <-ctx.Done():
		t.Fatal("no pipelined AppendEntries blocked within 10s")
	}
	done := make(chan error, 1)
	go func() { done <- leader.shard.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("shutdown: %v", err)
		}
	case <-time.After(10 * time.Second):
		lt.release()
		<-done
		t.Fatal("the leader's shutdown hung on a pipeline Raft was blocked in")
	}
}

// Once a stopping instance's pipelines are closed, its replication gets no
// new one (it would block in it with nobody left to close it: a shutdown
// that hung 1 run in 60 here); the next instance gets them again.
func TestWakeTransport_NoNewPipelineWhileAnInstanceStops(t *testing.T) {
	addr, base := raft.NewInmemTransport("")
	peerAddr, peer := raft.NewInmemTransport("")
	base.Connect(peerAddr, peer)
	peer.Connect(addr, base)
	w, err := newWakeTransport(base, &Shard{id: 2})
	if err != nil {
		t.Fatal(err)
	}
	open := func() error {
		p, err := w.AppendEntriesPipeline("p", peerAddr)
		if err == nil {
			p.Close()
		}
		return err
	}
	if err := open(); err != nil {
		t.Fatalf("a running instance's pipeline: %v", err)
	}
	w.closePipelines()
	if err := open(); err == nil {
		t.Fatal("a pipeline opened after closePipelines")
	}
	w.openPipelines()
	if err := open(); err != nil {
		t.Fatalf("the next instance's pipeline: %v", err)
	}
}
