package link

import (
	"bytes"
	"sync"
	"testing"

	"github.com/hashicorp/raft"
)

func TestTrimAppend(t *testing.T) {
	for _, tc := range []struct {
		sizes []int
		limit int
		want  int
	}{
		{nil, 10, 0},
		{[]int{3, 3, 3}, 10, 3},
		{[]int{5, 5, 1}, 10, 2},
		{[]int{11, 1}, 10, 1},
		{[]int{4, 4, 4}, 8, 2},
	} {
		args := &raft.AppendEntriesRequest{}
		for i, n := range tc.sizes {
			args.Entries = append(args.Entries, &raft.Log{Index: uint64(i + 1), Data: make([]byte, n)})
		}
		trimAppend(args, tc.limit)
		if len(args.Entries) != tc.want {
			t.Errorf("sizes %v, limit %d: %d entries left, want %d", tc.sizes, tc.limit, len(args.Entries), tc.want)
		}
	}
}

// An append sent on its own whose entries' data exceed maxAppendBytes goes
// out cut to the longest prefix that fits, and the caller's request is cut
// the same way (Raft reads its last entry to learn how far the follower
// got); one entry larger than the bound still goes, alone. A pipelined
// one is cut only at maxPipelineAppendBytes: raft's pipeline would send
// the rest only with the next entry or commit timeout.
func TestAppend_LargeEntriesGoInPiecesThatFit(t *testing.T) {
	leader, follower := newTestNode(t, nodeOpts{}), newTestNode(t, nodeOpts{})
	t.Cleanup(leader.close)
	t.Cleanup(follower.close)
	tl, tf := openRange(t, leader, 3), openRange(t, follower, 3)
	var mu sync.Mutex
	var got [][]uint64
	stop := responder(t, tf, func(rpc raft.RPC) (any, error) {
		req := rpc.Command.(*raft.AppendEntriesRequest)
		var idx []uint64
		for _, e := range req.Entries {
			if len(e.Data) == 0 || !bytes.Equal(e.Data, bytes.Repeat(e.Data[:1], len(e.Data))) {
				t.Errorf("entry %d arrived damaged", e.Index)
			}
			idx = append(idx, e.Index)
		}
		mu.Lock()
		got = append(got, idx)
		mu.Unlock()
		return &raft.AppendEntriesResponse{Term: req.Term, Success: true}, nil
	})
	defer stop()
	entries := func(sizes ...int) []*raft.Log {
		var es []*raft.Log
		for i, n := range sizes {
			es = append(es, &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte('a' + i)}, n)})
		}
		return es
	}
	const mib = 1 << 20
	for _, tc := range []struct {
		name          string
		sizes         []int
		want, wantPip int // entries sent alone, pipelined
	}{
		{"small entries all go", []int{100, 200, 300}, 3, 3},
		{"1 MiB values: four fit", []int{mib, mib, mib, mib, mib, mib}, 4, 6},
		{"exactly the bound", []int{2 * mib, 2 * mib, 1}, 2, 3},
		{"one entry over the bound goes alone", []int{5 * mib, 10}, 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			got = nil
			mu.Unlock()
			for _, pipelined := range []bool{false, true} {
				args := &raft.AppendEntriesRequest{RPCHeader: header(leader.addr), Term: 1, Entries: entries(tc.sizes...)}
				var resp raft.AppendEntriesResponse
				if pipelined {
					p, err := tl.AppendEntriesPipeline("f", raft.ServerAddress(follower.addr))
					if err != nil {
						t.Fatal(err)
					}
					f, err := p.AppendEntries(args, &resp)
					if err != nil {
						t.Fatal(err)
					}
					if err := f.Error(); err != nil {
						t.Fatal(err)
					}
					p.Close()
				} else if err := tl.AppendEntries("f", raft.ServerAddress(follower.addr), args, &resp); err != nil {
					t.Fatal(err)
				}
				want := tc.want
				if pipelined {
					want = tc.wantPip
				}
				if len(args.Entries) != want {
					t.Errorf("pipelined %v: the request was left with %d entries, want %d", pipelined, len(args.Entries), want)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 2 || len(got[0]) != tc.want || len(got[1]) != tc.wantPip {
				t.Fatalf("the follower got appends of %v, want one of %d entries and one of %d", got, tc.want, tc.wantPip)
			}
		})
	}
}
