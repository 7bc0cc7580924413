package backupfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeBackup stages a backup of the given ranges (bounds, then keys) in
// a temporary directory and commits it to target.
func writeBackup(t *testing.T, target string, bounds [][2]string, keys [][]string) *Manifest {
	t.Helper()
	stage := t.TempDir()
	m := &Manifest{Format: FormatVersion, ClusterID: "c1", Created: time.Unix(1700000000, 0).UTC()}
	for i, b := range bounds {
		id := uint64(i + 2)
		f, err := os.Create(filepath.Join(stage, FileName(id)))
		if err != nil {
			t.Fatal(err)
		}
		rw := NewRangeWriter(f)
		for j, k := range keys[i] {
			if err := rw.Add([]byte(k), []byte("v-"+k), uint64(10+j)); err != nil {
				t.Fatal(err)
			}
		}
		r := Range{ID: id, Start: []byte(b[0]), End: []byte(b[1]), AppliedIndex: 99, File: FileName(id)}
		if err := rw.Finish(&r); err != nil {
			t.Fatal(err)
		}
		f.Close()
		m.Ranges = append(m.Ranges, r)
	}
	if err := WriteManifest(stage, m); err != nil {
		t.Fatal(err)
	}
	if err := Commit(stage, target, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRoundTripAndDigests(t *testing.T) {
	for _, name := range []string{"b", "b.tar"} {
		t.Run(name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), name)
			want := writeBackup(t, target, [][2]string{{"", "m"}, {"m", ""}}, [][]string{{"a", "b"}, {"m", "x", "z"}})
			var got []string
			m, err := Read(target, func(_ *Manifest, r *Range, recs *RecordReader) error {
				for {
					rec, err := recs.Next()
					if err == io.EOF {
						return nil
					}
					if err != nil {
						return err
					}
					got = append(got, fmt.Sprintf("%d:%s=%s@%d", r.ID, rec.Key, rec.Value, rec.Revision))
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, " ") != "2:a=v-a@10 2:b=v-b@11 3:m=v-m@10 3:x=v-x@11 3:z=v-z@12" {
				t.Fatalf("records %v", got)
			}
			if m.Ranges[1].Keys != 3 || m.Ranges[1].SHA256 != want.Ranges[1].SHA256 || m.Ranges[1].SHA256 == m.Ranges[1].RestoredSHA256 {
				t.Fatalf("manifest %+v", m.Ranges[1])
			}
			// The digest is RangeFSM.Digest's: the same bytes hashed.
			d := NewDigest()
			d.Add([]byte("a"), []byte("v-a"), 10)
			d.Add([]byte("b"), []byte("v-b"), 11)
			if d.Sum() != m.Ranges[0].SHA256 {
				t.Fatalf("digest %s, manifest %s", d.Sum(), m.Ranges[0].SHA256)
			}
		})
	}
}

// TestVerifyRefusesDamage flips one byte at several places of a backup,
// directory and tar, and expects Verify to name a mismatch each time.
func TestVerifyRefusesDamage(t *testing.T) {
	for _, name := range []string{"b", "b.tar"} {
		for _, at := range []string{"start", "middle", "end"} {
			t.Run(name+"/"+at, func(t *testing.T) {
				target := filepath.Join(t.TempDir(), name)
				writeBackup(t, target, [][2]string{{"", "k"}, {"k", ""}}, [][]string{{"a", "b", "c"}, {"k", "l"}})
				path := target
				if !IsTar(name) {
					path = filepath.Join(target, FileName(2))
				}
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				i := map[string]int{"start": 3, "middle": len(b) / 2, "end": len(b) - 2}[at]
				if IsTar(name) {
					// Inside a range file's bytes: the tar's block padding
					// carries nothing and its reader skips it.
					first := bytes.Index(b, fileMagic)
					last := bytes.LastIndex(b, fileMagic)
					i = map[string]int{"start": first + 3, "middle": first + len(fileMagic) + 4, "end": last + len(fileMagic) + 6}[at]
				}
				b[i] ^= 0x40
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
				_, err = Verify(target)
				if err == nil {
					t.Fatalf("a flipped byte at %d of %d passed verification", i, len(b))
				}
				t.Logf("refused: %v", err)
			})
		}
	}
}

func TestManifestChecks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		bounds [][2]string
		keys   [][]string
		want   string
	}{
		{"gap", [][2]string{{"", "k"}, {"m", ""}}, [][]string{{"a"}, {"m"}}, "not where the range before it ends"},
		{"not to the end", [][2]string{{"", "k"}}, [][]string{{"a"}}, "not at the end of the key space"},
		{"key outside", [][2]string{{"", "k"}, {"k", ""}}, [][]string{{"a", "q"}, {"k"}}, "outside the range's bounds"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(t.TempDir(), "b")
			writeBackup(t, target, tc.bounds, tc.keys)
			_, err := Verify(target)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

func TestCommitRefusesExistingTarget(t *testing.T) {
	target := filepath.Join(t.TempDir(), "b")
	writeBackup(t, target, [][2]string{{"", ""}}, [][]string{{"a"}})
	stage := t.TempDir()
	if err := Commit(stage, target, &Manifest{}); err == nil {
		t.Fatal("Commit replaced an existing backup")
	}
}
