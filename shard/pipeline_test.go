package shard

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// recordingPipeline counts the appends that reach it.
type recordingPipeline struct {
	raft.AppendPipeline
	sent   []*raft.AppendEntriesRequest
	broken error
}

func (r *recordingPipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	if r.broken != nil {
		return nil, r.broken
	}
	r.sent = append(r.sent, args)
	return &unsentAppend{args: args, resp: resp}, nil
}

func (r *recordingPipeline) Broken() error { return r.broken }

// TestHookedPipeline_DropsOnlyAppendsThatRepeatTheLast: of the appends
// Raft sends every CommitTimeout, those that tell the follower nothing new
// stay home, unless the last one sent is a second old, the pipeline is
// broken (Raft must hear of that from a send), or the repeat comes sooner
// than Raft's own commit-index sends do (a leadership transfer asking until
// the follower answers: the pipeline must pace it).
func TestHookedPipeline_DropsOnlyAppendsThatRepeatTheLast(t *testing.T) {
	entries := &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 9, PrevLogTerm: 2, LeaderCommitIndex: 9,
		Entries: []*raft.Log{{Index: 10, Term: 3}, {Index: 11, Term: 3}}}
	commit := func(c uint64) *raft.AppendEntriesRequest {
		return &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 11, PrevLogTerm: 3, LeaderCommitIndex: c}
	}
	cases := []struct {
		name     string
		then     *raft.AppendEntriesRequest
		age      time.Duration // of the last append sent
		broken   error
		minGap   time.Duration
		wantSent bool
	}{
		{"the same commit index again", commit(9), 0, nil, 0, false},
		{"a newer commit index", commit(11), 0, nil, 0, true},
		{"the same, a second later", commit(9), commitResend, nil, 0, true},
		{"the same, on a broken pipeline", commit(9), 0, errors.New("connection lost"), 0, true},
		{"another previous entry", &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 10, PrevLogTerm: 3, LeaderCommitIndex: 9}, 0, nil, 0, true},
		{"another term", &raft.AppendEntriesRequest{Term: 4, PrevLogEntry: 11, PrevLogTerm: 3, LeaderCommitIndex: 9}, 0, nil, 0, true},
		{"the same, sooner than half a commit timeout", commit(9), 0, nil, 50 * time.Millisecond, true},
		{"entries", &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 11, PrevLogTerm: 3, LeaderCommitIndex: 9, Entries: []*raft.Log{{Index: 12, Term: 3}}}, 0, nil, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := &recordingPipeline{}
			p := &hookedPipeline{AppendPipeline: rec, before: func(*raft.AppendEntriesRequest) {}, minGap: c.minGap}
			if _, err := p.AppendEntries(entries, &raft.AppendEntriesResponse{}); err != nil {
				t.Fatal(err)
			}
			p.lastSentAt = p.lastSentAt.Add(-c.age)
			if c.minGap == 0 {
				// As Raft's commit-index sends: a commit timeout apart.
				p.lastCallAt = p.lastCallAt.Add(-DefaultCommitTimeout)
			}
			rec.broken = c.broken
			_, err := p.AppendEntries(c.then, &raft.AppendEntriesResponse{})
			sent := len(rec.sent) == 2 || (c.broken != nil && errors.Is(err, c.broken))
			if sent != c.wantSent {
				t.Fatalf("sent %v (err %v), want %v", sent, err, c.wantSent)
			}
			if !sent && err != nil {
				t.Fatalf("a dropped append returned %v", err)
			}
		})
	}
}

// A commit-index append right after a first one, on a new pipeline, is
// sent: nothing has been sent on it yet.
func TestHookedPipeline_SendsTheFirstAppend(t *testing.T) {
	rec := &recordingPipeline{}
	p := &hookedPipeline{AppendPipeline: rec, before: func(*raft.AppendEntriesRequest) {}}
	for range 3 {
		if _, err := p.AppendEntries(&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 11, PrevLogTerm: 3, LeaderCommitIndex: 11}, &raft.AppendEntriesResponse{}); err != nil {
			t.Fatal(err)
		}
	}
	if len(rec.sent) != 1 {
		t.Fatalf("%d appends sent, want the first only", len(rec.sent))
	}
}

// unsyncedLog's writes never become durable.
type unsyncedLog struct {
	raftLog
}

func (unsyncedLog) WaitWrittenSynced() error { return errors.New("disk gone") }

// A pipelined append the shard refuses (here: its log cannot sync) is
// answered with the error and an empty response of the right type, as Raft
// answers; hashicorp/raft's InmemTransport pipeline, which the shard's
// tests use, panicked on the nil response the shard used to send.
func TestWakeTransport_RefusesAPipelinedAppendWithATypedAnswer(t *testing.T) {
	w, leader, addr := startStubWakeTransport(t, &Shard{id: 2, rlog: unsyncedLog{}})
	defer w.shutdown()

	p, err := leader.AppendEntriesPipeline("f", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	req := &raft.AppendEntriesRequest{Term: 2, Entries: []*raft.Log{{Index: 1, Term: 2}}}
	if _, err := p.AppendEntries(req, &raft.AppendEntriesResponse{}); err != nil {
		t.Fatal(err)
	}
	select {
	case f := <-p.Consumer():
		if f.Error() == nil || f.Response().Success {
			t.Fatalf("refused append answered error %v, response %+v", f.Error(), f.Response())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the refused append")
	}
	for _, cmd := range []any{&raft.AppendEntriesRequest{}, &raft.RequestVoteRequest{}, &raft.RequestPreVoteRequest{}, &raft.InstallSnapshotRequest{}, &raft.TimeoutNowRequest{}} {
		ch := make(chan raft.RPCResponse, 1)
		refuse(raft.RPC{Command: cmd, RespChan: ch}, errors.New("no"))
		if r := <-ch; r.Response == nil || r.Error == nil {
			t.Errorf("%T refused with %+v", cmd, r)
		}
	}
}

// startStubWakeTransport starts a wake transport for s (a stub shard given
// an instance placeholder) on an in-memory transport, and returns it, a
// peer connected to it and its address. The caller shuts it down.
func startStubWakeTransport(t *testing.T, s *Shard) (*wakeTransport, *raft.InmemTransport, raft.ServerAddress) {
	t.Helper()
	addr, base := raft.NewInmemTransport("")
	peerAddr, peer := raft.NewInmemTransport("")
	peer.Connect(addr, base)
	base.Connect(peerAddr, peer)
	s.inst.Store(&instance{stop: make(chan struct{})})
	w, err := newWakeTransport(base, s)
	if err != nil {
		t.Fatal(err)
	}
	w.start()
	return w, peer, addr
}
