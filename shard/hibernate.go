package shard

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dialkv/dialkv/raftstore"
	"github.com/hashicorp/raft"
)

// Hibernation. hashicorp/raft heartbeats every group on its own and sends
// each follower an append every CommitTimeout even when nothing changes,
// so an idle range costs about as much CPU as a busy one's bookkeeping:
// measured here, 100 idle ranges took 41% of a core per node. A range
// idle for HibernateAfter therefore puts its Raft instance to sleep:
//
//  1. Its leader, with everything applied and no member being caught up,
//     appends an OpHibernate entry.
//  2. Each replica that applies it, with nothing after it in its log,
//     shuts its Raft instance down: the leader once its followers have
//     surely been told the entry committed (an append carries the commit
//     index at most 2*CommitTimeout later), a follower 300 ms after that,
//     so that the leader is silent before its followers sleep and a
//     follower is asleep long before it would miss a heartbeat and start
//     an election (Timing.Validate keeps CommitTimeout small enough).
//  3. The state machine and the log stay open: stale reads are still
//     served. Anything that needs Raft (a write, a read-index, a
//     membership change, a bounded read) wakes the replica, and so does
//     any Raft message for the range: the transport wrapper below starts
//     a new instance before handing the message over. A woken replica
//     starts as a follower; its first election wakes the others.
//
// Waking costs one election. The replica that led when the range went to
// sleep stands at once when a request wakes it (see campaign); woken any
// other way, a replica waits out its heartbeat timeout first (1-2 s with
// the default timing). A replica
// that missed the OpHibernate (it was lagging or down) stays awake, and
// its election wakes the rest: the range then stays awake until the next
// idle period. None of this touches Raft's safety: a sleeping replica is a
// stopped one, and a restart is something Raft always allows.

// sleepDelays returns how long after applying the hibernation entry the
// leader and a follower stop their instances: the leader after 2*commit
// (the latest its followers hear of the commit) plus a margin, at least
// 150 ms; a follower 300 ms after the leader.
func sleepDelays(commit time.Duration) (leader, follower time.Duration) {
	leader = max(150*time.Millisecond, 2*commit+50*time.Millisecond)
	return leader, leader + 300*time.Millisecond
}

// instance is one run of the range's Raft: hibernation stops it and waking
// starts another on the same log, stores and transport.
type instance struct {
	raft     *raft.Raft
	observer *raft.Observer
	stop     chan struct{} // closed when the instance starts to stop
	// stopped is closed once Raft has shut down: nothing this instance
	// took in can be appended after that.
	stopped chan struct{}
	wg      sync.WaitGroup
}

// Asleep reports whether the replica is hibernating.
func (s *Shard) Asleep() bool { return s.asleep.Load() }

// Sleeping reports, for a hibernating replica, the range's voters and its
// leader when it went to sleep, and which sleep of this replica that was;
// ok is false when the replica is awake, or sleeps without having applied
// its whole log (an append slipped in as it stopped, or a restart
// failed): only a replica that had applied all it held can vouch for
// what its range holds.
func (s *Shard) Sleeping() (voters []string, leader string, epoch uint64, ok bool) {
	info := s.slept.Load()
	if info == nil || !s.asleep.Load() {
		return nil, "", 0, false
	}
	return info.voters, info.leader, info.epoch, true
}

// sleepInfo is what Sleeping reports of one sleep.
type sleepInfo struct {
	voters []string
	leader string
	epoch  uint64
}

// touch records a request that needed Raft: the range is not idle.
func (s *Shard) touch() { s.lastActive.Store(time.Now().UnixNano()) }

// active wakes the replica if it sleeps and returns its Raft instance.
func (s *Shard) active() *raft.Raft { return s.activeInst().raft }

// activeInst is active's instance, for waits that must end when it stops
// (hibernation, removal or shutdown).
func (s *Shard) activeInst() *instance {
	s.touch()
	if s.asleep.Load() {
		s.Wake()
	}
	return s.inst.Load()
}

// Wake starts the replica's Raft instance again if it is hibernating, for
// a request that needs Raft. It returns once the instance runs. A replica
// that was the leader when the range went to sleep stands for election at
// once; any other starts as a follower, and its next ForwardTarget names
// the old leader, so that forwarding wakes that one the same way.
func (s *Shard) Wake() { s.wake(true) }

// wake is Wake; campaign false is for a Raft message, which means another
// replica is awake already: standing at once would only disrupt it.
func (s *Shard) wake(campaign bool) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.closed || !s.asleep.Load() {
		return
	}
	if s.startErr != nil && time.Since(s.startErrAt) < startRetry {
		return
	}
	s.touch()
	if err := s.startInstance(); err != nil {
		s.log.Error("could not wake the range's Raft instance", "err", err)
		return
	}
	s.asleep.Store(false)
	s.slept.Store(nil)
	led := s.sleepLeader
	s.sleepLeader = leaderHint{}
	if self := string(s.rc.LocalID); led.id != self {
		if campaign && led.addr != "" {
			s.wakeHint.Store(&led)
		}
		campaign = false
	}
	s.log.Info("woke up", "campaign", campaign)
	if campaign {
		go s.campaign(s.inst.Load())
	}
}

// leaderHint names a replica believed to lead (or to have led) the range.
type leaderHint struct{ id, addr string }

// campaign makes a freshly woken instance stand for election now instead
// of after its first heartbeat timeout (1-2 s with the default timing),
// the wait that made up most of a wake. hashicorp/raft has no call for
// it, so the instance is handed the TimeoutNow message a leader sends in a
// leadership transfer, as if its old self had sent it. Every replica slept
// at the same index, so this one's log is as long as any, and the others,
// woken by its vote request, elect it. Elections are always safe; the cost
// of a wrong guess (another replica woke and leads already) is one more
// election.
func (s *Shard) campaign(inst *instance) {
	rpc := raft.RPC{
		Command: &raft.TimeoutNowRequest{RPCHeader: raft.RPCHeader{
			ProtocolVersion: raft.ProtocolVersionMax,
			ID:              []byte(s.rc.LocalID),
			Addr:            []byte(s.trans.LocalAddr()),
		}},
		RespChan: make(chan raft.RPCResponse, 1),
	}
	select {
	case s.trans.consumer <- rpc:
	case <-inst.stop:
	case <-s.trans.done:
	}
}

// MaybeHibernate proposes hibernation when this replica leads a range that
// has been idle for HibernateAfter. The node calls it periodically.
func (s *Shard) MaybeHibernate() {
	if d := s.Descriptor(); s.hibernateAfter <= 0 || s.asleep.Load() || d.IsMeta() {
		return
	}
	r := s.r()
	if r.State() != raft.Leader || time.Since(time.Unix(0, s.lastActive.Load())) < s.hibernateAfter {
		return
	}
	if s.fsm.AppliedIndex() != r.LastIndex() || s.fsm.MarkerTerm() != r.CurrentTerm() {
		return // entries in flight, or this leader is not ready yet
	}
	f := r.GetConfiguration()
	if f.Error() != nil {
		return
	}
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage != raft.Voter {
			return // a member is being added: it needs the log
		}
	}
	if !s.compactMu.TryLock() {
		return
	}
	defer s.compactMu.Unlock()
	// Count the proposal as activity, so that a refused sleep is retried
	// after another idle period, not every tick. The entry's outcome is
	// not awaited: applying it is what puts the replicas to sleep.
	s.touch()
	cmd := raftstore.Command{Op: raftstore.OpHibernate}
	r.Apply(cmd.Encode(nil), time.Second)
}

// hibernateApplied runs on the FSM goroutine when an OpHibernate entry is
// applied: it schedules the sleep.
func (s *Shard) hibernateApplied(index uint64) {
	at := time.Now()
	leaderDelay, delay := sleepDelays(s.rc.CommitTimeout)
	if s.r().State() == raft.Leader {
		delay = leaderDelay
	}
	time.AfterFunc(delay, func() { s.sleep(index, at) })
}

// sleep stops the Raft instance if nothing has happened since the
// hibernation entry at index was applied (at).
func (s *Shard) sleep(index uint64, at time.Time) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.closed || s.asleep.Load() {
		return
	}
	inst := s.inst.Load()
	if s.fsm.AppliedIndex() != index || inst.raft.LastIndex() != index || s.lastActive.Load() > at.UnixNano() {
		return
	}
	cfgKnown := false
	if f := inst.raft.GetConfiguration(); f.Error() == nil {
		s.sleepConfig, cfgKnown = f.Configuration().Servers, true
	}
	a, id := inst.raft.LeaderWithID()
	s.sleepLeader = leaderHint{id: string(id), addr: string(a)}
	// Heartbeats go through the consumer from now on: a handler of a
	// stopped instance would never answer them.
	s.trans.setHeartbeatHandler(nil)
	s.stopInstance(inst)
	s.sleeps++
	if last, err := s.rlog.LastIndex(); err == nil && last == index && cfgKnown {
		info := &sleepInfo{leader: s.sleepLeader.id, epoch: s.sleeps}
		for _, srv := range s.sleepConfig {
			if srv.Suffrage == raft.Voter {
				info.voters = append(info.voters, string(srv.ID))
			}
		}
		s.slept.Store(info)
	}
	s.asleep.Store(true)
	s.leaderChanged()
	s.log.Info("hibernating", "index", index)
}

// wakeTransport is the range's transport as its Raft instances see it: it
// hands incoming messages to whichever instance runs, waking the replica
// first if it is asleep.
type wakeTransport struct {
	baseTransport
	s        *Shard
	consumer chan raft.RPC
	done     chan struct{}
	once     sync.Once

	// hbMu guards hb and pipesMu pipes and pipesClosed; both are leaves
	// (taken under the shard's rmu when an instance stops, never the
	// other way).
	hbMu sync.Mutex
	hb   func(raft.RPC)

	// pipes are the AppendEntries pipelines the current instance has
	// open; closePipelines ends them when it stops.
	pipesMu sync.Mutex
	pipes   map[*hookedPipeline]struct{}
	// pipesClosed is set by closePipelines until the next instance
	// starts: a stopping instance's replication that falls back to plain
	// appends and then asks for a new pipeline gets none, or it could
	// block in one that nobody closes any more.
	pipesClosed bool
}

// baseTransport is what a shard needs of the transport it is given.
type baseTransport interface {
	raft.Transport
	raft.WithClose
	raft.WithPreVote
}

func newWakeTransport(t raft.Transport, s *Shard) (*wakeTransport, error) {
	base, ok := t.(baseTransport)
	if !ok {
		return nil, fmt.Errorf("shard: transport %T cannot be closed or does not support pre-vote", t)
	}
	return &wakeTransport{baseTransport: base, s: s, consumer: make(chan raft.RPC), done: make(chan struct{})}, nil
}

// start begins handing messages over; call it once the first instance
// runs (messages that arrive before wait in the base transport).
func (w *wakeTransport) start() {
	w.baseTransport.SetHeartbeatHandler(w.heartbeat)
	go w.run()
}

func (w *wakeTransport) Consumer() <-chan raft.RPC { return w.consumer }

func (w *wakeTransport) SetHeartbeatHandler(cb func(raft.RPC)) { w.setHeartbeatHandler(cb) }

func (w *wakeTransport) setHeartbeatHandler(cb func(raft.RPC)) {
	w.hbMu.Lock()
	w.hb = cb
	w.hbMu.Unlock()
}

func (w *wakeTransport) heartbeat(rpc raft.RPC) {
	if w.s.asleep.Load() {
		w.s.wake(false)
	}
	w.hbMu.Lock()
	fn := w.hb
	w.hbMu.Unlock()
	if fn != nil && w.s.fastHeartbeatSafe(rpc) {
		fn(rpc)
		return
	}
	w.deliver(rpc)
}

// fastHeartbeatSafe reports whether Raft's heartbeat fast path may take
// rpc. hashicorp/raft runs it (appendEntries) on the transport's goroutine,
// beside its main loop, and a heartbeat of a later term moves the replica
// to that term and to Follower from there: a leader whose loop is
// dispatching a client's entry at that moment reads the new term and
// writes the entry under it, at the index where the new leader wrote its
// own, and the replicas diverge (hashicorp/raft#695; a jepsen run of
// ours found one: docs/track-record.md). So the fast path gets only a
// heartbeat that changes nothing but the replica's last contact: the
// replica is a follower in the heartbeat's term and heard from a leader
// recently, so its loop cannot become a candidate (which moves the term)
// while the heartbeat runs. Any other heartbeat goes through the main
// loop, in order with everything else.
func (s *Shard) fastHeartbeatSafe(rpc raft.RPC) bool {
	ae, ok := rpc.Command.(*raft.AppendEntriesRequest)
	if !ok {
		return false
	}
	r := s.inst.Load().raft
	return r.State() == raft.Follower && r.CurrentTerm() == ae.Term &&
		time.Since(r.LastContact()) < s.rc.HeartbeatTimeout/2
}

func (w *wakeTransport) run() {
	for {
		select {
		case rpc := <-w.baseTransport.Consumer():
			if ae, ok := rpc.Command.(*raft.AppendEntriesRequest); ok && len(ae.Entries) > 0 {
				// Raft acknowledges entries it already holds without
				// storing them again; a former leader may still be
				// syncing those (parallel leader append), so they must be
				// durable before it answers.
				if err := w.s.rlog.WaitWrittenSynced(); err != nil {
					refuse(rpc, err)
					continue
				}
			}
			if req, ok := rpc.Command.(*raft.InstallSnapshotRequest); ok {
				var installed <-chan struct{}
				rpc, installed = w.s.watchInstall(rpc, req)
				w.deliver(rpc)
				select {
				case <-installed:
				case <-w.done:
					return
				}
				continue
			}
			w.deliver(rpc)
		case <-w.done:
			return
		}
	}
}

// deliver hands rpc to the running instance, waking the replica if needed;
// if that instance stops before taking it, to the next one.
func (w *wakeTransport) deliver(rpc raft.RPC) {
	for range 100 {
		if w.s.asleep.Load() {
			w.s.wake(false)
		}
		stop := w.s.inst.Load().stop
		select {
		case w.consumer <- rpc:
			return
		case <-stop:
		case <-w.done:
			refuse(rpc, raft.ErrTransportShutdown)
			return
		}
	}
	refuse(rpc, fmt.Errorf("shard: range %d: no Raft instance took the message", w.s.id))
}

// refuse answers rpc with err and, as Raft itself always does, a response
// value of the request's type, empty. The link and NetworkTransport send
// only the error when there is one; hashicorp/raft's InmemTransport (the
// shard's tests) copies the value out of a pipelined answer before it
// looks at the error, and panicked on a nil one.
func refuse(rpc raft.RPC, err error) {
	var resp any
	switch rpc.Command.(type) {
	case *raft.AppendEntriesRequest:
		resp = &raft.AppendEntriesResponse{}
	case *raft.RequestVoteRequest:
		resp = &raft.RequestVoteResponse{}
	case *raft.RequestPreVoteRequest:
		resp = &raft.RequestPreVoteResponse{}
	case *raft.InstallSnapshotRequest:
		resp = &raft.InstallSnapshotResponse{}
	case *raft.TimeoutNowRequest:
		resp = &raft.TimeoutNowResponse{}
	}
	rpc.Respond(resp, err)
}

// AppendEntries and AppendEntriesPipeline never send a commit index past
// this node's durable log. With parallel leader appends the leader counts
// its own copy before its fsync returns; followers must not apply an entry
// the leader could still lose in a power cut.
//
// A heartbeat sent while no read-index round is under way may wait on the
// link for company (lazyTransport): on a node with many awake ranges the
// heartbeats are most of what it sends while idle.
func (w *wakeTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	w.clampCommit(args)
	if lt, ok := w.baseTransport.(lazyTransport); ok && isHeartbeat(args) {
		// The generation is read first: a round that begins after the
		// check below hurries past it, so its heartbeat never waits.
		// Counted first, so that a round beginning after the check below
		// sees it and hurries.
		w.s.mayWaitInFlight.Add(1)
		defer w.s.mayWaitInFlight.Add(-1)
		since := lt.HurryGen()
		if w.s.heartbeatsMayWait(time.Now()) {
			return lt.AppendEntriesMayWait(since, id, target, args, resp)
		}
	}
	return w.baseTransport.AppendEntries(id, target, args, resp)
}

// heartbeatsWaitAfter is how long after its last read-index round a
// range's heartbeats may wait for company: a round's heartbeats reach the
// followers after the quorum has answered, and a range serving reads now
// is likely to serve more; holding them would cost each round a hurry.
const heartbeatsWaitAfter = 100 * time.Millisecond

// heartbeatsMayWait reports whether the range's heartbeats may wait for
// company at now (see heartbeatsWaitAfter).
func (s *Shard) heartbeatsMayWait(now time.Time) bool {
	return s.confirming.Load() == 0 && now.UnixNano()-s.confirmedAt.Load() > int64(heartbeatsWaitAfter)
}

// lazyTransport is a transport whose requests may wait for company
// (replication/link's).
type lazyTransport interface {
	AppendEntriesMayWait(since uint64, id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error
	HurryGen() uint64
	Hurry()
}

// hurry ends the waits of requests sent with AppendEntriesMayWait.
func (w *wakeTransport) hurry() {
	if lt, ok := w.baseTransport.(lazyTransport); ok {
		lt.Hurry()
	}
}

// isHeartbeat reports whether args is what hashicorp/raft's heartbeat
// goroutine sends: no entries, no commit index, no previous entry.
func isHeartbeat(args *raft.AppendEntriesRequest) bool {
	return len(args.Entries) == 0 && args.PrevLogEntry == 0 && args.PrevLogTerm == 0 && args.LeaderCommitIndex == 0
}

func (w *wakeTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := hookPipeline(w.baseTransport, id, target, w.clampCommit)
	if err != nil {
		return nil, err
	}
	hp := p.(*hookedPipeline)
	hp.minGap = w.s.rc.CommitTimeout / 2
	// onClose is set before the pipeline is shared: closePipelines may
	// close it from another goroutine as soon as it is in pipes.
	hp.onClose = func() {
		w.pipesMu.Lock()
		delete(w.pipes, hp)
		w.pipesMu.Unlock()
	}
	w.pipesMu.Lock()
	if w.pipesClosed {
		w.pipesMu.Unlock()
		hp.Close()
		return nil, raft.ErrPipelineShutdown
	}
	if w.pipes == nil {
		w.pipes = map[*hookedPipeline]struct{}{}
	}
	w.pipes[hp] = struct{}{}
	w.pipesMu.Unlock()
	return hp, nil
}

// closePipelines closes every pipeline still open. A stopping instance
// needs it: hashicorp/raft v1.8.0's replication goroutine can block inside
// a pipeline's AppendEntries (NetworkTransport's, handing the request to a
// decoder that waits to pass on a result nobody reads any more, once the
// follower stopped answering), and only the pipeline's Close frees it;
// Raft closes the pipeline only after that call returns, so its Shutdown
// waited forever (CI: a node stopped while a follower was cut off).
func (w *wakeTransport) closePipelines() {
	w.pipesMu.Lock()
	w.pipesClosed = true
	open := make([]*hookedPipeline, 0, len(w.pipes))
	for p := range w.pipes {
		open = append(open, p)
	}
	w.pipesMu.Unlock()
	for _, p := range open {
		p.Close()
	}
}

// openPipelines lets a new instance open pipelines again.
func (w *wakeTransport) openPipelines() {
	w.pipesMu.Lock()
	w.pipesClosed = false
	w.pipesMu.Unlock()
}

func (w *wakeTransport) clampCommit(args *raft.AppendEntriesRequest) {
	if synced := w.s.rlog.SyncedIndex(); args.LeaderCommitIndex > synced {
		args.LeaderCommitIndex = synced
	}
}

// hookPipeline opens t's pipeline to target with before called on every
// request just before it is sent.
func hookPipeline(t raft.Transport, id raft.ServerID, target raft.ServerAddress, before func(*raft.AppendEntriesRequest)) (raft.AppendPipeline, error) {
	p, err := t.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return &hookedPipeline{AppendPipeline: p, before: before}, nil
}

type hookedPipeline struct {
	raft.AppendPipeline
	before  func(*raft.AppendEntriesRequest)
	onClose func() // set by the transport that tracks it; may be nil
	once    sync.Once
	err     error

	// What the last append sent carried, for dropping the next ones that
	// carry nothing new (see AppendEntries). Only the Raft goroutine that
	// replicates to this follower sends on the pipeline.
	sent       bool
	lastTerm   uint64
	lastPrev   uint64
	lastPrevT  uint64
	lastCommit uint64
	lastSentAt time.Time
	lastCallAt time.Time // of the last call, sent or not
	// minGap is half the CommitTimeout. Raft's own commit-index sends
	// are at least CommitTimeout apart; a repeat that comes sooner was
	// triggered (a leadership transfer asks again and again until the
	// follower answers) and is sent, so that the pipeline paces the
	// asking instead of a dropped send returning at once.
	minGap time.Duration
}

// commitResend bounds how long a pipeline goes without resending an append
// that carries nothing new: a follower whose Raft restarted without the
// link noticing (its commit index starts at 0) learns the commit index
// again within it.
const commitResend = time.Second

// brokenPipeline is what a pipeline that knows it is broken says (the
// link's): a dropped append must not hide the break, which Raft only
// notices when a send fails.
type brokenPipeline interface{ Broken() error }

// Close closes the pipeline once, whoever asks first (Raft, or a stopping
// instance's closePipelines).
func (p *hookedPipeline) Close() error {
	p.once.Do(func() {
		if p.onClose != nil {
			p.onClose()
		}
		p.err = p.AppendPipeline.Close()
	})
	return p.err
}

// AppendEntries sends args, unless it carries nothing the follower has not
// been sent already on this pipeline. hashicorp/raft sends each follower
// an append every CommitTimeout (20-40 ms) so that it learns the commit
// index when writes stop; on an idle range every one after the first
// repeats the previous one, and with a hundred ranges they were most of
// what an idle node sent and received. A dropped append gets no answer at
// all (its future never reaches Consumer): nothing is made up, and the
// leader's contact with the follower, which feeds its lease and read
// confirmations, comes from the heartbeats as before.
func (p *hookedPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.before(args)
	now := time.Now()
	repeat := p.repeats(args, now)
	p.lastCallAt = now
	if repeat {
		return &unsentAppend{args: args, resp: resp, start: now}, nil
	}
	f, err := p.AppendPipeline.AppendEntries(args, resp)
	if err == nil {
		p.sent = true
		p.lastTerm, p.lastPrev, p.lastPrevT, p.lastCommit = args.Term, args.PrevLogEntry, args.PrevLogTerm, args.LeaderCommitIndex
		if len(args.Entries) > 0 {
			last := args.Entries[len(args.Entries)-1]
			p.lastPrev, p.lastPrevT = last.Index, last.Term
		}
		p.lastSentAt = now
	}
	return f, err
}

// repeats reports whether args would tell the follower nothing that the
// last append sent on the pipeline did not, that one was sent less than
// commitResend ago, the last call came at least minGap ago, and the
// pipeline is not known to be broken.
func (p *hookedPipeline) repeats(args *raft.AppendEntriesRequest, now time.Time) bool {
	if !p.sent || len(args.Entries) > 0 || now.Sub(p.lastSentAt) >= commitResend || now.Sub(p.lastCallAt) < p.minGap {
		return false
	}
	if args.Term != p.lastTerm || args.PrevLogEntry != p.lastPrev || args.PrevLogTerm != p.lastPrevT || args.LeaderCommitIndex > p.lastCommit {
		return false
	}
	if b, ok := p.AppendPipeline.(brokenPipeline); ok && b.Broken() != nil {
		return false
	}
	return true
}

// unsentAppend is the future of an append the pipeline did not send. Raft
// does not wait on the futures it pipelines (it reads Consumer), and this
// one never reaches Consumer.
type unsentAppend struct {
	args  *raft.AppendEntriesRequest
	resp  *raft.AppendEntriesResponse
	start time.Time
}

var errUnsent = errors.New("shard: append not sent: it repeats the previous one")

func (u *unsentAppend) Error() error                          { return errUnsent }
func (u *unsentAppend) Start() time.Time                      { return u.start }
func (u *unsentAppend) Request() *raft.AppendEntriesRequest   { return u.args }
func (u *unsentAppend) Response() *raft.AppendEntriesResponse { return u.resp }

// Close does nothing: a stopped Raft instance closes its transport
// (raft's shutdown future does), but this one outlives the instances.
// Shard.Shutdown closes it with shutdown.
func (w *wakeTransport) Close() error { return nil }

func (w *wakeTransport) shutdown() error {
	w.once.Do(func() { close(w.done) })
	return w.baseTransport.Close()
}
