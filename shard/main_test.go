package shard

import (
	"testing"

	"github.com/dialkv/dialkv/internal/logadapt"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any goroutine outlives them,
// except this one:
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// awaitFuture's waiter on a Raft future that hashicorp/raft v1.8.0
		// dropped at shutdown (the FSM goroutine returns without
		// answering the batches still queued for it): one goroutine per
		// dropped entry, by design (see awaitFuture).
		goleak.IgnoreTopFunction("github.com/hashicorp/raft.(*deferError).Error"),
	)
}

// openReplica opens the store in dir and starts range desc's replica on
// it, as node id over trans. The caller shuts the shard down, then closes
// the store.
func openReplica(tb testing.TB, dir string, desc Descriptor, id string, trans raft.Transport, parallelAppend bool) (*raftstore.Store, *Shard) {
	tb.Helper()
	cfg := raftstore.DefaultConfig(dir)
	cfg.Logger = benchDiscard
	store, err := raftstore.Open(cfg)
	if err != nil {
		tb.Fatalf("open store of %s: %v", id, err)
	}
	fsm, err := store.OpenRange(desc)
	if err != nil {
		store.Close()
		tb.Fatalf("open range %d on %s: %v", desc.ID, id, err)
	}
	storage, err := store.OpenRaftStorage(desc.ID, logadapt.HCLog(benchDiscard))
	if err != nil {
		store.Close()
		tb.Fatalf("open raft storage of range %d on %s: %v", desc.ID, id, err)
	}
	s, err := New(Config{NodeID: id, Descriptor: desc, FSM: fsm, Storage: storage, Transport: trans,
		Logger: benchDiscard, Timing: benchTiming, ParallelLeaderAppend: parallelAppend})
	if err != nil {
		storage.Close()
		store.Close()
		tb.Fatalf("start range %d on %s: %v", desc.ID, id, err)
	}
	return store, s
}
