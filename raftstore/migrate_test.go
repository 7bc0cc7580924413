package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dialkv/dialkv/raftstore/wal"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

func walTestEntries(from, to, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: fmt.Appendf(nil, "t%d-e%d", term, i), AppendedAt: time.Unix(0, int64(i)*1000)})
	}
	return out
}

// checkWALLog asserts that l holds exactly want.
func checkWALLog(t *testing.T, l raft.LogStore, want []*raft.Log) {
	t.Helper()
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	if len(want) == 0 {
		if first != 0 || last != 0 {
			t.Fatalf("log [%d, %d], want empty", first, last)
		}
		return
	}
	if first != want[0].Index || last != want[len(want)-1].Index {
		t.Fatalf("log [%d, %d], want [%d, %d]", first, last, want[0].Index, want[len(want)-1].Index)
	}
	for _, w := range want {
		var got raft.Log
		if err := l.GetLog(w.Index, &got); err != nil {
			t.Fatalf("entry %d: %v", w.Index, err)
		}
		if got.Term != w.Term || !bytes.Equal(got.Data, w.Data) || !got.AppendedAt.Equal(w.AppendedAt) {
			t.Fatalf("entry %d = %+v, want %+v", w.Index, got, *w)
		}
	}
}

var oldStable = map[string][]byte{
	"CurrentTerm":  {0, 0, 0, 0, 0, 0, 0, 7},
	"LastVoteTerm": {0, 0, 0, 0, 0, 0, 0, 6},
	"LastVoteCand": []byte("n3"),
	"SomethingNew": []byte("kept too"),
}

// oldRange writes the storage a range had before the WAL: a segment log
// (its head compacted) and raft.db with the stable keys, and returns the
// entries it holds.
func oldRange(t *testing.T, dir string) []*raft.Log {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	seg, err := OpenSegmentLog(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := seg.StoreLogs(walTestEntries(1, 1500, 3)); err != nil {
		t.Fatal(err)
	}
	if err := seg.DeleteRange(1, 99); err != nil {
		t.Fatal(err)
	}
	seg.Close()
	db, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range oldStable {
		if err := db.Set([]byte(k), v); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	return walTestEntries(100, 1500, 3)
}

func checkMigrated(t *testing.T, w *wal.WAL, id uint64, want []*raft.Log) {
	t.Helper()
	v := w.Range(id)
	checkWALLog(t, v, want)
	for k, val := range oldStable {
		got, err := v.Get([]byte(k))
		if err != nil || !bytes.Equal(got, val) {
			t.Fatalf("stable %s = %q, %v; want %q", k, got, err, val)
		}
	}
	if term, err := v.GetUint64([]byte("CurrentTerm")); err != nil || term != 7 {
		t.Fatalf("CurrentTerm = %d, %v", term, err)
	}
}

func checkOldFilesGone(t *testing.T, dir string) {
	t.Helper()
	for _, name := range []string{"raft.db", walMigrated} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is still there (%v)", name, err)
		}
	}
	// In the old log's place: the fence that makes an older kvd refuse.
	if b, err := os.ReadFile(filepath.Join(dir, "log")); err != nil || string(b) != fenceText {
		t.Fatalf("log is not the fence: %q, %v", b, err)
	}
}

func openTestWAL(t *testing.T, dir string) *wal.WAL {
	t.Helper()
	w, err := wal.Open(dir, wal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func TestMigrateRangeToWAL_MovesLogAndStableStore(t *testing.T) {
	root := t.TempDir()
	rangeDir := filepath.Join(root, "ranges", "7")
	want := oldRange(t, rangeDir)
	walDir := filepath.Join(root, "wal")
	w := openTestWAL(t, walDir)
	moved, err := MigrateRangeToWAL(w, 7, rangeDir)
	if err != nil || !moved {
		t.Fatalf("migrate: moved %v, %v", moved, err)
	}
	checkMigrated(t, w, 7, want)
	checkOldFilesGone(t, rangeDir)
	w.Close()
	w = openTestWAL(t, walDir)
	checkMigrated(t, w, 7, want)
	if moved, err := MigrateRangeToWAL(w, 7, rangeDir); err != nil || moved {
		t.Fatalf("a second migration: moved %v, %v; want nothing to do", moved, err)
	}
	checkMigrated(t, w, 7, want)
}

// Before the segment log, a range's log lived in raft.db; a move into
// the segment log interrupted by a crash leaves it there (and part of it
// in the segment log). raft.db is then the one to move.
func TestMigrateRangeToWAL_MovesALogStillInRaftDB(t *testing.T) {
	root := t.TempDir()
	rangeDir := filepath.Join(root, "ranges", "2")
	os.MkdirAll(rangeDir, 0o755)
	db, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(rangeDir, "raft.db")})
	if err != nil {
		t.Fatal(err)
	}
	want := walTestEntries(5, 700, 2)
	if err := db.StoreLogs(want); err != nil {
		t.Fatal(err)
	}
	for k, v := range oldStable {
		db.Set([]byte(k), v)
	}
	db.Close()
	seg, _ := OpenSegmentLog(filepath.Join(rangeDir, "log"))
	seg.StoreLogs(walTestEntries(5, 10, 2)) // the interrupted move's part
	seg.Close()
	w := openTestWAL(t, filepath.Join(root, "wal"))
	if _, err := MigrateRangeToWAL(w, 2, rangeDir); err != nil {
		t.Fatal(err)
	}
	checkMigrated(t, w, 2, want)
	checkOldFilesGone(t, rangeDir)
}

// A crash before the marker leaves the old files and part of the copy
// (or all of it) in the WAL: the next open imports again, replacing it.
func TestMigrateRangeToWAL_RepeatsAfterACrashBeforeTheMarker(t *testing.T) {
	root := t.TempDir()
	rangeDir := filepath.Join(root, "ranges", "7")
	want := oldRange(t, rangeDir)
	walDir := filepath.Join(root, "wal")
	w := openTestWAL(t, walDir)
	// What an interrupted import left: some entries, a stale term.
	half := walTestEntries(100, 700, 3)
	sent := false
	err := w.Import(7, map[string][]byte{"CurrentTerm": {0, 0, 0, 0, 0, 0, 0, 1}}, func() ([]*raft.Log, error) {
		if sent {
			return nil, nil
		}
		sent = true
		return half, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	w = openTestWAL(t, walDir)
	if _, err := MigrateRangeToWAL(w, 7, rangeDir); err != nil {
		t.Fatal(err)
	}
	checkMigrated(t, w, 7, want)
	checkOldFilesGone(t, rangeDir)
}

// Once the marker is durable the copy is complete: a crash during the
// removals only leaves them to finish, and whatever is left of the old
// files is not imported again (the range may have moved on since).
func TestMigrateRangeToWAL_OnlyFinishesRemovalOnceMarked(t *testing.T) {
	root := t.TempDir()
	rangeDir := filepath.Join(root, "ranges", "7")
	want := oldRange(t, rangeDir)
	w := openTestWAL(t, filepath.Join(root, "wal"))
	if _, err := MigrateRangeToWAL(w, 7, rangeDir); err != nil {
		t.Fatal(err)
	}
	// The range moved on in the WAL...
	v := w.Range(7)
	if err := v.StoreLogs(walTestEntries(1501, 1510, 4)); err != nil {
		t.Fatal(err)
	}
	want = append(want, walTestEntries(1501, 1510, 4)...)
	// ...and a crash had kept the old log's removal (and so the fence
	// that follows it) from the disk.
	if err := os.Remove(filepath.Join(rangeDir, "log")); err != nil {
		t.Fatal(err)
	}
	oldRange(t, filepath.Join(root, "scratch"))
	if err := os.Rename(filepath.Join(root, "scratch", "log"), filepath.Join(rangeDir, "log")); err != nil {
		t.Fatal(err)
	}
	if err := writeMarker(filepath.Join(rangeDir, walMigrated), rangeDir); err != nil {
		t.Fatal(err)
	}
	if _, err := MigrateRangeToWAL(w, 7, rangeDir); err != nil {
		t.Fatal(err)
	}
	checkMigrated(t, w, 7, want)
	checkOldFilesGone(t, rangeDir)
}

// A Raft group runs on the node's WAL: it bootstraps, commits, snapshots
// and compacts, and after a restart of the store (the WAL reopened) finds
// its term, vote and log again.
func TestOpenRaftStorage_RunsRaftOnTheWAL(t *testing.T) {
	dir := t.TempDir()
	start := func(s *Store, bootstrap bool) (*raft.Raft, *raft.MockFSM) {
		// Without a descriptor the range would count as dropped.
		if _, err := s.OpenRange(Descriptor{ID: 2, Generation: 1}); err != nil {
			t.Fatal(err)
		}
		st, err := s.OpenRaftStorage(2, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		conf := raft.DefaultConfig()
		conf.LocalID = "n1"
		conf.HeartbeatTimeout = 50 * time.Millisecond
		conf.ElectionTimeout = 50 * time.Millisecond
		conf.LeaderLeaseTimeout = 50 * time.Millisecond
		conf.SnapshotThreshold = 50
		conf.TrailingLogs = 20
		conf.Logger = hclog.NewNullLogger()
		_, trans := raft.NewInmemTransport("n1")
		// The range's own snapshot store keeps references to a RangeFSM's
		// state; MockFSM's snapshots go to files of their own.
		snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(dir, "mock-snapshots"), 2, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		if bootstrap {
			if err := raft.BootstrapCluster(conf, st.Log(), st.Stable(), snaps, trans, raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: "n1"}}}); err != nil {
				t.Fatal(err)
			}
		}
		fsm := &raft.MockFSM{}
		r, err := raft.NewRaft(conf, fsm, st.Log(), st.Stable(), snaps, trans)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; r.State() != raft.Leader; i++ {
			if i == 200 {
				t.Fatal("no leader")
			}
			time.Sleep(10 * time.Millisecond)
		}
		return r, fsm
	}
	s := openStore(t, dir)
	r, _ := start(s, true)
	for i := 0; i < 120; i++ {
		if err := r.Apply(fmt.Appendf(nil, "cmd %d", i), time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	last := r.LastIndex()
	term, _ := s.wal.Range(2).GetUint64([]byte("CurrentTerm"))
	first, _ := s.wal.Range(2).FirstIndex()
	if first <= 1 || term == 0 {
		t.Fatalf("after the snapshot: first index %d, term %d; want compacted and a term", first, term)
	}
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	defer s.Close()
	r, fsm := start(s, false)
	defer func() { r.Shutdown().Error() }() // before the store closes
	if got := r.LastIndex(); got < last {
		t.Fatalf("after the restart the last index is %d, want at least %d", got, last)
	}
	if got, _ := s.wal.Range(2).GetUint64([]byte("CurrentTerm")); got < term {
		t.Fatalf("term %d after the restart, want at least %d", got, term)
	}
	if err := r.Apply([]byte("after"), time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if logs := fsm.Logs(); len(logs) == 0 || string(logs[len(logs)-1]) != "after" {
		t.Fatalf("the FSM applied %d entries, the last %q", len(logs), logs[len(logs)-1])
	}
}

// A raft.db that an older kvd created beside the fence, before it failed
// on it, holds nothing: it is removed, never imported over the range's
// real state.
func TestMigrateRangeToWAL_IgnoresWhatAnOlderKvdLeftBesideTheFence(t *testing.T) {
	root := t.TempDir()
	rangeDir := filepath.Join(root, "ranges", "7")
	want := oldRange(t, rangeDir)
	w := openTestWAL(t, filepath.Join(root, "wal"))
	if _, err := MigrateRangeToWAL(w, 7, rangeDir); err != nil {
		t.Fatal(err)
	}
	// What the previous release's OpenRaftStorage does: create raft.db,
	// then fail to make the log directory where the fence is.
	db, err := raftboltdb.NewBoltStore(filepath.Join(rangeDir, "raft.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.MkdirAll(filepath.Join(rangeDir, "log"), 0o755); err == nil {
		t.Fatal("an older kvd could make its log directory over the fence")
	}
	moved, err := MigrateRangeToWAL(w, 7, rangeDir)
	if err != nil || moved {
		t.Fatalf("migrate again: moved %v, %v; want nothing moved", moved, err)
	}
	checkMigrated(t, w, 7, want)
	checkOldFilesGone(t, rangeDir)
}
