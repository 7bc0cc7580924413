package wal

import (
	"bytes"
	"sync"
)

// entryCache holds the newest small entries of every range on the node.
// Raft reads each entry back right after storing it (a follower to apply
// it, a leader to send it to each follower); from here that is a map
// lookup, not a pread. One cache for the node, bounded in bytes, so that
// a thousand sleeping ranges cost nothing in it: what they wrote last
// has long been pushed out by the busy ones.
//
// Keys carry the range's generation, which changes whenever an index of
// the range may come to hold a different entry (a suffix cut, the log
// emptied, the range dropped): an old entry is then never found again,
// and ages out.
type entryCache struct {
	shards [cacheShards]cacheShard
}

const (
	cacheShards = 16
	// maxCachedEntry keeps one large entry from pushing out hundreds of
	// small ones; larger entries are read from disk, where one call is
	// amortised over many bytes.
	maxCachedEntry = 16 << 10
	// cacheOverhead is what an entry costs besides its bytes (map slot,
	// queue slot, slice header), so that the bound holds for tiny ones.
	cacheOverhead = 64
)

type cacheKey struct{ gen, index uint64 }

type cacheShard struct {
	mu    sync.Mutex
	m     map[cacheKey][]byte
	fifo  []cacheKey // oldest first, from head
	head  int
	bytes int64
	max   int64
}

func newEntryCache(maxBytes int64) *entryCache {
	c := &entryCache{}
	for i := range c.shards {
		c.shards[i].m = make(map[cacheKey][]byte)
		c.shards[i].max = maxBytes / cacheShards
	}
	return c
}

func (c *entryCache) shard(k cacheKey) *cacheShard {
	return &c.shards[(k.gen*0x9E3779B97F4A7C15+k.index)%cacheShards]
}

func (c *entryCache) get(k cacheKey) ([]byte, bool) {
	s := c.shard(k)
	s.mu.Lock()
	b, ok := s.m[k]
	s.mu.Unlock()
	return b, ok
}

// put caches e, which must not be modified afterwards, or forgets the
// key when e is too large.
func (c *entryCache) put(k cacheKey, e []byte) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.m[k]; ok {
		s.bytes -= int64(len(old)) + cacheOverhead
		delete(s.m, k)
	}
	if len(e) > maxCachedEntry || s.max <= 0 {
		return
	}
	s.m[k] = e
	s.fifo = append(s.fifo, k)
	s.bytes += int64(len(e)) + cacheOverhead
	for s.bytes > s.max && s.head < len(s.fifo) {
		old := s.fifo[s.head]
		s.head++
		if b, ok := s.m[old]; ok {
			s.bytes -= int64(len(b)) + cacheOverhead
			delete(s.m, old)
		}
	}
	if live := len(s.fifo) - s.head; live > 2*len(s.m)+1024 {
		// Keys put again or forgotten left stale slots behind: keep one
		// slot per cached key, in order.
		seen := make(map[cacheKey]bool, len(s.m))
		fifo := make([]cacheKey, 0, len(s.m))
		for _, k := range s.fifo[s.head:] {
			if _, ok := s.m[k]; ok && !seen[k] {
				seen[k] = true
				fifo = append(fifo, k)
			}
		}
		s.fifo, s.head = fifo, 0
	} else if s.head > 1024 && s.head > len(s.fifo)/2 {
		s.fifo = append(s.fifo[:0], s.fifo[s.head:]...)
		s.head = 0
	}
}

// add caches a copy of e unless the key is cached already (read-ahead
// from disk: what is cached is the same entry).
func (c *entryCache) add(k cacheKey, e []byte) {
	if len(e) > maxCachedEntry {
		return
	}
	if _, ok := c.get(k); !ok {
		c.put(k, bytes.Clone(e))
	}
}
