package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

func splitLog(index uint64, key string, child uint64) *raft.Log {
	spec, _ := json.Marshal(SplitSpec{ChildID: child, Replicas: []Server{{"n1", "a1"}, {"n2", "a2"}, {"n3", "a3"}}})
	return cmdLog(index, Command{Op: OpSplit, Key: []byte(key), Value: spec})
}

func openUserRange(t *testing.T, s *Store, id uint64) *RangeFSM {
	t.Helper()
	f, err := s.OpenRange(Descriptor{ID: id, Generation: 1, Replicas: []string{"n1", "n2", "n3"}})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRangeFSM_SplitMovesKeysAndDescriptors(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	f := openUserRange(t, s, 2)
	var children []Descriptor
	f.SetSplitHandler(nil, func(parent, child Descriptor) { children = append(children, child) })
	var logs []*raft.Log
	for i := range 100 {
		logs = append(logs, put(uint64(i+1), fmt.Sprintf("k%03d", i), fmt.Sprint(i)))
	}
	f.ApplyBatch(logs[:60])
	s.Flush()
	f.ApplyBatch(logs[60:]) // some keys still in the overlay when the split applies
	res := f.ApplyBatch([]*raft.Log{splitLog(101, "k050", 3), put(102, "k070", "late")})
	r := res[0].(*Result)
	if r.Err != nil || r.Child == nil || r.Child.ID != 3 || string(r.Child.Start) != "k050" || len(r.Child.End) != 0 {
		t.Fatalf("split result %+v", r)
	}
	if late := res[1].(*Result); !errors.Is(late.Err, ErrWrongRange) {
		t.Fatalf("write to a moved key after the split: %v, want ErrWrongRange", late.Err)
	}
	if d := f.Descriptor(); string(d.End) != "k050" || d.Generation != 2 {
		t.Fatalf("parent after split: %s", &d)
	}
	if len(children) != 1 {
		t.Fatalf("split handler called %d times", len(children))
	}
	if _, _, _, _, err := f.Get([]byte("k070")); !errors.Is(err, ErrWrongRange) {
		t.Fatalf("parent read of a moved key: %v, want ErrWrongRange", err)
	}
	kvs, more, next, _, err := f.Scan([]byte("k040"), nil, 100)
	if err != nil || len(kvs) != 10 || !more || string(next) != "k050" {
		t.Fatalf("parent scan past its end: %d keys more=%v next=%q err=%v; want 10 keys then next k050", len(kvs), more, next, err)
	}

	// The child exists durably with the moved keys, before any of its own
	// log: a crash right after the split loses nothing.
	crash(s)
	s2 := openStore(t, dir)
	defer s2.Close()
	descs, err := s2.Descriptors()
	if err != nil || len(descs) != 2 {
		t.Fatalf("descriptors after restart: %v %v", descs, err)
	}
	c, err := s2.OpenRange(Descriptor{ID: 3})
	if err != nil {
		t.Fatal(err)
	}
	p := openUserRange(t, s2, 2)
	if p.AppliedIndex() != 101 || c.AppliedIndex() != 0 {
		t.Fatalf("applied after restart: parent %d child %d", p.AppliedIndex(), c.AppliedIndex())
	}
	for i := range 100 {
		k := fmt.Sprintf("k%03d", i)
		owner, other := p, c
		if i >= 50 {
			owner, other = c, p
		}
		mustGet(t, owner, k, fmt.Sprint(i))
		if _, _, found, _, _ := other.Get([]byte(k)); found {
			t.Fatalf("%s readable from both ranges", k)
		}
	}
}

func TestRangeFSM_SplitOutsideTheRangeChangesNothing(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := openUserRange(t, s, 2)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1"), splitLog(2, "", 3)})
	res := f.ApplyBatch([]*raft.Log{splitLog(3, "", 4)})
	if r := res[0].(*Result); !errors.Is(r.Err, ErrBadSplit) {
		t.Fatalf("split at the range start: %v, want ErrBadSplit", r.Err)
	}
	if f.AppliedIndex() != 3 {
		t.Fatalf("applied %d, want 3", f.AppliedIndex())
	}
	mustGet(t, f, "a", "1")
}

// walkSize counts a range's committed keys and bytes the slow way.
func walkSize(t *testing.T, f *RangeFSM) (keys, size uint64) {
	t.Helper()
	if err := f.store.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(f.bucket).ForEach(func(k, v []byte) error {
			keys++
			size += uint64(len(k) + len(v) - 8)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return keys, size
}

// A range's size is kept exact by commits, splits and restores (and
// survives a restart) without walking its pages.
func TestRangeFSM_SizeIsExact(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	f := openUserRange(t, s, 2)
	check := func(step string, f *RangeFSM) {
		t.Helper()
		if err := f.store.Flush(); err != nil {
			t.Fatal(err)
		}
		keys, size := f.Size()
		wantKeys, wantSize := walkSize(t, f)
		if keys != wantKeys || size != wantSize {
			t.Fatalf("%s: range %d size says %d keys, %d bytes; the bucket holds %d keys, %d bytes", step, f.ID(), keys, size, wantKeys, wantSize)
		}
		if got := f.ApproxSize(); got != int64(wantSize) {
			t.Fatalf("%s: ApproxSize %d after a commit, want %d", step, got, wantSize)
		}
	}
	steps := []struct {
		name string
		logs []*raft.Log
	}{
		{"new keys", []*raft.Log{put(1, "a", "1"), put(2, "b", "22"), put(3, "m", "333"), put(4, "x", "4444")}},
		{"overwrite with a longer value", []*raft.Log{put(5, "a", "1111111")}},
		{"overwrite with a shorter value", []*raft.Log{put(6, "b", "2")}},
		{"delete", []*raft.Log{del(7, "a")}},
		{"delete a missing key", []*raft.Log{del(8, "zz")}},
		{"put and delete in one commit", []*raft.Log{put(9, "c", "3"), del(10, "c")}},
	}
	for _, st := range steps {
		f.ApplyBatch(st.logs)
		check(st.name, f)
	}
	s.Close()
	s = openStore(t, dir)
	f = openUserRange(t, s, 2)
	check("after a restart", f)

	f.ApplyBatch([]*raft.Log{put(11, "y", "55555"), splitLog(12, "m", 3)})
	check("split parent", f)
	child := openUserRange(t, s, 3)
	check("split child", child)

	snap, err := child.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	child.ApplyBatch([]*raft.Log{put(20, "z", "after the snapshot")})
	if err := child.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	check("restored", child)
	s.Close()
}

// HoldsUserKey follows the range's bounds through a split, and the meta
// range holds no user key.
func TestRangeFSM_HoldsUserKey(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := openUserRange(t, s, 2)
	meta := mustRange(t, s, MetaRangeID)
	f.ApplyBatch([]*raft.Log{splitLog(1, "m", 3)})
	tests := []struct {
		fsm  *RangeFSM
		key  string
		want bool
	}{
		{f, "", true}, {f, "a", true}, {f, "lzz", true}, {f, "m", false}, {f, "z", false},
		{meta, "a", false}, {meta, "", false},
	}
	for _, tt := range tests {
		if got := tt.fsm.HoldsUserKey([]byte(tt.key)); got != tt.want {
			d := tt.fsm.Descriptor()
			t.Errorf("range %d [%q, %q) holds %q: %v, want %v", d.ID, d.Start, d.End, tt.key, got, tt.want)
		}
	}
}
