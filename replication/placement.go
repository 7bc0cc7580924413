package replication

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
	"github.com/dialkv/dialkv/shard"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
)

// Placement keeps every range at its replication factor on live, active
// nodes and spreads replicas and leaders evenly. The leader of the meta
// range drives it: every placementInterval it reads the routing table,
// probes the nodes, and asks range leaders for at most maxMovesPerRound
// changes (ChangeReplicas). A range leader adds a replica as a non-voter,
// waits for it to catch up, then promotes it; only after that does the
// driver remove a surplus replica, so a range never drops below its
// replication factor while enough healthy nodes exist.
const (
	placementInterval  = time.Second
	maxMovesPerRound   = 4
	catchUpTimeout     = 60 * time.Second
	leaderMoveInterval = 10 * time.Second
	// deadNodeTimeout is how long a node must be unreachable before its
	// replicas are re-created elsewhere.
	deadNodeTimeout = 30 * time.Second
)

// placementLoop runs the node's periodic range work: size checks for the
// ranges it leads and, on the meta leader, the placement driver.
func (n *Node) placementLoop() {
	defer n.wg.Done()
	t := time.NewTicker(placementInterval)
	defer t.Stop()
	lastSplitCheck := time.Time{}
	orphans := map[uint64]time.Time{}
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
		if time.Since(lastSplitCheck) >= splitCheckInterval {
			lastSplitCheck = time.Now()
			for _, s := range n.Shards() {
				n.maybeSplit(ctx, s)
			}
		}
		if n.localMetaLeader() != nil {
			if err := n.placeOnce(ctx); err != nil {
				n.log.Debug("placement round", "err", err)
			}
		}
		n.dropOrphans(ctx, orphans)
		for _, s := range n.Shards() {
			s.MaybeHibernate()
		}
		cancel()
	}
}

// liveNodes probes every registered node and returns those that answered.
func (n *Node) liveNodes(ctx context.Context, nodes []*kvpb.NodeInfo) map[string]bool {
	live := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, node := range nodes {
		if node.State == NodeRemoved || node.RaftAddr == "" {
			continue
		}
		if node.Id == n.cfg.NodeID {
			mu.Lock()
			live[node.Id] = true
			mu.Unlock()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n.ping(ctx, node.RaftAddr) == nil {
				mu.Lock()
				live[node.Id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return live
}

type move struct {
	rangeID  uint64
	req      *kvpb.ChangeReplicasRequest
	leader   string
	replicas []string
}

// placeOnce computes and starts one round of replica and leader moves.
func (n *Node) placeOnce(ctx context.Context) error {
	n.routes.invalidate()
	t, err := n.routes.get(ctx)
	if err != nil {
		return err
	}
	v := placementView{
		ranges:            t.Ranges,
		nodes:             t.Nodes,
		live:              n.liveNodes(ctx, t.Nodes),
		longDead:          map[string]bool{},
		replicas:          n.cfg.Replicas,
		leaderMoveAllowed: time.Since(n.lastLeaderMove) >= leaderMoveInterval,
	}
	// A replica on a node that is down is kept: the node may come back,
	// and removing it would leave the range one failure from losing
	// quorum. Only once the node has been down for deadNodeTimeout is it
	// replaced.
	now := time.Now()
	addr := map[string]string{}
	for _, node := range t.Nodes {
		addr[node.Id] = node.RaftAddr
		if node.State != NodeActive {
			continue
		}
		if v.live[node.Id] {
			delete(n.deadSince, node.Id)
		} else if since, ok := n.deadSince[node.Id]; !ok {
			n.deadSince[node.Id] = now
		} else if now.Sub(since) >= deadNodeTimeout {
			v.longDead[node.Id] = true
		}
	}
	plan := planPlacement(v)
	if plan.leaderMoved {
		n.lastLeaderMove = now
	}
	moves := plan.moves
	// Decommissioned nodes that hold nothing any more are removed.
	for _, id := range plan.drained {
		switch removed, err := n.finishDecommission(ctx, id); {
		case err != nil:
			n.log.Info("decommissioned member not marked removed yet", "member", id, "err", err)
		case removed:
			n.log.Info("member removed after decommissioning", "member", id)
		default:
			n.log.Info("decommissioned member came back before its removal", "member", id)
		}
	}

	var wg sync.WaitGroup
	for _, m := range moves {
		// The leader first. Its hint may name a replica that is gone, of
		// a range that hibernates, which no election will replace on its
		// own: asking the other replicas wakes them (ChangeReplicas wakes
		// a sleeping replica), and whichever then leads makes the move.
		targets := []string{m.leader}
		for _, r := range m.replicas {
			if r != m.leader {
				targets = append(targets, r)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := fmt.Errorf("no address for any replica of range %d", m.rangeID)
			for _, r := range targets {
				if a := addr[r]; a != "" {
					if err = n.requestChange(ctx, a, m.req); err == nil {
						break
					}
				}
			}
			if err != nil {
				n.log.Info("placement move not done", "range", m.rangeID, "move", m.req.String(), "err", err)
			} else {
				n.log.Info("placement move done", "range", m.rangeID, "move", m.req.String())
			}
		}()
	}
	wg.Wait()
	if len(moves) > 0 {
		n.routes.invalidate()
	}
	return nil
}

// placementView is everything a placement round decides from: the routing
// table and what the driver observed of the nodes.
type placementView struct {
	ranges []*kvpb.RangeDescriptor
	nodes  []*kvpb.NodeInfo
	live   map[string]bool // nodes that answered a probe this round
	// longDead are active nodes unreachable for at least deadNodeTimeout:
	// their replicas are replaced.
	longDead map[string]bool
	replicas int // the configured replication factor
	// leaderMoveAllowed: writes in flight when a leader hands over may end
	// indeterminate, so leaderships move at most once per
	// leaderMoveInterval.
	leaderMoveAllowed bool
}

// placementPlan is what one round does.
type placementPlan struct {
	moves       []move
	leaderMoved bool     // one of moves hands a leadership over
	drained     []string // decommissioning nodes left with no replica: mark them removed
}

// planPlacement decides one round of placement, with no I/O:
//   - a range short of its replication factor on usable (live, active)
//     nodes gets a replica on the least loaded usable node, first;
//   - a replica on a decommissioning, removed or unknown node is removed
//     once the range has enough replicas elsewhere;
//   - a surplus replica is removed, a dead one first, else the one on the
//     most loaded node;
//   - with nothing to repair, one replica moves toward the least loaded
//     node (added now, the surplus removed next round);
//   - at most one leadership moves from the node leading most to a
//     replica leading at least two fewer.
//
// At most maxMovesPerRound moves are planned, and a range gets at most one.
func planPlacement(v placementView) placementPlan {
	state := map[string]string{}
	active := 0
	for _, node := range v.nodes {
		state[node.Id] = node.State
		if node.State == NodeActive {
			active++
		}
	}
	usable := func(id string) bool { return v.live[id] && state[id] == NodeActive }
	var candidates []string
	for id := range v.live {
		if usable(id) {
			candidates = append(candidates, id)
		}
	}
	sort.Strings(candidates)
	load, leads := map[string]int{}, map[string]int{}
	for _, d := range v.ranges {
		for _, r := range d.Replicas {
			load[r]++
		}
		leads[d.Leader]++
	}

	var plan placementPlan
	busy := map[uint64]bool{}
	for _, d := range v.ranges {
		want := v.replicas
		if d.Id == raftstore.MetaRangeID {
			want = max(want, 3)
		}
		want = min(want, active)
		var good, dead, bad []string
		for _, r := range d.Replicas {
			switch {
			case state[r] != NodeActive:
				bad = append(bad, r) // decommissioning, removed or unknown
			case v.live[r]:
				good = append(good, r)
			default:
				dead = append(dead, r)
			}
		}
		replaceDead := slices.ContainsFunc(dead, func(id string) bool { return v.longDead[id] })
		var req *kvpb.ChangeReplicasRequest
		switch {
		case len(good)+len(dead) < want || ((len(bad) > 0 || replaceDead) && len(good) < want):
			target := leastLoaded(candidates, d.Replicas, load)
			if target == "" {
				continue
			}
			load[target]++
			req = &kvpb.ChangeReplicasRequest{RangeId: d.Id, AddNode: target}
		case len(bad) > 0 && len(good)+len(dead) >= want:
			req = &kvpb.ChangeReplicasRequest{RangeId: d.Id, RemoveNode: bad[0]}
		case len(d.Replicas) > want && len(good) >= want:
			victim := mostLoaded(good, load)
			if len(dead) > 0 {
				victim = dead[0]
			}
			load[victim]--
			req = &kvpb.ChangeReplicasRequest{RangeId: d.Id, RemoveNode: victim}
		default:
			continue
		}
		plan.moves = append(plan.moves, move{d.Id, req, d.Leader, d.Replicas})
		busy[d.Id] = true
		if len(plan.moves) >= maxMovesPerRound {
			break
		}
	}
	if len(plan.moves) == 0 && len(candidates) > 1 {
		if m, ok := rebalanceMove(v.ranges, candidates, load); ok {
			plan.moves = append(plan.moves, m)
		}
	}
	if len(plan.moves) < maxMovesPerRound && len(candidates) > 1 && v.leaderMoveAllowed {
		for _, d := range v.ranges {
			if busy[d.Id] || !usable(d.Leader) {
				continue
			}
			to := ""
			for _, r := range d.Replicas {
				if usable(r) && leads[r]+1 < leads[d.Leader] && (to == "" || leads[r] < leads[to]) {
					to = r
				}
			}
			if to != "" {
				plan.moves = append(plan.moves, move{d.Id, &kvpb.ChangeReplicasRequest{RangeId: d.Id, TransferLeaderTo: to}, d.Leader, d.Replicas})
				plan.leaderMoved = true
				break
			}
		}
	}
	for _, node := range v.nodes {
		if node.State == NodeDecommissioning && load[node.Id] == 0 {
			plan.drained = append(plan.drained, node.Id)
		}
	}
	return plan
}

// rebalanceMove picks one replica to add so that replica counts per node
// even out: from a node holding more than one above the least loaded.
func rebalanceMove(ranges []*kvpb.RangeDescriptor, candidates []string, load map[string]int) (move, bool) {
	least := leastLoaded(candidates, nil, load)
	for _, d := range ranges {
		if slices.Contains(d.Replicas, least) {
			continue
		}
		for _, r := range d.Replicas {
			if slices.Contains(candidates, r) && load[r] > load[least]+1 {
				return move{d.Id, &kvpb.ChangeReplicasRequest{RangeId: d.Id, AddNode: least}, d.Leader, d.Replicas}, true
			}
		}
	}
	return move{}, false
}

func leastLoaded(candidates, exclude []string, load map[string]int) string {
	best := ""
	for _, c := range candidates {
		if slices.Contains(exclude, c) {
			continue
		}
		if best == "" || load[c] < load[best] {
			best = c
		}
	}
	return best
}

func mostLoaded(ids []string, load map[string]int) string {
	best := ""
	for _, id := range ids {
		if best == "" || load[id] > load[best] {
			best = id
		}
	}
	return best
}

func (n *Node) requestChange(ctx context.Context, leaderAddr string, req *kvpb.ChangeReplicasRequest) error {
	if leaderAddr == n.cfg.RaftAddr {
		_, err := n.ChangeReplicas(ctx, req)
		return err
	}
	conn, err := n.peer(leaderAddr)
	if err != nil {
		return err
	}
	_, err = kvpb.NewInternalClient(conn).ChangeReplicas(forwardContext(ctx), req)
	return err
}

// ChangeReplicas applies one placement move on the range leader.
func (n *Node) ChangeReplicas(ctx context.Context, req *kvpb.ChangeReplicasRequest) (*kvpb.ChangeReplicasResponse, error) {
	s := n.shardByID(req.RangeId)
	if s != nil && s.Asleep() {
		// A hibernating range still needs its moves (a dead replica
		// replaced): wake it and let the election say who leads.
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		s.WaitLeader(wctx)
		cancel()
	}
	if s == nil || !s.IsLeader() {
		return nil, fmt.Errorf("%w for range %d on %s", shard.ErrNotLeader, req.RangeId, n.cfg.NodeID)
	}
	t, err := n.routes.get(ctx)
	if err != nil {
		return nil, err
	}
	addrOf := func(id string) string {
		for _, node := range t.Nodes {
			if node.Id == id {
				return node.RaftAddr
			}
		}
		return ""
	}
	switch {
	case req.AddNode != "":
		if err := n.addReplica(ctx, s, req.AddNode, addrOf(req.AddNode)); err != nil {
			return nil, err
		}
	case req.RemoveNode != "":
		if req.RemoveNode == n.cfg.NodeID {
			// Hand leadership over first; the driver retries the removal
			// on the new leader.
			if err := s.StepDown(); err != nil {
				return nil, fmt.Errorf("replication: before removing self: %w", err)
			}
			return nil, fmt.Errorf("%w: range %d: leadership handed over before removing %s; retry", shard.ErrNotLeader, s.ID(), req.RemoveNode)
		}
		if err := s.RemoveServer(ctx, req.RemoveNode); err != nil {
			return nil, err
		}
		// The removed node deletes its replica only once the meta range's
		// descriptor no longer lists it (DropReplica checks), so publish
		// the new membership first. If this fails, the removed node drops
		// the replica later as an orphan.
		if err := n.publish(ctx, s); err != nil {
			n.log.Info("publishing a range after removing a replica", "range", s.ID(), "err", err)
		}
		if a := addrOf(req.RemoveNode); a != "" {
			if conn, err := n.peer(a); err == nil {
				dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				kvpb.NewInternalClient(conn).DropReplica(forwardContext(dctx), &kvpb.DropReplicaRequest{RangeId: s.ID()})
				cancel()
			}
		}
	case req.TransferLeaderTo != "":
		if err := s.TransferLeadership(req.TransferLeaderTo, addrOf(req.TransferLeaderTo)); err != nil {
			return nil, err
		}
	}
	d, _, err := n.liveDescriptor(s)
	if err != nil {
		return nil, err
	}
	return &kvpb.ChangeReplicasResponse{Range: d}, nil
}

// addReplica creates an empty replica on the target node, adds it as a
// non-voter, waits until it has caught up, then promotes it to voter.
func (n *Node) addReplica(ctx context.Context, s *shard.Shard, target, targetAddr string) error {
	if targetAddr == "" {
		return fmt.Errorf("%w: no address for %s", ErrUnknownNode, target)
	}
	servers, err := s.Configuration()
	if err != nil {
		return err
	}
	for _, srv := range servers {
		if string(srv.ID) == target && srv.Suffrage == raft.Voter {
			return nil
		}
	}
	// The new replica must be sent a snapshot, never the log from index
	// 1: a range created by a split has data its own log does not hold.
	if err := s.CompactLog(); err != nil {
		return err
	}
	desc := s.Descriptor()
	conn, err := n.peer(targetAddr)
	if err != nil {
		return err
	}
	ic := kvpb.NewInternalClient(conn)
	if _, err := ic.CreateReplica(forwardContext(ctx), &kvpb.CreateReplicaRequest{Range: descToProto(&desc)}); err != nil {
		return fmt.Errorf("replication: create replica of range %d on %s: %w", s.ID(), target, err)
	}
	if err := s.AddNonvoter(ctx, target, targetAddr); err != nil {
		return err
	}
	goal := s.Raft().CommitIndex()
	cctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	cc := kvpb.NewClusterClient(conn)
	for attempt := 0; ; attempt++ {
		st, err := cc.Status(forwardContext(cctx), &kvpb.StatusRequest{})
		if err == nil && replicaApplied(st, s.ID()) >= goal {
			break
		}
		select {
		case <-cctx.Done():
			return fmt.Errorf("replication: replica of range %d on %s did not catch up: %w", s.ID(), target, cctx.Err())
		case <-time.After(min(time.Duration(attempt+1)*50*time.Millisecond, time.Second)):
		}
	}
	return s.AddVoter(ctx, target, targetAddr)
}

func replicaApplied(st *kvpb.StatusResponse, rangeID uint64) uint64 {
	for _, r := range st.GetNode().GetRanges() {
		if r.Id == rangeID {
			return r.AppliedIndex
		}
	}
	return 0
}

// CreateReplica starts an empty replica of a range on this node, which the
// range's leader then fills with a snapshot.
func (n *Node) CreateReplica(ctx context.Context, req *kvpb.CreateReplicaRequest) (*kvpb.CreateReplicaResponse, error) {
	d := req.GetRange()
	if d == nil || d.Id == 0 {
		return nil, errors.New("replication: create replica: no range given")
	}
	if _, err := n.openShard(shard.Descriptor{ID: d.Id, Start: d.Start, End: d.End, Generation: d.Generation, Replicas: d.Replicas}); err != nil {
		return nil, err
	}
	return &kvpb.CreateReplicaResponse{}, nil
}

// DropReplica stops and deletes this node's replica of a range that no
// longer lists it. It refuses (ErrStillAReplica) unless the range's
// descriptor, read afresh from the meta range, omits this node: the
// replica's own configuration cannot tell, since a removed replica is no
// longer sent the log that removed it.
func (n *Node) DropReplica(ctx context.Context, req *kvpb.DropReplicaRequest) (*kvpb.DropReplicaResponse, error) {
	s := n.shardByID(req.RangeId)
	if s == nil {
		return &kvpb.DropReplicaResponse{}, nil
	}
	if s.IsLeader() {
		return nil, fmt.Errorf("%w: range %d: will not drop the leader's replica", ErrStillAReplica, req.RangeId)
	}
	if err := n.checkRemoved(ctx, req.RangeId); err != nil {
		return nil, err
	}
	n.mu.Lock()
	delete(n.shards, req.RangeId)
	n.mu.Unlock()
	if err := s.Shutdown(); err != nil {
		n.log.Warn("shutting down a dropped replica", "range", req.RangeId, "err", err)
	}
	if err := n.store.DropRange(req.RangeId); err != nil {
		return nil, err
	}
	n.log.Info("dropped replica", "range", req.RangeId)
	return &kvpb.DropReplicaResponse{}, nil
}

// orphanGrace is how long a replica must have been both absent from the
// routing table and without a leader before its node drops it.
const orphanGrace = 10 * time.Second

// dropOrphans deletes replicas this node holds that their range no longer
// lists, for the case where the leader's DropReplica never arrived (the
// node was down). A replica still in the range always hears from a leader,
// and a freshly added one appears in the table within a second, so both
// conditions held for orphanGrace mean it was removed.
func (n *Node) dropOrphans(ctx context.Context, since map[uint64]time.Time) {
	t := n.routes.cached()
	if t == nil {
		return
	}
	listed := map[uint64]bool{}
	for _, d := range t.Ranges {
		listed[d.Id] = slices.Contains(d.Replicas, n.cfg.NodeID)
	}
	now := time.Now()
	for _, s := range n.Shards() {
		id, _ := s.Leader()
		inTable, known := listed[s.ID()]
		if !known || inTable || id != "" {
			delete(since, s.ID())
			continue
		}
		first, ok := since[s.ID()]
		if !ok {
			since[s.ID()] = now
			continue
		}
		if now.Sub(first) >= orphanGrace {
			delete(since, s.ID())
			n.log.Info("dropping a replica its range no longer lists", "range", s.ID())
			if _, err := n.DropReplica(ctx, &kvpb.DropReplicaRequest{RangeId: s.ID()}); err != nil {
				n.log.Warn("dropping orphan replica", "range", s.ID(), "err", err)
			}
		}
	}
}

// checkRemoved confirms, with a linearizable read of the meta range, that
// the range's published descriptor no longer lists this node.
func (n *Node) checkRemoved(ctx context.Context, rangeID uint64) error {
	t, err := n.fetchRoutes(ctx)
	if err != nil {
		return fmt.Errorf("replication: range %d: cannot confirm the replica was removed: %w", rangeID, err)
	}
	for _, d := range t.Ranges {
		if d.Id != rangeID {
			continue
		}
		if slices.Contains(d.Replicas, n.cfg.NodeID) {
			return fmt.Errorf("%w: range %d lists %v", ErrStillAReplica, rangeID, d.Replicas)
		}
		return nil
	}
	return fmt.Errorf("%w: range %d is not in the routing table", ErrStillAReplica, rangeID)
}

// TransferLeader hands a range's leadership to another of its voters. It
// runs on the range's leader: a replica forwards it there, and a node
// without a replica sends it to the leader the routing table names.
func (n *Node) TransferLeader(ctx context.Context, req *kvpb.TransferLeaderRequest) (*kvpb.TransferLeaderResponse, error) {
	remote := func(ctx context.Context, conn grpc.ClientConnInterface) (*kvpb.TransferLeaderResponse, error) {
		return kvpb.NewClusterClient(conn).TransferLeader(ctx, req)
	}
	for range 3 {
		s := n.shardByID(req.RangeId)
		if s == nil {
			return n.transferLeaderRemote(ctx, req, remote)
		}
		if !s.IsLeader() {
			resp, err := forward(ctx, n, s, true, remote)
			if errors.Is(err, errLeaderIsSelf) {
				continue
			}
			return resp, err
		}
		resp, err := n.ChangeReplicas(ctx, &kvpb.ChangeReplicasRequest{RangeId: req.RangeId, TransferLeaderTo: req.ToNode})
		if err != nil {
			return nil, err
		}
		return &kvpb.TransferLeaderResponse{Range: resp.Range}, nil
	}
	return nil, fmt.Errorf("%w: leadership of range %d changed during the request", shard.ErrNotLeader, req.RangeId)
}

func (n *Node) transferLeaderRemote(ctx context.Context, req *kvpb.TransferLeaderRequest, remote func(context.Context, grpc.ClientConnInterface) (*kvpb.TransferLeaderResponse, error)) (*kvpb.TransferLeaderResponse, error) {
	if hops(ctx) >= maxHops {
		return nil, fmt.Errorf("%w for range %d on %s", shard.ErrNotLeader, req.RangeId, n.cfg.NodeID)
	}
	t, err := n.fetchRoutes(ctx)
	if err != nil {
		return nil, err
	}
	for _, d := range t.Ranges {
		if d.Id != req.RangeId {
			continue
		}
		for _, node := range t.Nodes {
			if node.Id == d.Leader && node.Id != n.cfg.NodeID {
				conn, err := n.peer(node.RaftAddr)
				if err != nil {
					return nil, err
				}
				return remote(forwardContext(ctx), conn)
			}
		}
		return nil, fmt.Errorf("%w for range %d", ErrNoLeader, req.RangeId)
	}
	return nil, fmt.Errorf("%w: %d", ErrUnknownRange, req.RangeId)
}
