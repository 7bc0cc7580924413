package raftstore

import (
	"testing"

	"github.com/hashicorp/raft"
)

// The digest depends on the state alone, not on where it lives (overlay or
// bbolt), and changes with any key, value or revision.
func TestRangeFSM_Digest(t *testing.T) {
	logs := []*raft.Log{put(1, "a", "1"), put(2, "b", "2"), put(3, "c", "3"), del(4, "b"), put(5, "d", "4")}

	digest := func(t *testing.T, commitAfter int, logs []*raft.Log) Digest {
		s := openStore(t, t.TempDir())
		t.Cleanup(func() { s.Close() })
		f := mustRange(t, s, 2)
		for i, l := range logs {
			f.ApplyBatch([]*raft.Log{l})
			if i+1 == commitAfter {
				if err := s.Flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		d, err := f.Digest()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	want := digest(t, 0, logs)
	if want.Keys != 3 || want.Applied != 5 {
		t.Fatalf("digest = %+v, want 3 keys at index 5", want)
	}
	for _, commitAfter := range []int{1, 3, 4, 5} {
		if got := digest(t, commitAfter, logs); got != want {
			t.Errorf("committed after entry %d: digest %+v, want %+v", commitAfter, got, want)
		}
	}
	for name, other := range map[string][]*raft.Log{
		"value":    {put(1, "a", "1"), put(2, "b", "2"), put(3, "c", "X"), del(4, "b"), put(5, "d", "4")},
		"deletion": {put(1, "a", "1"), put(2, "b", "2"), put(3, "c", "3"), put(4, "b", "2"), put(5, "d", "4")},
		"key":      {put(1, "a", "1"), put(2, "b", "2"), put(3, "x", "3"), del(4, "b"), put(5, "d", "4")},
		"revision": {put(1, "a", "1"), put(2, "c", "3"), put(3, "b", "2"), del(4, "b"), put(5, "d", "4")},
	} {
		if got := digest(t, 2, other); got.Sum == want.Sum {
			t.Errorf("a different %s gives the same digest", name)
		}
	}
}
