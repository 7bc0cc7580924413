package wal

import (
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
)

// memFS is an in-memory directory that knows what is durable: a file's
// data as of its last Sync, the directory's entries as of the last
// SyncDir. image builds what a crash could leave behind: the durable
// state plus some of what was not synced, torn or out of order. The log
// is written only through it in the crash tests.
type memFS struct {
	mu      sync.Mutex
	files   map[string]*memFile // the directory now
	durable map[string]*memFile // the directory as of the last SyncDir
	dirOps  []dirOp             // since the last SyncDir, in order
	seq     int                 // writes made
	// recordsBy counts the log records written by each operation (tag):
	// the syncer writes an append of an earlier operation while a later
	// one runs, so records alone cannot say whether that one wrote.
	recordsBy map[int]int
	nextID    int
	// tag names the operation that makes a write (the crash test's op
	// number); after runs after every change, with mu held.
	tag   func() int
	after func(m *memFS, what string)
	// writeErr, when set, fails every WriteAt without writing.
	writeErr error
}

type dirOp struct {
	name, to string // to: a rename's new name
	f        *memFile
	remove   bool
}

type memFile struct {
	id       int
	name     string
	data     []byte
	durable  []byte
	unsynced []memWrite // since the last Sync, in order
	// appends the log made to its tail that have not reached the file
	// yet, each tagged with the operation that made it (noteAppend):
	// WriteAt splits a write of several of them into one write each.
	appends []memAppend
	// maxTag is the highest tag of a record write in durable.
	maxTag int
}

// memAppend is an append the log noted: n bytes at off, made by
// operation tag.
type memAppend struct {
	off, n int64
	tag    int
}

type memWrite struct {
	off      int64
	data     []byte // nil for a truncation to off
	seq, tag int
	record   bool // a log record (in a segment, past its header)
}

func newMemFS() *memFS {
	return &memFS{files: make(map[string]*memFile), durable: make(map[string]*memFile), recordsBy: make(map[int]int)}
}

func (m *memFS) changed(what string) {
	if m.after != nil {
		m.after(m, what)
	}
}

func (m *memFS) Create(name string) (file, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.nextID++
	f := &memFile{id: m.nextID, name: name, maxTag: -1}
	m.files[name] = f
	m.dirOps = append(m.dirOps, dirOp{name: name, f: f})
	m.changed("create " + name)
	return &memHandle{fs: m, f: f}, nil
}

func (m *memFS) Open(name string) (file, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return &memHandle{fs: m, f: f}, nil
}

func (m *memFS) ReadFile(name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return slices.Clone(f.data), nil
}

func (m *memFS) Rename(from, to string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[from]
	if !ok {
		return &fs.PathError{Op: "rename", Path: from, Err: fs.ErrNotExist}
	}
	delete(m.files, from)
	m.files[to] = f
	m.dirOps = append(m.dirOps, dirOp{name: from, to: to, f: f})
	m.changed("rename " + from)
	return nil
}

func (m *memFS) Remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.files[name]; !ok {
		return nil
	}
	delete(m.files, name)
	m.dirOps = append(m.dirOps, dirOp{name: name, remove: true})
	m.changed("remove " + name)
	return nil
}

func (m *memFS) List() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var names []string
	for n := range m.files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

func (m *memFS) SyncDir() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.durable = make(map[string]*memFile, len(m.files))
	for n, f := range m.files {
		m.durable[n] = f
	}
	m.dirOps = nil
	m.changed("syncdir")
	return nil
}

type memHandle struct {
	fs *memFS
	f  *memFile
}

func (h *memHandle) ReadAt(b []byte, off int64) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if off >= int64(len(h.f.data)) {
		return 0, io.EOF
	}
	n := copy(b, h.f.data[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// noteAppend is the log's knobs.appended: the n bytes at off were
// appended by the operation running now, and reach the file later.
func (m *memFS) noteAppend(f file, off, n int64) {
	h, ok := f.(*memHandle)
	if !ok || h.fs != m {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	tag := -1
	if m.tag != nil {
		tag = m.tag()
	}
	h.f.appends = append(h.f.appends, memAppend{off: off, n: n, tag: tag})
}

// WriteAt records one write, or, when b holds appends the log noted
// (several operations' records written together from its tail), one
// write per append, each tagged with the operation that made it: a crash
// may keep any prefix of them, as it may of separate writes.
func (h *memHandle) WriteAt(b []byte, off int64) (int, error) {
	m := h.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.writeErr != nil {
		return 0, m.writeErr
	}
	if end := off + int64(len(b)); end > int64(len(h.f.data)) {
		h.f.data = append(h.f.data, make([]byte, end-int64(len(h.f.data)))...)
	}
	copy(h.f.data[off:], b)
	record := strings.HasSuffix(h.f.name, segSuffix) && off >= segHeaderSize
	tag := -1
	if m.tag != nil {
		tag = m.tag()
	}
	pieces := []memWrite{{off: off, data: b, tag: tag}}
	noted := len(h.f.appends) > 0 && h.f.appends[0].off == off // pieces are noted appends
	if noted {
		pieces = pieces[:0]
		at := off
		for _, a := range h.f.appends {
			if a.off != at || at+a.n > off+int64(len(b)) {
				break
			}
			pieces = append(pieces, memWrite{off: at, data: b[at-off : at-off+a.n], tag: a.tag})
			at += a.n
		}
		if at != off+int64(len(b)) {
			panic(fmt.Sprintf("memfs: a write of %s [%d, %d) is not the appends noted (%d noted, matched to %d)", h.f.name, off, off+int64(len(b)), len(h.f.appends), at))
		}
	}
	for _, p := range pieces {
		if noted {
			// One at a time: an image taken between two pieces sees the
			// rest as appends still in the tail.
			h.f.appends = h.f.appends[1:]
		}
		m.seq++
		if record {
			m.recordsBy[p.tag]++
		}
		h.f.unsynced = append(h.f.unsynced, memWrite{off: p.off, data: slices.Clone(p.data), seq: m.seq, tag: p.tag, record: record})
		m.changed("write " + h.f.name)
	}
	return len(b), nil
}

func (h *memHandle) Sync() error {
	m := h.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, w := range h.f.unsynced {
		if w.record {
			h.f.maxTag = max(h.f.maxTag, w.tag)
		}
	}
	h.f.durable = slices.Clone(h.f.data)
	h.f.unsynced = nil
	m.changed("sync " + h.f.name)
	return nil
}

func (h *memHandle) Truncate(size int64) error {
	m := h.fs
	m.mu.Lock()
	defer m.mu.Unlock()
	if size <= int64(len(h.f.data)) {
		h.f.data = h.f.data[:size]
	} else {
		h.f.data = append(h.f.data, make([]byte, size-int64(len(h.f.data)))...)
	}
	m.seq++
	h.f.unsynced = append(h.f.unsynced, memWrite{off: size, seq: m.seq, tag: -1})
	m.changed("truncate " + h.f.name)
	return nil
}

func (h *memHandle) Allocate(int64) {}

func (h *memHandle) Size() (int64, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	return int64(len(h.f.data)), nil
}

func (h *memHandle) Close() error { return nil }

// crashImage is what a crash left: files by name, and which operations'
// writes made it (see memFS.image).
type crashImage struct {
	files map[string][]byte
	// ops is how many operations (by tag) are in the image whole: every
	// record write tagged below it is there, and none tagged at or above
	// it comes before the first one missing. Replay must find exactly
	// their effect.
	ops   int
	acked int // operations acknowledged as durable when it was taken
	what  string
	// missing describes the first write missing, for failure messages.
	missing string
}

// image returns a crash image of the current state. Caller holds mu.
// The directory is its durable state plus any of the changes since;
// each file is its durable data plus a prefix of the writes since, the
// next one perhaps torn, and perhaps one later write (disks persist
// pages out of order).
func (m *memFS) image(rng *rand.Rand, what string) crashImage {
	dir := make(map[string]*memFile, len(m.durable))
	for n, f := range m.durable {
		dir[n] = f
	}
	// POSIX promises nothing about which unsynced directory changes
	// persist, nor in what order: any of them may.
	for _, op := range m.dirOps {
		if rng.IntN(2) == 0 {
			continue
		}
		switch {
		case op.remove:
			delete(dir, op.name)
		case op.to != "":
			delete(dir, op.name)
			dir[op.to] = op.f
		default:
			dir[op.name] = op.f
		}
	}
	img := crashImage{files: make(map[string][]byte, len(dir)), what: what}
	firstMissing, firstMissingTag, maxTag := -1, 0, -1
	for n, f := range dir {
		data := slices.Clone(f.durable)
		maxTag = max(maxTag, f.maxTag)
		keep := rng.IntN(len(f.unsynced) + 1)
		extra, torn := -1, -1
		if keep < len(f.unsynced) {
			if rng.IntN(3) == 0 {
				torn = keep
			}
			if rng.IntN(3) == 0 && keep+1 < len(f.unsynced) {
				extra = keep + 1 + rng.IntN(len(f.unsynced)-keep-1)
			}
		}
		for i, w := range f.unsynced {
			whole := i < keep || i == extra
			if whole || i == torn {
				b := w.data
				if !whole && b != nil {
					b = b[:rng.IntN(len(b))]
				}
				data = applyWrite(data, w.off, b, w.data == nil)
			}
			if !w.record {
				continue
			}
			if whole {
				maxTag = max(maxTag, w.tag)
			} else if firstMissing < 0 || w.seq < firstMissing {
				firstMissing, firstMissingTag = w.seq, w.tag
				img.missing = fmt.Sprintf("%d bytes at %s:%d by op %d", len(w.data), n, w.off, w.tag)
			}
		}
		img.files[n] = data
	}
	// Without a missing write, every operation before the current one is
	// whole (some wrote nothing), and the current one too if its write
	// is there.
	cur := maxTag
	if m.tag != nil {
		cur = m.tag()
	}
	img.ops = cur
	if maxTag >= cur {
		img.ops = maxTag + 1
	}
	if firstMissing >= 0 {
		img.ops = firstMissingTag
	} else {
		// Appends still in the log's tail come after every write: the
		// first of them is the first operation the image lacks.
		for _, f := range m.files {
			if len(f.appends) > 0 && f.appends[0].tag >= 0 {
				img.ops = min(img.ops, f.appends[0].tag)
				img.missing = fmt.Sprintf("op %d's append, not yet written to %s", f.appends[0].tag, f.name)
			}
		}
	}
	return img
}

func applyWrite(data []byte, off int64, b []byte, truncate bool) []byte {
	if truncate {
		if off <= int64(len(data)) {
			return data[:off]
		}
		return append(data, make([]byte, off-int64(len(data)))...)
	}
	if end := off + int64(len(b)); end > int64(len(data)) {
		data = append(data, make([]byte, end-int64(len(data)))...)
	}
	copy(data[off:], b)
	return data
}

// memFSFromImage returns a file system holding img, all of it durable.
func memFSFromImage(img crashImage) *memFS {
	m := newMemFS()
	for n, b := range img.files {
		m.nextID++
		f := &memFile{id: m.nextID, name: n, data: slices.Clone(b), durable: slices.Clone(b), maxTag: -1}
		m.files[n] = f
		m.durable[n] = f
	}
	return m
}

func (img crashImage) String() string {
	var names []string
	for n, b := range img.files {
		names = append(names, fmt.Sprintf("%s(%d)", n, len(b)))
	}
	sort.Strings(names)
	return fmt.Sprintf("crash at %q holding %d ops (%d acknowledged; first write missing: %s), files %v", img.what, img.ops, img.acked, img.missing, names)
}

// recordWritesBy counts the log records operation op has written.
func (m *memFS) recordWritesBy(op int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recordsBy[op]
}
