package raftstore

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// TestRangeFSM_ShortStoredValueIsCorruptToEveryReader: a value in bbolt too
// short to hold its revision is ErrCorrupt, naming the range and the key,
// to every reader of the range's bucket alike. (Before, Get called it "not
// found" while Scan and Digest returned it as an empty value at revision 0,
// and a compare-and-swap expecting the key missing succeeded on it.)
func TestRangeFSM_ShortStoredValueIsCorruptToEveryReader(t *testing.T) {
	readers := []struct {
		name string
		read func(f *RangeFSM) error
	}{
		{"get", func(f *RangeFSM) error {
			_, _, _, _, err := f.Get([]byte("b"))
			return err
		}},
		{"scan", func(f *RangeFSM) error {
			_, _, _, _, err := f.Scan([]byte("a"), nil, 10)
			return err
		}},
		{"digest", func(f *RangeFSM) error {
			_, err := f.Digest()
			return err
		}},
		{"the apply path's lookup", func(f *RangeFSM) error {
			f.mu.RLock()
			defer f.mu.RUnlock()
			return f.lookupLocked([]byte("b"), func([]byte, uint64, bool) {})
		}},
	}
	for _, stored := range [][]byte{{}, {0, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 7}} {
		s := openStore(t, t.TempDir())
		f := mustRange(t, s, 2)
		f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "b", "2"), put(3, "c", "3")})
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		corrupt(t, s, f, "b", stored)

		for _, r := range readers {
			err := r.read(f)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%d-byte value: %s: err = %v, want ErrCorrupt", len(stored), r.name, err)
				continue
			}
			if msg := err.Error(); !strings.Contains(msg, `range 2, key "b"`) {
				t.Errorf("%d-byte value: %s: %q names neither the range nor the key", len(stored), r.name, msg)
			}
		}

		// The damage is the one key's: the others read as before.
		mustGet(t, f, "a", "1")
		if kvs, _, _, _, err := f.Scan([]byte("c"), nil, 10); err != nil || len(kvs) != 1 || string(kvs[0].Value) != "3" {
			t.Errorf("%d-byte value: scan from c = %v, %v; want c=3", len(stored), kvs, err)
		}
		// A write over it is read from the overlay, and committed whole.
		f.ApplyBatch([]*raft.Log{put(4, "b", "fixed")})
		mustGet(t, f, "b", "fixed")
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, r := range readers {
			if err := r.read(f); err != nil {
				t.Errorf("%d-byte value overwritten: %s: %v", len(stored), r.name, err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// corrupt replaces what bbolt holds for key in f's bucket with stored.
func corrupt(t *testing.T, s *Store, f *RangeFSM, key string, stored []byte) {
	t.Helper()
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(f.bucket).Put([]byte(key), stored)
	})
	if err != nil {
		t.Fatalf("corrupt %q: %v", key, err)
	}
}
