package link

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Leadership confirmation, link version 2.
//
// A linearizable read on a range's leader needs proof that no later
// leader was elected before the read arrived. raft.VerifyLeader gets it
// with a round of heartbeats, one per follower and range, each handed
// through the leader's loop, a replication goroutine, the follower's lane
// and its Raft; with sixteen ranges led by a node those rounds were a
// third of its CPU under reads (docs/performance.md, session 18). Here a
// node asks each peer once for every range it is confirming at the
// moment, "is your replica of range R in term T, following me?", and the
// peer answers from its replicas' state at once, on the connection's
// reader.
//
// Why a yes proves as much as a heartbeat's success: a replica answers
// yes only while its current term is T, and hashicorp/raft moves a
// replica to a later term (persisting it) before it grants a vote in that
// term. A later leader needs votes from a quorum, which shares a member
// with any quorum that said yes; that member voted after its yes, and its
// yes came after the read arrived (the question left after). So any later
// leader was elected after the read arrived, and nothing it commits was
// acknowledged before.

// maxQuestions bounds the questions of one request (and what a receiver
// accepts): one round of a node leading thousands of ranges fits.
const maxQuestions = 1 << 14

// errNoConfirm is a peer's link that predates version 2.
var errNoConfirm = errors.New("link: the peer's link version has no leadership confirmation")

// question is one range's round. It is asked of need peers first, the
// ones most likely to answer at once; each no (or failure) brings in the
// next, so it is decided by need yes answers, or as soon as they can no
// longer come. Asking only as many as needed halves the link's writes for
// reads in a group of three: one follower's yes, with the leader's own,
// is a quorum.
type question struct {
	rangeID, term uint64
	need          int
	done          chan bool // buffered: the decision, sent once
	l             *Link

	mu      sync.Mutex
	yes     int
	out     int                  // peers asked that have not answered
	rest    []raft.ServerAddress // peers not asked yet, best first
	decided bool
}

func (q *question) answer(yes bool) {
	q.mu.Lock()
	if q.decided {
		q.mu.Unlock()
		return
	}
	q.out--
	if yes {
		q.yes++
	}
	var next []raft.ServerAddress
	switch {
	case q.yes >= q.need:
		q.decided = true
		q.done <- true
	case q.yes+q.out+len(q.rest) < q.need:
		q.decided = true
		q.done <- false
	case q.yes+q.out < q.need:
		n := q.need - q.yes - q.out
		next, q.rest = q.rest[:n:n], q.rest[n:]
		q.out += n
	}
	q.mu.Unlock()
	for _, addr := range next {
		q.l.peer(string(addr)).ask(q)
	}
}

// asker batches the questions for one peer: while a request is out, the
// questions that come meanwhile wait to go together in the next.
type asker struct {
	mu      sync.Mutex
	pending []*question
	running bool
	sentAt  time.Time // when the request out now left; zero when none is
}

// hedgeAfter is how long a request may be out before a peer counts as
// slow: new questions go to another peer first.
const hedgeAfter = 20 * time.Millisecond

// ConfirmLeadership asks peers whether their replicas of the range are in
// term and follow this node, and reports true once need of them said yes,
// false once that can no longer happen. A peer that cannot be asked (no
// link connection open to it, a release before link version 2, a broken
// connection, no answer within Config.Timeout) counts as a no: the caller
// then falls back to raft.VerifyLeader. ctx ends the wait, not the
// questions, which are shared with other ranges' and end with their
// request.
func (t *RangeTransport) ConfirmLeadership(ctx context.Context, term uint64, peers []raft.ServerAddress, need int) (bool, error) {
	switch {
	case need <= 0:
		return true, nil
	case len(peers) < need:
		return false, nil
	case t.isClosed():
		return false, raft.ErrTransportShutdown
	}
	order := t.l.askOrder(peers)
	q := &question{rangeID: t.id, term: term, need: need, done: make(chan bool, 1), l: t.l, out: need, rest: order[need:]}
	for _, addr := range order[:need] {
		t.l.peer(string(addr)).ask(q)
	}
	select {
	case ok := <-q.done:
		return ok, nil
	case <-ctx.Done():
		q.abandon()
		return false, ctx.Err()
	case <-t.done:
		q.abandon()
		return false, raft.ErrTransportShutdown
	}
}

// abandon decides q for nobody: answers still to come bring in no
// further peers.
func (q *question) abandon() {
	q.mu.Lock()
	q.decided = true
	q.mu.Unlock()
}

// askOrder returns peers in the order to ask them: those that can answer
// at once (a connection of version 2 open, no request out for longer than
// hedgeAfter) first; within each kind, a fixed order rotated by this
// node's address, so that every range of the node asks the same peer (one
// request carries them all) and different nodes ask different peers.
func (l *Link) askOrder(peers []raft.ServerAddress) []raft.ServerAddress {
	order := slices.Clone(peers)
	slices.Sort(order)
	k := int(l.askSeed % uint32(len(order)))
	order = append(order[k:], order[:k]...)
	ready := make([]bool, len(order))
	for i, a := range order {
		ready[i] = l.peer(string(a)).ready()
	}
	out := make([]raft.ServerAddress, 0, len(order))
	for _, want := range []bool{true, false} {
		for i, a := range order {
			if ready[i] == want {
				out = append(out, a)
			}
		}
	}
	return out
}

// ready reports whether the peer can answer a question at once.
func (p *peer) ready() bool {
	p.mu.Lock()
	cc := p.mu.cc
	p.mu.Unlock()
	if cc == nil || cc.closed() || cc.version < versionConfirm {
		return false
	}
	p.asks.mu.Lock()
	defer p.asks.mu.Unlock()
	return p.asks.sentAt.IsZero() || time.Since(p.asks.sentAt) < hedgeAfter
}

// SetLeadershipCheck sets how this node answers a peer's question about
// the range: fn reports whether the local replica is in term and follows
// leader (the asking node's address). It runs on a connection's reader,
// so it must not block. With none set, every answer is no.
func (t *RangeTransport) SetLeadershipCheck(fn func(leader raft.ServerAddress, term uint64) bool) {
	t.followsFn.Store(&fn)
}

func (t *RangeTransport) follows(leader raft.ServerAddress, term uint64) bool {
	if t.isClosed() {
		return false
	}
	fn := t.followsFn.Load()
	return fn != nil && (*fn)(leader, term)
}

// ask queues q for this peer, starting the peer's asking goroutine if
// none runs.
func (p *peer) ask(q *question) {
	p.asks.mu.Lock()
	p.asks.pending = append(p.asks.pending, q)
	if p.asks.running {
		p.asks.mu.Unlock()
		return
	}
	p.asks.running = true
	p.asks.mu.Unlock()
	if !p.l.spawn(p.askLoop) {
		p.failAsks() // the Link is closed
	}
}

func (p *peer) failAsks() {
	p.asks.mu.Lock()
	batch := p.asks.pending
	p.asks.pending, p.asks.running = nil, false
	p.asks.mu.Unlock()
	for _, q := range batch {
		q.answer(false)
	}
}

// askLoop sends what is pending, one request at a time, until nothing is.
func (p *peer) askLoop() {
	for {
		// Let the ranges whose rounds are starting now ask first: one
		// request for all of them is the point.
		runtime.Gosched()
		p.asks.mu.Lock()
		batch := p.asks.pending
		if len(batch) > maxQuestions {
			batch = batch[:maxQuestions:maxQuestions]
			p.asks.pending = p.asks.pending[maxQuestions:]
		} else {
			p.asks.pending = nil
		}
		if len(batch) == 0 {
			p.asks.running = false
			p.asks.mu.Unlock()
			return
		}
		p.asks.sentAt = time.Now()
		p.asks.mu.Unlock()
		answers, err := p.confirm(batch)
		p.asks.mu.Lock()
		p.asks.sentAt = time.Time{}
		p.asks.mu.Unlock()
		if err != nil {
			p.l.log.Debug("link: leadership questions unanswered", "peer", p.addr, "questions", len(batch), "err", err)
		}
		for i, q := range batch {
			q.answer(err == nil && answers[i] == 1)
		}
	}
}

// confirm sends one request of questions on the peer's connection and
// returns one answer byte per question. It never dials: a leader's Raft
// traffic keeps the connection to each follower open, and a peer without
// one is not a quick yes.
func (p *peer) confirm(batch []*question) ([]byte, error) {
	p.mu.Lock()
	cc := p.mu.cc
	p.mu.Unlock()
	if cc == nil || cc.closed() {
		return nil, fmt.Errorf("link: no connection to %s to ask on", p.addr)
	}
	timer := time.NewTimer(p.l.cfg.Timeout)
	defer timer.Stop()
	if cc.version < versionConfirm {
		return nil, fmt.Errorf("%w: %s chose version %d", errNoConfirm, p.addr, cc.version)
	}
	body := binary.AppendUvarint(make([]byte, 0, 1+len(batch)*8), uint64(len(batch)))
	for _, q := range batch {
		body = binary.AppendUvarint(body, q.rangeID)
		body = binary.AppendUvarint(body, q.term)
	}
	var answers rawBody
	if err := cc.call(0, rpcConfirmLeader, rawBody(body), &answers, false, 0, timer.C, p.l.done); err != nil {
		return nil, err
	}
	if len(answers) != len(batch) {
		err := fmt.Errorf("%w: %d answers to %d leadership questions", errProtocol, len(answers), len(batch))
		cc.close(err)
		return nil, err
	}
	p.l.st.confirmRequests.Add(1)
	p.l.st.confirmQuestions.Add(uint64(len(batch)))
	return answers, nil
}

type leaderQuestion struct{ rangeID, term uint64 }

func parseQuestions(b []byte) ([]leaderQuestion, error) {
	n, k := binary.Uvarint(b)
	// Each question takes at least two bytes.
	if k <= 0 || n > maxQuestions || n > uint64(len(b)-k)/2 {
		return nil, fmt.Errorf("%w: leadership questions: bad count", errProtocol)
	}
	b = b[k:]
	qs := make([]leaderQuestion, n)
	for i := range qs {
		r, k1 := binary.Uvarint(b)
		if k1 <= 0 {
			return nil, fmt.Errorf("%w: leadership question %d: range id", errProtocol, i)
		}
		t, k2 := binary.Uvarint(b[k1:])
		if k2 <= 0 {
			return nil, fmt.Errorf("%w: leadership question %d: term", errProtocol, i)
		}
		qs[i] = leaderQuestion{rangeID: r, term: t}
		b = b[k1+k2:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: leadership questions: %d bytes after the last", errProtocol, len(b))
	}
	return qs, nil
}

// answerConfirm answers a peer's leadership questions on the reader: each
// is a few loads of the replica's state.
func (s *serverConn) answerConfirm(req request) {
	qs, err := parseQuestions(req.body)
	if err != nil {
		s.reply(s.l.msgs.newStatus(req.id, statusError, err.Error()))
		return
	}
	answers := make([]byte, len(qs))
	leader := raft.ServerAddress(s.remote)
	for i, q := range qs {
		if t := s.l.rangeTransport(q.rangeID); t != nil && t.follows(leader, q.term) {
			answers[i] = 1
		}
	}
	s.reply(s.l.msgs.newRawResponse(req.id, answers))
}
