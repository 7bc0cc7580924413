package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// shortValues are stored values too short to hold their 8-byte revision.
var shortValues = [][]byte{{}, {0, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 7}}

// snapshotStream encodes a snapshot of range desc by hand, so that a test
// can offer Restore values that Snapshot refuses to write.
func snapshotStream(applied uint64, desc Descriptor, records [][2][]byte) []byte {
	b := append([]byte(nil), snapMagic...)
	b = binary.AppendUvarint(b, applied)
	d := desc.Marshal()
	b = binary.AppendUvarint(b, uint64(len(d)))
	b = append(b, d...)
	for _, r := range records {
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(len(r[0])))
		b = append(b, r[0]...)
		b = binary.AppendUvarint(b, uint64(len(r[1])))
		b = append(b, r[1]...)
	}
	b = append(b, 0)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// TestRangeFSM_RestoreRefusesAShortStoredValue: a snapshot whose checksum
// holds but which carries a value too short to decode fails to restore
// with ErrCorrupt (and ErrBadSnapshot), naming the range and the key, and
// leaves the range as it was, instead of storing bytes every later read
// of the key would fail on.
func TestRangeFSM_RestoreRefusesAShortStoredValue(t *testing.T) {
	type restoreCase struct {
		name   string
		stored []byte
		ok     bool
	}
	tests := []restoreCase{
		{"empty value at revision 9", encodeStored(keyInfo{rev: 9}, nil), true},
		{"value at revision 9", encodeStored(keyInfo{rev: 9}, []byte("2")), true},
	}
	for _, v := range shortValues {
		tests = append(tests, restoreCase{fmt.Sprintf("%d bytes", len(v)), v, false})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			defer s.Close()
			f := mustRange(t, s, 3)
			f.ApplyBatch([]*raft.Log{put(1, "keep", "me")})
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			stream := snapshotStream(10, Descriptor{ID: 3, Generation: 1}, [][2][]byte{
				{[]byte("a"), encodeStored(keyInfo{rev: 8}, []byte("1"))},
				{[]byte("b"), tc.stored},
				{[]byte("c"), encodeStored(keyInfo{rev: 10}, []byte("3"))},
			})
			err := f.Restore(io.NopCloser(bytes.NewReader(stream)))
			if tc.ok {
				if err != nil {
					t.Fatalf("restore: %v", err)
				}
				_, value, _ := decodeStored(tc.stored)
				mustGet(t, f, "b", string(value))
				mustMissing(t, f, "keep")
				if f.AppliedIndex() != 10 {
					t.Errorf("applied %d, want 10", f.AppliedIndex())
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) || !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("restore: %v, want ErrCorrupt and ErrBadSnapshot", err)
			}
			if !strings.Contains(err.Error(), `range 3, key "b"`) {
				t.Errorf("%q names neither the range nor the key", err)
			}
			mustGet(t, f, "keep", "me")
			mustMissing(t, f, "a")
			if f.AppliedIndex() != 1 {
				t.Errorf("applied %d, want 1", f.AppliedIndex())
			}
		})
	}
}

// TestRangeFSM_SnapshotOfAShortStoredValueFails: a replica does not send a
// snapshot its followers would refuse; the error names the damaged key.
func TestRangeFSM_SnapshotOfAShortStoredValueFails(t *testing.T) {
	for _, stored := range shortValues {
		t.Run(fmt.Sprintf("%d bytes", len(stored)), func(t *testing.T) {
			s := openStore(t, t.TempDir())
			defer s.Close()
			f := mustRange(t, s, 2)
			f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "b", "2")})
			if err := s.Flush(); err != nil {
				t.Fatal(err)
			}
			corrupt(t, s, f, "b", stored)
			snap, err := f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			defer snap.Release()
			var sink memSink
			err = snap.Persist(&sink)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `range 2, key "b"`) {
				t.Fatalf("persist: %v, want ErrCorrupt naming range 2 and key b", err)
			}
			if !sink.cancelled {
				t.Error("sink not cancelled")
			}
		})
	}
}

// TestRangeFSM_SplitOverAShortStoredValueStops: a split that would move a
// value too short to decode stops the node (the panic carries ErrCorrupt
// and names the key) and writes nothing; one that leaves it in the parent
// goes ahead, the parent's readers still seeing the damage.
func TestRangeFSM_SplitOverAShortStoredValueStops(t *testing.T) {
	tests := []struct {
		name    string
		key     string // the corrupt one; the split is at k050
		stopped bool
	}{
		{"moved key", "k070", true},
		{"first moved key", "k050", true},
		{"kept key", "k010", false},
	}
	for _, tc := range tests {
		for _, stored := range shortValues {
			t.Run(fmt.Sprintf("%s, %d bytes", tc.name, len(stored)), func(t *testing.T) {
				s := openStore(t, t.TempDir())
				defer s.Close()
				f := openUserRange(t, s, 2)
				var logs []*raft.Log
				for i := range 100 {
					logs = append(logs, put(uint64(i+1), fmt.Sprintf("k%03d", i), fmt.Sprint(i)))
				}
				f.ApplyBatch(logs)
				if err := s.Flush(); err != nil {
					t.Fatal(err)
				}
				corrupt(t, s, f, tc.key, stored)

				stop := applyRecovering(f, splitLog(101, "k050", 3))
				if !tc.stopped {
					if stop != nil {
						t.Fatalf("split stopped the node: %v", stop)
					}
					if d := f.Descriptor(); string(d.End) != "k050" {
						t.Errorf("parent after split: %s", &d)
					}
					if _, _, _, _, err := f.Get([]byte(tc.key)); !errors.Is(err, ErrCorrupt) {
						t.Errorf("get %s after split: %v, want ErrCorrupt", tc.key, err)
					}
					return
				}
				err, _ := stop.(error)
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("range 2, key %q", tc.key)) {
					t.Fatalf("split: stopped with %v, want ErrCorrupt naming range 2 and key %s", stop, tc.key)
				}
				// Nothing moved: the transaction rolled back.
				if d := f.Descriptor(); len(d.End) != 0 || d.Generation != 1 {
					t.Errorf("parent after a failed split: %s", &d)
				}
				mustGet(t, f, "k080", "80")
				if err := s.db.View(func(tx *bolt.Tx) error {
					if tx.Bucket(dataBucket(3)) != nil {
						return errors.New("the child's bucket exists")
					}
					return nil
				}); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// applyRecovering applies l and returns what it panicked with, if it did.
func applyRecovering(f *RangeFSM, l *raft.Log) (stop any) {
	defer func() { stop = recover() }()
	f.ApplyBatch([]*raft.Log{l})
	return nil
}
