package raftstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/dialkv/dialkv/harness"
	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

func testLogger(t testing.TB) *slog.Logger {
	return harness.TestLogger(t, slog.LevelWarn)
}

// openStore opens a store whose committer effectively never fires on its
// own, so tests decide when state reaches bbolt.
func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	cfg := DefaultConfig(dir)
	cfg.CommitInterval = time.Hour
	cfg.Logger = testLogger(t)
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return s
}

func mustRange(t testing.TB, s *Store, id uint64) *RangeFSM {
	t.Helper()
	f, err := s.OpenRange(Descriptor{ID: id, Generation: 1})
	if err != nil {
		t.Fatalf("range %d: %v", id, err)
	}
	return f
}

func cmdLog(index uint64, c Command) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: c.Encode(nil)}
}

func put(index uint64, k, v string) *raft.Log {
	return cmdLog(index, Command{Op: OpPut, Key: []byte(k), Value: []byte(v)})
}

func del(index uint64, k string) *raft.Log {
	return cmdLog(index, Command{Op: OpDelete, Key: []byte(k)})
}

func mustGet(t *testing.T, f *RangeFSM, key, want string) {
	t.Helper()
	v, _, found, _, _ := f.Get([]byte(key))
	if !found {
		t.Fatalf("get %q: not found, want %q", key, want)
	}
	if string(v) != want {
		t.Fatalf("get %q = %q, want %q", key, v, want)
	}
}

func mustMissing(t *testing.T, f *RangeFSM, key string) {
	t.Helper()
	if v, _, found, _, _ := f.Get([]byte(key)); found {
		t.Fatalf("get %q = %q, want missing", key, v)
	}
}

func TestCommand_RoundTrip(t *testing.T) {
	cases := []Command{
		{Op: OpPut, Key: []byte("k"), Value: []byte("v")},
		{Op: OpPut, Key: []byte("k"), Value: nil},
		{Op: OpDelete, Key: []byte("\x00\xff")},
		{Op: OpCompareAndSwap, Key: []byte("k"), Value: []byte("new"), Expected: []byte("old")},
		{Op: OpCompareAndSwap, Key: []byte("k"), Value: []byte("new"), ExpectMissing: true},
		{Op: OpMarker},
	}
	for _, c := range cases {
		got, err := DecodeCommand(c.Encode(nil))
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if got.Op != c.Op || !bytes.Equal(got.Key, c.Key) || !bytes.Equal(got.Value, c.Value) ||
			!bytes.Equal(got.Expected, c.Expected) || got.ExpectMissing != c.ExpectMissing {
			t.Fatalf("round trip of %+v gave %+v", c, got)
		}
	}
	bad := [][]byte{nil, {9, 1}, {cmdVersion, byte(OpPut), 5, 'a'}, {cmdVersion, 77, 0}}
	for _, b := range bad {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrBadCommand) {
			t.Fatalf("decode %v: err %v, want ErrBadCommand", b, err)
		}
	}
}

func TestRangeFSM_ApplyBatchResults(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, 1)
	res := f.ApplyBatch([]*raft.Log{
		put(1, "a", "1"),
		{Index: 2, Term: 1, Type: raft.LogConfiguration},
		cmdLog(3, Command{Op: OpCompareAndSwap, Key: []byte("a"), Expected: []byte("1"), Value: []byte("2")}),
		cmdLog(4, Command{Op: OpCompareAndSwap, Key: []byte("a"), Expected: []byte("1"), Value: []byte("3")}),
		cmdLog(5, Command{Op: OpCompareAndSwap, Key: []byte("b"), ExpectMissing: true, Value: []byte("x")}),
		del(6, "b"),
		del(7, "nope"),
	})
	if got := f.AppliedIndex(); got != 7 {
		t.Fatalf("applied index %d, want 7", got)
	}
	tests := []struct {
		i       int
		err     error
		existed bool
	}{
		{0, nil, false}, {2, nil, false}, {3, ErrCompareFailed, false}, {4, nil, false}, {5, nil, true}, {6, nil, false},
	}
	for _, tc := range tests {
		r := res[tc.i].(*Result)
		if !errors.Is(r.Err, tc.err) || r.Existed != tc.existed || r.Revision != uint64(tc.i+1) {
			t.Errorf("result %d = %+v, want err %v existed %v revision %d", tc.i, r, tc.err, tc.existed, tc.i+1)
		}
	}
	if res[1] != nil {
		t.Errorf("configuration entry got result %v", res[1])
	}
	mustGet(t, f, "a", "2")
	mustMissing(t, f, "b")
}

func TestRangeFSM_ReadsSeeOverlayBeforeCommit(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, 1)
	f.ApplyBatch([]*raft.Log{put(1, "k", "v1")})
	if f.DurableIndex() != 0 {
		t.Fatalf("durable index %d before any commit", f.DurableIndex())
	}
	mustGet(t, f, "k", "v1")
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch([]*raft.Log{put(2, "k", "v2"), put(3, "j", "x")})
	mustGet(t, f, "k", "v2") // overlay wins over bbolt
	f.ApplyBatch([]*raft.Log{del(4, "k")})
	mustMissing(t, f, "k") // a tombstone hides bbolt's value
	if f.DurableIndex() != 1 {
		t.Fatalf("durable index %d, want 1", f.DurableIndex())
	}
}

func TestStore_RestartResumesWithoutReplay(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	f := mustRange(t, s, 1)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "b", "2")})
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Applied but not committed: lost by the "crash" below, and re-applied
	// from the Raft log after it.
	f.ApplyBatch([]*raft.Log{put(3, "c", "3")})
	crash(s)

	s2 := openStore(t, dir)
	defer s2.Close()
	f2 := mustRange(t, s2, 1)
	if got := f2.AppliedIndex(); got != 2 {
		t.Fatalf("applied index after restart %d, want 2", got)
	}
	mustGet(t, f2, "a", "1")
	mustMissing(t, f2, "c")
	// Raft replays from its snapshot index (0 here): entries 1-2 are skipped,
	// 3 applied. A replayed entry that would change state proves a skip.
	res := f2.ApplyBatch([]*raft.Log{put(1, "a", "REPLAYED"), put(2, "b", "REPLAYED"), put(3, "c", "3")})
	if res[0] != nil || res[1] != nil {
		t.Fatalf("replayed entries were applied: %v %v", res[0], res[1])
	}
	mustGet(t, f2, "a", "1")
	mustGet(t, f2, "b", "2")
	mustGet(t, f2, "c", "3")
}

// crash closes the database without the final commit Close would make, as
// a kill -9 would leave it, so that the writes applied since the last
// commit exist only in the Raft logs. (The WAL closes too: the next Open
// of the directory must be its only user.)
func crash(s *Store) {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.db.Close()
	s.wal.Close()
}

func TestStore_CloseCommitsEverything(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	f := mustRange(t, s, 7)
	var logs []*raft.Log
	for i := 1; i <= 100; i++ {
		logs = append(logs, put(uint64(i), fmt.Sprintf("k%03d", i), fmt.Sprint(i)))
	}
	f.ApplyBatch(logs)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir)
	defer s2.Close()
	f2 := mustRange(t, s2, 7)
	if f2.AppliedIndex() != 100 {
		t.Fatalf("applied %d, want 100", f2.AppliedIndex())
	}
	mustGet(t, f2, "k050", "50")
	if other := mustRange(t, s2, 8); other.AppliedIndex() != 0 {
		t.Fatalf("range 8 applied %d, want 0: ranges must not share state", other.AppliedIndex())
	}
}

func TestRangeFSM_ScanMergesOverlayAndBolt(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, 1)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "b", "1"), put(3, "c", "1"), put(4, "e", "1")})
	s.Flush()
	f.ApplyBatch([]*raft.Log{put(5, "b", "2"), del(6, "c"), put(7, "d", "2")})
	s.Flush() // now a frozen-then-committed layer; add a pending one on top
	f.ApplyBatch([]*raft.Log{put(8, "f", "3"), del(9, "a")})

	kvs, more, next, _, err := f.Scan(nil, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, kv := range kvs {
		got += string(kv.Key) + "=" + string(kv.Value) + " "
	}
	if want := "b=2 d=2 e=1 f=3 "; got != want || more || next != nil {
		t.Fatalf("scan = %q more=%v next=%q, want %q", got, more, next, want)
	}

	tests := []struct {
		start, end string
		limit      int
		want       string
		next       string
	}{
		{"", "", 2, "b d ", "e"},
		{"e", "", 2, "e f ", ""},
		{"c", "f", 10, "d e ", ""},
		{"bb", "e", 1, "d ", ""},
	}
	for _, tc := range tests {
		var end []byte
		if tc.end != "" {
			end = []byte(tc.end)
		}
		kvs, more, next, _, err := f.Scan([]byte(tc.start), end, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, kv := range kvs {
			got += string(kv.Key) + " "
		}
		if got != tc.want || string(next) != tc.next || more != (tc.next != "") {
			t.Errorf("scan[%q,%q) limit %d = %q next %q more %v, want %q next %q", tc.start, tc.end, tc.limit, got, next, more, tc.want, tc.next)
		}
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

func TestRangeFSM_SnapshotRestoreRoundTrip(t *testing.T) {
	src := openStore(t, t.TempDir())
	defer src.Close()
	f := mustRange(t, src, 3)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "b", "2"), put(3, "bin\x00", "\xff\x00")})
	src.Flush()
	f.ApplyBatch([]*raft.Log{del(4, "a"), put(5, "c", "3")}) // still in the overlay

	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if f.DurableIndex() != 5 {
		t.Fatalf("snapshot did not make the state durable first: durable %d", f.DurableIndex())
	}

	dst := openStore(t, t.TempDir())
	defer dst.Close()
	g := mustRange(t, dst, 3)
	g.ApplyBatch([]*raft.Log{put(1, "zzz", "old state, replaced by the restore")})
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if g.AppliedIndex() != 5 {
		t.Fatalf("applied after restore %d, want 5", g.AppliedIndex())
	}
	mustMissing(t, g, "a")
	mustMissing(t, g, "zzz")
	mustGet(t, g, "b", "2")
	mustGet(t, g, "c", "3")
	mustGet(t, g, "bin\x00", "\xff\x00")
}

func TestRangeFSM_RestoreOfCorruptSnapshotChangesNothing(t *testing.T) {
	src := openStore(t, t.TempDir())
	defer src.Close()
	f := mustRange(t, src, 1)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "b", "2")})
	snap, _ := f.Snapshot()
	var sink memSink
	snap.Persist(&sink)
	snap.Release()
	good := sink.Bytes()

	corrupt := func(b []byte) []byte { c := bytes.Clone(b); c[len(c)-7] ^= 0xff; return c }
	cases := map[string][]byte{
		"truncated": good[:len(good)-3],
		"bit flip":  corrupt(good),
		"empty":     nil,
		"bad magic": append([]byte("NOTSNAP!"), good[8:]...),
	}
	for name, stream := range cases {
		t.Run(name, func(t *testing.T) {
			dst := openStore(t, t.TempDir())
			defer dst.Close()
			g := mustRange(t, dst, 1)
			g.ApplyBatch([]*raft.Log{put(1, "keep", "me")})
			dst.Flush()
			err := g.Restore(io.NopCloser(bytes.NewReader(stream)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("restore: %v, want ErrBadSnapshot", err)
			}
			mustGet(t, g, "keep", "me")
			mustMissing(t, g, "a")
			if g.AppliedIndex() != 1 {
				t.Fatalf("applied %d, want 1", g.AppliedIndex())
			}
		})
	}
}

func TestStore_CommitterCommitsOnTimer(t *testing.T) {
	cfg := DefaultConfig(t.TempDir())
	cfg.CommitInterval = 5 * time.Millisecond
	cfg.Logger = testLogger(t)
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := mustRange(t, s, 1)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1")})
	deadline := time.Now().Add(10 * time.Second)
	for f.DurableIndex() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("committer never committed index 1")
		}
		time.Sleep(time.Millisecond) // polling a counter the committer advances; no event to await
	}
	if commits, _, _, _ := s.Stats(); commits == 0 {
		t.Fatal("no commit counted")
	}
}

// Keys written in order (a bulk load) must not leave bbolt's pages half
// empty: that doubled state.db and the pages a node keeps mapped.
func TestStore_InOrderWritesPackPages(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, 1)
	value := strings.Repeat("v", 256)
	index := uint64(0)
	for batch := range 20 {
		logs := make([]*raft.Log, 0, 1000)
		for i := range 1000 {
			index++
			logs = append(logs, put(index, fmt.Sprintf("key/%08d", batch*1000+i), value))
		}
		f.ApplyBatch(logs)
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	var st bolt.BucketStats
	if err := s.db.View(func(tx *bolt.Tx) error {
		st = tx.Bucket(f.bucket).Stats()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	fill := float64(st.LeafInuse) / float64(st.LeafAlloc)
	t.Logf("%d keys in %d leaf pages, %.0f%% full", st.KeyN, st.LeafPageN, 100*fill)
	if fill < 0.8 {
		t.Fatalf("leaf pages are %.0f%% full after in-order writes, want at least 80%%", 100*fill)
	}
}
