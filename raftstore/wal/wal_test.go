package wal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestRangeLog_Operations(t *testing.T) {
	cat := func(parts ...[]*raft.Log) []*raft.Log { return slices.Concat(parts...) }
	type step struct {
		store          []*raft.Log
		delMin, delMax uint64 // a DeleteRange when delMax > 0
	}
	tests := []struct {
		name  string
		steps []step
		want  []*raft.Log
	}{
		{"append", []step{{store: entries(1, 1, 10, 1)}, {store: entries(1, 11, 40, 2)}}, cat(entries(1, 1, 10, 1), entries(1, 11, 40, 2))},
		{"suffix overwritten by a new leader", []step{{store: entries(1, 1, 30, 1)}, {delMin: 21, delMax: 30}, {store: entries(1, 21, 25, 2)}},
			cat(entries(1, 1, 20, 1), entries(1, 21, 25, 2))},
		{"suffix cut inside a batch", []step{{store: entries(1, 1, 30, 1)}, {delMin: 17, delMax: 30}}, entries(1, 1, 16, 1)},
		{"prefix compacted", []step{{store: entries(1, 1, 60, 1)}, {delMin: 1, delMax: 45}}, entries(1, 46, 60, 1)},
		{"prefix compacted inside a batch, then more", []step{{store: entries(1, 1, 30, 1)}, {store: entries(1, 31, 60, 1)}, {delMin: 1, delMax: 45}, {store: entries(1, 61, 70, 2)}},
			cat(entries(1, 46, 60, 1), entries(1, 61, 70, 2))},
		{"everything deleted, restarts higher (snapshot installed)", []step{{store: entries(1, 1, 60, 1)}, {delMin: 1, delMax: 60}, {store: entries(1, 101, 110, 3)}},
			entries(1, 101, 110, 3)},
		{"everything deleted, restarts lower", []step{{store: entries(1, 50, 60, 1)}, {delMin: 50, delMax: 60}, {store: entries(1, 20, 25, 3)}},
			entries(1, 20, 25, 3)},
		{"first entry not at 1", []step{{store: entries(1, 1000, 1010, 4)}}, entries(1, 1000, 1010, 4)},
		{"out-of-range delete is a no-op", []step{{store: entries(1, 1, 5, 1)}, {delMin: 10, delMax: 20}}, entries(1, 1, 5, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			// Small segments, so that every case crosses a few; another
			// range writes between every step.
			w := testOpenDir(t, dir, Options{SegmentSize: 512})
			v, other := w.Range(1), w.Range(2)
			var otherNext uint64 = 1
			for i, s := range tc.steps {
				mustStore(t, other, entries(2, otherNext, otherNext+2, 1))
				otherNext += 3
				if s.store != nil {
					mustStore(t, v, s.store)
				}
				if s.delMax > 0 {
					if err := v.DeleteRange(s.delMin, s.delMax); err != nil {
						t.Fatalf("step %d: delete: %v", i, err)
					}
				}
			}
			want := &modelRange{logs: tc.want}
			otherWant := &modelRange{logs: entries(2, 1, otherNext-1, 1)}
			checkRange(t, v, want)
			w.Close()
			w = testOpenDir(t, dir, Options{SegmentSize: 512})
			checkRange(t, w.Range(1), want)
			checkRange(t, w.Range(2), otherWant)
			// And once more after the collector moved everything.
			if _, err := w.collect(true); err != nil {
				t.Fatal(err)
			}
			checkRange(t, w.Range(1), want)
			w.Close()
			w = testOpenDir(t, dir, Options{SegmentSize: 512})
			checkRange(t, w.Range(1), want)
			checkRange(t, w.Range(2), otherWant)
		})
	}
}

func TestRangeLog_RefusesGapsAndMiddleDeletes(t *testing.T) {
	w := testOpenDir(t, t.TempDir(), Options{})
	v := w.Range(1)
	mustStore(t, v, entries(1, 1, 10, 1))
	if err := v.StoreLogs(entries(1, 12, 13, 1)); err == nil {
		t.Error("a gap was accepted")
	}
	if err := v.StoreLogs(entries(1, 5, 6, 1)); err == nil {
		t.Error("an overwrite without a delete was accepted")
	}
	if err := v.DeleteRange(3, 5); err == nil {
		t.Error("a delete from the middle was accepted")
	}
	checkRange(t, v, &modelRange{logs: entries(1, 1, 10, 1)})
}

func TestRangeLog_StableStore(t *testing.T) {
	dir := t.TempDir()
	w := testOpenDir(t, dir, Options{})
	v := w.Range(3)
	if _, err := v.Get([]byte("LastVoteCand")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing key: %v, want an error saying \"not found\" (what hashicorp/raft checks for)", err)
	}
	if _, err := v.GetUint64([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("missing uint64 key: %v", err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(v.SetUint64([]byte("CurrentTerm"), 7))
	must(v.Set([]byte("LastVoteCand"), []byte("n2")))
	must(v.SetUint64([]byte("CurrentTerm"), 8))
	must(w.Range(4).SetUint64([]byte("CurrentTerm"), 99))
	check := func(w *WAL) {
		t.Helper()
		v := w.Range(3)
		if term, err := v.GetUint64([]byte("CurrentTerm")); err != nil || term != 8 {
			t.Fatalf("CurrentTerm = %d, %v; want 8", term, err)
		}
		if cand, err := v.Get([]byte("LastVoteCand")); err != nil || string(cand) != "n2" {
			t.Fatalf("LastVoteCand = %q, %v", cand, err)
		}
		if _, err := v.GetUint64([]byte("LastVoteCand")); err == nil {
			t.Fatal("a 2-byte value read as a uint64")
		}
	}
	check(w)
	w.Close()
	w = testOpenDir(t, dir, Options{})
	check(w)
}

// A crash mid-write leaves a torn record at the end of the newest
// segment: reopening cuts it off and keeps every whole record before it.
func TestWAL_TornTailIsCut(t *testing.T) {
	for _, torn := range []struct {
		name string
		junk func(rec []byte) []byte
	}{
		{"half a record", func(rec []byte) []byte { return rec[:len(rec)/2] }},
		{"bad checksum", func(rec []byte) []byte { rec[len(rec)-1] ^= 0xff; return rec }},
		{"zeros", func(rec []byte) []byte { return make([]byte, 64) }},
		{"a length past the end", func(rec []byte) []byte { rec[0] = 0x7f; return rec }},
	} {
		t.Run(torn.name, func(t *testing.T) {
			dir := t.TempDir()
			w := testOpenDir(t, dir, Options{})
			mustStore(t, w.Range(1), entries(1, 1, 5, 1))
			w.Close()
			seg := filepath.Join(dir, segName(1))
			end := w.segs[0].size
			f, err := os.OpenFile(seg, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			junk := torn.junk(appendEntriesRecord(nil, kindEntries, 1, entries(1, 6, 6, 1)))
			if _, err := f.WriteAt(junk, end); err != nil {
				t.Fatal(err)
			}
			f.Close()
			w = testOpenDir(t, dir, Options{})
			checkRange(t, w.Range(1), &modelRange{logs: entries(1, 1, 5, 1)})
			// Appends continue after the cut, and the junk is gone.
			mustStore(t, w.Range(1), entries(1, 6, 7, 2))
			w.Close()
			w = testOpenDir(t, dir, Options{})
			checkRange(t, w.Range(1), &modelRange{logs: slices.Concat(entries(1, 1, 5, 1), entries(1, 6, 7, 2))})
		})
	}
}

// Disks persist unsynced pages out of order: a crash may keep a later
// record whole behind a torn one. Replay stops at the torn one; the
// stale record must not survive behind the appends that follow, or a
// record of the same length written there would bring it back.
func TestWAL_TornTailIsZeroedBeforeAppendsContinue(t *testing.T) {
	dir := t.TempDir()
	w := testOpenDir(t, dir, Options{})
	mustStore(t, w.Range(1), entries(1, 1, 5, 1))
	end := w.segs[0].size
	w.Close()
	torn := appendEntriesRecord(nil, kindEntries, 2, entries(2, 1, 1, 1))
	stale := appendEntriesRecord(nil, kindEntries, 1, entries(1, 6, 6, 1))
	f, err := os.OpenFile(filepath.Join(dir, segName(1)), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The first half of the torn record, zeros for the rest, then the
	// stale one whole.
	junk := append(append(torn[:len(torn)/2:len(torn)/2], make([]byte, len(torn)-len(torn)/2)...), stale...)
	if _, err := f.WriteAt(junk, end); err != nil {
		t.Fatal(err)
	}
	f.Close()
	w = testOpenDir(t, dir, Options{})
	checkRange(t, w.Range(1), &modelRange{logs: entries(1, 1, 5, 1)})
	// The same record as the torn one, so the stale one would follow it
	// exactly.
	mustStore(t, w.Range(2), entries(2, 1, 1, 1))
	w.Close()
	w = testOpenDir(t, dir, Options{})
	checkRange(t, w.Range(1), &modelRange{logs: entries(1, 1, 5, 1)})
	checkRange(t, w.Range(2), &modelRange{logs: entries(2, 1, 1, 1)})
}

// Damage anywhere but the newest segment's tail cannot come from a crash:
// opening fails rather than serve a log with a hole.
func TestWAL_DamageBeforeTheTailFails(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string, segs []string)
		want   error
	}{
		{"a flipped byte in a sealed segment", func(t *testing.T, dir string, segs []string) {
			b, _ := os.ReadFile(segs[0])
			b[segHeaderSize+20] ^= 0xff
			os.WriteFile(segs[0], b, 0o644)
		}, ErrCorrupt},
		{"a sealed segment missing", func(t *testing.T, dir string, segs []string) {
			os.Remove(segs[1])
		}, ErrCorrupt},
		{"a segment from a newer format", func(t *testing.T, dir string, segs []string) {
			b, _ := os.ReadFile(segs[0])
			hdr := appendSegmentHeader(nil, 1)
			hdr[8] = formatVersion + 1
			b = append(fixHeader(hdr), b[segHeaderSize:]...)
			os.WriteFile(segs[0], b, 0o644)
		}, ErrVersion},
		{"a segment under the wrong name", func(t *testing.T, dir string, segs []string) {
			b, _ := os.ReadFile(segs[0])
			copy(b, appendSegmentHeader(nil, 42))
			os.WriteFile(segs[0], b, 0o644)
		}, ErrCorrupt},
		{"a floor that is not a number", func(t *testing.T, dir string, segs []string) {
			os.WriteFile(filepath.Join(dir, floorFile), []byte("x\n"), 0o644)
		}, ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := testOpenDir(t, dir, Options{SegmentSize: 300})
			for i := uint64(0); i < 6; i++ {
				mustStore(t, w.Range(1), entries(1, 1+5*i, 5+5*i, 1))
			}
			w.Close()
			segs, _ := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
			if len(segs) < 3 {
				t.Fatalf("want several segments, got %d", len(segs))
			}
			tc.damage(t, dir, segs)
			if _, err := open(osFS{dir: dir}, Options{}, knobs{noAutoGC: true}); !errors.Is(err, tc.want) {
				t.Fatalf("open: %v, want %v", err, tc.want)
			}
		})
	}
}

// fixHeader recomputes a segment header's checksum.
func fixHeader(h []byte) []byte {
	return binary.BigEndian.AppendUint32(slices.Clone(h[:20]), crc32.Checksum(h[:20], crcTable))
}

func TestWAL_DropRange(t *testing.T) {
	dir := t.TempDir()
	w := testOpenDir(t, dir, Options{SegmentSize: 400})
	v := w.Range(1)
	mustStore(t, v, entries(1, 1, 20, 1))
	if err := v.SetUint64([]byte("CurrentTerm"), 3); err != nil {
		t.Fatal(err)
	}
	mustStore(t, w.Range(2), entries(2, 1, 5, 1))
	if err := w.DropRange(1); err != nil {
		t.Fatal(err)
	}
	if _, err := v.LastIndex(); !errors.Is(err, ErrDropped) {
		t.Fatalf("the dropped view answers: %v", err)
	}
	// The range can come back, empty.
	v2 := w.Range(1)
	checkRange(t, v2, nil)
	mustStore(t, v2, entries(1, 500, 502, 9))
	w.Close()
	w = testOpenDir(t, dir, Options{SegmentSize: 400})
	checkRange(t, w.Range(1), &modelRange{logs: entries(1, 500, 502, 9)})
	checkRange(t, w.Range(2), &modelRange{logs: entries(2, 1, 5, 1)})
	if got := w.Ranges(); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("ranges %v", got)
	}
}

// gatedSync replaces the log's sync with one the test releases.
type gatedSync struct {
	entered chan struct{}
	release chan error
}

func gateSyncs(t testing.TB, w *WAL) *gatedSync {
	g := &gatedSync{entered: make(chan struct{}, 16), release: make(chan error)}
	// Before the log's Close (cleanups run last first): a test that fails
	// with a sync held must fail, not hang in Close.
	t.Cleanup(func() {
		w.SetSyncFunc(nil)
		close(g.release)
	})
	w.SetSyncFunc(func(sync func() error) error {
		g.entered <- struct{}{}
		if err := <-g.release; err != nil {
			return err
		}
		return sync()
	})
	return g
}

func TestRangeLog_SyncBehind(t *testing.T) {
	w := testOpenDir(t, t.TempDir(), Options{})
	v := w.Range(1)
	mustStore(t, v, entries(1, 1, 3, 1)) // synced before the gate goes in
	g := gateSyncs(t, w)
	v.SetSyncBehind(func() bool { return true })

	// A leader's append returns once written; its sync follows.
	cmds := entries(1, 4, 6, 1)
	for _, e := range cmds {
		e.Type = raft.LogCommand
	}
	mustStore(t, v, cmds)
	<-g.entered
	if got := v.SyncedIndex(); got != 3 {
		t.Fatalf("synced %d while the sync of 4-6 is held, want 3", got)
	}
	checkRange(t, v, &modelRange{logs: slices.Concat(entries(1, 1, 3, 1), cmds)}) // readable before durable
	waited := make(chan error, 1)
	go func() { waited <- v.WaitSynced(6) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitSynced(6) returned %v before the sync finished", err)
	default:
	}
	g.release <- nil
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if got := v.SyncedIndex(); got != 6 {
		t.Fatalf("synced %d, want 6", got)
	}

	// Anything but commands is synced before the append returns.
	cfg := &raft.Log{Index: 7, Term: 1, Type: raft.LogConfiguration, Data: []byte("cfg")}
	stored := make(chan error, 1)
	go func() { stored <- v.StoreLogs([]*raft.Log{cfg}) }()
	<-g.entered
	select {
	case err := <-stored:
		t.Fatalf("a configuration entry's append returned (%v) before its sync", err)
	default:
	}
	g.release <- nil
	if err := <-stored; err != nil || v.SyncedIndex() != 7 {
		t.Fatalf("append: %v, synced %d, want 7", err, v.SyncedIndex())
	}
}

// A truncation is durable before it returns (so are the entries syncing
// behind before it), and entries written again at the cut indexes are
// not taken for durable.
func TestRangeLog_SyncBehindThenTruncate(t *testing.T) {
	w := testOpenDir(t, t.TempDir(), Options{})
	v := w.Range(1)
	cmd := func(from, to, term uint64) []*raft.Log {
		es := entries(1, from, to, term)
		for _, e := range es {
			e.Type = raft.LogCommand
		}
		return es
	}
	mustStore(t, v, cmd(1, 3, 1))
	g := gateSyncs(t, w)
	v.SetSyncBehind(func() bool { return true })
	mustStore(t, v, cmd(4, 8, 1))
	<-g.entered
	cut := make(chan error, 1)
	go func() { cut <- v.DeleteRange(6, 8) }()
	select {
	case err := <-cut:
		t.Fatalf("truncation returned (%v) while a sync was held", err)
	default:
	}
	g.release <- nil // the round syncing 4-8
	<-g.entered      // the round syncing the cut
	g.release <- nil
	if err := <-cut; err != nil {
		t.Fatal(err)
	}
	if got := v.SyncedIndex(); got != 5 {
		t.Fatalf("synced %d after cutting 6-8, want 5", got)
	}
	mustStore(t, v, cmd(6, 7, 2))
	<-g.entered
	if got := v.SyncedIndex(); got != 5 {
		t.Fatalf("synced %d with 6-7 rewritten but not synced, want 5", got)
	}
	g.release <- nil
	if err := v.WaitSynced(7); err != nil {
		t.Fatal(err)
	}
	checkRange(t, v, &modelRange{logs: slices.Concat(cmd(1, 5, 1), cmd(6, 7, 2))})
}

// A failed sync is never reported as durable, and stops the log.
func TestWAL_SyncFailureIsSticky(t *testing.T) {
	var mu sync.Mutex
	var failures []error
	w, err := open(osFS{dir: t.TempDir()}, Options{}, knobs{noAutoGC: true, failed: func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	v := w.Range(1)
	g := gateSyncs(t, w)
	v.SetSyncBehind(func() bool { return true })
	cmds := entries(1, 1, 2, 1)
	for _, e := range cmds {
		e.Type = raft.LogCommand
	}
	mustStore(t, v, cmds)
	<-g.entered
	g.release <- errors.New("disk on fire")
	if err := v.WaitSynced(2); err == nil {
		t.Fatal("WaitSynced succeeded after the sync failed")
	}
	w.SetSyncFunc(nil)
	if err := v.StoreLogs(entries(1, 3, 3, 1)); err == nil {
		t.Fatal("an append after a failed sync succeeded")
	}
	if err := w.Range(2).SetUint64([]byte("CurrentTerm"), 1); err == nil {
		t.Fatal("another range's write after a failed sync succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) != 1 {
		t.Fatalf("the failure hook ran %d times, want once", len(failures))
	}
}

// A range's sync hook holds the syncs that cover its writes, as the
// shard's fault-injection tests need.
func TestRangeLog_SyncHookHoldsItsSyncs(t *testing.T) {
	w := testOpenDir(t, t.TempDir(), Options{})
	v := w.Range(1)
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	v.SetSyncFunc(func(sync func() error) error {
		once.Do(func() { close(entered); <-release })
		return sync()
	})
	done := make(chan error, 1)
	go func() { done <- v.StoreLogs(entries(1, 1, 1, 1)) }()
	<-entered
	select {
	case err := <-done:
		t.Fatalf("the append returned (%v) while its sync was held", err)
	default:
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	v.SetSyncFunc(nil)
	if w.hooked.Load() != 0 {
		t.Fatalf("%d hooks counted after removing the only one", w.hooked.Load())
	}
}

func TestWAL_ClosedLogRefusesEverything(t *testing.T) {
	w := testOpenDir(t, t.TempDir(), Options{})
	v := w.Range(1)
	mustStore(t, v, entries(1, 1, 3, 1))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var e raft.Log
	for name, err := range map[string]error{
		"store":  v.StoreLogs(entries(1, 4, 4, 1)),
		"get":    v.GetLog(1, &e),
		"delete": v.DeleteRange(1, 1),
		"set":    v.SetUint64([]byte("k"), 1),
		"drop":   w.DropRange(1),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after close: %v, want ErrClosed", name, err)
		}
	}
}

// Group commit: many ranges appending at once share syncs.
func TestWAL_ConcurrentAppendsShareSyncs(t *testing.T) {
	w := testOpenDir(t, t.TempDir(), Options{})
	const ranges, appends = 16, 20
	before := w.Stats()
	var wg sync.WaitGroup
	for r := uint64(1); r <= ranges; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := w.Range(r)
			for i := uint64(1); i <= appends; i++ {
				if err := v.StoreLogs(entries(r, i, i, 1)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := w.Stats()
	syncs := st.Syncs - before.Syncs
	if writes := st.Writes - before.Writes; writes != ranges*appends {
		t.Fatalf("%d writes, want %d", writes, ranges*appends)
	}
	// Without group commit every append would pay its own sync.
	if syncs >= ranges*appends {
		t.Fatalf("%d syncs for %d appends: no sync was shared", syncs, ranges*appends)
	}
	// Each record is at least its header and a one-entry payload, and
	// every segment's bytes were written as records (or its header).
	if wrote := st.WrittenBytes - before.WrittenBytes; wrote < ranges*appends*recordHeader || int64(st.WrittenBytes) > st.Bytes {
		t.Fatalf("%d bytes written by the appends, %d in total, %d in the segments", wrote, st.WrittenBytes, st.Bytes)
	}
	if st.LastSync <= 0 {
		t.Fatalf("last sync took %v after %d syncs", st.LastSync, syncs)
	}
	t.Logf("%d appends, %d syncs", ranges*appends, syncs)
	for r := uint64(1); r <= ranges; r++ {
		checkRange(t, w.Range(r), &modelRange{logs: entries(r, 1, appends, 1)})
	}
}

// Appends that wait for the same sync reach the file in one write: while
// one round's sync is held, seven ranges append and wait, and the next
// round writes all seven with one write.
func TestWAL_AppendsSharingASyncShareOneWrite(t *testing.T) {
	w := testOpenDir(t, t.TempDir(), Options{})
	g := gateSyncs(t, w)
	errs := make(chan error, 8)
	go func() { errs <- w.Range(1).StoreLogs(entries(1, 1, 2, 1)) }()
	<-g.entered // range 1's round holds its sync; its write is in the file
	base := w.Stats()
	for id := uint64(2); id <= 8; id++ {
		go func() { errs <- w.Range(id).StoreLogs(entries(id, 1, 2, 1)) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for w.Stats().Writes < base.Writes+7 {
		if time.Now().After(deadline) {
			t.Fatalf("appends made: %d of 7", w.Stats().Writes-base.Writes)
		}
		time.Sleep(time.Millisecond) // no event marks an append that waits
	}
	if got := w.Stats().FileWrites; got != base.FileWrites {
		t.Fatalf("file writes %d before the next round, want %d: appends went to the file one by one", got, base.FileWrites)
	}
	g.release <- nil // range 1's sync
	<-g.entered      // the round of the seven
	g.release <- nil
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := w.Stats().FileWrites - base.FileWrites; got != 1 {
		t.Fatalf("the seven appends took %d file writes, want 1", got)
	}
	w.SetSyncFunc(nil)
	for id := uint64(1); id <= 8; id++ {
		checkRange(t, w.Range(id), &modelRange{logs: entries(id, 1, 2, 1)})
	}
}

// syncHeldAfterFirstRound opens a log whose range 1 syncs behind (as a
// leader's does) and stores entry 1: its round has written the tail and
// holds the sync until the test releases g.
func syncHeldAfterFirstRound(t *testing.T, opts Options) (*WAL, *RangeLog, *gatedSync) {
	t.Helper()
	w := testOpenDir(t, t.TempDir(), opts)
	v := w.Range(1)
	v.SetSyncBehind(func() bool { return true })
	g := gateSyncs(t, w)
	mustStore(t, v, entries(1, 1, 1, 1))
	<-g.entered
	return w, v, g
}

// An entry that is neither in the cache nor yet in the file (a leader's
// append, its sync held) is copied out of the unwritten tail: the read
// neither writes nor waits for the lock a seal holds across its sync.
func TestWAL_ReadOfAnUnwrittenTailCopiesItOut(t *testing.T) {
	w, v, g := syncHeldAfterFirstRound(t, Options{CacheBytes: 1})
	mustStore(t, v, entries(1, 2, 4, 1))
	before := w.Stats().FileWrites
	var got raft.Log
	if err := v.GetLog(3, &got); err != nil {
		t.Fatal(err)
	}
	if !sameEntry(&got, entry(1, 3, 1)) {
		t.Fatalf("entry 3: %+v", got)
	}
	if n := w.Stats().FileWrites - before; n != 0 {
		t.Fatalf("the read took %d file writes, want none", n)
	}
	// Held write lock, as during a seal's sync: the read still returns.
	w.wmu.Lock()
	err := v.GetLog(4, &got)
	w.wmu.Unlock()
	if err != nil || !sameEntry(&got, entry(1, 4, 1)) {
		t.Fatalf("entry 4 read under a held write lock: %+v, %v", got, err)
	}
	w.SetSyncFunc(nil) // before the release: the next round must not wait
	g.release <- nil
	if err := v.WaitSynced(4); err != nil {
		t.Fatal(err)
	}
}

// Appends nobody waits for do not pile up past pendMax while a sync is
// held: the tail goes to the file once it is that long.
func TestWAL_UnwaitedAppendsAreWrittenAtPendMax(t *testing.T) {
	w, v, g := syncHeldAfterFirstRound(t, Options{})
	before := w.Stats().FileWrites
	big := make([]byte, 64<<10)
	for i := uint64(2); i <= uint64(2+2*pendMax/len(big)); i++ {
		e := entry(1, i, 1)
		e.Type, e.Data = raft.LogCommand, big // a command: it syncs behind
		mustStore(t, v, []*raft.Log{e})
	}
	if n := w.Stats().FileWrites - before; n < 2 {
		t.Fatalf("%d file writes for 2 MiB of appends with the sync held, want at least 2", n)
	}
	if n := w.pendLen(); n >= pendMax {
		t.Fatalf("unwritten tail %d bytes, want under %d", n, pendMax)
	}
	w.SetSyncFunc(nil)
	g.release <- nil
	if err := v.WaitSynced(uint64(2 + 2*pendMax/len(big))); err != nil {
		t.Fatal(err)
	}
	// A sealed segment lets its tail buffer go: sealed ones can be many.
	if err := w.rotate(); err != nil {
		t.Fatal(err)
	}
	w.wmu.Lock()
	sealed := w.segs[len(w.segs)-2]
	w.wmu.Unlock()
	if sealed.pend != nil {
		t.Fatalf("sealed segment keeps a tail buffer of %d bytes", cap(sealed.pend))
	}
}

// A failed write of the tail fails the log as a failed sync does: the
// append waiting for it gets the error, its range's synced index stays,
// no sync follows, the process is stopped once, and later appends fail.
func TestWAL_FailedTailWriteStopsTheLog(t *testing.T) {
	fsys := newMemFS()
	var stops atomic.Int32
	w, err := open(fsys, Options{}, knobs{noAutoGC: true, failed: func(error) { stops.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	v := w.Range(1)
	mustStore(t, v, entries(1, 1, 2, 1))
	syncs := w.Stats().Syncs
	boom := errors.New("disk gone")
	fsys.mu.Lock()
	fsys.writeErr = boom
	fsys.mu.Unlock()
	if err := v.StoreLogs(entries(1, 3, 4, 1)); !errors.Is(err, boom) {
		t.Fatalf("append over a failing write: %v, want %v", err, boom)
	}
	if got := v.SyncedIndex(); got != 2 {
		t.Fatalf("synced index %d after the failed write, want 2", got)
	}
	if got := w.Stats().Syncs; got != syncs {
		t.Fatalf("%d syncs after the failed write", got-syncs)
	}
	if err := v.StoreLogs(entries(1, 5, 5, 1)); err == nil {
		t.Fatal("an append after the failure succeeded")
	}
	if n := stops.Load(); n != 1 {
		t.Fatalf("the process was stopped %d times, want once", n)
	}
}

// A batch of pendMax or more is written as it is, not copied into the
// tail first, and reads back from the file.
func TestWAL_LargeBatchBypassesTheTail(t *testing.T) {
	w, v, _ := syncHeldAfterFirstRound(t, Options{CacheBytes: 1})
	before := w.Stats().FileWrites
	e := entry(1, 2, 1)
	e.Type, e.Data = raft.LogCommand, bytes.Repeat([]byte("v"), pendMax+1)
	mustStore(t, v, []*raft.Log{e})
	if n := w.Stats().FileWrites - before; n != 1 {
		t.Fatalf("a %d-byte batch took %d file writes, want 1", len(e.Data), n)
	}
	w.wmu.Lock()
	tail := w.segs[len(w.segs)-1].pend
	w.wmu.Unlock()
	if len(tail) != 0 || cap(tail) >= pendMax {
		t.Fatalf("tail of %d bytes (capacity %d) after a large batch: it went through the tail", len(tail), cap(tail))
	}
	var got raft.Log
	if err := v.GetLog(2, &got); err != nil || !bytes.Equal(got.Data, e.Data) {
		t.Fatalf("entry 2 read back: %d bytes, %v", len(got.Data), err)
	}
}
