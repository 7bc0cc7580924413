package shard

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/raftstore"
	"github.com/hashicorp/raft"
)

// refusingLog refuses appends while refuse is set.
type refusingLog struct {
	*raft.InmemStore
	refuse error
}

func (l *refusingLog) StoreLogs(logs []*raft.Log) error {
	if l.refuse != nil {
		return l.refuse
	}
	return l.InmemStore.StoreLogs(logs)
}

func (l *refusingLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

type monotonicLog struct{ *raft.InmemStore }

func (monotonicLog) IsMonotonic() bool { return true }

// Raft asks the store it is given whether it is monotonic: the wrapper
// must pass the log's answer on, or Raft keeps a follower's old entries
// after a snapshot install and appends after a gap (issue 12).
func TestWatchedLog_PassesOnWhetherTheLogIsMonotonic(t *testing.T) {
	if (&watchedLog{LogStore: raft.NewInmemStore()}).IsMonotonic() {
		t.Error("a log that allows gaps is reported monotonic")
	}
	if !(&watchedLog{LogStore: monotonicLog{raft.NewInmemStore()}}).IsMonotonic() {
		t.Error("a monotonic log is not reported monotonic")
	}
}

func TestWatchedLog_ReportsAppendsThatKeepFailing(t *testing.T) {
	inner := &refusingLog{InmemStore: raft.NewInmemStore()}
	s := &Shard{id: 2, logs: &watchedLog{LogStore: inner}}
	if err := s.logs.StoreLogs([]*raft.Log{{Index: 1, Term: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendHealth(); err != nil || s.AppendFailures() != 0 {
		t.Fatalf("after a stored append: health %v, %d failures", err, s.AppendFailures())
	}
	inner.refuse = errors.New("raftstore: log entry 40056 stored out of order (want 55)")
	for i := range 3 {
		if err := s.logs.StoreLog(&raft.Log{Index: 40056, Term: 2}); !errors.Is(err, inner.refuse) {
			t.Fatalf("append %d: %v, want the log's error", i, err)
		}
	}
	err := s.AppendHealth()
	if err == nil || !errors.Is(err, inner.refuse) || !strings.Contains(err.Error(), "range 2") || !strings.Contains(err.Error(), "3 appends in a row") {
		t.Fatalf("health after three refused appends: %v", err)
	}
	if s.AppendFailures() != 3 {
		t.Fatalf("%d failures counted, want 3", s.AppendFailures())
	}
	inner.refuse = nil
	if err := s.logs.StoreLogs([]*raft.Log{{Index: 2, Term: 2}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendHealth(); err != nil {
		t.Fatalf("health once an append was stored again: %v", err)
	}
	if s.AppendFailures() != 3 {
		t.Fatalf("the count went back to %d: it counts since the start", s.AppendFailures())
	}
}

// consumerOnly is a base transport whose only use is its consumer.
type consumerOnly struct {
	baseTransport
	ch chan raft.RPC
}

func (c *consumerOnly) Consumer() <-chan raft.RPC { return c.ch }

// TestWakeTransport_NothingReachesRaftBetweenAnInstallAndItsCheck: after
// Raft answers a snapshot install, the next message waits until
// afterInstall has looked at the instance (and restarted it if need be).
// The old instance would otherwise take an append after the emptied log's
// believed tail and leave a hole no later start of Raft gets past.
func TestWakeTransport_NothingReachesRaftBetweenAnInstallAndItsCheck(t *testing.T) {
	base := &consumerOnly{ch: make(chan raft.RPC, 2)}
	s := &Shard{id: 7, closed: true}
	s.inst.Store(&instance{stop: make(chan struct{})})
	w := &wakeTransport{baseTransport: base, s: s, consumer: make(chan raft.RPC), done: make(chan struct{})}
	go w.run()
	defer close(w.done)

	installAnswer := make(chan raft.RPCResponse, 1)
	base.ch <- raft.RPC{Command: &raft.InstallSnapshotRequest{LastLogIndex: 5}, RespChan: installAnswer}
	base.ch <- raft.RPC{Command: &raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 9, PrevLogTerm: 2}, RespChan: make(chan raft.RPCResponse, 1)}

	// afterInstall cannot run while rmu is held.
	s.rmu.Lock()
	install := <-w.consumer
	install.Respond(&raft.InstallSnapshotResponse{Success: true}, nil)
	if r := <-installAnswer; r.Error != nil {
		t.Fatalf("install answered %v", r.Error)
	}
	select {
	case rpc := <-w.consumer:
		t.Fatalf("%T reached Raft before afterInstall ran", rpc.Command)
	case <-time.After(100 * time.Millisecond):
	}
	s.rmu.Unlock()
	select {
	case rpc := <-w.consumer:
		if _, ok := rpc.Command.(*raft.AppendEntriesRequest); !ok {
			t.Fatalf("got %T, want the append", rpc.Command)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the append never reached Raft after afterInstall")
	}
}

// TestCheckLogContinues: Raft starts only on a log that continues from the
// newest snapshot (NewRaft panics on a hole).
func TestCheckLogContinues(t *testing.T) {
	cases := []struct {
		name        string
		first, last uint64 // 0, 0: empty
		snapshot    uint64 // 0: none
		wantErr     bool
	}{
		{"empty log", 0, 0, 0, false},
		{"log from 1, no snapshot", 1, 10, 0, false},
		{"log right after the snapshot", 6, 10, 5, false},
		{"log overlapping the snapshot", 3, 10, 5, false},
		{"log behind the snapshot", 1, 4, 5, false},
		{"hole after the snapshot", 8, 10, 5, true},
		{"hole, no snapshot", 2, 10, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			logs := raft.NewInmemStore()
			for i := c.first; c.first > 0 && i <= c.last; i++ {
				if err := logs.StoreLog(&raft.Log{Index: i, Term: 1}); err != nil {
					t.Fatal(err)
				}
			}
			s := &Shard{logs: &watchedLog{LogStore: logs}}
			if err := s.checkLogContinues(c.snapshot); (err != nil) != c.wantErr {
				t.Fatalf("error %v, want one: %v", err, c.wantErr)
			}
		})
	}
}

// countingSnapshots counts List calls: each start of an instance makes
// one (recoverFromSnapshot).
type countingSnapshots struct {
	raft.SnapshotStore
	lists int
}

func (c *countingSnapshots) List() ([]*raft.SnapshotMeta, error) {
	c.lists++
	return c.SnapshotStore.List()
}

// TestWake_AReplicaThatCannotStartSaysSoAndWaitsBeforeTrying: a replica
// whose log has a hole stays asleep, reports why in AppendHealth, and the
// messages that keep coming do not each try (and log) another start.
func TestWake_AReplicaThatCannotStartSaysSoAndWaitsBeforeTrying(t *testing.T) {
	logs := raft.NewInmemStore()
	for i := uint64(8); i <= 10; i++ {
		if err := logs.StoreLog(&raft.Log{Index: i, Term: 1}); err != nil {
			t.Fatal(err)
		}
	}
	snaps := &countingSnapshots{SnapshotStore: raft.NewInmemSnapshotStore()}
	s := &Shard{id: 7, log: benchDiscard, logs: &watchedLog{LogStore: logs}, storage: &raftstore.RaftStorage{Snapshots: snaps}}
	s.asleep.Store(true)
	s.wake(false)
	perStart := snaps.lists
	if perStart == 0 {
		t.Fatal("a start made no List call to count it by")
	}
	for range 49 {
		s.wake(false)
	}
	if !s.asleep.Load() {
		t.Fatal("a replica with a hole in its log woke")
	}
	if snaps.lists != perStart {
		t.Fatalf("%d starts tried within a second, want 1", snaps.lists/perStart)
	}
	err := s.AppendHealth()
	if err == nil || !strings.Contains(err.Error(), "could not start") {
		t.Fatalf("AppendHealth = %v, want the failed start", err)
	}
	s.startErrAt = s.startErrAt.Add(-startRetry)
	s.wake(false)
	if snaps.lists != 2*perStart {
		t.Fatalf("%d starts tried, want another one a second later", snaps.lists/perStart)
	}
}
