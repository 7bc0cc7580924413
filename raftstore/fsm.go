package raftstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// RangeFSM is one range's state machine: a raft.BatchingFSM whose state is
// the range's bbolt bucket plus the overlays of writes not yet committed to
// it. See the package doc for the durability argument.
//
// Locking: splitLock (the node's, held for a split) before the store's
// commitMu before mu before waitMu; waitMu is a leaf. The FSM goroutine
// releases mu before it takes commitMu (a split, in ApplyBatch). Never
// call onSplit or onHibernate with mu held: they call back into the node,
// which may read this range's descriptor (mu, for reading).
type RangeFSM struct {
	id     uint64
	store  *Store
	bucket []byte

	// mu guards the fields below until the blank line. ApplyBatch holds
	// it for writing while it mutates pending and advances applied, so a
	// reader (or the committer) always sees overlays and applied index
	// that belong together.
	mu      sync.RWMutex
	pending *overlay
	frozen  []*overlay // oldest first; committed or being committed
	desc    Descriptor // changes with splits and restores

	// sizeKeys and sizeBytes count the keys and the key and value bytes
	// committed to the range's bucket, kept exact by every commit, split
	// and restore and stored beside the applied index: sizing a range
	// must not walk its pages (that kept a whole state.db mapped in on
	// every split check and every metrics scrape).
	sizeKeys, sizeBytes atomic.Int64

	// markerTerm is the term of the last OpMarker applied: a leader whose
	// term equals it has committed an entry of its own term.
	markerTerm atomic.Uint64

	// logSynced, when set, waits until the range's log holds an index
	// durably: a leader appends before its fsync returns (see
	// SegmentLog.SetSyncBehind), and nothing may take effect before it
	// is on a majority's disks, the leader's included.
	logSynced func(index uint64) error

	// onHibernate is called on the FSM goroutine with the index of each
	// OpHibernate applied (set before Raft starts).
	onHibernate func(index uint64)

	applied atomic.Uint64 // last log index applied
	durable atomic.Uint64 // last applied index committed to bbolt
	evFloor atomic.Uint64 // every event above this index is kept (events.go)

	// observe, when set, sees every write the meta range applies, on the
	// FSM goroutine with mu held: the node's lease keeper counts a lease's
	// time from when its replica applied the lease's last renewal.
	observe   func(key, value []byte, deleted bool, index uint64)
	onRestore func() // see SetRestoreHandler

	// stagedMu guards what a received snapshot staged (refsnap.go):
	// the snapshot's id and what Restore writes besides the staged
	// bucket; nil when nothing waits to be swapped in.
	stagedMu sync.Mutex
	stagedID string
	staged   *stagedSnapshot

	// applyTx is the read transaction an ApplyBatch looks keys up in,
	// opened at its first lookup and closed before it returns (or before
	// a split, which writes): one per batch instead of one per key. Only
	// the FSM goroutine touches it, with mu held for writing.
	applyTx *bolt.Tx

	// txn is the range's transaction locks and outcomes (txn.go); mu
	// guards it.
	txn txnState

	// onSplit is called on the FSM goroutine after a split is durable,
	// with splitLock held from before the parent's descriptor narrows.
	onSplit   func(parent, child Descriptor)
	splitLock sync.Locker

	// waitMu guards waitCh.
	waitMu sync.Mutex
	waitCh chan struct{} // closed and replaced whenever applied advances
}

var _ raft.BatchingFSM = (*RangeFSM)(nil)

func newRangeFSM(s *Store, desc Descriptor) *RangeFSM {
	return &RangeFSM{id: desc.ID, store: s, desc: desc, bucket: dataBucket(desc.ID), pending: newOverlay(), waitCh: make(chan struct{}), txn: newTxnState()}
}

// Descriptor returns the range's current descriptor.
func (f *RangeFSM) Descriptor() Descriptor {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.desc.Clone()
}

// HoldsUserKey reports whether key lies in this range and the range is a
// user range, without copying the descriptor: a node looks up every
// request's range this way, over all its ranges.
func (f *RangeFSM) HoldsUserKey(key []byte) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return !f.desc.IsMeta() && f.desc.Contains(key)
}

// SetSplitHandler registers fn to run after each split of this range is
// durable, on the FSM goroutine: the node starts the new range's replica
// there. lock (may be nil) is held from just before the parent's
// descriptor narrows until fn returns, so that the node's key lookups,
// holding it for reading, never see the moved keys in neither range.
// Call it before the range's Raft starts.
func (f *RangeFSM) SetSplitHandler(lock sync.Locker, fn func(parent, child Descriptor)) {
	f.splitLock, f.onSplit = lock, fn
}

// owns reports whether key belongs to the range. The meta range's keys
// are internal, so it owns any key it is asked to write.
func (f *RangeFSM) ownsLocked(key []byte) bool {
	return f.desc.IsMeta() || f.desc.Contains(key)
}

// SetHibernateHandler registers fn to run, on the FSM goroutine, after
// each hibernation entry is applied. Call it before the range's Raft
// starts.
func (f *RangeFSM) SetHibernateHandler(fn func(index uint64)) { f.onHibernate = fn }

// SetApplyObserver registers fn to see each write the range applies (key,
// new value, whether it deleted, index), on the FSM goroutine with the
// range's lock held: fn must not call back into the range. Call it before
// the range's Raft starts.
func (f *RangeFSM) SetApplyObserver(fn func(key, value []byte, deleted bool, index uint64)) {
	f.observe = fn
}

// SetRestoreHandler registers fn to run after each snapshot the range
// restores, on the restoring goroutine with no lock held: what was derived
// from the applied writes (the apply observer's view) must be read again,
// since a restore replaces the state without applying anything. Call it
// before the range's Raft starts.
func (f *RangeFSM) SetRestoreHandler(fn func()) { f.onRestore = fn }

// SetLogSync registers the wait for the range's log to hold an index
// durably; ApplyBatch calls it before it applies anything. Call it before
// the range's Raft starts.
func (f *RangeFSM) SetLogSync(wait func(index uint64) error) { f.logSynced = wait }

// ID returns the range id.
func (f *RangeFSM) ID() uint64 { return f.id }

// AppliedIndex is the index of the last log entry applied to this range.
func (f *RangeFSM) AppliedIndex() uint64 { return f.applied.Load() }

// DurableIndex is the applied index last committed to bbolt.
func (f *RangeFSM) DurableIndex() uint64 { return f.durable.Load() }

// WaitApplied blocks until the applied index reaches index or ctx ends.
func (f *RangeFSM) WaitApplied(ctx context.Context, index uint64) error {
	for range 1 << 30 { // bounded by ctx in practice; the bound keeps the loop finite
		if f.applied.Load() >= index {
			return nil
		}
		f.waitMu.Lock()
		ch := f.waitCh
		f.waitMu.Unlock()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return fmt.Errorf("raftstore: range %d: wait for index %d did not end", f.id, index)
}

// MarkerTerm is the term of the last term-start marker applied.
func (f *RangeFSM) MarkerTerm() uint64 { return f.markerTerm.Load() }

// Changed returns a channel closed the next time the applied index moves.
func (f *RangeFSM) Changed() <-chan struct{} {
	f.waitMu.Lock()
	defer f.waitMu.Unlock()
	return f.waitCh
}

func (f *RangeFSM) notifyApplied() {
	f.waitMu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.waitMu.Unlock()
}

// Apply implements raft.FSM for completeness; Raft uses ApplyBatch.
func (f *RangeFSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed log entries in order. Entries at or below
// the applied index were applied before a restart and are skipped. It
// returns a *Result per command entry.
func (f *RangeFSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	if f.logSynced != nil && len(logs) > 0 {
		if err := f.logSynced(logs[len(logs)-1].Index); err != nil {
			// Committed entries whose durability is unknown: applying
			// them could acknowledge a write a power cut takes back, and
			// not applying them stalls the range. Stop, as for any
			// failed fsync; a restart re-reads what the disk holds.
			f.store.log.Error("raft log sync failed; stopping", "range", f.id, "err", err)
			panic(fmt.Sprintf("raftstore: range %d: log sync: %v", f.id, err))
		}
	}
	f.mu.Lock()
	applied := f.applied.Load()
	last := applied
	at := time.Now().UnixMilli()
	for i, l := range logs {
		if l.Index <= applied {
			continue
		}
		last = l.Index
		if l.Type != raft.LogCommand {
			continue
		}
		cmd, err := DecodeCommand(l.Data)
		if err != nil {
			f.store.log.Error("skipping undecodable log entry", "range", f.id, "index", l.Index, "err", err)
			out[i] = &Result{Revision: l.Index, Err: err}
			continue
		}
		if cmd.Op == OpMarker {
			f.markerTerm.Store(l.Term)
		}
		if cmd.Op == OpHibernate && f.onHibernate != nil {
			defer f.onHibernate(l.Index) // after the applied index covers it
		}
		if cmd.Op == OpSplit {
			// A split commits synchronously and takes the locks itself.
			f.applied.Store(l.Index - 1)
			f.closeApplyTx()
			f.mu.Unlock()
			out[i] = f.applySplit(&cmd, l.Index)
			f.mu.Lock()
			continue
		}
		out[i] = f.applyLocked(&cmd, l.Index, at)
	}
	f.closeApplyTx()
	f.applied.Store(last)
	big := f.pending.bytes >= f.store.cfg.CommitBytes
	f.mu.Unlock()
	if last != applied {
		f.notifyApplied()
	}
	if big {
		f.store.requestCommit()
	}
	return out
}

func (f *RangeFSM) applyLocked(cmd *Command, index uint64, at int64) *Result {
	res := &Result{Revision: index}
	if keyed(cmd.Op) && !f.ownsLocked(cmd.Key) {
		res.Err = ErrWrongRange
		return res
	}
	// A key a transaction holds is not written past it: the caller finds
	// the transaction's fate and tries again (replication's txn.go).
	if lockable(cmd.Op) {
		if l := f.txn.locks[string(cmd.Key)]; l != nil {
			res.Err = &LockedError{Txn: l.Txn, Key: bytes.Clone(cmd.Key)}
			return res
		}
	}
	put := func(value []byte, lease uint64) { f.putLocked(cmd.Key, value, lease, index, at) }
	switch cmd.Op {
	case OpPut:
		put(cmd.Value, 0)
	case OpPutLease:
		put(cmd.Value, cmd.Lease)
	case OpDelete:
		res.Existed = f.deleteLocked(cmd.Key, index, at, CauseNone, 0)
	case OpCompareAndSwap:
		ok := false
		f.mustLookupLocked(cmd.Key, func(v []byte, _ uint64, found bool) {
			if cmd.ExpectMissing {
				ok = !found
			} else {
				ok = found && bytes.Equal(v, cmd.Expected)
			}
		})
		if !ok {
			res.Err = ErrCompareFailed
			return res
		}
		put(cmd.Value, 0)
	case OpPutIfNewer:
		if len(cmd.Value) < VersionLen {
			res.Err = fmt.Errorf("%w: versioned value shorter than its version", ErrBadCommand)
			return res
		}
		newer := true
		f.mustLookupLocked(cmd.Key, func(v []byte, _ uint64, found bool) {
			newer = !found || len(v) < VersionLen || bytes.Compare(v[:VersionLen], cmd.Value[:VersionLen]) < 0
		})
		if newer {
			put(cmd.Value, 0)
		}
		res.Existed = !newer
	case OpIncrement:
		var n uint64
		f.mustLookupLocked(cmd.Key, func(v []byte, _ uint64, found bool) {
			if found && len(v) == 8 {
				n = binary.BigEndian.Uint64(v)
			}
		})
		res.Value = binary.BigEndian.AppendUint64(nil, n+1)
		put(res.Value, 0)
	case OpLeaseRevoke:
		return f.applyLeaseRevokeLocked(cmd, index, at)
	case OpTxn, OpTxnPrepare, OpTxnResolve, OpTxnFence, OpTxnForget:
		return f.applyTxnLocked(cmd, index, at)
	case OpMarker, OpHibernate:
	}
	return res
}

// keyed reports whether cmd.Key names the one key the command writes
// (which the range must own).
func keyed(op Op) bool {
	switch op {
	case OpMarker, OpHibernate, OpLeaseRevoke, OpTxn, OpTxnPrepare, OpTxnResolve, OpTxnFence, OpTxnForget:
		return false
	}
	return true
}

// lockable reports whether op writes a user key a transaction may hold.
func lockable(op Op) bool {
	return op == OpPut || op == OpPutLease || op == OpDelete || op == OpCompareAndSwap
}

// putLocked makes key=value (attached to lease, 0: none) the key's state
// at index, with its event: what every put, swap and transaction write
// comes down to.
func (f *RangeFSM) putLocked(key, value []byte, lease, index uint64, at int64) {
	var prev []byte
	var prevExists, prevOnDisk bool
	var prevInfo keyInfo
	if !f.desc.IsMeta() {
		if oe, ok := f.overlayGetLocked(key); ok {
			// Overlay buffers are never changed once written: shared.
			prevExists, prevInfo = !oe.deleted, oe.info()
			if prevExists {
				prev = oe.value
			}
		} else if f.txn.versioned {
			// The version needs the stored state now. A put replaces the
			// key whatever it held, so a previous value that does not
			// decode costs only the event its prev_value (and the key its
			// version count): the state stays the same on every replica.
			err := f.openApplyTx()
			if err == nil {
				err = f.lookupFullLocked(key, func(v []byte, ki keyInfo, found bool) {
					prev, prevExists, prevInfo = bytes.Clone(v), found, ki
				})
			}
			if err != nil {
				f.store.log.Warn("previous value unreadable; its event has none", "range", f.id, "index", index, "err", err)
			}
		} else {
			// No overlay holds the key, so bbolt does, and keeps it until
			// this write's own layer commits: the event's previous value is
			// read there when a watcher asks for it or when the layer
			// commits, not on the apply path of every put.
			prevOnDisk = true
		}
	}
	e := newEntry(key, value, index, lease, false)
	if f.txn.versioned {
		e.version = nextVersion(prevExists, prevInfo.version)
	}
	f.pending.set(e)
	f.recordLocked(&Event{Index: index, Type: EventPut, Key: e.key, Value: e.value, PrevValue: prev, PrevExists: prevExists, prevOnDisk: prevOnDisk, Lease: lease, At: at})
	if f.observe != nil {
		f.observe(e.key, e.value, false, index)
	}
}

// nextVersion is a key's version after a put: 1 for a new key, one more
// than before otherwise (a key last written before versions counts as 1).
func nextVersion(existed bool, version uint64) uint64 {
	if !existed {
		return 1
	}
	return max(version, 1) + 1
}

// deleteLocked deletes key at index and reports whether it existed; a
// delete of a key that existed records an event (with cause and lease
// when a lease's end deleted it).
func (f *RangeFSM) deleteLocked(key []byte, index uint64, at int64, cause DeleteCause, lease uint64) bool {
	var prev []byte
	existed := false
	f.mustLookupLocked(key, func(v []byte, _ uint64, found bool) {
		existed = found
		if found && !f.desc.IsMeta() {
			prev = bytes.Clone(v)
		}
	})
	e := newEntry(key, nil, index, 0, true)
	f.pending.set(e)
	if existed {
		f.recordLocked(&Event{Index: index, Type: EventDelete, Key: e.key, PrevValue: prev, PrevExists: true, Lease: lease, Cause: cause, At: at})
	}
	if f.observe != nil {
		f.observe(e.key, nil, true, index)
	}
	return existed
}

// newEntry copies key and value into one allocation: log buffers belong to
// Raft, while the overlay keeps the entry until the next commit.
func newEntry(key, value []byte, rev, lease uint64, deleted bool) *entry {
	buf := make([]byte, len(key)+len(value))
	copy(buf, key)
	copy(buf[len(key):], value)
	return &entry{key: buf[:len(key):len(key)], value: buf[len(key):], rev: rev, lease: lease, deleted: deleted}
}

// lookupLocked finds key's current state: the newest overlay that has it,
// else bbolt. fn must not retain v. Callers hold f.mu (read or write).
func (f *RangeFSM) lookupLocked(key []byte, fn func(v []byte, rev uint64, found bool)) error {
	return f.lookupFullLocked(key, func(v []byte, ki keyInfo, found bool) { fn(v, ki.rev, found) })
}

// lookupFullLocked is lookupLocked that also gives the key's lease and
// version.
func (f *RangeFSM) lookupFullLocked(key []byte, fn func(v []byte, ki keyInfo, found bool)) error {
	if e, ok := f.overlayGetLocked(key); ok {
		fn(e.value, e.info(), !e.deleted)
		return nil
	}
	read := func(tx *bolt.Tx) error {
		b := tx.Bucket(f.bucket)
		if b == nil {
			return fmt.Errorf("raftstore: range %d: bucket missing", f.id)
		}
		stored := b.Get(key)
		if stored == nil {
			fn(nil, keyInfo{}, false)
			return nil
		}
		ki, v, err := readStoredInfo(f.id, key, stored)
		if err != nil {
			return err
		}
		fn(v, ki, true)
		return nil
	}
	if f.applyTx != nil {
		return read(f.applyTx)
	}
	return f.store.db.View(read)
}

// overlayGetLocked finds key's newest state in the overlays (pending,
// then frozen from the newest): what applied writes changed that bbolt
// does not hold yet.
func (f *RangeFSM) overlayGetLocked(key []byte) (*entry, bool) {
	if e, ok := f.pending.get(key); ok {
		return e, true
	}
	for i := len(f.frozen) - 1; i >= 0; i-- {
		if e, ok := f.frozen[i].get(key); ok {
			return e, true
		}
	}
	return nil, false
}

// openApplyTx opens the batch's read transaction (see applyTx).
func (f *RangeFSM) openApplyTx() error {
	if f.applyTx != nil {
		return nil
	}
	tx, err := f.store.db.Begin(false)
	if err != nil {
		return err
	}
	f.applyTx = tx
	return nil
}

func (f *RangeFSM) closeApplyTx() {
	if f.applyTx != nil {
		_ = f.applyTx.Rollback() // read-only: nothing to lose
		f.applyTx = nil
	}
}

// readStored decodes the bbolt value stored under key in range id. Every
// read of a range's bucket decodes through it (Get and the apply path via
// lookupLocked, Scan, Digest), so that a value too short to hold its
// revision is the same ErrCorrupt to all of them: never "not found" to one
// and skipped by another, which would answer, and apply a compare-and-swap,
// differently from the range's other replicas.
func readStored(id uint64, key, stored []byte) (rev uint64, value []byte, err error) {
	ki, value, err := readStoredInfo(id, key, stored)
	return ki.rev, value, err
}

// readStoredInfo is readStored that also returns the key's lease and
// version.
func readStoredInfo(id uint64, key, stored []byte) (keyInfo, []byte, error) {
	ki, value, ok := decodeStored(stored)
	if !ok {
		return ki, nil, fmt.Errorf("%w: range %d, key %q: stored value of %d bytes, shorter than its revision (and lease, version)", ErrCorrupt, id, key, len(stored))
	}
	return ki, value, nil
}

// mustLookupLocked is lookupLocked on the apply path. A read error there
// would make this replica apply the command differently from the others,
// so it stops the process instead (crash-stop keeps replicas identical).
func (f *RangeFSM) mustLookupLocked(key []byte, fn func(v []byte, rev uint64, found bool)) {
	f.mustLookupFullLocked(key, func(v []byte, ki keyInfo, found bool) { fn(v, ki.rev, found) })
}

// mustLookupFullLocked is mustLookupLocked with the key's lease; on the
// apply path it reads through the batch's transaction.
func (f *RangeFSM) mustLookupFullLocked(key []byte, fn func(v []byte, ki keyInfo, found bool)) {
	err := f.openApplyTx()
	if err == nil {
		err = f.lookupFullLocked(key, fn)
	}
	if err != nil {
		f.store.log.Error("state read failed while applying; stopping", "range", f.id, "err", err)
		panic(fmt.Sprintf("raftstore: range %d: read during apply: %v", f.id, err))
	}
}

// Get returns a copy of key's value, its revision, whether it exists, and
// the applied index the answer reflects; ErrWrongRange when the key is not
// in the range, checked under the same lock as the read so that a split
// cannot slip between them.
func (f *RangeFSM) Get(key []byte) (value []byte, rev uint64, found bool, applied uint64, err error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !f.ownsLocked(key) {
		return nil, 0, false, f.applied.Load(), ErrWrongRange
	}
	err = f.lookupLocked(key, func(v []byte, r uint64, ok bool) {
		if ok {
			value = append([]byte{}, v...)
		}
		rev, found = r, ok
	})
	if err != nil {
		return nil, 0, false, 0, fmt.Errorf("raftstore: get: %w", err)
	}
	return value, rev, found, f.applied.Load(), nil
}

// MaxScanBytes bounds the keys and values of one scan page.
const MaxScanBytes = 4 << 20

// KV is one key-value pair returned by Scan.
type KV struct {
	Key      []byte
	Value    []byte
	Revision uint64
	Version  uint64 // writes since the key was created (1: just created)
	Lease    uint64
}

// Scan returns up to limit live keys in [start, end) (end nil: unbounded)
// in bytewise order, within this range. more reports whether keys remain
// in [start, end); the next page starts at next, which is the range's end
// when the rest lies in the next range. start must be in the range
// (ErrWrongRange otherwise).
func (f *RangeFSM) Scan(start, end []byte, limit int) (kvs []KV, more bool, next []byte, applied uint64, err error) {
	if limit <= 0 {
		return nil, false, nil, 0, fmt.Errorf("raftstore: scan limit must be positive, got %d", limit)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if !f.ownsLocked(start) {
		return nil, false, nil, f.applied.Load(), ErrWrongRange
	}
	kvs, more, next, err = f.scanLocked(start, end, limit)
	return kvs, more, next, f.applied.Load(), err
}

// scanLocked is Scan's work, for a caller holding f.mu (read or write)
// that has checked the range owns start.
func (f *RangeFSM) scanLocked(start, end []byte, limit int) (kvs []KV, more bool, next []byte, err error) {
	requestedEnd := end
	if !f.desc.IsMeta() {
		_, end = f.desc.Clamp(start, end)
	}
	ov := f.overlayRangeLocked(start, end)
	err = f.store.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(f.bucket)
		var c *bolt.Cursor
		var k, v []byte
		if b != nil {
			c = b.Cursor()
			k, v = c.Seek(start)
		}
		inRange := func(k []byte) bool { return k != nil && (end == nil || bytes.Compare(k, end) < 0) }
		// A page also ends once it holds MaxScanBytes, so that a scan of
		// large values cannot exhaust memory: one more key is still read,
		// to tell whether there are more and where to resume.
		size := 0
		budget := func(n int) {
			if size += n; size >= MaxScanBytes && limit > len(kvs) {
				limit = len(kvs)
			}
		}
		i := 0
		for len(kvs) <= limit {
			dbOK, ovOK := inRange(k), i < len(ov)
			if !dbOK && !ovOK {
				break
			}
			if ovOK && (!dbOK || bytes.Compare(ov[i].key, k) <= 0) {
				if dbOK && bytes.Equal(ov[i].key, k) {
					k, v = c.Next()
				}
				e := ov[i]
				i++
				if !e.deleted {
					kvs = append(kvs, KV{Key: e.key, Value: e.value, Revision: e.rev, Version: max(e.version, 1), Lease: e.lease})
					budget(len(e.key) + len(e.value))
				}
				continue
			}
			ki, val, err := readStoredInfo(f.id, k, v)
			if err != nil {
				return err
			}
			kvs = append(kvs, KV{Key: append([]byte{}, k...), Value: append([]byte{}, val...), Revision: ki.rev, Version: max(ki.version, 1), Lease: ki.lease})
			budget(len(k) + len(val))
			k, v = c.Next()
		}
		return nil
	})
	if err != nil {
		return nil, false, nil, fmt.Errorf("raftstore: scan range %d: %w", f.id, err)
	}
	if len(kvs) > limit {
		more, next = true, kvs[limit].Key
		kvs = kvs[:limit]
	} else if len(end) > 0 && (len(requestedEnd) == 0 || bytes.Compare(end, requestedEnd) < 0) {
		more, next = true, bytes.Clone(end) // continue in the next range
	}
	// Overlay entries are immutable once set, but copy them anyway so the
	// caller owns everything it gets.
	for i := range kvs {
		kvs[i].Key = append([]byte(nil), kvs[i].Key...)
		kvs[i].Value = append([]byte(nil), kvs[i].Value...)
	}
	return kvs, more, next, nil
}

// overlayRangeLocked merges the overlays' entries in [start, end), newest
// layer winning, in key order.
func (f *RangeFSM) overlayRangeLocked(start, end []byte) []*entry {
	layers := append(append([]*overlay{}, f.frozen...), f.pending) // oldest first
	total := 0
	for _, l := range layers {
		total += l.len()
	}
	if total == 0 {
		return nil
	}
	byKey := make(map[string]*entry)
	for _, l := range layers {
		l.ascend(start, end, func(e *entry) bool {
			byKey[string(e.key)] = e
			return true
		})
	}
	out := make([]*entry, 0, len(byKey))
	for _, e := range byKey {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].key, out[j].key) < 0 })
	return out
}

// Size returns the number of keys, and of key and value bytes, committed
// to bbolt for this range (the overlay's writes are not counted yet).
func (f *RangeFSM) Size() (keys, bytes uint64) {
	return uint64(f.sizeKeys.Load()), uint64(f.sizeBytes.Load())
}

// ApproxSize returns the range's key and value bytes: the committed count
// plus the overlays' writes (overwrites and deletes there are not netted
// out, so it may over-estimate until the next commit).
func (f *RangeFSM) ApproxSize() int64 {
	f.mu.RLock()
	pending := f.pending.bytes
	for _, o := range f.frozen {
		pending += o.bytes
	}
	f.mu.RUnlock()
	return f.sizeBytes.Load() + int64(pending)
}

// SplitKey returns the committed key at which the range's bytes divide
// in half, or nil when the range has fewer than two keys. It reads the
// first half of the range.
func (f *RangeFSM) SplitKey() ([]byte, error) {
	if err := f.store.Flush(); err != nil {
		return nil, err
	}
	var key []byte
	err := f.store.db.View(func(tx *bolt.Tx) error {
		keys, total := f.Size()
		b := tx.Bucket(f.bucket)
		if b == nil || keys < 2 {
			return nil
		}
		var acc uint64
		c := b.Cursor()
		first, _ := c.First()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			acc += uint64(storedSize(k, v))
			if acc >= total/2 && !bytes.Equal(k, first) {
				key = bytes.Clone(k)
				return nil
			}
		}
		return nil
	})
	return key, err
}
