package replication_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/replication"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// watcher runs Node.Watch in the background and collects what it sends.
type watcher struct {
	mu     sync.Mutex
	events []*kvpb.Event
	cursor string
	first  string // the starting cursor
	states map[uint64]*kvpb.WatchRangeState
	done   chan error
	cancel context.CancelFunc
	// encoded counts the messages whose events came encoded once for
	// every watch of the node.
	encoded int
}

func startWatch(t *testing.T, c *testCluster, i int, req *kvpb.WatchRequest) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{done: make(chan error, 1), cancel: cancel}
	started := make(chan struct{})
	go func() {
		w.done <- c.nodes[i].Watch(ctx, req, func(m *rpctypes.WatchMessage) error {
			resp := m.Resp
			// What a gRPC client would decode is the response itself,
			// whether its events were encoded once for every watcher or not.
			wire, err := m.AppendWire(nil)
			if err != nil {
				return err
			}
			var decoded kvpb.WatchResponse
			if err := proto.Unmarshal(wire, &decoded); err != nil || !proto.Equal(&decoded, resp) {
				return fmt.Errorf("the watch message's wire form (%d encodings) decodes to %v (err %v), not %v", len(m.Encoded), &decoded, err, resp)
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if m.Encoded != nil && len(resp.Events) > 0 {
				w.encoded++
			}
			if w.first == "" && len(w.events) == 0 {
				w.first = resp.Cursor
				close(started)
			}
			w.events = append(w.events, resp.Events...)
			w.cursor = resp.Cursor
			for _, st := range resp.Ranges {
				if w.states == nil {
					w.states = map[uint64]*kvpb.WatchRangeState{}
				}
				w.states[st.RangeId] = st
			}
			return nil
		})
	}()
	select {
	case <-started:
	case err := <-w.done:
		t.Fatalf("watch on n%d ended before its first message: %v", i+1, err)
	case <-time.After(15 * time.Second):
		t.Fatalf("watch on n%d sent nothing in 15s", i+1)
	}
	t.Cleanup(cancel)
	return w
}

func (w *watcher) snapshot() ([]*kvpb.Event, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*kvpb.Event(nil), w.events...), w.cursor
}

// ackedWrite is one acknowledged write the watch must deliver.
type ackedWrite struct {
	key, value string
	del        bool
	rangeID    uint64
	index      uint64
}

// checkDelivered holds a watch's events to the watch's promise: every
// acknowledged write exactly once, with its range and index, per range in
// index order, nothing else.
func checkDelivered(t *testing.T, events []*kvpb.Event, writes []ackedWrite) {
	t.Helper()
	type pos struct{ r, i uint64 }
	want := map[pos]ackedWrite{}
	for _, w := range writes {
		want[pos{w.rangeID, w.index}] = w
	}
	seen := map[pos]bool{}
	last := map[uint64]uint64{}
	for _, e := range events {
		p := pos{e.RangeId, e.Index}
		if seen[p] {
			t.Errorf("event %d:%d (%s) delivered twice", e.RangeId, e.Index, e.Key)
		}
		seen[p] = true
		if e.Index <= last[e.RangeId] {
			t.Errorf("range %d: event %d after %d", e.RangeId, e.Index, last[e.RangeId])
		}
		last[e.RangeId] = e.Index
		w, ok := want[p]
		if !ok {
			t.Errorf("event %d:%d %s %q matches no acknowledged write", e.RangeId, e.Index, e.Type, e.Key)
			continue
		}
		if string(e.Key) != w.key || (w.del != (e.Type == kvpb.EventType_EVENT_TYPE_DELETE)) || (!w.del && string(e.Value) != w.value) {
			t.Errorf("event %d:%d = %s %q=%q, the write was %+v", e.RangeId, e.Index, e.Type, e.Key, e.Value, w)
		}
	}
	for p, w := range want {
		if !seen[p] {
			t.Errorf("acknowledged write %+v never delivered", w)
		}
	}
}

func (c *testCluster) watchPut(i int, key, value string) ackedWrite {
	resp := c.mustPut(i, key, value)
	return ackedWrite{key: key, value: value, rangeID: resp.Header.RangeId, index: resp.Header.Revision}
}

func waitEvents(t *testing.T, c *testCluster, w *watcher, n int) {
	t.Helper()
	c.eventually(fmt.Sprintf("watch delivers %d events", n), 20*time.Second, func() bool {
		evs, _ := w.snapshot()
		return len(evs) >= n
	})
}

// A watch on a follower delivers every acknowledged write under its prefix
// once, in order per range, through a split, and a resume from any cursor
// it sent, on another node, continues with no gap and no repeat.
func TestWatch_DeliversEveryWriteOnceAcrossASplitAndAResume(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	f := (l + 1) % 3
	c.mustPut(l, "w/before", "not delivered")
	c.mustPut(l, "other", "not watched")
	w := startWatch(t, c, f, &kvpb.WatchRequest{Prefix: []byte("w/"), PrevValue: true})

	var writes []ackedWrite
	for i := range 20 {
		writes = append(writes, c.watchPut(l, fmt.Sprintf("w/%02d", i), fmt.Sprintf("v%d", i)))
		c.mustPut(l, fmt.Sprintf("x/%02d", i), "outside the prefix")
	}
	del, err := c.nodes[l].Delete(context.Background(), &kvpb.DeleteRequest{Key: []byte("w/03")})
	if err != nil {
		t.Fatal(err)
	}
	writes = append(writes, ackedWrite{key: "w/03", del: true, rangeID: del.Header.RangeId, index: del.Header.Revision})
	waitEvents(t, c, w, len(writes))
	_, mid := w.snapshot()

	c.split(l, "w/10")
	for i := range 20 {
		writes = append(writes, c.watchPut(f, fmt.Sprintf("w/%02d", i), fmt.Sprintf("after split %d", i)))
	}
	waitEvents(t, c, w, len(writes))
	events, cursor := w.snapshot()
	checkDelivered(t, events, writes)
	cur, err := rpctypes.ParseWatchCursor(cursor)
	if err != nil || len(cur) != 2 {
		t.Fatalf("cursor %q after the split: %v, want two ranges", cursor, err)
	}
	// The put over w/03's tombstone has no previous value; the first put
	// of w/00 after the split has v0.
	for _, e := range events {
		if string(e.Key) == "w/00" && string(e.Value) == "after split 0" && (!e.PrevExists || string(e.PrevValue) != "v0") {
			t.Errorf("w/00's second put: prev %q (exists %v), want v0", e.PrevValue, e.PrevExists)
		}
	}

	// Resume from the cursor sent before the split, on another node.
	other := (f + 1) % 3
	r := startWatch(t, c, other, &kvpb.WatchRequest{Prefix: []byte("w/"), From: mid})
	if r.first != mid {
		t.Errorf("resumed watch starts at %q, want %q", r.first, mid)
	}
	var after []ackedWrite
	for _, wr := range writes {
		if mc, _ := rpctypes.ParseWatchCursor(mid); wr.index > mc[wr.rangeID] {
			after = append(after, wr)
		}
	}
	waitEvents(t, c, r, len(after))
	got, _ := r.snapshot()
	checkDelivered(t, got, after)
}

// A cursor older than the replicas keep is COMPACTED, never a silent gap;
// the newest cursor still resumes.
func TestWatch_CursorBelowRetentionIsCompacted(t *testing.T) {
	c := newTestClusterWith(t, 3, func(cfg *replication.Config) { cfg.WatchRetentionBytes = 2 << 10 })
	l := c.leader()
	var last ackedWrite
	for i := range 100 {
		last = c.watchPut(l, fmt.Sprintf("k%03d", i), strings.Repeat("v", 100))
	}
	// Retention is trimmed at each commit of the state machine: wait for
	// every replica to have dropped the first writes.
	c.eventually("every replica trims its feed", 10*time.Second, func() bool {
		for _, n := range c.nodes {
			for _, s := range n.Shards() {
				if s.ID() == last.rangeID && s.FSM().EventFloor() < 10 {
					return false
				}
			}
		}
		return true
	})
	from := fmt.Sprintf("%d:1", last.rangeID)
	err := c.nodes[l].Watch(context.Background(), &kvpb.WatchRequest{Prefix: []byte("k"), From: from}, func(*rpctypes.WatchMessage) error { return nil })
	if !errors.Is(err, replication.ErrCompacted) {
		t.Fatalf("watch from %s: %v, want ErrCompacted", from, err)
	}
	w := startWatch(t, c, l, &kvpb.WatchRequest{Prefix: []byte("k"), From: fmt.Sprintf("%d:%d", last.rangeID, last.index-1)})
	waitEvents(t, c, w, 1)
	got, _ := w.snapshot()
	checkDelivered(t, got, []ackedWrite{last})
}

// A watch whose feed reads another node's replica (here by preference, as
// on a node without a replica): when that node stops, the feed moves to
// another replica and the stream goes on with nothing lost or repeated.
func TestWatch_FeedMovesWhenItsReplicaStops(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	at := (l + 1) % 3
	c.nodes[at].SetWatchRemoteFirstForTest(true)
	w := startWatch(t, c, at, &kvpb.WatchRequest{Prefix: []byte("f/"), ProgressInterval: durationpb.New(50 * time.Millisecond)})
	var writes []ackedWrite
	for i := range 10 {
		writes = append(writes, c.watchPut(l, fmt.Sprintf("f/%02d", i), "before"))
	}
	waitEvents(t, c, w, len(writes))
	var servedBy string
	c.eventually("a progress message names the serving replica", 10*time.Second, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, st := range w.states {
			servedBy = st.ServedBy
		}
		return servedBy != ""
	})
	victim := int(servedBy[1] - '1')
	if victim == at {
		t.Fatalf("n%d's watch reads its own replica although told to prefer others", at+1)
	}
	if victim == l {
		// Keep the writes' leader: stop it only after moving on.
		l = (l + 1) % 3
		if l == victim {
			l = (l + 1) % 3
		}
	}
	c.stop(victim)
	c.eventually("writes go on without the stopped node", 20*time.Second, func() bool {
		_, err := c.put(l, "f/probe", "x")
		if err != nil {
			l = (l + 1) % 3
			if l == victim {
				l = (l + 1) % 3
			}
		}
		return err == nil
	})
	var after []ackedWrite
	for i := range 10 {
		after = append(after, c.watchPut(l, fmt.Sprintf("f/%02d", i), "after"))
	}
	c.eventually("the watch delivers the writes made after the stop", 20*time.Second, func() bool {
		evs, _ := w.snapshot()
		n := 0
		for _, e := range evs {
			if string(e.Value) == "after" {
				n++
			}
		}
		return n == len(after)
	})
	evs, _ := w.snapshot()
	var mine []*kvpb.Event
	for _, e := range evs {
		if string(e.Key) != "f/probe" {
			mine = append(mine, e)
		}
	}
	checkDelivered(t, mine, append(writes, after...))
}

// Watches of one range on one node share one read of its feed per batch
// (one hub per prev_value choice), whenever each started: from now, from
// an older cursor (read from the replica until caught up), with and
// without previous values, while writes go on. Each still gets exactly
// the writes after its starting cursor, once, in order.
func TestWatch_ManyWatchesShareOneFeed(t *testing.T) {
	c := newTestCluster(t, 3)
	l := c.leader()
	f := (l + 1) % 3
	var writes []ackedWrite
	var watchers []*watcher
	var prevs []bool
	for round := range 6 {
		for i := range 10 {
			writes = append(writes, c.watchPut(l, fmt.Sprintf("s/%02d", i), fmt.Sprintf("r%d-%d", round, i)))
		}
		prev := round%2 == 0
		watchers = append(watchers, startWatch(t, c, f, &kvpb.WatchRequest{Prefix: []byte("s/"), PrevValue: prev}))
		prevs = append(prevs, prev)
		if round > 0 {
			// Resume from the first watch's cursor of now: behind the
			// hub's start, caught up through the replica.
			_, cur := watchers[0].snapshot()
			watchers = append(watchers, startWatch(t, c, f, &kvpb.WatchRequest{Prefix: []byte("s/"), From: cur, PrevValue: true}))
			prevs = append(prevs, true)
		}
	}
	if hubs := c.nodes[f].FeedHubsForTest(); hubs > 2 {
		t.Errorf("%d feed hubs on n%d for %d watches of one range, want at most 2 (one per prev_value choice)", hubs, f+1, len(watchers))
	}
	for i := range 30 {
		writes = append(writes, c.watchPut(l, fmt.Sprintf("s/%02d", i%10), fmt.Sprintf("last-%d", i)))
	}
	for wi, w := range watchers {
		start, err := rpctypes.ParseWatchCursor(w.first)
		if err != nil {
			t.Fatalf("watch %d: starting cursor %q: %v", wi, w.first, err)
		}
		var want []ackedWrite
		for _, wr := range writes {
			if wr.index > start[wr.rangeID] {
				want = append(want, wr)
			}
		}
		waitEvents(t, c, w, len(want))
		got, _ := w.snapshot()
		checkDelivered(t, got, want)
		w.mu.Lock()
		encoded := w.encoded
		w.mu.Unlock()
		if encoded == 0 {
			t.Errorf("watch %d: no message carried the hub's shared encodings", wi)
		}
		// Each key's previous value is the write before it, when asked.
		last := map[string]string{}
		for _, wr := range writes {
			if wr.index <= start[wr.rangeID] {
				last[wr.key] = wr.value
			}
		}
		for _, e := range got {
			p, had := last[string(e.Key)]
			switch {
			case prevs[wi] && (e.PrevExists != had || string(e.PrevValue) != p):
				t.Errorf("watch %d: event %d %q: prev %q (exists %v), want %q (exists %v)", wi, e.Index, e.Key, e.PrevValue, e.PrevExists, p, had)
			case !prevs[wi] && (e.PrevExists || len(e.PrevValue) > 0):
				t.Errorf("watch %d without prev_value: event %d %q carries prev %q", wi, e.Index, e.Key, e.PrevValue)
			}
			last[string(e.Key)] = string(e.Value)
		}
	}
}

// A range feed behind its hub (a slow reader) still sends messages
// within the batch limits, as one reading the replica itself does: no
// message nears a client's 4 MiB receive limit. (A found bug: 7.7 MB.)
func TestWatch_SlowFeedMessagesStayWithinTheBatchLimit(t *testing.T) {
	c := newTestCluster(t, 1)
	l := c.leader()
	first := c.watchPut(l, "big/0", "x")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	largest, total := 0, 0
	done := make(chan error, 1)
	go func() {
		done <- c.nodes[l].WatchRange(ctx, &kvpb.WatchRangeRequest{RangeId: first.rangeID, After: first.index, Start: []byte("big/"), End: []byte("big0"), PrevValue: true}, func(r *kvpb.WatchRangeResponse) error {
			mu.Lock()
			largest = max(largest, proto.Size(r))
			total += len(r.Events)
			mu.Unlock()
			// A slow peer: the hub's batches pile up meanwhile.
			select {
			case <-time.After(400 * time.Millisecond):
			case <-ctx.Done():
			}
			return nil
		})
	}()
	val := strings.Repeat("v", 16<<10)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				if _, err := c.put(l, fmt.Sprintf("big/%02d/%03d", g, i%8), val+fmt.Sprint(i)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	c.eventually("every event delivered", 60*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return total >= 16*30
	})
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d events, largest message %d bytes", total, largest)
	if total != 16*30 {
		t.Errorf("%d events delivered, want %d", total, 16*30)
	}
	// The batch limit, plus the one event a read may pass it by (16 KiB
	// and its 16 KiB previous value), plus the wire's own bytes.
	if limit := 1<<20 + 48<<10; largest > limit {
		t.Errorf("a range feed message of %d bytes, over %d (the 1 MiB batch limit and one event)", largest, limit)
	}
}

// A watch opened on every node the moment a cluster starts (before any
// node has read the routing table) starts, instead of failing because the
// meta range is not serving yet, and then delivers a write.
func TestWatch_OpenedAsTheClusterStartsStarts(t *testing.T) {
	c := newTestCluster(t, 3)
	var ws []*watcher
	for i := range c.nodes {
		ws = append(ws, startWatch(t, c, i, &kvpb.WatchRequest{Prefix: []byte("w/")}))
	}
	c.mustPut(c.leader(), "w/1", "v")
	for i, w := range ws {
		c.eventually(fmt.Sprintf("n%d's watch delivering the write", i+1), 20*time.Second, func() bool {
			evs, _ := w.snapshot()
			return len(evs) == 1 && string(evs[0].Key) == "w/1"
		})
	}
}
