package link

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/dialkv/dialkv/replication/frame"
	"io"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

// answerFor is the responder every range in the round-trip test runs: it
// answers with values derived from the range and the request, so a
// message delivered to the wrong range, or a response matched to the
// wrong request, shows.
func answerFor(rangeID uint64) func(raft.RPC) (any, error) {
	return func(rpc raft.RPC) (any, error) {
		switch req := rpc.Command.(type) {
		case *raft.AppendEntriesRequest:
			var n uint64
			for _, e := range req.Entries {
				n += uint64(len(e.Data))
			}
			return &raft.AppendEntriesResponse{Term: req.Term + rangeID, LastLog: req.PrevLogEntry + n, Success: true}, nil
		case *raft.RequestVoteRequest:
			return &raft.RequestVoteResponse{Term: req.Term + rangeID, Granted: req.LastLogIndex%2 == 0}, nil
		case *raft.RequestPreVoteRequest:
			return &raft.RequestPreVoteResponse{Term: req.Term + rangeID, Granted: true}, nil
		case *raft.TimeoutNowRequest:
			return &raft.TimeoutNowResponse{RPCHeader: raft.RPCHeader{ID: fmt.Appendf(nil, "%s/%d", req.ID, rangeID)}}, nil
		case *raft.InstallSnapshotRequest:
			data, err := io.ReadAll(rpc.Reader)
			if err != nil {
				return nil, err
			}
			if int64(len(data)) != req.Size || !bytes.Equal(data, snapshotData(rangeID, req.Size)) {
				return nil, fmt.Errorf("range %d: snapshot of %d bytes, want %d of its own", rangeID, len(data), req.Size)
			}
			return &raft.InstallSnapshotResponse{Term: req.Term + rangeID, Success: true}, nil
		}
		return nil, fmt.Errorf("unexpected %T", rpc.Command)
	}
}

func snapshotData(rangeID uint64, size int64) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(uint64(i)*7 + rangeID)
	}
	return b
}

func header(addr string) raft.RPCHeader {
	return raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(addr), Addr: []byte(addr)}
}

// The nodes speak link versions 1, 2 and 3 (two of them), so every pair
// of versions, in both directions, carries every request.
func TestLink_RPCsRoundTripBetweenNodesForEveryRange(t *testing.T) {
	const nodes, ranges = 4, 40
	versions := [nodes]uint16{1, 2, 0, 0} // 0: this release's
	var ns []*testNode
	trans := make([][]*RangeTransport, nodes)
	var fastHeartbeats atomic.Int64
	for i := range nodes {
		n := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.maxVersion = versions[i] }})
		ns = append(ns, n)
		for r := uint64(1); r <= ranges; r++ {
			tr := n.open(r).(*RangeTransport)
			trans[i] = append(trans[i], tr)
			tr.SetHeartbeatHandler(func(rpc raft.RPC) {
				fastHeartbeats.Add(1)
				req := rpc.Command.(*raft.AppendEntriesRequest)
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term + r, Success: true}, nil)
			})
			stop := responder(t, tr, answerFor(r))
			t.Cleanup(stop)
		}
	}
	t.Cleanup(func() {
		for i := range trans {
			for _, tr := range trans[i] {
				tr.Close()
			}
		}
		for _, n := range ns {
			n.close()
		}
	})

	type check func(tr *RangeTransport, target string, r uint64) error
	rpcs := []struct {
		name string
		do   check
	}{
		{"append entries with entries", func(tr *RangeTransport, target string, r uint64) error {
			args := &raft.AppendEntriesRequest{RPCHeader: header(target), Term: 7, PrevLogEntry: 100, LeaderCommitIndex: 3,
				Entries: []*raft.Log{{Index: 101, Term: 7, Type: raft.LogCommand, Data: bytes.Repeat([]byte{byte(r)}, int(r))}}}
			var resp raft.AppendEntriesResponse
			if err := tr.AppendEntries("x", raft.ServerAddress(target), args, &resp); err != nil {
				return err
			}
			if resp.Term != 7+r || resp.LastLog != 100+r || !resp.Success {
				return fmt.Errorf("got %+v", resp)
			}
			return nil
		}},
		{"heartbeat through the fast path", func(tr *RangeTransport, target string, r uint64) error {
			args := &raft.AppendEntriesRequest{RPCHeader: header(target), Term: 9}
			var resp raft.AppendEntriesResponse
			if err := tr.AppendEntries("x", raft.ServerAddress(target), args, &resp); err != nil {
				return err
			}
			if resp.Term != 9+r || !resp.Success || resp.LastLog != 0 {
				return fmt.Errorf("got %+v", resp)
			}
			return nil
		}},
		{"request vote", func(tr *RangeTransport, target string, r uint64) error {
			var resp raft.RequestVoteResponse
			if err := tr.RequestVote("x", raft.ServerAddress(target), &raft.RequestVoteRequest{RPCHeader: header(target), Term: 4, LastLogIndex: r}, &resp); err != nil {
				return err
			}
			if resp.Term != 4+r || resp.Granted != (r%2 == 0) {
				return fmt.Errorf("got %+v", resp)
			}
			return nil
		}},
		{"request pre-vote", func(tr *RangeTransport, target string, r uint64) error {
			var resp raft.RequestPreVoteResponse
			if err := tr.RequestPreVote("x", raft.ServerAddress(target), &raft.RequestPreVoteRequest{RPCHeader: header(target), Term: 5}, &resp); err != nil {
				return err
			}
			if resp.Term != 5+r || !resp.Granted {
				return fmt.Errorf("got %+v", resp)
			}
			return nil
		}},
		{"timeout now", func(tr *RangeTransport, target string, r uint64) error {
			var resp raft.TimeoutNowResponse
			if err := tr.TimeoutNow("x", raft.ServerAddress(target), &raft.TimeoutNowRequest{RPCHeader: header(target)}, &resp); err != nil {
				return err
			}
			if want := fmt.Sprintf("%s/%d", target, r); string(resp.ID) != want {
				return fmt.Errorf("got %+v", resp)
			}
			return nil
		}},
		{"install snapshot on its own stream", func(tr *RangeTransport, target string, r uint64) error {
			if r%8 != 0 { // a few ranges suffice: each is a connection
				return nil
			}
			size := int64(300<<10 + r)
			var resp raft.InstallSnapshotResponse
			args := &raft.InstallSnapshotRequest{RPCHeader: header(target), SnapshotVersion: raft.SnapshotVersionMax, Term: 8, Size: size}
			if err := tr.InstallSnapshot("x", raft.ServerAddress(target), args, &resp, bytes.NewReader(snapshotData(r, size))); err != nil {
				return err
			}
			if resp.Term != 8+r || !resp.Success {
				return fmt.Errorf("got %+v", resp)
			}
			return nil
		}},
	}
	for _, rc := range rpcs {
		t.Run(rc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			errs := make(chan error, nodes*nodes*ranges)
			for i := range nodes {
				for j := range nodes {
					if i == j {
						continue
					}
					for _, tr := range trans[i] {
						wg.Go(func() {
							if err := rc.do(tr, ns[j].addr, tr.RangeID()); err != nil {
								errs <- fmt.Errorf("node %d to %d, range %d: %w", i, j, tr.RangeID(), err)
							}
						})
					}
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
	// Each pair spoke the higher version both know.
	top := func(i int) uint16 {
		if versions[i] == 0 {
			return versionMax
		}
		return versions[i]
	}
	for i := range nodes {
		for j := range nodes {
			if i == j {
				continue
			}
			if got, want := connect(t, ns[i], ns[j].addr).version, min(top(i), top(j)); got != want {
				t.Errorf("node %d (version %d) to %d (version %d) chose version %d", i, top(i), j, top(j), got)
			}
		}
	}
	if got, want := fastHeartbeats.Load(), int64(nodes*(nodes-1)*ranges); got != want {
		t.Errorf("%d heartbeats took the fast path, want %d", got, want)
	}
	// One connection per ordered pair of nodes carried all of it, plus one
	// per snapshot.
	snapshots := uint64(ranges / 8 * (nodes - 1))
	for i, n := range ns {
		if got := n.link.Stats().Dials; got != uint64(nodes-1)+snapshots {
			t.Errorf("node %d dialled %d connections, want %d links and %d snapshot streams", i, got, nodes-1, snapshots)
		}
		if got := n.link.Stats().LegacyCalls; got != 0 {
			t.Errorf("node %d made %d calls through the legacy transport between new nodes", i, got)
		}
	}
}

func TestLink_UnknownRangeGetsAnErrorNotAResponse(t *testing.T) {
	a, b := newTestNode(t, nodeOpts{}), newTestNode(t, nodeOpts{})
	defer b.close()
	defer a.close()
	ta, err := a.link.Open(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ta.Close()
	tb, err := b.link.Open(2, nil) // a range a has not
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()

	resp := raft.AppendEntriesResponse{Term: 42}
	err = ta.AppendEntries("b", raft.ServerAddress(b.addr), &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 3}, &resp)
	if !errors.Is(err, ErrRangeNotOpen) {
		t.Fatalf("err = %v, want ErrRangeNotOpen", err)
	}
	if resp.Term != 42 || resp.Success {
		t.Fatalf("the response was written: %+v", resp)
	}

	// A range that closes is gone for its peers at once.
	tb2, err := b.link.Open(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := responder(t, tb2, answerFor(1))
	var ok raft.RequestVoteResponse
	if err := ta.RequestVote("b", raft.ServerAddress(b.addr), &raft.RequestVoteRequest{RPCHeader: header(a.addr), Term: 1}, &ok); err != nil {
		t.Fatalf("vote while range 1 is open on b: %v", err)
	}
	stop()
	tb2.Close()
	var after raft.RequestVoteResponse
	if err := ta.RequestVote("b", raft.ServerAddress(b.addr), &raft.RequestVoteRequest{RPCHeader: header(a.addr), Term: 1}, &after); !errors.Is(err, ErrRangeNotOpen) {
		t.Fatalf("after the range closed: err = %v, want ErrRangeNotOpen", err)
	}
	if !reflect.DeepEqual(after, raft.RequestVoteResponse{}) {
		t.Fatalf("the response was written: %+v", after)
	}
	if _, err := b.link.Open(2, nil); !errors.Is(err, ErrRangeOpen) {
		t.Fatalf("opening an open range: err = %v, want ErrRangeOpen", err)
	}
}

func TestLink_DroppedConnectionFailsCallsInFlightAndReconnects(t *testing.T) {
	a, b, ta, tb := linkedPair(t, nodeOpts{}, nodeOpts{})

	// b's Raft takes the request and answers only after the connection
	// has broken: that answer must reach nobody.
	taken := make(chan raft.RPC, 1)
	go func() { taken <- <-tb.Consumer() }()
	resp := raft.AppendEntriesResponse{}
	errc := make(chan error, 1)
	go func() {
		errc <- ta.AppendEntries("b", raft.ServerAddress(b.addr), &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 2, PrevLogEntry: 5}, &resp)
	}()
	rpc := <-taken
	a.dropLinks()
	err := <-errc
	if !errors.Is(err, ErrConnClosed) {
		t.Fatalf("err = %v, want ErrConnClosed", err)
	}
	rpc.Respond(&raft.AppendEntriesResponse{Term: 2, Success: true}, nil)
	if !reflect.DeepEqual(resp, raft.AppendEntriesResponse{}) {
		t.Fatalf("a failed call got a response: %+v", resp)
	}

	// The next call dials again and works.
	stop := responder(t, tb, answerFor(1))
	defer stop()
	var again raft.AppendEntriesResponse
	if err := ta.AppendEntries("b", raft.ServerAddress(b.addr), &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 2, PrevLogEntry: 5}, &again); err != nil {
		t.Fatalf("after the drop: %v", err)
	}
	if !again.Success || again.Term != 3 {
		t.Fatalf("after the drop: %+v", again)
	}
	if got := a.link.Stats().Dials; got != 2 {
		t.Fatalf("dialled %d times, want 2", got)
	}
}

func TestPipeline_BrokenConnectionDeliversNoFutureAndFailsNextSend(t *testing.T) {
	a, b, ta, tb := linkedPair(t, nodeOpts{tweak: func(c *Config) { c.MaxInFlight = 8 }}, nodeOpts{})

	p, err := ta.AppendEntriesPipeline("b", raft.ServerAddress(b.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	taken := make(chan raft.RPC, 4)
	quit := make(chan struct{})
	collected := make(chan struct{})
	defer func() { close(quit); <-collected }()
	go func() {
		defer close(collected)
		for range 3 {
			select {
			case rpc := <-tb.Consumer():
				taken <- rpc
			case <-quit:
				return
			}
		}
	}()
	// The first is answered, the second is taken but answered only after
	// the drop, the third never reaches Raft.
	for i := range 3 {
		if _, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1, PrevLogEntry: uint64(i + 1)}, &raft.AppendEntriesResponse{}); err != nil {
			t.Fatal(err)
		}
	}
	first := <-taken
	first.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	f := <-p.Consumer()
	if !f.Response().Success || f.Request().PrevLogEntry != 1 {
		t.Fatalf("first future: %+v", f.Response())
	}
	second := <-taken
	a.dropLinks()
	harness.Eventually(t, "the pipeline to break", 5*time.Second, func() bool {
		_, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1, PrevLogEntry: 9}, &raft.AppendEntriesResponse{})
		return errors.Is(err, ErrConnClosed)
	})
	second.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	select {
	case f := <-p.Consumer():
		t.Fatalf("a future of a broken pipeline was delivered: request %d, response %+v, error %v", f.Request().PrevLogEntry, f.Response(), f.Error())
	case <-time.After(200 * time.Millisecond):
	}
}

// A pipeline with nothing in flight whose connection closes says so in
// Broken: a caller that skips sends (the shard's repeated commit-index
// appends) relies on it to let Raft hear of the break.
func TestPipeline_IdleConnectionLossShowsInBroken(t *testing.T) {
	a, b, ta, tb := linkedPair(t, nodeOpts{}, nodeOpts{})
	stop := responder(t, tb, func(rpc raft.RPC) (any, error) {
		return &raft.AppendEntriesResponse{Term: 1, Success: true}, nil
	})
	defer stop()

	p, err := ta.AppendEntriesPipeline("b", raft.ServerAddress(b.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1, PrevLogEntry: 1}, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	if f := <-p.Consumer(); !f.Response().Success {
		t.Fatalf("first append: %+v", f.Response())
	}
	if err := p.(*pipeline).Broken(); err != nil {
		t.Fatalf("a working pipeline says it is broken: %v", err)
	}
	a.dropLinks()
	harness.Eventually(t, "Broken to report the lost connection", 5*time.Second, func() bool {
		return errors.Is(p.(*pipeline).Broken(), ErrConnClosed)
	})
}

func TestPipeline_KeepsOrderPerRange(t *testing.T) {
	const ranges, perRange = 8, 300
	a := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.MaxInFlight = 16 }})
	b := newTestNode(t, nodeOpts{})
	defer b.close()
	defer a.close()
	var wg sync.WaitGroup
	errs := make(chan error, ranges)
	for r := uint64(1); r <= ranges; r++ {
		ta, _ := a.link.Open(r, nil)
		defer ta.Close()
		tb, _ := b.link.Open(r, nil)
		defer tb.Close()
		var mu sync.Mutex
		var seen []uint64
		stop := responder(t, tb, func(rpc raft.RPC) (any, error) {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			mu.Lock()
			seen = append(seen, req.PrevLogEntry)
			mu.Unlock()
			return &raft.AppendEntriesResponse{Term: req.Term, LastLog: req.PrevLogEntry, Success: true}, nil
		})
		defer stop()
		wg.Go(func() {
			p, err := ta.AppendEntriesPipeline("b", raft.ServerAddress(b.addr))
			if err != nil {
				errs <- err
				return
			}
			defer p.Close()
			recv := make(chan error, 1)
			go func() {
				for i := uint64(1); i <= perRange; i++ {
					f := <-p.Consumer()
					if got := f.Request().PrevLogEntry; got != i || f.Response().LastLog != i || f.Error() != nil {
						recv <- fmt.Errorf("range %d: future %d holds request %d, response %d, error %v", r, i, got, f.Response().LastLog, f.Error())
						return
					}
				}
				recv <- nil
			}()
			for i := uint64(1); i <= perRange; i++ {
				// Entries of different sizes, so small and large
				// messages interleave.
				args := &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1, PrevLogEntry: i,
					Entries: []*raft.Log{{Index: i + 1, Term: 1, Data: make([]byte, (i%7)*2000)}}}
				if _, err := p.AppendEntries(args, &raft.AppendEntriesResponse{}); err != nil {
					errs <- err
					return
				}
			}
			if err := <-recv; err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for i, got := range seen {
				if got != uint64(i+1) {
					errs <- fmt.Errorf("range %d: the follower's request %d was %d", r, i+1, got)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestLink_HeartbeatAndVoteOvertakeAStuckAppend(t *testing.T) {
	a, b, ta, tb := linkedPair(t, nodeOpts{}, nodeOpts{})
	tb.SetHeartbeatHandler(func(rpc raft.RPC) {
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	})
	// Nobody reads tb's Consumer yet: an append waits in b's lane as if
	// b's Raft were stuck on its disk.
	appendDone := make(chan error, 1)
	go func() {
		args := &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1, PrevLogEntry: 1, Entries: []*raft.Log{{Index: 2, Term: 1, Data: make([]byte, 1<<20)}}}
		appendDone <- ta.AppendEntries("b", raft.ServerAddress(b.addr), args, &raft.AppendEntriesResponse{})
	}()
	for range 5 {
		var resp raft.AppendEntriesResponse
		start := time.Now()
		if err := ta.AppendEntries("b", raft.ServerAddress(b.addr), &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1}, &resp); err != nil || !resp.Success {
			t.Fatalf("heartbeat behind a stuck append: %v %+v", err, resp)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("heartbeat took %v", d)
		}
	}
	select {
	case err := <-appendDone:
		t.Fatalf("the stuck append finished: %v", err)
	default:
	}
	// The append is answered once Raft reads again.
	stop := responder(t, tb, answerFor(1))
	defer stop()
	if err := <-appendDone; err != nil {
		t.Fatalf("the append, once Raft reads: %v", err)
	}
}

func TestLink_DeadPeerDoesNotHoldUpOthers(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	a := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.Timeout = timeout }})
	b := newTestNode(t, nodeOpts{})
	defer b.close()
	defer a.close()
	// A black hole: it accepts connections and never answers.
	hole := listenLow(t)
	var held []io.Closer
	var hmu sync.Mutex
	holeDone := make(chan struct{})
	go func() {
		defer close(holeDone)
		for {
			c, err := hole.Accept()
			if err != nil {
				return
			}
			hmu.Lock()
			held = append(held, c)
			hmu.Unlock()
		}
	}()
	defer func() {
		hole.Close()
		<-holeDone
		for _, c := range held {
			c.Close()
		}
	}()
	ta, _ := a.link.Open(1, nil)
	defer ta.Close()
	tb, _ := b.link.Open(1, nil)
	defer tb.Close()
	stop := responder(t, tb, answerFor(1))
	defer stop()

	var wg sync.WaitGroup
	holeErrs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			holeErrs <- ta.RequestVote("d", raft.ServerAddress(hole.Addr().String()), &raft.RequestVoteRequest{RPCHeader: header(a.addr), Term: 1}, &raft.RequestVoteResponse{})
		})
	}
	for i := range 20 {
		start := time.Now()
		var resp raft.RequestVoteResponse
		if err := ta.RequestVote("b", raft.ServerAddress(b.addr), &raft.RequestVoteRequest{RPCHeader: header(a.addr), Term: 1}, &resp); err != nil {
			t.Fatalf("call %d to the live peer: %v", i, err)
		}
		if d := time.Since(start); d > timeout/2 {
			t.Fatalf("call %d to the live peer took %v while another peer is dead", i, d)
		}
	}
	wg.Wait()
	close(holeErrs)
	for err := range holeErrs {
		if err == nil {
			t.Fatal("a call to a black hole succeeded")
		}
	}
}

func TestLink_FallsBackToPerRangeStreamsForAnOldPeerAndBack(t *testing.T) {
	newNode := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.ProbeInterval = 200 * time.Millisecond }})
	old := newTestNode(t, nodeOpts{old: true})
	tNew := newNode.open(1).(*RangeTransport)
	tOld := old.open(1)
	stopNew := responder(t, tNew, answerFor(1))
	stopOld := responder(t, tOld, answerFor(1))

	vote := func(from raft.Transport, to string) error {
		var resp raft.RequestVoteResponse
		if err := from.RequestVote("x", raft.ServerAddress(to), &raft.RequestVoteRequest{RPCHeader: header(to), Term: 2}, &resp); err != nil {
			return err
		}
		if resp.Term != 3 {
			return fmt.Errorf("got %+v", resp)
		}
		return nil
	}
	// New to old: the old mux closes the link's hello; the range's own
	// streams carry the call.
	if err := vote(tNew, old.addr); err != nil {
		t.Fatalf("new to old: %v", err)
	}
	if m := newNode.link.PeerMode(raft.ServerAddress(old.addr)); m != PeerLegacy {
		t.Fatalf("the old peer is %v, want legacy", m)
	}
	if st := newNode.link.Stats(); st.LegacyFallbacks != 1 || st.LegacyCalls != 1 {
		t.Fatalf("stats %+v, want one fallback and one legacy call", st)
	}
	// Old to new: the new node still accepts a range's own stream.
	if err := vote(tOld, newNode.addr); err != nil {
		t.Fatalf("old to new: %v", err)
	}

	// The old node is upgraded on the same address: after the probe
	// interval the new node finds the link there.
	stopOld()
	tOld.(*raft.NetworkTransport).Close()
	old.close()
	up := newTestNode(t, nodeOpts{listen: restartListener(t, old.addr)})
	tUp := up.open(1).(*RangeTransport)
	stopUp := responder(t, tUp, answerFor(1))
	harness.Eventually(t, "the upgraded peer to be reached over the link", 5*time.Second, func() bool {
		if err := vote(tNew, up.addr); err != nil {
			t.Logf("vote while the peer restarts: %v", err)
		}
		return newNode.link.PeerMode(raft.ServerAddress(up.addr)) == PeerLink
	})
	before := up.link.Stats().MessagesReceived
	if err := vote(tNew, up.addr); err != nil {
		t.Fatal(err)
	}
	if up.link.Stats().MessagesReceived == before {
		t.Fatal("the call after the upgrade did not travel over the link")
	}

	// And rolled back: the link breaks, the redial finds an old node.
	stopUp()
	tUp.Close()
	up.close()
	down := newTestNode(t, nodeOpts{old: true, listen: restartListener(t, old.addr)})
	tDown := down.open(1)
	stopDown := responder(t, tDown, answerFor(1))
	harness.Eventually(t, "the downgraded peer to be reached through per-range streams", 5*time.Second, func() bool {
		return vote(tNew, down.addr) == nil && newNode.link.PeerMode(raft.ServerAddress(down.addr)) == PeerLegacy
	})
	stopDown()
	tDown.(*raft.NetworkTransport).Close()
	down.close()
	stopNew()
	tNew.Close()
	newNode.close()
}

func TestLink_WithoutLegacyTransportAnOldPeerIsAnError(t *testing.T) {
	a := newTestNode(t, nodeOpts{})
	old := newTestNode(t, nodeOpts{old: true})
	defer old.close()
	defer a.close()
	ta, _ := a.link.Open(1, nil)
	defer ta.Close()
	var resp raft.RequestVoteResponse
	err := ta.RequestVote("x", raft.ServerAddress(old.addr), &raft.RequestVoteRequest{RPCHeader: header(a.addr), Term: 1}, &resp)
	if !errors.Is(err, ErrLegacyPeer) {
		t.Fatalf("err = %v, want ErrLegacyPeer", err)
	}
	if _, err := ta.AppendEntriesPipeline("x", raft.ServerAddress(old.addr)); !errors.Is(err, ErrLegacyPeer) {
		t.Fatalf("pipeline: err = %v, want ErrLegacyPeer", err)
	}
}

// A Raft instance that is shutting down drops a heartbeat without
// answering it. The sender gets an error, and the range's later
// heartbeats from the same peer are not stuck behind the dropped one.
func TestLink_UnansweredHeartbeatDoesNotStickTheLane(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tweak := func(c *Config) { c.Timeout = timeout }
	a, b, ta, tb := linkedPair(t, nodeOpts{tweak: tweak}, nodeOpts{tweak: tweak})
	var drop atomic.Bool
	drop.Store(true)
	tb.SetHeartbeatHandler(func(rpc raft.RPC) {
		if drop.Load() {
			return // as raft's processHeartbeat after shutdown
		}
		rpc.Respond(&raft.AppendEntriesResponse{Term: 1, Success: true}, nil)
	})
	hb := func() (raft.AppendEntriesResponse, error) {
		var resp raft.AppendEntriesResponse
		err := ta.AppendEntries("b", raft.ServerAddress(b.addr), &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1}, &resp)
		return resp, err
	}
	if resp, err := hb(); err == nil || resp.Success {
		t.Fatalf("an unanswered heartbeat: resp %+v, err %v; want an error and no response", resp, err)
	}
	drop.Store(false)
	// The lane answers the dropped heartbeat with an error once its time
	// is up; after that, heartbeats flow again.
	harness.Eventually(t, "heartbeats to be answered again", 5*time.Second, func() bool {
		resp, err := hb()
		return err == nil && resp.Success
	})
}

// A peer that completes the handshake and then never says a word (a
// frozen process, a network that drops everything) loses its connection
// after a timeout of silence; calls fail with errors meanwhile, and the
// next ones dial again.
func TestLink_SilentPeerIsDroppedAndRedialled(t *testing.T) {
	const timeout = 300 * time.Millisecond
	a := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.Timeout = timeout }})
	defer a.close()
	ln := listenLow(t)
	var accepted atomic.Int64
	var wg sync.WaitGroup
	var conns []net.Conn
	var cmu sync.Mutex
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			cmu.Lock()
			conns = append(conns, c)
			cmu.Unlock()
			wg.Go(func() {
				var kind [1]byte
				io.ReadFull(c, kind[:])
				mr := msgReader{r: frame.NewReader(c)}
				if _, _, err := mr.next(); err != nil {
					return
				}
				frame.NewWriter(c).WriteVec([][]byte{helloAck{version: 1}.encode()})
				io.Copy(io.Discard, c) // and never answer
			})
		}
	})
	defer func() {
		ln.Close()
		cmu.Lock()
		for _, c := range conns {
			c.Close()
		}
		cmu.Unlock()
		wg.Wait()
	}()
	ta, _ := a.link.Open(1, nil)
	defer ta.Close()
	target := raft.ServerAddress(ln.Addr().String())
	vote := func() error {
		return ta.RequestVote("x", target, &raft.RequestVoteRequest{RPCHeader: header(a.addr), Term: 1}, &raft.RequestVoteResponse{})
	}
	// The call's own timeout and the keepalive's end at about the same
	// time; either error will do.
	if err := vote(); !errors.Is(err, ErrTimeout) && !errors.Is(err, ErrConnClosed) {
		t.Fatalf("err = %v, want ErrTimeout or ErrConnClosed", err)
	}
	harness.Eventually(t, "the silent connection to be replaced", 5*time.Second, func() bool {
		if err := vote(); err == nil {
			t.Fatal("a call to a silent peer succeeded")
		}
		return accepted.Load() >= 2
	})
}

// A peer whose Raft is stuck, but whose process is alive, answers pings:
// its connection stays up even while a call times out.
func TestLink_StuckRaftKeepsItsConnection(t *testing.T) {
	const timeout = time.Second
	tweak := func(c *Config) { c.Timeout = timeout }
	a, b, ta, tb := linkedPair(t, nodeOpts{tweak: tweak}, nodeOpts{tweak: tweak})
	var stuck atomic.Bool
	stuck.Store(true)
	answered := make(chan struct{}, 1)
	stop := responder(t, tb, func(rpc raft.RPC) (any, error) {
		if stuck.Load() {
			time.Sleep(timeout * 3 / 2) // a disk that hangs for a while
			answered <- struct{}{}
		}
		return &raft.RequestVoteResponse{Term: 1, Granted: true}, nil
	})
	defer stop()
	vote := func() (raft.RequestVoteResponse, error) {
		var resp raft.RequestVoteResponse
		err := ta.RequestVote("b", raft.ServerAddress(b.addr), &raft.RequestVoteRequest{RPCHeader: header(a.addr), Term: 1}, &resp)
		return resp, err
	}
	// The caller's timeout and the peer's own (it answers an error when
	// its Raft has not answered in time) end together; either will do.
	if resp, err := vote(); err == nil || resp.Granted {
		t.Fatalf("a vote the peer's Raft sits on: %+v, %v; want an error", resp, err)
	}
	<-answered
	stuck.Store(false)
	if resp, err := vote(); err != nil || !resp.Granted {
		t.Fatalf("once the peer's Raft is back: %+v, %v", resp, err)
	}
	if st := a.link.Stats(); st.Dials != 1 {
		t.Fatalf("dialled %d times, want 1: a live peer's connection must survive its stuck Raft", st.Dials)
	}
}

// Closing a Link fails every call in flight on it with an error, and once
// the ranges and Links are closed nothing of theirs keeps running: no
// lane, pipeline, writer, reader or keepalive.
func TestLink_CloseFailsCallsInFlightAndLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.MaxInFlight = 4 }})
	b := newTestNode(t, nodeOpts{})
	ta, _ := a.link.Open(1, nil)
	tb, _ := b.link.Open(1, nil) // nobody reads its Consumer: b's lanes stay busy
	tb.SetHeartbeatHandler(func(raft.RPC) {})

	p, err := ta.AppendEntriesPipeline("b", raft.ServerAddress(b.addr))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := p.AppendEntries(&raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1, PrevLogEntry: uint64(i + 1)}, &raft.AppendEntriesResponse{}); err != nil {
			t.Fatal(err)
		}
	}
	errc := make(chan error, 2)
	go func() {
		errc <- ta.RequestVote("b", raft.ServerAddress(b.addr), &raft.RequestVoteRequest{RPCHeader: header(a.addr), Term: 1}, &raft.RequestVoteResponse{})
	}()
	go func() {
		errc <- ta.AppendEntries("b", raft.ServerAddress(b.addr), &raft.AppendEntriesRequest{RPCHeader: header(a.addr), Term: 1}, &raft.AppendEntriesResponse{})
	}()
	harness.Eventually(t, "b to hold the calls in its lanes", 5*time.Second, func() bool {
		return b.link.Stats().MessagesReceived >= 5
	})
	start := time.Now()
	a.link.Close()
	for range 2 {
		if err := <-errc; err == nil {
			t.Fatal("a call in flight when its Link closed succeeded")
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("calls in flight took %v to fail after Close", d)
	}
	p.Close()
	ta.Close()
	tb.Close()
	a.close()
	b.close()
}
