package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// smallChunks makes every few records of a snapshot a transaction of
// their own.
func smallChunks(c *Config) { c.RestoreChunkBytes = 1 << 10 }

// snapshotOf returns range id's snapshot stream holding n keys k000...
// of 100-byte values, applied up to index n.
func snapshotOf(t *testing.T, id uint64, n int) []byte {
	t.Helper()
	src := openStore(t, t.TempDir())
	defer src.Close()
	f := mustRange(t, src, id)
	var logs []*raft.Log
	for i := range n {
		logs = append(logs, put(uint64(i+1), fmt.Sprintf("k%03d", i), fmt.Sprintf("%0100d", i)))
	}
	f.ApplyBatch(logs)
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// stagedRanges counts the ranges with a staged snapshot (-1: no staging
// bucket at all).
func stagedRanges(t *testing.T, s *Store) int {
	t.Helper()
	n := -1
	if err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(restoreStaging); b != nil {
			n = 0
			return b.ForEachBucket(func([]byte) error { n++; return nil })
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRangeFSM_RestoreInChunks(t *testing.T) {
	stream := snapshotOf(t, 1, 300)
	dst := openStoreWith(t, t.TempDir(), smallChunks)
	defer dst.Close()
	g := mustRange(t, dst, 1)
	g.ApplyBatch([]*raft.Log{put(1, "old", "replaced")})
	dst.Flush()
	if err := g.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if g.AppliedIndex() != 300 || g.DurableIndex() != 300 {
		t.Fatalf("applied %d durable %d, want 300", g.AppliedIndex(), g.DurableIndex())
	}
	mustMissing(t, g, "old")
	for i := range 300 {
		mustGet(t, g, fmt.Sprintf("k%03d", i), fmt.Sprintf("%0100d", i))
	}
	if keys, _ := g.Size(); keys != 300 {
		t.Fatalf("size %d keys, want 300", keys)
	}
	if n := stagedRanges(t, dst); n > 0 {
		t.Fatalf("%d staged snapshots left after the restore", n)
	}
	// The swapped-in bucket is the range's for good: it survives a reopen.
	dir := dst.Dir()
	dst.Close()
	again := openStore(t, dir)
	defer again.Close()
	h := mustRange(t, again, 1)
	mustGet(t, h, "k299", fmt.Sprintf("%0100d", 299))
	if h.AppliedIndex() != 300 {
		t.Fatalf("applied after reopen %d, want 300", h.AppliedIndex())
	}
}

// While a snapshot streams in, the node's other ranges keep committing
// and the restoring range keeps serving its old state: only the final
// swap holds the committer.
func TestRangeFSM_RestoreDoesNotStallOtherRanges(t *testing.T) {
	stream := snapshotOf(t, 1, 300)
	dst := openStoreWith(t, t.TempDir(), smallChunks)
	defer dst.Close()
	g := mustRange(t, dst, 1)
	g.ApplyBatch([]*raft.Log{put(1, "old", "still served")})
	other := mustRange(t, dst, 2)
	dst.Flush()

	pr, pw := io.Pipe()
	restored := make(chan error, 1)
	go func() { restored <- g.Restore(pr) }()
	half := len(stream) / 2
	if _, err := pw.Write(stream[:half]); err != nil { // returns once Restore has read it all
		t.Fatal(err)
	}
	other.ApplyBatch([]*raft.Log{put(1, "x", "y")})
	flushed := make(chan error, 1)
	go func() { flushed <- dst.Flush() }()
	select {
	case err := <-flushed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		pw.CloseWithError(errors.New("test over"))
		t.Fatal("another range's commit waited for the whole snapshot to arrive")
	}
	if other.DurableIndex() != 1 {
		t.Fatalf("other range durable %d, want 1", other.DurableIndex())
	}
	mustGet(t, g, "old", "still served")
	if g.AppliedIndex() != 1 {
		t.Fatalf("restoring range's applied index %d mid-restore, want its old 1", g.AppliedIndex())
	}
	if n := stagedRanges(t, dst); n != 1 {
		t.Fatalf("%d staged snapshots mid-restore, want 1", n)
	}
	if _, err := pw.Write(stream[half:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if err := <-restored; err != nil {
		t.Fatal(err)
	}
	mustMissing(t, g, "old")
	mustGet(t, g, "k150", fmt.Sprintf("%0100d", 150))
}

// A stream that breaks after some chunks were written leaves the old
// state and no staged data; so does a node that stopped mid-restore,
// once it opens again.
func TestRangeFSM_BrokenChunkedRestoreChangesNothing(t *testing.T) {
	stream := snapshotOf(t, 1, 300)
	flipped := bytes.Clone(stream)
	flipped[len(flipped)-100] ^= 0xff
	cases := map[string][]byte{
		"truncated late": stream[:len(stream)-50],
		"bit flip late":  flipped,
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			dst := openStoreWith(t, t.TempDir(), smallChunks)
			defer dst.Close()
			g := mustRange(t, dst, 1)
			g.ApplyBatch([]*raft.Log{put(1, "keep", "me")})
			dst.Flush()
			err := g.Restore(io.NopCloser(bytes.NewReader(s)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("restore: %v, want ErrBadSnapshot", err)
			}
			mustGet(t, g, "keep", "me")
			mustMissing(t, g, "k000")
			if n := stagedRanges(t, dst); n > 0 {
				t.Fatalf("%d staged snapshots left", n)
			}
		})
	}
	t.Run("stopped mid-restore", func(t *testing.T) {
		dir := t.TempDir()
		dst := openStoreWith(t, dir, smallChunks)
		g := mustRange(t, dst, 1)
		g.ApplyBatch([]*raft.Log{put(1, "keep", "me")})
		dst.Flush()
		// The staging half of Restore alone, as a crash before the swap
		// leaves it.
		if _, err := g.stageSnapshot(bytes.NewReader(stream[:len(stream)-50])); err == nil {
			t.Fatal("staging a truncated stream succeeded")
		}
		if n := stagedRanges(t, dst); n != 1 {
			t.Fatalf("%d staged snapshots, want 1", n)
		}
		dst.Close()
		again := openStore(t, dir)
		defer again.Close()
		if n := stagedRanges(t, again); n != -1 {
			t.Fatalf("reopened store still has a staging bucket (%d ranges)", n)
		}
		h := mustRange(t, again, 1)
		mustGet(t, h, "keep", "me")
		mustMissing(t, h, "k000")
	})
}

// A range dropped while its snapshot streams in ends the restore with an
// error, never a crash of the node. (Raft's shutdown waits for Restore,
// so DropReplica cannot do this; DropRange alone can.)
func TestRangeFSM_RestoreOfADroppedRangeFails(t *testing.T) {
	stream := snapshotOf(t, 1, 300)
	dst := openStoreWith(t, t.TempDir(), smallChunks)
	defer dst.Close()
	g := mustRange(t, dst, 1)
	pr, pw := io.Pipe()
	restored := make(chan error, 1)
	go func() { restored <- g.Restore(pr) }()
	if _, err := pw.Write(stream[:len(stream)/2]); err != nil {
		t.Fatal(err)
	}
	if err := dst.DropRange(1); err != nil {
		t.Fatal(err)
	}
	go func() { pw.Write(stream[len(stream)/2:]); pw.Close() }()
	if err := <-restored; err == nil {
		t.Fatal("restore of a dropped range succeeded")
	}
	if n := stagedRanges(t, dst); n > 0 {
		t.Fatalf("%d staged snapshots left", n)
	}
}

// The restore handler runs after a restore, with no lock held (it reads
// the range here, as the node's lease keeper does), and sees the new
// state; a failed restore does not call it.
func TestRangeFSM_RestoreHandlerSeesTheRestoredState(t *testing.T) {
	stream := snapshotOf(t, 1, 30)
	dst := openStoreWith(t, t.TempDir(), smallChunks)
	defer dst.Close()
	g := mustRange(t, dst, 1)
	var seen []int
	g.SetRestoreHandler(func() {
		kvs, _, _, _, err := g.Scan(nil, nil, 1000)
		if err != nil {
			t.Errorf("scan from the restore handler: %v", err)
		}
		seen = append(seen, len(kvs))
	})
	if err := g.Restore(io.NopCloser(bytes.NewReader(stream[:len(stream)/2]))); err == nil {
		t.Fatal("a cut snapshot restored")
	}
	if len(seen) != 0 {
		t.Fatalf("the handler ran after a failed restore: %v", seen)
	}
	if err := g.Restore(io.NopCloser(bytes.NewReader(stream))); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 1 || seen[0] != 30 {
		t.Fatalf("the handler saw %v keys, want one call with 30", seen)
	}
}
