package link

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
	"github.com/dialkv/dialkv/replication/frame"
	"github.com/hashicorp/raft"
)

func TestIsLazy(t *testing.T) {
	hdr := header("a")
	cases := []struct {
		name string
		cmd  any
		want bool
	}{
		{"commit-index append", &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 2, PrevLogEntry: 9, PrevLogTerm: 2, LeaderCommitIndex: 9}, true},
		{"heartbeat", &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 2}, false},
		{"append with entries", &raft.AppendEntriesRequest{RPCHeader: hdr, Term: 2, PrevLogEntry: 9, Entries: []*raft.Log{{Index: 10}}}, false},
		{"vote", &raft.RequestVoteRequest{RPCHeader: hdr, Term: 2}, false},
		{"timeout now", &raft.TimeoutNowRequest{RPCHeader: hdr}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := isLazy(c.cmd); got != c.want {
				t.Fatalf("isLazy = %v, want %v", got, c.want)
			}
		})
	}
}

// coalesceConn is a connection of n's link over a pipe; the returned
// channel gets, for each frame (each write) the other end reads, how many
// messages it carried.
func coalesceConn(t *testing.T, n *testNode) (*conn, <-chan int) {
	t.Helper()
	local, remote := net.Pipe()
	c := newConn(n.link, local, nil, frame.NewWriter(local), "test")
	got := make(chan int, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var hdr [frame.HeaderLen]byte
		for {
			if _, err := io.ReadFull(remote, hdr[:]); err != nil {
				return
			}
			payload := make([]byte, binary.BigEndian.Uint32(hdr[:4]))
			if _, err := io.ReadFull(remote, payload); err != nil {
				return
			}
			mr := msgReader{r: bytes.NewReader(payload)}
			msgs := 0
			for ; ; msgs++ {
				if _, _, err := mr.next(); err != nil {
					break
				}
			}
			got <- msgs
		}
	}()
	t.Cleanup(func() {
		c.close(errors.New("test over"))
		remote.Close()
		<-done
	})
	return c, got
}

func outRequest(t *testing.T, n *testNode, args any) *outMsg {
	t.Helper()
	m, err := n.link.msgs.newRequest(rpcAppendEntries, 1, 1, args)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// receive returns the message count of the next write.
func receive(t *testing.T, got <-chan int, what string) int {
	t.Helper()
	select {
	case n := <-got:
		return n
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never arrived", what)
		return 0
	}
}

func TestConn_LazyMessagesWaitForCompany(t *testing.T) {
	n := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.CoalesceDelay = time.Hour }})
	defer n.close()
	commit := &raft.AppendEntriesRequest{RPCHeader: header(n.addr), Term: 1, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: 5}
	heartbeat := &raft.AppendEntriesRequest{RPCHeader: header(n.addr), Term: 1}

	t.Run("held until a message that is not lazy", func(t *testing.T) {
		c, got := coalesceConn(t, n)
		c.low <- outRequest(t, n, commit)
		c.low <- outRequest(t, n, commit)
		go c.writeLoop()
		harness.Eventually(t, "the writer to take both", 10*time.Second, func() bool { return len(c.low) == 0 })
		c.high <- outRequest(t, n, heartbeat)
		if msgs := receive(t, got, "the first write"); msgs != 3 {
			t.Fatalf("the first write carried %d messages, want all 3", msgs)
		}
	})
	t.Run("anything else goes at once", func(t *testing.T) {
		c, got := coalesceConn(t, n)
		go c.writeLoop()
		c.high <- outRequest(t, n, heartbeat) // an hour's hold would time this out
		receive(t, got, "the heartbeat")
	})
}

func TestConn_LazyMessageAloneGoesAfterTheDelay(t *testing.T) {
	n := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.CoalesceDelay = time.Millisecond }})
	defer n.close()
	c, got := coalesceConn(t, n)
	go c.writeLoop()
	c.low <- outRequest(t, n, &raft.AppendEntriesRequest{RPCHeader: header(n.addr), Term: 1, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: 5})
	receive(t, got, "the lazy message")
}
