package replication

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/api/rpctypes"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
	"google.golang.org/grpc/metadata"
)

// A session token records, per range, the highest log index a client has
// seen: "2:1042" or, across ranges, "2:1042,7:88". A session read on range r
// may be served by any replica of r that has applied at least token[r]; the
// answer carries the token advanced to what that replica had applied, with
// the other entries as they came.
//
// The token comes from the client, so a node checks it before it waits on
// it or hands it back:
//
//   - It names at most one entry per range of the cluster: as many as the
//     node knows of, plus sessionSlack for ranges split off since its view
//     was taken. A longer token (ranges that do not exist) is refused with
//     INVALID_ARGUMENT rather than echoed; the text is refused on its
//     length (maxEntryLen bytes an entry) before it is split.
//   - Entries for the meta range and entries at index 0 are dropped: no
//     session read consults them.
//   - An entry for a range the node cannot place is kept: a range split off
//     a moment ago may be missing from its view, and dropping the entry
//     would let a later read of that range go back in time.
//   - The entry of the range being read is checked when the replica's log
//     does not hold it: an index beyond the range's commit index (a token
//     from another cluster, from before a restore, or altered) is refused
//     at once with INVALID_ARGUMENT, instead of waiting sessionWait and
//     failing STALE_REPLICA. Every index a token may rightly carry was
//     committed before the token was handed out, and the leader's read
//     index (confirmed with a quorum, after the leader committed an entry
//     of its own term) is at least every index committed before it was
//     asked (sessionReady).
//
// Splits. Range ids are never reused and there are no merges. The parent
// of a split keeps its id and its log; the new range starts a log of its
// own, and each of its replicas is created when its node applies the
// split, holding every write the parent applied before it. So an entry for
// the parent still guards the keys that moved (any replica of the new
// range is at least as new as the split), and entries for the new range
// count in the new range's log. The other way round needs care: a replica
// of the parent that has not applied the split still holds the keys that
// moved, at their value before the split, and the token's parent entry
// may well be met; serving them would hide the session's writes to the
// new range. So a session read whose token names another range that
// overlaps the keys the serving replica would answer for (or a range the
// node cannot place) first catches the replica up to its leader's read
// index, which covers every split committed before the token was handed
// out; the keys that moved are then refused as WRONG_RANGE and the read is
// routed to the new range (sessionReady).
//
// The token's format (parsing, merging, its text) is rpctypes.SessionToken,
// which clients share; what a node accepts of one is checked here.
type sessionToken = rpctypes.SessionToken

const (
	// sessionSlack is how many entries beyond the ranges a node knows of a
	// token may carry: the ranges split off since the node's view.
	sessionSlack = 256
	// maxEntryLen is the longest entry: two 20-digit numbers, ':' and ','.
	maxEntryLen = 42
)

// parseSessionToken parses s. limit says how many ranges a token may
// name; it is asked only of a token with more than sessionSlack entries,
// so that the common short token costs no look at the node's ranges.
func parseSessionToken(s string, limit func() int) (sessionToken, error) {
	if s == "" {
		return sessionToken{}, nil
	}
	maxEntries := sessionSlack
	if len(s) > sessionSlack*maxEntryLen || strings.Count(s, ",") >= sessionSlack {
		maxEntries = max(limit(), sessionSlack)
	}
	if len(s) > maxEntries*maxEntryLen {
		return nil, fmt.Errorf("%w: %d bytes, longer than a token of %d ranges (the ranges this node knows of and %d more) can be", ErrBadSessionToken, len(s), maxEntries, sessionSlack)
	}
	if n := strings.Count(s, ",") + 1; n > maxEntries {
		return nil, fmt.Errorf("%w: %d entries, more than %d; a token names each range once, and may name the ranges this node knows of and %d more", ErrBadSessionToken, n, maxEntries, sessionSlack)
	}
	t, err := rpctypes.ParseSessionToken(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSessionToken, err)
	}
	delete(t, raftstore.MetaRangeID) // no session read consults it
	return t, nil
}

// sessionLimit is how many entries a token given to this node may carry.
func (n *Node) sessionLimit() int {
	n.mu.RLock()
	known := len(n.shards)
	n.mu.RUnlock()
	n.routes.mu.Lock()
	if t := n.routes.table; t != nil {
		known = max(known, len(t.Ranges))
	}
	n.routes.mu.Unlock()
	return known + sessionSlack
}

// readSpan is the keys a read covers: the key of a Get (point), or a
// scan's [start, end), end nil for no bound.
type readSpan struct {
	start, end []byte
	point      bool
}

// overlaps reports whether the span shares a key with [start, end), an
// empty end being no bound.
func (sp readSpan) overlaps(start, end []byte) bool {
	if sp.point {
		return bytes.Compare(sp.start, start) >= 0 && (len(end) == 0 || bytes.Compare(sp.start, end) < 0)
	}
	return (len(end) == 0 || bytes.Compare(sp.start, end) < 0) && (sp.end == nil || bytes.Compare(start, sp.end) < 0)
}

// sessionReady waits, up to sessionWait, until s may serve a session read
// of span with token: caught up past any split the session has seen
// (mayBeBehindASplit), and with token[s] applied.
func (n *Node) sessionReady(ctx context.Context, s *shard.Shard, tok sessionToken, span readSpan) error {
	if err := n.checkRestoredRanges(ctx, tok); err != nil {
		return err
	}
	need := tok[s.ID()]
	if !span.point {
		d := s.Descriptor()
		span.start, span.end = d.Clamp(span.start, span.end)
	}
	split := n.mayBeBehindASplit(ctx, s, tok, span)
	if !split && s.FSM().AppliedIndex() >= need {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, sessionWait)
	defer cancel()
	// An index beyond this replica's log is checked against the range's
	// commit index, so that a token no history of the range can have
	// produced is refused at once instead of waited on.
	if split || need > s.Raft().LastIndex() {
		committed, err := n.leaderReadIndex(wctx, s)
		switch {
		case err == nil && need > committed:
			return fmt.Errorf("%w: it names index %d of range %d, which has committed only up to %d: the token is not from this range's history (another cluster, a restore, or altered)",
				ErrBadSessionToken, need, s.ID(), committed)
		case err == nil && split:
			// Past every split committed before the token was handed out.
			need = max(need, committed)
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case split:
			return fmt.Errorf("%w: range %d on %s cannot tell whether it has applied a split the session has seen: %w", ErrSessionNotMet, s.ID(), n.cfg.NodeID, err)
		default:
			// Nothing proven either way: wait for the index as named.
			n.log.Debug("cannot check a session index against the range's commit index", "range", s.ID(), "need", need, "err", err)
		}
	}
	if err := s.FSM().WaitApplied(wctx, need); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w: range %d applied %d, session needs %d", ErrSessionNotMet, s.ID(), s.FSM().AppliedIndex(), need)
	}
	return nil
}

// mayBeBehindASplit reports whether s might still hold keys of span that a
// split has moved to a range the token names. A split only narrows a range
// and nothing merges, so a range whose span, in this node's replica or in
// its routing table however old, lies clear of span is no concern; one
// that overlaps it, or one this node cannot place even after refreshing
// its table, may have been split off s.
func (n *Node) mayBeBehindASplit(ctx context.Context, s *shard.Shard, tok sessionToken, span readSpan) bool {
	var elsewhere []uint64
	for id := range tok {
		if id == s.ID() {
			continue
		}
		if o := n.shardByID(id); o != nil {
			if d := o.Descriptor(); span.overlaps(d.Start, d.End) {
				return true
			}
			continue
		}
		elsewhere = append(elsewhere, id)
	}
	if len(elsewhere) == 0 {
		return false
	}
	n.routes.mu.Lock()
	t := n.routes.table
	n.routes.mu.Unlock()
	for refreshed := false; ; refreshed = true {
		ranges := map[uint64]*kvpb.RangeDescriptor{}
		if t != nil {
			for _, d := range t.Ranges {
				ranges[d.Id] = d
			}
		}
		unknown := false
		for _, id := range elsewhere {
			d, ok := ranges[id]
			if !ok {
				unknown = true
				continue
			}
			if span.overlaps(d.Start, d.End) {
				return true
			}
		}
		if !unknown || refreshed {
			return unknown
		}
		// A range split off a moment ago; at most one fetch per routeTTL.
		fresh, err := n.routes.get(ctx)
		if err != nil {
			return true
		}
		t = fresh
	}
}

// leaderReadIndex returns the read index of s's range from its leader:
// this replica's own, or the one the leader it knows of (or waits for)
// answers.
func (n *Node) leaderReadIndex(ctx context.Context, s *shard.Shard) (uint64, error) {
	id, addr, err := s.WaitLeader(ctx)
	switch {
	case err != nil:
		return 0, fmt.Errorf("%w for range %d: %w", ErrNoLeader, s.ID(), err)
	case id == n.cfg.NodeID:
		return s.ConfirmReadIndex(ctx)
	}
	conn, err := n.peer(addr)
	if err != nil {
		return 0, err
	}
	ctx = metadata.AppendToOutgoingContext(ctx, rpctypes.ForwardedHeader, n.cfg.NodeID)
	resp, err := kvpb.NewInternalClient(conn).ReadIndex(ctx, &kvpb.ReadIndexRequest{RangeIds: []uint64{s.ID()}})
	if err != nil {
		return 0, fmt.Errorf("read index of range %d from %s: %w", s.ID(), addr, err)
	}
	if len(resp.Ranges) != 1 || resp.Ranges[0].RangeId != s.ID() {
		return 0, fmt.Errorf("read index of range %d from %s: answer for %d ranges", s.ID(), addr, len(resp.Ranges))
	}
	if e := resp.Ranges[0].Error; e != "" {
		return 0, fmt.Errorf("read index of range %d from %s: %s", s.ID(), addr, e)
	}
	return resp.Ranges[0].Index, nil
}
