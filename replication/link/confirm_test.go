package link

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// checkRecorder is a peer's leadership check that answers as told and
// records what it was asked.
type checkRecorder struct {
	mu      sync.Mutex
	yes     bool
	leaders []raft.ServerAddress
	terms   []uint64
}

func (c *checkRecorder) check(leader raft.ServerAddress, term uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.leaders = append(c.leaders, leader)
	c.terms = append(c.terms, term)
	return c.yes
}

func (c *checkRecorder) asked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.terms)
}

func openRange(t *testing.T, n *testNode, id uint64) *RangeTransport {
	t.Helper()
	tr, err := n.link.Open(id, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// connect opens from's link connection to to (or finds it open), as the
// Raft traffic of a leader to its followers does: questions go only on an
// open one.
func connect(t *testing.T, from *testNode, to string) *clientConn {
	t.Helper()
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	cc, err := from.link.peer(to).get(timer.C, false)
	if err != nil {
		t.Fatalf("dial %s: %v", to, err)
	}
	return cc
}

func confirm(t *testing.T, tr *RangeTransport, term uint64, peers []raft.ServerAddress, need int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ok, err := tr.ConfirmLeadership(ctx, term, peers, need)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// The answer is the peers' checks', asked with the asking node's address
// and the term, and decided by the quorum the caller needs.
func TestConfirm_PeersChecksDecide(t *testing.T) {
	tests := []struct {
		name     string
		yes1     bool
		yes2     bool
		need     int
		want     bool
		wantAsks bool
	}{
		{"both yes, both needed", true, true, 2, true, true},
		{"one yes, one needed", true, false, 1, true, true},
		{"one yes, both needed", false, true, 2, false, true},
		{"no yes", false, false, 1, false, true},
		{"nobody needed (one voter)", false, false, 0, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leader, p1, p2 := newTestNode(t, nodeOpts{}), newTestNode(t, nodeOpts{}), newTestNode(t, nodeOpts{})
			for _, n := range []*testNode{leader, p1, p2} {
				t.Cleanup(n.close)
			}
			tl := openRange(t, leader, 5)
			c1, c2 := &checkRecorder{yes: tt.yes1}, &checkRecorder{yes: tt.yes2}
			openRange(t, p1, 5).SetLeadershipCheck(c1.check)
			openRange(t, p2, 5).SetLeadershipCheck(c2.check)
			connect(t, leader, p1.addr)
			connect(t, leader, p2.addr)

			got := confirm(t, tl, 9, []raft.ServerAddress{raft.ServerAddress(p1.addr), raft.ServerAddress(p2.addr)}, tt.need)
			if got != tt.want {
				t.Fatalf("confirmed %v, want %v", got, tt.want)
			}
			if asked := c1.asked() + c2.asked(); (asked > 0) != tt.wantAsks {
				t.Fatalf("the peers were asked %d times; want asked: %v", asked, tt.wantAsks)
			}
			for _, c := range []*checkRecorder{c1, c2} {
				c.mu.Lock()
				for i := range c.terms {
					if c.leaders[i] != raft.ServerAddress(leader.addr) || c.terms[i] != 9 {
						t.Errorf("asked about leader %s in term %d, want %s in term 9", c.leaders[i], c.terms[i], leader.addr)
					}
				}
				c.mu.Unlock()
			}
		})
	}
}

// A peer that cannot say yes is a no: the range not open there, no check
// set, a link of the release before questions, or no peer at all at the
// address. None of them holds up the answer a live peer gives.
func TestConfirm_PeersThatCannotAnswerAreNo(t *testing.T) {
	leader := newTestNode(t, nodeOpts{})
	t.Cleanup(leader.close)
	tl := openRange(t, leader, 5)
	yes := &checkRecorder{yes: true}

	notOpen := newTestNode(t, nodeOpts{})
	t.Cleanup(notOpen.close)
	openRange(t, notOpen, 6).SetLeadershipCheck(yes.check)

	noCheck := newTestNode(t, nodeOpts{})
	t.Cleanup(noCheck.close)
	openRange(t, noCheck, 5)

	v1 := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.maxVersion = 1 }})
	t.Cleanup(v1.close)
	tv1 := openRange(t, v1, 5)
	tv1.SetLeadershipCheck(yes.check)

	gone := listenLow(t)
	goneAddr := gone.Addr().String()
	gone.Close()

	live := newTestNode(t, nodeOpts{})
	t.Cleanup(live.close)
	openRange(t, live, 5).SetLeadershipCheck((&checkRecorder{yes: true}).check)

	notDialled := newTestNode(t, nodeOpts{})
	t.Cleanup(notDialled.close)
	openRange(t, notDialled, 5).SetLeadershipCheck(yes.check)
	for _, n := range []*testNode{notOpen, noCheck, v1, live} {
		connect(t, leader, n.addr)
	}

	for _, p := range []struct {
		name string
		addr string
	}{{"range not open", notOpen.addr}, {"no check", noCheck.addr}, {"link version 1", v1.addr}, {"nobody there", goneAddr}, {"no connection open", notDialled.addr}} {
		if confirm(t, tl, 3, []raft.ServerAddress{raft.ServerAddress(p.addr)}, 1) {
			t.Errorf("%s: confirmed", p.name)
		}
		if !confirm(t, tl, 3, []raft.ServerAddress{raft.ServerAddress(p.addr), raft.ServerAddress(live.addr)}, 1) {
			t.Errorf("%s: a live peer's yes was not enough beside it", p.name)
		}
	}
	if n := yes.asked(); n != 0 {
		t.Fatalf("a peer that cannot answer had its check run %d times", n)
	}
	// The version 1 link still carries Raft's messages.
	stop := responder(t, tv1, answerFor(5))
	defer stop()
	var resp raft.RequestVoteResponse
	if err := tl.RequestVote("v1", raft.ServerAddress(v1.addr), &raft.RequestVoteRequest{RPCHeader: header(leader.addr), Term: 1}, &resp); err != nil {
		t.Fatalf("a vote over the version 1 link: %v", err)
	}
	if mode := leader.link.PeerMode(raft.ServerAddress(v1.addr)); mode != PeerLink {
		t.Fatalf("the version 1 peer is reached by %v, want the link", mode)
	}
}

// Questions asked while a request is out wait and go together in the
// next: many ranges, two requests.
func TestConfirm_QuestionsOfManyRangesShareARequest(t *testing.T) {
	const ranges = 20
	leader, peer := newTestNode(t, nodeOpts{}), newTestNode(t, nodeOpts{})
	t.Cleanup(leader.close)
	t.Cleanup(peer.close)
	first, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	trs := make([]*RangeTransport, ranges)
	for i := range trs {
		trs[i] = openRange(t, leader, uint64(i+1))
		openRange(t, peer, uint64(i+1)).SetLeadershipCheck(func(raft.ServerAddress, uint64) bool {
			// The first question holds the peer's reader (and so the
			// first request's answer) until the others are queued.
			once.Do(func() { close(first); <-release })
			return true
		})
	}
	connect(t, leader, peer.addr)
	peers := []raft.ServerAddress{raft.ServerAddress(peer.addr)}
	results := make(chan bool, ranges)
	go func() { results <- confirm(t, trs[0], 1, peers, 1) }()
	<-first
	for _, tr := range trs[1:] {
		go func() { results <- confirm(t, tr, 1, peers, 1) }()
	}
	p := leader.link.peer(peer.addr)
	deadline := time.Now().Add(10 * time.Second)
	for {
		p.asks.mu.Lock()
		queued := len(p.asks.pending)
		p.asks.mu.Unlock()
		if queued == ranges-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d questions queued after 10s", queued, ranges-1)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	for range ranges {
		if !<-results {
			t.Fatal("a range was not confirmed")
		}
	}
	st := leader.link.Stats()
	if st.ConfirmRequests != 2 || st.ConfirmQuestions != ranges {
		t.Fatalf("%d requests carried %d questions; want 2 and %d", st.ConfirmRequests, st.ConfirmQuestions, ranges)
	}
}

func TestParseQuestions(t *testing.T) {
	valid := binary.AppendUvarint(nil, 2)
	for _, v := range []uint64{7, 3, 1 << 40, 1<<64 - 1} {
		valid = binary.AppendUvarint(valid, v)
	}
	tests := []struct {
		name string
		body []byte
		want []leaderQuestion
	}{
		{"two questions", valid, []leaderQuestion{{7, 3}, {1 << 40, 1<<64 - 1}}},
		{"none", binary.AppendUvarint(nil, 0), []leaderQuestion{}},
		{"empty", nil, nil},
		{"count past the body", binary.AppendUvarint(nil, 3), nil},
		{"count past the limit", binary.AppendUvarint(make([]byte, 0), maxQuestions+1), nil},
		{"truncated term", valid[:len(valid)-1], nil},
		{"bytes after the last", append(append([]byte{}, valid...), 0), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseQuestions(tt.body)
			if tt.want == nil {
				if !errors.Is(err, errProtocol) {
					t.Fatalf("err = %v, want a protocol error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("%v, want %v", got, tt.want)
				}
			}
		})
	}
}

// A peer that does not answer holds up only the waits that gave up on
// it: the caller's context ends its wait, and a connection of version 1
// refuses a question sent on it anyway with an error, never an answer.
func TestConfirm_SilentPeerEndsWithTheCallersContext(t *testing.T) {
	leader, peer := newTestNode(t, nodeOpts{}), newTestNode(t, nodeOpts{})
	t.Cleanup(leader.close)
	t.Cleanup(peer.close)
	tl := openRange(t, leader, 5)
	release := make(chan struct{})
	openRange(t, peer, 5).SetLeadershipCheck(func(raft.ServerAddress, uint64) bool { <-release; return true })
	connect(t, leader, peer.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ok, err := tl.ConfirmLeadership(ctx, 1, []raft.ServerAddress{raft.ServerAddress(peer.addr)}, 1)
	close(release)
	if ok || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("confirmed %v, err %v; want false and the context's deadline", ok, err)
	}

	v1 := newTestNode(t, nodeOpts{tweak: func(c *Config) { c.maxVersion = 1 }})
	t.Cleanup(v1.close)
	openRange(t, v1, 5).SetLeadershipCheck(func(raft.ServerAddress, uint64) bool { return true })
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	cc, err := leader.link.peer(v1.addr).get(timer.C, false)
	if err != nil {
		t.Fatal(err)
	}
	var answers rawBody
	body := binary.AppendUvarint(binary.AppendUvarint(binary.AppendUvarint(nil, 1), 5), 1)
	err = cc.call(0, rpcConfirmLeader, rawBody(body), &answers, false, 0, timer.C, nil)
	if err == nil || len(answers) != 0 {
		t.Fatalf("a version 1 connection answered a question: %v, err %v", answers, err)
	}
}

// Only as many peers as the quorum needs are asked, the same one for
// every range of the node; a no brings in the next.
func TestConfirm_AsksOnlyAsManyPeersAsNeeded(t *testing.T) {
	leader, p1, p2 := newTestNode(t, nodeOpts{}), newTestNode(t, nodeOpts{}), newTestNode(t, nodeOpts{})
	for _, n := range []*testNode{leader, p1, p2} {
		t.Cleanup(n.close)
	}
	const ranges = 4
	c1, c2 := &checkRecorder{yes: true}, &checkRecorder{yes: true}
	trs := make([]*RangeTransport, ranges)
	for i := range trs {
		trs[i] = openRange(t, leader, uint64(i+1))
		openRange(t, p1, uint64(i+1)).SetLeadershipCheck(c1.check)
		openRange(t, p2, uint64(i+1)).SetLeadershipCheck(c2.check)
	}
	connect(t, leader, p1.addr)
	connect(t, leader, p2.addr)
	peers := []raft.ServerAddress{raft.ServerAddress(p1.addr), raft.ServerAddress(p2.addr)}
	for _, tr := range trs {
		if !confirm(t, tr, 4, peers, 1) {
			t.Fatal("not confirmed")
		}
	}
	if c1.asked()+c2.asked() != ranges || (c1.asked() != 0 && c2.asked() != 0) {
		t.Fatalf("asked %d and %d times; want %d questions, all to one peer", c1.asked(), c2.asked(), ranges)
	}
	first, second := c1, c2
	if c2.asked() > 0 {
		first, second = c2, c1
	}
	first.mu.Lock()
	first.yes = false
	first.mu.Unlock()
	if !confirm(t, trs[0], 4, peers, 1) {
		t.Fatal("the second peer's yes did not confirm after the first said no")
	}
	if second.asked() != 1 {
		t.Fatalf("the second peer was asked %d times after the first said no, want 1", second.asked())
	}
}

// A question decides once: by need yes answers, by too many no answers
// with no peer left to ask, or by its asker giving up; a no while peers
// are left brings in the next one, unless the question was abandoned.
func TestQuestion_Answers(t *testing.T) {
	l := newTestNode(t, nodeOpts{})
	t.Cleanup(l.close)
	tests := []struct {
		name     string
		need     int
		peers    int // asked first: need; the rest wait
		answers  []bool
		abandon  bool
		want     *bool
		wantOut  int
		wantRest int
	}{
		{"one yes of one needed", 1, 2, []bool{true}, false, ptr(true), 0, 1},
		{"a no brings in the next", 1, 2, []bool{false}, false, nil, 1, 0},
		{"then its yes decides", 1, 2, []bool{false, true}, false, ptr(true), 0, 0},
		{"no peer left", 1, 2, []bool{false, false}, false, ptr(false), 0, 0},
		{"two of four, one no", 2, 4, []bool{true, false}, false, nil, 1, 1},
		{"abandoned: a no asks nobody", 1, 2, []bool{false}, true, nil, 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The peers left wait behind a request "out" (their asker
			// marked running), so a question brought in stays queued.
			const waiting = "127.0.0.1:1"
			p := l.link.peer(waiting)
			p.asks.mu.Lock()
			p.asks.running, p.asks.pending = true, nil
			p.asks.mu.Unlock()
			defer func() {
				p.asks.mu.Lock()
				p.asks.running, p.asks.pending = false, nil
				p.asks.mu.Unlock()
			}()
			var rest []raft.ServerAddress
			for range tt.peers - tt.need {
				rest = append(rest, waiting)
			}
			q := &question{need: tt.need, done: make(chan bool, 1), l: l.link, out: tt.need, rest: rest}
			if tt.abandon {
				q.abandon()
			}
			for _, a := range tt.answers {
				q.mu.Lock()
				decided := q.decided
				q.mu.Unlock()
				if decided && !tt.abandon {
					break
				}
				q.answer(a)
			}
			q.mu.Lock()
			out, left := q.out, len(q.rest)
			q.mu.Unlock()
			p.asks.mu.Lock()
			queued := len(p.asks.pending)
			p.asks.mu.Unlock()
			if queued != tt.peers-tt.need-left {
				t.Fatalf("%d questions queued for the peers left, want %d", queued, tt.peers-tt.need-left)
			}
			if tt.want == nil {
				select {
				case got := <-q.done:
					t.Fatalf("decided %v, want undecided", got)
				default:
				}
				if tt.abandon && (out != tt.wantOut || left != tt.wantRest) {
					t.Fatalf("abandoned question moved on: %d out, %d left", out, left)
				}
				if !tt.abandon && (out != tt.wantOut || left != tt.wantRest) {
					t.Fatalf("%d out and %d left, want %d and %d", out, left, tt.wantOut, tt.wantRest)
				}
				return
			}
			if got := <-q.done; got != *tt.want {
				t.Fatalf("decided %v, want %v", got, *tt.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }
