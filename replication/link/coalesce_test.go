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
	m, err := n.link.msgs.newRequest(rpcAppendEntries, 1, 1, args, versionMax)
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

// TestLink_HeartbeatThatMayWaitGoesOnHurry: a heartbeat sent with
// AppendEntriesMayWait waits (here for an hour) for company, and Hurry,
// which a read-index round calls before it waits for heartbeats, sends it
// at once.
func TestLink_HeartbeatThatMayWaitGoesOnHurry(t *testing.T) {
	a, b, ta := holdingPair(t)

	// A first call opens the connection, so that the held one is alone.
	var resp raft.AppendEntriesResponse
	hb := &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1}
	if err := ta.AppendEntries("b", raft.ServerAddress(b.addr), hb, &resp); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		done <- ta.AppendEntriesMayWait(ta.HurryGen(), "b", raft.ServerAddress(b.addr), hb, &resp)
	}()
	harness.Eventually(t, "the heartbeat to be held", 10*time.Second, func() bool {
		a.link.mu.Lock()
		defer a.link.mu.Unlock()
		for c := range a.link.mu.conns {
			if c.holding.Load() {
				return true
			}
		}
		return false
	})
	select {
	case err := <-done:
		t.Fatalf("the heartbeat went before the hurry (%v): it was not held", err)
	default:
	}
	ta.Hurry()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held heartbeat did not go on Hurry")
	}
}

// TestLink_HeartbeatDecidedBeforeAHurryGoesAtOnce: a heartbeat whose
// sender decided it may wait before a hurry (the read began just after
// the decision) is sent at once, though nothing is held when the hurry
// comes.
func TestLink_HeartbeatDecidedBeforeAHurryGoesAtOnce(t *testing.T) {
	a, b, ta := holdingPair(t)

	since := ta.HurryGen()
	ta.Hurry()
	done := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		done <- ta.AppendEntriesMayWait(since, "b", raft.ServerAddress(b.addr), &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1}, &resp)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a heartbeat decided before a hurry was held")
	}
}

// holdingPair is two nodes whose range 1 is open on both: a holds lazy
// messages for an hour (and its calls' keepalive pings, which would end a
// hold too, come after half an hour), and b answers every heartbeat.
func holdingPair(t *testing.T) (a, b *testNode, ta *RangeTransport) {
	t.Helper()
	a = newTestNode(t, nodeOpts{tweak: func(c *Config) { c.CoalesceDelay, c.Timeout = time.Hour, time.Hour }})
	b = newTestNode(t, nodeOpts{})
	t.Cleanup(b.close)
	t.Cleanup(a.close)
	ta, err := a.link.Open(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ta.Close() })
	tb, err := b.link.Open(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	tb.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil) })
	return a, b, ta
}
