package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
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
