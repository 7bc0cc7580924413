package backupfile

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ManifestName is the manifest's entry name, in a directory and a tar.
const ManifestName = "manifest.json"

// FormatVersion is the manifest's format; Verify refuses others.
const FormatVersion = 1

// RestoredRevision is the revision every restored key gets: the restored
// state is the state machine before the first entry of a fresh log (index
// 1 is the group's first configuration, never a write), so every write
// after the restore has a higher revision than every restored key.
const RestoredRevision = 1

// ErrCorrupt is any mismatch between a backup and its manifest.
var ErrCorrupt = errors.New("backup does not match its manifest")

// Manifest describes a backup.
type Manifest struct {
	Format    int       `json:"format"`
	ClusterID string    `json:"cluster_id"`
	Created   time.Time `json:"created"`
	Ranges    []Range   `json:"ranges"`
}

// Range is one range's entry in the manifest.
type Range struct {
	ID           uint64 `json:"id"`
	Start        []byte `json:"start"`
	End          []byte `json:"end"`
	AppliedIndex uint64 `json:"applied_index"`
	Keys         uint64 `json:"keys"`
	// SHA256 is the range's digest at AppliedIndex as its replica
	// computed it (RangeFSM.Digest over the keys backed up).
	SHA256 string `json:"sha256"`
	// RestoredSHA256 is the digest the range has right after a restore:
	// the same keys and values, every revision RestoredRevision.
	RestoredSHA256 string `json:"restored_sha256"`
	File           string `json:"file"`
	FileSHA256     string `json:"file_sha256"`
}

// FileName is the file a range is stored in.
func FileName(id uint64) string { return fmt.Sprintf("range-%d.kvs", id) }

// Digest hashes a range's keys exactly as RangeFSM.Digest does for keys
// without a lease: length-prefixed key and value, then the revision, in
// key order.
type Digest struct {
	h    hash.Hash
	keys uint64
	num  [8]byte
}

// NewDigest starts an empty digest.
func NewDigest() *Digest { return &Digest{h: sha256.New()} }

// Add hashes one key.
func (d *Digest) Add(key, value []byte, rev uint64) {
	d.keys++
	binary.BigEndian.PutUint64(d.num[:], uint64(len(key)))
	d.h.Write(d.num[:])
	d.h.Write(key)
	binary.BigEndian.PutUint64(d.num[:], uint64(len(value)))
	d.h.Write(d.num[:])
	d.h.Write(value)
	binary.BigEndian.PutUint64(d.num[:], rev)
	d.h.Write(d.num[:])
}

// Keys is how many keys were added.
func (d *Digest) Keys() uint64 { return d.keys }

// Sum is the hex digest.
func (d *Digest) Sum() string { return hex.EncodeToString(d.h.Sum(nil)) }

// Range file format:
//
//	magic "DKVBACKUP1\n"
//	records: 0x01 uvarint(len key) key uvarint(len value) value uvarint(revision)
//	end:     0x00
//
// Its integrity is the manifest's file_sha256; its meaning, the digests.
var fileMagic = []byte("DKVBACKUP1\n")

const (
	tagEnd    = 0
	tagRecord = 1
	// maxField bounds a key or value read from a file: far above the
	// server's limits, low enough that a damaged length cannot exhaust
	// memory.
	maxField = 64 << 20
)

// Record is one key of a range file.
type Record struct {
	Key, Value []byte
	Revision   uint64
}

// RangeWriter writes one range file and computes what the manifest says
// of it.
type RangeWriter struct {
	w        *bufio.Writer
	file     hash.Hash
	digest   *Digest
	restored *Digest
	last     []byte
	hdr      []byte
}

// NewRangeWriter starts a range file on w.
func NewRangeWriter(w io.Writer) *RangeWriter {
	fh := sha256.New()
	rw := &RangeWriter{w: bufio.NewWriterSize(io.MultiWriter(w, fh), 256<<10), file: fh, digest: NewDigest(), restored: NewDigest()}
	rw.w.Write(fileMagic)
	return rw
}

// Add appends a key; keys must come in strictly increasing order.
func (rw *RangeWriter) Add(key, value []byte, rev uint64) error {
	if rw.last != nil && bytes.Compare(key, rw.last) <= 0 {
		return fmt.Errorf("backupfile: key %q after %q: keys must increase", key, rw.last)
	}
	rw.last = append(rw.last[:0], key...)
	rw.digest.Add(key, value, rev)
	rw.restored.Add(key, value, RestoredRevision)
	rw.hdr = append(rw.hdr[:0], tagRecord)
	rw.hdr = binary.AppendUvarint(rw.hdr, uint64(len(key)))
	rw.w.Write(rw.hdr)
	rw.w.Write(key)
	rw.w.Write(binary.AppendUvarint(rw.hdr[:0], uint64(len(value))))
	rw.w.Write(value)
	_, err := rw.w.Write(binary.AppendUvarint(rw.hdr[:0], rev))
	return err
}

// Finish ends the file and fills in r's key count, digests and file hash.
func (rw *RangeWriter) Finish(r *Range) error {
	if err := rw.w.WriteByte(tagEnd); err != nil {
		return err
	}
	if err := rw.w.Flush(); err != nil {
		return err
	}
	r.Keys, r.SHA256, r.RestoredSHA256 = rw.digest.Keys(), rw.digest.Sum(), rw.restored.Sum()
	r.FileSHA256 = hex.EncodeToString(rw.file.Sum(nil))
	return nil
}

// RecordReader reads one range file's records.
type RecordReader struct {
	r    *bufio.Reader
	done bool
	n    int
	// check sees each record before the caller does.
	check func(Record) error
}

func newRecordReader(r io.Reader) (*RecordReader, error) {
	br := bufio.NewReaderSize(r, 256<<10)
	magic := make([]byte, len(fileMagic))
	if _, err := io.ReadFull(br, magic); err != nil || !bytes.Equal(magic, fileMagic) {
		return nil, fmt.Errorf("%w: not a range file (bad header)", ErrCorrupt)
	}
	return &RecordReader{r: br}, nil
}

// Next returns the next record, or io.EOF after the last.
func (rr *RecordReader) Next() (Record, error) {
	if rr.done {
		return Record{}, io.EOF
	}
	tag, err := rr.r.ReadByte()
	if err != nil {
		return Record{}, fmt.Errorf("%w: record %d: %v", ErrCorrupt, rr.n, err)
	}
	switch tag {
	case tagEnd:
		rr.done = true
		if _, err := rr.r.ReadByte(); err != io.EOF {
			return Record{}, fmt.Errorf("%w: bytes after the end of the file", ErrCorrupt)
		}
		return Record{}, io.EOF
	case tagRecord:
	default:
		return Record{}, fmt.Errorf("%w: record %d: bad tag %d", ErrCorrupt, rr.n, tag)
	}
	var rec Record
	if rec.Key, err = rr.field(); err == nil {
		if rec.Value, err = rr.field(); err == nil {
			rec.Revision, err = binary.ReadUvarint(rr.r)
		}
	}
	if err != nil {
		return Record{}, fmt.Errorf("%w: record %d: %v", ErrCorrupt, rr.n, err)
	}
	rr.n++
	if rr.check != nil {
		if err := rr.check(rec); err != nil {
			return Record{}, err
		}
	}
	return rec, nil
}

func (rr *RecordReader) field() ([]byte, error) {
	n, err := binary.ReadUvarint(rr.r)
	if err != nil {
		return nil, err
	}
	if n > maxField {
		return nil, fmt.Errorf("field of %d bytes", n)
	}
	b := make([]byte, n)
	_, err = io.ReadFull(rr.r, b)
	return b, err
}

// Visit is called for each range of a backup with its records; it may
// stop reading early (the rest is still checked).
type Visit func(m *Manifest, r *Range, recs *RecordReader) error

// Verify checks a backup (directory or tar file) against its manifest:
// the manifest's format and that its ranges tile the key space, each
// file's SHA-256, and each range's key order, bounds, count and digests
// recomputed from its file. The error names the first mismatch.
func Verify(path string) (*Manifest, error) {
	return Read(path, nil)
}

// Read verifies the backup at path as Verify does, calling visit (if not
// nil) for each range in manifest order as its file is read. Whatever
// visit did with a range whose check then fails, Read returns the error.
func Read(path string, visit Visit) (*Manifest, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("backupfile: %w", err)
	}
	if st.IsDir() {
		return readDir(path, visit)
	}
	return readTar(path, visit)
}

func readDir(dir string, visit Visit) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, fmt.Errorf("backupfile: %w", err)
	}
	m, err := parseManifest(b)
	if err != nil {
		return nil, err
	}
	for i := range m.Ranges {
		r := &m.Ranges[i]
		f, err := os.Open(filepath.Join(dir, r.File))
		if err != nil {
			return nil, fmt.Errorf("%w: range %d: %w", ErrCorrupt, r.ID, err)
		}
		err = checkRange(m, r, f, visit)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

func readTar(path string, visit Visit) (*Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backupfile: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	h, err := tr.Next()
	if err != nil || h.Name != ManifestName {
		return nil, fmt.Errorf("%w: %s: a backup tar starts with %s", ErrCorrupt, path, ManifestName)
	}
	b, err := io.ReadAll(io.LimitReader(tr, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrCorrupt, err)
	}
	m, err := parseManifest(b)
	if err != nil {
		return nil, err
	}
	for i := range m.Ranges {
		r := &m.Ranges[i]
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%w: range %d: %s missing from the tar: %v", ErrCorrupt, r.ID, r.File, err)
		}
		if h.Name != r.File {
			return nil, fmt.Errorf("%w: range %d: tar holds %s where %s belongs", ErrCorrupt, r.ID, h.Name, r.File)
		}
		if err := checkRange(m, r, tr, visit); err != nil {
			return nil, err
		}
	}
	if h, err := tr.Next(); err != io.EOF {
		name := ""
		if h != nil {
			name = h.Name
		}
		return nil, fmt.Errorf("%w: the tar holds more than the manifest names (%s, %v)", ErrCorrupt, name, err)
	}
	return m, nil
}

func parseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrCorrupt, err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("%w: manifest format %d; this build reads %d", ErrCorrupt, m.Format, FormatVersion)
	}
	if len(m.Ranges) == 0 {
		return nil, fmt.Errorf("%w: manifest names no ranges", ErrCorrupt)
	}
	// The ranges of one routing table tile the key space: a gap or an
	// overlap would restore keys nowhere or twice.
	var prevEnd []byte
	seen := map[uint64]bool{}
	for i, r := range m.Ranges {
		if !bytes.Equal(r.Start, prevEnd) {
			return nil, fmt.Errorf("%w: range %d starts at %q, not where the range before it ends (%q)", ErrCorrupt, r.ID, r.Start, prevEnd)
		}
		if i < len(m.Ranges)-1 && len(r.End) == 0 || len(r.End) > 0 && bytes.Compare(r.End, r.Start) <= 0 {
			return nil, fmt.Errorf("%w: range %d has bad bounds [%q, %q)", ErrCorrupt, r.ID, r.Start, r.End)
		}
		if r.ID <= 1 || seen[r.ID] {
			return nil, fmt.Errorf("%w: range id %d is reserved or repeated", ErrCorrupt, r.ID)
		}
		if r.File != FileName(r.ID) {
			return nil, fmt.Errorf("%w: range %d: file %q, want %q", ErrCorrupt, r.ID, r.File, FileName(r.ID))
		}
		seen[r.ID] = true
		prevEnd = r.End
	}
	if len(prevEnd) != 0 {
		return nil, fmt.Errorf("%w: the last range ends at %q, not at the end of the key space", ErrCorrupt, prevEnd)
	}
	return &m, nil
}

// checkRange reads one range file from r, passing it to visit, and
// compares what it read with the manifest.
func checkRange(m *Manifest, rg *Range, r io.Reader, visit Visit) error {
	fh := sha256.New()
	rr, err := newRecordReader(io.TeeReader(r, fh))
	if err != nil {
		return fmt.Errorf("range %d (%s): %w", rg.ID, rg.File, err)
	}
	digest, restored := NewDigest(), NewDigest()
	var last []byte
	// The records visit sees are checked as they pass: key order,
	// bounds, digests.
	rr.check = func(rec Record) error {
		if last != nil && bytes.Compare(rec.Key, last) <= 0 {
			return fmt.Errorf("%w: key %q after %q", ErrCorrupt, rec.Key, last)
		}
		if bytes.Compare(rec.Key, rg.Start) < 0 || len(rg.End) > 0 && bytes.Compare(rec.Key, rg.End) >= 0 {
			return fmt.Errorf("%w: key %q outside the range's bounds", ErrCorrupt, rec.Key)
		}
		last = rec.Key
		digest.Add(rec.Key, rec.Value, rec.Revision)
		restored.Add(rec.Key, rec.Value, RestoredRevision)
		return nil
	}
	if visit != nil {
		if err := visit(m, rg, rr); err != nil {
			return fmt.Errorf("range %d (%s): %w", rg.ID, rg.File, err)
		}
	}
	for range 1 << 40 { // ends at the file's end marker
		if _, err := rr.Next(); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("range %d (%s): %w", rg.ID, rg.File, err)
		}
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return fmt.Errorf("range %d (%s): %w", rg.ID, rg.File, err)
	}
	switch sum := hex.EncodeToString(fh.Sum(nil)); {
	case sum != rg.FileSHA256:
		return fmt.Errorf("%w: range %d: %s has SHA-256 %s, the manifest says %s", ErrCorrupt, rg.ID, rg.File, sum, rg.FileSHA256)
	case digest.Keys() != rg.Keys:
		return fmt.Errorf("%w: range %d: %s holds %d keys, the manifest says %d", ErrCorrupt, rg.ID, rg.File, digest.Keys(), rg.Keys)
	case digest.Sum() != rg.SHA256:
		return fmt.Errorf("%w: range %d: digest of %s is %s, the manifest says %s", ErrCorrupt, rg.ID, rg.File, digest.Sum(), rg.SHA256)
	case restored.Sum() != rg.RestoredSHA256:
		return fmt.Errorf("%w: range %d: restored digest of %s is %s, the manifest says %s", ErrCorrupt, rg.ID, rg.File, restored.Sum(), rg.RestoredSHA256)
	}
	return nil
}

// WriteManifest writes m as manifest.json into dir.
func WriteManifest(dir string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("backupfile: manifest: %w", err)
	}
	return writeSynced(filepath.Join(dir, ManifestName), b)
}

func writeSynced(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("backupfile: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("backupfile: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("backupfile: %w", err)
	}
	return f.Close()
}

// IsTar reports whether a backup target names a tar file rather than a
// directory.
func IsTar(path string) bool { return strings.HasSuffix(path, ".tar") }

// Commit moves a finished backup from the staging directory tmp (holding
// the manifest and every range file) to target, atomically: a directory
// is renamed into place, a tar is written beside target and renamed. So
// a backup interrupted at any point leaves nothing at target, and target
// never holds half a backup. target must not exist yet.
func Commit(tmp, target string, m *Manifest) error {
	if _, err := os.Lstat(target); err == nil {
		return fmt.Errorf("backupfile: %s already exists", target)
	}
	if !IsTar(target) {
		if err := syncDir(tmp); err != nil {
			return err
		}
		if err := os.Rename(tmp, target); err != nil {
			return fmt.Errorf("backupfile: %w", err)
		}
		return syncDir(filepath.Dir(target))
	}
	// A name of its own, so two saves to one target never share a
	// partial file; Link below refuses an existing target, where Rename
	// would replace it.
	f, err := os.CreateTemp(filepath.Dir(target), "."+filepath.Base(target)+".partial-*")
	if err != nil {
		return fmt.Errorf("backupfile: %w", err)
	}
	part := f.Name()
	err = writeTar(f, tmp, m)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(part, target)
	}
	os.Remove(part)
	if err != nil {
		return fmt.Errorf("backupfile: write %s: %w", target, err)
	}
	if err := syncDir(filepath.Dir(target)); err != nil {
		return err
	}
	return os.RemoveAll(tmp)
}

func writeTar(w io.Writer, dir string, m *Manifest) error {
	tw := tar.NewWriter(w)
	names := []string{ManifestName}
	for _, r := range m.Ranges {
		names = append(names, r.File)
	}
	for _, name := range names {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err == nil {
			err = tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: st.Size(), ModTime: m.Created, Typeflag: tar.TypeReg})
		}
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		f.Close()
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("backupfile: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("backupfile: sync %s: %w", dir, err)
	}
	return nil
}

// SyncFile flushes a written range file to disk.
func SyncFile(f *os.File) error {
	if err := f.Sync(); err != nil {
		return fmt.Errorf("backupfile: sync %s: %w", f.Name(), err)
	}
	return nil
}
