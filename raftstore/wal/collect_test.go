package wal

import (
	"runtime"
	"testing"

	"github.com/hashicorp/raft"
)

// A range that wrote a few entries and a term long ago and then slept
// must not keep the segments written since from being freed: the
// collector copies its records forward, and the log stays a few segments
// long however much the busy range writes.
func TestWAL_IdleRangeDoesNotPinOldSegments(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 16 << 10}
	w := testOpenDir(t, dir, opts)
	w.SetSyncFunc(func(func() error) error { return nil })
	idle, busy := w.Range(1), w.Range(2)
	mustStore(t, idle, entries(1, 1, 3, 1))
	if err := idle.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		t.Fatal(err)
	}
	// The busy range keeps its newest 50 entries, as Raft keeps trailing
	// entries after each snapshot.
	maxSegs := 0
	for i := uint64(1); i <= 4000; i++ {
		mustStore(t, busy, entries(2, i, i, 1))
		if i%100 == 0 {
			if err := busy.DeleteRange(1, i-50); err != nil {
				t.Fatal(err)
			}
			if err := w.Collect(); err != nil {
				t.Fatal(err)
			}
			maxSegs = max(maxSegs, w.Stats().Segments)
		}
	}
	st := w.Stats()
	if st.Collections == 0 {
		t.Fatal("no segment was ever freed")
	}
	if seq := idle.minSeq(); seq == 1 {
		t.Fatal("the idle range still pins the first segment")
	}
	// Without the copies every segment since the first would be kept:
	// some 4000 entries of ~80 bytes, dozens of 16 KiB segments.
	if maxSegs > 6 {
		t.Fatalf("the log grew to %d segments", maxSegs)
	}
	t.Logf("at most %d segments; %+v", maxSegs, st)
	w.Close()
	w = testOpenDir(t, dir, opts)
	checkRange(t, w.Range(1), &modelRange{logs: entries(1, 1, 3, 1), stable: map[string][]byte{"CurrentTerm": {0, 0, 0, 0, 0, 0, 0, 1}}})
	checkRange(t, w.Range(2), &modelRange{logs: entries(2, 3951, 4000, 1)})
}

// A sleeping range keeps up to TrailingLogs (10,240) entries, often
// written one per batch; a node keeps a thousand of them, and each may
// cost at most 100 KiB. Its index must be a few bytes per entry, and far
// less once the collector has copied it into large records.
func TestRangeLog_SleepingRangeIndexIsSmall(t *testing.T) {
	const (
		ranges   = 8
		trailing = 10240
	)
	w := testOpenDir(t, t.TempDir(), Options{SegmentSize: 4 << 20, CacheBytes: 1 << 20})
	w.SetSyncFunc(func(func() error) error { return nil })
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// One entry per batch, the ranges' records interleaved as on a busy
	// node.
	e := &raft.Log{Term: 1, Type: raft.LogCommand, Data: make([]byte, 256)}
	batch := []*raft.Log{e}
	for i := uint64(1); i <= trailing; i++ {
		for id := uint64(1); id <= ranges; id++ {
			e.Index = i
			if err := w.Range(id).StoreLogs(batch); err != nil {
				t.Fatal(err)
			}
		}
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := (int64(after.HeapAlloc) - int64(before.HeapAlloc) - w.opts.CacheBytes) / ranges
	est := w.Range(1).memSize()
	t.Logf("per range: index estimate %d bytes (%.1f per entry), heap %d bytes", est, float64(est)/trailing, heap)
	if est > 80<<10 || (heap > 100<<10 && !raceEnabled) {
		t.Fatalf("a range of %d single-entry batches costs %d bytes by estimate, %d by heap; want under 80 KiB and 100 KiB", trailing, est, heap)
	}
	// Seal the active segment too: the collector copies from sealed ones.
	if err := w.rotate(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.collect(true); err != nil {
		t.Fatal(err)
	}
	compact := w.Range(1).memSize()
	t.Logf("per range after the collector copied it: %d bytes", compact)
	if compact > 4<<10 {
		t.Fatalf("after the copy the index takes %d bytes, want a few blocks", compact)
	}
	for id := uint64(1); id <= ranges; id++ {
		v := w.Range(id)
		var got raft.Log
		for _, i := range []uint64{1, trailing / 2, trailing} {
			if err := v.GetLog(i, &got); err != nil || got.Index != i || len(got.Data) != 256 {
				t.Fatalf("range %d entry %d after the copy: %+v, %v", id, i, got, err)
			}
		}
	}
}
