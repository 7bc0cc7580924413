package link

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// BenchmarkAppendEntries sends AppendEntries of 100 groups from one node
// to another at once, each group one call at a time as Raft's replication
// does, over the link and over 100 NetworkTransports (today's per-range
// streams, in checked frames as replication's mux has them). It reports
// round trips per second, bytes on the wire (both directions, frame
// headers included) and write system calls per round trip (the per-range
// streams' are counted by the test's framedConn, one writev per frame;
// the link counts its own).
func BenchmarkAppendEntries(b *testing.B) {
	const groups = 100
	shapes := []struct {
		name string
		args func(g int, addr string) *raft.AppendEntriesRequest
	}{
		{"heartbeat", func(g int, addr string) *raft.AppendEntriesRequest {
			return &raft.AppendEntriesRequest{RPCHeader: header(addr), Term: 3}
		}},
		{"one-100B-entry", func(g int, addr string) *raft.AppendEntriesRequest {
			return &raft.AppendEntriesRequest{RPCHeader: header(addr), Term: 3, PrevLogEntry: 10, PrevLogTerm: 3, LeaderCommitIndex: 10,
				Entries: []*raft.Log{{Index: 11, Term: 3, Type: raft.LogCommand, Data: make([]byte, 100), AppendedAt: time.Now()}}}
		}},
		{"64-1KiB-entries", func(g int, addr string) *raft.AppendEntriesRequest {
			req := &raft.AppendEntriesRequest{RPCHeader: header(addr), Term: 3, PrevLogEntry: 10, PrevLogTerm: 3, LeaderCommitIndex: 10}
			for i := range 64 {
				req.Entries = append(req.Entries, &raft.Log{Index: uint64(11 + i), Term: 3, Type: raft.LogCommand, Data: make([]byte, 1024), AppendedAt: time.Now()})
			}
			return req
		}},
	}
	for _, shape := range shapes {
		for _, viaLink := range []bool{true, false} {
			name := "link"
			if !viaLink {
				name = "network-transport"
			}
			b.Run(fmt.Sprintf("%s/%s", shape.name, name), func(b *testing.B) {
				var writes, bytes atomic.Uint64
				a := newTestNode(b, nodeOpts{old: !viaLink})
				f := newTestNode(b, nodeOpts{old: !viaLink})
				a.count, f.count = &counters{&writes, &bytes}, &counters{&writes, &bytes}
				var froms []raft.Transport
				var stops []func()
				for g := range groups {
					var from, to raft.Transport
					if viaLink {
						from, _ = a.link.Open(uint64(g+1), nil)
						to, _ = f.link.Open(uint64(g+1), nil)
					} else {
						from, to = a.legacy(uint64(g+1)), f.legacy(uint64(g+1))
					}
					froms = append(froms, from, to)
					stops = append(stops, responder(b, to, func(rpc raft.RPC) (any, error) {
						req := rpc.Command.(*raft.AppendEntriesRequest)
						return &raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry + uint64(len(req.Entries)), Success: true}, nil
					}))
				}
				// Warm up: every connection dialled before the clock runs.
				for g := range groups {
					var resp raft.AppendEntriesResponse
					if err := froms[2*g].AppendEntries("f", raft.ServerAddress(f.addr), shape.args(g, a.addr), &resp); err != nil {
						b.Fatal(err)
					}
				}
				w0, b0 := writes.Load(), bytes.Load()
				var ls0 Stats
				if viaLink {
					ls0 = sumStats(a.link.Stats(), f.link.Stats())
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for g := range groups {
					wg.Go(func() {
						args := shape.args(g, a.addr)
						for next.Add(1) <= int64(b.N) {
							var resp raft.AppendEntriesResponse
							if err := froms[2*g].AppendEntries("f", raft.ServerAddress(f.addr), args, &resp); err != nil || !resp.Success {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				w, by := float64(writes.Load()-w0), float64(bytes.Load()-b0)
				if viaLink {
					ls := sumStats(a.link.Stats(), f.link.Stats())
					w, by = float64(ls.Writes-ls0.Writes), float64(ls.BytesSent-ls0.BytesSent)
				}
				n := float64(b.N)
				b.ReportMetric(n/elapsed.Seconds(), "rpc/s")
				b.ReportMetric(by/n, "wire-B/rpc")
				b.ReportMetric(w/n, "writes/rpc")
				for _, stop := range stops {
					stop()
				}
				for _, tr := range froms {
					tr.(raft.WithClose).Close()
				}
				a.close()
				f.close()
			})
		}
	}
}

func sumStats(a, b Stats) Stats {
	return Stats{Writes: a.Writes + b.Writes, BytesSent: a.BytesSent + b.BytesSent, MessagesSent: a.MessagesSent + b.MessagesSent}
}
