package replication

import (
	"context"
	"errors"
	"fmt"
	"maps"
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
// range drives it: it reads the routing table, probes the nodes, and asks
// range leaders for changes (ChangeReplicas). A range leader adds a replica
// as a non-voter, waits for it to catch up, then promotes it; only after
// that does the driver remove a surplus replica, so a range never drops
// below its replication factor while enough healthy nodes exist.
//
// Moves run in the background: a round starts what the plan allows and
// returns, and the next round runs as soon as a move finishes (or every
// placementInterval), so a new node's replicas arrive at the speed of the
// snapshots, not of a timer.
const (
	placementInterval = time.Second
	// maxMovesInFlight bounds the moves the driver runs at once, in all.
	maxMovesInFlight = 8
	// maxSnapshotsPerNode bounds the replicas being added to one node at
	// once: two keep its disk busy, one streaming in while the other is
	// written, and more would only share the same disk and slow the
	// node's own writes further.
	maxSnapshotsPerNode = 2
	catchUpTimeout      = 60 * time.Second
	// catchUpPoll paces the checks of a new replica's progress, at most
	// 5 times that apart: a snapshot of a full range lands in about a
	// second, and the next move waits for the check that sees it.
	catchUpPoll = 50 * time.Millisecond
	// moveTimeout bounds one move, its catch-up included.
	moveTimeout = catchUpTimeout + 10*time.Second
	// leaderMoveInterval: a write in flight on a range whose leadership
	// is handed over may end indeterminate, so the driver asks to move a
	// range's leadership at most once per leaderMoveInterval, and a node
	// hands over at most one leadership at a time.
	leaderMoveInterval = 10 * time.Second
	// deadNodeTimeout is how long a node must be unreachable before its
	// replicas are re-created elsewhere.
	deadNodeTimeout = 30 * time.Second
)

// placer is the driver's memory between rounds; only the placement
// goroutine touches it, except done, which the moves report on.
type placer struct {
	inFlight map[uint64]move // by range id: started, not yet seen finished
	// resting holds ranges whose last move failed, since when: they get
	// no move for placementInterval, so a failing move is not retried in
	// a tight loop.
	resting map[uint64]time.Time
	// leaderMoved holds ranges whose leadership the driver asked to move
	// less than leaderMoveInterval ago.
	leaderMoved map[uint64]leaderMove
	done        chan moveResult
	// drivingSince is when this node last became the meta leader (zero
	// while it is not).
	drivingSince time.Time
}

type moveResult struct {
	m   move
	err error
}

// leaderMove is a leadership hand-over the driver asked for.
type leaderMove struct {
	from, to string // to is empty once the hand-over failed
	at       time.Time
}

func newPlacer() *placer {
	return &placer{
		inFlight:    map[uint64]move{},
		resting:     map[uint64]time.Time{},
		leaderMoved: map[uint64]leaderMove{},
		// Never more results pending than moves in flight: a move's
		// report never waits for the loop.
		done: make(chan moveResult, maxMovesInFlight),
	}
}

// finish records a move's outcome.
func (p *placer) finish(r moveResult, now time.Time) {
	delete(p.inFlight, r.m.rangeID)
	if r.err == nil {
		return
	}
	p.resting[r.m.rangeID] = now
	if lm, ok := p.leaderMoved[r.m.rangeID]; ok && r.m.req.TransferLeaderTo != "" {
		// The leader did not change; the rate limit still holds.
		lm.to = ""
		p.leaderMoved[r.m.rangeID] = lm
	}
}

// forget drops what no longer constrains a round.
func (p *placer) forget(now time.Time) {
	for id, at := range p.resting {
		if now.Sub(at) >= placementInterval {
			delete(p.resting, id)
		}
	}
	for id, lm := range p.leaderMoved {
		if now.Sub(lm.at) >= leaderMoveInterval {
			delete(p.leaderMoved, id)
		}
	}
}

// placementLoop runs the node's periodic range work: size checks for the
// ranges it leads and, on the meta leader, the placement driver, whose
// rounds also run whenever one of its moves finishes.
func (n *Node) placementLoop() {
	defer n.wg.Done()
	p := newPlacer()
	var moves sync.WaitGroup
	defer moves.Wait()
	t := time.NewTicker(placementInterval)
	defer t.Stop()
	lastSplitCheck := time.Time{}
	orphans := &orphanWatch{since: map[uint64]time.Time{}}
	for {
		// A move done makes room for the next at once; a move failed does
		// not: it failed for a reason (an election, a node down) that the
		// next tick is soon enough to look at again.
		tick, succeeded := false, false
		select {
		case <-n.stop:
			return
		case <-t.C:
			tick = true
		case r := <-p.done:
			p.finish(r, time.Now())
			succeeded = r.err == nil
		}
		// Take every other finished move too: one round for all of them.
		for drained := false; !drained; {
			select {
			case r := <-p.done:
				p.finish(r, time.Now())
				succeeded = succeeded || r.err == nil
			default:
				drained = true
			}
		}
		if !tick && !succeeded {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, 30*time.Second)
		if tick && time.Since(lastSplitCheck) >= splitCheckInterval {
			lastSplitCheck = time.Now()
			for _, s := range n.Shards() {
				n.maybeSplit(ctx, s)
			}
		}
		if n.localMetaLeader() == nil {
			p.drivingSince = time.Time{}
		} else {
			if p.drivingSince.IsZero() {
				p.drivingSince = time.Now()
			}
			if err := n.placeOnce(ctx, p, &moves); err != nil {
				n.log.Debug("placement round", "err", err)
			}
		}
		if tick {
			n.dropOrphans(ctx, orphans)
			for _, s := range n.Shards() {
				s.MaybeHibernate()
			}
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

// placeOnce plans one round and starts its moves in the background; each
// reports to p.done when it ends.
func (n *Node) placeOnce(ctx context.Context, p *placer, moves *sync.WaitGroup) error {
	n.routes.invalidate()
	t, err := n.routes.get(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	p.forget(now)
	v := placementView{
		ranges:      t.Ranges,
		nodes:       t.Nodes,
		live:        n.liveNodes(ctx, t.Nodes),
		longDead:    map[string]bool{},
		replicas:    n.cfg.Replicas,
		resting:     map[uint64]bool{},
		leaderMoved: map[uint64]leaderMove{},
		// Leaderships moved by the driver before this one are unknown
		// here, and a range's must not move twice within the interval.
		leaderMovesAllowed: now.Sub(p.drivingSince) >= leaderMoveInterval,
	}
	for _, m := range p.inFlight {
		v.inFlight = append(v.inFlight, m)
	}
	for id := range p.resting {
		v.resting[id] = true
	}
	maps.Copy(v.leaderMoved, p.leaderMoved)
	// A replica on a node that is down is kept: the node may come back,
	// and removing it would leave the range one failure from losing
	// quorum. Only once the node has been down for deadNodeTimeout is it
	// replaced.
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

	for _, m := range plan.moves {
		p.inFlight[m.rangeID] = m
		if to := m.req.TransferLeaderTo; to != "" {
			p.leaderMoved[m.rangeID] = leaderMove{from: m.leader, to: to, at: now}
		}
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
		moves.Add(1)
		go func() {
			defer moves.Done()
			mctx, cancel := context.WithTimeout(n.ctx, moveTimeout)
			defer cancel()
			err := fmt.Errorf("no address for any replica of range %d", m.rangeID)
			for _, r := range targets {
				if a := addr[r]; a != "" {
					if err = n.requestChange(mctx, a, m.req); err == nil {
						break
					}
				}
			}
			if err != nil {
				n.log.Info("placement move not done", "range", m.rangeID, "move", m.req.String(), "err", err)
			} else {
				n.log.Info("placement move done", "range", m.rangeID, "move", m.req.String())
			}
			select {
			case p.done <- moveResult{m, err}:
			case <-n.stop:
			}
		}()
	}
	return nil
}

// placementView is everything a placement round decides from: the routing
// table and what the driver observed of the nodes and its own moves.
type placementView struct {
	ranges []*kvpb.RangeDescriptor
	nodes  []*kvpb.NodeInfo
	live   map[string]bool // nodes that answered a probe this round
	// longDead are active nodes unreachable for at least deadNodeTimeout:
	// their replicas are replaced.
	longDead map[string]bool
	replicas int // the configured replication factor
	// inFlight are the driver's moves still running: their ranges get no
	// other move, their snapshots count against maxSnapshotsPerNode, and
	// they count against maxMovesInFlight.
	inFlight []move
	// resting are ranges whose last move failed just now: no move.
	resting map[uint64]bool
	// leaderMovesAllowed is false while the driver is new: for
	// leaderMoveInterval it does not know which leaderships the one before
	// it moved, so it moves none.
	leaderMovesAllowed bool
	// leaderMoved are ranges whose leadership the driver asked to move
	// less than leaderMoveInterval ago: no leader move. Until the routing
	// table names the new leader, to (if the hand-over did not fail) is
	// counted as the leader.
	leaderMoved map[uint64]leaderMove
}

// placementPlan is what one round starts.
type placementPlan struct {
	moves   []move
	drained []string // decommissioning nodes left with no replica: mark them removed
}

// planPlacement decides one round of placement, with no I/O. Wherever it
// chooses a node for a replica, the locality diversity of the range's
// replicas (localities: distinct regions first, then zones) comes before
// load:
//   - a range short of its replication factor on usable (live, active)
//     nodes gets a replica, first: on the usable node that spreads it over
//     the most places, then the least loaded;
//   - a replica on a decommissioning, removed or unknown node is removed
//     once the range has enough replicas elsewhere;
//   - a surplus replica is removed, a dead one first, else the one whose
//     removal leaves the most places, then the one on the most loaded
//     node, a follower rather than the leader;
//   - a healthy range that could span more places gets a replica where it
//     would (the surplus removed once the add is done);
//   - replicas move toward the least loaded nodes (added now, the surplus
//     removed once the add is done), while a node holds two more than
//     another, never narrowing a range's spread;
//   - with no replica move planned or running, leaderships move from the
//     nodes leading most to replicas leading at least two fewer (of equal
//     moves, to the locality leading fewest), each node handing over one
//     at a time, each range at most once per leaderMoveInterval, the meta
//     range's last.
//
// A range gets at most one move at a time, a node at most
// maxSnapshotsPerNode new replicas at a time, and the driver runs at most
// maxMovesInFlight moves at a time.
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
	locs := newLocalities(v.nodes)
	var candidates []string
	for id := range v.live {
		if usable(id) {
			candidates = append(candidates, id)
		}
	}
	sort.Strings(candidates)
	want := func(d *kvpb.RangeDescriptor) int {
		w := v.replicas
		if d.Id == raftstore.MetaRangeID {
			w = max(w, 3)
		}
		return min(w, active)
	}
	leaderOf := func(d *kvpb.RangeDescriptor) string {
		if lm, ok := v.leaderMoved[d.Id]; ok && lm.to != "" && lm.from == d.Leader {
			return lm.to
		}
		return d.Leader
	}
	byID := map[uint64]*kvpb.RangeDescriptor{}
	// load is what each node will hold once the moves planned and running
	// are done; holds is what it holds now.
	load, holds, leads := map[string]int{}, map[string]int{}, map[string]int{}
	for _, d := range v.ranges {
		byID[d.Id] = d
		for _, r := range d.Replicas {
			load[r]++
			holds[r]++
		}
		leads[leaderOf(d)]++
	}

	busy := map[uint64]bool{}
	for id := range v.resting {
		busy[id] = true
	}
	snapshots, handingOver := map[string]int{}, map[string]int{}
	replicaMoves := 0
	for _, m := range v.inFlight {
		busy[m.rangeID] = true
		switch r := m.req; {
		case r.AddNode != "":
			snapshots[r.AddNode]++
			replicaMoves++
			if d := byID[m.rangeID]; d != nil {
				expectAdd(locs, d, r.AddNode, leaderOf(d), want(d), load, usable)
			}
		case r.RemoveNode != "":
			replicaMoves++
		case r.TransferLeaderTo != "":
			handingOver[m.leader]++
			if d := byID[m.rangeID]; d != nil && leaderOf(d) == m.leader {
				leads[m.leader]--
				leads[r.TransferLeaderTo]++
			}
		}
	}
	var plan placementPlan
	room := func() bool { return len(v.inFlight)+len(plan.moves) < maxMovesInFlight }
	canReceive := func(id string) bool { return snapshots[id] < maxSnapshotsPerNode }
	receivers := func() []string {
		return slices.DeleteFunc(slices.Clone(candidates), func(id string) bool { return !canReceive(id) })
	}
	add := func(d *kvpb.RangeDescriptor, target string) {
		plan.moves = append(plan.moves, move{d.Id, &kvpb.ChangeReplicasRequest{RangeId: d.Id, AddNode: target}, leaderOf(d), d.Replicas})
		busy[d.Id] = true
		snapshots[target]++
		expectAdd(locs, d, target, leaderOf(d), want(d), load, usable)
	}

	for _, d := range v.ranges {
		if !room() {
			break
		}
		if busy[d.Id] {
			continue
		}
		want := want(d)
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
			// The replicas the range keeps: a long-dead one is on its way out.
			keep := slices.Concat(good, slices.DeleteFunc(slices.Clone(dead), func(id string) bool { return v.longDead[id] }))
			if target := locs.target(keep, receivers(), d.Replicas, load); target != "" {
				add(d, target)
			}
			continue
		case len(bad) > 0 && len(good)+len(dead) >= want:
			req = &kvpb.ChangeReplicasRequest{RangeId: d.Id, RemoveNode: bad[0]}
		case len(d.Replicas) > want && len(good) >= want:
			victim := locs.surplus(good, leaderOf(d), load)
			if len(dead) > 0 {
				victim = dead[0]
			}
			load[victim]--
			req = &kvpb.ChangeReplicasRequest{RangeId: d.Id, RemoveNode: victim}
		case len(good) == want && len(d.Replicas) == want:
			// Healthy, but perhaps in fewer places than it could be: a
			// replica added elsewhere and the surplus removed spreads it.
			if target := locs.spreadTarget(d.Replicas, leaderOf(d), receivers(), load); target != "" {
				add(d, target)
			}
			continue
		default:
			continue
		}
		plan.moves = append(plan.moves, move{d.Id, req, leaderOf(d), d.Replicas})
		busy[d.Id] = true
	}
	for len(candidates) > 1 && room() {
		d, target, ok := rebalanceMove(locs, v.ranges, leaderOf, candidates, load, busy, canReceive)
		if !ok {
			break
		}
		add(d, target)
	}
	if len(plan.moves) == 0 && replicaMoves == 0 && len(candidates) > 1 && v.leaderMovesAllowed {
		eligible := func(d *kvpb.RangeDescriptor) bool {
			_, moved := v.leaderMoved[d.Id]
			from := leaderOf(d)
			return !busy[d.Id] && !moved && usable(from) && handingOver[from] == 0
		}
		for room() {
			d, to, ok := leaderMoveFor(locs, v.ranges, leaderOf, leads, func(d *kvpb.RangeDescriptor) bool {
				return d.Id != raftstore.MetaRangeID && eligible(d)
			}, usable)
			if !ok && len(handingOver) == 0 {
				// The meta range's leadership moves the driver, which
				// starts without the memory of what it moved, so it goes
				// last: alone, when no other hand-over is left.
				d, to, ok = leaderMoveFor(locs, v.ranges, leaderOf, leads, eligible, usable)
			}
			if !ok {
				break
			}
			from := leaderOf(d)
			plan.moves = append(plan.moves, move{d.Id, &kvpb.ChangeReplicasRequest{RangeId: d.Id, TransferLeaderTo: to}, from, d.Replicas})
			busy[d.Id] = true
			handingOver[from]++
			leads[from]--
			leads[to]++
		}
	}
	for _, node := range v.nodes {
		if node.State == NodeDecommissioning && holds[node.Id] == 0 {
			plan.drained = append(plan.drained, node.Id)
		}
	}
	return plan
}

// expectAdd counts a replica being added to d on target as if done, and
// the surplus replica the add will make the driver remove as gone, so
// that moves planned meanwhile do not overshoot: one on a node not usable
// if there is one, else the one locs.surplus picks.
func expectAdd(locs localities, d *kvpb.RangeDescriptor, target, leader string, want int, load map[string]int, usable func(string) bool) {
	n := len(d.Replicas)
	if !slices.Contains(d.Replicas, target) {
		load[target]++
		n++
	}
	if n <= want {
		return
	}
	others := without(d.Replicas, target)
	if i := slices.IndexFunc(others, func(id string) bool { return !usable(id) }); i >= 0 {
		load[others[i]]--
		return
	}
	if victim := locs.surplus(append(others, target), leader, load); victim != "" {
		load[victim]--
	}
}

// leaderMoveFor picks the leadership hand-over that most narrows the gap
// between the nodes leading most and least: from a range's leader to one
// of its usable replicas leading at least two fewer. Of hand-overs that
// narrow it as much, the one to the replica whose locality leads fewest,
// so that leaders spread over localities too.
func leaderMoveFor(locs localities, ranges []*kvpb.RangeDescriptor, leaderOf func(*kvpb.RangeDescriptor) string, leads map[string]int,
	eligible func(*kvpb.RangeDescriptor) bool, usable func(string) bool) (*kvpb.RangeDescriptor, string, bool) {
	var best *kvpb.RangeDescriptor
	bestTo, bestGap := "", 1
	places := locs.leaderPlaces(leads)
	var bestPlaces []int
	for _, d := range ranges {
		if !eligible(d) {
			continue
		}
		from := leaderOf(d)
		for _, r := range d.Replicas {
			gap := leads[from] - leads[r]
			if !usable(r) || r == from || gap < bestGap {
				continue
			}
			pl := locs.placeLeads(places, r)
			if gap > bestGap || (best != nil && slices.Compare(pl, bestPlaces) < 0) {
				best, bestTo, bestGap, bestPlaces = d, r, gap, pl
			}
		}
	}
	return best, bestTo, best != nil
}

// rebalanceMove picks one replica to add so that replica counts per node
// even out: on the least loaded node that can take a snapshot now, of a
// range with no move under way whose surplus, once that node holds a
// replica, is on a node holding more than one above it. The surplus is
// chosen to keep the range in as many places as before (locs.surplus), so
// a rebalance never narrows a range's spread, and a range with no replica
// on a busier node in the new node's place is left alone.
func rebalanceMove(locs localities, ranges []*kvpb.RangeDescriptor, leaderOf func(*kvpb.RangeDescriptor) string, candidates []string,
	load map[string]int, busy map[uint64]bool, canReceive func(string) bool) (*kvpb.RangeDescriptor, string, bool) {
	least := leastLoaded(slices.DeleteFunc(slices.Clone(candidates), func(id string) bool { return !canReceive(id) }), load)
	if least == "" {
		return nil, "", false
	}
	for _, d := range ranges {
		if busy[d.Id] || slices.Contains(d.Replicas, least) {
			continue
		}
		// What the removal will choose among: the usable replicas.
		good := slices.DeleteFunc(slices.Clone(d.Replicas), func(id string) bool { return !slices.Contains(candidates, id) })
		if victim := locs.surplus(append(good, least), leaderOf(d), load); victim != least && load[victim] > load[least]+1 {
			return d, least, true
		}
	}
	return nil, "", false
}

func leastLoaded(candidates []string, load map[string]int) string {
	best := ""
	for _, c := range candidates {
		if best == "" || load[c] < load[best] {
			best = c
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
		// Published now, not on publishLoop's next tick, so that the
		// driver's next round, which runs as soon as this returns, sees
		// the new replica and removes the surplus one.
		if err := n.publish(ctx, s); err != nil {
			n.log.Info("publishing a range after adding a replica", "range", s.ID(), "err", err)
		}
	case req.RemoveNode != "":
		if req.RemoveNode == n.cfg.NodeID {
			// Hand leadership over first; the driver retries the removal
			// on the new leader.
			if err := s.StepDown(ctx); err != nil {
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
		addr := addrOf(req.TransferLeaderTo)
		if addr == "" {
			// A table fetched before the node registered (just after a
			// start): the range's own membership has its address.
			servers, _ := s.Configuration()
			for _, srv := range servers {
				if string(srv.ID) == req.TransferLeaderTo {
					addr = string(srv.Address)
				}
			}
		}
		if addr == "" {
			return nil, fmt.Errorf("%w: %s holds no replica of range %d", ErrUnknownNode, req.TransferLeaderTo, s.ID())
		}
		if err := s.TransferLeadership(req.TransferLeaderTo, addr); err != nil {
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
		case <-time.After(min(time.Duration(attempt+1)*catchUpPoll, 5*catchUpPoll)):
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

// orphanWatch is dropOrphans' memory between ticks.
type orphanWatch struct {
	since   map[uint64]time.Time // when each candidate was first seen
	fetched time.Time            // the last routing table dropOrphans read itself
}

// How often dropOrphans reads the routing table itself, when no fresher
// copy is cached: with a replica awake but without a leader (an orphan,
// or an election), and with only sleeping ones.
const (
	orphanFetchAwake  = orphanGrace / 2
	orphanFetchAsleep = time.Minute
)

// orphanGrace is how long a replica must have been both absent from the
// routing table and without a leader before its node drops it.
const orphanGrace = 10 * time.Second

// dropOrphans deletes replicas this node holds that their range no longer
// lists, for the case where the leader's DropReplica never arrived (the
// node was down). A replica still in the range always hears from a leader,
// and a freshly added one appears in the table within a second, so both
// conditions held for orphanGrace mean it was removed.
func (n *Node) dropOrphans(ctx context.Context, w *orphanWatch) {
	since := w.since
	// An orphan has no leader; a node whose replicas all have one has
	// nothing to look up. Otherwise the table is fetched when stale: an
	// idle node (one being decommissioned, say) reads it for nothing else,
	// and going by the cache alone it kept a split's child it had been a
	// non-voter of forever. Sleeping replicas have no leader either (no
	// Raft runs), and a cluster at rest is mostly asleep, so for them
	// alone the table is read at most once a minute.
	awake, asleep := false, false
	for _, s := range n.Shards() {
		if id, _ := s.Leader(); id == "" {
			if s.Asleep() {
				asleep = true
			} else {
				awake = true
			}
		}
	}
	if !awake && !asleep {
		clear(since)
		return
	}
	t := n.routes.cached()
	if t == nil {
		every := orphanFetchAsleep
		if awake {
			every = orphanFetchAwake
		}
		if time.Since(w.fetched) < every {
			return
		}
		w.fetched = time.Now()
		var err error
		if t, err = n.routes.get(ctx); err != nil {
			return
		}
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
