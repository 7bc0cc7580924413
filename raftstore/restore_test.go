package raftstore

import (
	"fmt"
	"testing"

	"github.com/dialkv/dialkv/internal/backupfile"
	"github.com/hashicorp/raft"
)

// backupAll reads every key an OpenBackup reader yields.
func backupAll(t *testing.T, f *RangeFSM) (kvs []KV, leased uint64, br *BackupReader) {
	t.Helper()
	br, err := f.OpenBackup()
	if err != nil {
		t.Fatal(err)
	}
	leased, err = br.Each(func(kv KV) error {
		kvs = append(kvs, kv)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return kvs, leased, br
}

// TestOpenBackup_ConsistentWhileApplying pins a range's state, applies
// more writes (some committed, some only in the overlay), and checks the
// reader still yields exactly the state at its index, whose digest is the
// range's Digest there; keys attached to a lease are left out.
func TestOpenBackup_ConsistentWhileApplying(t *testing.T) {
	s := openStore(t, t.TempDir())
	defer s.Close()
	f := mustRange(t, s, 2)
	f.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "b", "2"), put(3, "c", "3")})
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Overlay-only writes: an overwrite, a delete, a new key, a leased key.
	f.ApplyBatch([]*raft.Log{put(4, "b", "2b"), del(5, "c"), put(6, "d", "4"), leasePut(7, "e", "5", 9)})
	want, err := f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	kvs, leased, br := backupAll(t, f)
	defer br.Close()
	// Writes after the pin change nothing the reader yields.
	f.ApplyBatch([]*raft.Log{put(8, "a", "changed"), put(9, "z", "new")})
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	var again []KV
	if _, err := br.Each(func(kv KV) error { again = append(again, kv); return nil }); err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(kvs)
	if fmt.Sprint(again) != got {
		t.Fatalf("reader changed under writes:\n%v\n%v", again, kvs)
	}
	if br.Applied() != 7 || leased != 1 || len(kvs) != 3 {
		t.Fatalf("applied %d leased %d keys %v", br.Applied(), leased, kvs)
	}
	d := backupfile.NewDigest()
	for _, kv := range kvs {
		d.Add(kv.Key, kv.Value, kv.Revision)
	}
	// The range's own digest counts the leased key; without it the two
	// hash the same bytes.
	if want.Keys != 4 || d.Keys() != 3 {
		t.Fatalf("digest keys %d, backup %d", want.Keys, d.Keys())
	}
	f2 := mustRange(t, s, 3)
	f2.ApplyBatch([]*raft.Log{put(1, "a", "1"), put(2, "b", "2b")})
	want2, _ := f2.Digest()
	kvs2, _, br2 := backupAll(t, f2)
	br2.Close()
	d2 := backupfile.NewDigest()
	for _, kv := range kvs2 {
		d2.Add(kv.Key, kv.Value, kv.Revision)
	}
	if d2.Sum() != want2.Sum {
		t.Fatalf("backup digest %s, range digest %s", d2.Sum(), want2.Sum)
	}
}

// TestCreateRestoredRange writes a restored range, reopens the store as a
// node would, and checks the keys, revisions, applied index, pending
// bootstrap and that new writes apply (none is skipped as already applied).
func TestCreateRestoredRange(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	desc := Descriptor{ID: 7, Start: []byte("b"), End: []byte("m"), Generation: 1, Replicas: []string{"n1"}}
	kvs := []RestoredKV{{Key: []byte("b"), Value: []byte("1")}, {Key: []byte("c"), Value: []byte("2")}}
	i := 0
	next := func() (RestoredKV, bool, error) {
		if i == len(kvs) {
			return RestoredKV{}, false, nil
		}
		i++
		return kvs[i-1], true, nil
	}
	servers := []Server{{ID: "n1", Addr: "127.0.0.1:1"}}
	if err := s.CreateRestoredRange(desc, servers, 1, next); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRestoredRange(desc, servers, 1, next); err == nil {
		t.Fatal("a second restore of the same range was accepted")
	}
	bad := Descriptor{ID: 8, Start: []byte("x"), Generation: 1}
	outside := []RestoredKV{{Key: []byte("a")}}
	if err := s.CreateRestoredRange(bad, servers, 1, func() (RestoredKV, bool, error) {
		if len(outside) == 0 {
			return RestoredKV{}, false, nil
		}
		kv := outside[0]
		outside = outside[1:]
		return kv, true, nil
	}); err == nil {
		t.Fatal("a key outside the range was restored")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	defer s.Close()
	f, err := s.OpenRange(desc)
	if err != nil {
		t.Fatal(err)
	}
	if f.AppliedIndex() != 0 {
		t.Fatalf("applied %d, want 0", f.AppliedIndex())
	}
	pending, err := s.PendingBootstrap(7)
	if err != nil || len(pending) != 1 || pending[0] != servers[0] {
		t.Fatalf("pending bootstrap %v, %v", pending, err)
	}
	if keys, _ := f.Size(); keys != 2 {
		t.Fatalf("size %d keys", keys)
	}
	d, err := f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	want := backupfile.NewDigest()
	want.Add([]byte("b"), []byte("1"), 1)
	want.Add([]byte("c"), []byte("2"), 1)
	if d.Sum != want.Sum() {
		t.Fatalf("restored digest %s, want %s", d.Sum, want.Sum())
	}
	// A fresh log's first write (index 2, after the configuration at 1)
	// applies and outranks the restored revision.
	f.ApplyBatch([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogConfiguration}, put(2, "b", "new")})
	v, rev, found, _, err := f.Get([]byte("b"))
	if err != nil || !found || string(v) != "new" || rev != 2 {
		t.Fatalf("after a new write: %q rev %d found %v err %v", v, rev, found, err)
	}
	mustGet(t, f, "c", "2")
}
