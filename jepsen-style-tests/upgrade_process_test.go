package jepsen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
)

// The rolling upgrade (issue 13): a cluster running the previous release,
// built from git, is upgraded one node at a time (SIGTERM, replace the
// binary, start on the same data directory with the same flags) while
// clients write through every node. Both formats change across it: the
// disk (per-range Raft logs become the node's write-ahead log, migrated on
// the first start) and the peer protocol (per-range 'F' streams become one
// multiplexed link per pair of nodes, with a fallback to the streams for
// peers that do not speak it), so the middle states run mixed links both
// ways. It runs again from the release before link version 3 (the link's
// own layout for appends) and 500 ms state commits, whose nodes speak the
// link at version 2. A second test rolls one node back to the release
// before the write-ahead log.

// release is a release a rolling upgrade starts from.
type release struct {
	commit string
	// perRangeLogs: each range keeps a Raft log and stable store of its
	// own, which the new build moves into its write-ahead log on its
	// first start.
	perRangeLogs bool
	// perRangeStreams: it reaches peers through per-range 'F' streams
	// only, and hands leadership over through Internal.ChangeReplicas.
	perRangeStreams bool
	// noLeases: it has no leases, so grants are refused
	// (FEATURE_UNAVAILABLE) until every node runs the new build.
	noLeases bool
}

var (
	// releaseBeforeWAL is the last commit of the release before the
	// node-wide write-ahead log and the shared Raft link.
	releaseBeforeWAL = release{commit: "2e126ce6f766d9222a674d8a70837ee09a9a1a09", perRangeLogs: true, perRangeStreams: true, noLeases: true}
	// releaseLinkV2 is the last commit before link version 3.
	releaseLinkV2 = release{commit: "c2373ed61b68d0ab9b0cdf2cf6a32bc897710e42"}
)

const (
	// upgradeMaxUnavailable bounds, for every range, the longest stretch
	// of a step (from the SIGTERM of one node to the next one's: the
	// restart on the other binary, the catch-up, the leader transfers
	// and the audit) in which no write and no linearizable read of the
	// range succeeded through any node.
	upgradeMaxUnavailable = 5 * time.Second
	// upgradeSettleTimeout bounds the wait, after a node is ready, for
	// every range to have a leader and the node's replicas to catch up.
	upgradeSettleTimeout = 30 * time.Second
	// auditProcess is the Process of the reads that check, after each
	// step, that every acknowledged write is still there.
	auditProcess = 1000
	// upgradeClients is the number of concurrent writers.
	upgradeClients = 6
)

// How a new node says, in its log, how it reaches a peer (package link:
// replication/link/peer.go). Nothing else exposes it: /metrics and the
// status API have no link counters.
const (
	linkLegacyMsg = `msg="link: peer speaks only per-range streams`
	linkUpMsg     = `msg="link: peer speaks the link now"`
)

// buildRelease builds kvd of commit into dir: the source comes out of the
// repository with git archive (no worktree to clean up, the checkout
// untouched) and is removed after the build.
func buildRelease(dir, commit string) (string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	defer os.RemoveAll(src)
	archive := filepath.Join(dir, "src.tar")
	defer os.Remove(archive)
	bin := filepath.Join(dir, "kvd-"+commit[:7])
	for _, cmd := range []*exec.Cmd{
		exec.CommandContext(ctx, "git", "-C", root, "archive", "--format=tar", "-o", archive, commit),
		exec.CommandContext(ctx, "tar", "-xf", archive, "-C", src),
		exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/kvd"),
	} {
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("building the release %s: %s: %w\n%s", commit[:7], strings.Join(cmd.Args, " "), err, out)
		}
	}
	return bin, nil
}

// TestProcess_RollingUpgradeLosesNothing upgrades a 3-node cluster of a
// previous release, split into 9 ranges under writes, one node at a time,
// each new node migrating its data directory on its first start (from the
// release before the write-ahead log). After
// every step: the restarted node has caught up, every acknowledged write
// reads back linearizably, and each range was unavailable for at most
// upgradeMaxUnavailable. In
// the middle states the new nodes reach old peers through per-range
// streams (or the link at the old node's version) and each other through
// the link, with ranges led by new and by
// old nodes (entries flow both ways). At the end: every checker over the
// whole history, and every range's replicas agree by digest.
func TestProcess_RollingUpgradeLosesNothing(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	for _, rel := range []release{releaseBeforeWAL, releaseLinkV2} {
		t.Run("from "+rel.commit[:7], func(t *testing.T) { rollingUpgrade(t, rel) })
	}
}

func rollingUpgrade(t *testing.T, rel release) {
	began := time.Now()
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf(time.Now().UTC().Format("15:04:05.000 ")+format, args...)
	}
	buildStart := time.Now()
	oldBin, err := buildRelease(t.TempDir(), rel.commit)
	if err != nil {
		t.Fatal(err)
	}
	logf("built the previous release %s in %v", rel.commit[:7], time.Since(buildStart).Round(time.Millisecond))

	out, err := os.MkdirTemp("", "dialkv-upgrade-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("node logs, data and history kept in %s", out)
			return
		}
		os.RemoveAll(out)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	c, err := Start(ctx, Options{KvdPath: oldBin, Dir: filepath.Join(out, "nodes"), Nodes: 3, Logf: logf})
	if err != nil {
		t.Fatalf("start a cluster of the previous release: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(t, 40)
		}
		c.Close()
	})
	cs, err := DialCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	rec, err := NewRecorder(filepath.Join(out, "history.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()

	wl := WorkloadConfig{RegisterKeys: 3, ListKeys: 2, ThinkTime: 10 * time.Millisecond}
	wl.setDefaults()
	keys := crashKeys{buckets: 3, wl: wl}
	splitter := &crashLoop{c: c, cs: cs, logf: logf, keys: keys, splitKeys: map[string]bool{}}
	if err := splitter.splitKeySpace(ctx); err != nil {
		t.Fatalf("split the key space on the previous release: %v", err)
	}

	r := &rolling{t: t, c: c, cs: cs, rec: rec, keys: keys, logf: logf, rel: rel, oldBin: oldBin, newBin: kvdBin,
		bins: []string{oldBin, oldBin, oldBin}}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	sh := &shared{latest: map[string]string{}}
	var wg sync.WaitGroup
	for i := range upgradeClients {
		w := &worker{id: i, rng: rand.New(rand.NewPCG(20261202, uint64(i)+1)), cs: cs, rec: rec, cfg: wl, shared: sh, nodes: c.N()}
		cw := &crashWriter{w: w, keys: keys}
		wg.Go(func() { cw.run(wctx) })
	}
	// A granter through every node in turn, renewing each lease once: the
	// meta range's leadership passes between the releases, which take
	// lease ids differently (a previous one with leases increments
	// lease/next once per grant; this one reserves blocks of it), and the
	// lease checker holds every answered grant to an id of its own.
	wg.Go(func() { grantLeases(wctx, cs, rec) })
	writersStart := rec.Now()
	// The previous release takes writes in every range first: those are
	// what the first start of the new build has to migrate.
	if err := waitAcked(ctx, rec, 300, 20*time.Second); err != nil {
		t.Fatalf("on the previous release: %v", err)
	}

	// The upgrade, one node at a time; the middle states run mixed links.
	for i := range c.N() {
		if !r.step(ctx, i, r.newBin, "upgrade") {
			break
		}
		var newer, older []int
		for j := range c.N() {
			if r.bins[j] == r.newBin {
				newer = append(newer, j)
			} else {
				older = append(older, j)
			}
		}
		r.checkMixedLinks(ctx, newer, older)
	}
	wcancel()
	wg.Wait()
	writersEnd := rec.Now()

	finalReads(ctx, cs, rec, c.N(), wl.OpTimeout, logf)
	replicas := replicaResult(ctx, c, replicaWait{Timeout: 30 * time.Second, Interval: 500 * time.Millisecond}, logf)
	if err := rec.Close(); err != nil {
		t.Errorf("writing the history: %v", err)
	}
	h := rec.History()
	copts := CheckOptions{LinearizableTimeout: 30 * time.Second}
	results := append(Check(h, copts), replicas, crashResult(c, copts))
	for _, res := range results {
		logf("checker %s: %s, %d checked; %s", res.Checker, res.Verdict, res.Checked, strings.Join(res.Notes, "; "))
		if res.Failing() {
			t.Errorf("checker %s: %s, %d violations; first ones: %+v", res.Checker, res.Verdict, res.ViolationCount, res.Violations[:min(3, len(res.Violations))])
		}
	}
	var writes Counts
	for _, o := range h.ClientOps() {
		if o.Process >= 0 && o.Process < upgradeClients && o.IsWrite() {
			writes.add(o)
		}
	}
	if writes.OK < 500 {
		t.Errorf("only %d acknowledged writes; the run did not exercise the upgrade", writes.OK)
	}
	var grants, keepalives Counts
	for _, o := range h.ClientOps() {
		switch o.F {
		case OpLeaseGrant:
			grants.add(o)
		case OpLeaseKeepAlive:
			keepalives.add(o)
		}
	}
	// Without leases in the previous release, grants begin only once the
	// last node is upgraded, which leaves the run's end to them.
	if !rel.noLeases && (grants.OK < 20 || keepalives.OK < 20) {
		t.Errorf("only %d leases granted (%d failed, %d indeterminate) and %d renewed (%d, %d); the run did not exercise leases across the releases",
			grants.OK, grants.Fail, grants.Info, keepalives.OK, keepalives.Fail, keepalives.Info)
	}
	r.checkAvailability(h, writersEnd)
	whole, group := longestGap(h, keys, writersStart, writersEnd)
	for _, s := range r.steps {
		logf("step %s: caught up %v after the SIGTERM; over the %v to the next step, longest unavailability of a range %v (%s), %d writes and linearizable reads ok, %d failed, %d indeterminate; audit read %d keys and the set",
			s.name, s.took.Round(time.Millisecond), s.window.Round(time.Millisecond), s.gap.Round(time.Millisecond), s.gapGroup, s.ok, s.failed, s.info, s.audited)
	}
	logf("rolling upgrade: %d writes (%d acknowledged, %d failed, %d indeterminate), %d leases granted and %d renewed, longest unavailability of a range over the whole run %v (%s), %v in all",
		writes.Total, writes.OK, writes.Fail, writes.Info, grants.OK, keepalives.OK, time.Duration(whole).Round(time.Millisecond), group, time.Since(began).Round(time.Second))
}

// grantLeases grants leases through the nodes in turn until ctx ends,
// recording each grant; their TTL outlasts the run, so that none ends
// during it.
func grantLeases(ctx context.Context, cs *Conns, rec *Recorder) {
	const ttl = 600
	for i := 0; ctx.Err() == nil && i < 1_000_000; i++ {
		node := i % len(cs.ids)
		start := rec.Now()
		op := grantLease(ctx, cs, node, ttl, 5*time.Second)
		op.Process, op.Start, op.End = LeaseProcess, start, rec.Now()
		rec.Add(op)
		if op.Type == OK {
			keepAliveOnce(ctx, cs, rec, (node+1)%len(cs.ids), op.Lease)
		}
		sleepCtx(ctx, 20*time.Millisecond) // a client's pace, not a wait for anything
	}
}

// keepAliveOnce renews lease id once on a KeepAlive stream through node,
// recording it: a lease granted by one release is renewed by another,
// and the lease checker holds no renewal to be refused before the TTL
// of the last answered one has passed.
func keepAliveOnce(ctx context.Context, cs *Conns, rec *Recorder, node int, id int64) {
	op := Op{Process: LeaseProcess, Node: cs.ids[node], API: APIGRPC, F: OpLeaseKeepAlive, Lease: id}
	start := rec.Now()
	kctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if stream, err := kvpb.NewLeaseClient(cs.grpc[node]).KeepAlive(kctx); err != nil {
		leaseError(&op, err, nil)
	} else if renewOn(stream, &op) == nil {
		stream.CloseSend()
	}
	op.Start, op.End = start, rec.Now()
	rec.Add(op)
}

// rolling is the state of one rolling upgrade.
type rolling struct {
	t              *testing.T
	c              *Cluster
	cs             *Conns
	rec            *Recorder
	keys           crashKeys
	logf           func(string, ...any)
	rel            release // what oldBin was built from
	oldBin, newBin string
	bins           []string // the binary each node runs now
	steps          []stepReport
}

// stepReport is what one step measured.
type stepReport struct {
	name  string
	start int64         // the SIGTERM, on the recorder's clock
	took  time.Duration // from the SIGTERM to caught up
	// window is what availability is measured over: from the SIGTERM to
	// the next step's.
	window           time.Duration
	gap              time.Duration // the longest a range went without a success
	gapGroup         string        // that range, by its first key
	ok, failed, info int           // writes and linearizable reads
	audited          int
}

func (r *rolling) binName(bin string) string {
	if bin == r.oldBin {
		return "previous release " + r.rel.commit[:7]
	}
	return "new build"
}

// step replaces node i's binary with bin: SIGTERM, wait for the exit,
// start it on bin with the same flags and data, wait until it is ready and
// has caught up. Then it audits every acknowledged write (checkAvailability
// measures the step later). It reports false (the test has failed) when the
// upgrade cannot go on.
func (r *rolling) step(ctx context.Context, i int, bin, why string) bool {
	t, c := r.t, r.c
	name := fmt.Sprintf("%s %s to the %s", why, c.ID(i), r.binName(bin))
	r.logf("=== %s", name)
	began, start := time.Now(), r.rec.Now()
	fault := r.rec.FaultStart("upgrade", name)
	defer r.rec.FaultEnd(fault)
	if err := c.Stop(i); err != nil {
		// Still replaced: the process is gone either way.
		t.Errorf("%s: SIGTERM: %v", name, err)
	}
	// The previous release's layout, each range with a log of its own,
	// is what the new build has to migrate.
	migrating := r.bins[i] == r.oldBin && bin == r.newBin && r.rel.perRangeLogs
	oldLogs, err := filepath.Glob(filepath.Join(c.DataDir(i), "ranges", "*", "log"))
	if err != nil {
		t.Fatal(err)
	}
	if migrating && len(oldLogs) == 0 {
		t.Errorf("%s: the data directory holds no per-range log to migrate", name)
	}
	if err := c.SetKvdPath(i, bin); err != nil {
		t.Fatal(err)
	}
	r.bins[i] = bin
	if err := c.Restart(i); err != nil {
		t.Errorf("%s: start: %v", name, err)
		return false
	}
	r.rec.Restarted(c.ID(i), name)
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = c.WaitReady(rctx, i)
	cancel()
	if err != nil {
		t.Errorf("%s: not ready: %v", name, err)
		return false
	}
	r.cs.grpc[i].ResetConnectBackoff()
	if migrating {
		r.checkMigrated(i, len(oldLogs))
	}
	if err := r.waitCaughtUp(ctx, []int{i}); err != nil {
		t.Errorf("%s: %v", name, err)
		return false
	}
	r.rec.FaultEnd(fault)
	s := stepReport{name: name, start: start, took: time.Since(began)}
	s.audited = r.audit(ctx, name)
	r.logf("%s: ready and caught up %v after the SIGTERM; %d keys audited", name, s.took.Round(time.Millisecond), s.audited)
	r.steps = append(r.steps, s)
	return !t.Failed()
}

// checkAvailability measures each step, from its SIGTERM to the next
// step's (the last one to end, when the writers stopped): the longest a
// range went without a successful write or linearizable read, and the
// writers' ops. It fails the test when a range was unavailable for longer
// than upgradeMaxUnavailable.
func (r *rolling) checkAvailability(h *History, end int64) {
	for k := range r.steps {
		s := &r.steps[k]
		to := end
		if k+1 < len(r.steps) {
			to = r.steps[k+1].start
		}
		gap, group := longestGap(h, r.keys, s.start, to)
		s.gap, s.gapGroup, s.window = time.Duration(gap), group, time.Duration(to-s.start)
		for _, o := range h.ClientOps() {
			if o.Process >= 0 && o.Process < upgradeClients && o.Start >= s.start && o.Start < to && availabilityOp(o) {
				switch o.Type {
				case OK:
					s.ok++
				case Fail:
					s.failed++
				default:
					s.info++
				}
			}
		}
		if s.gap > upgradeMaxUnavailable {
			r.t.Errorf("%s: range %s took no write or linearizable read for %v (bound %v)", s.name, group, s.gap.Round(time.Millisecond), upgradeMaxUnavailable)
		}
	}
}

// waitAcked waits until the writers have n acknowledged writes.
func waitAcked(ctx context.Context, rec *Recorder, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		acked := 0
		for _, o := range rec.History().Ops {
			if o.Process >= 0 && o.Process < upgradeClients && o.IsWrite() && o.Type == OK {
				acked++
			}
		}
		if acked >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%d acknowledged writes after %v, want %d", acked, timeout, n)
		}
		select { // writes complete on their own: nothing to await but a poll
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// availabilityOp reports whether o counts for availability: a write or a
// linearizable read.
func availabilityOp(o *Op) bool {
	return o.IsWrite() || (o.F == OpGet && o.Level == Linearizable)
}

// longestGap is, over the ranges the writers use (one per split point),
// the longest time within [from, to] in which no write or linearizable
// read of the range succeeded, and that range's first key.
func longestGap(h *History, keys crashKeys, from, to int64) (int64, string) {
	points := keys.splitPoints()
	done := map[string][]int64{}
	for _, o := range h.ClientOps() {
		if o.Process < 0 || o.Process >= upgradeClients || o.Type != OK || !availabilityOp(o) || o.End < from || o.End > to {
			continue
		}
		for _, p := range points {
			if strings.HasPrefix(o.Key, p) {
				done[p] = append(done[p], o.End)
				break
			}
		}
	}
	var worst int64
	worstGroup := ""
	for _, p := range points {
		ends := append([]int64{from}, done[p]...)
		slices.Sort(ends)
		ends = append(ends, to)
		for k := 1; k < len(ends); k++ {
			if g := ends[k] - ends[k-1]; g > worst {
				worst, worstGroup = g, p
			}
		}
	}
	return worst, worstGroup
}

// rangeView is one poll of every running node's status.
type rangeView struct {
	byRange map[uint64]map[int]*kvpb.RangeStatus // range -> node index -> its report
}

func (r *rolling) view(ctx context.Context) rangeView {
	v := rangeView{byRange: map[uint64]map[int]*kvpb.RangeStatus{}}
	for i := range r.c.N() {
		if !r.c.Running(i) {
			continue
		}
		st, err := r.c.Status(ctx, i)
		if err != nil {
			continue
		}
		for _, rs := range st.GetNode().GetRanges() {
			if v.byRange[rs.GetId()] == nil {
				v.byRange[rs.GetId()] = map[int]*kvpb.RangeStatus{}
			}
			v.byRange[rs.GetId()][i] = rs
		}
	}
	return v
}

// leader is the node leading range id in v (the highest term's claim), or
// -1.
func (v rangeView) leader(id uint64) int {
	best, term := -1, uint64(0)
	for i, rs := range v.byRange[id] {
		if rs.GetState() == "Leader" && (best < 0 || rs.GetTerm() > term) {
			best, term = i, rs.GetTerm()
		}
	}
	return best
}

// waitCaughtUp waits until every range has a leader (or sleeps on every
// replica: hibernation) and each of nodes has applied, in every range, at
// least what the leader had applied when that was first true.
func (r *rolling) waitCaughtUp(ctx context.Context, nodes []int) error {
	deadline := time.Now().Add(upgradeSettleTimeout)
	var targets map[uint64]uint64
	last := ""
	for {
		v := r.view(ctx)
		if targets == nil && len(v.byRange) > 0 {
			t := map[uint64]uint64{}
			for id, reps := range v.byRange {
				if l := v.leader(id); l >= 0 {
					t[id] = reps[l].GetAppliedIndex()
					continue
				}
				asleep := true
				for _, rs := range reps {
					asleep = asleep && rs.GetState() == "Hibernating"
					t[id] = max(t[id], rs.GetAppliedIndex())
				}
				if !asleep {
					t, last = nil, fmt.Sprintf("range %d has no leader", id)
					break
				}
			}
			targets = t
		}
		if targets != nil {
			var behind []string
			for id, target := range targets {
				for _, i := range nodes {
					if rs := v.byRange[id][i]; rs == nil || rs.GetAppliedIndex() < target {
						behind = append(behind, fmt.Sprintf("%s range %d at %d of %d", r.c.ID(i), id, rs.GetAppliedIndex(), target))
					}
				}
			}
			if len(behind) == 0 {
				return nil
			}
			slices.Sort(behind)
			last = strings.Join(behind, ", ")
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not caught up within %v: %s", upgradeSettleTimeout, last)
		}
		select { // replicas catch up on their own: nothing to await but a poll
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// audit reads every register and list key with an acknowledged write, and
// the whole set, at the linearizable level while the writers go on, and
// checks that each read reflects every write acknowledged before it began.
// The reads go into the history (so the linearizability checker sees them
// too). It returns the number of keys read.
func (r *rolling) audit(ctx context.Context, name string) int {
	t := r.t
	h := r.rec.History()
	keys := map[string]bool{}
	for _, o := range h.ClientOps() {
		if o.Type == OK && (o.F == OpPut || o.F == OpCAS || o.F == OpAppend) {
			keys[o.Key] = true
		}
	}
	list := sortedKeys(keys)
	deadline := time.Now().Add(20 * time.Second)
	read := func(req Request, n int) bool {
		for attempt := n; time.Now().Before(deadline) && ctx.Err() == nil; attempt++ {
			req.Node, req.Timeout = attempt%r.c.N(), 2*time.Second
			start := r.rec.Now()
			op := r.cs.Do(req)
			op.Start, op.End, op.Process = start, r.rec.Now(), auditProcess
			r.rec.Add(op)
			if op.Type == OK {
				return true
			}
			time.Sleep(100 * time.Millisecond) // a new leader takes about this long
		}
		return false
	}
	from := r.rec.Now()
	var mu sync.Mutex
	var unread []string
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 6 {
		wg.Go(func() {
			for k := range jobs {
				if !read(Request{API: APIGRPC, F: OpGet, Key: list[k], Level: Linearizable}, k) {
					mu.Lock()
					unread = append(unread, list[k])
					mu.Unlock()
				}
			}
		})
	}
	for k := range list {
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	if !read(Request{API: APIGRPC, F: OpScan, Key: SetPrefix, Level: Linearizable, AllPages: true}, 0) {
		unread = append(unread, "the set")
	}
	if len(unread) > 0 {
		t.Errorf("%s: audit: no linearizable read of %d keys succeeded within 20s: %v", name, len(unread), unread[:min(5, len(unread))])
	}

	ix := newIndex(r.rec.History())
	writes := writesByKey(ix)
	lost := 0
	for _, rd := range ix.ops {
		if rd.Process != auditProcess || rd.Start < from || rd.Type != OK {
			continue
		}
		switch rd.F {
		case OpGet:
			for _, w := range writes[rd.Key] {
				if w.Type != OK || w.End >= rd.Start {
					continue
				}
				if why := staleAgainst(ix, rd, w); why != "" {
					lost++
					if lost <= 5 {
						t.Errorf("%s: audit: acknowledged write lost: linearizable read #%d of %s via %s %s", name, rd.Index, rd.Key, rd.Node, why)
					}
					break
				}
			}
		case OpScan:
			have := map[string]bool{}
			for _, e := range rd.Elements {
				have[e] = true
			}
			for _, a := range ix.ops {
				if a.F == OpAdd && a.Type == OK && a.End < rd.Start && !have[a.Value] {
					lost++
					if lost <= 5 {
						t.Errorf("%s: audit: acknowledged add of %s (#%d) missing from linearizable scan #%d via %s", name, a.Value, a.Index, rd.Index, rd.Node)
					}
				}
			}
		}
	}
	if lost > 5 {
		t.Errorf("%s: audit: %d acknowledged writes lost in all", name, lost)
	}
	return len(list)
}

// currentLog is what node i's current process has logged: its log after
// the harness's last start marker.
func (r *rolling) currentLog(i int) (string, error) {
	b, err := os.ReadFile(r.c.LogPath(i))
	if err != nil {
		return "", err
	}
	text := string(b)
	if k := strings.LastIndex(text, fmt.Sprintf(": starting %s: ", r.c.ID(i))); k >= 0 {
		text = text[k:]
	}
	return text, nil
}

// linkLines returns node i's log lines of its current process (after the
// harness's last start marker) that say how it reaches the peer at addr:
// linkLegacyMsg or linkUpMsg, in order.
func (r *rolling) linkLines(i int, addr string) ([]string, error) {
	text, err := r.currentLog(i)
	if err != nil {
		return nil, err
	}
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if (strings.Contains(l, linkLegacyMsg) || strings.Contains(l, linkUpMsg)) &&
			(strings.Contains(l, " peer="+addr+" ") || strings.HasSuffix(l, " peer="+addr)) {
			out = append(out, l)
		}
	}
	return out, nil
}

// transferLeader hands range id's leadership from leader to node to,
// through the API the leader's binary has: the release before the link's
// Internal.ChangeReplicas on its client port, later ones'
// Cluster.TransferLeader.
func (r *rolling) transferLeader(ctx context.Context, id uint64, leader, to int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var err error
	if r.bins[leader] == r.oldBin && r.rel.perRangeStreams {
		_, err = kvpb.NewInternalClient(r.cs.grpc[leader]).ChangeReplicas(ctx, &kvpb.ChangeReplicasRequest{RangeId: id, TransferLeaderTo: r.c.ID(to)})
	} else {
		_, err = kvpb.NewClusterClient(r.cs.grpc[leader]).TransferLeader(ctx, &kvpb.TransferLeaderRequest{RangeId: id, ToNode: r.c.ID(to)})
	}
	if err != nil {
		return fmt.Errorf("transfer range %d from %s (%s) to %s: %w", id, r.c.ID(leader), r.binName(r.bins[leader]), r.c.ID(to), err)
	}
	r.logf("transferred range %d from %s (%s) to %s (%s)", id, r.c.ID(leader), r.binName(r.bins[leader]), r.c.ID(to), r.binName(r.bins[to]))
	return nil
}

// ensureLeaders makes every new node lead a range the writers use and,
// while any old node is left, an old node lead one too: then entries flow from new
// leaders to old followers and from old leaders to new followers.
func (r *rolling) ensureLeaders(ctx context.Context, newer, older []int) error {
	deadline := time.Now().Add(20 * time.Second)
	points := r.keys.splitPoints()
	for {
		v := r.view(ctx)
		// Only ranges the writers keep busy count: an idle one hibernates,
		// and its leader stops calling its peers.
		leads := map[int][]uint64{}
		for id := range v.byRange {
			if l := v.leader(id); l >= 0 && slices.Contains(points, string(v.byRange[id][l].GetStart())) {
				leads[l] = append(leads[l], id)
			}
		}
		// The one to hand a range to, and the leader of most ranges to
		// take it from.
		to := -1
		for _, i := range newer {
			if len(leads[i]) == 0 {
				to = i
				break
			}
		}
		if to < 0 && len(older) > 0 {
			oldLeads := 0
			for _, i := range older {
				oldLeads += len(leads[i])
			}
			if oldLeads == 0 {
				to = older[0]
			}
		}
		if to < 0 {
			return nil
		}
		from := -1
		for i, ids := range leads {
			if i != to && (from < 0 || len(ids) > len(leads[from])) {
				from = i
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s leads no range after 20s (leaders: %v)", r.c.ID(to), leads)
		}
		if from >= 0 {
			slices.Sort(leads[from])
			if err := r.transferLeader(ctx, leads[from][0], from, to); err != nil {
				r.logf("%v; trying again", err)
			}
		}
		select { // a transfer takes an election: poll for its outcome
		case <-ctx.Done():
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// checkMixedLinks checks, with the nodes in newer on the new build and
// those in older on the previous release, that ranges are led from both
// sides and every replica catches up (entries flow new to old and old to
// new), and that each new node reaches old peers through per-range
// streams and new peers through the link (its log: nothing else exposes
// it).
func (r *rolling) checkMixedLinks(ctx context.Context, newer, older []int) {
	t, c := r.t, r.c
	state := fmt.Sprintf("%d new, %d old", len(newer), len(older))
	if err := r.ensureLeaders(ctx, newer, older); err != nil {
		t.Errorf("%s: %v", state, err)
		return
	}
	all := make([]int, c.N())
	for i := range all {
		all[i] = i
	}
	if err := r.waitCaughtUp(ctx, all); err != nil {
		t.Errorf("%s: with ranges led by new and old nodes: %v", state, err)
	}
	if !r.rel.perRangeStreams {
		// Old and new speak the link, at the old node's version; the
		// versions chosen are checked in replication/link's tests.
		r.logf("%s: ranges led by new and old nodes, every replica caught up", state)
		return
	}
	// A new node that leads a range calls its old replicas at once, and a
	// new peer first marked legacy (it was old then) is probed again
	// within the link's ProbeInterval (10s).
	deadline := time.Now().Add(15 * time.Second)
	for {
		var wrong []string
		var summary []string
		for _, a := range newer {
			for b := range c.N() {
				if a == b {
					continue
				}
				lines, err := r.linkLines(a, c.RaftAddrs()[b])
				if err != nil {
					t.Fatal(err)
				}
				legacyLast := len(lines) > 0 && strings.Contains(lines[len(lines)-1], linkLegacyMsg)
				switch {
				case slices.Contains(older, b) && !legacyLast:
					wrong = append(wrong, fmt.Sprintf("%s has not reached old %s through per-range streams (%d link lines)", c.ID(a), c.ID(b), len(lines)))
				case slices.Contains(newer, b) && legacyLast:
					wrong = append(wrong, fmt.Sprintf("%s still reaches new %s through per-range streams", c.ID(a), c.ID(b)))
				}
				mode := "link"
				if legacyLast {
					mode = "per-range streams"
				}
				summary = append(summary, fmt.Sprintf("%s->%s %s (%d lines)", c.ID(a), c.ID(b), mode, len(lines)))
			}
		}
		if len(wrong) == 0 {
			r.logf("%s: links: %s", state, strings.Join(summary, ", "))
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: links: %s", state, strings.Join(wrong, "; "))
			return
		}
		time.Sleep(250 * time.Millisecond) // a log line to appear: nothing to await
	}
}

// checkMigrated checks that node i, started on the new build over a data
// directory of the previous release with ranges per-range logs, moved it
// to the new layout: its log says so, range by range, and no range keeps a
// log or stable store of its own.
func (r *rolling) checkMigrated(i, ranges int) {
	t := r.t
	text, err := r.currentLog(i)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text, `msg="data directory upgraded"`) || !strings.Contains(text, " from=1") {
		t.Errorf("%s: the new build did not log that it upgraded the data directory from layout 1", r.c.ID(i))
	}
	if moved := strings.Count(text, `msg="moved a range's log into the node's WAL"`); moved != ranges {
		t.Errorf("%s: the new build moved %d ranges' logs into its WAL, want %d", r.c.ID(i), moved, ranges)
	}
	// Each Raft group starts from the configuration in its migrated log
	// (hashicorp/raft logs the index it found): index 0 is a group that
	// starts with no log, which the other nodes would mask here.
	started, empty := 0, 0
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, `msg="initial configuration"`) {
			started++
			if strings.Contains(l, " index=0 ") {
				empty++
			}
		}
	}
	if started < ranges || empty > 0 {
		t.Errorf("%s: %d Raft groups started, %d of them with no configuration (an empty log); want at least %d, none empty", r.c.ID(i), started, empty, ranges)
	}
	// What is left in each range's directory: no raft.db, and where the
	// log directory was, a file (the fence an older kvd stops on).
	for _, pattern := range []string{"ranges/*/log", "ranges/*/raft.db"} {
		left, err := filepath.Glob(filepath.Join(r.c.DataDir(i), pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range left {
			if fi, err := os.Stat(p); err != nil || filepath.Base(p) != "log" || !fi.Mode().IsRegular() {
				t.Errorf("%s: per-range storage of the previous release left after the migration: %s", r.c.ID(i), p)
			}
		}
	}
}

// TestProcess_RollbackToPreviousReleaseKeepsAcknowledgedWrites rolls one
// node of a cluster on the new build back to a previous release at the
// worst moment: its data directory holds acknowledged writes that only it
// and a node that is down have. The release before the write-ahead log
// knows nothing of it, so it must either refuse the data directory (exit
// with an error and leave it as it was, for the new build to start on
// again) or run on the Raft state the directory holds. The release before
// link version 3 refuses it too since snapshots became references to
// state.db (storage layout 3). Running with an empty Raft
// log and no vote on record would let the node that missed the writes win
// an election with its vote and drop them.
//
// Steps, with D, L and F the three nodes: stop D; acknowledged puts
// through L, the leader, so L and F alone have them; kill -9 L; stop F and
// start it on the binary under test; start D; every acknowledged put must
// read back linearizably, before and after L is back, and the replicas
// must agree. "restart on the new build" is the control: the same steps
// without the rollback.
func TestProcess_RollbackToPreviousReleaseKeepsAcknowledgedWrites(t *testing.T) {
	if buildErr != nil {
		t.Fatalf("building the binaries: %v", buildErr)
	}
	for _, tc := range []struct {
		name string
		to   string // the release's commit; "" for the new build
	}{
		{"restart on the new build", ""},
		{"roll back to the release before the write-ahead log", releaseBeforeWAL.commit},
		{"roll back to the release before link version 3", releaseLinkV2.commit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin := kvdBin
			if tc.to != "" {
				var err error
				if bin, err = buildRelease(t.TempDir(), tc.to); err != nil {
					t.Fatal(err)
				}
			}
			rollbackCase(t, bin, tc.to != "")
		})
	}
}

// rollbackKeyspace holds the rollback test's keys: a register key each.
const rollbackKeyspace = RegisterPrefix + "rollback/"

// rollbackCase runs the steps with F restarted on bin, the previous
// release when rollBack is set.
func rollbackCase(t *testing.T, bin string, rollBack bool) {
	logf := func(format string, args ...any) {
		t.Helper()
		t.Logf(time.Now().UTC().Format("15:04:05.000 ")+format, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c, err := Start(ctx, Options{KvdPath: kvdBin, Dir: dir, Nodes: 3, Logf: logf})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			c.DumpLogs(t, 40)
		}
		c.Close()
	})
	cs, err := DialCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	leaderOf := func(key string) int {
		t.Helper()
		lctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		l, err := c.LeaderOf(lctx, key)
		if err != nil {
			t.Fatalf("leader of %q: %v", key, err)
		}
		return l
	}

	// D: a node that does not lead the keys' range.
	down := (leaderOf(rollbackKeyspace) + 1) % c.N()
	if err := c.Stop(down); err != nil {
		t.Fatal(err)
	}
	leader := leaderOf(rollbackKeyspace)
	follower := 3 - down - leader
	acked := map[string]string{}
	for k := range 20 {
		key, val := fmt.Sprintf("%s%02d", rollbackKeyspace, k), fmt.Sprintf("v%02d", k)
		for attempt := 0; attempt < 5; attempt++ {
			op := cs.Do(Request{Node: leader, API: APIGRPC, F: OpPut, Key: key, Value: val, Timeout: 2 * time.Second})
			if op.Type == OK {
				acked[key] = val
				break
			}
			logf("put %s via %s: %s %s", key, c.ID(leader), op.Type, op.Error)
		}
	}
	if len(acked) == 0 {
		t.Fatal("no put acknowledged with one node down")
	}
	logf("%d puts acknowledged by %s and %s while %s was down", len(acked), c.ID(leader), c.ID(follower), c.ID(down))

	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(follower); err != nil {
		t.Fatal(err)
	}
	if err := c.SetKvdPath(follower, bin); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(follower); err != nil {
		t.Fatal(err)
	}
	logf("%s restarted on %s", c.ID(follower), bin)
	if rollBack {
		// A refusal comes at once, on opening the data directory.
		refused := false
		for poll := 0; poll < 50; poll++ {
			if !c.Running(follower) {
				refused = true
				break
			}
			time.Sleep(100 * time.Millisecond) // nothing to await: an exit, or none
		}
		if refused {
			tail, _ := c.LogTail(follower, 20)
			// kvd before the WAL finds a file (the fence) where it
			// wants its log directory, and a later one a storage layout
			// newer than its own (snapshots by reference); each says so
			// as it exits.
			if !strings.Contains(tail, "kvd: raftstore: open log of range") && !strings.Contains(tail, "written by a newer build") {
				t.Errorf("the previous release exited on the new data directory without saying why:\n%s", tail)
			}
			logf("the previous release refused the data directory:\n%s", tail)
			// Refused: the new build must start on the directory as it was.
			if err := c.SetKvdPath(follower, kvdBin); err != nil {
				t.Fatal(err)
			}
			if err := c.Restart(follower); err != nil {
				t.Fatal(err)
			}
		} else {
			text, _ := os.ReadFile(c.LogPath(follower))
			section := string(text)
			if k := strings.LastIndex(section, fmt.Sprintf(": starting %s: ", c.ID(follower))); k >= 0 {
				section = section[k:]
			}
			empty := 0
			for l := range strings.SplitSeq(section, "\n") {
				if strings.Contains(l, `msg="initial configuration"`) && strings.Contains(l, " index=0 ") {
					empty++
				}
			}
			logf("the previous release runs on the new data directory: it started %d Raft groups with no state (hashicorp/raft's \"initial configuration\" at index 0)", empty)
		}
	}
	if err := c.Restart(down); err != nil {
		t.Fatal(err)
	}

	readAll := func(when string) {
		t.Helper()
		lost := 0
		for _, key := range sortedKeys(acked) {
			var op Op
			for attempt := 0; attempt < 40; attempt++ {
				n := attempt % c.N()
				if !c.Running(n) {
					continue
				}
				op = cs.Do(Request{Node: n, API: APIGRPC, F: OpGet, Key: key, Level: Linearizable, Timeout: 2 * time.Second})
				if op.Type == OK {
					break
				}
				time.Sleep(100 * time.Millisecond) // an election takes about this long
			}
			switch {
			case op.Type != OK:
				t.Errorf("%s: no linearizable read of %s succeeded: %s", when, key, op.Error)
			case op.Missing || op.Value != acked[key]:
				lost++
				if lost <= 3 {
					t.Errorf("%s: acknowledged put %s=%s lost: a linearizable read via %s (served by %s) returned missing=%v %q",
						when, key, acked[key], op.Node, op.ServedBy, op.Missing, op.Value)
				}
			}
		}
		if lost > 0 {
			t.Errorf("%s: %d of %d acknowledged puts lost", when, lost, len(acked))
		}
	}
	readAll(fmt.Sprintf("with %s killed", c.ID(leader)))
	if err := c.Restart(leader); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 30*time.Second)
	err = c.WaitReady(rctx)
	rcancel()
	if err != nil {
		t.Fatalf("not ready with every node back: %v", err)
	}
	readAll("with every node back")
	if res := replicaResult(ctx, c, replicaWait{Timeout: 20 * time.Second, Interval: 500 * time.Millisecond}, logf); res.Failing() {
		t.Errorf("replicas: %s: %+v; %v", res.Verdict, res.Violations, res.Notes)
	}
}
