package raftstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Digest is a checksum of a range's state at one applied index.
type Digest struct {
	Applied uint64
	Keys    uint64
	Sum     string // hex SHA-256
}

// Digest checksums the range's live keys, values and revisions in key
// order, atomically with the applied index it reports: replicas of a range
// at the same applied index must return the same sum, so comparing them
// detects a replica whose state has diverged from its log. It holds the
// range's read lock (applies wait) while it reads every key, so it is a
// check for tests and operators, not for the request path.
func (f *RangeFSM) Digest() (Digest, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	h := sha256.New()
	var keys uint64
	var num [8]byte
	add := func(k, v []byte, rev, lease, version uint64) {
		keys++
		binary.BigEndian.PutUint64(num[:], uint64(len(k)))
		h.Write(num[:])
		h.Write(k)
		binary.BigEndian.PutUint64(num[:], uint64(len(v)))
		h.Write(num[:])
		h.Write(v)
		binary.BigEndian.PutUint64(num[:], rev)
		h.Write(num[:])
		// A key's lease decides what a revoke deletes, so replicas must
		// agree on it too; keys without one hash as they always did.
		if lease != 0 {
			binary.BigEndian.PutUint64(num[:], lease)
			h.Write([]byte{'L'})
			h.Write(num[:])
		}
		// Versions decide version compares: replicas must agree on them
		// (a range counts them only from its first transaction).
		if version != 0 {
			binary.BigEndian.PutUint64(num[:], version)
			h.Write([]byte{'V'})
			h.Write(num[:])
		}
	}
	ov := f.overlayRangeLocked(nil, nil)
	err := f.store.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(f.bucket)
		if b == nil {
			return fmt.Errorf("range %d: bucket missing", f.id)
		}
		c := b.Cursor()
		k, v := c.First()
		i := 0
		for k != nil || i < len(ov) {
			if i < len(ov) && (k == nil || bytes.Compare(ov[i].key, k) <= 0) {
				if k != nil && bytes.Equal(ov[i].key, k) {
					k, v = c.Next()
				}
				if e := ov[i]; !e.deleted {
					add(e.key, e.value, e.rev, e.lease, e.version)
				}
				i++
				continue
			}
			ki, val, err := readStoredInfo(f.id, k, v)
			if err != nil {
				return err
			}
			add(k, val, ki.rev, ki.lease, ki.version)
			k, v = c.Next()
		}
		return nil
	})
	if err != nil {
		return Digest{}, fmt.Errorf("raftstore: digest: %w", err)
	}
	f.txn.digest(h)
	return Digest{Applied: f.applied.Load(), Keys: keys, Sum: hex.EncodeToString(h.Sum(nil))}, nil
}
