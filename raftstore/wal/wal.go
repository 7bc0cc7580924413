package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure a WAL. The zero value of a field means its default.
type Options struct {
	// SegmentSize is the size at which the active segment is sealed and
	// a new one begun. Space is freed a segment at a time.
	SegmentSize int64
	// CacheBytes bounds the node-wide cache of recent entries.
	CacheBytes int64
	// Logger receives the log's rare events (a torn tail cut, a
	// collection); nil discards them.
	Logger *slog.Logger
}

// The defaults. A segment is large enough that sealing one (a sync and
// a new file) is rare, small enough that the collector frees space in
// useful steps; the cache holds the last few thousand entries of the
// node's busy ranges.
const (
	DefaultSegmentSize = 64 << 20
	DefaultCacheBytes  = 32 << 20
)

// Segments grow their preallocation a little at a time (from allocMin
// to at most allocMax more each time they fill), so that an append seldom
// changes the file's size, a metadata change fdatasync must journal.
const (
	allocMin = 64 << 10
	allocMax = 4 << 20
)

const (
	segSuffix = ".wal"
	floorFile = "floor"
	floorTmp  = "floor.tmp"
)

var (
	// ErrClosed is returned by every operation on a closed log.
	ErrClosed = errors.New("wal: closed")
	// ErrDropped is returned by every operation on a range view after
	// DropRange; WAL.Range returns a fresh view.
	ErrDropped = errors.New("wal: range dropped")
	// errNotFound is what StableStore.Get returns for a missing key.
	// hashicorp/raft compares the message, "not found", as raft-boltdb
	// returns it.
	errNotFound = errors.New("not found")
)

// knobs are what tests change besides Options.
type knobs struct {
	noAutoGC bool        // collect only when the test says so
	failed   func(error) // replaces stopOnSyncFailure
	// appended is told of each append to a segment's tail (under wmu),
	// before it reaches the file: the crash test's file system tags the
	// append's bytes with the operation that made it.
	appended func(f file, off, n int64)
}

// segment is one file of the log. Only the newest (active) one is
// written; the others are sealed: synced whole, never written again.
type segment struct {
	seq   uint64
	name  string
	f     file
	size  int64 // bytes appended (header included); guarded by WAL.wmu while active
	alloc int64 // bytes preallocated; guarded by WAL.wmu
	// The active segment's tail: appends wait in pend until a round (or
	// a seal, pendMax) writes them to the file, so that the appends one
	// fsync covers cost one write, not one each. flushed is how much of
	// size is in the file; records never straddle it. tmu guards pend
	// and the write that empties it (taken inside WAL.wmu), so that a
	// reader copies a record out of pend without waiting for wmu, which
	// a seal holds across its sync.
	tmu     sync.Mutex
	pend    []byte
	flushed atomic.Int64
}

// pendMax bounds a segment's unwritten tail: appends that nobody waits
// for (a leader's, the collector's) would otherwise pile up while a sync
// is held.
const pendMax = 1 << 20

// syncItem is a write someone waits for, or whose durability moves a
// range's synced index.
type syncItem struct {
	seq  uint64
	view *RangeLog     // whose write it is (see RangeLog.SetSyncFunc); may be nil
	last uint64        // the view's synced index reaches it once durable; 0 for none
	done chan struct{} // closed once durable or failed; nil if nobody waits
}

// WAL is a node's write-ahead log, shared by all of its ranges. See the
// package documentation.
type WAL struct {
	fs     fileSystem
	opts   Options
	log    *slog.Logger
	cache  *entryCache
	gens   atomic.Uint64 // cache generations, unique across ranges
	failed func(error)
	autoGC bool
	noted  func(f file, off, n int64) // knobs.appended; nil but in tests
	bufs   sync.Pool                  // *encodeBuf, kept for the node rather than per range

	// Lock order: gcMu, vmu, a range's wmu, the range's mu, roundMu, wmu,
	// smu.

	gcMu sync.Mutex // one collection at a time

	vmu   sync.Mutex
	views map[uint64]*RangeLog

	// wmu serialises writes to the active segment and its rotation.
	wmu  sync.Mutex
	segs []*segment // oldest first; the last one is active
	wseq uint64     // writes made

	// roundMu makes sync rounds one at a time: the syncer's, and a lone
	// writer's own (see waitDurable). Taken before wmu.
	roundMu sync.Mutex

	// smu guards the syncer's state; scond signals its changes.
	smu     sync.Mutex
	scond   *sync.Cond
	synced  uint64 // writes durable
	syncing bool   // the syncer is in a sync (of a segment it may not own by then)
	waiting int    // pending writes someone waits on
	// released is how many waiters the last round released, and
	// syncTook how long its sync took: see gather.
	released int
	syncTook time.Duration
	err      error                 // sticky: a write or sync failed, or the log closed
	errp     atomic.Pointer[error] // err, for the lock-free check on every read
	pending  []syncItem            // in write order
	syncFn   func(sync func() error) error
	hooked   atomic.Int32 // ranges with a sync hook

	kick    chan struct{}
	gcKick  chan struct{}
	quit    chan struct{}
	gcQuit  chan struct{}
	syncWG  sync.WaitGroup
	gcWG    sync.WaitGroup
	closed  atomic.Bool
	counter struct {
		writes, bytes, syncs, rewritten, collections atomic.Uint64
		fileWrites                                   atomic.Uint64
		lastSync                                     atomic.Int64 // ns
		// Group commits' sync times, for a latency histogram: per
		// bucket of syncBounds (the last past them all), and their sum.
		syncHist  [len(syncBounds) + 1]atomic.Uint64
		syncNanos atomic.Uint64
	}
}

// syncBounds are the upper bounds of the buckets group-commit sync times
// are counted in (Stats.SyncHistogram): from a fast SSD's sync to a disk
// in trouble, with 100 ms, where a sync is slow, a bound of its own.
// Read-only.
var syncBounds = [...]time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond,
	time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// SyncBuckets returns the upper bounds of Stats.SyncHistogram's buckets.
func SyncBuckets() []time.Duration { return syncBounds[:] }

// observeSync counts one group commit's sync.
func (w *WAL) observeSync(took time.Duration) {
	w.counter.lastSync.Store(int64(took))
	w.counter.syncNanos.Add(uint64(took))
	i := 0
	for i < len(syncBounds) && took > syncBounds[i] {
		i++
	}
	w.counter.syncHist[i].Add(1)
}

// Open opens (creating) the log in dir and replays it: every range's
// entries and stable values are as the last acknowledged operation left
// them. A torn tail (a crash mid-write) is cut off; any other damage is
// an error wrapping ErrCorrupt.
func Open(dir string, opts Options) (*WAL, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	return open(osFS{dir: dir}, opts, knobs{})
}

func open(fsys fileSystem, opts Options, k knobs) (*WAL, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.CacheBytes == 0 {
		opts.CacheBytes = DefaultCacheBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	w := &WAL{
		fs:     fsys,
		opts:   opts,
		log:    opts.Logger,
		cache:  newEntryCache(opts.CacheBytes),
		failed: stopOnSyncFailure,
		autoGC: !k.noAutoGC,
		noted:  k.appended,
		views:  make(map[uint64]*RangeLog),
		syncFn: func(sync func() error) error { return sync() },
		kick:   make(chan struct{}, 1),
		gcKick: make(chan struct{}, 1),
		quit:   make(chan struct{}),
		gcQuit: make(chan struct{}),
	}
	if k.failed != nil {
		w.failed = k.failed
	}
	w.scond = sync.NewCond(&w.smu)
	if err := w.replay(); err != nil {
		for _, s := range w.segs {
			s.f.Close()
		}
		return nil, err
	}
	w.synced = w.wseq
	w.syncWG.Add(1)
	go w.runSyncer()
	w.gcWG.Add(1)
	go w.runCollector()
	return w, nil
}

func segName(seq uint64) string { return fmt.Sprintf("%020d%s", seq, segSuffix) }

// replayRange is a range's state as replay rebuilds it.
type replayRange struct {
	idx    index
	stable map[string]stableValue
}

// replay rebuilds every range from the segments, oldest first, and makes
// the newest segment the active one.
func (w *WAL) replay() error {
	floor, err := w.readFloor()
	if err != nil {
		return err
	}
	names, err := w.fs.List()
	if err != nil {
		return fmt.Errorf("wal: list: %w", err)
	}
	var seqs []uint64
	for _, name := range names {
		if name == floorTmp {
			// A floor never renamed into place: the old one holds.
			if err := w.fs.Remove(name); err != nil {
				return fmt.Errorf("wal: %w", err)
			}
			continue
		}
		base, ok := strings.CutSuffix(name, segSuffix)
		if !ok || len(base) != 20 {
			continue
		}
		seq, err := strconv.ParseUint(base, 10, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	// Segments below the floor were freed; a crash kept their removal
	// from reaching the disk.
	var removed bool
	for len(seqs) > 0 && seqs[0] < floor {
		if err := w.fs.Remove(segName(seqs[0])); err != nil {
			return fmt.Errorf("wal: remove freed segment: %w", err)
		}
		seqs, removed = seqs[1:], true
	}
	if removed {
		if err := w.fs.SyncDir(); err != nil {
			return fmt.Errorf("wal: %w", err)
		}
	}
	if len(seqs) > 0 && floor > 0 && seqs[0] != floor {
		return fmt.Errorf("%w: segments %d to %d are missing", ErrCorrupt, floor, seqs[0]-1)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			return fmt.Errorf("%w: segment %d is missing", ErrCorrupt, seqs[i-1]+1)
		}
	}
	ranges := make(map[uint64]*replayRange)
	for i, seq := range seqs {
		seg, err := w.replaySegment(seq, i == len(seqs)-1, ranges)
		if err != nil {
			if seg != nil {
				seg.f.Close()
			}
			return err
		}
		if seg != nil {
			w.segs = append(w.segs, seg)
		}
	}
	for id, r := range ranges {
		if !r.idx.contiguous() {
			return fmt.Errorf("%w: range %d: its entries have a gap", ErrCorrupt, id)
		}
		if r.idx.empty() && len(r.stable) == 0 {
			continue
		}
		v := newRangeLog(w, id)
		v.idx, v.stable = r.idx, r.stable
		v.written.Store(r.idx.last())
		v.synced.Store(r.idx.last())
		w.views[id] = v
	}
	if n := len(w.segs); n > 0 {
		// What a crash left in the page cache is durable from here on,
		// so that "synced" means what it says from the start. Only the
		// newest segment can hold such writes: each one before it was
		// synced whole before the next began.
		if err := w.syncFile(w.segs[n-1].f); err != nil {
			return fmt.Errorf("wal: sync on open: %w", err)
		}
		return nil
	}
	seg, err := w.createSegment(max(floor, 1))
	if err != nil {
		return err
	}
	w.segs = append(w.segs, seg)
	return nil
}

// replaySegment applies the records of segment seq to ranges. In the
// newest segment a record that does not check out is where the writes
// stopped: the file is cut there. In an older one (synced whole before
// the next began) only zeros may follow the last record.
func (w *WAL) replaySegment(seq uint64, newest bool, ranges map[uint64]*replayRange) (*segment, error) {
	name := segName(seq)
	f, err := w.fs.Open(name)
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err)
	}
	seg := &segment{seq: seq, name: name, f: f}
	defer func() { seg.flushed.Store(seg.size) }()
	size, err := f.Size()
	if err != nil {
		return seg, fmt.Errorf("wal: %s: %w", name, err)
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return seg, fmt.Errorf("wal: read %s: %w", name, err)
	}
	hseq, err := checkSegmentHeader(data)
	if err != nil {
		if newest && !errors.Is(err, ErrVersion) && allZero(data[min(len(data), segHeaderSize):]) {
			// The node stopped while creating this segment, before its
			// header was durable: it never held a record.
			f.Close()
			if err := w.fs.Remove(name); err != nil {
				return nil, fmt.Errorf("wal: %w", err)
			}
			if err := w.fs.SyncDir(); err != nil {
				return nil, fmt.Errorf("wal: %w", err)
			}
			return nil, nil
		}
		return seg, fmt.Errorf("wal: segment %s: %w", name, err)
	}
	if hseq != seq {
		return seg, fmt.Errorf("%w: segment %s says it is number %d", ErrCorrupt, name, hseq)
	}
	off := segHeaderSize
	for off < len(data) {
		payload, n, ok := checkRecord(data[off:])
		if !ok {
			if allZero(data[off:]) {
				break // where the writes stopped, in preallocated space
			}
			if !newest {
				return seg, fmt.Errorf("%w: bad record at offset %d of sealed segment %s", ErrCorrupt, off, name)
			}
			// A torn write. Zero it out (the file is cut, then grows
			// again with zeros), so that no stale bytes follow the
			// records written next.
			w.log.Warn("wal: cutting a torn tail", "segment", name, "offset", off, "bytes", len(data)-off)
			if err := f.Truncate(int64(off)); err != nil {
				return seg, fmt.Errorf("wal: cut %s: %w", name, err)
			}
			if err := w.syncFile(f); err != nil {
				return seg, fmt.Errorf("wal: cut %s: %w", name, err)
			}
			data = data[:off]
			break
		}
		rec, err := decodeRecord(payload)
		if err == nil {
			err = applyReplay(ranges, seg, int64(off), int64(n), rec)
		}
		if err != nil {
			return seg, fmt.Errorf("wal: segment %s offset %d: %w", name, off, err)
		}
		off += n
		w.wseq++
	}
	seg.size, seg.alloc = int64(off), int64(len(data))
	return seg, nil
}

// applyReplay applies one record. Replay may see only part of a range's
// history (older segments were freed once what was live in them had been
// copied forward), so its state is a subset of the range's log at that
// point: entries may arrive out of order, but never overlap an append.
func applyReplay(ranges map[uint64]*replayRange, seg *segment, off, size int64, rec record) error {
	if rec.kind == kindDrop {
		delete(ranges, rec.rangeID)
		return nil
	}
	r := ranges[rec.rangeID]
	if r == nil {
		r = &replayRange{stable: make(map[string]stableValue)}
		ranges[rec.rangeID] = r
	}
	switch rec.kind {
	case kindEntries:
		if last := r.idx.last(); !r.idx.empty() && rec.index <= last {
			return fmt.Errorf("%w: range %d: entries from %d overlap its log ending at %d", ErrCorrupt, rec.rangeID, rec.index, last)
		}
		r.idx.add(seg, block{first: rec.index, n: rec.count, off: off, size: size})
	case kindRewrite:
		r.idx.replace(seg, []block{{first: rec.index, n: rec.count, off: off, size: size}})
	case kindTruncFrom:
		r.idx.truncFrom(rec.index)
	case kindTruncTo:
		r.idx.truncTo(rec.index)
	case kindClear:
		r.idx.clear()
	case kindSet:
		r.stable[string(rec.key)] = stableValue{val: slices.Clone(rec.value), seg: seg, size: size}
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

func (w *WAL) readFloor() (uint64, error) {
	b, err := w.fs.ReadFile(floorFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("wal: read floor: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: floor %q", ErrCorrupt, b)
	}
	return v, nil
}

// writeFloor durably records that no segment below seq is live (write,
// sync, rename, sync the directory), before any of them is removed.
func (w *WAL) writeFloor(seq uint64) error {
	f, err := w.fs.Create(floorTmp)
	if err != nil {
		return fmt.Errorf("wal: write floor: %w", err)
	}
	_, err = f.WriteAt([]byte(strconv.FormatUint(seq, 10)+"\n"), 0)
	if err == nil {
		err = w.syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = w.fs.Rename(floorTmp, floorFile)
	}
	if err == nil {
		err = w.fs.SyncDir()
	}
	if err != nil {
		return fmt.Errorf("wal: write floor: %w", err)
	}
	return nil
}

// createSegment creates segment seq with its header durable, and its
// directory entry: replay takes a segment that is not there for a lost
// one.
func (w *WAL) createSegment(seq uint64) (*segment, error) {
	name := segName(seq)
	f, err := w.fs.Create(name)
	if err != nil {
		return nil, fmt.Errorf("wal: new segment: %w", err)
	}
	_, err = f.WriteAt(appendSegmentHeader(nil, seq), 0)
	if err == nil {
		err = w.syncFile(f)
	}
	if err == nil {
		err = w.fs.SyncDir()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("wal: new segment: %w", err)
	}
	seg := &segment{seq: seq, name: name, f: f, size: segHeaderSize, alloc: segHeaderSize}
	seg.flushed.Store(segHeaderSize)
	return seg, nil
}

// syncFile makes f's data durable, through the test hook.
func (w *WAL) syncFile(f file) error {
	w.counter.syncs.Add(1)
	w.smu.Lock()
	fn := w.syncFn
	w.smu.Unlock()
	return fn(f.Sync)
}

// SetSyncFunc replaces how the log makes a file durable: fn is called
// with the real sync and returns its result, or fails without calling it.
// nil restores the default. Fault-injection tests use it to hold or fail
// syncs; RangeLog.SetSyncFunc hooks only the syncs that cover a range's
// writes.
func (w *WAL) SetSyncFunc(fn func(sync func() error) error) {
	if fn == nil {
		fn = func(sync func() error) error { return sync() }
	}
	w.smu.Lock()
	w.syncFn = fn
	w.smu.Unlock()
}

// failure returns the sticky error that stops all writes, if any.
func (w *WAL) failure() error {
	if w.closed.Load() {
		return ErrClosed
	}
	if p := w.errp.Load(); p != nil {
		return *p
	}
	return nil
}

// write appends buf (whole records) to the active segment's tail (see
// segment.pend). If it is for a range, item names the range and the
// index its synced index reaches once the write is durable. With wait,
// the caller then waits on done (see waitDurable).
func (w *WAL) write(buf []byte, item syncItem, wait bool) (seg *segment, off int64, seq uint64, done chan struct{}, err error) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := w.failure(); err != nil {
		return nil, 0, 0, nil, err
	}
	seg, err = w.tailFor(int64(len(buf)))
	if err != nil {
		return nil, 0, 0, nil, err
	}
	off = seg.size
	if end := off + int64(len(buf)); end > seg.alloc {
		grow := min(max(seg.alloc, allocMin), allocMax)
		seg.f.Allocate(end + grow)
		seg.alloc = end + grow
	}
	if w.noted != nil {
		w.noted(seg.f, off, int64(len(buf)))
	}
	if len(buf) >= pendMax {
		// A batch this large goes to the file as it is, behind the
		// tail: copied into the tail, it would be held twice.
		err = w.writeOut(seg, buf)
	} else {
		seg.tmu.Lock()
		seg.pend = append(seg.pend, buf...)
		seg.tmu.Unlock()
		if len(seg.pend) >= pendMax {
			err = w.flushLocked(seg)
		}
	}
	if err != nil {
		return nil, 0, 0, nil, err
	}
	seg.size += int64(len(buf))
	w.wseq++
	w.counter.writes.Add(1)
	w.counter.bytes.Add(uint64(len(buf)))
	item.seq = w.wseq
	if wait {
		item.done = make(chan struct{})
	}
	if item.view != nil || wait {
		w.smu.Lock()
		w.pending = append(w.pending, item)
		if wait {
			w.waiting++
		}
		w.smu.Unlock()
	}
	if !wait {
		// A waiting writer kicks the syncer itself, unless it syncs
		// alone (see waitDurable).
		w.kickSyncer()
	}
	return seg, off, item.seq, item.done, nil
}

// flushLocked writes seg's unwritten tail to its file. Caller holds wmu.
func (w *WAL) flushLocked(seg *segment) error {
	if len(seg.pend) == 0 {
		return nil
	}
	return w.writeOut(seg, nil)
}

// writeOut writes seg's unwritten tail, then more (records appended
// after it), to the file, one write each. Caller holds wmu.
func (w *WAL) writeOut(seg *segment, more []byte) error {
	seg.tmu.Lock()
	defer seg.tmu.Unlock()
	for i, b := range [2][]byte{seg.pend, more} {
		if len(b) == 0 {
			continue
		}
		off := seg.flushed.Load()
		if _, err := seg.f.WriteAt(b, off); err != nil {
			// What reached the page cache is unknown, and a later write
			// could leave part of this one after it: stop, as for a
			// failed sync.
			err = fmt.Errorf("wal: write %s: %w", seg.name, err)
			w.smu.Lock()
			w.failLocked(err)
			w.scond.Broadcast()
			w.smu.Unlock()
			return err
		}
		w.counter.fileWrites.Add(1)
		// With flushed, in one step under tmu: readers index pend from it.
		seg.flushed.Store(off + int64(len(b)))
		if i == 0 {
			seg.pend = seg.pend[:0]
		}
	}
	return nil
}

// readTail copies the record at off (size bytes) out of seg's unwritten
// tail, or returns false if the file holds it.
func (seg *segment) readTail(off, size int64) ([]byte, bool) {
	if off < seg.flushed.Load() {
		return nil, false
	}
	seg.tmu.Lock()
	defer seg.tmu.Unlock()
	at := off - seg.flushed.Load()
	if at < 0 || at+size > int64(len(seg.pend)) {
		return nil, false // written meanwhile (or not there: the caller's read fails its check)
	}
	return bytes.Clone(seg.pend[at : at+size]), true
}

// waitDurable waits until write seq (done its channel) is durable. A
// lone writer (nobody else waiting, no round running) syncs in its own
// goroutine instead of handing over to the syncer and being woken by it:
// two goroutine hand-offs less on the path of every write when writes do
// not overlap (one client, or a range written to one at a time). Writers
// that overlap still meet in the syncer's rounds.
func (w *WAL) waitDurable(seq uint64, done chan struct{}) error {
	if w.alone() && w.roundMu.TryLock() {
		w.round()
		w.roundMu.Unlock()
	} else {
		w.kickSyncer()
	}
	<-done
	w.smu.Lock()
	defer w.smu.Unlock()
	if w.synced >= seq {
		return nil
	}
	return w.err
}

// syncAll waits until everything written so far is durable.
func (w *WAL) syncAll() error {
	w.wmu.Lock()
	target := w.wseq
	w.wmu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	w.smu.Lock()
	defer w.smu.Unlock()
	for w.synced < target && w.err == nil {
		w.scond.Wait()
	}
	if w.synced >= target {
		return nil
	}
	return w.err
}

// tailFor returns the segment the next need bytes go to, sealing the
// active one and beginning another when they do not fit. Caller holds
// wmu.
func (w *WAL) tailFor(need int64) (*segment, error) {
	seg := w.segs[len(w.segs)-1]
	if seg.size+need <= w.opts.SegmentSize || seg.size == segHeaderSize {
		return seg, nil
	}
	return w.rotateLocked()
}

// rotateLocked seals the active segment and begins the next. Caller holds
// wmu.
func (w *WAL) rotateLocked() (*segment, error) {
	seg := w.segs[len(w.segs)-1]
	if err := w.flushLocked(seg); err != nil {
		return nil, err
	}
	seg.tmu.Lock()
	seg.pend = nil // a sealed segment keeps no tail buffer
	seg.tmu.Unlock()
	// Replay refuses damage in any segment but the newest, so a segment
	// is synced whole before the next one takes a write. Its preallocated
	// tail goes first; should that not reach the disk, zeros are harmless.
	if err := seg.f.Truncate(seg.size); err == nil {
		seg.alloc = seg.size
	}
	if err := w.syncFile(seg.f); err != nil {
		err = fmt.Errorf("wal: seal %s: %w", seg.name, err)
		w.smu.Lock()
		w.failLocked(err)
		w.scond.Broadcast()
		w.smu.Unlock()
		return nil, err
	}
	w.smu.Lock()
	w.advanceLocked(w.wseq)
	w.scond.Broadcast()
	w.smu.Unlock()
	next, err := w.createSegment(seg.seq + 1)
	if err != nil {
		return nil, err
	}
	w.segs = append(w.segs, next)
	if w.autoGC {
		select {
		case w.gcKick <- struct{}{}:
		default:
		}
	}
	return next, nil
}

// runSyncer is the group commit: each round makes durable everything
// written before it began, with one fdatasync, and whatever is written
// while it runs waits for the next round. N ranges writing at once pay
// one sync, not N.
func (w *WAL) runSyncer() {
	defer w.syncWG.Done()
	for {
		select {
		case <-w.kick:
		case <-w.quit:
			return
		}
		w.gather()
		w.roundMu.Lock()
		w.round()
		w.roundMu.Unlock()
	}
}

func (w *WAL) kickSyncer() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// alone reports whether the caller's is the only write waiting for a
// sync: then nobody would join the syncer's round.
func (w *WAL) alone() bool {
	w.smu.Lock()
	defer w.smu.Unlock()
	return w.waiting == 1 && !w.syncing
}

// round makes durable everything written before it began, with one
// sync, and releases whoever waits for it. Caller holds roundMu.
func (w *WAL) round() {
	w.wmu.Lock()
	target, seg := w.wseq, w.segs[len(w.segs)-1]
	if w.failure() != nil || w.flushLocked(seg) != nil {
		// A failed log writes nothing more (failLocked released everyone).
		w.wmu.Unlock()
		return
	}
	w.smu.Lock()
	if target <= w.synced || w.err != nil {
		w.smu.Unlock()
		w.wmu.Unlock()
		return
	}
	// Set under wmu: the collector closes a freed segment only once
	// no round is in flight (see collect).
	w.syncing = true
	var hooked []*RangeLog
	if w.hooked.Load() > 0 {
		for _, it := range w.pending {
			if it.seq > target {
				break
			}
			if it.view != nil && it.view.hook.Load() != nil && !slices.Contains(hooked, it.view) {
				hooked = append(hooked, it.view)
			}
		}
	}
	w.smu.Unlock()
	w.wmu.Unlock()
	start := time.Now()
	err := w.syncRound(seg, hooked)
	took := time.Since(start)
	w.observeSync(took)
	w.smu.Lock()
	w.syncTook = took
	w.syncing = false
	if err != nil {
		w.failLocked(fmt.Errorf("wal: sync %s: %w", seg.name, err))
	} else {
		waiting := w.waiting
		w.advanceLocked(target)
		w.released = waiting - w.waiting
	}
	w.scond.Broadcast()
	w.smu.Unlock()
}

// gather waits a little before a round when the last one released
// several waiters. Each of them is about to write again; without the wait
// the round would start with the writes that arrived while the last one
// ran, and the writers just released would wait for the round after:
// two cohorts taking turns, each half the writers. The wait ends as soon
// as as many are back, and never lasts more than a fraction of a sync,
// so a lone writer (or a node at rest) does not pay it.
func (w *WAL) gather() {
	w.smu.Lock()
	released, took := w.released, w.syncTook
	w.smu.Unlock()
	if released < 2 {
		return
	}
	limit := min(took/4, maxGather)
	deadline := time.Now().Add(limit)
	for {
		w.smu.Lock()
		back := w.waiting
		w.smu.Unlock()
		left := time.Until(deadline)
		if back >= released || left <= 0 {
			return
		}
		t := time.NewTimer(left)
		select {
		case <-w.kick:
		case <-t.C:
		case <-w.quit:
		}
		t.Stop()
	}
}

// maxGather bounds gather's wait.
const maxGather = 200 * time.Microsecond

// syncRound syncs seg, through the hooks of the ranges whose writes the
// round covers if any have one.
func (w *WAL) syncRound(seg *segment, hooked []*RangeLog) error {
	if len(hooked) == 0 {
		return w.syncFile(seg.f)
	}
	for _, v := range hooked {
		if fn := v.hook.Load(); fn != nil {
			if err := (*fn)(func() error { return w.syncFile(seg.f) }); err != nil {
				return err
			}
		}
	}
	return nil
}

// advanceLocked records that the writes up to target are durable and
// tells whoever waits for them. Caller holds smu.
func (w *WAL) advanceLocked(target uint64) {
	if target > w.synced {
		w.synced = target
	}
	k := 0
	for ; k < len(w.pending) && w.pending[k].seq <= w.synced; k++ {
		it := w.pending[k]
		if it.view != nil && it.last > it.view.synced.Load() {
			it.view.synced.Store(it.last)
		}
		if it.done != nil {
			close(it.done)
			w.waiting--
		}
	}
	if k > 0 {
		w.pending = slices.Delete(w.pending, 0, k)
	}
}

// failLocked records that the log can take no more writes. Caller holds
// smu and broadcasts.
func (w *WAL) failLocked(err error) {
	if w.err != nil {
		return
	}
	w.err = err
	w.errp.Store(&err)
	if !errors.Is(err, ErrClosed) {
		w.failed(err)
	}
	for _, it := range w.pending {
		if it.done != nil {
			close(it.done)
		}
	}
	w.pending, w.waiting = nil, 0
}

// stopOnSyncFailure is what a failed write or sync does by default. What
// the page cache held is then unknown (Linux may drop the dirty pages and
// report success on the next fsync), and the log can take no more
// appends, so the process stops, as etcd and PostgreSQL do.
func stopOnSyncFailure(err error) {
	panic(fmt.Sprintf("%v: the log's state on disk is unknown; stopping", err))
}

// Range returns range id's view of the log, creating an empty one.
// Calling it again returns the same view, until DropRange.
func (w *WAL) Range(id uint64) *RangeLog {
	w.vmu.Lock()
	defer w.vmu.Unlock()
	v, ok := w.views[id]
	if !ok {
		v = newRangeLog(w, id)
		w.views[id] = v
	}
	return v
}

// DropRange durably removes range id's entries and stable values (the
// range left the node). Its view fails with ErrDropped from then on;
// Range(id) returns a new, empty one.
func (w *WAL) DropRange(id uint64) error {
	v := w.Range(id)
	if err := v.drop(); err != nil {
		return err
	}
	w.vmu.Lock()
	if w.views[id] == v {
		delete(w.views, id)
	}
	w.vmu.Unlock()
	return nil
}

// Ranges returns the IDs of the ranges that have entries or stable
// values, in order.
func (w *WAL) Ranges() []uint64 {
	var ids []uint64
	for _, v := range w.viewList() {
		v.mu.RLock()
		if !v.idx.empty() || len(v.stable) > 0 {
			ids = append(ids, v.id)
		}
		v.mu.RUnlock()
	}
	slices.Sort(ids)
	return ids
}

func (w *WAL) viewList() []*RangeLog {
	w.vmu.Lock()
	defer w.vmu.Unlock()
	out := make([]*RangeLog, 0, len(w.views))
	for _, v := range w.views {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// Stats are counters for metrics and benchmarks.
type Stats struct {
	Writes         uint64        // records appended (a batch of entries, a cut, a stable value)
	FileWrites     uint64        // writes that put them in the files: about one per sync round
	WrittenBytes   uint64        // bytes of those records, the collector's copies included
	Syncs          uint64        // file syncs (group commits, seals, new segments, floor)
	LastSync       time.Duration // how long the last group commit's sync took
	Segments       int           // files, the active one included
	Bytes          int64         // bytes appended to them (the active one's tail may not be in its file yet)
	RewrittenBytes uint64        // live bytes the collector copied forward
	Collections    uint64        // segments the collector freed
	// SyncHistogram counts group commits by how long their sync took:
	// bucket i those at most SyncBuckets()[i] (and over the one before),
	// the last those over every bound. SyncTime is their total.
	SyncHistogram [len(syncBounds) + 1]uint64
	SyncTime      time.Duration
}

// Stats returns the log's counters since it was opened, and its size now.
func (w *WAL) Stats() Stats {
	w.wmu.Lock()
	s := Stats{Segments: len(w.segs)}
	for _, seg := range w.segs {
		s.Bytes += seg.size
	}
	w.wmu.Unlock()
	s.Writes = w.counter.writes.Load()
	s.FileWrites = w.counter.fileWrites.Load()
	s.WrittenBytes = w.counter.bytes.Load()
	s.Syncs = w.counter.syncs.Load()
	s.LastSync = time.Duration(w.counter.lastSync.Load())
	s.RewrittenBytes = w.counter.rewritten.Load()
	s.Collections = w.counter.collections.Load()
	for i := range s.SyncHistogram {
		s.SyncHistogram[i] = w.counter.syncHist[i].Load()
	}
	s.SyncTime = time.Duration(w.counter.syncNanos.Load())
	return s
}

// Close makes everything written durable and closes the files. Every
// view fails with ErrClosed afterwards.
func (w *WAL) Close() error {
	if !w.closed.CompareAndSwap(false, true) {
		return nil
	}
	// The collector first: it may be waiting for the syncer.
	close(w.gcQuit)
	w.gcWG.Wait()
	close(w.quit)
	w.syncWG.Wait()
	w.wmu.Lock()
	defer w.wmu.Unlock()
	var err error
	w.smu.Lock()
	needSync := w.err == nil && w.synced < w.wseq
	w.smu.Unlock()
	if needSync {
		if err = w.flushLocked(w.segs[len(w.segs)-1]); err == nil {
			err = w.syncFile(w.segs[len(w.segs)-1].f)
		}
	}
	w.smu.Lock()
	if err != nil {
		w.failLocked(fmt.Errorf("wal: sync on close: %w", err))
	} else if w.err == nil {
		w.advanceLocked(w.wseq)
	}
	w.failLocked(ErrClosed)
	w.scond.Broadcast()
	w.smu.Unlock()
	for _, s := range w.segs {
		if cerr := s.f.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}
	return err
}

// encodeBuf is a reusable encode buffer. Pooled for the node rather than
// kept per range, so that a sleeping range holds no buffer of the size of
// its largest batch.
type encodeBuf struct{ b []byte }

// maxPooledBuf keeps one huge batch from pinning its buffer forever.
const maxPooledBuf = 1 << 20

func (w *WAL) getBuf() *encodeBuf {
	if b, ok := w.bufs.Get().(*encodeBuf); ok {
		b.b = b.b[:0]
		return b
	}
	return new(encodeBuf)
}

func (w *WAL) putBuf(b *encodeBuf) {
	if cap(b.b) <= maxPooledBuf {
		w.bufs.Put(b)
	}
}
