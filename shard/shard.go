package shard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/internal/logadapt"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/hashicorp/raft"
)

// Config configures one Shard.
type Config struct {
	NodeID     string
	Descriptor Descriptor
	FSM        *raftstore.RangeFSM
	Storage    *raftstore.RaftStorage
	Transport  raft.Transport
	Logger     *slog.Logger
	Timing     Timing
	// HibernateAfter is how long the range must be idle before its Raft
	// instance sleeps (see hibernate.go); 0 never.
	HibernateAfter time.Duration
	// ParallelLeaderAppend lets the leader's log fsync overlap the
	// replication of the same entries (see raftLog).
	ParallelLeaderAppend bool
}

// Timing holds the Raft timeouts. Loopback clusters can afford short ones;
// a busy two-core machine running the race detector cannot go much lower
// than DefaultTiming without spurious elections.
type Timing struct {
	Heartbeat   time.Duration
	Election    time.Duration
	LeaderLease time.Duration
	// Commit is Raft's CommitTimeout: a leader with nothing new to send
	// still sends each follower an append every Commit to 2*Commit, so that
	// followers learn the commit index after the last write of a burst.
	// The shard sends only those that carry something new, and a repeat
	// once a second (hookedPipeline). It was the main idle cost of an
	// awake range before that (100 awake ranges on 3 nodes: 20 ms, 26-30%
	// of a core per node; 100 ms, 17%; 200 ms, 13-15%), and it is how long
	// a follower may take to apply a write once writes stop, which session
	// and bounded reads served by followers wait for (up to the second of
	// the repeat for a follower whose Raft restarted meanwhile).
	Commit time.Duration
}

// DefaultTiming is what kvd runs with.
func DefaultTiming() Timing {
	return Timing{Heartbeat: time.Second, Election: time.Second, LeaderLease: 500 * time.Millisecond, Commit: DefaultCommitTimeout}
}

// DefaultCommitTimeout is kvd's Timing.Commit.
const DefaultCommitTimeout = 100 * time.Millisecond

// Validate says what is wrong with t, if anything. Commit is bounded by
// hibernation: a follower learns that the hibernation entry committed from
// an append up to 2*Commit after the leader applied it, and must be asleep
// before it misses heartbeats (see sleepDelays).
func (t Timing) Validate() error {
	switch {
	case t.Heartbeat <= 0 || t.Election <= 0 || t.LeaderLease <= 0 || t.Commit <= 0:
		return fmt.Errorf("shard: raft timeouts must be positive (heartbeat %v, election %v, leader lease %v, commit %v)",
			t.Heartbeat, t.Election, t.LeaderLease, t.Commit)
	case t.Commit > t.Heartbeat/4:
		return fmt.Errorf("shard: raft commit timeout %v is more than a quarter of the heartbeat timeout %v", t.Commit, t.Heartbeat)
	}
	return nil
}

// raftLog is a range's Raft log as the shard uses it: appends of commands
// may return before they are durable while the replica leads
// (SetSyncBehind: the leader's fsync overlaps the followers'), and the
// shard's guards ask how far the log is durable, or wait until it is.
// The range's view of the node's write-ahead log (wal.RangeLog, from
// raftstore.RaftStorage) is one, and so is raftstore.SegmentLog.
type raftLog interface {
	raft.LogStore
	SetSyncBehind(behind func() bool)
	SyncedIndex() uint64
	WaitSynced(index uint64) error
	WaitWrittenSynced() error
}

// Shard is one replica of one range.
type Shard struct {
	id      uint64
	nodeID  string
	fsm     *raftstore.RangeFSM
	storage *raftstore.RaftStorage
	rlog    raftLog     // storage's log
	logs    *watchedLog // rlog, as every Raft instance is given it
	trans   *wakeTransport
	log     *slog.Logger

	// Lock order: memberMu, then compactMu, then rmu, then leaderMu or
	// the transport's hbMu or pipesMu (sleeping stops the instance and
	// tells the leader watchers, holding rmu). leaderMu, hbMu and pipesMu
	// are leaves. None is held while waiting on Raft, except compactMu,
	// which is held across CompactLog's Raft calls and only ever tried by
	// hibernation, and memberMu, held across a membership change or a
	// split until Raft has committed it.
	//
	// rc is the configuration every Raft instance starts from; inst is
	// the current instance (a stopped one while the replica hibernates).
	rc   raft.Config
	inst atomic.Pointer[instance]
	// memberMu orders, on the leader, a split's view of the membership
	// with membership changes: the split's new range starts with the
	// members the split read, so no change may commit between that read
	// and the split (a removed node would be named a replica of a range
	// it never hears of, and the range lose a member of its quorum).
	memberMu sync.Mutex
	// rmu serialises starting, hibernating and stopping instances.
	rmu         sync.Mutex
	closed      bool          // guarded by rmu
	sleepConfig []raft.Server // membership when it went to sleep; guarded by rmu
	sleeps      uint64        // sleeps so far; guarded by rmu
	// slept is the last sleep, set once the replica sleeps having applied
	// its whole log, nil from its wake (Sleeping).
	slept atomic.Pointer[sleepInfo]
	// sleepLeader led the range when it went to sleep: if it is this
	// replica, a request that wakes it stands for election at once;
	// guarded by rmu.
	sleepLeader leaderHint
	// startErr is why the last start of an instance failed, and when;
	// nil once one starts. A wake within startRetry of a failure does
	// not try again: every message would, hundreds a second, for a
	// fault (a hole in the log) that retrying does not mend. Guarded by
	// rmu; startFailed mirrors it for AppendHealth.
	startErr    error
	startErrAt  time.Time
	startFailed atomic.Pointer[error]
	// wakeHint is sleepLeader, offered once by ForwardTarget after a
	// request woke this (follower) replica, before any leader is known.
	wakeHint atomic.Pointer[leaderHint]
	asleep   atomic.Bool

	hibernateAfter time.Duration
	parallelAppend bool
	lastActive     atomic.Int64 // unix nanos of the last request that needed Raft

	// recoverIndex is the last log index when the replica started: its
	// state machine may have served reads up to there before a crash, so
	// weaker reads wait until it has re-applied that far (Recovered).
	recoverIndex uint64

	reads readBatcher
	fresh freshness
	// confirmer, when the transport has one, confirms reads' leadership
	// for many ranges at once (confirm.go); memberGen counts membership
	// changes begun and ended, so it is odd while one is under way.
	confirmer leadershipConfirmer
	memberGen atomic.Uint64
	// confirming counts read-index rounds under way, and confirmedAt is
	// when the last began or ended (unix nanos): heartbeats may wait a
	// moment for company on the link only when there are none and there
	// were none for heartbeatsWaitAfter (heartbeatsMayWait).
	confirming  atomic.Int32
	confirmedAt atomic.Int64
	// mayWaitInFlight counts heartbeats being sent that may be sent
	// lazily: a round hurries the link only when there are some (a hurry
	// ends every hold on the node, other ranges' too).
	mayWaitInFlight atomic.Int32

	leaderMu sync.Mutex
	leaderCh chan struct{} // closed and replaced whenever the leader changes

	// compactMu keeps a log compaction (CompactLog) and a hibernation
	// proposal apart: a replica must not be told to sleep with its log
	// half compacted. Hibernation only tries it.
	compactMu sync.Mutex

	stop     chan struct{}
	stopOnce sync.Once
}

// New starts the Raft group of one range replica. The group is idle until
// it is bootstrapped or contacted by its peers.
func New(cfg Config) (*Shard, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timing == (Timing{}) {
		cfg.Timing = DefaultTiming()
	}
	if err := cfg.Timing.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger.With("range", cfg.Descriptor.ID)
	s := &Shard{
		id:       cfg.Descriptor.ID,
		nodeID:   cfg.NodeID,
		fsm:      cfg.FSM,
		storage:  cfg.Storage,
		rlog:     cfg.Storage.Log(),
		logs:     &watchedLog{LogStore: cfg.Storage.Log()},
		log:      log,
		leaderCh: make(chan struct{}),
		stop:     make(chan struct{}),
	}
	s.reads.s = s

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.Timing.Heartbeat
	rc.ElectionTimeout = cfg.Timing.Election
	rc.LeaderLeaseTimeout = cfg.Timing.LeaderLease
	rc.CommitTimeout = cfg.Timing.Commit
	// hashicorp/raft allocates a slice of this capacity for every append
	// it sends and every batch it commits (4 KiB each at 512: 3-4% of a
	// node's CPU with appends of two puts over 16 ranges). It is kept
	// large all the same: raft's pipeline sends one append per new entry
	// or per commit timeout, so the part of a burst beyond this many
	// entries, once the writers stop, waits up to two commit timeouts.
	rc.MaxAppendEntries = 512
	rc.BatchApplyCh = true
	rc.SnapshotThreshold = 16384
	rc.TrailingLogs = 10240
	rc.SnapshotInterval = 60 * time.Second
	// The FSM is durable and resumes from its own applied index; restoring
	// the snapshot on every start would throw that away and copy the range.
	rc.NoSnapshotRestoreOnStart = true
	rc.Logger = logadapt.HCLog(log.With("component", "raft"))
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("shard: range %d: %w", cfg.Descriptor.ID, err)
	}
	s.rc = *rc
	s.hibernateAfter = cfg.HibernateAfter
	s.parallelAppend = cfg.ParallelLeaderAppend
	cfg.FSM.SetLogSync(s.rlog.WaitSynced)
	s.touch()
	trans, err := newWakeTransport(cfg.Transport, s)
	if err != nil {
		return nil, err
	}
	s.trans = trans
	cfg.FSM.SetHibernateHandler(s.hibernateApplied)
	if err := s.startInstance(); err != nil {
		trans.shutdown()
		return nil, err
	}
	trans.start()
	if lc, ok := cfg.Transport.(leadershipConfirmer); ok {
		s.confirmer = lc
		lc.SetLeadershipCheck(s.followsLeader)
	}
	s.recoverIndex, _ = s.rlog.LastIndex()
	return s, nil
}

// startInstance starts a Raft instance on the range's log, stores and
// transport. Callers hold rmu, or own the shard exclusively (New).
func (s *Shard) startInstance() error {
	err := s.startInstanceOnce()
	if err != nil {
		s.startErr, s.startErrAt = err, time.Now()
		s.startFailed.Store(&err)
		return err
	}
	s.startErr = nil
	s.startFailed.Store(nil)
	return nil
}

// startRetry is how long after a failed start a wake leaves the replica
// asleep without trying again.
const startRetry = time.Second

// startInstanceOnce is startInstance without the bookkeeping of failures.
func (s *Shard) startInstanceOnce() error {
	// Every start, not only the node's: a Raft instance restarted in the
	// process (a wake, afterInstall) also takes the newest snapshot's
	// index as applied, and one received but never swapped in (Raft
	// stopped between the sink's Close and the restore, or the restore
	// failed before the swap) stays listed until this looks at it.
	snap, err := s.recoverFromSnapshot()
	if err != nil {
		return err
	}
	if err := s.checkLogContinues(snap); err != nil {
		return fmt.Errorf("shard: start raft for range %d: %w", s.id, err)
	}
	if err := s.fsm.DiscardStaged(); err != nil {
		return fmt.Errorf("shard: start raft for range %d: %w", s.id, err)
	}
	s.trans.openPipelines()
	notify := make(chan bool, 8)
	rc := s.rc
	rc.NotifyCh = notify
	r, err := raft.NewRaft(&rc, s.fsm, s.logs, s.storage.Stable(), s.storage.Snapshots, s.trans)
	if err != nil {
		return fmt.Errorf("shard: start raft for range %d: %w", s.id, err)
	}
	if s.parallelAppend {
		// The state is read on Raft's own goroutine, the one that appends:
		// it is exact there (a leader appends only from its leader loop; a
		// node appending a leader's entries has become a follower first).
		s.rlog.SetSyncBehind(func() bool { return r.State() == raft.Leader })
	}
	inst := &instance{raft: r, stop: make(chan struct{}), stopped: make(chan struct{})}
	observations := make(chan raft.Observation, 16)
	inst.observer = raft.NewObserver(observations, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(inst.observer)
	s.inst.Store(inst)
	inst.wg.Add(2)
	go s.watchLeadership(inst, notify)
	go s.watchLeader(inst, observations)
	return nil
}

// checkLogContinues fails unless Raft can start on the log: hashicorp/raft's
// NewRaft reads every entry from the newest snapshot's index to the last
// and panics on the first it cannot read. A hole once came from an append
// taken between a snapshot install and its restart (see watchInstall);
// should one come again, the replica refuses to start: after an install or
// a wake it stays asleep (a message a second later retries) and says why
// in AppendHealth; at the node's start, New fails with the reason. snap is
// the newest snapshot's index (0: none).
func (s *Shard) checkLogContinues(snap uint64) error {
	last, err := s.logs.LastIndex()
	if err != nil || last == 0 {
		return err
	}
	var e raft.Log
	if err := s.logs.GetLog(last, &e); err != nil {
		return fmt.Errorf("its last log entry %d: %w", last, err)
	}
	first, err := s.logs.FirstIndex()
	if err != nil {
		return err
	}
	if last > snap && first > snap+1 {
		return fmt.Errorf("its log holds entries %d to %d but its newest snapshot ends at %d", first, last, snap)
	}
	return nil
}

// stopInstance shuts inst down and waits for its goroutines.
func (s *Shard) stopInstance(inst *instance) error {
	close(inst.stop)
	inst.raft.DeregisterObserver(inst.observer)
	f := inst.raft.Shutdown()
	// Raft has been told to stop: free a replication goroutine stuck in
	// a pipeline, or the wait below never ends (see closePipelines).
	s.trans.closePipelines()
	err := f.Error()
	inst.wg.Wait()
	close(inst.stopped)
	return err
}

// r is the current Raft instance, asleep or not: for looking, not for
// work that needs Raft running (see active).
func (s *Shard) r() *raft.Raft { return s.inst.Load().raft }

// leaderChanged wakes the goroutines waiting for a leader change.
func (s *Shard) leaderChanged() {
	s.leaderMu.Lock()
	close(s.leaderCh)
	s.leaderCh = make(chan struct{})
	s.leaderMu.Unlock()
}

// watchLeader wakes WaitLeader callers whenever the known leader changes.
func (s *Shard) watchLeader(inst *instance, observations <-chan raft.Observation) {
	defer inst.wg.Done()
	for {
		select {
		case <-inst.stop:
			return
		case <-observations:
			s.leaderChanged()
		}
	}
}

// WaitLeader returns the leader's id and address, waiting for an election
// to finish if none is known, until ctx ends.
func (s *Shard) WaitLeader(ctx context.Context) (id, addr string, err error) {
	s.active()
	self := string(s.rc.LocalID)
	err = s.waitLeaderWhile(ctx, func(i, a string) bool {
		id, addr = i, a
		// The name and the state are read apart, so a replica stepping
		// down between the two reads looks like a leader in name only;
		// the name's change wakes this wait. Without it, a request being
		// forwarded would be sent back to this replica.
		return a == "" || (i == self && s.r().State() != raft.Leader)
	})
	if err == nil && addr == "" {
		err = fmt.Errorf("shard: range %d: no leader known", s.id)
	}
	return id, addr, err
}

// ForwardTarget is WaitLeader for a request about to be forwarded to the
// leader. Right after a request woke this replica, before any election,
// it names the replica that led when the range went to sleep: that is
// where the request should go, and the request wakes that replica into
// standing at once (Wake), where waiting here would take this replica's
// heartbeat timeout. It does so once per wake.
func (s *Shard) ForwardTarget(ctx context.Context) (id, addr string, err error) {
	s.active()
	if h := s.wakeHint.Swap(nil); h != nil && h.id != string(s.rc.LocalID) {
		if _, a := s.Leader(); a == "" {
			return h.id, h.addr, nil
		}
	}
	return s.WaitLeader(ctx)
}

// WaitLeaderChange waits until the known leader is no longer id, or ctx
// ends.
func (s *Shard) WaitLeaderChange(ctx context.Context, id string) {
	s.waitLeaderWhile(ctx, func(cur, _ string) bool { return cur == id })
}

// waitLeaderWhile waits, on leader observations, while cond holds for the
// known leader.
func (s *Shard) waitLeaderWhile(ctx context.Context, cond func(id, addr string) bool) error {
	for range 1000 {
		s.leaderMu.Lock()
		ch := s.leaderCh
		s.leaderMu.Unlock()
		if !cond(s.Leader()) {
			return nil
		}
		select {
		case <-ch:
		case <-s.stop:
			return ErrShutdown
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return ctx.Err()
}

// recoverFromSnapshot restores the newest snapshot into the FSM when the
// FSM's state is older than it (a snapshot file received by a build
// before references, whose restore a stop interrupted; a received one
// still staged, whose swap a stopped Raft never asked for): with
// NoSnapshotRestoreOnStart Raft would otherwise replay only the log after
// the snapshot and the range would silently miss data.
//
// A received snapshot is a reference to data staged in the state
// database, which a stop of the node before Restore swapped it in loses
// (raftstore's refsnap.go), as does a restore that failed before its
// swap. Raft had not answered the leader for it, so it goes, and the next
// newest is looked at: the leader sends the snapshot again.
//
// It returns the index of the newest snapshot it leaves (0: none).
func (s *Shard) recoverFromSnapshot() (uint64, error) {
	// Bounded: each round drops a snapshot or returns, and the store
	// retains two (a drop lets List show an older one).
	for range 8 {
		metas, err := s.storage.Snapshots.List()
		if err != nil {
			return 0, fmt.Errorf("shard: range %d: list snapshots: %w", s.id, err)
		}
		if len(metas) == 0 {
			return 0, nil
		}
		newest := metas[0]
		if s.fsm.AppliedIndex() >= newest.Index {
			return newest.Index, nil
		}
		_, rc, err := s.storage.Snapshots.Open(newest.ID)
		if errors.Is(err, raftstore.ErrSnapshotBehind) {
			s.log.Warn("dropping a received snapshot whose staged data is gone (a stop, or a restore that failed before its swap); the leader sends it again", "applied", s.fsm.AppliedIndex(), "snapshot", newest.Index, "id", newest.ID)
			if err := s.storage.DropSnapshot(newest.ID); err != nil {
				return 0, fmt.Errorf("shard: range %d: %w", s.id, err)
			}
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("shard: range %d: open snapshot %s: %w", s.id, newest.ID, err)
		}
		s.log.Warn("state machine is older than the newest snapshot; restoring it", "applied", s.fsm.AppliedIndex(), "snapshot", newest.Index)
		if err := s.fsm.Restore(rc); err != nil {
			return 0, fmt.Errorf("shard: range %d: %w", s.id, err)
		}
		return newest.Index, nil
	}
	return 0, fmt.Errorf("shard: range %d: snapshots still behind the state machine after 8 were dropped", s.id)
}

// Descriptor returns the range descriptor as the state machine has it
// now (splits change it).
func (s *Shard) Descriptor() Descriptor { return s.fsm.Descriptor() }

// ID returns the range id.
func (s *Shard) ID() uint64 { return s.id }

// FSM returns the range's state machine, for local reads.
func (s *Shard) FSM() *raftstore.RangeFSM { return s.fsm }

// Raft exposes the current Raft instance for status and tests; while the
// replica hibernates it is a stopped one.
func (s *Shard) Raft() *raft.Raft { return s.r() }

// Bootstrap makes servers the range's first configuration. It is a no-op
// when the replica already has Raft state, so a restart with the same flags
// is safe, and when this node is not one of servers' voters: a replica that
// applied its parent's split while it was being added to the parent (a
// non-voter) holds the new range's keys but is not among its first voters,
// and joins its group only if the leader adds it, by snapshot. Raft refuses
// that bootstrap (ErrNotVoter), and the refusal, retried at every start,
// kept the node from starting at all.
func (s *Shard) Bootstrap(servers []raft.Server) error {
	if !slices.ContainsFunc(servers, func(v raft.Server) bool { return v.ID == raft.ServerID(s.nodeID) && v.Suffrage == raft.Voter }) {
		s.log.Info("not among the range's first voters: its group adds this replica or not, the bootstrap is not ours", "voters", len(servers))
		return nil
	}
	f := s.active().BootstrapCluster(raft.Configuration{Servers: servers})
	if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		return fmt.Errorf("shard: bootstrap range %d: %w", s.id, err)
	}
	return nil
}

// DurableCommitIndex is the commit index as far as the leader's own log
// is durable: with parallel leader appends Raft's commit index may count
// a copy still in the page cache. Publish this one, never Raft's.
func (s *Shard) DurableCommitIndex() uint64 {
	return min(s.r().CommitIndex(), s.rlog.SyncedIndex())
}

// IsLeader reports whether this replica is the range's leader.
func (s *Shard) IsLeader() bool { return s.r().State() == raft.Leader }

// Leader returns the leader's node id and Raft address, empty when unknown.
func (s *Shard) Leader() (id, addr string) {
	a, i := s.r().LeaderWithID()
	return string(i), string(a)
}

// Propose commits cmd through Raft and returns its result once applied on
// this (leader) replica. Errors: ErrNotLeader (not applied),
// ErrIndeterminate (may have been applied, also when the replica stops
// meanwhile), ErrCompareFailed (applied as a no-op).
func (s *Shard) Propose(ctx context.Context, cmd *raftstore.Command) (*raftstore.Result, error) {
	return s.ProposeSettled(ctx, cmd, nil)
}

// ProposeSettled is Propose, calling settled once the entry can no longer
// be appended in the term this replica leads: Raft answered or refused
// it, or the instance has shut down. When ctx ends or the instance starts
// to stop first, it returns at once and settled comes later (nil: none). A lease's revoke waits for the puts with the
// lease that its leader is proposing (replication's leaseWrites): a put
// abandoned by its caller may still be appended and commit after the
// revoke's read index, so it counts until then.
func (s *Shard) ProposeSettled(ctx context.Context, cmd *raftstore.Command, settled func()) (*raftstore.Result, error) {
	// Refused before it reached Raft: settled at once.
	refuse := func(err error) (*raftstore.Result, error) {
		if settled != nil {
			settled()
		}
		return nil, err
	}
	inst := s.activeInst()
	r := inst.raft
	if r.State() != raft.Leader {
		return refuse(ErrNotLeader)
	}
	timeout := time.Duration(0)
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return refuse(context.DeadlineExceeded)
		}
	}
	f := r.Apply(cmd.Encode(make([]byte, 0, 16+len(cmd.Key)+len(cmd.Value)+len(cmd.Expected))), timeout)
	if err := awaitFutureThen(ctx, inst.stop, inst.stopped, f, settled); err != nil {
		return nil, s.applyError(err) // a ctx error too: the entry may still commit
	}
	res, ok := f.Response().(*raftstore.Result)
	if !ok || res == nil {
		return nil, fmt.Errorf("shard: range %d: unexpected apply response %T", s.id, f.Response())
	}
	if errors.Is(res.Err, raftstore.ErrCompareFailed) {
		return res, ErrCompareFailed
	}
	if res.Err != nil {
		return res, fmt.Errorf("shard: range %d: apply: %w", s.id, res.Err)
	}
	return res, nil
}

// errAbandoned: the Raft instance stopped before answering a future; what
// it was for may or may not have taken effect.
var errAbandoned = errors.New("shard: raft stopped without answering")

// awaitFuture waits for f, for ctx, or for stop (the instance's) to close.
// hashicorp/raft v1.8.0 can leave a future unanswered for good: when it
// shuts down, the FSM goroutine returns without answering the committed
// batches still queued for it, and an Apply future does not watch for the
// shutdown itself. Every wait on a future that can end up there goes through this,
// or a shard's shutdown hangs on it. The goroutine left waiting on such a
// future is the price: one per entry Raft dropped.
func awaitFuture(ctx context.Context, stop <-chan struct{}, f raft.Future) error {
	return awaitFutureThen(ctx, stop, nil, f, nil)
}

// awaitFutureThen is awaitFuture, calling settled (if any) once f is
// answered or stopped closes (Raft has shut down; nil: stop), which may be
// after it returned.
func awaitFutureThen(ctx context.Context, stop, stopped <-chan struct{}, f raft.Future, settled func()) error {
	none := settled == nil
	if none {
		settled = func() {}
	}
	if stopped == nil {
		stopped = stop
	}
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	settleLater := func() {
		if none {
			return
		}
		go func() {
			select {
			case <-done:
			case <-stopped:
			}
			settled()
		}()
	}
	select {
	case err := <-done:
		settled()
		return err
	case <-stop:
		// Raft may have answered just as stop closed.
		select {
		case err := <-done:
			settled()
			return err
		default:
			// Raft's goroutines may still append what it took in
			// until it has shut down.
			settleLater()
			return errAbandoned
		}
	case <-ctx.Done():
		settleLater()
		return ctx.Err()
	}
}

func (s *Shard) applyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Raft refused the entry before appending it.
		return ErrNotLeader
	}
	// Leadership lost, Raft shut down, the future abandoned or the
	// caller's deadline: the entry may still commit.
	return fmt.Errorf("%w: %w", ErrIndeterminate, err)
}

// watchLeadership commits a term-start marker each time this replica
// becomes leader; read-index waits for it (waitLeaderReady).
func (s *Shard) watchLeadership(inst *instance, notify <-chan bool) {
	defer inst.wg.Done()
	for {
		select {
		case <-inst.stop:
			return
		case isLeader := <-notify:
			if isLeader {
				term := inst.raft.CurrentTerm()
				s.log.Info("became leader", "term", term)
				inst.wg.Add(1)
				go s.commitMarker(inst, term)
			}
		}
	}
}

// commitMarker applies the marker for term, retrying while this replica
// still leads in that term.
func (s *Shard) commitMarker(inst *instance, term uint64) {
	defer inst.wg.Done()
	backoff := 20 * time.Millisecond
	for attempt := 0; attempt < 1<<16; attempt++ {
		if inst.raft.State() != raft.Leader || inst.raft.CurrentTerm() != term || s.fsm.MarkerTerm() >= term {
			return
		}
		f := inst.raft.Apply((&raftstore.Command{Op: raftstore.OpMarker}).Encode(nil), time.Second)
		err := awaitFuture(context.Background(), inst.stop, f)
		if err == nil || errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, errAbandoned) {
			return
		}
		select {
		case <-inst.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// waitLeaderReady waits until this replica leads and has applied the
// marker of its current term, so its commit index covers every entry
// committed before its term; it returns that term.
func (s *Shard) waitLeaderReady(ctx context.Context) (uint64, error) {
	for range 1 << 16 {
		changed := s.fsm.Changed()
		r := s.r()
		if r.State() != raft.Leader {
			return 0, ErrNotLeader
		}
		term := r.CurrentTerm()
		if s.fsm.MarkerTerm() == term {
			return term, nil
		}
		select {
		case <-changed:
		case <-time.After(50 * time.Millisecond): // leadership can end without an apply
		case <-s.stop:
			return 0, ErrShutdown
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return 0, ErrNotLeader
}

// Recovered reports whether the replica has re-applied the log it had
// when it started; until then its state may be older than what it served
// before a restart, and weaker reads must not be served from it.
//
// A replica created empty, to be filled by a snapshot from its leader, is
// not recovered until something has been applied: until then it would
// answer from no state at all.
func (s *Shard) Recovered() bool {
	applied := s.fsm.AppliedIndex()
	return applied > 0 && applied >= s.recoverIndex
}

// ReadIndex returns an index such that a read of this replica's state
// machine is linearizable once the state machine has applied it; it has
// already waited for that. Only the leader can serve it (ErrNotLeader).
// Concurrent calls share one leadership confirmation.
func (s *Shard) ReadIndex(ctx context.Context) (uint64, error) {
	s.active()
	return s.readIndex(ctx)
}

// readIndex confirms leadership and waits until the state machine has
// applied the commit index noted then.
func (s *Shard) readIndex(ctx context.Context) (uint64, error) {
	idx, err := s.reads.wait(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.fsm.WaitApplied(ctx, idx); err != nil {
		return 0, err
	}
	return idx, nil
}

// ReadIndexIdle is ReadIndex for work the range's clients did not ask
// for (a lease's end checking every range a node leads): it does not
// count as activity, so it never keeps an idle range from hibernating,
// and it fails rather than waking a sleeping one.
func (s *Shard) ReadIndexIdle(ctx context.Context) (uint64, error) {
	if s.asleep.Load() {
		return 0, ErrNotLeader
	}
	return s.readIndex(ctx)
}

// confirmRead runs one read-index round for a batch of waiting readers.
func (s *Shard) confirmRead(ctx context.Context) (uint64, error) {
	term, err := s.waitLeaderReady(ctx)
	if err != nil {
		return 0, err
	}
	inst := s.inst.Load()
	r := inst.raft
	idx := r.CommitIndex()
	if s.confirmByLink(ctx, inst, term) {
		return idx, nil
	}
	// The round's heartbeats must leave at once, and one already held
	// for company (wakeTransport.AppendEntries) must go now: the round
	// counts its answer.
	s.confirming.Add(1)
	s.confirmedAt.Store(time.Now().UnixNano())
	defer func() {
		s.confirmedAt.Store(time.Now().UnixNano())
		s.confirming.Add(-1)
	}()
	if s.mayWaitInFlight.Load() > 0 {
		s.trans.hurry()
	}
	if err := awaitFuture(ctx, inst.stop, r.VerifyLeader()); err != nil {
		return 0, ErrNotLeader
	}
	if r.CurrentTerm() != term {
		return 0, ErrNotLeader
	}
	return idx, nil
}

// AddVoter adds (or promotes) a voting member.
func (s *Shard) AddVoter(ctx context.Context, id, addr string) error {
	return s.membership(ctx, func(t time.Duration) raft.IndexFuture {
		return s.r().AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// AddNonvoter adds a member that receives the log but does not vote.
func (s *Shard) AddNonvoter(ctx context.Context, id, addr string) error {
	return s.membership(ctx, func(t time.Duration) raft.IndexFuture {
		return s.r().AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, t)
	})
}

// RemoveServer removes a member.
func (s *Shard) RemoveServer(ctx context.Context, id string) error {
	return s.membership(ctx, func(t time.Duration) raft.IndexFuture {
		return s.r().RemoveServer(raft.ServerID(id), 0, t)
	})
}

func (s *Shard) membership(ctx context.Context, change func(time.Duration) raft.IndexFuture) error {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	if s.active().State() != raft.Leader {
		return ErrNotLeader
	}
	// Odd while the change may be under way: a read confirmed by the
	// link counts a quorum of the configuration it read (confirmByLink).
	s.memberGen.Add(1)
	defer s.memberGen.Add(1)
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			return context.DeadlineExceeded
		}
	}
	stop := s.activeInst().stop
	f := change(timeout)
	err := awaitFuture(ctx, stop, f)
	if err != nil && ctx.Err() != nil {
		// The caller gave up, Raft has not: the change may still be
		// appended, so memberMu stays held until Raft decides (it answers
		// on commit, on losing the leadership, or the instance stops), or
		// a split could read the membership from before it.
		awaitFuture(context.Background(), stop, f)
	}
	if err != nil {
		return s.applyError(err)
	}
	return nil
}

// Configuration returns the range's current Raft membership. (Its
// future's Index() is always 0 in hashicorp/raft v1.8.0, so no index is
// offered.)
func (s *Shard) Configuration() ([]raft.Server, error) {
	if s.asleep.Load() {
		s.rmu.Lock()
		defer s.rmu.Unlock()
		if s.asleep.Load() {
			return slices.Clone(s.sleepConfig), nil
		}
	}
	f := s.r().GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("shard: range %d configuration: %w", s.id, err)
	}
	return f.Configuration().Servers, nil
}

// TransferLeadership hands leadership to the replica on node id.
func (s *Shard) TransferLeadership(id, addr string) error {
	inst := s.activeInst()
	if err := awaitFuture(context.Background(), inst.stop, inst.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))); err != nil {
		return fmt.Errorf("shard: range %d: transfer leadership to %s: %w", s.id, id, err)
	}
	return nil
}

// StepDown hands leadership to whichever replica Raft picks, waiting at
// most until ctx is done (Raft bounds the transfer itself too).
func (s *Shard) StepDown(ctx context.Context) error {
	inst := s.activeInst()
	if err := awaitFuture(ctx, inst.stop, inst.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("shard: range %d: step down: %w", s.id, err)
	}
	return nil
}

// ProposeSplit commits a split at key into a new range childID whose
// replicas are this range's members when the split commits: it reads the
// membership and waits for the split holding memberMu, which every
// membership change on this leader takes too. (A change committed by
// another leader comes after the split in the log, or the split is lost
// with the leadership.)
func (s *Shard) ProposeSplit(ctx context.Context, key []byte, childID uint64) (*raftstore.Result, error) {
	s.memberMu.Lock()
	defer s.memberMu.Unlock()
	servers, err := s.Configuration()
	if err != nil {
		return nil, err
	}
	spec := raftstore.SplitSpec{ChildID: childID}
	for _, srv := range servers {
		// A non-voter is still catching up (addReplica) and may do so from
		// a snapshot taken after this split, never creating the new range:
		// it starts with the voters only, and its node drops the replica it
		// may open as an orphan; placement re-adds one where needed.
		if srv.Suffrage == raft.Voter {
			spec.Replicas = append(spec.Replicas, raftstore.Server{ID: string(srv.ID), Addr: string(srv.Address)})
		}
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	res, err := s.Propose(ctx, &raftstore.Command{Op: raftstore.OpSplit, Key: key, Value: b})
	if err == nil && res.Err != nil {
		return res, res.Err
	}
	return res, err
}

// Status is a point-in-time view of the replica.
type Status struct {
	Descriptor   Descriptor
	State        string
	Term         uint64
	CommitIndex  uint64
	AppliedIndex uint64
	LastLogIndex uint64
	LeaderID     string
	Replicas     []string
	// AppendFailures counts the appends the replica's log refused since
	// it started; AppendError, when set, says why the newest one failed.
	AppendFailures uint64
	AppendError    string
}

// Status reports the replica's Raft and state-machine progress.
func (s *Shard) Status() Status {
	r := s.r()
	st := Status{
		Descriptor:   s.Descriptor(),
		State:        r.State().String(),
		Term:         r.CurrentTerm(),
		CommitIndex:  r.CommitIndex(),
		AppliedIndex: s.fsm.AppliedIndex(),
		LastLogIndex: r.LastIndex(),
	}
	st.AppendFailures = s.AppendFailures()
	if err := s.logs.health(); err != nil {
		st.AppendError = err.Error()
	}
	if s.asleep.Load() {
		st.State = "Hibernating"
	}
	st.LeaderID, _ = s.Leader()
	if servers, err := s.Configuration(); err == nil {
		for _, srv := range servers {
			st.Replicas = append(st.Replicas, string(srv.ID))
		}
	}
	return st
}

// Shutdown stops the replica's Raft group and closes its log. The shared
// state store stays open for the node's other ranges.
func (s *Shard) Shutdown() error {
	var err error
	s.stopOnce.Do(func() {
		close(s.stop)
		s.rmu.Lock()
		s.closed = true
		if !s.asleep.Load() {
			err = s.stopInstance(s.inst.Load())
		}
		s.rmu.Unlock()
		if cerr := s.trans.shutdown(); err == nil {
			err = cerr
		}
		if cerr := s.storage.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// CompactLog takes a snapshot and drops every log entry it covers, so
// that a replica added afterwards is sent the snapshot instead of the log
// from index 1. Ranges created by a split need this: their initial data
// came from the parent, not from their own log.
func (s *Shard) CompactLog() error {
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	inst := s.activeInst()
	r := inst.raft
	// Something new to snapshot, so that Raft does not skip it.
	if err := awaitFuture(context.Background(), inst.stop, r.Apply((&raftstore.Command{Op: raftstore.OpMarker}).Encode(nil), 5*time.Second)); err != nil {
		return fmt.Errorf("shard: range %d: compact log: %w", s.id, err)
	}
	rc := r.ReloadableConfig()
	trailing := rc.TrailingLogs
	rc.TrailingLogs = 0
	if err := r.ReloadConfig(rc); err != nil {
		return fmt.Errorf("shard: range %d: %w", s.id, err)
	}
	err := r.Snapshot().Error()
	rc.TrailingLogs = trailing
	if rerr := r.ReloadConfig(rc); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return fmt.Errorf("shard: range %d: compact log: %w", s.id, err)
	}
	return nil
}
