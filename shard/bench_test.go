package shard

// Benchmarks of the shard's hot paths (issue #6).
//
//	go test ./shard -run XXX -bench . -benchmem
//
// Raft groups here run in-process over raft's in-memory transport, so no
// socket is opened; every shard and store is stopped in b.Cleanup. None of
// them is a Test, so plain `go test` does not run them.

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/hashicorp/raft"
)

// benchTiming elects a leader within ~100 ms, so that setting up a group
// (once per b.N round) stays cheap, while leaving room on a busy two-core
// machine: followers time out only after 250 ms without a heartbeat.
var benchTiming = Timing{Heartbeat: 250 * time.Millisecond, Election: 250 * time.Millisecond, LeaderLease: 100 * time.Millisecond, Commit: 5 * time.Millisecond}

var benchDiscard = slog.New(slog.DiscardHandler)

type benchNode struct {
	id    string
	dir   string // the store's data directory
	addr  raft.ServerAddress
	trans *raft.InmemTransport
	store *raftstore.Store
	shard *Shard
}

// benchGroup starts an n-replica group of range 2 over in-memory
// transports, one Store per replica, and returns its replicas once one of
// them leads and serves read-index reads. Everything is stopped in
// b.Cleanup.
func benchGroup(b *testing.B, n int) (leader *Shard) {
	b.Helper()
	return waitReadyLeader(b, startGroup(b, n, groupOptions{})).shard
}

type groupOptions struct {
	parallelAppend bool
	// wrap, if set, stands between a replica's shard and its transport.
	wrap func(node int, t *raft.InmemTransport) raft.Transport
}

// startGroup starts and bootstraps an n-replica group of range 2 over
// in-memory transports, one Store per replica; everything is stopped in
// tb.Cleanup.
func startGroup(tb testing.TB, n int, opts groupOptions) []*benchNode {
	tb.Helper()
	desc := Descriptor{ID: 2, Generation: 1}
	nodes := make([]*benchNode, n)
	var servers []raft.Server
	for i := range nodes {
		// The directory is made before the cleanup below is registered,
		// so that it is removed only after the replicas have stopped.
		nd := &benchNode{id: fmt.Sprintf("n%d", i+1), dir: tb.TempDir()}
		nd.addr, nd.trans = raft.NewInmemTransport("")
		nodes[i] = nd
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(nd.id), Address: nd.addr})
	}
	for _, a := range nodes {
		for _, c := range nodes {
			if a != c {
				a.trans.Connect(c.addr, c.trans)
			}
		}
	}
	tb.Cleanup(func() {
		// Cut every route first, so that no replica's shutdown waits for
		// RPCs to peers already gone; then stop the groups, then the stores.
		for _, nd := range nodes {
			nd.trans.DisconnectAll()
		}
		for _, nd := range nodes {
			if nd.shard != nil {
				if err := nd.shard.Shutdown(); err != nil {
					tb.Errorf("shutdown %s: %v", nd.id, err)
				}
			}
		}
		for _, nd := range nodes {
			if nd.store != nil {
				if err := nd.store.Close(); err != nil {
					tb.Errorf("close store %s: %v", nd.id, err)
				}
			}
		}
	})
	for i, nd := range nodes {
		var trans raft.Transport = nd.trans
		if opts.wrap != nil {
			trans = opts.wrap(i, nd.trans)
		}
		nd.store, nd.shard = openReplica(tb, nd.dir, desc, nd.id, trans, opts.parallelAppend)
		if err := nd.shard.Bootstrap(servers); err != nil {
			tb.Fatalf("bootstrap %s: %v", nd.id, err)
		}
	}
	return nodes
}

// waitReadyLeader returns the replica that leads and serves read-index
// reads, waiting up to 10 s.
func waitReadyLeader(tb testing.TB, nodes []*benchNode) *benchNode {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, nd := range nodes {
			if !nd.shard.IsLeader() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := nd.shard.ReadIndex(ctx)
			cancel()
			if err == nil {
				return nd
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	tb.Fatalf("no replica of the %d-node group served a read index within 10 s", len(nodes))
	return nil
}

// BenchmarkShard_ReadIndex measures a linearizable read's proof on the
// leader: join a confirmation round (readBatcher), check the term's marker,
// VerifyLeader, wait for the apply. On one node raft answers VerifyLeader
// at once; on three it takes a heartbeat round trip (in-memory transport).
// The parallel cases show how concurrent readers share rounds.
func BenchmarkShard_ReadIndex(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d/sequential", n), func(b *testing.B) {
			s := benchGroup(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.ReadIndex(ctx); err != nil {
					b.Fatalf("read index: %v", err)
				}
			}
		})
		b.Run(fmt.Sprintf("nodes=%d/parallel", n), func(b *testing.B) {
			s := benchGroup(b, n)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(16) // 16 readers per P, like many clients
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.ReadIndex(ctx); err != nil {
						b.Errorf("read index: %v", err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkProposeEncode is the write path's request-to-entry conversion.
// There is no function for it: replication.Node.Put builds the Command
// from the request inline (replication/kv.go) and Shard.Propose encodes it
// into a fresh buffer (shard.go); this repeats those two steps.
func BenchmarkProposeEncode(b *testing.B) {
	rng := rand.New(rand.NewPCG(7, 8))
	req := &kvpb.PutRequest{Key: make([]byte, 16), Value: make([]byte, 256)}
	for _, p := range [][]byte{req.Key, req.Value} {
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
	}
	encode := func() []byte {
		cmd := &raftstore.Command{Op: raftstore.OpPut, Key: req.Key, Value: req.Value}
		return cmd.Encode(make([]byte, 0, 16+len(cmd.Key)+len(cmd.Value)+len(cmd.Expected)))
	}
	data := encode()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		data = encode()
	}
	if _, err := raftstore.DecodeCommand(data); err != nil {
		b.Fatal(err)
	}
}
