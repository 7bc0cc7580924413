package wal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/hashicorp/raft"
)

// RangeLog is one range's view of the node's log: its raft.LogStore,
// raft.StableStore and raft.MonotonicLogStore, with the durability
// controls the shard needs for the parallel leader append
// (SetSyncBehind, SyncedIndex, WaitSynced, WaitWrittenSynced).
//
// hashicorp/raft appends and truncates from its main goroutine and
// compacts from its snapshot goroutine; reads come from anywhere.
type RangeLog struct {
	w  *WAL
	id uint64

	// Lock order (see WAL's): wmu, then mu, then the WAL's wmu and smu.
	//
	// wmu serialises the range's writers (Raft's goroutines, the
	// collector): each writes its record and publishes its effect
	// before the next one writes, so the order of the range's records in
	// the log is the order of its operations.
	wmu sync.Mutex

	// mu guards what readers see. Writers hold wmu and take mu only to
	// publish, so that a read never waits on a sync.
	mu     sync.RWMutex
	idx    index
	stable map[string]stableValue
	gen    uint64 // cache generation (see entryCache)

	dropped atomic.Bool
	behind  atomic.Pointer[func() bool]
	hook    atomic.Pointer[func(sync func() error) error]
	// written is the last index written, synced the index up to which
	// every entry in the range's log is durable. synced changes under
	// WAL.smu (whose cond signals it); both are atomic so that the fast
	// paths (every apply, every AppendEntries sent or received) take no
	// lock.
	written atomic.Uint64
	synced  atomic.Uint64
}

// stableValue is a stable key's value and where its newest record is.
type stableValue struct {
	val  []byte
	seg  *segment
	size int64
}

var (
	_ raft.LogStore          = (*RangeLog)(nil)
	_ raft.StableStore       = (*RangeLog)(nil)
	_ raft.MonotonicLogStore = (*RangeLog)(nil)
)

func newRangeLog(w *WAL, id uint64) *RangeLog {
	return &RangeLog{w: w, id: id, stable: make(map[string]stableValue), gen: w.gens.Add(1)}
}

// ID returns the range's ID.
func (r *RangeLog) ID() uint64 { return r.id }

func (r *RangeLog) usable() error {
	if r.dropped.Load() {
		return fmt.Errorf("%w: range %d", ErrDropped, r.id)
	}
	return r.w.failure()
}

// IsMonotonic implements raft.MonotonicLogStore: the log refuses gaps,
// so after installing a snapshot Raft deletes every entry and appends
// from the snapshot's index on.
func (r *RangeLog) IsMonotonic() bool { return true }

// FirstIndex implements raft.LogStore.
func (r *RangeLog) FirstIndex() (uint64, error) {
	if err := r.usable(); err != nil {
		return 0, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.idx.first(), nil
}

// LastIndex implements raft.LogStore.
func (r *RangeLog) LastIndex() (uint64, error) {
	if err := r.usable(); err != nil {
		return 0, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.idx.last(), nil
}

// readAhead is how many entries after the one asked for a read from disk
// caches: whoever reads an old entry (a follower catching up) reads the
// next ones next.
const readAhead = 256

// GetLog implements raft.LogStore. The entry's slices may be shared with
// the node's cache: callers must not modify them (Raft and the FSM
// don't).
func (r *RangeLog) GetLog(i uint64, log *raft.Log) error {
	if err := r.usable(); err != nil {
		return err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.idx.empty() || i < r.idx.first() || i > r.idx.last() {
		return raft.ErrLogNotFound
	}
	if e, ok := r.w.cache.get(cacheKey{r.gen, i}); ok {
		return decodeEntry(i, e, log)
	}
	seg, b, ok := r.idx.find(i)
	if !ok {
		return fmt.Errorf("%w: range %d: no record holds entry %d", ErrCorrupt, r.id, i)
	}
	rec, err := readRecord(seg, b)
	if err != nil {
		return fmt.Errorf("wal: range %d: entry %d: %w", r.id, i, err)
	}
	if (rec.kind != kindEntries && rec.kind != kindRewrite) || rec.rangeID != r.id || rec.index != b.first || rec.count < b.n {
		return fmt.Errorf("%w: range %d: entry %d: the record at %s:%d is a %s record of range %d from %d", ErrCorrupt, r.id, i, seg.name, b.off, rec.kind, rec.rangeID, rec.index)
	}
	es := rec.entries
	for j := b.first; j <= b.last(); j++ {
		var e []byte
		e, es, _ = nextEntry(es) // decodeRecord checked every length
		switch {
		case j == i:
			if err := decodeEntry(i, e, log); err != nil {
				return err
			}
			// The entry aliases a buffer of its own: the caller keeps
			// it, the cache keeps a copy.
			fallthrough
		case j > i && j < i+readAhead:
			r.w.cache.add(cacheKey{r.gen, j}, e)
		}
	}
	return nil
}

// readRecord reads and checks the record of block b in seg. The
// record's slices alias a fresh buffer.
func readRecord(seg *segment, b block) (record, error) {
	buf, ok := seg.readTail(b.off, b.size)
	if !ok {
		buf = make([]byte, b.size)
		if _, err := seg.f.ReadAt(buf, b.off); err != nil {
			return record{}, fmt.Errorf("read %s at %d: %w", seg.name, b.off, err)
		}
	}
	payload, n, ok := checkRecord(buf)
	if !ok || int64(n) != b.size {
		return record{}, fmt.Errorf("%w: the record at %s:%d fails its checksum", ErrCorrupt, seg.name, b.off)
	}
	return decodeRecord(payload)
}

// StoreLog implements raft.LogStore.
func (r *RangeLog) StoreLog(log *raft.Log) error { return r.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore: the entries must follow the last
// one (any index when the log is empty). They are durable when it
// returns, unless the range syncs behind (SetSyncBehind).
func (r *RangeLog) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	return r.storeLocked(logs, !r.syncBehind(logs))
}

// maxBatchRecord is where a batch of entries is split into several
// records (written with one write all the same): a record's size is
// bounded (maxRecord), and the index reads a whole record to find one
// entry in it.
const maxBatchRecord = 4 << 20

// storeLocked appends logs and, with wait, returns once they are
// durable. Caller holds wmu.
func (r *RangeLog) storeLocked(logs []*raft.Log, wait bool) error {
	if err := r.usable(); err != nil {
		return err
	}
	r.mu.RLock()
	last, empty := r.idx.last(), r.idx.empty()
	r.mu.RUnlock()
	for i, e := range logs {
		want := last + 1 + uint64(i)
		if empty {
			want = logs[0].Index + uint64(i)
		}
		if e.Index != want || e.Index == 0 {
			return fmt.Errorf("wal: range %d: entry %d stored out of order (want %d)", r.id, e.Index, want)
		}
	}
	first, lastNew := logs[0].Index, logs[len(logs)-1].Index
	if !wait && r.synced.Load() >= first {
		// Indexes the log held before (a log emptied and begun again
		// lower) are not durable in their new form yet.
		r.w.setSynced(r, first-1)
	}
	// Encode: records of at most maxBatchRecord, all in one buffer.
	buf := r.w.getBuf()
	defer r.w.putBuf(buf)
	var blocks []block
	for start := 0; start < len(logs); {
		end, size := start, 0
		for end < len(logs) && (end == start || size+len(logs[end].Data)+len(logs[end].Extensions) <= maxBatchRecord) {
			size += len(logs[end].Data) + len(logs[end].Extensions)
			end++
		}
		at := len(buf.b)
		buf.b = appendEntriesRecord(buf.b, kindEntries, r.id, logs[start:end])
		if len(buf.b)-at-recordHeader > maxRecord {
			return fmt.Errorf("wal: range %d: entry %d is too large (%d bytes)", r.id, logs[start].Index, len(buf.b)-at)
		}
		blocks = append(blocks, block{first: logs[start].Index, n: uint64(end - start), off: int64(at), size: int64(len(buf.b) - at)})
		start = end
	}
	seg, off, seq, done, err := r.w.write(buf.b, syncItem{view: r, last: lastNew}, wait)
	if err != nil {
		return err
	}
	r.written.Store(lastNew)
	// Cache copies (the buffer is reused, and caching slices of a fresh
	// one would pin whole batches for one small entry), before the index
	// shows the entries: a reader must never find an entry the cache
	// still holds in an older form (the generation also changes on every
	// cut). The generation cannot change meanwhile: that takes wmu.
	gen := r.gen
	for _, b := range blocks {
		rec, _ := decodeRecord(buf.b[b.off+recordHeader : b.off+b.size]) // blocks hold offsets in buf
		es := rec.entries
		for j := b.first; j <= b.last(); j++ {
			var e []byte
			e, es, _ = nextEntry(es)
			if len(e) <= maxCachedEntry {
				e = bytes.Clone(e)
			}
			r.w.cache.put(cacheKey{gen, j}, e) // forgets the key if too large
		}
	}
	r.mu.Lock()
	for _, b := range blocks {
		b.off += off
		r.idx.add(seg, b)
	}
	r.mu.Unlock()
	if wait {
		return r.w.waitDurable(seq, done)
	}
	return nil
}

// syncBehind reports whether this append may return before its sync.
func (r *RangeLog) syncBehind(logs []*raft.Log) bool {
	fn := r.behind.Load()
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

// DeleteRange implements raft.LogStore. Raft deletes either a prefix
// (compaction after a snapshot), a suffix (entries a new leader
// overwrites), or everything (after installing a snapshot); the deletion
// is durable when it returns, so that no crash brings the entries back.
func (r *RangeLog) DeleteRange(min, max uint64) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	r.mu.RLock()
	first, last := r.idx.first(), r.idx.last()
	r.mu.RUnlock()
	var k kind
	var at uint64
	switch {
	case first == 0 || max < first || min > last:
		return nil
	case min <= first && max >= last:
		k = kindClear
	case min <= first:
		k, at = kindTruncTo, max
	case max >= last:
		k, at = kindTruncFrom, min
	default:
		return fmt.Errorf("wal: range %d: cannot delete [%d, %d] from the middle of log [%d, %d]", r.id, min, max, first, last)
	}
	var rec []byte
	if k == kindClear {
		rec = appendBareRecord(nil, k, r.id)
	} else {
		rec = appendIndexRecord(nil, k, r.id, at)
	}
	// Durable before it takes effect: entries of this range still
	// syncing behind precede it in the log, so they are durable too.
	_, _, seq, done, err := r.w.write(rec, syncItem{view: r}, true)
	if err == nil {
		err = r.w.waitDurable(seq, done)
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	switch k {
	case kindClear:
		r.idx.clear()
		r.gen = r.w.gens.Add(1)
	case kindTruncTo:
		r.idx.truncTo(at)
	case kindTruncFrom:
		r.idx.truncFrom(at)
		r.gen = r.w.gens.Add(1)
	}
	r.mu.Unlock()
	switch k {
	case kindClear:
		// Everything up to max was compacted away after it was applied,
		// and the next append follows it: max stays "synced", so that
		// the commit index sent to followers does not drop to zero.
		r.written.Store(0)
		if max == ^uint64(0) {
			max = 0
		}
		r.w.setSynced(r, max)
	case kindTruncFrom:
		r.written.Store(at - 1)
		r.w.setSynced(r, at-1)
	}
	return nil
}

// setSynced sets r's synced index (lower too) and tells waiters.
func (w *WAL) setSynced(r *RangeLog, v uint64) {
	w.smu.Lock()
	r.synced.Store(v)
	w.scond.Broadcast()
	w.smu.Unlock()
}

// Set implements raft.StableStore; the value is durable when it returns.
func (r *RangeLog) Set(key, val []byte) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	rec := appendSetRecord(nil, r.id, key, val)
	if len(rec)-recordHeader > maxRecord {
		return fmt.Errorf("wal: range %d: stable value of %d bytes is too large", r.id, len(val))
	}
	seg, _, seq, done, err := r.w.write(rec, syncItem{view: r}, true)
	if err == nil {
		err = r.w.waitDurable(seq, done)
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.stable[string(key)] = stableValue{val: slices.Clone(val), seg: seg, size: int64(len(rec))}
	r.mu.Unlock()
	return nil
}

// Get implements raft.StableStore. A missing key is an error whose
// message is "not found", as hashicorp/raft expects.
func (r *RangeLog) Get(key []byte) ([]byte, error) {
	if err := r.usable(); err != nil {
		return nil, err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.stable[string(key)]
	if !ok {
		return nil, errNotFound
	}
	return slices.Clone(v.val), nil
}

// SetUint64 implements raft.StableStore (8 bytes, big-endian, as
// raft-boltdb stores it).
func (r *RangeLog) SetUint64(key []byte, val uint64) error {
	return r.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 implements raft.StableStore.
func (r *RangeLog) GetUint64(key []byte) (uint64, error) {
	v, err := r.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("wal: range %d: stable value %q is %d bytes, not 8", r.id, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// SetSyncBehind lets appends return before their sync while behind
// reports true; the syncer's next round makes them durable. hashicorp/raft
// appends to the leader's log before it sends the entries to followers,
// so the leader's fsync and the followers' ran one after the other; with
// this they overlap (the Raft thesis, section 10.2.1). It is only safe
// with the guards the shard puts around it: the state machine applies an
// entry only once WaitSynced says the leader's copy is durable, the
// commit index sent to followers never passes SyncedIndex, and a node
// answers a new leader only after its own appends are durable
// (WaitWrittenSynced). nil syncs every append before it returns (the
// default). Appends of anything but commands (configuration changes,
// no-ops, barriers) are always synced first.
func (r *RangeLog) SetSyncBehind(behind func() bool) {
	if behind == nil {
		r.behind.Store(nil)
		return
	}
	r.behind.Store(&behind)
}

// SetSyncFunc hooks the syncs that cover this range's writes: fn is
// called with the real sync and returns its result, or fails without
// calling it (nil removes the hook). The log is the node's, so holding
// such a sync holds every range whose writes it covers. Fault-injection
// tests use it.
func (r *RangeLog) SetSyncFunc(fn func(sync func() error) error) {
	if fn == nil {
		if r.hook.Swap(nil) != nil {
			r.w.hooked.Add(-1)
		}
		return
	}
	if r.hook.Swap(&fn) == nil {
		r.w.hooked.Add(1)
	}
}

// SyncedIndex is the index up to which every entry in the range's log is
// durable.
func (r *RangeLog) SyncedIndex() uint64 { return r.synced.Load() }

// WaitSynced returns once every entry up to index that is in the log is
// durable, or with the error that makes that impossible.
func (r *RangeLog) WaitSynced(index uint64) error {
	return r.waitSynced(func() uint64 { return index })
}

// WaitWrittenSynced waits until everything the range has written so far
// is durable.
func (r *RangeLog) WaitWrittenSynced() error {
	w := r.written.Load()
	// A truncation may lower written below w meanwhile; wait only for
	// what is still there, or this could wait for entries never to come.
	return r.waitSynced(func() uint64 { return min(w, r.written.Load()) })
}

func (r *RangeLog) waitSynced(target func() uint64) error {
	if r.synced.Load() >= target() {
		return nil
	}
	w := r.w
	w.smu.Lock()
	defer w.smu.Unlock()
	for w.err == nil && !r.dropped.Load() && r.synced.Load() < target() {
		w.scond.Wait()
	}
	if r.synced.Load() >= target() {
		return nil
	}
	if w.err != nil {
		return w.err
	}
	return fmt.Errorf("%w: range %d", ErrDropped, r.id)
}

// drop durably removes the range's entries and stable values and marks
// the view dropped.
func (r *RangeLog) drop() error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	r.mu.RLock()
	empty := r.idx.empty() && len(r.stable) == 0
	r.mu.RUnlock()
	if !empty {
		// An empty view has nothing live in the log to remove.
		_, _, seq, done, err := r.w.write(appendBareRecord(nil, kindDrop, r.id), syncItem{view: r}, true)
		if err == nil {
			err = r.w.waitDurable(seq, done)
		}
		if err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.idx.clear()
	r.stable = nil
	r.gen = r.w.gens.Add(1)
	r.dropped.Store(true)
	r.mu.Unlock()
	r.w.smu.Lock()
	r.w.scond.Broadcast()
	r.w.smu.Unlock()
	return nil
}

// memSize is roughly the heap the view takes, the node's cache aside.
func (r *RangeLog) memSize() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := int(unsafe.Sizeof(*r)) + r.idx.memSize()
	for k, v := range r.stable {
		n += 64 + len(k) + cap(v.val)
	}
	return n
}
