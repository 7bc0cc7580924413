package shard

import (
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// watchedLog is the range's log as Raft sees it: the log itself, plus a
// count of the appends it refused, and deletions held back while an
// install keeps the log (keepLog). hashicorp/raft only logs a failed
// append and answers the leader "no"; a replica whose every append fails
// (issue 12: a log that refused the entries after an installed snapshot)
// looked healthy everywhere else while the range ran on one replica
// fewer. The count feeds the replica's status, its metric and /readyz.
type watchedLog struct {
	raft.LogStore
	failures atomic.Uint64 // appends refused since the replica started

	// keepFrom is the index of the snapshot being installed while Raft
	// looks whether the log continues it, and while it installs one the
	// log does: Raft's deletions stop below it (see keepLog).
	keepFrom atomic.Uint64

	mu      sync.Mutex
	failing int       // appends refused since the last one stored
	since   time.Time // when the first of those was refused
	lastErr error
	// lastKept is the last install that happened with the log kept
	// through a snapshot of the replica's own.
	lastKept keptMark
}

// keptMark is an install kept through a snapshot of the replica's own:
// the snapshot's index and term, and the log's last index then.
type keptMark struct{ index, term, logLast uint64 }

var _ raft.MonotonicLogStore = (*watchedLog)(nil)

// IsMonotonic passes the log's own answer on: Raft asks its log store,
// which is this wrapper, and the answer decides what it does with the old
// entries after installing a snapshot.
func (w *watchedLog) IsMonotonic() bool {
	m, ok := w.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

// StoreLog implements raft.LogStore.
func (w *watchedLog) StoreLog(log *raft.Log) error {
	return w.note(w.LogStore.StoreLog(log))
}

// StoreLogs implements raft.LogStore.
func (w *watchedLog) StoreLogs(logs []*raft.Log) error {
	return w.note(w.LogStore.StoreLogs(logs))
}

// DeleteRange implements raft.LogStore.
func (w *watchedLog) DeleteRange(min, max uint64) error {
	if k := w.keepFrom.Load(); k > 0 && max >= k {
		if min >= k {
			return nil
		}
		max = k - 1
	}
	return w.LogStore.DeleteRange(min, max)
}

func (w *watchedLog) note(err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err == nil {
		w.failing, w.lastErr = 0, nil
		return nil
	}
	w.failures.Add(1)
	if w.failing == 0 {
		w.since = time.Now()
	}
	w.failing++
	w.lastErr = err
	return err
}

// health is nil while the newest append was stored, else why not.
func (w *watchedLog) health() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failing == 0 {
		return nil
	}
	return fmt.Errorf("its log has refused %d appends in a row over %v: %w", w.failing, time.Since(w.since).Round(time.Second), w.lastErr)
}

// AppendFailures is how many appends to the replica's log failed since it
// started.
func (s *Shard) AppendFailures() uint64 { return s.logs.failures.Load() }

// AppendHealth is nil unless the replica's newest append to its log
// failed, or its Raft instance last failed to start; then it says why
// (and for appends how many in a row). Raft retries, so a replica that
// stays this way has stopped taking its leader's entries.
func (s *Shard) AppendHealth() error {
	if err := s.logs.health(); err != nil {
		return fmt.Errorf("range %d: %w", s.id, err)
	}
	if err := s.startFailed.Load(); err != nil {
		return fmt.Errorf("range %d: its Raft instance could not start: %w", s.id, *err)
	}
	return nil
}

// watchInstall returns rpc, an InstallSnapshot of a snapshot up to index,
// with its answer passed through afterInstall on its way back.
//
// hashicorp/raft v1.8.0 does not reset what it believes is its last log
// entry when it installs a snapshot. A replica whose log ran past the
// snapshot (a deposed leader's entries that never committed) has its log
// emptied (the log is monotonic) but goes on believing in the old tail:
// the next AppendEntries, which follows the snapshot, finds neither that
// tail nor the snapshot's index as its last entry and is refused, and the
// leader sends the snapshot again, forever. A Raft instance started on
// the same stores reads its last entry from the log, so afterInstall
// restarts the instance when that is the case.
//
// The returned channel closes once afterInstall is done. Until then no
// other message may reach Raft: the old instance, which still believes in
// the old tail, would take an append whose previous entry is that tail's
// last (a leader whose log holds the same entry) and store it after the
// emptied stretch. The log then has a hole between the snapshot and its
// first entry, and every later start of Raft on it fails (CI run 45: a
// panic in NewRaft, from a restart after an install).
//
// A snapshot the log already continues is installed with the log kept
// (keepLog). That is decided on the first read of the snapshot's data,
// inside Raft's installSnapshot: an append handed to Raft just before may
// still be running when the install is handed over, and once Raft reads
// the data nothing else in its main loop touches the log.
func (s *Shard) watchInstall(rpc raft.RPC, req *raft.InstallSnapshotRequest) (raft.RPC, <-chan struct{}) {
	index, term := req.LastLogIndex, req.LastLogTerm
	data := &installReader{Reader: rpc.Reader, decide: func() (bool, keptMark) { return s.keepLog(index, term) }}
	rpc.Reader = data
	answer := rpc.RespChan
	ch := make(chan raft.RPCResponse, 1)
	done := make(chan struct{})
	rpc.RespChan = ch
	go func() {
		defer close(done)
		// Every RPC handed over is answered: by Raft, or by deliver when
		// no instance takes it.
		resp := <-ch
		kept := data.kept.Load()
		if kept {
			s.logs.keepFrom.Store(0)
		}
		r, ok := resp.Response.(*raft.InstallSnapshotResponse)
		installed := ok && resp.Error == nil && r.Success
		// Only an install that happened counts as kept: after a failed one
		// (a transfer cut, an older term) the leader sends the same
		// snapshot again, to a log that has not moved.
		if installed && data.mark != (keptMark{}) {
			s.logs.mu.Lock()
			s.logs.lastKept = data.mark
			s.logs.mu.Unlock()
		}
		answer <- resp
		if installed {
			s.afterInstall(index, kept)
		}
	}()
	return rpc, done
}

// installReader is an InstallSnapshot's data; its first read decides
// whether the install keeps the log.
type installReader struct {
	io.Reader
	once   sync.Once
	decide func() (bool, keptMark)
	kept   atomic.Bool
	// mark is keepLog's for a log kept through a snapshot of the
	// replica's own; written by Raft's goroutine before it answers, read
	// after the answer.
	mark keptMark
}

func (r *installReader) Read(p []byte) (int, error) {
	r.once.Do(func() {
		kept, mark := r.decide()
		r.mark = mark
		r.kept.Store(kept)
	})
	if r.Reader == nil {
		return 0, io.EOF
	}
	return r.Reader.Read(p)
}

// keepLog reports whether installing a snapshot ending at (index, term)
// keeps the log, and if so leaves keepFrom set to index so that Raft's
// deletions stop below it. When the log is kept through a snapshot of
// the replica's own it also returns the mark to record as lastKept once
// the install has happened.
//
// A log kept through a snapshot of the replica's own (one that starts
// after the leader's snapshot's index) can leave the replica refusing
// its leader: hashicorp/raft matches an append's previous entry only
// against the log and its last entry, so a leader that steps back to
// that index (an entry of the kept log conflicts with its own) is refused
// there and sends the snapshot again. The same snapshot arriving again
// while the log has not moved is installed as Raft does, emptying the log.
func (s *Shard) keepLog(index, term uint64) (keep bool, mark keptMark) {
	// Set first: Raft's compaction, which runs beside its main loop,
	// then keeps whatever entry the check below finds.
	s.logs.keepFrom.Store(index)
	keep, viaSnapshot := s.continuesPast(index, term)
	if keep && viaSnapshot {
		last, err := s.logs.LastIndex()
		mark = keptMark{index, term, last}
		s.logs.mu.Lock()
		again := err != nil || s.logs.lastKept == mark
		s.logs.mu.Unlock()
		if again {
			s.log.Warn("installing a snapshot as sent, emptying the log: it came again and the log has not moved since the last install kept it",
				"snapshot", index, "log_last", last)
			keep, mark = false, keptMark{}
		}
	}
	if !keep {
		s.logs.keepFrom.Store(0)
	}
	return keep, mark
}

// continuesPast reports whether the range's log runs past the entry a
// snapshot ends at (index, term) and continues it: it holds that entry,
// or it continues a snapshot of the replica's own that ends there or
// later (a snapshot holds only committed entries, which every replica
// shares, so one past the leader's holds all of it; the restart after
// the install takes it up again, as the newest); viaSnapshot says it is
// the latter. Such a snapshot needs no change to the log, and emptying
// the log as Raft does after an install would forget entries the replica
// acknowledged, which its leader may have counted to commit them.
//
// Raft sends one anyway: a replicator of hashicorp/raft v1.8.0 sleeps out
// its failure backoff (up to 10 s) without watching its stop channel, so a
// replicator for a peer removed while unreachable wakes after the peer
// was added back, and sends it the leader's newest snapshot from a next
// index of its own (Jepsen, session 24: n4 installed range 46's snapshot
// at 3682 with its log at 4061).
func (s *Shard) continuesPast(index, term uint64) (keep, viaSnapshot bool) {
	if index == 0 {
		return false, false
	}
	first, err := s.logs.FirstIndex()
	if err != nil || first == 0 {
		return false, false
	}
	last, err := s.logs.LastIndex()
	if err != nil || last <= index {
		return false, false
	}
	if first <= index {
		var e raft.Log
		return s.logs.GetLog(index, &e) == nil && e.Term == term, false
	}
	metas, err := s.storage.Snapshots.List()
	if err != nil {
		return false, false
	}
	for _, m := range metas {
		if m.Index+1 >= first && (m.Index > index || m.Index == index && m.Term == term) {
			return true, true
		}
	}
	return false, false
}

// afterInstall restarts the Raft instance if, after installing a snapshot
// up to index, it believes in log entries past it that its log no longer
// holds (see watchInstall), or if the log was kept: Raft took the
// snapshot's configuration as its latest, and only a start reads the
// newer ones in the kept entries again.
func (s *Shard) afterInstall(index uint64, kept bool) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if s.closed || s.asleep.Load() {
		return
	}
	inst := s.inst.Load()
	logLast, err := s.logs.LastIndex()
	if err != nil && !kept {
		return
	}
	// Raft's cached last entry, not LastIndex, which is at least the
	// snapshot's now: a cache below the snapshot's index is ignored (Raft
	// takes its last entry from the snapshot), as on a new replica, which
	// so needs no restart. Also restart when the old tail ends exactly at
	// the snapshot's index: its last entry there may be of another term
	// than the snapshot's, and Raft, which prefers its cached last entry
	// to the snapshot's at the same index, would refuse every append
	// after the snapshot.
	believed, err := strconv.ParseUint(inst.raft.Stats()["last_log_index"], 10, 64)
	if err != nil {
		believed = inst.raft.LastIndex()
	}
	switch {
	case kept:
		s.log.Warn("restarting Raft after installing a snapshot its log already ran past; the log is kept",
			"snapshot", index, "log_last", logLast)
	case believed < index || logLast >= believed:
		return
	default:
		s.log.Warn("restarting Raft after a snapshot install: it counts log entries its log no longer holds",
			"snapshot", index, "believed_last", believed, "log_last", logLast)
	}
	// As when it hibernates: heartbeats wait in the consumer meanwhile.
	s.trans.setHeartbeatHandler(nil)
	if err := s.stopInstance(inst); err != nil {
		s.log.Warn("stopping Raft for the restart", "err", err)
	}
	if err := s.startInstance(); err != nil {
		// Nothing runs now: sleep, so that the next request or message
		// tries to start an instance again (wake).
		s.log.Error("could not restart Raft after a snapshot install", "err", err)
		s.asleep.Store(true)
		s.leaderChanged()
	}
}
