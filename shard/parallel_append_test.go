package shard

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/internal/logadapt"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/raftstore/wal"
	"github.com/hashicorp/raft"
)

// Both logs a range has had give the shard what it needs.
var (
	_ raftLog = (*wal.RangeLog)(nil)
	_ raftLog = (*raftstore.SegmentLog)(nil)
)

// commitRecorder stands between a replica's shard and its transport and
// reports the commit index of every AppendEntries it sends, as sent (after
// the shard's own transport has had its say).
type commitRecorder struct {
	*raft.InmemTransport
	sent chan uint64
}

func (c *commitRecorder) note(args *raft.AppendEntriesRequest) {
	select {
	case c.sent <- args.LeaderCommitIndex:
	default: // nobody listening: keep Raft moving
	}
}

func (c *commitRecorder) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	c.note(args)
	return c.InmemTransport.AppendEntries(id, target, args, resp)
}

func (c *commitRecorder) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	return hookPipeline(c.InmemTransport, id, target, c.note)
}

// With parallel leader appends the leader counts its own copy of an entry
// before its fsync returns. The entry may then be committed, but nothing may
// take effect until the leader's copy is durable: the write is not
// acknowledged, the leader does not apply it, and no follower is told it is
// committed. Here the leader's fsync is held while the entry commits.
func TestParallelAppend_NothingTakesEffectBeforeTheLeadersSync(t *testing.T) {
	recorders := make([]*commitRecorder, 3)
	nodes := startGroup(t, 3, groupOptions{
		parallelAppend: true,
		wrap: func(i int, tr *raft.InmemTransport) raft.Transport {
			recorders[i] = &commitRecorder{InmemTransport: tr, sent: make(chan uint64, 64)}
			return recorders[i]
		},
	})
	leader := waitReadyLeader(t, nodes)
	var rec *commitRecorder
	for i, nd := range nodes {
		if nd == leader {
			rec = recorders[i]
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := leader.shard.Propose(ctx, &raftstore.Command{Op: raftstore.OpPut, Key: []byte("before"), Value: []byte("v")}); err != nil {
		t.Fatalf("put before the hold: %v", err)
	}

	// Hold the leader's next fsync.
	var once sync.Once
	entered, release := make(chan struct{}), make(chan struct{})
	log := leader.shard.storage.Log()
	log.SetSyncFunc(func(sync func() error) error {
		once.Do(func() { close(entered); <-release })
		return sync()
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()
	synced := log.SyncedIndex()

	done := make(chan error, 1)
	go func() {
		_, err := leader.shard.Propose(ctx, &raftstore.Command{Op: raftstore.OpPut, Key: []byte("held"), Value: []byte("v")})
		done <- err
	}()
	select {
	case <-entered:
	case <-ctx.Done():
		t.Fatal("the leader never synced the held write")
	}
	index := synced + 1
	// The followers store it and answer, so the leader commits it.
	for attempt := 0; leader.shard.Raft().CommitIndex() < index; attempt++ {
		if attempt == 2000 {
			t.Fatalf("the held write (index %d) did not commit: commit index %d", index, leader.shard.Raft().CommitIndex())
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Drain what was sent before the commit, then watch the AppendEntries
	// Raft keeps sending (CommitTimeout is 5 ms): none may carry it.
	for len(rec.sent) > 0 {
		<-rec.sent
	}
	for range 20 {
		select {
		case c := <-rec.sent:
			if c >= index {
				t.Fatalf("the leader told a follower that index %d is committed before its own copy was durable", c)
			}
		case <-ctx.Done():
			t.Fatal("the leader stopped sending AppendEntries")
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the write was acknowledged (err %v) before the leader's copy was durable", err)
	default:
	}
	for _, nd := range nodes {
		if got := nd.shard.FSM().AppliedIndex(); got >= index {
			t.Fatalf("%s applied index %d before the leader's copy was durable", nd.id, got)
		}
	}

	close(release)
	released = true
	if err := <-done; err != nil {
		t.Fatalf("the held write failed once released: %v", err)
	}
	for _, nd := range nodes {
		if err := nd.shard.FSM().WaitApplied(ctx, index); err != nil {
			t.Fatalf("%s did not apply index %d after the release: %v", nd.id, index, err)
		}
	}
}

// A node that appended as leader answers a new leader's AppendEntries only
// once those appends are durable: Raft acknowledges entries it already
// holds without storing them again, so an answer before the sync would
// count a copy a power cut could take back.
func TestParallelAppend_FormerLeaderAnswersOnlyWhenDurable(t *testing.T) {
	cfg := raftstore.DefaultConfig(t.TempDir())
	cfg.Logger = benchDiscard
	store, err := raftstore.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	storage, err := store.OpenRaftStorage(2, logadapt.HCLog(benchDiscard))
	if err != nil {
		t.Fatal(err)
	}
	defer storage.Close()
	log := storage.Log()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	var releaseOnce sync.Once
	releaseSync := func() { releaseOnce.Do(func() { close(release) }) }
	defer releaseSync() // before the log closes, which waits for the sync
	log.SetSyncFunc(func(sync func() error) error {
		entered <- struct{}{}
		<-release
		return sync()
	})
	log.SetSyncBehind(func() bool { return true })
	held := &raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("written as leader")}
	if err := log.StoreLogs([]*raft.Log{held}); err != nil {
		t.Fatal(err)
	}
	<-entered // its sync is now held

	w, peer, addr := startStubWakeTransport(t, &Shard{id: 2, storage: storage, rlog: log})
	defer w.shutdown()

	// The new leader sends the entry this node already holds.
	sent := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		sent <- peer.AppendEntries("n1", addr, &raft.AppendEntriesRequest{Term: 2, Entries: []*raft.Log{held}}, &resp)
	}()
	select {
	case rpc := <-w.Consumer():
		rpc.Respond(&raft.AppendEntriesResponse{}, nil)
		t.Fatal("the AppendEntries reached Raft while this node's own copy was still syncing")
	case <-time.After(200 * time.Millisecond):
		// Nothing arrived while the sync was held (a wrong build hands
		// it over within microseconds).
	}
	releaseSync()
	select {
	case rpc := <-w.Consumer():
		rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	case <-time.After(10 * time.Second):
		t.Fatal("the AppendEntries never reached Raft after the sync")
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
}
