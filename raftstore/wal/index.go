package wal

import (
	"encoding/binary"
	"slices"
	"sort"
	"unsafe"
)

// A range's index maps each of its live entries to the record that holds
// it. It is kept per record ("block"), not per entry, and packed: a
// sleeping range keeps up to TrailingLogs entries, often written one per
// batch, and a node keeps a thousand such ranges. A block costs 4 to 7
// bytes (three uvarints) instead of the 40 a struct per entry would.
//
// Blocks are grouped in chunks of consecutive records in one segment.
// A chunk is what the collector accounts and moves; a lookup finds its
// chunk by binary search and then decodes at most maxChunkBlocks blocks.

// maxChunkBlocks bounds a chunk, and so the linear decode of a lookup.
const maxChunkBlocks = 64

// block is one record of a range's entries, as far as the range uses it.
type block struct {
	first uint64 // index of the record's first entry
	n     uint64 // entries in use, counted from the record's first
	off   int64  // the record's offset in its segment
	size  int64  // the record's size, header included
}

func (b block) last() uint64 { return b.first + b.n - 1 }

// chunk is a run of blocks in one segment whose entries follow each
// other: block i+1 begins where block i's used entries end.
type chunk struct {
	seg      *segment
	recFirst uint64 // index of the first block's first entry
	first    uint64 // first live index (a prefix cut may start inside the first block)
	last     uint64 // last live index: recFirst plus every block's n, minus one
	bytes    int64  // the blocks' record sizes: what keeps their segment alive
	end      int64  // where the last block's record ends
	nblk     int32
	// data holds, per block, uvarints n, off minus the previous block's
	// end (the first block's off itself), and size.
	data []byte
}

// each calls fn for every block in order until it returns false.
func (c *chunk) each(fn func(block) bool) {
	d := c.data
	first, end := c.recFirst, int64(0)
	for len(d) > 0 {
		n, w := binary.Uvarint(d)
		d = d[w:]
		gap, w := binary.Uvarint(d)
		d = d[w:]
		size, w := binary.Uvarint(d)
		d = d[w:]
		b := block{first: first, n: n, off: end + int64(gap), size: int64(size)}
		if !fn(b) {
			return
		}
		first, end = b.first+b.n, b.off+b.size
	}
}

// find returns the block holding index i, which must be in [first, last].
func (c *chunk) find(i uint64) block {
	var found block
	c.each(func(b block) bool {
		if i <= b.last() {
			found = b
			return false
		}
		return true
	})
	return found
}

// tryAppend adds b after the chunk's last block if it fits there.
func (c *chunk) tryAppend(b block) bool {
	if c.nblk >= maxChunkBlocks || b.first != c.last+1 || b.off < c.end {
		return false
	}
	c.data = binary.AppendUvarint(c.data, b.n)
	c.data = binary.AppendUvarint(c.data, uint64(b.off-c.end))
	c.data = binary.AppendUvarint(c.data, uint64(b.size))
	c.nblk++
	c.last = b.last()
	c.end = b.off + b.size
	c.bytes += b.size
	if c.nblk == maxChunkBlocks {
		// Full: give back what append over-allocated.
		c.data = slices.Clip(slices.Clone(c.data))
	}
	return true
}

// newChunks packs blocks, which must follow each other, into chunks of
// seg; the first live index is first.
func newChunks(seg *segment, blocks []block, first uint64) []*chunk {
	var out []*chunk
	var c *chunk
	for i, b := range blocks {
		if c == nil || !c.tryAppend(b) {
			live := b.first
			if i == 0 {
				live = first
			}
			c = &chunk{seg: seg, recFirst: b.first, first: live, last: b.first - 1}
			if !c.tryAppend(b) {
				panic("wal: block does not start a chunk") // cannot happen: an empty chunk takes any block
			}
			out = append(out, c)
		}
	}
	for _, c := range out {
		c.data = slices.Clip(c.data)
	}
	return out
}

// restrict returns the part of c within [lo, hi], or nil if none.
func (c *chunk) restrict(lo, hi uint64) *chunk {
	lo, hi = max(lo, c.first), min(hi, c.last)
	if lo > hi {
		return nil
	}
	if lo == c.first && hi == c.last {
		return c
	}
	var kept []block
	c.each(func(b block) bool {
		if b.first > hi {
			return false
		}
		if b.last() >= lo {
			if b.last() > hi {
				b.n = hi - b.first + 1
			}
			kept = append(kept, b)
		}
		return true
	})
	return newChunks(c.seg, kept, lo)[0]
}

// index is a range's entries: chunks sorted by index, not overlapping.
// Outside replay they also follow each other without gaps.
type index struct {
	chunks []*chunk
}

func (x *index) empty() bool { return len(x.chunks) == 0 }

// first and last return the first and last live indexes, 0 when empty.
func (x *index) first() uint64 {
	if len(x.chunks) == 0 {
		return 0
	}
	return x.chunks[0].first
}

func (x *index) last() uint64 {
	if len(x.chunks) == 0 {
		return 0
	}
	return x.chunks[len(x.chunks)-1].last
}

// add records a new record of entries after every live one (with a gap
// only during replay).
func (x *index) add(seg *segment, b block) {
	if n := len(x.chunks); n > 0 && x.chunks[n-1].seg == seg && x.chunks[n-1].tryAppend(b) {
		return
	}
	x.chunks = append(x.chunks, newChunks(seg, []block{b}, b.first)...)
}

// find returns the segment and block holding index i.
func (x *index) find(i uint64) (*segment, block, bool) {
	k := sort.Search(len(x.chunks), func(k int) bool { return x.chunks[k].first > i }) - 1
	if k < 0 || i > x.chunks[k].last {
		return nil, block{}, false
	}
	return x.chunks[k].seg, x.chunks[k].find(i), true
}

// truncFrom drops the entries from i on.
func (x *index) truncFrom(i uint64) {
	k := len(x.chunks)
	for k > 0 && x.chunks[k-1].last >= i {
		k--
	}
	if k == len(x.chunks) {
		return
	}
	keep := x.chunks[:k]
	if i > 0 {
		if c := x.chunks[k].restrict(0, i-1); c != nil {
			keep = append(keep, c)
		}
	}
	clear(x.chunks[len(keep):])
	x.chunks = keep
}

// truncTo drops the entries up to i.
func (x *index) truncTo(i uint64) {
	k := 0
	for k < len(x.chunks) && x.chunks[k].last <= i {
		k++
	}
	rest := x.chunks[k:]
	if len(rest) > 0 && rest[0].first <= i {
		rest[0] = rest[0].restrict(i+1, ^uint64(0))
	}
	x.chunks = slices.Clone(rest)
}

func (x *index) clear() { x.chunks = nil }

// replace puts blocks, consecutive records in seg, in place of whatever
// the index holds for the indexes they cover.
func (x *index) replace(seg *segment, blocks []block) {
	lo, hi := blocks[0].first, blocks[len(blocks)-1].last()
	out := make([]*chunk, 0, len(x.chunks)+2)
	for _, c := range x.chunks {
		if c.last < lo || c.first > hi {
			out = append(out, c)
			continue
		}
		if lo > 0 {
			if l := c.restrict(0, lo-1); l != nil {
				out = append(out, l)
			}
		}
		if hi < ^uint64(0) {
			if r := c.restrict(hi+1, ^uint64(0)); r != nil {
				out = append(out, r)
			}
		}
	}
	out = append(out, newChunks(seg, blocks, lo)...)
	sort.Slice(out, func(i, j int) bool { return out[i].first < out[j].first })
	x.chunks = out
}

// contiguous reports whether the live entries follow each other.
func (x *index) contiguous() bool {
	for k := 1; k < len(x.chunks); k++ {
		if x.chunks[k].first != x.chunks[k-1].last+1 {
			return false
		}
	}
	return true
}

// memSize is roughly the heap the index takes.
func (x *index) memSize() int {
	n := cap(x.chunks) * int(unsafe.Sizeof(uintptr(0)))
	for _, c := range x.chunks {
		n += int(unsafe.Sizeof(*c)) + cap(c.data)
	}
	return n
}
