package shard

import (
	"errors"
	"strings"
	"testing"

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
