package raftstore

import (
	"bytes"

	"github.com/google/btree"
)

// entry is one key's latest state in an overlay: a value, or a tombstone.
type entry struct {
	key     []byte
	value   []byte
	rev     uint64
	lease   uint64 // the lease the key is attached to, 0 for none
	version uint64 // writes since the key was created
	deleted bool
}

func (e *entry) info() keyInfo { return keyInfo{rev: e.rev, lease: e.lease, version: e.version} }

func entryLess(a, b *entry) bool { return bytes.Compare(a.key, b.key) < 0 }

// overlay holds the writes applied since the last bbolt commit, in key
// order so that scans can merge it with bbolt's cursor.
type overlay struct {
	tree  *btree.BTreeG[*entry]
	bytes int
	// events are the range's change-feed entries for these writes, in
	// index order (see events.go).
	events []*Event
}

func newOverlay() *overlay {
	return &overlay{tree: btree.NewG[*entry](16, entryLess)}
}

func (o *overlay) set(e *entry) {
	o.tree.ReplaceOrInsert(e)
	o.bytes += len(e.key) + len(e.value) + 48
}

func (o *overlay) get(key []byte) (*entry, bool) {
	return o.tree.Get(&entry{key: key})
}

func (o *overlay) len() int { return o.tree.Len() }

// ascend calls fn for entries with start <= key < end (end nil: no bound)
// in key order until fn returns false.
func (o *overlay) ascend(start, end []byte, fn func(*entry) bool) {
	pivot := &entry{key: start}
	if end == nil {
		o.tree.AscendGreaterOrEqual(pivot, fn)
		return
	}
	o.tree.AscendRange(pivot, &entry{key: end}, fn)
}
