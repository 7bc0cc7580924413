package replication

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
)

// A watch is served in two layers. Each range's events come from one of
// its replicas, leader or follower (Internal.WatchRange, or this node's
// own replica directly): the range feed, which reads the replica's change
// feed (raftstore/events.go) after an index and follows it as it grows.
// The node the client reached runs one feeder per range the watch covers
// and merges their batches into the client's stream, keeping the cursor:
// per range, the index up to which everything has been handed to the
// client. A cursor is only advanced after the events it covers were sent,
// so a progress message never overtakes an event and a client that
// resumes from the last cursor it received gets no gap and no repeat.
//
// A feeder whose replica fails (killed, cut off, removed, too far behind)
// resumes from its own last index on another replica; the replicas hold
// the same log, so the sequence is the same. A split shows up in the
// parent's feed as a split event: the watch starts a feeder for the new
// range from its index 0, whose feed holds every write made to the moved
// keys since.

const (
	// watchBatchEvents and watchBatchBytes bound one batch read from a
	// range feed; with watchQueue they bound a watcher's memory.
	watchBatchEvents = 256
	watchBatchBytes  = 1 << 20
	watchQueue       = 4
	// watchMaxLag is how far behind its leader a replica may fall before
	// its feeders move to another replica.
	watchMaxLag = 10 * time.Second
	// watchRetryMax bounds the wait between a feeder's attempts.
	watchRetryMax = time.Second
	// watchCoalesce is the least time between two batches a range feed
	// sends while writes keep coming: the lag it adds at most.
	watchCoalesce = 5 * time.Millisecond
	// watchMaxRanges bounds the ranges one watch may follow.
	watchMaxRanges = 100000
	// fromNow asks a range feed to start at the replica's applied index.
	fromNow = math.MaxUint64
)

// feedMsg is one batch from a range feeder to its watch.
type feedMsg struct {
	rangeID uint64
	events  []*kvpb.Event // split events included
	upTo    uint64
	state   *kvpb.WatchRangeState
	desc    *kvpb.RangeDescriptor // set on a feed's first batch
	err     error                 // the feeder gave up: the watch ends with it
	// wire, when not nil, is events encoded for the client's stream
	// (rpctypes.EncodeWatchEvent), shared with the node's other watches.
	wire [][]byte
}

// Watch streams the committed writes to req's span, calling send for each
// message, until ctx ends or an error (ErrCompacted, ErrKeyOutOfRange...).
// The first message is a progress message carrying the starting cursor.
// send is never called concurrently.
func (n *Node) Watch(ctx context.Context, req *kvpb.WatchRequest, send func(*rpctypes.WatchMessage) error) error {
	start, end := watchSpan(req)
	cursor, err := rpctypes.ParseWatchCursor(req.From)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadSessionToken, err)
	}
	if len(cursor) > watchMaxRanges {
		return fmt.Errorf("%w: cursor names %d ranges, more than %d", ErrBadSessionToken, len(cursor), watchMaxRanges)
	}
	// A cursor from before a restore names ranges the restored cluster
	// never had: refused, never followed as if nothing happened.
	if err := n.checkRestoredRanges(ctx, cursor); err != nil {
		return err
	}
	interval := req.GetProgressInterval().AsDuration()
	if interval <= 0 {
		interval = time.Second
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &watch{n: n, start: start, end: end, prev: req.PrevValue, in: make(chan feedMsg, watchQueue), cursor: map[uint64]uint64{}, states: map[uint64]*kvpb.WatchRangeState{}, ctx: ctx}
	if len(cursor) > 0 {
		for id, idx := range cursor {
			w.follow(id, idx, nil)
		}
	} else if err := w.startNow(); err != nil {
		return err
	}
	if err := send(&rpctypes.WatchMessage{Resp: w.progress()}); err != nil {
		return err
	}
	for _, m := range w.backlog {
		resp, err := w.absorb(m)
		if err != nil {
			return err
		}
		if resp != nil {
			if err := send(resp); err != nil {
				return err
			}
		}
	}
	w.backlog = nil
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if err := send(&rpctypes.WatchMessage{Resp: w.progress()}); err != nil {
				return err
			}
		case m := <-w.in:
			resp, err := w.absorb(m)
			if err != nil {
				return err
			}
			if resp != nil {
				if err := send(resp); err != nil {
					return err
				}
			}
		}
	}
}

// watchSpan is the keys a watch covers: [start, end), end nil for no end.
func watchSpan(req *kvpb.WatchRequest) (start, end []byte) {
	switch {
	case len(req.Key) > 0:
		return req.Key, append(bytes.Clone(req.Key), 0)
	case len(req.Prefix) > 0:
		return req.Prefix, PrefixEnd(req.Prefix)
	}
	if len(req.End) == 0 {
		return req.Start, nil
	}
	return req.Start, req.End
}

type watch struct {
	n          *Node
	ctx        context.Context
	start, end []byte
	prev       bool
	in         chan feedMsg

	// Owned by the Watch goroutine.
	cursor map[uint64]uint64
	states map[uint64]*kvpb.WatchRangeState
	// backlog keeps, in arrival order, the batches startNow read that
	// the stream must still deliver.
	backlog []feedMsg
}

// overlaps reports whether [s, e) (e empty: no end) meets the watch's span.
func (w *watch) overlaps(s, e []byte) bool {
	if len(e) > 0 && bytes.Compare(e, w.start) <= 0 {
		return false
	}
	return w.end == nil || bytes.Compare(s, w.end) < 0
}

func (w *watch) wants(key []byte) bool {
	return bytes.Compare(key, w.start) >= 0 && (w.end == nil || bytes.Compare(key, w.end) < 0)
}

// follow starts a feeder for range id after index after; hint lists the
// range's replicas when the routing table may not know it yet.
func (w *watch) follow(id, after uint64, hint []string) {
	if after != fromNow {
		w.cursor[id] = after
	}
	go w.n.feed(w.ctx, w.in, id, after, w.start, w.end, w.prev, hint)
}

// startNow starts a feeder at "now" for every range of the span and waits
// for each one's first batch, which fixes its starting index. A range
// split before that index but after the routing table was read shows up
// as keys of the span its replica no longer holds: those are looked up
// again and followed too.
func (w *watch) startNow() error {
	waiting := map[uint64]bool{}
	var covered [][2][]byte
	missing := [][2][]byte{{w.start, w.end}}
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for round := 0; len(missing) > 0; round++ {
		if round >= 100 {
			return fmt.Errorf("%w: the ranges of [%q, %q) kept changing while the watch started", ErrNoLeader, w.start, w.end)
		}
		if round > 0 {
			w.n.routes.invalidate()
		}
		t, err := w.n.routes.get(w.ctx)
		if err != nil {
			// A node that has never read the routing table (a cluster just
			// started: its nodes are ready once their own replicas have
			// leaders) may find the meta range not serving yet: retry
			// until the start's deadline, as for a table that lags.
			select {
			case <-w.ctx.Done():
				return w.ctx.Err()
			case <-deadline.C:
				return err
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		for _, d := range userRanges(t) {
			if _, ok := w.cursor[d.Id]; ok || waiting[d.Id] {
				continue
			}
			for _, m := range missing {
				if spansOverlap(d.Start, d.End, m[0], m[1]) {
					waiting[d.Id] = true
					w.follow(d.Id, fromNow, d.Replicas)
					break
				}
			}
		}
		if len(waiting) == 0 {
			// The routing table lags a split (or a new cluster's first
			// publication): read it again shortly.
			select {
			case <-w.ctx.Done():
				return w.ctx.Err()
			case <-deadline.C:
				return fmt.Errorf("%w: no range known for %d parts of [%q, %q) after 10s", ErrNoLeader, len(missing), w.start, w.end)
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		for len(waiting) > 0 {
			select {
			case <-w.ctx.Done():
				return w.ctx.Err()
			case <-deadline.C:
				return fmt.Errorf("%w: no replica of %d ranges of the watch answered in 10s", ErrNoLeader, len(waiting))
			case m := <-w.in:
				if m.err != nil {
					return m.err
				}
				if !waiting[m.rangeID] || m.desc == nil {
					// A later batch of a range already started: the
					// stream delivers it, in order, after the first
					// progress.
					w.backlog = append(w.backlog, m)
					continue
				}
				delete(waiting, m.rangeID)
				// The replica may have applied more between fixing the
				// start and reading: the cursor starts before the first
				// event, which the stream then delivers.
				w.cursor[m.rangeID] = m.upTo
				if len(m.events) > 0 {
					w.cursor[m.rangeID] = m.events[0].Index - 1
				}
				w.states[m.rangeID] = m.state
				covered = append(covered, [2][]byte{m.desc.Start, m.desc.End})
				if len(m.events) > 0 {
					m.desc = nil
					w.backlog = append(w.backlog, m)
				}
			}
		}
		missing = uncovered(w.start, w.end, covered)
	}
	return nil
}

// absorb takes one feeder batch: the events the client wants, the cursor
// after them, and the new ranges of any split.
func (w *watch) absorb(m feedMsg) (*rpctypes.WatchMessage, error) {
	if m.err != nil {
		return nil, m.err
	}
	if m.state != nil {
		w.states[m.rangeID] = m.state
	}
	if cur, ok := w.cursor[m.rangeID]; ok && m.upTo <= cur && len(m.events) == 0 {
		return nil, nil
	}
	// The feed sends only events of the watch's span, so a batch without
	// a split is normally sent as it came, without copying its slices.
	whole := true
	for _, e := range m.events {
		if e.ChildRange != 0 || !w.wants(e.Key) {
			whole = false
			break
		}
	}
	out, wire := m.events, m.wire
	if !whole {
		out, wire = w.filter(m)
		if err := w.followSplits(m); err != nil {
			return nil, err
		}
	}
	w.cursor[m.rangeID] = max(w.cursor[m.rangeID], m.upTo)
	if len(out) == 0 {
		return nil, nil // progress goes out on the ticker
	}
	resp := &kvpb.WatchResponse{Events: out, Cursor: rpctypes.WatchCursor(w.cursor).String()}
	return &rpctypes.WatchMessage{Resp: resp, Encoded: wire}, nil
}

// filter returns the events of m the watch wants, with their encodings
// when m has them.
func (w *watch) filter(m feedMsg) (out []*kvpb.Event, wire [][]byte) {
	out = make([]*kvpb.Event, 0, len(m.events))
	if m.wire != nil {
		wire = make([][]byte, 0, len(m.events))
	}
	for i, e := range m.events {
		if e.ChildRange == 0 && w.wants(e.Key) {
			out = append(out, e)
			if m.wire != nil {
				wire = append(wire, m.wire[i])
			}
		}
	}
	return out, wire
}

// followSplits starts feeders for the new ranges of m's splits that
// overlap the watch.
func (w *watch) followSplits(m feedMsg) error {
	for _, e := range m.events {
		if e.ChildRange != 0 {
			if _, known := w.cursor[e.ChildRange]; !known && w.overlaps(e.ChildStart, e.ChildEnd) {
				if len(w.cursor) >= watchMaxRanges {
					return fmt.Errorf("%w: the watch follows more than %d ranges", ErrKeyOutOfRange, watchMaxRanges)
				}
				w.follow(e.ChildRange, 0, nil)
			}
		}
	}
	return nil
}

func (w *watch) progress() *kvpb.WatchResponse {
	resp := &kvpb.WatchResponse{Cursor: rpctypes.WatchCursor(w.cursor).String()}
	for id := range w.cursor {
		if st := w.states[id]; st != nil {
			resp.Ranges = append(resp.Ranges, st)
		} else {
			resp.Ranges = append(resp.Ranges, &kvpb.WatchRangeState{RangeId: id})
		}
	}
	return resp
}

func spansOverlap(s1, e1, s2, e2 []byte) bool {
	if len(e1) > 0 && bytes.Compare(e1, s2) <= 0 {
		return false
	}
	return len(e2) == 0 || bytes.Compare(s1, e2) < 0
}

// uncovered returns the parts of [start, end) (end nil: no end) that no
// span in covered holds.
func uncovered(start, end []byte, covered [][2][]byte) [][2][]byte {
	var out [][2][]byte
	pos := start
	for range len(covered) + 1 {
		if end != nil && bytes.Compare(pos, end) >= 0 {
			return out
		}
		// The covered span containing pos that reaches furthest.
		var best []byte
		found := false
		for _, c := range covered {
			if bytes.Compare(c[0], pos) <= 0 && (len(c[1]) == 0 || bytes.Compare(pos, c[1]) < 0) {
				if !found || (len(best) > 0 && (len(c[1]) == 0 || bytes.Compare(c[1], best) > 0)) {
					best, found = c[1], true
				}
			}
		}
		if found {
			if len(best) == 0 {
				return out
			}
			pos = best
			continue
		}
		// pos is not covered: the gap runs to the next covered start.
		var next []byte
		for _, c := range covered {
			if bytes.Compare(c[0], pos) > 0 && (next == nil || bytes.Compare(c[0], next) < 0) {
				next = c[0]
			}
		}
		if next == nil || (end != nil && bytes.Compare(next, end) > 0) {
			return append(out, [2][]byte{pos, end})
		}
		out = append(out, [2][]byte{pos, next})
		pos = next
	}
	return out
}

// feed runs one range's feeder: it reads the range's events after after
// from a replica, this node's own when it has one, and hands them to out
// until ctx ends; when a replica fails it goes on from the last index it
// handed over on another. Only a cursor older than every replica keeps
// ends it (ErrCompacted, sent on out).
func (n *Node) feed(ctx context.Context, out chan<- feedMsg, id, after uint64, start, end []byte, prev bool, hint []string) {
	first := after == fromNow
	backoff := 20 * time.Millisecond
	compacted := map[string]bool{}
	var lastErr error
	for attempt := 0; ctx.Err() == nil && attempt < 1<<20; attempt++ {
		handed := false
		handle := func(resp *kvpb.WatchRangeResponse, wire [][]byte) error {
			m := feedMsg{rangeID: id, events: resp.Events, upTo: resp.UpTo, state: resp.State, wire: wire}
			if first {
				if resp.Range == nil {
					return fmt.Errorf("replication: range %d's first watch batch lacks its descriptor", id)
				}
				m.desc, first = resp.Range, false
			}
			select {
			case out <- m:
			case <-ctx.Done():
				return ctx.Err()
			}
			after, handed = resp.UpTo, true
			return nil
		}
		targets, err := n.feedTargets(ctx, id, hint)
		if err == nil {
			err = errNoReplica
			for _, t := range targets {
				if compacted[t.node] && len(compacted) < len(targets) {
					continue
				}
				err = n.feedFrom(ctx, t, id, after, start, end, prev, handle)
				if ctx.Err() != nil {
					return
				}
				if errors.Is(err, ErrCompacted) {
					compacted[t.node] = true
					if len(compacted) >= len(targets) {
						select {
						case out <- feedMsg{rangeID: id, err: err}:
						case <-ctx.Done():
						}
						return
					}
					continue
				}
				if handed {
					break // it served for a while: start over with the best target
				}
			}
		}
		if handed {
			backoff = 20 * time.Millisecond
			compacted = map[string]bool{}
		}
		if err != nil && !errors.Is(err, lastErr) {
			n.log.Debug("watch feed moving to another replica", "range", id, "after", after, "err", err)
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, watchRetryMax)
	}
}

var errNoReplica = errors.New("replication: no replica of the range is known")

// feedTarget is a replica a feeder may read from.
type feedTarget struct {
	node     string
	raftAddr string // empty for this node's own replica
}

// feedTargets lists range id's replicas, this node's first, then the
// routing table's (or hint's) others.
func (n *Node) feedTargets(ctx context.Context, id uint64, hint []string) ([]feedTarget, error) {
	var remote []feedTarget
	t, err := n.routes.get(ctx)
	if err == nil {
		addrs := map[string]string{}
		for _, node := range t.Nodes {
			addrs[node.Id] = node.RaftAddr
		}
		replicas := hint
		for _, d := range t.Ranges {
			if d.Id == id {
				replicas = append(append([]string{}, d.Replicas...), hint...)
				break
			}
		}
		seen := map[string]bool{n.cfg.NodeID: true}
		for _, r := range replicas {
			if !seen[r] && addrs[r] != "" {
				seen[r] = true
				remote = append(remote, feedTarget{node: r, raftAddr: addrs[r]})
			}
		}
	}
	out := remote
	if n.shardByID(id) != nil {
		self := feedTarget{node: n.cfg.NodeID}
		if n.watchRemoteFirst.Load() {
			out = append(out, self)
		} else {
			out = append([]feedTarget{self}, remote...)
		}
	}
	if len(out) == 0 {
		n.routes.invalidate()
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: range %d", errNoReplica, id)
	}
	return out, nil
}

// feedFrom reads range id's feed from one replica until it fails.
func (n *Node) feedFrom(ctx context.Context, t feedTarget, id, after uint64, start, end []byte, prev bool, handle func(*kvpb.WatchRangeResponse, [][]byte) error) error {
	req := &kvpb.WatchRangeRequest{RangeId: id, After: after, Start: start, End: end, PrevValue: prev}
	if t.raftAddr == "" {
		s := n.shardByID(id)
		if s == nil {
			return fmt.Errorf("%w: range %d left this node", ErrUnknownRange, id)
		}
		return n.serveRangeFeed(ctx, s, req, true, handle)
	}
	conn, err := n.peer(t.raftAddr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := kvpb.NewInternalClient(conn).WatchRange(ctx, req)
	if err != nil {
		return err
	}
	for range 1 << 40 { // ends with the stream
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("replication: %s ended range %d's feed", t.node, id)
			}
			if rpctypes.ReasonOf(err) == rpctypes.ReasonCompacted {
				return fmt.Errorf("%w: %w", ErrCompacted, err)
			}
			return err
		}
		if err := handle(resp, nil); err != nil {
			return err
		}
	}
	return nil
}

// WatchRange streams one range's events after req.After from this node's
// replica (Internal.WatchRange).
func (n *Node) WatchRange(ctx context.Context, req *kvpb.WatchRangeRequest, send func(*kvpb.WatchRangeResponse) error) error {
	s := n.shardByID(req.RangeId)
	if s == nil {
		return fmt.Errorf("%w: range %d has no replica on %s", ErrUnknownRange, req.RangeId, n.cfg.NodeID)
	}
	return n.serveRangeFeed(ctx, s, req, false, func(resp *kvpb.WatchRangeResponse, _ [][]byte) error { return send(resp) })
}

// serveRangeFeed follows one replica's change feed: every batch of events
// after req.After, then each new batch as the replica applies more, and
// an empty batch (progress) at least every second. Split events always
// pass; other events only for keys in [req.Start, req.End). Once caught
// up it reads the batches of the range's hub (feedhub.go), shared with
// every other feed of the range on this node; behind what the hub keeps,
// it reads the replica itself. It ends when ctx does, when the replica
// leaves this node, or when the replica lags its leader by more than
// watchMaxLag (the feeder tries another). With encode, send gets the
// events' encodings for a client's stream when the hub has them.
func (n *Node) serveRangeFeed(ctx context.Context, s *shard.Shard, req *kvpb.WatchRangeRequest, encode bool, send func(*kvpb.WatchRangeResponse, [][]byte) error) error {
	f := s.FSM()
	after := req.After
	first := true
	if after == fromNow {
		after = f.AppliedIndex()
		if floor := f.EventFloor(); after < floor {
			after = floor
		}
	}
	end := req.End
	if len(end) == 0 {
		end = nil
	}
	wanted := func(e *raftstore.Event) bool {
		return e.Type == raftstore.EventSplit || (bytes.Compare(e.Key, req.Start) >= 0 && (end == nil || bytes.Compare(e.Key, end) < 0))
	}
	hub := n.hubs.acquire(n.ctx, s, req.PrevValue, func() bool { return n.shardByID(s.ID()) == s })
	defer n.hubs.release(hub)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastSent, sentUpTo := time.Time{}, after
	for range 1 << 40 { // ends with ctx or the replica
		if n.shardByID(s.ID()) != s {
			return fmt.Errorf("%w: range %d left %s", ErrUnknownRange, s.ID(), n.cfg.NodeID)
		}
		if lag, ok := s.Staleness(time.Now()); ok && lag > watchMaxLag && !s.Asleep() {
			return fmt.Errorf("%w: range %d on %s lags its leader by %v", ErrStaleReplica, s.ID(), n.cfg.NodeID, lag)
		}
		changed := f.Changed()
		resp := &kvpb.WatchRangeResponse{}
		var wire [][]byte
		var upTo uint64
		var hubWake <-chan struct{}
		moreKept := false
		batches, wake, shared := hub.since(after)
		if first {
			shared = false
		}
		if shared {
			hubWake = wake
			resp.Events, wire, upTo, moreKept = takeBatches(batches, after, wanted, encode)
		} else {
			var evs []raftstore.Event
			var desc raftstore.Descriptor
			var err error
			if first {
				evs, upTo, desc, err = f.EventsAndDescriptor(after, watchBatchEvents, watchBatchBytes, req.PrevValue)
			} else {
				evs, upTo, err = f.Events(after, watchBatchEvents, watchBatchBytes, req.PrevValue)
			}
			if err != nil {
				if errors.Is(err, raftstore.ErrCompacted) {
					return fmt.Errorf("%w: %w", ErrCompacted, err)
				}
				return err
			}
			for i := range evs {
				if e := &evs[i]; wanted(e) {
					resp.Events = append(resp.Events, eventPB(s.ID(), e, req.PrevValue))
				}
			}
			if first {
				resp.Range = &kvpb.RangeDescriptor{Id: desc.ID, Start: desc.Start, End: desc.End, Generation: desc.Generation, Replicas: desc.Replicas}
			}
		}
		resp.UpTo = upTo
		// Events outside the span are read past without a message; the
		// position they reach goes out with the next one, or as progress
		// once a second.
		after = upTo
		if first || len(resp.Events) > 0 || (upTo > sentUpTo && time.Since(lastSent) >= time.Second) {
			st := &kvpb.WatchRangeState{RangeId: s.ID(), ServedBy: n.cfg.NodeID, AppliedIndex: f.AppliedIndex()}
			st.StalenessMs = stalenessMS(s.Staleness(time.Now()))
			resp.State = st
			if err := send(resp, wire); err != nil {
				return err
			}
			lastSent, first, sentUpTo = time.Now(), false, upTo
		}
		if hubWake != nil {
			if moreKept {
				continue
			}
			// The hub reads the replica for every feed of the range and
			// wakes them together: wait for its next batch.
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-hubWake:
			case <-tick.C:
			}
			continue
		}
		if upTo < f.AppliedIndex() {
			continue // cut short, or more applied meanwhile: read on at once
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
			// Let a few more writes apply before reading again: one batch
			// of many events costs a watcher far less than many of one.
			if wait := watchCoalesce - time.Since(lastSent); wait > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(wait):
				}
			}
		case <-tick.C:
		}
	}
	return nil
}

// eventPB converts a replica's event for the wire.
func eventPB(rangeID uint64, e *raftstore.Event, prev bool) *kvpb.Event {
	out := &kvpb.Event{RangeId: rangeID, Index: e.Index, Key: e.Key, Lease: int64(e.Lease)}
	switch e.Type {
	case raftstore.EventPut:
		out.Type, out.Value = kvpb.EventType_EVENT_TYPE_PUT, e.Value
	case raftstore.EventDelete:
		out.Type = kvpb.EventType_EVENT_TYPE_DELETE
		switch e.Cause {
		case raftstore.CauseLeaseExpired:
			out.Cause = kvpb.DeleteCause_DELETE_CAUSE_LEASE_EXPIRED
		case raftstore.CauseLeaseRevoked:
			out.Cause = kvpb.DeleteCause_DELETE_CAUSE_LEASE_REVOKED
		default:
			out.Lease = 0
		}
	case raftstore.EventSplit:
		if e.Child != nil {
			out.ChildRange, out.ChildStart, out.ChildEnd = e.Child.ID, e.Child.Start, e.Child.End
			if out.ChildRange == 0 {
				out.ChildRange = math.MaxUint64 // never a real range: keeps the marker visible
			}
		}
	}
	if prev {
		out.PrevValue, out.PrevExists = e.PrevValue, e.PrevExists
	}
	return out
}
