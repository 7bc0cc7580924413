package raftstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Backups and restores, as the state machine sees them: a backup reads a
// range's live keys at one applied index without holding up its applies
// for the whole read; a restore writes a range's keys into a data
// directory no Raft group has run in yet.

// BackupReader is a range's state pinned at one applied index: a bbolt
// read transaction plus the overlays' entries at the moment it was taken.
// Close it soon: a long read transaction keeps the pages it reads from
// being reused.
type BackupReader struct {
	f       *RangeFSM
	tx      *bolt.Tx
	ov      []*entry
	applied uint64
	desc    Descriptor
	locks   int
}

// OpenBackup pins the range's applied state for a backup. It commits the
// overlays first (as Snapshot does), so that the read transaction holds
// nearly everything; the overlays' entries taken under the same lock as
// the transaction cover what applied in between. Applies resume as soon
// as it returns.
func (f *RangeFSM) OpenBackup() (*BackupReader, error) {
	if err := f.store.Flush(); err != nil {
		return nil, fmt.Errorf("raftstore: flush before backup of range %d: %w", f.id, err)
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	// Every overlay entry is at or below the applied index, and every
	// commit writes overlays frozen at or below it: the transaction plus
	// the overlays, newest winning, is the state at exactly applied.
	tx, err := f.store.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("raftstore: backup of range %d: %w", f.id, err)
	}
	return &BackupReader{
		f: f, tx: tx, ov: f.overlayRangeLocked(nil, nil),
		applied: f.applied.Load(), desc: f.desc.Clone(), locks: len(f.txn.locks),
	}, nil
}

// Applied is the applied index the reader's state is at.
func (b *BackupReader) Applied() uint64 { return b.applied }

// Descriptor is the range's descriptor at that index.
func (b *BackupReader) Descriptor() Descriptor { return b.desc }

// Locks is how many keys transactions held at that index.
func (b *BackupReader) Locks() int { return b.locks }

// Close releases the read transaction.
func (b *BackupReader) Close() { _ = b.tx.Rollback() }

// Each calls fn for every live key in key order. Keys attached to a lease
// are counted in leased and not passed to fn: they live only as long as a
// client keeps its lease alive, and the lease is not restored (the
// cluster's leases live in the meta range), so restoring them would make
// a key outlive its owner or tie it to an unrelated lease of the same id.
func (b *BackupReader) Each(fn func(kv KV) error) (leased uint64, err error) {
	bk := b.tx.Bucket(b.f.bucket)
	if bk == nil {
		return 0, fmt.Errorf("raftstore: backup of range %d: bucket missing", b.f.id)
	}
	emit := func(k, v []byte, ki keyInfo) error {
		if ki.lease != 0 {
			leased++
			return nil
		}
		return fn(KV{Key: k, Value: v, Revision: ki.rev, Version: max(ki.version, 1)})
	}
	c := bk.Cursor()
	k, v := c.First()
	i := 0
	for k != nil || i < len(b.ov) {
		if i < len(b.ov) && (k == nil || bytes.Compare(b.ov[i].key, k) <= 0) {
			if k != nil && bytes.Equal(b.ov[i].key, k) {
				k, v = c.Next()
			}
			if e := b.ov[i]; !e.deleted {
				if err := emit(e.key, e.value, e.info()); err != nil {
					return leased, err
				}
			}
			i++
			continue
		}
		ki, val, err := readStoredInfo(b.f.id, k, v)
		if err != nil {
			return leased, fmt.Errorf("raftstore: backup: %w", err)
		}
		if err := emit(k, val, ki); err != nil {
			return leased, err
		}
		k, v = c.Next()
	}
	return leased, nil
}

// RestoredKV is one key written by a restore.
type RestoredKV struct {
	Key, Value []byte
}

// restoreBatch bounds the keys one bbolt transaction of a restore writes.
const restoreBatch = 20000

// CreateRestoredRange creates range desc on a store no Raft group has run
// on, holding the keys next yields (in increasing order, until it returns
// false), and records that its group must be bootstrapped with servers
// when the node starts (as a split's new range is). Its applied index is
// 0 and every key's revision is rev: the group's fresh log starts at
// index 1, so every entry of it applies and every write after the restore
// has a higher revision than the restored keys. Its change feed starts
// empty.
func (s *Store) CreateRestoredRange(desc Descriptor, servers []Server, rev uint64, next func() (RestoredKV, bool, error)) error {
	s.mu.Lock()
	_, open := s.ranges[desc.ID]
	s.mu.Unlock()
	if open {
		return fmt.Errorf("raftstore: restore range %d: already open", desc.ID)
	}
	descs, err := s.Descriptors()
	if err != nil {
		return err
	}
	for _, d := range descs {
		if d.ID == desc.ID {
			return fmt.Errorf("raftstore: restore range %d: the store has it already", desc.ID)
		}
	}
	f, err := s.OpenRange(desc)
	if err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.ranges, desc.ID) // the node opens it when it starts
	s.mu.Unlock()
	if f.applied.Load() != 0 {
		return fmt.Errorf("raftstore: restore range %d: applied index %d, want 0", desc.ID, f.applied.Load())
	}
	// No versions: a range counts them from its first transaction, and a
	// restored range has applied none.
	info := keyInfo{rev: rev}
	var keys, size int64
	var last []byte
	for done := false; !done; {
		err := s.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(dataBucket(desc.ID))
			b.FillPercent = dataFillPercent
			for n := 0; n < restoreBatch; n++ {
				kv, ok, err := next()
				if err != nil {
					return err
				}
				if !ok {
					done = true
					return nil
				}
				if !desc.IsMeta() && !desc.Contains(kv.Key) {
					return fmt.Errorf("key %q is outside the range", kv.Key)
				}
				if last != nil && bytes.Compare(kv.Key, last) <= 0 {
					return fmt.Errorf("key %q after %q: keys must increase", kv.Key, last)
				}
				last = append(last[:0], kv.Key...)
				stored := encodeStored(info, kv.Value)
				keys++
				size += storedSize(kv.Key, stored)
				if err := b.Put(bytes.Clone(kv.Key), stored); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("raftstore: restore range %d: %w", desc.ID, err)
		}
	}
	boot, err := json.Marshal(servers)
	if err != nil {
		return fmt.Errorf("raftstore: restore range %d: %w", desc.ID, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		return errors.Join(
			meta.Put(sizeKey(desc.ID), encodeSize(keys, size)),
			meta.Put(appliedKey(desc.ID), binary.BigEndian.AppendUint64(nil, 0)),
			meta.Put(bootKey(desc.ID), boot),
		)
	})
	if err != nil {
		return fmt.Errorf("raftstore: restore range %d: %w", desc.ID, err)
	}
	return nil
}
