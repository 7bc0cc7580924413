package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Transactions, as the state machine sees them (the coordination is
// replication's txn.go).
//
// A transaction whose keys are all in this range is one command, OpTxn:
// compares, then the success or failure operations, applied at one index.
// A transaction across ranges is two-phase: OpTxnPrepare in each range
// evaluates the range's compares and reads and locks every key the
// transaction compares, reads or writes there, storing with each written
// key the write each outcome would make; once the decision is recorded,
// OpTxnResolve applies the chosen writes (commit) or just drops the locks
// (abort). While a key is locked, plain writes to it and other
// transactions touching it are refused with a LockedError naming the
// holder, so a transaction's reads stay valid until it ends: that, with
// one decision per transaction, is what makes it serializable.
//
// Locks and single-range outcomes are replicated state: kept in memory,
// committed to the range's lock and outcome buckets with the applied index
// (as the overlays are), carried in snapshots, split with their keys.

// Transaction commands.
const (
	// OpTxn runs a whole transaction whose keys are all in this range.
	OpTxn Op = iota + 40
	// OpTxnPrepare locks a cross-range transaction's keys in this range.
	OpTxnPrepare
	// OpTxnResolve applies (commit) or drops (abort) a transaction's locks.
	OpTxnResolve
	// OpTxnFence makes a single-range transaction's outcome final: one
	// that has not applied by now never will.
	OpTxnFence
	// OpTxnForget drops the outcomes recorded before an index (Value:
	// the index, 8 bytes): what a range remembers of its transactions is
	// kept for a while, not forever.
	OpTxnForget
)

// LockedError is the Result.Err of a write to a key a transaction holds.
type LockedError struct {
	Txn string
	Key []byte
}

func (e *LockedError) Error() string {
	return fmt.Sprintf("raftstore: key %q is held by transaction %s", e.Key, e.Txn)
}

// Unwrap makes errors.Is(err, ErrLocked) hold.
func (e *LockedError) Unwrap() error { return ErrLocked }

var (
	// ErrLocked: a key is held by a transaction.
	ErrLocked = errors.New("raftstore: key locked by a transaction")
	// ErrTxnFenced: a single-range transaction arrived after its outcome
	// was declared aborted (TxnStatus); it did nothing.
	ErrTxnFenced = errors.New("raftstore: transaction was declared aborted before it applied")
)

// CompareTarget is what a compare looks at.
type CompareTarget byte

const (
	CmpValue CompareTarget = iota
	CmpExists
	CmpVersion
	CmpRevision
)

// CompareResult is how a compare's target must relate to its operand.
type CompareResult byte

const (
	CmpEqual CompareResult = iota
	CmpNotEqual
	CmpGreater
	CmpLess
)

// TxnCompare is one condition of a transaction.
type TxnCompare struct {
	Key     []byte
	Target  CompareTarget
	Result  CompareResult
	Value   []byte
	Exists  bool
	Version uint64
	// Revision compares (RangeID, Index): another range never matches.
	RangeID, Index uint64
}

// TxnOpKind is what one operation of a transaction does.
type TxnOpKind byte

const (
	TxnNone TxnOpKind = iota
	TxnPut
	TxnDelete
	TxnGet
	TxnScan
)

// TxnOp is one operation of a transaction.
type TxnOp struct {
	Kind  TxnOpKind
	Key   []byte
	End   []byte // scan: nil to the end of the range
	Value []byte
	Lease uint64
	Limit uint32
}

// TxnSpec is a single-range transaction (OpTxn's payload).
type TxnSpec struct {
	ID               string
	Compares         []TxnCompare
	Success, Failure []TxnOp
}

// TxnPart is a cross-range transaction's share in one range (OpTxnPrepare's
// payload): its compares and reads there, and the writes each outcome
// would make there.
type TxnPart struct {
	ID               string
	Compares         []TxnCompare
	Reads            [][]byte
	Success, Failure []TxnOp // puts and deletes only
}

// TxnDecision ends a cross-range transaction in a range (OpTxnResolve's
// payload); OpTxnFence's payload is the id alone.
type TxnDecision struct {
	ID        string
	Commit    bool
	Succeeded bool
}

// TxnOpResult is what one operation returned.
type TxnOpResult struct {
	Kind  TxnOpKind
	Found bool // get: the key exists; delete: it existed
	KV    KV   // get
	KVs   []KV // scan
	More  bool
	Next  []byte
}

// TxnState is a transaction's recorded fate.
type TxnState byte

const (
	TxnPending TxnState = iota
	TxnCommitted
	TxnAborted
)

// TxnOutcome is what a range recorded of a single-range transaction.
type TxnOutcome struct {
	Index     uint64
	State     TxnState
	Succeeded bool
}

// TxnResult is the Result.Txn of a transaction command.
type TxnResult struct {
	Succeeded bool
	// OpTxn: the chosen branch's results; OpTxnPrepare: the reads', in
	// order.
	Ops []TxnOpResult
	// Outcome is set when the transaction had applied (or been fenced)
	// before: nothing ran this time.
	Outcome *TxnOutcome
}

// Lock is a transaction's hold on one key of the range.
type Lock struct {
	Txn string
	// Success and Failure are the writes the key gets if the transaction
	// commits with its compares holding, or not (TxnNone: none).
	Success, Failure LockWrite
	// At is when this replica applied the prepare (Unix ms): how old a
	// lock is, to tell an abandoned transaction. Not replicated state.
	At int64
}

// LockWrite is one outcome's write of a locked key.
type LockWrite struct {
	Kind  TxnOpKind // TxnNone, TxnPut or TxnDelete
	Value []byte
	Lease uint64
}

// ---- encoding ----

const txnEncVersion = 1

type enc []byte

func (e *enc) byte(b byte)      { *e = append(*e, b) }
func (e *enc) uvarint(v uint64) { *e = binary.AppendUvarint(*e, v) }
func (e *enc) bytes(b []byte)   { e.uvarint(uint64(len(b))); *e = append(*e, b...) }
func (e *enc) bool(b bool) {
	if b {
		e.byte(1)
	} else {
		e.byte(0)
	}
}

type dec struct {
	b   []byte
	err error
}

func (d *dec) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: transaction payload: %s", ErrBadCommand, what)
	}
}

func (d *dec) byte() byte {
	if len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	b := d.b[0]
	d.b = d.b[1:]
	return b
}

func (d *dec) bool() bool { return d.byte() != 0 }

func (d *dec) uvarint() uint64 {
	v, w := binary.Uvarint(d.b)
	if w <= 0 {
		d.fail("bad number")
		return 0
	}
	d.b = d.b[w:]
	return v
}

// bytes copies: payloads are Raft's buffers, and locks outlive them.
func (d *dec) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || uint64(len(d.b)) < n {
		d.fail("truncated field")
		return nil
	}
	out := bytes.Clone(d.b[:n])
	d.b = d.b[n:]
	return out
}

// count reads a list length, bounded by what the payload can hold.
func (d *dec) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("list longer than its payload")
		return 0
	}
	return int(n)
}

func (e *enc) compare(c *TxnCompare) {
	e.bytes(c.Key)
	e.byte(byte(c.Target))
	e.byte(byte(c.Result))
	e.bytes(c.Value)
	e.bool(c.Exists)
	e.uvarint(c.Version)
	e.uvarint(c.RangeID)
	e.uvarint(c.Index)
}

func (d *dec) compare() TxnCompare {
	return TxnCompare{Key: d.bytes(), Target: CompareTarget(d.byte()), Result: CompareResult(d.byte()), Value: d.bytes(), Exists: d.bool(), Version: d.uvarint(), RangeID: d.uvarint(), Index: d.uvarint()}
}

func (e *enc) op(o *TxnOp) {
	e.byte(byte(o.Kind))
	e.bytes(o.Key)
	e.bytes(o.End)
	e.bytes(o.Value)
	e.uvarint(o.Lease)
	e.uvarint(uint64(o.Limit))
}

func (d *dec) op() TxnOp {
	o := TxnOp{Kind: TxnOpKind(d.byte()), Key: d.bytes(), End: d.bytes(), Value: d.bytes(), Lease: d.uvarint(), Limit: uint32(d.uvarint())}
	if len(o.End) == 0 {
		o.End = nil
	}
	return o
}

func (e *enc) ops(ops []TxnOp) {
	e.uvarint(uint64(len(ops)))
	for i := range ops {
		e.op(&ops[i])
	}
}

func (d *dec) ops() []TxnOp {
	n := d.count()
	var out []TxnOp
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.op())
	}
	return out
}

func (e *enc) compares(cs []TxnCompare) {
	e.uvarint(uint64(len(cs)))
	for i := range cs {
		e.compare(&cs[i])
	}
}

func (d *dec) compares() []TxnCompare {
	n := d.count()
	var out []TxnCompare
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.compare())
	}
	return out
}

// Encode is OpTxn's payload.
func (t *TxnSpec) Encode() []byte {
	e := enc{txnEncVersion}
	e.bytes([]byte(t.ID))
	e.compares(t.Compares)
	e.ops(t.Success)
	e.ops(t.Failure)
	return e
}

// DecodeTxnSpec parses OpTxn's payload.
func DecodeTxnSpec(b []byte) (TxnSpec, error) {
	d := dec{b: b}
	if d.byte() != txnEncVersion {
		d.fail("unknown version")
	}
	t := TxnSpec{ID: string(d.bytes()), Compares: d.compares(), Success: d.ops(), Failure: d.ops()}
	return t, d.err
}

// Encode is OpTxnPrepare's payload.
func (p *TxnPart) Encode() []byte {
	e := enc{txnEncVersion}
	e.bytes([]byte(p.ID))
	e.compares(p.Compares)
	e.uvarint(uint64(len(p.Reads)))
	for _, k := range p.Reads {
		e.bytes(k)
	}
	e.ops(p.Success)
	e.ops(p.Failure)
	return e
}

// DecodeTxnPart parses OpTxnPrepare's payload.
func DecodeTxnPart(b []byte) (TxnPart, error) {
	d := dec{b: b}
	if d.byte() != txnEncVersion {
		d.fail("unknown version")
	}
	p := TxnPart{ID: string(d.bytes()), Compares: d.compares()}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		p.Reads = append(p.Reads, d.bytes())
	}
	p.Success, p.Failure = d.ops(), d.ops()
	return p, d.err
}

// Encode is OpTxnResolve's payload (and, with only the id, OpTxnFence's).
func (t *TxnDecision) Encode() []byte {
	e := enc{txnEncVersion}
	e.bytes([]byte(t.ID))
	e.bool(t.Commit)
	e.bool(t.Succeeded)
	return e
}

// DecodeTxnDecision parses OpTxnResolve's and OpTxnFence's payload.
func DecodeTxnDecision(b []byte) (TxnDecision, error) {
	d := dec{b: b}
	if d.byte() != txnEncVersion {
		d.fail("unknown version")
	}
	t := TxnDecision{ID: string(d.bytes()), Commit: d.bool(), Succeeded: d.bool()}
	return t, d.err
}

func (w *LockWrite) encode(e *enc) {
	e.byte(byte(w.Kind))
	e.bytes(w.Value)
	e.uvarint(w.Lease)
}

func (d *dec) lockWrite() LockWrite {
	return LockWrite{Kind: TxnOpKind(d.byte()), Value: d.bytes(), Lease: d.uvarint()}
}

func (l *Lock) encode() []byte {
	e := enc{txnEncVersion}
	e.bytes([]byte(l.Txn))
	l.Success.encode(&e)
	l.Failure.encode(&e)
	return e
}

func decodeLock(b []byte) (*Lock, error) {
	d := dec{b: b}
	if d.byte() != txnEncVersion {
		d.fail("unknown version")
	}
	l := &Lock{Txn: string(d.bytes()), Success: d.lockWrite(), Failure: d.lockWrite()}
	return l, d.err
}

func (o *TxnOutcome) encode() []byte {
	e := enc{txnEncVersion}
	e.uvarint(o.Index)
	e.byte(byte(o.State))
	e.bool(o.Succeeded)
	return e
}

func decodeOutcome(b []byte) (TxnOutcome, error) {
	d := dec{b: b}
	if d.byte() != txnEncVersion {
		d.fail("unknown version")
	}
	o := TxnOutcome{Index: d.uvarint(), State: TxnState(d.byte()), Succeeded: d.bool()}
	return o, d.err
}

// ---- the range's transaction state ----

func lockBucket(id uint64) []byte    { return binary.BigEndian.AppendUint64([]byte("k"), id) }
func outcomeBucket(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte("x"), id) }

// txnState is a range's locks and recorded outcomes; RangeFSM.mu guards
// it. dirty* are the changes since the last commit froze them (nil: a
// deletion).
type txnState struct {
	// versioned: the range counts its keys' versions. It turns on at the
	// first transaction the range applies, at the same index on every
	// replica; before that a replica of the previous release may have
	// written keys without one, and counting on some replicas only would
	// make a version compare differ between them.
	versioned      bool
	versionedDirty bool

	locks         map[string]*Lock
	outcomes      map[string]TxnOutcome
	dirtyLocks    map[string]*Lock
	dirtyOutcomes map[string]*TxnOutcome
}

func newTxnState() txnState {
	return txnState{locks: map[string]*Lock{}, outcomes: map[string]TxnOutcome{}, dirtyLocks: map[string]*Lock{}, dirtyOutcomes: map[string]*TxnOutcome{}}
}

func (t *txnState) setLock(key string, l *Lock) {
	if l == nil {
		delete(t.locks, key)
	} else {
		t.locks[key] = l
	}
	t.dirtyLocks[key] = l
}

func (t *txnState) setOutcome(id string, o TxnOutcome) {
	t.outcomes[id] = o
	t.dirtyOutcomes[id] = &o
}

// frozenTxnState is what one commit writes of a range's transaction state.
type frozenTxnState struct {
	locks     map[string]*Lock
	outcomes  map[string]*TxnOutcome
	versioned bool // turned on since the last commit
}

// freezeTxnLocked hands the changes since the last commit to one.
func (f *RangeFSM) freezeTxnLocked() frozenTxnState {
	fz := frozenTxnState{locks: f.txn.dirtyLocks, outcomes: f.txn.dirtyOutcomes, versioned: f.txn.versionedDirty}
	f.txn.dirtyLocks, f.txn.dirtyOutcomes, f.txn.versionedDirty = map[string]*Lock{}, map[string]*TxnOutcome{}, false
	return fz
}

// thawTxnLocked gives a failed commit's changes back, under newer ones.
func (f *RangeFSM) thawTxnLocked(fz frozenTxnState) {
	f.txn.versionedDirty = f.txn.versionedDirty || fz.versioned
	for k, l := range fz.locks {
		if _, newer := f.txn.dirtyLocks[k]; !newer {
			f.txn.dirtyLocks[k] = l
		}
	}
	for k, o := range fz.outcomes {
		if _, newer := f.txn.dirtyOutcomes[k]; !newer {
			f.txn.dirtyOutcomes[k] = o
		}
	}
}

// writeTxnState puts frozen changes into the commit's transaction.
func writeTxnState(tx *bolt.Tx, id uint64, fz frozenTxnState) error {
	if fz.versioned {
		if err := tx.Bucket(metaBucket).Put(versionedKey(id), []byte{1}); err != nil {
			return err
		}
	}
	if len(fz.locks) == 0 && len(fz.outcomes) == 0 {
		return nil
	}
	lb, ob := tx.Bucket(lockBucket(id)), tx.Bucket(outcomeBucket(id))
	if lb == nil || ob == nil {
		return fmt.Errorf("range %d: transaction buckets missing", id)
	}
	for k, l := range fz.locks {
		var err error
		if l == nil {
			err = lb.Delete([]byte(k))
		} else {
			err = lb.Put([]byte(k), l.encode())
		}
		if err != nil {
			return err
		}
	}
	for k, o := range fz.outcomes {
		var err error
		if o == nil {
			err = ob.Delete([]byte(k))
		} else {
			err = ob.Put([]byte(k), o.encode())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// loadTxnState creates a user range's transaction buckets and reads them.
func versionedKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("versioned/"), id)
}

func loadTxnState(tx *bolt.Tx, id uint64, t *txnState) error {
	t.versioned = tx.Bucket(metaBucket).Get(versionedKey(id)) != nil
	lb, err := tx.CreateBucketIfNotExists(lockBucket(id))
	if err != nil {
		return err
	}
	ob, err := tx.CreateBucketIfNotExists(outcomeBucket(id))
	if err != nil {
		return err
	}
	if err := lb.ForEach(func(k, v []byte) error {
		l, err := decodeLock(v)
		if err != nil {
			return fmt.Errorf("range %d: lock of %q: %w", id, k, err)
		}
		// How old a lock is was this replica's to know and is lost with
		// a restart: count from now, or a live transaction's locks would
		// look abandoned at once.
		l.At = time.Now().UnixMilli()
		t.locks[string(k)] = l
		return nil
	}); err != nil {
		return err
	}
	return ob.ForEach(func(k, v []byte) error {
		o, err := decodeOutcome(v)
		if err != nil {
			return fmt.Errorf("range %d: outcome of %q: %w", id, k, err)
		}
		t.outcomes[string(k)] = o
		return nil
	})
}

// Locks returns a copy of the range's locks, by key.
func (f *RangeFSM) Locks() map[string]Lock {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]Lock, len(f.txn.locks))
	for k, l := range f.txn.locks {
		out[k] = *l
	}
	return out
}

// LockOf returns the lock on key, if any.
func (f *RangeFSM) LockOf(key []byte) (Lock, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	l, ok := f.txn.locks[string(key)]
	if !ok {
		return Lock{}, false
	}
	return *l, true
}

// LocksIn returns the locks on keys in [start, end) (end nil: no end).
func (f *RangeFSM) LocksIn(start, end []byte) map[string]Lock {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := map[string]Lock{}
	for k, l := range f.txn.locks {
		if inSpan([]byte(k), start, end) {
			out[k] = *l
		}
	}
	return out
}

// OldestOutcome returns the lowest index of a recorded outcome (0: none).
func (f *RangeFSM) OldestOutcome() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var oldest uint64
	for _, o := range f.txn.outcomes {
		if oldest == 0 || o.Index < oldest {
			oldest = o.Index
		}
	}
	return oldest
}

// Outcome returns what the range recorded of transaction id.
func (f *RangeFSM) Outcome(id string) (TxnOutcome, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	o, ok := f.txn.outcomes[id]
	return o, ok
}

func inSpan(k, start, end []byte) bool {
	return bytes.Compare(k, start) >= 0 && (end == nil || bytes.Compare(k, end) < 0)
}

// ---- applying ----

func (f *RangeFSM) applyTxnLocked(cmd *Command, index uint64, at int64) *Result {
	res := &Result{Revision: index}
	if f.desc.IsMeta() {
		res.Err = fmt.Errorf("%w: transactions on the meta range", ErrBadCommand)
		return res
	}
	if !f.txn.versioned {
		f.txn.versioned, f.txn.versionedDirty = true, true
	}
	var err error
	switch cmd.Op {
	case OpTxn:
		var spec TxnSpec
		if spec, err = DecodeTxnSpec(cmd.Value); err == nil {
			return f.applyWholeTxnLocked(&spec, index, at)
		}
	case OpTxnPrepare:
		var part TxnPart
		if part, err = DecodeTxnPart(cmd.Value); err == nil {
			return f.applyPrepareLocked(&part, index, at)
		}
	case OpTxnResolve:
		var d TxnDecision
		if d, err = DecodeTxnDecision(cmd.Value); err == nil {
			return f.applyResolveLocked(&d, index, at)
		}
	case OpTxnForget:
		if len(cmd.Value) != 8 {
			res.Err = fmt.Errorf("%w: forget wants an 8-byte index", ErrBadCommand)
			return res
		}
		before := binary.BigEndian.Uint64(cmd.Value)
		for id, o := range f.txn.outcomes {
			if o.Index < before {
				delete(f.txn.outcomes, id)
				f.txn.dirtyOutcomes[id] = nil
				res.Deleted++
			}
		}
		return res
	case OpTxnFence:
		var d TxnDecision
		if d, err = DecodeTxnDecision(cmd.Value); err == nil {
			o, ok := f.txn.outcomes[d.ID]
			if !ok {
				o = TxnOutcome{Index: index, State: TxnAborted}
				f.txn.setOutcome(d.ID, o)
			}
			res.Txn = &TxnResult{Outcome: &o, Succeeded: o.Succeeded}
			return res
		}
	}
	res.Err = err
	return res
}

// checkKeysLocked refuses a transaction that touches a key outside the
// range (ErrWrongRange) or one another transaction holds (LockedError).
// scans are spans [Key, End).
func (f *RangeFSM) checkKeysLocked(id string, keys [][]byte, scans []TxnOp) error {
	for _, k := range keys {
		if !f.desc.Contains(k) {
			return ErrWrongRange
		}
		if l := f.txn.locks[string(k)]; l != nil && (id == "" || l.Txn != id) {
			return &LockedError{Txn: l.Txn, Key: bytes.Clone(k)}
		}
	}
	for _, s := range scans {
		if !f.desc.Contains(s.Key) || (len(f.desc.End) > 0 && (s.End == nil || bytes.Compare(s.End, f.desc.End) > 0)) {
			return ErrWrongRange
		}
		for k, l := range f.txn.locks {
			if inSpan([]byte(k), s.Key, s.End) && (id == "" || l.Txn != id) {
				return &LockedError{Txn: l.Txn, Key: []byte(k)}
			}
		}
	}
	return nil
}

func opKeys(ops []TxnOp) (keys [][]byte, scans []TxnOp) {
	for _, o := range ops {
		if o.Kind == TxnScan {
			scans = append(scans, o)
		} else {
			keys = append(keys, o.Key)
		}
	}
	return keys, scans
}

func compareKeys(cs []TxnCompare) [][]byte {
	keys := make([][]byte, len(cs))
	for i := range cs {
		keys[i] = cs[i].Key
	}
	return keys
}

// compareLocked evaluates one compare against the range's state.
func (f *RangeFSM) compareLocked(c *TxnCompare) bool {
	var v []byte
	var ki keyInfo
	var found bool
	f.mustLookupFullLocked(c.Key, func(val []byte, info keyInfo, ok bool) { v, ki, found = bytes.Clone(val), info, ok })
	var cmp int
	switch c.Target {
	case CmpValue:
		if !found {
			return false
		}
		cmp = bytes.Compare(v, c.Value)
	case CmpExists:
		if c.Result != CmpEqual && c.Result != CmpNotEqual {
			return false
		}
		return (found == c.Exists) == (c.Result == CmpEqual)
	case CmpVersion:
		var ver uint64
		if found {
			ver = max(ki.version, 1)
		}
		cmp = cmpUint(ver, c.Version)
	case CmpRevision:
		if c.RangeID != f.id {
			// An index of another range says nothing about this one.
			return c.Result == CmpNotEqual
		}
		var rev uint64
		if found {
			rev = ki.rev
		}
		cmp = cmpUint(rev, c.Index)
	default:
		return false
	}
	switch c.Result {
	case CmpEqual:
		return cmp == 0
	case CmpNotEqual:
		return cmp != 0
	case CmpGreater:
		return cmp > 0
	case CmpLess:
		return cmp < 0
	}
	return false
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readLocked is a transaction's get.
func (f *RangeFSM) readLocked(key []byte) TxnOpResult {
	r := TxnOpResult{Kind: TxnGet}
	f.mustLookupFullLocked(key, func(v []byte, ki keyInfo, found bool) {
		if found {
			r.Found = true
			r.KV = KV{Key: bytes.Clone(key), Value: bytes.Clone(v), Revision: ki.rev, Version: max(ki.version, 1), Lease: ki.lease}
		}
	})
	return r
}

func (f *RangeFSM) applyWholeTxnLocked(spec *TxnSpec, index uint64, at int64) *Result {
	res := &Result{Revision: index}
	if spec.ID != "" {
		if o, ok := f.txn.outcomes[spec.ID]; ok {
			res.Txn = &TxnResult{Outcome: &o, Succeeded: o.Succeeded}
			if o.State == TxnAborted {
				res.Err = ErrTxnFenced
			}
			return res
		}
	}
	keys := compareKeys(spec.Compares)
	var scans []TxnOp
	for _, ops := range [][]TxnOp{spec.Success, spec.Failure} {
		k, s := opKeys(ops)
		keys, scans = append(keys, k...), append(scans, s...)
	}
	if err := f.checkKeysLocked("", keys, scans); err != nil {
		res.Err = err
		return res
	}
	succeeded := true
	for i := range spec.Compares {
		if !f.compareLocked(&spec.Compares[i]) {
			succeeded = false
			break
		}
	}
	ops := spec.Success
	if !succeeded {
		ops = spec.Failure
	}
	out := &TxnResult{Succeeded: succeeded, Ops: make([]TxnOpResult, 0, len(ops))}
	for _, o := range ops {
		switch o.Kind {
		case TxnPut:
			f.putLocked(o.Key, o.Value, o.Lease, index, at)
			out.Ops = append(out.Ops, TxnOpResult{Kind: TxnPut})
		case TxnDelete:
			existed := f.deleteLocked(o.Key, index, at, CauseNone, 0)
			out.Ops = append(out.Ops, TxnOpResult{Kind: TxnDelete, Found: existed})
		case TxnGet:
			out.Ops = append(out.Ops, f.readLocked(o.Key))
		case TxnScan:
			limit := int(o.Limit)
			if limit <= 0 {
				limit = 1000
			}
			kvs, more, next, err := f.scanLocked(o.Key, o.End, limit)
			if err != nil {
				f.store.log.Error("transaction scan failed while applying; stopping", "range", f.id, "err", err)
				panic(fmt.Sprintf("raftstore: range %d: scan during apply: %v", f.id, err))
			}
			out.Ops = append(out.Ops, TxnOpResult{Kind: TxnScan, KVs: kvs, More: more, Next: next})
		}
	}
	if spec.ID != "" {
		f.txn.setOutcome(spec.ID, TxnOutcome{Index: index, State: TxnCommitted, Succeeded: succeeded})
	}
	res.Txn = out
	return res
}

func (f *RangeFSM) applyPrepareLocked(p *TxnPart, index uint64, at int64) *Result {
	res := &Result{Revision: index}
	keys := append(compareKeys(p.Compares), p.Reads...)
	for _, ops := range [][]TxnOp{p.Success, p.Failure} {
		for _, o := range ops {
			if o.Kind != TxnPut && o.Kind != TxnDelete {
				res.Err = fmt.Errorf("%w: a prepare writes only puts and deletes", ErrBadCommand)
				return res
			}
			keys = append(keys, o.Key)
		}
	}
	if err := f.checkKeysLocked(p.ID, keys, nil); err != nil {
		res.Err = err
		return res
	}
	succeeded := true
	for i := range p.Compares {
		if !f.compareLocked(&p.Compares[i]) {
			succeeded = false
		}
	}
	out := &TxnResult{Succeeded: succeeded}
	for _, k := range p.Reads {
		out.Ops = append(out.Ops, f.readLocked(k))
	}
	locks := map[string]*Lock{}
	lockOf := func(k []byte) *Lock {
		l := locks[string(k)]
		if l == nil {
			l = &Lock{Txn: p.ID, At: at}
			locks[string(k)] = l
		}
		return l
	}
	for _, k := range keys {
		lockOf(k)
	}
	for _, o := range p.Success {
		lockOf(o.Key).Success = LockWrite{Kind: o.Kind, Value: o.Value, Lease: o.Lease}
	}
	for _, o := range p.Failure {
		lockOf(o.Key).Failure = LockWrite{Kind: o.Kind, Value: o.Value, Lease: o.Lease}
	}
	for k, l := range locks {
		f.txn.setLock(k, l)
	}
	res.Txn = out
	return res
}

func (f *RangeFSM) applyResolveLocked(d *TxnDecision, index uint64, at int64) *Result {
	res := &Result{Revision: index}
	var keys []string
	for k, l := range f.txn.locks {
		if l.Txn == d.ID {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys) // the same events, in the same order, on every replica
	for _, k := range keys {
		l := f.txn.locks[k]
		f.txn.setLock(k, nil)
		res.Deleted++
		if !d.Commit {
			continue
		}
		w := l.Failure
		if d.Succeeded {
			w = l.Success
		}
		switch w.Kind {
		case TxnPut:
			f.putLocked([]byte(k), w.Value, w.Lease, index, at)
		case TxnDelete:
			f.deleteLocked([]byte(k), index, at, CauseNone, 0)
		}
	}
	return res
}

// splitTxnState gives a split's new range the locks of its keys (they
// leave the parent's bucket) and a copy of every recorded outcome (a
// transaction's status is asked of the range holding one of its keys,
// wherever that key went). It returns the moved locks' keys. The parent
// was flushed first, so its buckets are current.
func splitTxnState(tx *bolt.Tx, f *RangeFSM, child *Descriptor) ([]string, error) {
	plb, pob := tx.Bucket(lockBucket(f.id)), tx.Bucket(outcomeBucket(f.id))
	clb, err := tx.CreateBucketIfNotExists(lockBucket(child.ID))
	if err != nil {
		return nil, err
	}
	cob, err := tx.CreateBucketIfNotExists(outcomeBucket(child.ID))
	if err != nil {
		return nil, err
	}
	if f.txn.versioned {
		if err := tx.Bucket(metaBucket).Put(versionedKey(child.ID), []byte{1}); err != nil {
			return nil, err
		}
	}
	var moved []string
	for k := range f.txn.locks {
		if child.Contains([]byte(k)) {
			moved = append(moved, k)
		}
	}
	slices.Sort(moved)
	for _, k := range moved {
		if err := clb.Put([]byte(k), f.txn.locks[k].encode()); err != nil {
			return nil, err
		}
		if plb != nil {
			if err := plb.Delete([]byte(k)); err != nil {
				return nil, err
			}
		}
	}
	if pob != nil {
		if err := pob.ForEach(func(k, v []byte) error { return cob.Put(bytes.Clone(k), bytes.Clone(v)) }); err != nil {
			return nil, err
		}
	}
	return moved, nil
}

// ---- results over the wire (Internal.RangePropose) ----

// Result error kinds on the wire.
const (
	resErrNone byte = iota
	resErrWrongRange
	resErrLocked
	resErrFenced
	resErrCompareFailed
	resErrOther
)

// EncodeResult encodes a command's result for a node that proposed it
// through another: the revision, the error (by kind, a lock's holder and
// key), the count, and a transaction's result.
func EncodeResult(r *Result) []byte {
	e := enc{txnEncVersion}
	e.uvarint(r.Revision)
	var locked *LockedError
	switch {
	case r.Err == nil:
		e.byte(resErrNone)
	case errors.As(r.Err, &locked):
		e.byte(resErrLocked)
		e.bytes([]byte(locked.Txn))
		e.bytes(locked.Key)
	case errors.Is(r.Err, ErrWrongRange):
		e.byte(resErrWrongRange)
	case errors.Is(r.Err, ErrTxnFenced):
		e.byte(resErrFenced)
	case errors.Is(r.Err, ErrCompareFailed):
		e.byte(resErrCompareFailed)
	default:
		e.byte(resErrOther)
		e.bytes([]byte(r.Err.Error()))
	}
	e.uvarint(uint64(r.Deleted))
	e.bool(r.Existed)
	e.bool(r.Txn != nil)
	if t := r.Txn; t != nil {
		e.bool(t.Succeeded)
		e.bool(t.Outcome != nil)
		if t.Outcome != nil {
			e.bytes(t.Outcome.encode())
		}
		e.uvarint(uint64(len(t.Ops)))
		for _, o := range t.Ops {
			e.byte(byte(o.Kind))
			e.bool(o.Found)
			e.kv(&o.KV)
			e.uvarint(uint64(len(o.KVs)))
			for i := range o.KVs {
				e.kv(&o.KVs[i])
			}
			e.bool(o.More)
			e.bytes(o.Next)
		}
	}
	return e
}

func (e *enc) kv(kv *KV) {
	e.bytes(kv.Key)
	e.bytes(kv.Value)
	e.uvarint(kv.Revision)
	e.uvarint(kv.Version)
	e.uvarint(kv.Lease)
}

func (d *dec) kv() KV {
	return KV{Key: d.bytes(), Value: d.bytes(), Revision: d.uvarint(), Version: d.uvarint(), Lease: d.uvarint()}
}

// DecodeResult undoes EncodeResult.
func DecodeResult(b []byte) (*Result, error) {
	d := dec{b: b}
	if d.byte() != txnEncVersion {
		d.fail("unknown version")
	}
	r := &Result{Revision: d.uvarint()}
	switch d.byte() {
	case resErrNone:
	case resErrLocked:
		r.Err = &LockedError{Txn: string(d.bytes()), Key: d.bytes()}
	case resErrWrongRange:
		r.Err = ErrWrongRange
	case resErrFenced:
		r.Err = ErrTxnFenced
	case resErrCompareFailed:
		r.Err = ErrCompareFailed
	default:
		r.Err = errors.New(string(d.bytes()))
	}
	r.Deleted = int(d.uvarint())
	r.Existed = d.bool()
	if d.bool() {
		t := &TxnResult{Succeeded: d.bool()}
		if d.bool() {
			o, err := decodeOutcome(d.bytes())
			if err != nil {
				return nil, err
			}
			t.Outcome = &o
		}
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			o := TxnOpResult{Kind: TxnOpKind(d.byte()), Found: d.bool(), KV: d.kv()}
			m := d.count()
			for j := 0; j < m && d.err == nil; j++ {
				o.KVs = append(o.KVs, d.kv())
			}
			o.More, o.Next = d.bool(), d.bytes()
			t.Ops = append(t.Ops, o)
		}
		r.Txn = t
	}
	return r, d.err
}

// digest adds the range's transaction state to a replica digest: locks
// (holder and writes, not this replica's clock) and outcomes decide how
// later commands apply, so replicas must agree on them. A range without
// any adds nothing.
func (t *txnState) digest(h io.Writer) {
	keys := slices.Sorted(maps.Keys(t.locks))
	for _, k := range keys {
		l := *t.locks[k]
		l.At = 0
		e := enc{'K'}
		e.bytes([]byte(k))
		h.Write(append(e, l.encode()...))
	}
	ids := slices.Sorted(maps.Keys(t.outcomes))
	for _, id := range ids {
		o := t.outcomes[id]
		e := enc{'O'}
		e.bytes([]byte(id))
		h.Write(append(e, o.encode()...))
	}
}
