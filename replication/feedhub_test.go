package replication

import (
	"bytes"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
)

// hubBatches makes contiguous batches from index from on: sizes[i] events
// in batch i, each with a value of valueBytes, keys alternating a/ and b/.
func hubBatches(from uint64, valueBytes int, sizes ...int) []*hubBatch {
	var out []*hubBatch
	next := from + 1
	for _, n := range sizes {
		b := &hubBatch{from: next - 1}
		for range n {
			key := fmt.Appendf(nil, "a/%d", next)
			if next%2 == 0 {
				key = fmt.Appendf(nil, "b/%d", next)
			}
			e := raftstore.Event{Index: next, Type: raftstore.EventPut, Key: key, Value: bytes.Repeat([]byte("v"), valueBytes)}
			b.events = append(b.events, e)
			b.pbs = append(b.pbs, eventPB(7, &e, false))
			b.bytes += e.Size()
			next++
		}
		b.upTo = next - 1
		b.wire = make([]atomic.Pointer[[]byte], len(b.pbs))
		out = append(out, b)
	}
	return out
}

func TestTakeBatches(t *testing.T) {
	all := func(*raftstore.Event) bool { return true }
	onlyA := func(e *raftstore.Event) bool { return bytes.HasPrefix(e.Key, []byte("a/")) }
	tests := []struct {
		name      string
		batches   []*hubBatch
		after     uint64
		wanted    func(*raftstore.Event) bool
		wantFirst uint64 // first event's index (0: none)
		wantN     int
		wantUpTo  uint64
		wantMore  bool
	}{
		{name: "caught up: nothing", batches: nil, after: 10, wanted: all, wantUpTo: 10},
		{name: "one batch", batches: hubBatches(10, 10, 5), after: 10, wanted: all, wantFirst: 11, wantN: 5, wantUpTo: 15},
		{name: "inside a batch: only what is after", batches: hubBatches(10, 10, 5, 5), after: 13, wanted: all, wantFirst: 14, wantN: 7, wantUpTo: 20},
		{name: "filtered by span, position still advances", batches: hubBatches(10, 10, 4), after: 10, wanted: onlyA, wantFirst: 11, wantN: 2, wantUpTo: 14},
		{name: "event limit stops between batches", batches: hubBatches(0, 10, 200, 50, 100), after: 0, wanted: all, wantFirst: 1, wantN: 250, wantUpTo: 250, wantMore: true},
		// 32 batches of ~0.5 MiB: without the byte limit one message
		// would take them all (16 MiB).
		{name: "byte limit stops between batches", batches: hubBatches(0, 64<<10, slices.Repeat([]int{8}, 32)...), after: 0, wanted: all, wantFirst: 1, wantN: 8, wantUpTo: 8, wantMore: true},
		{name: "one batch over the limits is still taken whole", batches: hubBatches(0, 64<<10, 40, 1), after: 0, wanted: all, wantFirst: 1, wantN: 40, wantUpTo: 40, wantMore: true},
		// A small batch, then one of a single 3 MiB event: taking both
		// would pass a client's 4 MiB receive limit with the first.
		{name: "a large next batch waits for the next message", batches: append(hubBatches(0, 10, 4), hubBatches(4, 3<<20, 1)...), after: 0, wanted: all, wantFirst: 1, wantN: 4, wantUpTo: 4, wantMore: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			evs, wire, upTo, more := takeBatches(tc.batches, tc.after, tc.wanted, true)
			if len(evs) != tc.wantN || upTo != tc.wantUpTo || more != tc.wantMore {
				t.Fatalf("%d events, upTo %d, more %v; want %d, %d, %v", len(evs), upTo, more, tc.wantN, tc.wantUpTo, tc.wantMore)
			}
			if len(wire) != len(evs) {
				t.Fatalf("%d encodings for %d events", len(wire), len(evs))
			}
			for i, e := range evs {
				want, err := rpctypes.EncodeWatchEvent(e)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(wire[i], want) {
					t.Fatalf("event %d's encoding is not its own", e.Index)
				}
			}
			if evs2, wire2, _, _ := takeBatches(tc.batches, tc.after, tc.wanted, false); wire2 != nil || len(evs2) != len(evs) {
				t.Fatalf("without encode: %d encodings, %d events; want none, %d", len(wire2), len(evs2), len(evs))
			}
			size := 0
			for i, e := range evs {
				if i == 0 && e.Index != tc.wantFirst {
					t.Errorf("first event %d, want %d", e.Index, tc.wantFirst)
				}
				if i > 0 && e.Index <= evs[i-1].Index {
					t.Errorf("event %d after %d", e.Index, evs[i-1].Index)
				}
				if e.Index <= tc.after || e.Index > upTo {
					t.Errorf("event %d outside (%d, %d]", e.Index, tc.after, upTo)
				}
				size += len(e.Key) + len(e.Value) + 48
			}
			if len(tc.batches) > 0 {
				if limit := max(watchBatchBytes, tc.batches[0].bytes); size > limit {
					t.Errorf("a message of %d bytes, over %d (the limit, or the first batch when larger)", size, limit)
				}
			}
		})
	}
}

// The conversion and the encoding a hub shares are made once per event;
// what takeBatches hands out are those very values.
func TestTakeBatches_SharesTheHubsValues(t *testing.T) {
	bs := hubBatches(0, 1, 3)
	all := func(*raftstore.Event) bool { return true }
	evs, wire, _, _ := takeBatches(bs, 0, all, true)
	_, again, _, _ := takeBatches(bs, 1, all, true)
	for i, e := range evs {
		if e != bs[0].pbs[i] {
			t.Fatalf("event %d is a copy, not the hub's", i)
		}
		if i > 0 && &wire[i][0] != &again[i-1][0] {
			t.Fatalf("event %d was encoded twice", i)
		}
	}
	// Only the events some watch wants are encoded.
	bs = hubBatches(0, 1, 4)
	onlyA := func(e *raftstore.Event) bool { return bytes.HasPrefix(e.Key, []byte("a/")) }
	evs, _, _, _ = takeBatches(bs, 0, onlyA, true)
	for j, e := range bs[0].events {
		if encoded := bs[0].wire[j].Load() != nil; encoded != onlyA(&e) {
			t.Errorf("event %d (%q): encoded %v", e.Index, e.Key, encoded)
		}
	}
	if len(evs) != 2 {
		t.Fatalf("%d events of a/, want 2", len(evs))
	}
}

func TestHubWindow(t *testing.T) {
	tests := []struct {
		feeds int
		want  time.Duration
	}{
		{0, hubCoalesce},
		{1, hubCoalesce},
		{2, hubCoalesce + (hubCoalesceMax-hubCoalesce)/(hubCoalesceFeeds-1)},
		{hubCoalesceFeeds, hubCoalesceMax},
		{1000, hubCoalesceMax},
	}
	for _, tc := range tests {
		if got := hubWindow(tc.feeds); got != tc.want {
			t.Errorf("hubWindow(%d) = %v, want %v", tc.feeds, got, tc.want)
		}
	}
	for f := 1; f < 2*hubCoalesceFeeds; f++ {
		if hubWindow(f+1) < hubWindow(f) {
			t.Fatalf("the window shrinks from %d feeds to %d", f, f+1)
		}
	}
}
