package replication

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
)

// Clearing an ended lease's keys. The keys may be in any range, so a
// revoke is answered only when the whole user key space is known to hold
// none of them: every span is vouched for by its range's leader, which
// found none at a read index or committed a revoke in it, or, for a
// sleeping range, by a majority of the voters it had when it went to
// sleep, each asleep and holding none (a put committed since reached a
// majority of those voters, which it woke, and a replica asleep again had
// applied it). Spans, not range ids, are what is counted: a range that
// split during the revoke vouches only for what it still held, and the
// rest is found through the new range.
//
// Asking each node once for "the ranges it leads", as the first version
// did, is not enough: during an election nobody leads a range, and a
// leader just elected may not have applied a put yet (a Jepsen run read a
// key 0.4 s after its lease's revoke was answered).
//
// A put whose lease check passed just before the lease ended is fenced or
// waited for by the node proposing it before that node vouches for
// anything (leaseWrites).

const (
	// clearRounds bounds a revoke's rounds of asking; the expiry path
	// runs one and leaves the rest to the sweeps.
	clearRounds = 12
	// clearTryTimeout bounds one node's answer, so that a node that does
	// not answer leaves time to ask another.
	clearTryTimeout = 2 * time.Second
	// clearParallel bounds the ranges a node reads or revokes at once,
	// clearGapParallel the ranges a revoke asks one by one at once.
	clearParallel    = 8
	clearGapParallel = 16
	// leaseClearFeature: the node's LeaseRevokeLocal answers which spans
	// it cleared. Until every node has it, a range a node of the previous
	// release answered for without error counts as cleared, as that
	// release counted it.
	leaseClearFeature = "lease-clear-v1"
)

// clearContext leaves a quarter of ctx's time (10 s when it has no
// deadline) for the answer, so that a revoke that could not clear every
// range says so instead of running out of time.
func clearContext(ctx context.Context) (context.Context, context.CancelFunc) {
	d := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl) * 3 / 4
	}
	return context.WithTimeout(ctx, d)
}

// clearLeaseKeys deletes lease id's keys in every range and returns how
// many went. It fails (ErrIndeterminate: the lease has ended, its keys may
// not all be gone yet) when some span could not be vouched for within
// rounds or ctx; the sweeps delete what is left once the ranges have
// leaders. fresh reads the routing table from the meta range (a revoke);
// otherwise a cached one will do (an expiry).
func (n *Node) clearLeaseKeys(ctx context.Context, id uint64, cause raftstore.DeleteCause, rounds int, fresh bool) (int64, error) {
	var cov spanCover
	var deleted int64
	var err error
	backoff := 50 * time.Millisecond
	for round := 0; round < rounds; round++ {
		if round > 0 {
			select {
			case <-ctx.Done():
				return deleted, n.clearIncomplete(id, &cov, ctx.Err())
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
		var t *kvpb.RangesResponse
		if fresh {
			t, err = n.fetchRoutes(ctx)
		}
		if t == nil {
			t, err = n.routes.get(ctx)
		}
		if err != nil {
			continue // the meta range is electing: the next round
		}
		// Nodes of a release before lease-clear-v1 answer without spans.
		old, addrs := map[string]bool{}, map[string]string{}
		for _, ni := range t.Nodes {
			addrs[ni.Id] = ni.RaftAddr
			if ni.State != NodeRemoved && !slices.Contains(ni.Features, leaseClearFeature) {
				old[ni.Id] = true
			}
		}
		asked := n.askNodesToClear(ctx, t, id, cause)
		deleted += asked.deleted
		cov.add(asked.cleared...)
		cov.add(asleepMajorities(asked.asleep)...)
		if cov.complete() {
			return deleted, nil
		}
		// The ranges over the gaps, through their replicas: each forwards
		// a revoke to the range's leader, or waits for one to be elected.
		targets := gapRanges(&cov, t, asked.hosted)
		var mu sync.Mutex
		var wg sync.WaitGroup
		sem := make(chan struct{}, clearGapParallel)
		for _, tg := range targets {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				got, spans, err := n.clearRange(ctx, addrs, tg, id, cause, old)
				if err != nil {
					return
				}
				mu.Lock()
				defer mu.Unlock()
				deleted += got
				cov.add(spans...)
			}()
		}
		wg.Wait()
		if cov.complete() {
			return deleted, nil
		}
	}
	return deleted, n.clearIncomplete(id, &cov, err)
}

// clearIncomplete is clearLeaseKeys' answer when some span was never
// vouched for.
func (n *Node) clearIncomplete(id uint64, cov *spanCover, cause error) error {
	msg := fmt.Sprintf("lease %d ended, but its keys in %s are not confirmed deleted (no leader of those keys answered); each range's sweep deletes them once it has a leader", id, cov.gaps())
	if cause != nil {
		return fmt.Errorf("%w: %s (last: %v)", shard.ErrIndeterminate, msg, cause)
	}
	return fmt.Errorf("%w: %s", shard.ErrIndeterminate, msg)
}

// clearTarget is a range over a gap: whom to ask (the last known leader
// first) and the span it was last seen with.
type clearTarget struct {
	d     *kvpb.RangeDescriptor
	nodes []string
}

// gapRanges lists the ranges, from the table and from what nodes said
// they host, whose spans overlap a gap of cov.
func gapRanges(cov *spanCover, t *kvpb.RangesResponse, hosted map[uint64]*hostedRange) []clearTarget {
	byID := map[uint64]*clearTarget{}
	for _, d := range t.Ranges {
		if d.Id != raftstore.MetaRangeID && cov.overlapsGap(d) {
			byID[d.Id] = &clearTarget{d: d, nodes: append([]string{d.Leader}, d.Replicas...)}
		}
	}
	for rid, h := range hosted {
		if !cov.overlapsGap(h.d) {
			continue
		}
		if tg := byID[rid]; tg != nil {
			tg.nodes = append(tg.nodes, h.nodes...)
			if h.d.Generation > tg.d.Generation {
				tg.d = h.d
			}
		} else {
			byID[rid] = &clearTarget{d: h.d, nodes: h.nodes}
		}
	}
	out := make([]clearTarget, 0, len(byID))
	for _, tg := range byID {
		out = append(out, *tg)
	}
	return out
}

// hostedRange is a range as the nodes hosting a replica of it described
// it (the highest generation seen).
type hostedRange struct {
	d     *kvpb.RangeDescriptor
	nodes []string
}

// nodesCleared is what the nodes answered.
type nodesCleared struct {
	deleted int64
	cleared []*kvpb.RangeDescriptor
	asleep  []asleepVote
	hosted  map[uint64]*hostedRange
}

// asleepVote is one node's sleeping replica holding none of the keys.
type asleepVote struct {
	node string
	d    *kvpb.RangeDescriptor // Replicas: the range's voters at sleep
}

// asleepMajorities returns the spans that a majority of their range's
// voters at sleep vouch for, all with the same descriptor, voters and
// leader, the leader among them: a put its leader appended as the range
// went to sleep may be in no follower's log (a follower holding it does
// not vouch), and the leader, which does not vouch when its log holds
// more than its sleep's entry, may commit it when the range wakes.
func asleepMajorities(votes []asleepVote) []*kvpb.RangeDescriptor {
	type group struct {
		d      *kvpb.RangeDescriptor
		voters map[string]bool
	}
	groups := map[string]*group{}
	for _, v := range votes {
		voters := slices.Sorted(slices.Values(v.d.Replicas))
		key := fmt.Sprintf("%d/%d/%x/%x/%s/%s", v.d.Id, v.d.Generation, v.d.Start, v.d.End, strings.Join(voters, ","), v.d.Leader)
		g := groups[key]
		if g == nil {
			g = &group{d: v.d, voters: map[string]bool{}}
			groups[key] = g
		}
		if slices.Contains(voters, v.node) { // a replica removed from the range does not vote
			g.voters[v.node] = true
		}
	}
	var out []*kvpb.RangeDescriptor
	for _, g := range groups {
		if len(g.d.Replicas) > 0 && len(g.voters) > len(g.d.Replicas)/2 && g.voters[g.d.Leader] {
			out = append(out, g.d)
		}
	}
	return out
}

// askNodesToClear asks every node to clear lease id's keys in the ranges
// it leads and to say which of its sleeping replicas hold none.
func (n *Node) askNodesToClear(ctx context.Context, t *kvpb.RangesResponse, id uint64, cause raftstore.DeleteCause) nodesCleared {
	req := &kvpb.LeaseRevokeLocalRequest{Id: int64(id), Cause: causePB(cause)}
	var mu sync.Mutex
	out := nodesCleared{hosted: map[uint64]*hostedRange{}}
	var wg sync.WaitGroup
	for _, node := range t.Nodes {
		if node.State == NodeRemoved {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			tctx, cancel := context.WithTimeout(ctx, clearTryTimeout)
			resp, err := n.revokeLocalOn(tctx, node.Id, node.RaftAddr, req)
			cancel()
			if err != nil {
				n.log.Info("lease keys on a node: its ranges are tried one by one", "lease", id, "node", node.Id, "err", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			out.deleted += resp.KeysDeleted
			out.cleared = append(out.cleared, resp.Cleared...)
			for _, d := range resp.AsleepClear {
				out.asleep = append(out.asleep, asleepVote{node: node.Id, d: d})
			}
			for _, d := range resp.Hosted {
				h := out.hosted[d.Id]
				if h == nil {
					h = &hostedRange{d: d}
					out.hosted[d.Id] = h
				} else if d.Generation > h.d.Generation {
					h.d = d
				}
				h.nodes = append(h.nodes, node.Id)
			}
		}()
	}
	wg.Wait()
	return out
}

// clearRange commits a revoke of lease id in range tg through one of its
// nodes, which forwards it to the range's leader, and returns the keys
// deleted and the spans vouched for. A node of the previous release
// (old) answers without spans: its answer vouches for the span the range
// was last seen with, which is what that release promised (during a
// rolling upgrade, a revoke is as strong as the oldest node makes it).
func (n *Node) clearRange(ctx context.Context, addrs map[string]string, tg clearTarget, id uint64, cause raftstore.DeleteCause, old map[string]bool) (int64, []*kvpb.RangeDescriptor, error) {
	req := &kvpb.LeaseRevokeLocalRequest{Id: int64(id), Cause: causePB(cause), RangeId: tg.d.Id}
	err := fmt.Errorf("%w: range %d lists no replicas", ErrNoLeader, tg.d.Id)
	seen := map[string]bool{}
	for _, nid := range tg.nodes {
		if nid == "" || seen[nid] {
			continue
		}
		seen[nid] = true
		tctx, cancel := context.WithTimeout(ctx, clearTryTimeout)
		var resp *kvpb.LeaseRevokeLocalResponse
		resp, err = n.revokeLocalOn(tctx, nid, addrs[nid], req)
		cancel()
		if err == nil {
			if len(resp.Cleared) == 0 && old[nid] {
				return resp.KeysDeleted, []*kvpb.RangeDescriptor{tg.d}, nil
			}
			return resp.KeysDeleted, resp.Cleared, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return 0, nil, err
}

// revokeLocalOn runs Internal.LeaseRevokeLocal on node nid (here when it
// is this node).
func (n *Node) revokeLocalOn(ctx context.Context, nid, raftAddr string, req *kvpb.LeaseRevokeLocalRequest) (*kvpb.LeaseRevokeLocalResponse, error) {
	if nid == n.cfg.NodeID {
		return n.LeaseRevokeLocal(ctx, req)
	}
	if raftAddr == "" {
		return nil, fmt.Errorf("%w: %s", ErrUnknownNode, nid)
	}
	conn, err := n.peer(raftAddr)
	if err != nil {
		return nil, err
	}
	return kvpb.NewInternalClient(conn).LeaseRevokeLocal(ctx, req)
}

// LeaseRevokeLocal deletes a lease's keys (Internal.LeaseRevokeLocal).
// Without a range id: in every range this node leads, answering with the
// spans it cleared, its sleeping replicas that hold none of the keys, and
// every range it hosts. With one: in that range, through its leader,
// failing when this node holds no replica of it.
func (n *Node) LeaseRevokeLocal(ctx context.Context, req *kvpb.LeaseRevokeLocalRequest) (*kvpb.LeaseRevokeLocalResponse, error) {
	id, cause := uint64(req.Id), causeOf(req.Cause)
	// This node's puts with the lease settle first: the read indexes and
	// sleeping replicas below then cover their entries (leaseWrites).
	if err := n.leaseWrites.drain(ctx, id); err != nil {
		return nil, fmt.Errorf("%w: waiting for this node's puts with lease %d: %w", shard.ErrIndeterminate, id, err)
	}
	shards := n.Shards()
	if req.RangeId != 0 {
		i := slices.IndexFunc(shards, func(s *shard.Shard) bool { return s.ID() == req.RangeId })
		if i < 0 || req.RangeId == raftstore.MetaRangeID {
			return nil, fmt.Errorf("%w: range %d has no replica on node %s", ErrUnknownRange, req.RangeId, n.cfg.NodeID)
		}
		deleted, span, err := n.revokeInRange(ctx, shards[i], id, cause)
		if err != nil {
			return nil, err
		}
		resp := &kvpb.LeaseRevokeLocalResponse{KeysDeleted: int64(deleted)}
		if span != nil {
			resp.Cleared = []*kvpb.RangeDescriptor{span}
		}
		return resp, nil
	}
	// Answer with what is done by a soft deadline, so that one slow range
	// does not cost the caller every other range's answer.
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-time.Until(dl)/5))
		defer cancel()
	}
	resp := &kvpb.LeaseRevokeLocalResponse{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, clearParallel)
	for _, s := range shards {
		if s.ID() == raftstore.MetaRangeID {
			continue
		}
		d := s.Descriptor()
		resp.Hosted = append(resp.Hosted, spanPB(d, nil))
		if voters, leader, epoch, ok := s.Sleeping(); ok {
			locked, keys, err := leaseLeft(s, id)
			if err != nil {
				continue
			}
			if !keys && !locked {
				// Vouched for only if it slept throughout.
				if _, _, e, still := s.Sleeping(); still && e == epoch && s.Descriptor().Generation == d.Generation {
					span := spanPB(d, voters)
					span.Leader = leader
					resp.AsleepClear = append(resp.AsleepClear, span)
				}
				continue
			}
			if leader != n.cfg.NodeID {
				continue // its last leader wakes it
			}
		} else if !s.IsLeader() {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			deleted, span := n.clearLedRange(ctx, s, id, cause)
			mu.Lock()
			defer mu.Unlock()
			resp.KeysDeleted += deleted
			if span != nil {
				resp.Cleared = append(resp.Cleared, span)
			}
		}()
	}
	wg.Wait()
	return resp, nil
}

// clearLedRange clears lease id's keys in range s, which this node leads
// (or last led, asleep with some of them), and returns the span vouched
// for (nil: none). A leader just elected may not have applied every put
// it holds; the read index waits for that, without counting as activity
// that keeps the range from hibernating.
func (n *Node) clearLedRange(ctx context.Context, s *shard.Shard, id uint64, cause raftstore.DeleteCause) (int64, *kvpb.RangeDescriptor) {
	if !s.Asleep() {
		d := s.Descriptor()
		if _, err := s.ReadIndexIdle(ctx); err != nil {
			return 0, nil
		}
		locked, keys, err := leaseLeft(s, id)
		if err != nil || locked {
			// A lock's key appears when it resolves: asked again next
			// round.
			return 0, nil
		}
		if !keys {
			if s.Descriptor().Generation != d.Generation {
				return 0, nil // split or merged meanwhile: asked again
			}
			return 0, spanPB(d, nil)
		}
	}
	deleted, span, err := n.revokeInRange(ctx, s, id, cause)
	if err != nil {
		n.log.Info("lease keys of a range not deleted yet", "lease", id, "range", s.ID(), "err", err)
		return 0, nil
	}
	return int64(deleted), span
}

// spanPB is d's id, span and generation (and voters, when given) as
// LeaseRevokeLocal answers them.
func spanPB(d raftstore.Descriptor, voters []string) *kvpb.RangeDescriptor {
	return &kvpb.RangeDescriptor{Id: d.ID, Start: bytes.Clone(d.Start), End: bytes.Clone(d.End), Generation: d.Generation, Replicas: voters}
}

// finishEndedLease answers a revoke of a lease that had already ended
// (notFound): once its keys are known gone, with notFound; before, with
// why they are not.
func (n *Node) finishEndedLease(ctx context.Context, s *shard.Shard, id uint64, notFound error) error {
	rec, v, err := readLeaseLocal(s, id)
	if v == nil || err == nil || rec.state == leaseAlive {
		return notFound // never granted, or alive again: nothing to finish
	}
	cause := raftstore.CauseLeaseRevoked
	if rec.state == leaseExpired {
		cause = raftstore.CauseLeaseExpired
	}
	cctx, cancel := clearContext(ctx)
	defer cancel()
	if _, err := n.clearLeaseKeys(cctx, id, cause, clearRounds, true); err != nil {
		return err
	}
	return notFound
}

// spanCover is the union of the spans vouched for so far, over the user
// key space ["", end).
type spanCover struct {
	spans []*kvpb.RangeDescriptor // sorted by start, merged
}

func (c *spanCover) add(ds ...*kvpb.RangeDescriptor) {
	for _, d := range ds {
		if d == nil {
			continue
		}
		c.spans = append(c.spans, &kvpb.RangeDescriptor{Start: d.Start, End: d.End})
	}
	slices.SortFunc(c.spans, func(a, b *kvpb.RangeDescriptor) int { return bytes.Compare(a.Start, b.Start) })
	merged := c.spans[:0]
	for _, s := range c.spans {
		if k := len(merged); k > 0 && (len(merged[k-1].End) == 0 || bytes.Compare(s.Start, merged[k-1].End) <= 0) {
			if len(merged[k-1].End) != 0 && (len(s.End) == 0 || bytes.Compare(s.End, merged[k-1].End) > 0) {
				merged[k-1].End = s.End
			}
			continue
		}
		merged = append(merged, s)
	}
	c.spans = merged
}

// complete reports whether the whole key space is covered.
func (c *spanCover) complete() bool {
	return len(c.spans) == 1 && len(c.spans[0].Start) == 0 && len(c.spans[0].End) == 0
}

// gapList returns the uncovered spans, in order (an empty End: to the
// end of the key space).
func (c *spanCover) gapList() []*kvpb.RangeDescriptor {
	var out []*kvpb.RangeDescriptor
	at := []byte{}
	for _, s := range c.spans {
		if bytes.Compare(s.Start, at) > 0 {
			out = append(out, &kvpb.RangeDescriptor{Start: at, End: s.Start})
		}
		if len(s.End) == 0 {
			return out
		}
		at = s.End
	}
	return append(out, &kvpb.RangeDescriptor{Start: at})
}

// overlapsGap reports whether d's span meets an uncovered one.
func (c *spanCover) overlapsGap(d *kvpb.RangeDescriptor) bool {
	for _, g := range c.gapList() {
		startsBeforeGapEnds := len(g.End) == 0 || bytes.Compare(d.Start, g.End) < 0
		endsAfterGapStarts := len(d.End) == 0 || bytes.Compare(d.End, g.Start) > 0
		if startsBeforeGapEnds && endsAfterGapStarts {
			return true
		}
	}
	return false
}

// gaps describes the uncovered spans for an error message.
func (c *spanCover) gaps() string {
	var parts []string
	for _, g := range c.gapList() {
		end := fmt.Sprintf("%q", g.End)
		if len(g.End) == 0 {
			end = "end"
		}
		parts = append(parts, fmt.Sprintf("[%q, %s)", g.Start, end))
	}
	return strings.Join(parts, ", ")
}
