package raftstore

import (
	"testing"

	"github.com/hashicorp/raft"
)

// A key moved by a split is at revision 0 in the new range (its log starts
// again from 1), so a revision taken before the split never equals a
// later write's in the new range; the parent's keys keep theirs.
func TestRangeFSM_SplitMovedKeysStartAtRevisionZero(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := openUserRange(t, s, 2)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "m", "2"), put(3, "z", "3"), splitLog(4, "m", 3)})
	if _, rev, _, _, err := f.Get([]byte("a")); err != nil || rev != 1 {
		t.Fatalf("parent's key: revision %d, %v; want 1", rev, err)
	}
	child, err := s.OpenRange(Descriptor{ID: 3, Start: []byte("m"), Generation: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"m", "z"} {
		if v, rev, found, _, err := child.Get([]byte(k)); err != nil || !found || rev != 0 {
			t.Fatalf("moved key %s: %q at revision %d (found %v, %v); want revision 0", k, v, rev, found, err)
		}
	}
	// The child's own write at index 2 is not "revision 2" of the parent's.
	child.ApplyBatch([]*raft.Log{put(2, "z", "new")})
	r := applyTxnOK(t, child, txnLog(3, TxnSpec{Compares: []TxnCompare{{Key: []byte("z"), Target: CmpRevision, Result: CmpEqual, RangeID: 3, Index: 0}}}))
	if r.Succeeded {
		t.Fatal("a revision compare taken before the split held after a write in the new range")
	}
}
