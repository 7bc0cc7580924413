package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// SegmentLog is a raft.LogStore that makes a batch of entries durable with
// one write and one fsync: records are appended to segment files, and an
// in-memory index maps each log index to its record. raft-boltdb needs two
// fsyncs and a B-tree page rewrite per batch; on this path every fsync is
// write latency, since Raft cannot acknowledge an entry before its log
// has it.
//
// Layout: <dir>/<first index, 20 digits>.seg files, and <dir>/first, which
// holds the first live index after the log's head was compacted. A record
// is a header (payload length and CRC-32C, 4 bytes each) and a payload:
// index, term, type, appended-at, then length-prefixed extensions and
// data. Opening scans every segment; a torn record at the end of the last
// segment (a crash mid-write) is cut off, anything else that does not
// check out is an error.
//
// What Raft may rely on (any log that replaces this one must keep it):
//
//   - Monotonic. Entries follow the last one without a gap; into an empty
//     log the first append may be at any index. IsMonotonic says so, and
//     that changes what hashicorp/raft does after installing a snapshot
//     from its leader: it deletes the whole log and appends the leader's
//     entries from the snapshot index + 1. Without it Raft keeps the old
//     entries whenever the log is shorter than TrailingLogs and appends
//     after a gap, which this log refuses: the follower then installed the
//     same snapshot every 20 s and never applied another entry (issue 12).
//   - Deletes cut a prefix (after a snapshot), a suffix (entries a new
//     leader overwrites) or everything; never the middle.
//   - The floor (file "first") is durable before the entries below it go:
//     a crash between a delete and the next append reopens into the same
//     log or an empty one, never one that claims deleted entries or starts
//     at a wrong index. A log emptied at a higher index and begun again
//     lower moves the floor down only after every file of the old log is
//     gone (see startAgain), so that no old entry reappears above it.
//   - A suffix cut is durable before the next append.
//
// Locking: acquire wmu before smu and before mu, and never hold smu and
// mu together. Readers take mu alone; a writer holds wmu throughout and
// mu only to publish, and waits for the syncer (sc, on smu) holding wmu
// but not mu, so a read never waits on an fsync. No fsync runs under smu
// or mu; failed is called with smu held.
type SegmentLog struct {
	dir        string
	maxSegment int64

	// wmu serialises writers: hashicorp/raft appends and truncates on its
	// main goroutine, but compacts the head from its snapshot goroutine.
	wmu sync.Mutex
	buf []byte // encode buffer, guarded by wmu

	// mu guards segs, first and last for readers; writers hold wmu and
	// take mu only to publish, so a read never waits on an fsync.
	mu    sync.RWMutex
	segs  []*segment
	first uint64 // 0 when the log is empty
	last  uint64
	floor uint64 // the durable first live index (file "first"); guarded by wmu

	// recent holds the newest small records, slot index%recentSlots,
	// guarded by mu. Raft reads every entry back right after storing it:
	// a follower to apply it, a leader to send it to each follower. From
	// here that is a copy, not a pread system call per entry, which was
	// 40% of a follower's CPU under 64 writers.
	recent [recentSlots]recentRecord

	// Syncing behind (see SetSyncBehind). written is the last index
	// written and dirty the segments written since their last fdatasync,
	// both changed under wmu; synced, every entry up to which that is in
	// the log is durable, changes under smu, and sc signals its changes.
	// written and synced are atomic so that the fast paths (every apply,
	// every AppendEntries sent or received) take no lock.
	behind  atomic.Pointer[func() bool]
	written atomic.Uint64
	dirty   []*segment
	smu     sync.Mutex
	sc      *sync.Cond
	syncing bool // the syncer is in an fdatasync
	synced  atomic.Uint64
	syncErr error // sticky: an fdatasync failed, or the log closed
	kick    chan struct{}
	quit    chan struct{}
	stopped chan struct{}
	fsync   func(*os.File) error // datasync; tests replace it
	// failed is called once when a sync fails. What the page cache held
	// is then unknown, and the log can take no more appends, so by
	// default it stops the process (as etcd and PostgreSQL do); tests
	// replace it.
	failed func(error)
}

const (
	recentSlots = 128
	// recentMaxRecord keeps the cache small (at most 2 MiB a range):
	// larger entries are read from disk, where one call is amortised.
	recentMaxRecord = 16 << 10
)

type recentRecord struct {
	index uint64
	rec   []byte // payload, as decodeRecord reads it; never modified
}

type segment struct {
	first uint64
	f     *os.File
	alloc int64 // bytes preallocated (the file's size); guarded by wmu
	// offs[i] is where the record of index first+i starts; offs[len-1] is
	// the end of the last record, so the segment holds len(offs)-1.
	offs []int64
}

func (s *segment) count() uint64 { return uint64(len(s.offs) - 1) }
func (s *segment) size() int64   { return s.offs[len(s.offs)-1] }

// Segments are preallocated a little at a time, from allocMin and at most
// allocMax more each time they fill, so that an idle range costs tens of
// kilobytes of disk while a busy one grows its file (a metadata change
// the sync must journal) about once per megabyte written.
const (
	allocMin = 64 << 10
	allocMax = 4 << 20
)

const (
	segHeader    = 8
	segFirstFile = "first"
	segSuffix    = ".seg"
	// Small enough that a compacted log (10,240 trailing entries) keeps
	// few dead bytes: the head is freed a whole segment at a time.
	defaultMaxSeg = 8 << 20
	// maxRecord bounds one record, so a corrupt length cannot make the
	// scan allocate gigabytes.
	maxRecord = 256 << 20
)

var (
	// ErrLogCorrupt: a segment holds a record that does not check out in
	// a place no crash can explain.
	ErrLogCorrupt = errors.New("raftstore: log corrupt")
)

var (
	_ raft.LogStore          = (*SegmentLog)(nil)
	_ raft.MonotonicLogStore = (*SegmentLog)(nil)
)

// IsMonotonic implements raft.MonotonicLogStore: the log refuses gaps, so
// Raft must empty it after installing a snapshot rather than append past
// a gap (see the type's comment).
func (l *SegmentLog) IsMonotonic() bool { return true }

// OpenSegmentLog opens (creating) the log in dir.
func OpenSegmentLog(dir string) (*SegmentLog, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("raftstore: log dir: %w", err)
	}
	l := &SegmentLog{dir: dir, maxSegment: defaultMaxSeg, kick: make(chan struct{}, 1), quit: make(chan struct{}), stopped: make(chan struct{}), fsync: datasync, failed: stopOnSyncFailure}
	l.sc = sync.NewCond(&l.smu)
	err := l.load()
	if n := len(l.segs); err == nil && n > 0 {
		// What a crash left in the page cache is durable from here on, so
		// that "synced" means what it says from the start. Only the last
		// segment can hold such writes: each one before it was synced
		// whole before the next began (tailFor).
		if err = datasync(l.segs[n-1].f); err != nil {
			err = fmt.Errorf("raftstore: sync log on open: %w", err)
		}
	}
	if err != nil {
		close(l.stopped) // no syncer to stop
		l.Close()
		return nil, err
	}
	l.written.Store(l.last)
	l.synced.Store(l.last)
	go l.runSyncer()
	return l, nil
}

// SetSyncBehind lets appends return before their fdatasync while behind
// reports true; a background fdatasync follows at once. hashicorp/raft
// appends to the leader's log before it sends the entries to followers,
// so the leader's fsync and the followers' ran one after the other; with
// this they overlap (the Raft thesis, section 10.2.1). It is only safe
// with the guards the shard puts around it: the state machine applies an
// entry only once WaitSynced says the leader's copy is durable, the
// commit index sent to followers never passes SyncedIndex, and a node
// answers a new leader only after its own appends are durable. Pass nil
// to sync every append before it returns (the default). Appends of
// anything but commands (configuration changes, no-ops, barriers) are
// always synced first.
func (l *SegmentLog) SetSyncBehind(behind func() bool) {
	if behind == nil {
		l.behind.Store(nil)
		return
	}
	l.behind.Store(&behind)
}

// SetSyncFunc replaces the log's fdatasync (nil restores it). Fault
// injection tests use it to hold or fail a sync.
func (l *SegmentLog) SetSyncFunc(fn func(*os.File) error) {
	if fn == nil {
		fn = datasync
	}
	l.wmu.Lock()
	l.smu.Lock()
	l.fsync = fn
	l.smu.Unlock()
	l.wmu.Unlock()
}

// SyncedIndex is the index up to which every entry in the log is durable.
func (l *SegmentLog) SyncedIndex() uint64 { return l.synced.Load() }

// WaitSynced returns once every entry up to index that is in the log is
// durable, or with the error that makes that impossible.
func (l *SegmentLog) WaitSynced(index uint64) error {
	return l.waitSynced(func() uint64 { return index })
}

// WaitWrittenSynced waits until everything written so far is durable.
func (l *SegmentLog) WaitWrittenSynced() error {
	w := l.written.Load()
	// A truncation may lower written below w meanwhile; wait only for
	// what is still there, or this could wait for entries never to come.
	return l.waitSynced(func() uint64 { return min(w, l.written.Load()) })
}

func (l *SegmentLog) waitSynced(target func() uint64) error {
	if l.synced.Load() >= target() {
		return nil
	}
	l.smu.Lock()
	defer l.smu.Unlock()
	for l.syncErr == nil && l.synced.Load() < target() {
		l.sc.Wait()
	}
	if l.synced.Load() >= target() {
		return nil
	}
	return l.syncErr
}

func (l *SegmentLog) runSyncer() {
	defer close(l.stopped)
	for {
		select {
		case <-l.kick:
		case <-l.quit:
			return
		}
		l.wmu.Lock()
		target, segs, fsync := l.written.Load(), l.dirty, l.fsync
		l.dirty = nil
		if len(segs) == 0 {
			l.wmu.Unlock()
			continue
		}
		l.smu.Lock()
		l.syncing = true
		l.smu.Unlock()
		l.wmu.Unlock()
		var err error
		for _, seg := range segs {
			if err = fsync(seg.f); err != nil {
				break
			}
		}
		l.smu.Lock()
		l.syncing = false
		if err != nil {
			l.failLocked(fmt.Errorf("raftstore: sync log: %w", err))
		} else if target > l.synced.Load() {
			l.synced.Store(target)
		}
		l.sc.Broadcast()
		l.smu.Unlock()
	}
}

// failLocked records a failed sync; caller holds smu.
func (l *SegmentLog) failLocked(err error) {
	if l.syncErr == nil {
		l.syncErr = err
		l.failed(err)
	}
}

func stopOnSyncFailure(err error) {
	panic(fmt.Sprintf("%v: the log's state on disk is unknown; stopping", err))
}

// syncAllLocked makes everything written durable: it waits out the
// syncer's fdatasync in flight, then syncs every dirty segment and extra.
// Caller holds wmu (the syncer never needs it to finish).
func (l *SegmentLog) syncAllLocked(extra *segment) error {
	l.smu.Lock()
	for l.syncing {
		l.sc.Wait()
	}
	err := l.syncErr
	l.smu.Unlock()
	if err != nil {
		return err
	}
	segs := l.dirty
	if extra != nil && !slices.Contains(segs, extra) {
		segs = append(segs, extra)
	}
	for _, seg := range segs {
		if err := l.fsync(seg.f); err != nil {
			err = fmt.Errorf("raftstore: sync log: %w", err)
			l.smu.Lock()
			l.failLocked(err)
			l.sc.Broadcast()
			l.smu.Unlock()
			return err
		}
	}
	l.dirty = nil
	l.setSynced(l.written.Load(), false)
	return nil
}

// setSynced publishes a new synced index; lower moves it down too (after
// a truncation, indexes above it may be written again). Caller holds wmu.
func (l *SegmentLog) setSynced(v uint64, lower bool) {
	l.smu.Lock()
	if v > l.synced.Load() || lower {
		l.synced.Store(v)
	}
	l.sc.Broadcast()
	l.smu.Unlock()
}

func (l *SegmentLog) load() error {
	floor, err := l.readFirst()
	if err != nil {
		return err
	}
	l.floor = floor
	names, err := filepath.Glob(filepath.Join(l.dir, "*"+segSuffix))
	if err != nil {
		return err
	}
	type named struct {
		first uint64
		path  string
	}
	var files []named
	for _, p := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(p), segSuffix), 10, 64)
		if err != nil {
			return fmt.Errorf("%w: unexpected file %s", ErrLogCorrupt, p)
		}
		files = append(files, named{first, p})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].first < files[j].first })
	for i, nf := range files {
		isLast := i == len(files)-1
		f, err := os.OpenFile(nf.path, os.O_RDWR, 0o644)
		if err != nil {
			return fmt.Errorf("raftstore: open %s: %w", nf.path, err)
		}
		seg := &segment{first: nf.first, f: f}
		l.segs = append(l.segs, seg)
		if err := l.scan(seg, isLast); err != nil {
			return err
		}
	}
	// Drop empty segments (a crash right after a rotation) and whole
	// segments below the floor: compacted away, but their removal had not
	// reached the disk (a crash, or a failed remove) when the log went on.
	var dead []*segment
	l.segs = slices.DeleteFunc(l.segs, func(s *segment) bool {
		if s.count() == 0 || s.first+s.count()-1 < floor {
			dead = append(dead, s)
			return true
		}
		return false
	})
	if err := l.removeSegments(dead); err != nil {
		return err
	}
	for i := 1; i < len(l.segs); i++ {
		if prev, seg := l.segs[i-1], l.segs[i]; prev.first+prev.count() != seg.first {
			return fmt.Errorf("%w: segment %s does not follow the one before it (which ends at %d)", ErrLogCorrupt, seg.f.Name(), prev.first+prev.count()-1)
		}
	}
	if len(l.segs) == 0 {
		return nil
	}
	l.first, l.last = max(l.segs[0].first, floor), l.segs[len(l.segs)-1].first+l.segs[len(l.segs)-1].count()-1
	return nil
}

// scan indexes seg's records. In the last segment a record that does not
// check out ends the log there (the write it belonged to was never
// acknowledged) and the file is cut to the last good record.
func (l *SegmentLog) scan(seg *segment, isLast bool) error {
	data, err := io.ReadAll(seg.f)
	if err != nil {
		return fmt.Errorf("raftstore: read %s: %w", seg.f.Name(), err)
	}
	seg.alloc = int64(len(data))
	seg.offs = []int64{0}
	var off int64
	var prevTerm uint64
	for off < int64(len(data)) {
		rec, ok := checkRecord(data[off:])
		if ok {
			idx, term := binary.BigEndian.Uint64(rec[0:8]), binary.BigEndian.Uint64(rec[8:16])
			// Entries follow each other, and terms never go back: a
			// record that breaks either is not part of this log.
			ok = idx == seg.first+seg.count() && term >= prevTerm
			prevTerm = term
		}
		if !ok {
			// Segments are preallocated: zeros are where the writes
			// stopped. In the last segment anything else that does not
			// check out is a torn write, cut off below; in an earlier
			// one (synced before the next began) it is damage.
			if !isLast && !allZero(data[off:]) {
				return fmt.Errorf("%w: bad record at offset %d of %s", ErrLogCorrupt, off, seg.f.Name())
			}
			if isLast {
				return l.cut(seg, off)
			}
			break
		}
		off += segHeader + int64(len(rec))
		seg.offs = append(seg.offs, off)
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// cut makes off the durable end of seg's data: the bytes after it are
// dropped and the space is preallocated again (as zeros).
func (l *SegmentLog) cut(seg *segment, off int64) error {
	if err := seg.f.Truncate(off); err != nil {
		return fmt.Errorf("raftstore: truncate %s: %w", seg.f.Name(), err)
	}
	seg.alloc = off
	if err := seg.f.Sync(); err != nil {
		return fmt.Errorf("raftstore: truncate %s: %w", seg.f.Name(), err)
	}
	return nil
}

// checkRecord returns the payload of the record at the start of b, and
// whether it is whole and its checksum matches.
func checkRecord(b []byte) ([]byte, bool) {
	if len(b) < segHeader {
		return nil, false
	}
	n := binary.BigEndian.Uint32(b[0:4])
	if n < 17 || n > maxRecord || int64(len(b)) < segHeader+int64(n) {
		return nil, false
	}
	rec := b[segHeader : segHeader+n]
	return rec, crc32.Checksum(rec, crcTable) == binary.BigEndian.Uint32(b[4:8])
}

func appendRecord(dst []byte, log *raft.Log) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, segHeader)...)
	dst = binary.BigEndian.AppendUint64(dst, log.Index)
	dst = binary.BigEndian.AppendUint64(dst, log.Term)
	dst = append(dst, byte(log.Type))
	var at int64
	if !log.AppendedAt.IsZero() {
		at = log.AppendedAt.UnixNano()
	}
	dst = binary.BigEndian.AppendUint64(dst, uint64(at))
	dst = binary.AppendUvarint(dst, uint64(len(log.Extensions)))
	dst = append(dst, log.Extensions...)
	dst = append(dst, log.Data...)
	rec := dst[start+segHeader:]
	binary.BigEndian.PutUint32(dst[start:], uint32(len(rec)))
	binary.BigEndian.PutUint32(dst[start+4:], crc32.Checksum(rec, crcTable))
	return dst
}

func decodeRecord(rec []byte, log *raft.Log) error {
	if len(rec) < 25 {
		return fmt.Errorf("%w: short record", ErrLogCorrupt)
	}
	log.Index = binary.BigEndian.Uint64(rec[0:8])
	log.Term = binary.BigEndian.Uint64(rec[8:16])
	log.Type = raft.LogType(rec[16])
	log.AppendedAt = time.Time{}
	if at := int64(binary.BigEndian.Uint64(rec[17:25])); at != 0 {
		log.AppendedAt = time.Unix(0, at)
	}
	rest := rec[25:]
	n, w := binary.Uvarint(rest)
	if w <= 0 || uint64(len(rest)-w) < n {
		return fmt.Errorf("%w: bad extensions length", ErrLogCorrupt)
	}
	log.Extensions = nil
	if n > 0 {
		log.Extensions = rest[w : w+int(n)]
	}
	log.Data = rest[w+int(n):]
	return nil
}

// FirstIndex implements raft.LogStore.
func (l *SegmentLog) FirstIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.first, nil
}

// LastIndex implements raft.LogStore.
func (l *SegmentLog) LastIndex() (uint64, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.last, nil
}

// GetLog implements raft.LogStore. The entry's slices may be shared with
// the log's cache: callers must not modify them (Raft and the FSM don't).
func (l *SegmentLog) GetLog(index uint64, log *raft.Log) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.first == 0 || index < l.first || index > l.last {
		return raft.ErrLogNotFound
	}
	if r := &l.recent[index%recentSlots]; r.index == index && r.rec != nil {
		return decodeRecord(r.rec, log)
	}
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].first > index }) - 1
	seg := l.segs[i]
	k := index - seg.first
	start, end := seg.offs[k], seg.offs[k+1]
	b := make([]byte, end-start)
	if _, err := seg.f.ReadAt(b, start); err != nil {
		return fmt.Errorf("raftstore: read log entry %d: %w", index, err)
	}
	rec, ok := checkRecord(b)
	if !ok {
		return fmt.Errorf("%w: entry %d fails its checksum", ErrLogCorrupt, index)
	}
	if err := decodeRecord(rec, log); err != nil {
		return err
	}
	if log.Index != index {
		return fmt.Errorf("%w: entry %d holds index %d", ErrLogCorrupt, index, log.Index)
	}
	return nil
}

// StoreLog implements raft.LogStore.
func (l *SegmentLog) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore: the entries must follow the last
// one (any index when the log is empty). They are durable when it returns,
// unless SetSyncBehind's function reports true and every entry is a
// command: then they are only written, the background syncer makes them
// durable, and SyncedIndex and WaitSynced say when (the shard's guards
// keep anything from taking effect before that).
func (l *SegmentLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.smu.Lock()
	failed := l.syncErr
	l.smu.Unlock()
	if failed != nil {
		// Once a sync has failed, what the page cache holds is unknown.
		return failed
	}
	l.mu.RLock()
	last, empty := l.last, l.first == 0
	l.mu.RUnlock()
	for i, e := range logs {
		want := last + 1 + uint64(i)
		if empty {
			want = logs[0].Index + uint64(i)
		}
		if e.Index != want {
			return fmt.Errorf("raftstore: log entry %d stored out of order (want %d)", e.Index, want)
		}
	}
	if empty {
		if err := l.startAgain(logs[0].Index); err != nil {
			return err
		}
	}
	seg, err := l.tailFor(logs[0].Index)
	if err != nil {
		return err
	}
	l.buf = l.buf[:0]
	offs := make([]int64, 0, len(logs))
	base := seg.size()
	for _, e := range logs {
		l.buf = appendRecord(l.buf, e)
		offs = append(offs, base+int64(len(l.buf)))
	}
	if end := base + int64(len(l.buf)); end > seg.alloc {
		grow := min(max(seg.alloc, allocMin), allocMax)
		preallocate(seg.f, end+grow)
		seg.alloc = end + grow
	}
	if _, err := seg.f.WriteAt(l.buf, base); err != nil {
		return fmt.Errorf("raftstore: append to log: %w", err)
	}
	l.written.Store(logs[len(logs)-1].Index)
	if l.syncBehind(logs) {
		if first := logs[0].Index; l.synced.Load() >= first {
			// Indexes the log held before (a log emptied and begun again
			// lower) are not durable in their new form yet.
			l.setSynced(first-1, true)
		}
		if !slices.Contains(l.dirty, seg) {
			l.dirty = append(l.dirty, seg)
		}
		select {
		case l.kick <- struct{}{}:
		default:
		}
	} else if err := l.syncAllLocked(seg); err != nil {
		return err
	}
	l.mu.Lock()
	start := base
	for i, e := range logs {
		end := offs[i]
		if n := end - start - segHeader; n <= recentMaxRecord {
			// A copy: the batch buffer is reused, and caching slices of a
			// fresh one would pin whole batches for one small entry.
			l.recent[e.Index%recentSlots] = recentRecord{index: e.Index, rec: bytes.Clone(l.buf[start-base+segHeader : end-base])}
		}
		start = end
	}
	seg.offs = append(seg.offs, offs...)
	if l.first == 0 {
		l.first = logs[0].Index
	}
	l.last = logs[len(logs)-1].Index
	l.mu.Unlock()
	return nil
}

// startAgain prepares an empty log for its first entry, at index next:
// after a snapshot install Raft empties the log and appends from the
// snapshot's index + 1, which may be above or below where the old log
// ended. Caller holds wmu.
func (l *SegmentLog) startAgain(next uint64) error {
	// Segment files left by a delete whose removal failed (deleteAll
	// returns the error, but Raft only logs it and goes on) must go
	// first: once the floor moves down or a new segment follows them,
	// reopening would count their entries as live again, or find a log
	// with a hole and refuse to open.
	names, err := filepath.Glob(filepath.Join(l.dir, "*"+segSuffix))
	if err != nil {
		return fmt.Errorf("raftstore: list log segments: %w", err)
	}
	if len(names) > 0 {
		for _, p := range names {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("raftstore: remove old log segment: %w", err)
			}
		}
		if err := syncDir(l.dir); err != nil {
			return err
		}
	}
	if next < l.floor {
		// Begun again lower than it was emptied: move the floor down
		// first, or reopening would hide these entries.
		return l.writeFirst(next)
	}
	return nil
}

// syncBehind reports whether this append may return before its sync.
func (l *SegmentLog) syncBehind(logs []*raft.Log) bool {
	fn := l.behind.Load()
	if fn == nil || !(*fn)() {
		return false
	}
	for _, e := range logs {
		if e.Type != raft.LogCommand {
			return false
		}
	}
	return true
}

// forgetLocked drops cached records in [min, max]. Caller holds mu.
func (l *SegmentLog) forgetLocked(min, max uint64) {
	for i := range l.recent {
		if r := &l.recent[i]; r.index >= min && r.index <= max {
			*r = recentRecord{}
		}
	}
}

// tailFor returns the segment the next entry (index next) goes to,
// starting a new one when the tail is full or there is none. Caller holds
// wmu.
func (l *SegmentLog) tailFor(next uint64) (*segment, error) {
	l.mu.RLock()
	var tail *segment
	if n := len(l.segs); n > 0 {
		tail = l.segs[n-1]
	}
	l.mu.RUnlock()
	if tail != nil && tail.size() < l.maxSegment {
		return tail, nil
	}
	// Opening scans assume every segment but the last was synced whole.
	if err := l.syncAllLocked(nil); err != nil {
		return nil, err
	}
	path := filepath.Join(l.dir, fmt.Sprintf("%020d%s", next, segSuffix))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("raftstore: new log segment: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		f.Close()
		return nil, err
	}
	seg := &segment{first: next, f: f, offs: []int64{0}}
	l.mu.Lock()
	l.segs = append(l.segs, seg)
	l.mu.Unlock()
	return seg, nil
}

// DeleteRange implements raft.LogStore. Raft deletes either a prefix
// (compaction after a snapshot), a suffix (entries a new leader
// overwrites), or everything.
func (l *SegmentLog) DeleteRange(min, max uint64) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	// Settle writes still syncing behind first: the files may be cut or
	// removed below.
	if err := l.syncAllLocked(nil); err != nil {
		return err
	}
	l.mu.RLock()
	first, last := l.first, l.last
	l.mu.RUnlock()
	switch {
	case first == 0 || max < first || min > last:
		return nil
	case min <= first && max >= last:
		return l.deleteAll(max)
	case min <= first:
		return l.deleteHead(max)
	case max >= last:
		return l.deleteTail(min)
	}
	return fmt.Errorf("raftstore: cannot delete [%d, %d] from the middle of log [%d, %d]", min, max, first, last)
}

func (l *SegmentLog) deleteAll(max uint64) error {
	// Record the new floor first: should the removals not all reach the
	// disk, reopening still finds nothing live below it.
	floor := max + 1
	if max == ^uint64(0) {
		floor = 0
	}
	if err := l.writeFirst(floor); err != nil {
		return err
	}
	l.mu.Lock()
	segs := l.segs
	l.segs, l.first, l.last = nil, 0, 0
	l.recent = [recentSlots]recentRecord{}
	l.mu.Unlock()
	// Everything up to max was compacted away after it was applied (or
	// superseded by an installed snapshot), so every entry up to max that
	// the log holds is durable, trivially: max stays "synced", so that the
	// commit index sent to followers does not drop to zero meanwhile. The
	// next append follows max or, after a snapshot install, the snapshot,
	// which may be lower; StoreLogs then lowers synced to match.
	l.written.Store(0)
	if max == ^uint64(0) {
		max = 0
	}
	l.setSynced(max, true)
	return l.removeSegments(segs)
}

func (l *SegmentLog) deleteHead(max uint64) error {
	if err := l.writeFirst(max + 1); err != nil {
		return err
	}
	l.mu.Lock()
	l.first = max + 1
	l.forgetLocked(0, max)
	var gone []*segment
	for len(l.segs) > 1 && l.segs[0].first+l.segs[0].count()-1 <= max {
		gone = append(gone, l.segs[0])
		l.segs = l.segs[1:]
	}
	l.mu.Unlock()
	return l.removeSegments(gone)
}

func (l *SegmentLog) deleteTail(min uint64) error {
	l.mu.Lock()
	i := sort.Search(len(l.segs), func(i int) bool { return l.segs[i].first > min }) - 1
	seg := l.segs[i]
	gone := slices.Clone(l.segs[i+1:])
	l.segs = l.segs[:i+1]
	seg.offs = seg.offs[:min-seg.first+1]
	l.last = min - 1
	l.forgetLocked(min, ^uint64(0))
	l.mu.Unlock()
	l.written.Store(min - 1)
	l.setSynced(min-1, true)
	// The cut must be durable before anything is appended after it, or a
	// crash could bring back entries from the old tail.
	if err := l.cut(seg, seg.size()); err != nil {
		return err
	}
	return l.removeSegments(gone)
}

func (l *SegmentLog) removeSegments(segs []*segment) error {
	if len(segs) == 0 {
		return nil
	}
	for _, s := range segs {
		s.f.Close()
		if err := os.Remove(s.f.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("raftstore: remove log segment: %w", err)
		}
	}
	return syncDir(l.dir)
}

func (l *SegmentLog) readFirst() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, segFirstFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("raftstore: read log floor: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: log floor %q", ErrLogCorrupt, b)
	}
	return v, nil
}

// writeFirst durably records the first live index (write, sync, rename).
func (l *SegmentLog) writeFirst(v uint64) error {
	tmp := filepath.Join(l.dir, segFirstFile+".tmp")
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("raftstore: write log floor: %w", err)
	}
	_, err = f.WriteString(strconv.FormatUint(v, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(l.dir, segFirstFile))
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		return fmt.Errorf("raftstore: write log floor: %w", err)
	}
	l.floor = v
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("raftstore: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("raftstore: sync dir: %w", err)
	}
	return nil
}

// Close syncs what is written and closes the segment files.
func (l *SegmentLog) Close() error {
	// Stop the syncer before taking wmu: it takes wmu itself.
	l.smu.Lock()
	select {
	case <-l.quit:
	default:
		close(l.quit)
	}
	l.smu.Unlock()
	<-l.stopped
	l.wmu.Lock()
	defer l.wmu.Unlock()
	var first error
	if len(l.segs) > 0 {
		first = l.syncAllLocked(nil)
	}
	l.smu.Lock()
	if l.syncErr == nil {
		l.syncErr = errors.New("raftstore: log closed")
	}
	l.sc.Broadcast()
	l.smu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.segs {
		if err := s.f.Close(); err != nil && first == nil {
			first = err
		}
	}
	l.segs = nil
	return first
}
