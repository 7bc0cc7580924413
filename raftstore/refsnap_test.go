package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// applyPuts applies puts k000..k(n-1) of 100-byte values at indexes
// from+1..from+n, the value's digits being i+seed.
func applyPuts(f *RangeFSM, from uint64, n, seed int) {
	var logs []*raft.Log
	for i := range n {
		logs = append(logs, put(from+uint64(i)+1, fmt.Sprintf("k%03d", i), fmt.Sprintf("%0100d", i+seed)))
	}
	f.ApplyBatch(logs)
}

// takeSnapshot makes the range's own snapshot through its Raft storage,
// as Raft does, and returns its id.
func takeSnapshot(t *testing.T, st *RaftStorage, f *RangeFSM) string {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink, err := st.Snapshots.Create(raft.SnapshotVersionMax, f.AppliedIndex(), 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	return sink.ID()
}

// receive copies stream into a sink of st, as Raft's installSnapshot does
// (32 KiB at a time), and returns the sink's id and Close's error.
func receive(t *testing.T, st *RaftStorage, index uint64, stream []byte) (string, error) {
	t.Helper()
	sink, err := st.Snapshots.Create(raft.SnapshotVersionMax, index, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(sink, struct{ io.Reader }{bytes.NewReader(stream)}); err != nil {
		sink.Cancel()
		return sink.ID(), err
	}
	return sink.ID(), sink.Close()
}

// withOwnSnapshot opens a store in a new directory whose range 1 holds
// n keys (applyPuts) and took a snapshot of them; it returns the store,
// the range, its Raft storage and the snapshot's id. The store closes
// when the test ends.
func withOwnSnapshot(t *testing.T, n int) (*Store, *RangeFSM, *RaftStorage, string) {
	t.Helper()
	s := openStore(t, t.TempDir())
	t.Cleanup(func() { s.Close() })
	f := mustRange(t, s, 1)
	applyPuts(f, 0, n, 0)
	st := openRaftStorage(t, s, 1)
	return s, f, st, takeSnapshot(t, st, f)
}

// streamOf opens snapshot id of st and reads all it streams.
func streamOf(t *testing.T, st *RaftStorage, id string) (*raft.SnapshotMeta, []byte) {
	t.Helper()
	meta, rc, err := st.Snapshots.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	stream, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return meta, stream
}

// restoreReceived has f's st receive stream as a snapshot at index, then
// restores it, as Raft's installSnapshot does, and returns Restore's error.
func restoreReceived(t *testing.T, st *RaftStorage, f *RangeFSM, index uint64, stream []byte) error {
	t.Helper()
	rid, err := receive(t, st, index, stream)
	if err != nil {
		t.Fatal(err)
	}
	_, rc, err := st.Snapshots.Open(rid)
	if err != nil {
		t.Fatal(err)
	}
	return f.Restore(rc)
}

// closedStoreWithOwnSnapshot leaves in dir a store whose range 1 holds
// 100 keys and took a snapshot of them, and returns the snapshot's id.
func closedStoreWithOwnSnapshot(t *testing.T, dir string) string {
	t.Helper()
	s := openStore(t, dir)
	defer s.Close()
	f := mustRange(t, s, 1)
	applyPuts(f, 0, 100, 0)
	return takeSnapshot(t, openRaftStorage(t, s, 1), f)
}

func openRaftStorage(t *testing.T, s *Store, id uint64) *RaftStorage {
	t.Helper()
	st, err := s.OpenRaftStorage(id, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A range's own snapshot is a reference of a few bytes; opened later, it
// streams the range as its state database holds it then, at an applied
// index at or past the snapshot's, in a stream of exactly the size Open
// announces; a receiver stages it as it arrives and Restore swaps it in.
func TestRefSnapshots_OwnSnapshotStreamsTheStateAndAReceiverRestoresIt(t *testing.T) {
	src, f, srcSt, id := withOwnSnapshot(t, 3000)
	metas, err := srcSt.Snapshots.List()
	if err != nil || len(metas) != 1 || metas[0].Index != 3000 {
		t.Fatalf("snapshots: %+v, %v; want one at index 3000", metas, err)
	}
	if metas[0].Size > 32 {
		t.Fatalf("the snapshot file holds %d bytes: want a reference", metas[0].Size)
	}
	// Later writes, committed: the stream carries them too.
	applyPuts(f, 3000, 10, 7)
	if err := src.Flush(); err != nil {
		t.Fatal(err)
	}
	meta, stream := streamOf(t, srcSt, id)
	if int64(len(stream)) != meta.Size {
		t.Fatalf("Open announced %d bytes and streamed %d", meta.Size, len(stream))
	}
	if meta.Index != 3000 {
		t.Fatalf("Open's meta says index %d, want the snapshot's 3000", meta.Index)
	}

	dst := openStoreWith(t, t.TempDir(), smallChunks)
	defer dst.Close()
	g := mustRange(t, dst, 1)
	applyPuts(g, 0, 1, 99) // an older state the snapshot replaces
	dstSt := openRaftStorage(t, dst, 1)
	rid, err := receive(t, dstSt, meta.Index, stream)
	if err != nil {
		t.Fatal(err)
	}
	mustGet(t, g, "k000", fmt.Sprintf("%0100d", 99)) // staged, not yet swapped in
	rmeta, rrc, err := dstSt.Snapshots.Open(rid)
	if err != nil {
		t.Fatal(err)
	}
	if rmeta.Size > 32 {
		t.Fatalf("the received snapshot's file holds %d bytes: want a reference to the staged data", rmeta.Size)
	}
	if err := g.Restore(rrc); err != nil {
		t.Fatal(err)
	}
	if g.AppliedIndex() != 3010 {
		t.Fatalf("applied %d after the restore, want 3010 (the state streamed)", g.AppliedIndex())
	}
	for _, i := range []int{0, 5, 9} {
		mustGet(t, g, fmt.Sprintf("k%03d", i), fmt.Sprintf("%0100d", i+7))
	}
	for _, i := range []int{10, 2999} {
		mustGet(t, g, fmt.Sprintf("k%03d", i), fmt.Sprintf("%0100d", i))
	}
	if k, _ := g.Size(); k != 3000 {
		t.Fatalf("%d keys after the restore, want 3000", k)
	}
	// Now the receiver's snapshot streams its own state in turn.
	_, rc2, err := dstSt.Snapshots.Open(rid)
	if err != nil {
		t.Fatal(err)
	}
	again, err := io.ReadAll(rc2)
	rc2.Close()
	if err != nil || !bytes.Equal(again, stream) {
		t.Fatalf("the receiver streams %d bytes (err %v), want the %d it received", len(again), err, len(stream))
	}
}

// A stream that is cut, corrupt or runs on past its end leaves no
// snapshot and nothing staged, and the range as it was.
func TestRefSnapshots_ABadReceivedStreamLeavesNothing(t *testing.T) {
	good := snapshotOf(t, 1, 2000)
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0xff
	for _, tc := range []struct {
		name   string
		stream []byte
	}{
		{"cut", good[:len(good)-100]},
		{"corrupt", corrupt},
		{"bytes past the end", append(bytes.Clone(good), 1, 2, 3)},
		{"not a snapshot", bytes.Repeat([]byte("x"), 1000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStoreWith(t, t.TempDir(), smallChunks)
			defer s.Close()
			f := mustRange(t, s, 1)
			applyPuts(f, 0, 1, 99)
			st := openRaftStorage(t, s, 1)
			if _, err := receive(t, st, 2000, tc.stream); err == nil {
				t.Fatal("the sink took the stream")
			}
			if list, err := st.Snapshots.List(); err != nil || len(list) != 0 {
				t.Fatalf("snapshots: %v, %v; want none", list, err)
			}
			f.stagedMu.Lock()
			staged := f.staged
			f.stagedMu.Unlock()
			if staged != nil {
				t.Fatal("something is recorded as staged")
			}
			if stagingLeft(t, s, f) {
				t.Fatal("the staging bucket is left")
			}
			mustGet(t, f, "k000", fmt.Sprintf("%0100d", 99))
		})
	}
}

// A node that stops after a snapshot arrived and before Restore swapped
// it in has a reference its state database is behind: Open says so, and
// the snapshot can be dropped for the leader to send again.
func TestRefSnapshots_AReceivedSnapshotAStopLostIsBehindAndDropped(t *testing.T) {
	stream := snapshotOf(t, 1, 2000)
	dir := t.TempDir()
	s := openStore(t, dir)
	mustRange(t, s, 1)
	st := openRaftStorage(t, s, 1)
	id, err := receive(t, st, 2000, stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	defer s.Close()
	f := mustRange(t, s, 1)
	st = openRaftStorage(t, s, 1)
	if _, _, err := st.Snapshots.Open(id); !errors.Is(err, ErrSnapshotBehind) {
		t.Fatalf("Open of the lost snapshot: %v, want ErrSnapshotBehind", err)
	}
	if err := st.DropSnapshot(id); err != nil {
		t.Fatal(err)
	}
	if list, err := st.Snapshots.List(); err != nil || len(list) != 0 {
		t.Fatalf("snapshots after the drop: %v, %v; want none", list, err)
	}
	if f.AppliedIndex() != 0 {
		t.Fatalf("applied %d, want 0: nothing was restored", f.AppliedIndex())
	}
	for _, bad := range []string{"", ".", "..", "../1", "a/b", id + ".tmp"} {
		if err := st.DropSnapshot(bad); err == nil {
			t.Errorf("DropSnapshot(%q) removed something", bad)
		}
	}
}

// A snapshot file written whole, as every build before references wrote
// them, is read back as it is and restores.
func TestRefSnapshots_AWholeFileOfAnOlderBuildIsReadAsItIs(t *testing.T) {
	stream := snapshotOf(t, 1, 2000)
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, 1)
	st := openRaftStorage(t, s, 1)
	fs := st.Snapshots.(*refStore).FileSnapshotStore
	sink, err := fs.Create(raft.SnapshotVersionMax, 2000, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sink.Write(stream); err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	meta, rc, err := st.Snapshots.Open(sink.ID())
	if err != nil {
		t.Fatal(err)
	}
	if meta.Size != int64(len(stream)) {
		t.Fatalf("meta size %d, want %d", meta.Size, len(stream))
	}
	if err := f.Restore(rc); err != nil {
		t.Fatal(err)
	}
	if f.AppliedIndex() != 2000 {
		t.Fatalf("applied %d, want 2000", f.AppliedIndex())
	}
	mustGet(t, f, "k1999", fmt.Sprintf("%0100d", 1999))
}

// A stream closed before its end, or never read, releases its read
// transaction and its writer (goleak checks the goroutine at the
// package's end), and the stream is exactly the size Open announced.
func TestRefSnapshots_AStreamClosedEarlyReleasesItsTransaction(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, 1)
	applyPuts(f, 0, 3000, 0)
	st := openRaftStorage(t, s, 1)
	id := takeSnapshot(t, st, f)
	for _, read := range []int{0, 100, 64 << 10, -1} {
		meta, rc, err := st.Snapshots.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		if read < 0 {
			all, err := io.ReadAll(rc)
			if err != nil || int64(len(all)) != meta.Size {
				t.Fatalf("read %d bytes (err %v), Open announced %d", len(all), err, meta.Size)
			}
		} else if _, err := io.ReadFull(rc, make([]byte, read)); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		rc.Close() // twice is harmless
	}
	if n := s.db.Stats().OpenTxN; n != 0 {
		t.Fatalf("%d read transactions open after the streams closed", n)
	}
	// The file of a reference is just that.
	data, err := os.ReadFile(filepath.Join(s.RangeDir(1), "snapshots", id, "state.bin"))
	if err != nil || !bytes.HasPrefix(data, snapRefMagic) || len(data) > 32 {
		t.Fatalf("state.bin: %q, %v; want a reference", data, err)
	}
}

// A range's own snapshot that state.db is behind (state.db lost or
// replaced) is an error of its own, never a received snapshot to drop.
func TestRefSnapshots_StateBehindItsOwnSnapshotIsNotDroppable(t *testing.T) {
	dir := t.TempDir()
	id := closedStoreWithOwnSnapshot(t, dir)
	// A fresh state.db under the same range directory.
	if err := os.Remove(filepath.Join(dir, "state.db")); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir)
	defer s.Close()
	mustRange(t, s, 1)
	st := openRaftStorage(t, s, 1)
	_, _, err := st.Snapshots.Open(id)
	if err == nil || errors.Is(err, ErrSnapshotBehind) {
		t.Fatalf("Open of the range's own snapshot over an empty state.db: %v; want an error that is not ErrSnapshotBehind", err)
	}
}

// A received snapshot whose swap fails drops its reference at once, so a
// listed snapshot is never one the state database does not hold.
func TestRefSnapshots_AFailedSwapDropsTheReference(t *testing.T) {
	stream := snapshotOf(t, 1, 2000)
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, 1)
	st := openRaftStorage(t, s, 1)
	id, err := receive(t, st, 2000, stream)
	if err != nil {
		t.Fatal(err)
	}
	_, rc, err := st.Snapshots.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.dropStaged(); err != nil { // the swap finds nothing staged
		t.Fatal(err)
	}
	if err := f.Restore(rc); err == nil {
		t.Fatal("Restore swapped in a staged bucket that was gone")
	}
	if list, err := st.Snapshots.List(); err != nil || len(list) != 0 {
		t.Fatalf("snapshots after the failed swap: %v, %v; want none", list, err)
	}
}

// What a stop leaves in a snapshots directory (a snapshot being written
// or dropped) is gone when the range's storage opens
// again, and what is finished stays.
func TestOpenRaftStorage_CleansWhatAStopLeftInTheSnapshotsDirectory(t *testing.T) {
	dir := t.TempDir()
	id := closedStoreWithOwnSnapshot(t, dir)
	snaps := filepath.Join(dir, "ranges", "1", "snapshots")
	leftovers := []string{"2-5-123.tmp/state.bin", "3-9-456.tmp/meta.json"}
	for _, l := range leftovers {
		p := filepath.Join(snaps, l)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := openStore(t, dir)
	defer s.Close()
	mustRange(t, s, 1)
	st := openRaftStorage(t, s, 1)
	entries, err := os.ReadDir(snaps)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != id {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("snapshots directory holds %v, want only %s", names, id)
	}
	if list, err := st.Snapshots.List(); err != nil || len(list) != 1 {
		t.Fatalf("snapshots: %v, %v; want the one taken", list, err)
	}
}

// A snapshot whose state is behind what the range has applied (a second
// install, from a leader whose state database lagged the first's) leaves
// the state where it is, durable: swapping it in would move the replica
// back, and Raft compacts its log up to the snapshot next.
func TestRefSnapshots_AnOlderSnapshotKeepsTheStateAhead(t *testing.T) {
	_, _, srcSt, id := withOwnSnapshot(t, 100)
	meta, stream := streamOf(t, srcSt, id)

	dir := t.TempDir()
	dst := openStoreWith(t, dir, smallChunks)
	g := mustRange(t, dst, 1)
	restores := 0
	g.SetRestoreHandler(func() { restores++ })
	applyPuts(g, 0, 100, 0)
	applyPuts(g, 100, 10, 7) // the same history, further on: not yet committed
	dstSt := openRaftStorage(t, dst, 1)
	if err := restoreReceived(t, dstSt, g, meta.Index, stream); err != nil {
		t.Fatal(err)
	}
	if g.AppliedIndex() != 110 {
		t.Fatalf("applied %d after restoring a snapshot at %d, want the 110 it had", g.AppliedIndex(), meta.Index)
	}
	if restores != 0 {
		t.Fatalf("the restore handler ran %d times for a state that did not change", restores)
	}
	mustGet(t, g, "k005", fmt.Sprintf("%0100d", 5+7))
	if stagingLeft(t, dst, g) {
		t.Fatal("the staged copy is still there")
	}
	dstSt.Close()
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	// Durable: reopened, the state is still the newer one.
	again := openStore(t, dir)
	defer again.Close()
	h := mustRange(t, again, 1)
	if h.AppliedIndex() != 110 {
		t.Fatalf("applied %d after a reopen, want 110", h.AppliedIndex())
	}
	mustGet(t, h, "k005", fmt.Sprintf("%0100d", 5+7))
}

// Another range's snapshot is refused even when this range has applied
// further than it: what is behind is kept only if it is this range's.
func TestRefSnapshots_AnotherRangesSnapshotIsRefusedWhateverItsIndex(t *testing.T) {
	_, _, srcSt, id := withOwnSnapshot(t, 50)
	meta, stream := streamOf(t, srcSt, id)
	dst := openStore(t, t.TempDir())
	defer dst.Close()
	g := mustRange(t, dst, 2)
	applyPuts(g, 0, 100, 3)
	dstSt := openRaftStorage(t, dst, 2)
	if err := restoreReceived(t, dstSt, g, meta.Index, stream); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("range 2 restoring range 1's snapshot: %v, want ErrBadSnapshot", err)
	}
	if metas, err := dstSt.Snapshots.List(); err != nil || len(metas) != 0 {
		t.Fatalf("after the refusal %d snapshots are listed (%v), want none", len(metas), err)
	}
	mustGet(t, g, "k005", fmt.Sprintf("%0100d", 5+3))
}

// stagingLeft reports whether f's range still has a staging bucket in s.
func stagingLeft(t *testing.T, s *Store, f *RangeFSM) bool {
	t.Helper()
	var left bool
	if err := s.db.View(func(tx *bolt.Tx) error {
		stg := tx.Bucket(restoreStaging)
		left = stg != nil && stg.Bucket(f.bucket) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return left
}
