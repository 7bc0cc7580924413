package wal

import (
	"fmt"
	"slices"
)

// The collector frees segments, oldest first. Every range's records are
// mixed in the segments, and a range keeps its oldest entries the
// longest, so waiting for a segment to hold nothing live could take
// forever: one sleeping range that wrote a few entries long ago would pin
// every segment written since. Instead the collector copies what is still
// live in the oldest segments to the head of the log (kindRewrite and
// kindSet records) and then frees them, as TiKV's raft-engine does. It
// copies only when that pays: see planCollection.

// segStat is a sealed segment as the collector weighs it.
type segStat struct {
	size int64 // bytes in the file
	live int64 // bytes of records some range still needs
}

// planCollection returns how many of the oldest sealed segments to free:
// the prefix that frees the most bytes net of twice the live bytes it
// copies forward (read once, written once), if that is positive. Copying
// only what costs less than half of what it frees bounds the extra
// writes at one byte per byte freed, so a range's sleeping entries are
// copied again only after at least as many bytes of garbage have piled
// up; a nearly full segment is never copied just because an empty one
// precedes it.
func planCollection(segs []segStat) int {
	best, bestGain := 0, int64(0)
	var size, live int64
	for i, s := range segs {
		size += s.size
		live += s.live
		if gain := size - 2*live; gain > bestGain {
			best, bestGain = i+1, gain
		}
	}
	return best
}

// Collect runs one pass of the collector now. It also runs on its own
// whenever a segment is sealed.
func (w *WAL) Collect() error {
	_, err := w.collect(false)
	return err
}

func (w *WAL) runCollector() {
	defer w.gcWG.Done()
	for {
		select {
		case <-w.gcKick:
		case <-w.gcQuit:
			return
		}
		if _, err := w.collect(false); err != nil {
			w.log.Error("wal: collection failed", "err", err)
		}
	}
}

// collect frees the oldest sealed segments planCollection picks (all of
// them with force), copying forward what is live in them first. It
// returns how many it freed.
func (w *WAL) collect(force bool) (int, error) {
	w.gcMu.Lock()
	defer w.gcMu.Unlock()
	if err := w.failure(); err != nil {
		return 0, err
	}
	w.wmu.Lock()
	sealed := slices.Clone(w.segs[:len(w.segs)-1])
	w.wmu.Unlock()
	if len(sealed) == 0 {
		return 0, nil
	}
	views := w.viewList()
	live := make(map[*segment]int64, len(sealed))
	for _, v := range views {
		v.addLive(live)
	}
	n := len(sealed)
	if !force {
		stats := make([]segStat, len(sealed))
		for i, s := range sealed {
			stats[i] = segStat{size: s.size, live: live[s]}
		}
		n = planCollection(stats)
	}
	if n == 0 {
		return 0, nil
	}
	limit := sealed[n-1].seq
	// Every range is looked at under its write lock, not just those
	// whose published state refers to old segments: a writer publishes
	// its record only after writing it (a stable value only once it is
	// durable), and the lock waits for that.
	for _, v := range views {
		if err := v.rewrite(limit); err != nil {
			return 0, err
		}
	}
	// The copies must be durable before the originals go.
	if err := w.syncAll(); err != nil {
		return 0, err
	}
	// New records only ever go to the active segment, which is newer
	// than limit, so nothing can have come to need the old ones since:
	// a write in flight when its range was rewritten had been published
	// by then.
	for _, v := range w.viewList() {
		if s := v.minSeq(); s <= limit {
			return 0, fmt.Errorf("wal: range %d still has records in segment %d after the rewrite", v.id, s)
		}
	}
	// The floor first: should the removals not all reach the disk, replay
	// still ignores what is below it. Removing a segment whose cuts and
	// drops hide older records before those older records would bring
	// them back; the floor rules that out.
	if err := w.writeFloor(limit + 1); err != nil {
		return 0, err
	}
	w.wmu.Lock()
	w.smu.Lock()
	// A sync round in flight may still be syncing a segment it took
	// for the active one before a rotation.
	for w.syncing {
		w.scond.Wait()
	}
	w.smu.Unlock()
	gone := slices.Clone(w.segs[:n])
	w.segs = slices.Clone(w.segs[n:])
	w.wmu.Unlock()
	for _, s := range gone {
		s.f.Close()
		if err := w.fs.Remove(s.name); err != nil {
			return 0, fmt.Errorf("wal: remove %s: %w", s.name, err)
		}
	}
	if err := w.fs.SyncDir(); err != nil {
		return 0, fmt.Errorf("wal: %w", err)
	}
	w.counter.collections.Add(uint64(n))
	w.log.Debug("wal: freed segments", "through", limit, "count", n)
	return n, nil
}

// addLive adds the bytes of the range's records to their segments.
func (r *RangeLog) addLive(live map[*segment]int64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, c := range r.idx.chunks {
		live[c.seg] += c.bytes
	}
	for _, v := range r.stable {
		live[v.seg] += v.size
	}
}

// minSeq returns the oldest segment holding a record the range needs.
func (r *RangeLog) minSeq() uint64 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m := ^uint64(0)
	for _, c := range r.idx.chunks {
		m = min(m, c.seg.seq)
	}
	for _, v := range r.stable {
		m = min(m, v.seg.seq)
	}
	return m
}

// A rewrite packs entries into records of about rewriteRecordBytes:
// large enough that a sleeping range's index is a few blocks, small
// enough that reading one entry back reads little else.
const (
	rewriteRecordBytes = 64 << 10
	rewriteMaxEntries  = 1024
)

// rewrite copies the range's records in segments up to limit to the
// active segment and points the range at the copies.
func (r *RangeLog) rewrite(limit uint64) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.dropped.Load() {
		return nil
	}
	if err := r.w.failure(); err != nil {
		return err
	}
	// The index and the stable values change only under wmu, held here,
	// so they are read without mu.
	var runs [][]*chunk
	var prev *chunk
	for _, c := range r.idx.chunks {
		if c.seg.seq > limit {
			prev = nil
			continue
		}
		if prev != nil && prev.last+1 == c.first {
			runs[len(runs)-1] = append(runs[len(runs)-1], c)
		} else {
			runs = append(runs, []*chunk{c})
		}
		prev = c
	}
	for _, run := range runs {
		if err := r.rewriteRun(run); err != nil {
			return err
		}
	}
	var keys []string
	for k, v := range r.stable {
		if v.seg.seq <= limit {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		v := r.stable[k]
		rec := appendSetRecord(nil, r.id, []byte(k), v.val)
		seg, _, _, _, err := r.w.write(rec, syncItem{}, false)
		if err != nil {
			return err
		}
		r.mu.Lock()
		r.stable[k] = stableValue{val: v.val, seg: seg, size: int64(len(rec))}
		r.mu.Unlock()
		r.w.counter.rewritten.Add(uint64(len(rec)))
	}
	return nil
}

// rewriteRun copies the live entries of run, chunks that follow each
// other, into rewrite records, and points the index at them once per
// segment written (so that their blocks share chunks). Until then the
// index points at the originals, which stay until the copies are durable.
func (r *RangeLog) rewriteRun(run []*chunk) error {
	var entries [][]byte
	size := 0
	next := run[0].first // the index of entries[0]
	var seg *segment     // where blocks are
	var blocks []block
	publish := func() {
		if len(blocks) > 0 {
			r.mu.Lock()
			r.idx.replace(seg, blocks)
			r.mu.Unlock()
		}
		blocks = nil
	}
	flush := func() error {
		if len(entries) == 0 {
			return nil
		}
		buf := r.w.getBuf()
		defer r.w.putBuf(buf)
		buf.b = appendRawEntriesRecord(buf.b, kindRewrite, r.id, next, entries)
		s, off, _, _, err := r.w.write(buf.b, syncItem{}, false)
		if err != nil {
			return err
		}
		if s != seg {
			publish()
			seg = s
		}
		blocks = append(blocks, block{first: next, n: uint64(len(entries)), off: off, size: int64(len(buf.b))})
		r.w.counter.rewritten.Add(uint64(len(buf.b)))
		next += uint64(len(entries))
		entries, size = entries[:0], 0
		return nil
	}
	for _, c := range run {
		var err error
		// replace leaves the chunks taken here as they are (it builds
		// new ones), so they can be walked while it runs.
		c.each(func(b block) bool {
			var rec record
			if rec, err = readRecord(c.seg, b); err != nil {
				err = fmt.Errorf("wal: range %d: rewrite: %w", r.id, err)
				return false
			}
			if rec.rangeID != r.id || rec.index != b.first || rec.count < b.n {
				err = fmt.Errorf("%w: range %d: the record at %s:%d is not the one its index names", ErrCorrupt, r.id, c.seg.name, b.off)
				return false
			}
			es := rec.entries
			for j := b.first; j <= b.last(); j++ {
				var e []byte
				e, es, _ = nextEntry(es)
				if j < c.first {
					continue
				}
				entries = append(entries, e)
				if size += len(e); size >= rewriteRecordBytes || len(entries) >= rewriteMaxEntries {
					if err = flush(); err != nil {
						return false
					}
				}
			}
			return true
		})
		if err != nil {
			publish()
			return err
		}
	}
	err := flush()
	publish()
	return err
}
