package replication

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
)

// A range's change feed is read once per node for all the watches that
// follow it there, not once per watch. Every range feed served from this
// node's replica (a local watch's feeder, or another node's through
// Internal.WatchRange) that has caught up reads the batches of the
// range's hub: one goroutine that follows the replica's feed, converts
// each batch for the wire once, and keeps the last few batches. A hundred
// watchers of a prefix then cost one feed read and one conversion per
// batch, plus their own sends, instead of a hundred of each. A feed that
// is behind what the hub keeps (a resume from an old cursor, a slow
// reader) reads the replica itself, as before, until it catches up.

const (
	// hubKeep and hubKeepBytes bound the recent batches a hub keeps for
	// feeds a little behind (the newest is always kept); hubCoalesce is
	// the least time between two of its reads while writes keep coming
	// when one feed follows it (watchCoalesce's role).
	hubKeep      = 32
	hubKeepBytes = 2 * watchBatchBytes
	hubCoalesce  = watchCoalesce
	// hubCoalesceMax is a hub's least time between reads once
	// hubCoalesceFeeds feeds share it (between the two, in proportion).
	// Each batch costs every feed a message, a write and its reader's
	// wake-up whatever its size: at 100 watchers, 20 ms batches of about
	// 100 events took half the CPU per event of 5 ms batches of 35, and
	// their writes went from 0.51 to 0.66 of those without watchers, for
	// 10 ms more lag at the median (watchbench, docs/performance.md). One
	// watcher keeps the 5 ms.
	hubCoalesceMax   = 20 * time.Millisecond
	hubCoalesceFeeds = 32
)

// hubWindow is the least time between a hub's reads when feeds share it.
func hubWindow(feeds int) time.Duration {
	if feeds <= 1 {
		return hubCoalesce
	}
	n := time.Duration(min(feeds, hubCoalesceFeeds) - 1)
	return hubCoalesce + (hubCoalesceMax-hubCoalesce)*n/(hubCoalesceFeeds-1)
}

// hubBatch is one read of a range's feed: its events after from, up to
// and including upTo, converted for the wire once and shared read-only by
// every feed that sends them (protobuf marshals a message concurrently
// without changing it).
type hubBatch struct {
	from, upTo uint64
	events     []raftstore.Event
	pbs        []*kvpb.Event
	bytes      int // the events' size, as the feed's batch limit counts it

	// wire[i] is pbs[i] encoded for a client's WatchResponse
	// (rpctypes.EncodeWatchEvent), made by the first client stream that
	// sends it and shared by the others. Only events some watch wants
	// are encoded; the encodings at most double what a kept batch holds.
	wire []atomic.Pointer[[]byte]
}

// encoded returns event i of b encoded for a client's watch stream,
// once for every watch of the node; nil if it cannot be encoded (the
// stream then marshals its own copy).
func (b *hubBatch) encoded(i int) []byte {
	if p := b.wire[i].Load(); p != nil {
		return *p
	}
	enc, err := rpctypes.EncodeWatchEvent(b.pbs[i])
	if err != nil {
		return nil
	}
	if !b.wire[i].CompareAndSwap(nil, &enc) {
		return *b.wire[i].Load()
	}
	return enc
}

type hubKey struct {
	rangeID uint64
	prev    bool
}

// feedHubs is the node's hubs, one per range and prev_value choice that
// some feed follows.
type feedHubs struct {
	mu   sync.Mutex
	hubs map[hubKey]*feedHub
}

// feedHub follows one replica's feed for the feeds that share it.
type feedHub struct {
	s      *shard.Shard
	key    hubKey
	cancel context.CancelFunc

	// mu guards the fields below; it is a leaf.
	mu      sync.Mutex
	users   int
	batches []*hubBatch // oldest first, contiguous
	wake    chan struct{}
	stopped bool // run has ended (or never ran): nothing more comes
}

// acquire returns s's hub for prev, starting it on first use; the caller
// releases it when its feed ends. current says whether s is the node's
// replica of the range now: a feed of a replica the node has since
// replaced gets a hub of its own that never runs (it reads its replica
// directly until it notices), and never stops the current replica's hub.
func (h *feedHubs) acquire(ctx context.Context, s *shard.Shard, prev bool, current func() bool) *feedHub {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := hubKey{rangeID: s.ID(), prev: prev}
	if hub := h.hubs[k]; hub != nil && hub.s == s {
		hub.mu.Lock()
		hub.users++
		hub.mu.Unlock()
		return hub
	}
	hctx, cancel := context.WithCancel(ctx)
	hub := &feedHub{s: s, key: k, cancel: cancel, users: 1, wake: make(chan struct{})}
	// Asked under h.mu, so that two feeds racing a replacement of the
	// replica cannot each stop the other's hub.
	if !current() {
		cancel()
		hub.stopped = true
		return hub
	}
	if h.hubs == nil {
		h.hubs = map[hubKey]*feedHub{}
	}
	if old := h.hubs[k]; old != nil {
		old.cancel() // the replica it read left the node
	}
	h.hubs[k] = hub
	go hub.run(hctx)
	return hub
}

// release ends one user's share; the last one stops the hub.
func (h *feedHubs) release(hub *feedHub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	hub.mu.Lock()
	hub.users--
	last := hub.users == 0
	hub.mu.Unlock()
	if last {
		hub.cancel()
		if h.hubs[hub.key] == hub {
			delete(h.hubs, hub.key)
		}
	}
}

// since returns the kept batches that hold what comes after index after,
// and a channel closed when the next batch arrives. ok is false when
// after is older than what the hub keeps: the caller reads the replica.
func (hub *feedHub) since(after uint64) (batches []*hubBatch, wake <-chan struct{}, ok bool) {
	hub.mu.Lock()
	defer hub.mu.Unlock()
	if hub.stopped || len(hub.batches) == 0 || after < hub.batches[0].from {
		return nil, hub.wake, false
	}
	for i, b := range hub.batches {
		if b.upTo > after {
			return hub.batches[i:], hub.wake, true
		}
	}
	return nil, hub.wake, true
}

// run reads the replica's feed from its applied index on, one batch per
// change (at most one per hubWindow of its feeds), until ctx ends. A read that fails
// (the feed compacted under it, the replica replaced by a snapshot)
// starts over from the applied index with nothing kept: the feeds behind
// it read the replica and meet the error themselves.
func (hub *feedHub) run(ctx context.Context) {
	defer func() {
		hub.mu.Lock()
		hub.stopped, hub.batches = true, nil
		close(hub.wake)
		hub.mu.Unlock()
	}()
	f := hub.s.FSM()
	pos := uint64(0)
	fresh := true
	for range 1 << 40 { // ends with ctx
		if ctx.Err() != nil {
			return
		}
		changed := f.Changed()
		if fresh {
			pos = max(f.AppliedIndex(), f.EventFloor())
			fresh = false
		}
		evs, upTo, err := f.Events(pos, watchBatchEvents, watchBatchBytes, hub.key.prev)
		if err != nil {
			hub.mu.Lock()
			hub.batches = nil
			close(hub.wake) // its feeds read the replica meanwhile
			hub.wake = make(chan struct{})
			hub.mu.Unlock()
			fresh = true
			select {
			case <-ctx.Done():
				return
			case <-time.After(watchRetryMax):
			}
			continue
		}
		if upTo > pos {
			b := &hubBatch{from: pos, upTo: upTo, events: evs, pbs: make([]*kvpb.Event, len(evs)), wire: make([]atomic.Pointer[[]byte], len(evs))}
			for i := range evs {
				b.pbs[i] = eventPB(hub.key.rangeID, &evs[i], hub.key.prev)
				b.bytes += evs[i].Size()
			}
			hub.mu.Lock()
			hub.batches = append(hub.batches, b)
			keep, kept := len(hub.batches)-1, b.bytes
			for keep > 0 && len(hub.batches)-keep < hubKeep && kept+hub.batches[keep-1].bytes <= hubKeepBytes {
				keep--
				kept += hub.batches[keep].bytes
			}
			if keep > 0 {
				// A new array: feeds may still hold the old one's batches.
				hub.batches = append(hub.batches[:0:0], hub.batches[keep:]...)
			}
			close(hub.wake)
			hub.wake = make(chan struct{})
			hub.mu.Unlock()
			pos = upTo
		}
		if upTo < f.AppliedIndex() {
			continue // cut short, or more applied meanwhile
		}
		start := time.Now()
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
		hub.mu.Lock()
		window := hubWindow(hub.users)
		hub.mu.Unlock()
		if wait := window - time.Since(start); wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// takeBatches gathers a feed's next message from the kept batches since
// after: the wanted events with a greater index, from whole batches, the
// first always, the others while the message stays within
// watchBatchEvents events and watchBatchBytes bytes. A message is then
// never larger than the larger of the limit and one hub batch, which is
// what a feed reading the replica itself sends. upTo is the last batch
// taken's; more says batches were left.
//
// With encode, wire holds the events' encodings for a client's stream
// (nil if some batch has none).
func takeBatches(batches []*hubBatch, after uint64, wanted func(*raftstore.Event) bool, encode bool) (events []*kvpb.Event, wire [][]byte, upTo uint64, more bool) {
	upTo = after
	size := 0
	// A feed that wants the first batch's first and last events likely
	// wants them all (its span covers the range): its slices are sized
	// once, up to a message's count, since growing them event by event
	// cost 5% of the nodes' CPU with 100 such watchers. Others grow
	// with what they take.
	if len(batches) > 0 && len(batches[0].events) > 0 {
		first := batches[0].events
		if wanted(&first[0]) && wanted(&first[len(first)-1]) {
			n := 0
			for _, b := range batches {
				if n += len(b.events); n >= watchBatchEvents {
					break
				}
			}
			events = make([]*kvpb.Event, 0, n)
			if encode {
				wire = make([][]byte, 0, n)
			}
		}
	}
	for i, b := range batches {
		if i > 0 && (len(events)+len(b.events) > watchBatchEvents || size+b.bytes > watchBatchBytes) {
			return events, wire, upTo, true
		}
		for j := range b.events {
			if e := &b.events[j]; e.Index > after && wanted(e) {
				events = append(events, b.pbs[j])
				if encode {
					if enc := b.encoded(j); enc != nil {
						wire = append(wire, enc)
					} else {
						encode, wire = false, nil
					}
				}
				size += e.Size()
			}
		}
		upTo = b.upTo
	}
	return events, wire, upTo, false
}
