package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func logEntry(index, term uint64, data string) *raft.Log {
	return &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: []byte(data), AppendedAt: time.Unix(0, int64(index)*1000)}
}

func entries(from, to, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, logEntry(i, term, fmt.Sprintf("t%d-e%d", term, i)))
	}
	return out
}

func openLog(t *testing.T, dir string, maxSegment int64) *SegmentLog {
	t.Helper()
	l, err := OpenSegmentLog(dir)
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	if maxSegment > 0 {
		l.maxSegment = maxSegment
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// checkLog asserts that l holds exactly want (nil: empty), entry by entry.
func checkLog(t *testing.T, l raft.LogStore, want []*raft.Log) {
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
		if got.Index != w.Index || got.Term != w.Term || got.Type != w.Type || !bytes.Equal(got.Data, w.Data) || !got.AppendedAt.Equal(w.AppendedAt) {
			t.Fatalf("entry %d = %+v, want %+v", w.Index, got, *w)
		}
	}
	var l0 raft.Log
	if err := l.GetLog(first-1, &l0); !errors.Is(err, raft.ErrLogNotFound) && first > 1 {
		t.Fatalf("entry before the first: %v", err)
	}
	if err := l.GetLog(last+1, &l0); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("entry after the last: %v", err)
	}
}

func TestSegmentLog_Operations(t *testing.T) {
	cat := func(parts ...[]*raft.Log) []*raft.Log {
		var out []*raft.Log
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	type step struct {
		store          []*raft.Log
		delMin, delMax uint64 // a DeleteRange when delMax > 0
	}
	tests := []struct {
		name  string
		steps []step
		want  []*raft.Log
	}{
		{"append", []step{{store: entries(1, 10, 1)}, {store: entries(11, 40, 2)}}, cat(entries(1, 10, 1), entries(11, 40, 2))},
		{"suffix overwritten by a new leader", []step{{store: entries(1, 30, 1)}, {delMin: 21, delMax: 30}, {store: entries(21, 25, 2)}},
			cat(entries(1, 20, 1), entries(21, 25, 2))},
		{"half the log cut", []step{{store: entries(1, 60, 1)}, {delMin: 1 + 60/2, delMax: 60}}, entries(1, 30, 1)},
		{"prefix compacted", []step{{store: entries(1, 60, 1)}, {delMin: 1, delMax: 45}}, entries(46, 60, 1)},
		{"prefix compacted, then more", []step{{store: entries(1, 60, 1)}, {delMin: 1, delMax: 45}, {store: entries(61, 70, 2)}},
			cat(entries(46, 60, 1), entries(61, 70, 2))},
		{"everything deleted, restarts higher (snapshot installed)", []step{{store: entries(1, 60, 1)}, {delMin: 1, delMax: 60}, {store: entries(101, 110, 3)}},
			entries(101, 110, 3)},
		{"everything deleted, restarts lower", []step{{store: entries(50, 60, 1)}, {delMin: 50, delMax: 60}, {store: entries(20, 25, 3)}},
			entries(20, 25, 3)},
		{"first entry not at 1", []step{{store: entries(1000, 1010, 4)}}, entries(1000, 1010, 4)},
		{"out-of-range delete is a no-op", []step{{store: entries(1, 5, 1)}, {delMin: 10, delMax: 20}}, entries(1, 5, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// Small segments (a few records each) so that every case
			// crosses segment boundaries.
			l := openLog(t, dir, 256)
			for i, s := range tc.steps {
				if s.store != nil {
					if err := l.StoreLogs(s.store); err != nil {
						t.Fatalf("step %d: store: %v", i, err)
					}
				}
				if s.delMax > 0 {
					if err := l.DeleteRange(s.delMin, s.delMax); err != nil {
						t.Fatalf("step %d: delete: %v", i, err)
					}
				}
			}
			checkLog(t, l, tc.want)
			l.Close()
			checkLog(t, openLog(t, dir, 256), tc.want)
		})
	}
}

func TestSegmentLog_RefusesGapsAndMiddleDeletes(t *testing.T) {
	l := openLog(t, t.TempDir(), 0)
	if err := l.StoreLogs(entries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	if err := l.StoreLogs(entries(12, 13, 1)); err == nil {
		t.Error("a gap was accepted")
	}
	if err := l.StoreLogs(entries(5, 6, 1)); err == nil {
		t.Error("an overwrite without a delete was accepted")
	}
	if err := l.DeleteRange(3, 5); err == nil {
		t.Error("a delete from the middle was accepted")
	}
	checkLog(t, l, entries(1, 10, 1))
}

// A crash mid-write leaves a torn record at the end of the last segment:
// reopening cuts it off and keeps every whole entry before it.
func TestSegmentLog_TornTailIsCut(t *testing.T) {
	for _, torn := range []struct {
		name string
		junk func(rec []byte) []byte
	}{
		{"half a record", func(rec []byte) []byte { return rec[:len(rec)/2] }},
		{"bad checksum", func(rec []byte) []byte { rec[len(rec)-1] ^= 0xff; return rec }},
		{"zeros", func(rec []byte) []byte { return make([]byte, 64) }},
	} {
		t.Run(torn.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, 0)
			if err := l.StoreLogs(entries(1, 5, 1)); err != nil {
				t.Fatal(err)
			}
			tail := l.segs[len(l.segs)-1]
			end := tail.size()
			l.Close()
			// The torn write lands right after the last whole record,
			// inside the segment's preallocated space.
			f, err := os.OpenFile(tail.f.Name(), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(torn.junk(appendRecord(nil, logEntry(6, 1, "lost"))), end); err != nil {
				t.Fatal(err)
			}
			f.Close()
			l = openLog(t, dir, 0)
			checkLog(t, l, entries(1, 5, 1))
			// And appends continue after the cut.
			if err := l.StoreLogs(entries(6, 7, 2)); err != nil {
				t.Fatal(err)
			}
			l.Close()
			checkLog(t, openLog(t, dir, 0), append(entries(1, 5, 1), entries(6, 7, 2)...))
		})
	}
}

// Damage anywhere but the tail cannot come from a crash: opening fails
// rather than serve a log with a hole.
func TestSegmentLog_CorruptionBeforeTheTailFails(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 200)
	for i := uint64(0); i < 6; i++ {
		if err := l.StoreLogs(entries(1+5*i, 5+5*i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 2 {
		t.Fatalf("want several segments, got %d", len(segs))
	}
	b, _ := os.ReadFile(segs[0])
	b[len(b)-1] ^= 0xff
	os.WriteFile(segs[0], b, 0o644)
	if _, err := OpenSegmentLog(dir); !errors.Is(err, ErrLogCorrupt) {
		t.Fatalf("open with a corrupt first segment: %v, want ErrLogCorrupt", err)
	}
}

// After installing a snapshot, Raft empties a monotonic log and appends
// from the snapshot's index + 1. The log must say it is monotonic (or Raft
// keeps the old entries and appends after a gap, which the log refuses),
// and a crash at any point of that must reopen into the old log's
// emptiness or the new log, never old entries or a wrong first index.
func TestSegmentLog_EmptiedAndBegunAgain(t *testing.T) {
	if !(&SegmentLog{}).IsMonotonic() {
		t.Fatal("the log refuses gaps but does not say it is monotonic")
	}
	// The old log's segment files may still be there when the new log
	// begins: their removal never reached the disk (a crash), or failed
	// (Raft only logs that, and goes on appending).
	const (
		removed = iota
		leftAtCrash
		leftRunning
	)
	type testCase struct {
		name     string
		old, new []*raft.Log
		leftover int
	}
	var tests []testCase
	for _, where := range []struct {
		name     string
		old, new []*raft.Log
	}{
		{"above", entries(1, 55, 1), entries(40056, 40060, 3)},
		{"below", entries(50, 60, 1), entries(20, 25, 3)},
		{"inside the old log", entries(1, 60, 1), entries(30, 35, 3)},
	} {
		for leftover, how := range []string{"", ", its segments left at a crash", ", its segments left while running"} {
			tests = append(tests, testCase{"begun again " + where.name + how, where.old, where.new, leftover})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			l := openLog(t, dir, 256)
			if err := l.StoreLogs(tc.old); err != nil {
				t.Fatal(err)
			}
			saved := map[string][]byte{}
			names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
			for _, p := range names {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				saved[p] = b
			}
			first, last := tc.old[0].Index, tc.old[len(tc.old)-1].Index
			if err := l.DeleteRange(first, last); err != nil { // raft's removeOldLogs
				t.Fatal(err)
			}
			if tc.leftover != removed {
				for p, b := range saved {
					if err := os.WriteFile(p, b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			if tc.leftover != leftRunning {
				// A crash between the delete and the next append.
				l.Close()
				l = openLog(t, dir, 256)
			}
			checkLog(t, l, nil)
			if err := l.StoreLogs(tc.new); err != nil {
				t.Fatalf("first append after the delete: %v", err)
			}
			checkLog(t, l, tc.new)
			// A crash after it.
			l.Close()
			l = openLog(t, dir, 256)
			checkLog(t, l, tc.new)
			more := entries(tc.new[len(tc.new)-1].Index+1, tc.new[len(tc.new)-1].Index+40, 3)
			if err := l.StoreLogs(more); err != nil {
				t.Fatal(err)
			}
			l.Close()
			checkLog(t, openLog(t, dir, 256), append(slices.Clone(tc.new), more...))
		})
	}
}

// Segments wholly below the floor are what a compaction left when its
// removal did not reach the disk: reopening drops them, even where they
// do not join up with the live log.
func TestSegmentLog_DeadSegmentsBelowTheFloorAreDropped(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 256)
	if err := l.StoreLogs(entries(1, 10, 1)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	stale := map[string][]byte{}
	for _, p := range names {
		b, _ := os.ReadFile(p)
		stale[p] = b
	}
	l = openLog(t, dir, 256)
	if err := l.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	if err := l.StoreLogs(entries(500, 520, 2)); err != nil {
		t.Fatal(err)
	}
	l.Close()
	for p, b := range stale {
		os.WriteFile(p, b, 0o644)
	}
	l = openLog(t, dir, 256)
	checkLog(t, l, entries(500, 520, 2))
	if left, _ := filepath.Glob(filepath.Join(dir, "0000000000000000000[0-9].seg")); len(left) != 0 {
		t.Errorf("dead segments still on disk after reopening: %v", left)
	}
}

// Random operations against hashicorp/raft's in-memory store as the
// model, reopening the log now and then.
func TestSegmentLog_MatchesModel(t *testing.T) {
	dir := t.TempDir()
	l := openLog(t, dir, 512)
	model := raft.NewInmemStore()
	rng := rand.New(rand.NewPCG(1, 2))
	term := uint64(1)
	behind := false
	for step := 0; step < 1000; step++ {
		// Half the time appends return before their sync, as a leader's do.
		behind = rng.IntN(2) == 0
		l.SetSyncBehind(func() bool { return behind })
		first, _ := model.FirstIndex()
		last, _ := model.LastIndex()
		switch op := rng.IntN(10); {
		case op < 6:
			n := uint64(1 + rng.IntN(20))
			from := last + 1
			if last == 0 {
				from = uint64(1 + rng.IntN(50))
			}
			batch := entries(from, from+n-1, term)
			if err := l.StoreLogs(batch); err != nil {
				t.Fatalf("step %d: %v", step, err)
			}
			model.StoreLogs(batch)
		case op == 6 && last > first:
			cut := first + 1 + uint64(rng.IntN(int(last-first)))
			term++
			l.DeleteRange(cut, last)
			model.DeleteRange(cut, last)
		case op == 7 && last > first:
			upTo := first + uint64(rng.IntN(int(last-first)))
			l.DeleteRange(first, upTo)
			model.DeleteRange(first, upTo)
		case op == 8 && rng.IntN(10) == 0 && last > 0:
			l.DeleteRange(first, last)
			model.DeleteRange(first, last)
		case op == 9:
			l.Close()
			l = openLog(t, dir, 512)
		}
		if last, _ := l.LastIndex(); l.WaitSynced(last) != nil || l.SyncedIndex() < last {
			t.Fatalf("step %d: entries up to %d never became durable (synced %d)", step, last, l.SyncedIndex())
		}
		first, _ = model.FirstIndex()
		last, _ = model.LastIndex()
		var want []*raft.Log
		for i := first; i <= last && last > 0; i++ {
			var e raft.Log
			model.GetLog(i, &e)
			want = append(want, &e)
		}
		checkLog(t, l, want)
	}
}

// gatedSync replaces a log's fdatasync with one the test releases.
type gatedSync struct {
	entered chan struct{}
	release chan error
}

func gateSync(l *SegmentLog) *gatedSync {
	g := &gatedSync{entered: make(chan struct{}, 16), release: make(chan error)}
	l.fsync = func(*os.File) error {
		g.entered <- struct{}{}
		return <-g.release
	}
	return g
}

func TestSegmentLog_SyncBehind(t *testing.T) {
	l := openLog(t, t.TempDir(), 0)
	l.StoreLogs(entries(1, 3, 1)) // synced before the gate goes in
	g := gateSync(l)
	l.SetSyncBehind(func() bool { return true })

	// A leader's append returns once written; its sync follows.
	if err := l.StoreLogs(entries(4, 6, 1)); err != nil {
		t.Fatal(err)
	}
	<-g.entered
	if got := l.SyncedIndex(); got != 3 {
		t.Fatalf("synced %d while the sync of 4-6 is held, want 3", got)
	}
	checkLog(t, l, entries(1, 6, 1)) // readable before durable
	waited := make(chan error, 1)
	go func() { waited <- l.WaitSynced(6) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitSynced(6) returned %v before the sync finished", err)
	default:
	}
	g.release <- nil
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if got := l.SyncedIndex(); got != 6 {
		t.Fatalf("synced %d, want 6", got)
	}

	// Anything but commands is synced before the append returns.
	cfg := &raft.Log{Index: 7, Term: 1, Type: raft.LogConfiguration, Data: []byte("cfg")}
	stored := make(chan error, 1)
	go func() { stored <- l.StoreLogs([]*raft.Log{cfg}) }()
	<-g.entered
	select {
	case err := <-stored:
		t.Fatalf("a configuration entry's append returned (%v) before its sync", err)
	default:
	}
	g.release <- nil
	if err := <-stored; err != nil || l.SyncedIndex() != 7 {
		t.Fatalf("append: %v, synced %d, want 7", err, l.SyncedIndex())
	}
}

// A truncation waits for the sync in flight, and entries written again at
// the cut indexes are not taken for durable.
func TestSegmentLog_SyncBehindThenTruncate(t *testing.T) {
	l := openLog(t, t.TempDir(), 0)
	l.StoreLogs(entries(1, 3, 1))
	g := gateSync(l)
	l.SetSyncBehind(func() bool { return true })
	l.StoreLogs(entries(4, 8, 1))
	<-g.entered
	cut := make(chan error, 1)
	go func() { cut <- l.DeleteRange(6, 8) }()
	select {
	case err := <-cut:
		t.Fatalf("truncation returned (%v) while a sync was in flight", err)
	default:
	}
	g.release <- nil // the syncer's sync of 4-8; then the cut goes ahead
	if err := <-cut; err != nil {
		t.Fatal(err)
	}
	if got := l.SyncedIndex(); got != 5 {
		t.Fatalf("synced %d after cutting 6-8, want 5", got)
	}
	l.StoreLogs(entries(6, 7, 2))
	<-g.entered
	if got := l.SyncedIndex(); got != 5 {
		t.Fatalf("synced %d with 6-7 rewritten but not synced, want 5", got)
	}
	g.release <- nil
	if err := l.WaitSynced(7); err != nil {
		t.Fatal(err)
	}
	checkLog(t, l, append(entries(1, 5, 1), entries(6, 7, 2)...))
}

// A failed sync behind is never reported as durable.
func TestSegmentLog_SyncBehindFailureIsSticky(t *testing.T) {
	l := openLog(t, t.TempDir(), 0)
	var failures []error
	l.failed = func(err error) { failures = append(failures, err) }
	g := gateSync(l)
	l.SetSyncBehind(func() bool { return true })
	l.StoreLogs(entries(1, 2, 1))
	<-g.entered
	g.release <- errors.New("disk on fire")
	if err := l.WaitSynced(2); err == nil {
		t.Fatal("WaitSynced succeeded after the sync failed")
	}
	l.fsync = datasync
	if err := l.StoreLogs(entries(3, 3, 1)); err == nil {
		t.Fatal("an append after a failed sync succeeded")
	}
	if len(failures) != 1 {
		t.Fatalf("the failure hook ran %d times, want once", len(failures))
	}
}
