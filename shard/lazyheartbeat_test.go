package shard

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"

	"github.com/hashicorp/raft"
)

// lazyRecorder is a transport that records which way each append went.
type lazyRecorder struct {
	baseTransport
	plain, mayWait, hurries int
}

func (r *lazyRecorder) AppendEntries(raft.ServerID, raft.ServerAddress, *raft.AppendEntriesRequest, *raft.AppendEntriesResponse) error {
	r.plain++
	return nil
}

func (r *lazyRecorder) HurryGen() uint64 { return 1 }

func (r *lazyRecorder) AppendEntriesMayWait(uint64, raft.ServerID, raft.ServerAddress, *raft.AppendEntriesRequest, *raft.AppendEntriesResponse) error {
	r.mayWait++
	return nil
}

func (r *lazyRecorder) Hurry() { r.hurries++ }

// syncedLog is a raftLog durable up to an index; only SyncedIndex is used.
type syncedLog struct {
	raftLog
	synced uint64
}

func (l syncedLog) SyncedIndex() uint64 { return l.synced }

// TestWakeTransport_HeartbeatsWaitOnlyWhenNoReadDoes: a heartbeat may wait
// on the link for company only while no read-index round is under way or
// has been for heartbeatsWaitAfter;
// appends that carry entries or a commit index never go that way.
func TestWakeTransport_HeartbeatsWaitOnlyWhenNoReadDoes(t *testing.T) {
	heartbeat := &raft.AppendEntriesRequest{Term: 3}
	long := time.Now().Add(-time.Hour).UnixNano()
	cases := []struct {
		name        string
		args        *raft.AppendEntriesRequest
		confirming  int32
		confirmedAt int64
		wantWait    bool
	}{
		{"heartbeat, no read for long", heartbeat, 0, long, true},
		{"heartbeat, never a read", heartbeat, 0, 0, true},
		{"heartbeat during a read-index round", heartbeat, 1, long, false},
		{"heartbeat just after a read-index round", heartbeat, 0, time.Now().UnixNano(), false},
		{"commit-index append", &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 7, PrevLogTerm: 3, LeaderCommitIndex: 7}, 0, long, false},
		{"append with entries", &raft.AppendEntriesRequest{Term: 3, Entries: []*raft.Log{{Index: 1}}}, 0, long, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &lazyRecorder{}
			s := &Shard{rlog: syncedLog{synced: 100}}
			s.confirming.Store(c.confirming)
			s.confirmedAt.Store(c.confirmedAt)
			w := &wakeTransport{baseTransport: rec, s: s}
			if err := w.AppendEntries("f", "f:1", c.args, &raft.AppendEntriesResponse{}); err != nil {
				t.Fatal(err)
			}
			if got := rec.mayWait == 1; got != c.wantWait || rec.plain+rec.mayWait != 1 {
				t.Fatalf("plain %d, may wait %d; want may wait %v", rec.plain, rec.mayWait, c.wantWait)
			}
		})
	}
	rec := &lazyRecorder{}
	(&wakeTransport{baseTransport: rec}).hurry()
	if rec.hurries != 1 {
		t.Fatalf("hurry reached the transport %d times, want 1", rec.hurries)
	}
}

// hurryRecorder is an in-memory transport that counts hurries.
type hurryRecorder struct {
	*raft.InmemTransport
	hurries atomic.Int32
}

func (r *hurryRecorder) AppendEntriesMayWait(_ uint64, id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	return r.AppendEntries(id, target, args, resp)
}
func (r *hurryRecorder) HurryGen() uint64 { return 1 }
func (r *hurryRecorder) Hurry()           { r.hurries.Add(1) }

// TestReadIndex_HurriesOnlyWhenAHeartbeatMayWait: a read-index round
// hurries the link (which ends every hold on the node) when one of its
// range's heartbeats may be waiting on it, and only then.
func TestReadIndex_HurriesOnlyWhenAHeartbeatMayWait(t *testing.T) {
	_, inmem := raft.NewInmemTransport("n1")
	trans := &hurryRecorder{InmemTransport: inmem}
	store, s := openReplica(t, t.TempDir(), Descriptor{ID: 7, Generation: 2}, "n1", trans, false)
	defer store.Close()
	defer s.Shutdown()
	if err := s.Bootstrap([]raft.Server{{Suffrage: raft.Voter, ID: "n1", Address: "n1"}}); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, "n1 to lead", 10*time.Second, s.IsLeader)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		mayWait     int32
		wantHurries int32
	}{{0, 0}, {1, 1}, {0, 1}} {
		s.mayWaitInFlight.Store(c.mayWait)
		if _, err := s.ReadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		if got := trans.hurries.Load(); got != c.wantHurries {
			t.Fatalf("after a read with %d heartbeats that may wait: %d hurries, want %d", c.mayWait, got, c.wantHurries)
		}
	}
}
