package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
)

// Nemesis names (the NEMESIS make variable takes a comma list of them).
const (
	NemPartition = "partition" // every partition shape below
	NemIsolate   = "partition-one"
	NemLeader    = "partition-leader"
	NemHalves    = "partition-halves"
	NemBridge    = "partition-bridge"
	NemOneWay    = "partition-oneway"
	NemReject    = "partition-reject"
	NemKill      = "kill"
	NemPause     = "pause"
	NemSlow      = "slow"
	NemMember    = "membership"
	NemTransfer  = "leader-transfer"
	NemSplit     = "split"
	NemAll       = "all"
)

// partitionShapes are what NemPartition expands to.
var partitionShapes = []string{NemIsolate, NemLeader, NemHalves, NemBridge, NemOneWay, NemReject}

// Skipped nemeses and why (none today: leader transfer goes through the
// Cluster.TransferLeader RPC, splits through Cluster.SplitRange).
var skippedNemeses = map[string]string{}

// ExpandNemeses turns a NEMESIS list into the nemeses to schedule and
// notes on those skipped.
func ExpandNemeses(list []string) (kinds, notes []string, err error) {
	seen := map[string]bool{}
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			kinds = append(kinds, k)
		}
	}
	for _, name := range list {
		name = strings.TrimSpace(name)
		switch name {
		case "":
		case NemAll:
			for _, s := range partitionShapes {
				add(s)
			}
			add(NemKill)
			add(NemPause)
			add(NemSlow)
			add(NemMember)
			add(NemTransfer)
			add(NemSplit)
			add(NemKillCoord)
		case NemPartition:
			for _, s := range partitionShapes {
				add(s)
			}
		case NemIsolate, NemLeader, NemHalves, NemBridge, NemOneWay, NemReject, NemKill, NemPause, NemSlow, NemMember, NemTransfer, NemSplit, NemAuthRevoke, NemKillCoord:
			if why := skippedNemeses[name]; why != "" {
				notes = append(notes, fmt.Sprintf("%s skipped: %s", name, why))
				continue
			}
			add(name)
		case "none":
			return nil, notes, nil
		default:
			return nil, nil, fmt.Errorf("jepsen: unknown nemesis %q (want partition, %s, kill, pause, slow, membership, leader-transfer, split, auth-revoke, kill-coordinator, all or none)",
				name, strings.Join(partitionShapes, ", "))
		}
	}
	return kinds, notes, nil
}

// family groups nemeses for the availability report and for composing:
// two faults of one family are never combined.
func family(kind string) string {
	if strings.HasPrefix(kind, "partition") {
		return NemPartition
	}
	return kind
}

// nemesisEnv is what faults act on.
type nemesisEnv struct {
	c    *Cluster
	cs   *Conns
	net  *Net
	rec  *Recorder
	rng  *rand.Rand
	logf func(string, ...any)
	// removed marks nodes taken out of the membership and not yet back.
	removed map[int]bool
	// txns make the kill-coordinator nemesis's transactions (the bank
	// and append workloads); probes are its reads of their keys, which
	// may outlast the schedule.
	txns   []crossTxnSource
	probes sync.WaitGroup
}

// activeFault is a fault in progress; stop undoes it.
type activeFault struct {
	kind, desc string
	id         int
	stop       func() error
}

// leaderOrRandom returns the current leader (found within 2s) with
// probability pLeader, else a random node.
func (e *nemesisEnv) leaderOrRandom(pLeader float64, avoid map[int]bool) int {
	if e.rng.Float64() < pLeader {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		l, err := e.c.Leader(ctx)
		cancel()
		if err == nil && !avoid[l] {
			return l
		}
	}
	var cands []int
	for i := range e.c.N() {
		if !avoid[i] {
			cands = append(cands, i)
		}
	}
	if len(cands) == 0 {
		return e.rng.IntN(e.c.N())
	}
	return cands[e.rng.IntN(len(cands))]
}

func (e *nemesisEnv) ids(nodes []int) string {
	var s []string
	for _, i := range nodes {
		s = append(s, e.c.ID(i))
	}
	return strings.Join(s, ",")
}

// cut drops (or rejects) every link between the groups, both ways.
func (e *nemesisEnv) cut(l Link, groups ...[]int) [][2]int {
	var pairs [][2]int
	for gi, a := range groups {
		for gj, b := range groups {
			if gi == gj {
				continue
			}
			for _, x := range a {
				for _, y := range b {
					pairs = append(pairs, [2]int{x, y})
				}
			}
		}
	}
	e.net.Set(l, pairs...)
	return pairs
}

func (e *nemesisEnv) others(of ...int) []int {
	var out []int
	for i := range e.c.N() {
		if !slices.Contains(of, i) {
			out = append(out, i)
		}
	}
	return out
}

// start begins a fault of the given kind. busy names nodes another
// active fault already holds (killed, paused or removed).
func (e *nemesisEnv) start(kind string, busy map[int]bool) (*activeFault, error) {
	n := e.c.N()
	drop := Link{Drop: true}
	heal := func(pairs [][2]int) func() error {
		return func() error { e.net.Set(Link{}, pairs...); return nil }
	}
	f := &activeFault{kind: kind}
	switch kind {
	case NemIsolate, NemLeader, NemReject:
		p := 0.0
		if kind == NemLeader {
			p = 1
		}
		x := e.leaderOrRandom(p, nil)
		l := drop
		if kind == NemReject {
			l = Link{Reject: true}
		}
		pairs := e.cut(l, []int{x}, e.others(x))
		f.desc = fmt.Sprintf("isolate %s (%v)", e.c.ID(x), l)
		f.stop = heal(pairs)
	case NemHalves:
		perm := e.rng.Perm(n)
		minority := perm[:(n-1)/2]
		if len(minority) == 0 {
			minority = perm[:1]
		}
		majority := e.others(minority...)
		pairs := e.cut(drop, minority, majority)
		f.desc = fmt.Sprintf("halves %s | %s", e.ids(minority), e.ids(majority))
		f.stop = heal(pairs)
	case NemBridge:
		// Two sides that cannot talk, and one node that talks to both.
		perm := e.rng.Perm(n)
		bridge := perm[0]
		rest := perm[1:]
		a, b := rest[:len(rest)/2], rest[len(rest)/2:]
		pairs := e.cut(drop, a, b)
		f.desc = fmt.Sprintf("bridge %s between %s | %s", e.c.ID(bridge), e.ids(a), e.ids(b))
		f.stop = heal(pairs)
	case NemOneWay:
		// x's messages to everyone are lost; x still hears everyone.
		x := e.leaderOrRandom(0.5, nil)
		var pairs [][2]int
		for _, y := range e.others(x) {
			pairs = append(pairs, [2]int{x, y})
		}
		e.net.Set(drop, pairs...)
		f.desc = fmt.Sprintf("one-way: %s -/-> others", e.c.ID(x))
		f.stop = heal(pairs)
	case NemSlow:
		var pairs [][2]int
		l := Link{Delay: time.Duration(20+e.rng.IntN(80)) * time.Millisecond, Jitter: 50 * time.Millisecond}
		if e.rng.IntN(2) == 0 {
			for x := range n {
				for y := range n {
					if x != y {
						pairs = append(pairs, [2]int{x, y})
					}
				}
			}
			f.desc = fmt.Sprintf("every link slow (%v)", l)
		} else {
			x := e.leaderOrRandom(0.5, nil)
			l.Delay *= 4
			for _, y := range e.others(x) {
				pairs = append(pairs, [2]int{x, y}, [2]int{y, x})
			}
			f.desc = fmt.Sprintf("links of %s slow (%v)", e.c.ID(x), l)
		}
		e.net.Set(l, pairs...)
		f.stop = heal(pairs)
	case NemKill:
		x := e.leaderOrRandom(0.5, busy)
		if busy[x] {
			return nil, errors.New("every node is busy")
		}
		busy[x] = true
		if err := e.c.Kill(x); err != nil {
			delete(busy, x)
			return nil, err
		}
		f.desc = fmt.Sprintf("kill -9 %s", e.c.ID(x))
		f.stop = func() error {
			defer delete(busy, x)
			if err := e.c.Restart(x); err != nil {
				return err
			}
			e.rec.Restarted(e.c.ID(x), "restart after kill -9")
			return nil
		}
	case NemPause:
		x := e.leaderOrRandom(0.5, busy)
		if busy[x] {
			return nil, errors.New("every node is busy")
		}
		busy[x] = true
		if err := e.c.Pause(x); err != nil {
			delete(busy, x)
			return nil, err
		}
		f.desc = fmt.Sprintf("SIGSTOP %s", e.c.ID(x))
		f.stop = func() error {
			defer delete(busy, x)
			return e.c.Resume(x)
		}
	case NemMember:
		x := e.leaderOrRandom(0.3, busy)
		if busy[x] {
			return nil, errors.New("every node is busy")
		}
		if err := e.removeMember(x); err != nil {
			return nil, err
		}
		busy[x] = true
		// Removal is graceful: the node's replicas move away first. Only
		// a drained node is wiped; wiping one that still holds replicas
		// is a disk loss, and two of those inside the re-replication
		// window take a range's quorum with them, which no 3-replica
		// system survives (an early schedule did exactly that).
		drained := e.waitDrained(x, 45*time.Second)
		if err := e.c.Kill(x); err != nil {
			e.logf("jepsen: membership: kill removed %s: %v", e.c.ID(x), err)
		}
		if !drained {
			e.logf("jepsen: membership: %s still held replicas after 45s; killed, not wiped", e.c.ID(x))
			f.desc = fmt.Sprintf("remove %s (not drained: kill, restart)", e.c.ID(x))
			f.stop = func() error {
				defer delete(busy, x)
				return e.c.Restart(x)
			}
			break
		}
		e.removed[x] = true
		f.desc = fmt.Sprintf("remove %s, wipe it, rejoin", e.c.ID(x))
		f.stop = func() error {
			defer delete(busy, x)
			return e.rejoin(x)
		}
	case NemTransfer:
		// Move the leadership of a random range every 1-2s while the
		// fault lasts.
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				if m, err := e.transferLeader(); err != nil {
					e.logf("jepsen: leader transfer: %v", err)
				} else {
					e.logf("jepsen: leader transfer: %s", m)
				}
				select {
				case <-stop:
					return
				case <-time.After(time.Second + time.Duration(e.rng.Int64N(int64(time.Second)))):
				}
			}
		}()
		f.desc = "leader transfers every 1-2s"
		f.stop = func() error {
			close(stop)
			<-done
			return nil
		}
	case NemKillCoord:
		if err := e.killCoordinator(f, busy); err != nil {
			return nil, err
		}
	case NemSplit:
		desc, err := e.split()
		if err != nil {
			return nil, err
		}
		f.desc = desc
		f.stop = func() error { return nil }
	default:
		return nil, fmt.Errorf("jepsen: unknown nemesis %q", kind)
	}
	return f, nil
}

// liveNodes are the nodes running and not paused.
func (e *nemesisEnv) liveNodes() []int {
	var out []int
	for i := range e.c.N() {
		if e.c.Running(i) && !e.c.Paused(i) {
			out = append(out, i)
		}
	}
	return out
}

// transferLeader asks the leader of a random user range to hand its
// leadership to another replica (Cluster.TransferLeader).
func (e *nemesisEnv) transferLeader() (string, error) {
	type lead struct {
		node  int
		rng   *kvpb.RangeStatus
		other []string
	}
	var leads []lead
	for _, i := range e.liveNodes() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := e.c.Status(ctx, i)
		cancel()
		if err != nil {
			continue
		}
		for _, r := range st.GetNode().GetRanges() {
			if r.GetId() == raftstore.MetaRangeID || r.GetState() != "Leader" {
				continue
			}
			var other []string
			for _, id := range r.GetReplicas() {
				if j := e.c.Index(id); id != e.c.ID(i) && j >= 0 && e.c.Running(j) && !e.c.Paused(j) {
					other = append(other, id)
				}
			}
			if len(other) > 0 {
				leads = append(leads, lead{i, r, other})
			}
		}
	}
	if len(leads) == 0 {
		return "", errors.New("no range leader with a live replica to hand over to")
	}
	l := leads[e.rng.IntN(len(leads))]
	to := l.other[e.rng.IntN(len(l.other))]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := kvpb.NewClusterClient(e.conn(l.node)).TransferLeader(ctx, &kvpb.TransferLeaderRequest{RangeId: l.rng.GetId(), ToNode: to})
	if err != nil {
		return "", fmt.Errorf("range %d %s -> %s: %w", l.rng.GetId(), e.c.ID(l.node), to, err)
	}
	return fmt.Sprintf("range %d %s -> %s", l.rng.GetId(), e.c.ID(l.node), to), nil
}

// split splits the range holding a key the clients used recently, at
// that key (Cluster.SplitRange), through a random live node.
func (e *nemesisEnv) split() (string, error) {
	h := e.rec.History()
	// The clients' recent keys; and, half the time when there are any, the
	// lease workload's, which are far fewer: splits must cut through the
	// keys of live and ending leases too.
	var keys, leaseKeys []string
	for i := len(h.Ops) - 1; i >= 0 && len(keys) < 200; i-- {
		o := &h.Ops[i]
		switch {
		case o.Key == "" || o.F == OpScan:
		case o.F == OpLeasePut && len(leaseKeys) < 50:
			leaseKeys = append(leaseKeys, o.Key)
		case o.Process >= 0:
			keys = append(keys, o.Key)
		}
	}
	if len(leaseKeys) > 0 && (len(keys) == 0 || e.rng.IntN(2) == 0) {
		keys = leaseKeys
	}
	if len(keys) == 0 {
		return "", errors.New("no key to split at yet")
	}
	live := e.liveNodes()
	if len(live) == 0 {
		return "", errors.New("no live node")
	}
	var last error
	for attempt := range 3 {
		key := keys[e.rng.IntN(len(keys))]
		via := live[(attempt+e.rng.IntN(len(live)))%len(live)]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := kvpb.NewClusterClient(e.conn(via)).SplitRange(ctx, &kvpb.SplitRangeRequest{Key: []byte(key)})
		cancel()
		if err == nil {
			return fmt.Sprintf("split at %q: range %d | range %d", key, resp.GetLeft().GetId(), resp.GetRight().GetId()), nil
		}
		last = fmt.Errorf("split at %q via %s: %w", key, e.c.ID(via), err)
	}
	return "", last
}

// removeMember asks the other nodes, in turn, to remove x.
func (e *nemesisEnv) removeMember(x int) error {
	var last error
	for attempt := range 6 {
		via := e.others(x)[attempt%(e.c.N()-1)]
		if !e.c.Running(via) || e.c.Paused(via) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := kvpb.NewClusterClient(e.conn(via)).RemoveMember(ctx, &kvpb.RemoveMemberRequest{Id: e.c.ID(x)})
		cancel()
		if err == nil {
			return nil
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("remove %s: %w", e.c.ID(x), last)
}

// waitDrained waits, up to limit, until node x hosts no replica.
func (e *nemesisEnv) waitDrained(x int, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := e.c.Status(ctx, x)
		cancel()
		if err == nil && len(st.GetNode().GetRanges()) == 0 {
			return true
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}

// rejoin brings a removed node back with an empty data directory and waits
// (up to 30s) until the cluster lists it as a member again.
func (e *nemesisEnv) rejoin(x int) error {
	var via int
	for _, v := range e.others(x) {
		if e.c.Running(v) && !e.c.Paused(v) {
			via = v
			break
		}
	}
	if err := e.c.Rejoin(x, via); err != nil {
		return err
	}
	e.rec.Restarted(e.c.ID(x), "rejoined with an empty data directory")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		resp, err := kvpb.NewClusterClient(e.conn(via)).Members(ctx, &kvpb.MembersRequest{})
		cancel()
		if err == nil {
			for _, m := range resp.GetMembers() {
				// A removed member stays listed, as not a voter: back
				// means active again.
				if m.GetId() == e.c.ID(x) && m.GetVoter() {
					delete(e.removed, x)
					return nil
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s did not rejoin within 30s", e.c.ID(x))
}

// conn is a gRPC connection to node i's client port.
func (e *nemesisEnv) conn(i int) *grpc.ClientConn { return e.cs.grpc[i] }

// Schedule is the nemesis plan of a run.
type Schedule struct {
	Kinds      []string
	HealthyMin time.Duration
	HealthyMax time.Duration
	FaultMin   time.Duration
	FaultMax   time.Duration
	// ComposeRatio is the fraction of fault periods that combine two kinds
	// (0: Config's default, 0.25; negative: never, one fault at a time).
	ComposeRatio float64
}

func (s *Schedule) setDefaults() {
	if s.HealthyMin == 0 {
		s.HealthyMin = 5 * time.Second
	}
	if s.HealthyMax == 0 {
		s.HealthyMax = 10 * time.Second
	}
	if s.FaultMin == 0 {
		s.FaultMin = 5 * time.Second
	}
	if s.FaultMax == 0 {
		s.FaultMax = 15 * time.Second
	}
}

// runSchedule alternates healthy periods and fault periods, drawn from
// the seeded rng, until ctx is done, then stops whatever is active.
func (e *nemesisEnv) runSchedule(ctx context.Context, s Schedule) {
	s.setDefaults()
	// auth-revoke keeps its own timeline (see authRevoker).
	rest, authDone := e.authRevoker(ctx, s.Kinds)
	defer authDone()
	s.Kinds = rest
	if len(s.Kinds) == 0 {
		<-ctx.Done()
		return
	}
	busy := map[int]bool{}
	uniform := func(a, b time.Duration) time.Duration {
		if b <= a {
			return a
		}
		return a + time.Duration(e.rng.Int64N(int64(b-a)))
	}
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	// A round-robin over the families (partition, kill, pause, ...) in a
	// shuffled order, so every family gets its turn early; within the
	// partition family, a random shape.
	byFamily := map[string][]string{}
	for _, k := range s.Kinds {
		byFamily[family(k)] = append(byFamily[family(k)], k)
	}
	families := sortedKeys(byFamily)
	var queue []string
	next := func() string {
		if len(queue) == 0 {
			queue = slices.Clone(families)
			e.rng.Shuffle(len(queue), func(i, j int) { queue[i], queue[j] = queue[j], queue[i] })
		}
		fam := byFamily[queue[0]]
		queue = queue[1:]
		return fam[e.rng.IntN(len(fam))]
	}
	for {
		if !sleep(uniform(s.HealthyMin, s.HealthyMax)) {
			return
		}
		kinds := []string{next()}
		if e.rng.Float64() < s.ComposeRatio && kinds[0] != NemMember {
			for range 4 {
				k := s.Kinds[e.rng.IntN(len(s.Kinds))]
				if family(k) != family(kinds[0]) && k != NemMember {
					kinds = append(kinds, k)
					break
				}
			}
		}
		sort.Strings(kinds)
		var active []*activeFault
		for _, k := range kinds {
			f, err := e.start(k, busy)
			if err != nil {
				e.logf("jepsen: nemesis %s could not start: %v", k, err)
				continue
			}
			name := family(k)
			if len(kinds) > 1 {
				name = "composed"
			}
			f.id = e.rec.FaultStart(name, k+": "+f.desc)
			e.logf("jepsen: nemesis %s: %s", name, f.desc)
			active = append(active, f)
		}
		sleep(uniform(s.FaultMin, s.FaultMax))
		for i := len(active) - 1; i >= 0; i-- {
			f := active[i]
			if err := f.stop(); err != nil {
				e.logf("jepsen: nemesis %s: stopping %s: %v", f.kind, f.desc, err)
			}
			e.rec.FaultEnd(f.id)
			e.logf("jepsen: nemesis healed: %s", f.desc)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// healAll undoes every fault: links, pauses, dead and removed nodes.
func (e *nemesisEnv) healAll() error {
	e.net.Heal()
	var errs []error
	for i := range e.c.N() {
		if e.c.Paused(i) {
			if err := e.c.Resume(i); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for i := range e.c.N() {
		if e.removed[i] {
			if err := e.rejoin(i); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if !e.c.Running(i) {
			if err := e.c.Restart(i); err != nil {
				errs = append(errs, err)
				continue
			}
			e.rec.Restarted(e.c.ID(i), "restart at heal")
		}
	}
	return errors.Join(errs...)
}
