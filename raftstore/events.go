package raftstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A range's events are its change feed: one per committed write that
// changed a key (puts, deletes of keys that existed, successful
// compare-and-swaps, deletes by a lease) and one per split, keyed by the
// write's log index. They are the watch's source (package replication).
//
// They ride with the data: applying a write records its event in the
// range's pending overlay, and the committer writes the events to the
// range's event bucket in the same bbolt transaction as the keys they
// describe, so a crash keeps or loses both together and the log replay
// that restores one restores the other; no fsync of their own. A reader
// takes the committed events from bbolt (up to the durable index) and the
// rest from the overlays, under the range's read lock, the same split as
// every other read.
//
// Retention: each commit trims the oldest events past the range's byte or
// age budget (Config.EventRetention*), and records the floor: every event
// with an index above it is kept. A cursor below the floor gets
// ErrCompacted. A replica that installs a snapshot has no events before the
// snapshot's index, so the snapshot's index becomes its floor, and a
// range created by a split has all of its events (floor 0); a range
// upgraded from a release without events starts at its applied index.

// EventType is what an event records.
type EventType byte

const (
	EventPut EventType = iota + 1
	EventDelete
	// EventSplit: the range split at this index; Child is the new range,
	// whose events start at its index 0.
	EventSplit
)

// DeleteCause says why a key was deleted when no client deleted it.
type DeleteCause byte

const (
	CauseNone DeleteCause = iota
	CauseLeaseExpired
	CauseLeaseRevoked
)

// Event is one entry of a range's change feed.
type Event struct {
	Index uint64
	Type  EventType
	Key   []byte
	Value []byte
	// PrevValue is the key's value before the write, when PrevExists.
	PrevValue  []byte
	PrevExists bool
	// Lease is a put's lease, or the lease whose end deleted the key.
	Lease uint64
	Cause DeleteCause
	// At is when this replica applied the write (Unix milliseconds): what
	// age-based retention counts from.
	At int64
	// Child is the new range of an EventSplit.
	Child *Descriptor
	// Seq orders the events one write records at one index (a lease's
	// end, a transaction): 0, 1, ...
	Seq uint32
	// prevOnDisk: PrevValue and PrevExists are not filled in yet. The
	// write found the key in no overlay, so the previous state is what
	// bbolt holds for it until the write's own layer commits (resolved by
	// prevResolver and the commit, see putLocked).
	prevOnDisk bool
}

// ErrCompacted is returned for events older than what the replica keeps.
var ErrCompacted = errors.New("raftstore: events compacted")

const eventVersion = 1

// Size is what the event costs in memory and in the retention budget,
// and what the batch limits of Events count.
func (e *Event) Size() int { return len(e.Key) + len(e.Value) + len(e.PrevValue) + 48 }

func (e *Event) encode() []byte {
	b := make([]byte, 0, e.Size())
	b = append(b, eventVersion, byte(e.Type))
	b = binary.BigEndian.AppendUint64(b, uint64(e.At))
	var flags byte
	if e.PrevExists {
		flags |= 1
	}
	b = append(b, flags, byte(e.Cause))
	b = binary.AppendUvarint(b, e.Lease)
	for _, f := range [][]byte{e.Key, e.Value, e.PrevValue} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	if e.Type == EventSplit && e.Child != nil {
		b = append(b, e.Child.Marshal()...)
	}
	return b
}

// decodeEvent parses a stored event, copying everything out of b (which
// may be bbolt's memory).
func decodeEvent(index uint64, b []byte) (Event, error) {
	e := Event{Index: index}
	if len(b) < 12 || b[0] != eventVersion {
		return e, fmt.Errorf("%w: event at index %d: bad header", ErrCorrupt, index)
	}
	e.Type = EventType(b[1])
	e.At = int64(binary.BigEndian.Uint64(b[2:]))
	e.PrevExists = b[10]&1 != 0
	e.Cause = DeleteCause(b[11])
	b = b[12:]
	lease, w := binary.Uvarint(b)
	if w <= 0 {
		return e, fmt.Errorf("%w: event at index %d: bad lease", ErrCorrupt, index)
	}
	e.Lease, b = lease, b[w:]
	for _, f := range []*[]byte{&e.Key, &e.Value, &e.PrevValue} {
		v, rest, err := readBytes(b)
		if err != nil {
			return e, fmt.Errorf("%w: event at index %d: %w", ErrCorrupt, index, err)
		}
		*f, b = bytes.Clone(v), rest
	}
	if e.Type == EventSplit {
		d, err := UnmarshalDescriptor(b)
		if err != nil {
			return e, fmt.Errorf("%w: split event at index %d: %w", ErrCorrupt, index, err)
		}
		e.Child = &d
	}
	return e, nil
}

func eventBucket(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte("e"), id) }
func leaseBucket(id uint64) []byte { return binary.BigEndian.AppendUint64([]byte("l"), id) }
func eventFloorKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("evfloor/"), id)
}
func eventSizeKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte("evsize/"), id)
}

func indexKey(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

// eventKey is an event's key in its range's event bucket: its index, then
// its place among the events of that index.
func eventKey(e *Event) []byte {
	return binary.BigEndian.AppendUint32(indexKey(e.Index), e.Seq)
}

// leaseIndexKey is the lease bucket's key for key under lease: the lease
// first, so one lease's keys are one prefix.
func leaseIndexKey(lease uint64, key []byte) []byte {
	return append(binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(key)), lease), key...)
}

// recordLocked appends an event to the pending overlay. Only user ranges
// keep a feed: the meta range's writes are the cluster's own.
func (f *RangeFSM) recordLocked(e *Event) {
	if f.desc.IsMeta() {
		return
	}
	if n := len(f.pending.events); n > 0 && f.pending.events[n-1].Index == e.Index {
		e.Seq = f.pending.events[n-1].Seq + 1
	}
	f.pending.events = append(f.pending.events, e)
	f.pending.bytes += e.Size()
}

// EventFloor is the index above which every event of the range is kept.
func (f *RangeFSM) EventFloor() uint64 { return f.evFloor.Load() }

// Events returns the range's events with index > after, at most max of
// them and about maxBytes, and upTo: the index through which the feed has
// been read (the last event returned when the answer was cut short,
// else the applied index). ErrCompacted when after is below the floor.
// With prev, every event's PrevValue and PrevExists are filled in;
// without, they may be missing (cheaper for watchers that ignore them).
func (f *RangeFSM) Events(after uint64, maxEvents, maxBytes int, prev bool) (evs []Event, upTo uint64, err error) {
	evs, upTo, _, err = f.events(after, maxEvents, maxBytes, false, prev)
	return evs, upTo, err
}

// EventsAndDescriptor is Events that also returns the range's descriptor
// as of upTo's state when the answer was not cut short (else the current
// one), read under the same lock.
func (f *RangeFSM) EventsAndDescriptor(after uint64, maxEvents, maxBytes int, prev bool) (evs []Event, upTo uint64, desc Descriptor, err error) {
	return f.events(after, maxEvents, maxBytes, true, prev)
}

// events is Events, with the descriptor when withDesc. Events from the
// overlays are shallow copies: an event is never changed once recorded
// (its key and value share the write's immutable buffer), so a hundred
// watchers of a range share its bytes instead of copying them each.
func (f *RangeFSM) events(after uint64, maxEvents, maxBytes int, withDesc, withPrev bool) (evs []Event, upTo uint64, desc Descriptor, err error) {
	if maxEvents <= 0 {
		maxEvents = 1
	}
	if maxBytes <= 0 {
		maxBytes = math.MaxInt
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if withDesc {
		desc = f.desc.Clone()
	}
	if floor := f.evFloor.Load(); after < floor {
		return nil, 0, desc, fmt.Errorf("%w: range %d keeps events after index %d, asked for events after %d", ErrCompacted, f.id, floor, after)
	}
	applied, durable := f.applied.Load(), f.durable.Load()
	size := 0
	// One write (a lease's end, a transaction) may record several events
	// at one index: a page never ends inside an index, or the next page,
	// which starts after it, would miss the rest.
	full := func(next uint64) bool {
		return (len(evs) >= maxEvents || size >= maxBytes) && len(evs) > 0 && evs[len(evs)-1].Index != next
	}
	cut := false
	if after < durable {
		err := f.store.db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(eventBucket(f.id))
			if b == nil {
				if f.desc.IsMeta() {
					return nil // the meta range keeps no feed
				}
				return fmt.Errorf("%w: range %d", ErrRangeDropped, f.id)
			}
			// A commit that trimmed the feed is visible here before it
			// raises f.evFloor (it takes f.mu only after its transaction):
			// the stored floor is the one this transaction's events obey.
			if v := tx.Bucket(metaBucket).Get(eventFloorKey(f.id)); len(v) == 8 && after < binary.BigEndian.Uint64(v) {
				return fmt.Errorf("%w: range %d keeps events after index %d, asked for events after %d", ErrCompacted, f.id, binary.BigEndian.Uint64(v), after)
			}
			c := b.Cursor()
			for k, v := c.Seek(indexKey(after + 1)); len(k) >= 8; k, v = c.Next() {
				i := binary.BigEndian.Uint64(k)
				if i > durable {
					break
				}
				if full(i) {
					cut = true
					break
				}
				e, err := decodeEvent(i, v)
				if err != nil {
					return fmt.Errorf("range %d: %w", f.id, err)
				}
				if len(k) == 12 {
					e.Seq = binary.BigEndian.Uint32(k[8:])
				}
				evs = append(evs, e)
				size += e.Size()
			}
			return nil
		})
		if errors.Is(err, ErrCompacted) {
			return nil, 0, desc, err
		}
		if err != nil {
			return nil, 0, desc, fmt.Errorf("raftstore: events: %w", err)
		}
	}
	pr := prevResolver{f: f}
	defer pr.close()
	layers := f.frozen
	for i := 0; i <= len(layers) && !cut; i++ {
		l := f.pending
		if i < len(layers) {
			l = layers[i]
		}
		// Events are in index order: skip to the first after the cursor
		// instead of walking the overlay from its start on every read.
		first, _ := slices.BinarySearchFunc(l.events, after+1, func(e *Event, idx uint64) int { return cmpUint(e.Index, idx) })
		for _, e := range l.events[first:] {
			if full(e.Index) {
				cut = true
				break
			}
			evs = append(evs, *e)
			if withPrev {
				// Before the size counts it: the limits hold with it.
				if err := pr.resolve(&evs[len(evs)-1]); err != nil {
					return nil, 0, desc, err
				}
			}
			size += evs[len(evs)-1].Size()
		}
	}
	if cut {
		return evs, evs[len(evs)-1].Index, desc, nil
	}
	// A replica behind the asker (a feed moved to a lagging follower) has
	// nothing after it yet: never answer with less than was asked, which
	// would make the asker read the same events twice.
	return evs, max(applied, after), desc, nil
}

// prevResolver fills in the previous values of overlay events (copies)
// whose write left them to bbolt, through one read transaction opened at
// the first. Callers hold f.mu (read). A commit may have made the event's
// layer durable while f.mu was waited for (it drops the layer only
// after): then bbolt already holds the write itself, and the stored
// event, resolved by that commit, says what came before.
type prevResolver struct {
	f  *RangeFSM
	tx *bolt.Tx
}

func (r *prevResolver) close() {
	if r.tx != nil {
		_ = r.tx.Rollback() // read-only
		r.tx = nil
	}
}

func (r *prevResolver) resolve(e *Event) error {
	if !e.prevOnDisk {
		return nil
	}
	f := r.f
	if r.tx == nil {
		tx, err := f.store.db.Begin(false)
		if err != nil {
			return fmt.Errorf("raftstore: events: %w", err)
		}
		r.tx = tx
	}
	e.prevOnDisk = false
	data := r.tx.Bucket(f.bucket)
	if data == nil {
		// Never "no previous value": the state it was in is gone.
		return fmt.Errorf("%w: range %d", ErrRangeDropped, f.id)
	}
	// No applied index stored: nothing committed yet.
	if applied, ok := storedApplied(r.tx.Bucket(metaBucket), f.id); ok && applied >= e.Index {
		var stored []byte
		if b := r.tx.Bucket(eventBucket(f.id)); b != nil {
			stored = b.Get(eventKey(e))
		}
		if stored == nil {
			return fmt.Errorf("%w: range %d: the event at index %d was trimmed while being read", ErrCompacted, f.id, e.Index)
		}
		d, err := decodeEvent(e.Index, stored)
		if err != nil {
			return fmt.Errorf("range %d: %w", f.id, err)
		}
		e.PrevValue, e.PrevExists = d.PrevValue, d.PrevExists
		return nil
	}
	e.PrevValue, e.PrevExists = f.store.diskPrev(data, f.id, e, true)
	return nil
}

// diskPrev is what bbolt holds for e.Key, as an event's previous value:
// a copy with clone, else bbolt's own memory, which the caller must use
// before its transaction writes anything (the commit encodes it at once). A stored value that does not decode gives none, as a put
// does on the apply path: the event loses its prev_value, nothing else.
func (s *Store) diskPrev(b *bolt.Bucket, id uint64, e *Event, clone bool) ([]byte, bool) {
	if b == nil {
		return nil, false
	}
	stored := b.Get(e.Key)
	if stored == nil {
		return nil, false
	}
	_, v, err := readStoredInfo(id, e.Key, stored)
	if err != nil {
		// Said once, by the commit that stores the event; readers before
		// it get no previous value either, without a line each.
		if !clone {
			s.log.Warn("previous value unreadable; its event has none", "range", id, "index", e.Index, "err", err)
		}
		return nil, false
	}
	if clone {
		return bytes.Clone(v), true
	}
	return v, true
}

// LeaseKeys returns the range's keys attached to lease now.
func (f *RangeFSM) LeaseKeys(lease uint64) ([][]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	keys, err := f.leaseCandidatesLocked(lease)
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, k := range keys {
		var attached bool
		if err := f.lookupFullLocked(k, func(_ []byte, ki keyInfo, found bool) { attached = found && ki.lease == lease }); err != nil {
			return nil, err
		}
		if attached {
			out = append(out, k)
		}
	}
	return out, nil
}

// LeaseLocked reports whether a transaction's lock in the range holds a
// write attached to lease: the key appears when the lock resolves, so a
// range with one cannot be vouched for as holding none of the lease's keys.
func (f *RangeFSM) LeaseLocked(lease uint64) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, l := range f.txn.locks {
		if l.Success.Lease == lease || l.Failure.Lease == lease {
			return true
		}
	}
	return false
}

// Leases returns the ids of the leases the range's keys may be attached
// to (a superset: an overlay may have detached a key since).
func (f *RangeFSM) Leases() ([]uint64, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	seen := map[uint64]bool{}
	var out []uint64
	add := func(l uint64) {
		if l != 0 && !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	err := f.store.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(leaseBucket(f.id))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.First(); len(k) >= 8; {
			l := binary.BigEndian.Uint64(k)
			add(l)
			if l == ^uint64(0) {
				break
			}
			k, _ = c.Seek(binary.BigEndian.AppendUint64(nil, l+1))
		}
		return nil
	})
	for _, l := range append(append([]*overlay{}, f.frozen...), f.pending) {
		l.tree.Ascend(func(e *entry) bool {
			add(e.lease)
			return true
		})
	}
	return out, err
}

// leaseCandidatesLocked lists keys that may be attached to lease: those
// the committed lease index names plus the overlays' writes with it.
func (f *RangeFSM) leaseCandidatesLocked(lease uint64) ([][]byte, error) {
	seen := map[string]bool{}
	var keys [][]byte
	add := func(k []byte) {
		if !seen[string(k)] {
			seen[string(k)] = true
			keys = append(keys, bytes.Clone(k))
		}
	}
	prefix := binary.BigEndian.AppendUint64(nil, lease)
	err := f.store.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(leaseBucket(f.id))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			add(k[8:])
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("raftstore: range %d: lease index: %w", f.id, err)
	}
	for _, l := range append(append([]*overlay{}, f.frozen...), f.pending) {
		l.tree.Ascend(func(e *entry) bool {
			if e.lease == lease {
				add(e.key)
			}
			return true
		})
	}
	return keys, nil
}

// applyLeaseRevokeLocked deletes the range's keys attached to cmd.Lease.
func (f *RangeFSM) applyLeaseRevokeLocked(cmd *Command, index uint64, at int64) *Result {
	res := &Result{Revision: index}
	keys, err := f.leaseCandidatesLocked(cmd.Lease)
	if err != nil {
		f.store.log.Error("lease index read failed while applying; stopping", "range", f.id, "err", err)
		panic(fmt.Sprintf("raftstore: range %d: lease index read during apply: %v", f.id, err))
	}
	for _, k := range keys {
		attached := false
		f.mustLookupFullLocked(k, func(_ []byte, ki keyInfo, found bool) { attached = found && ki.lease == cmd.Lease })
		if !attached || !f.ownsLocked(k) {
			continue
		}
		if f.txn.locks[string(k)] != nil {
			// A transaction holds it: its reads must stay valid until it
			// ends. The range leader's sweep deletes it after.
			continue
		}
		f.deleteLocked(k, index, at, cmd.Cause, cmd.Lease)
		res.Deleted++
	}
	return res
}

// commitEvents writes a commit job's events and trims the feed to its
// budget, in the transaction that writes the job's keys to data (their
// bucket), and before it does: an event whose previous value was left to
// bbolt reads it there. now is the commit's clock for age.
func (s *Store) commitEvents(tx *bolt.Tx, j *commitJob, now time.Time, data *bolt.Bucket) error {
	meta := tx.Bucket(metaBucket)
	evb := tx.Bucket(eventBucket(j.f.id))
	if evb == nil {
		return nil // the meta range keeps no feed
	}
	// Event keys only grow (index, then sequence): full pages, as in an
	// append-only log, write half as many pages as bbolt's default split.
	evb.FillPercent = 1.0
	n, size := loadEventSize(meta, j.f.id)
	for _, layer := range j.layers {
		for _, e := range layer.events {
			if e.prevOnDisk {
				// Read before the job's writes to data (the caller's
				// order), within the transaction that keeps the bytes.
				r := *e
				r.prevOnDisk = false
				r.PrevValue, r.PrevExists = s.diskPrev(data, j.f.id, e, false)
				e = &r
			}
			if err := evb.Put(eventKey(e), e.encode()); err != nil {
				return err
			}
			n++
			size += int64(e.Size())
		}
	}
	floor := j.f.evFloor.Load()
	maxBytes, maxAge := s.cfg.EventRetentionBytes, s.cfg.EventRetentionAge
	cutoff := now.Add(-maxAge).UnixMilli()
	// The events retention drops are the oldest, a prefix of the bucket:
	// find it in one pass, then delete it. Deleting through the cursor and
	// starting again from First walked, for every event, each leaf emptied
	// earlier in the transaction (bbolt drops them only when the commit
	// rebalances): quadratic in the events a commit trims, which once the
	// budget was full meant a third of a follower's CPU under 64 writers.
	// The dropped keys, end to end in one buffer (ends[i] is where key i
	// ends): one allocation that grows, not one per event.
	var keys []byte
	var ends []int
	c := evb.Cursor()
	for k, v := c.First(); k != nil && n > 0; k, v = c.Next() {
		overBytes := maxBytes > 0 && size > maxBytes
		old := maxAge > 0 && len(v) >= 10 && int64(binary.BigEndian.Uint64(v[2:])) < cutoff
		if !overBytes && !old {
			break
		}
		e, err := decodeEvent(binary.BigEndian.Uint64(k), v)
		if err != nil {
			return err
		}
		keys = append(keys, k...)
		ends = append(ends, len(keys))
		n--
		size -= int64(e.Size())
		floor = max(floor, e.Index)
	}
	// Newest first: a leaf's last entry goes without moving the others.
	for i := len(ends) - 1; i >= 0; i-- {
		start := 0
		if i > 0 {
			start = ends[i-1]
		}
		if err := evb.Delete(keys[start:ends[i]]); err != nil {
			return err
		}
	}
	j.evFloor = floor
	if err := meta.Put(eventFloorKey(j.f.id), indexKey(floor)); err != nil {
		return err
	}
	return meta.Put(eventSizeKey(j.f.id), encodeSize(n, size))
}

func loadEventSize(meta *bolt.Bucket, id uint64) (n, size int64) {
	if v := meta.Get(eventSizeKey(id)); len(v) == 16 {
		return int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint64(v[8:]))
	}
	return 0, 0
}

// updateLeaseIndex keeps the range's lease index in step with one key's
// write: old is what bbolt held for the key (nil: nothing).
func updateLeaseIndex(lb *bolt.Bucket, e *entry, old []byte) error {
	var oldLease uint64
	if old != nil {
		ki, _, _ := decodeStored(old)
		oldLease = ki.lease
	}
	newLease := e.lease
	if e.deleted {
		newLease = 0
	}
	if oldLease == newLease {
		return nil
	}
	if oldLease != 0 {
		if err := lb.Delete(leaseIndexKey(oldLease, e.key)); err != nil {
			return err
		}
	}
	if newLease != 0 {
		return lb.Put(leaseIndexKey(newLease, e.key), nil)
	}
	return nil
}

// openFeed creates a user range's event and lease buckets and loads its
// feed's floor. A range that has applied entries but never recorded a
// floor comes from a release without events: its feed starts at its
// applied index.
func openFeed(tx *bolt.Tx, desc Descriptor, f *RangeFSM) error {
	if desc.IsMeta() {
		return nil
	}
	for _, name := range [][]byte{eventBucket(desc.ID), leaseBucket(desc.ID)} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return err
		}
	}
	meta := tx.Bucket(metaBucket)
	if v := meta.Get(eventFloorKey(desc.ID)); len(v) == 8 {
		f.evFloor.Store(binary.BigEndian.Uint64(v))
		return nil
	}
	f.evFloor.Store(f.applied.Load())
	return meta.Put(eventFloorKey(desc.ID), indexKey(f.applied.Load()))
}

// splitFeedBuckets creates a split's new range's event and lease buckets
// (its feed starts at index 0: all of its events are kept) and returns
// them with the parent's lease bucket, whose entries for moved keys move.
func splitFeedBuckets(tx *bolt.Tx, parent, child uint64) (fromLeases, toLeases *bolt.Bucket, err error) {
	fromLeases = tx.Bucket(leaseBucket(parent))
	if toLeases, err = tx.CreateBucketIfNotExists(leaseBucket(child)); err != nil {
		return nil, nil, err
	}
	if _, err = tx.CreateBucketIfNotExists(eventBucket(child)); err != nil {
		return nil, nil, err
	}
	meta := tx.Bucket(metaBucket)
	if err := meta.Put(eventFloorKey(child), indexKey(0)); err != nil {
		return nil, nil, err
	}
	return fromLeases, toLeases, meta.Put(eventSizeKey(child), encodeSize(0, 0))
}

// recordSplitEvent writes the parent's split event, in the split's own
// transaction (the split commits synchronously, outside the overlays).
func recordSplitEvent(tx *bolt.Tx, f *RangeFSM, index uint64, child *Descriptor) error {
	evb := tx.Bucket(eventBucket(f.id))
	if evb == nil {
		return nil
	}
	c := child.Clone()
	e := &Event{Index: index, Type: EventSplit, Child: &c, At: time.Now().UnixMilli()}
	if err := evb.Put(eventKey(e), e.encode()); err != nil {
		return err
	}
	meta := tx.Bucket(metaBucket)
	n, size := loadEventSize(meta, f.id)
	return meta.Put(eventSizeKey(f.id), encodeSize(n+1, size+int64(e.Size())))
}

// resetFeed empties a range's feed and lease index for a snapshot's state
// at index applied: the replica has no events before it. The caller
// refills the returned lease index from the restored keys.
func resetFeed(tx *bolt.Tx, id, applied uint64) (*bolt.Bucket, error) {
	for _, name := range [][]byte{eventBucket(id), leaseBucket(id)} {
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return nil, err
			}
		}
	}
	if _, err := tx.CreateBucket(eventBucket(id)); err != nil {
		return nil, err
	}
	lb, err := tx.CreateBucket(leaseBucket(id))
	if err != nil {
		return nil, err
	}
	meta := tx.Bucket(metaBucket)
	if err := meta.Put(eventFloorKey(id), indexKey(applied)); err != nil {
		return nil, err
	}
	return lb, meta.Put(eventSizeKey(id), encodeSize(0, 0))
}
