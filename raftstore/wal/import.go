package wal

import (
	"fmt"
	"slices"

	"github.com/hashicorp/raft"
)

// Import replaces range id's entries and stable values with the given
// ones, durably: it is how a node upgraded in place moves a range's old
// per-range log and stable store into the shared log (see
// raftstore.MigrateRangeToWAL). next returns the entries in order, a
// batch at a time, and an empty batch at the end.
//
// Import begins with a drop record, so that a crash midway leaves the
// range partly imported and importing again from the start replaces that
// part: the caller removes the old files only once Import has returned.
func (w *WAL) Import(id uint64, stable map[string][]byte, next func() ([]*raft.Log, error)) error {
	r := w.Range(id)
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	if _, _, _, _, err := w.write(appendBareRecord(nil, kindDrop, id), syncItem{}, false); err != nil {
		return err
	}
	r.mu.Lock()
	r.idx.clear()
	r.stable = make(map[string]stableValue)
	r.gen = w.gens.Add(1)
	r.mu.Unlock()
	r.written.Store(0)
	w.setSynced(r, 0)
	for {
		logs, err := next()
		if err != nil {
			return fmt.Errorf("wal: import range %d: %w", id, err)
		}
		if len(logs) == 0 {
			break
		}
		if err := r.storeLocked(logs, false); err != nil {
			return fmt.Errorf("wal: import range %d: %w", id, err)
		}
	}
	keys := make([]string, 0, len(stable))
	for k := range stable {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		rec := appendSetRecord(nil, id, []byte(k), stable[k])
		seg, _, _, _, err := w.write(rec, syncItem{}, false)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.stable[k] = stableValue{val: slices.Clone(stable[k]), seg: seg, size: int64(len(rec))}
		r.mu.Unlock()
	}
	return w.syncAll()
}
