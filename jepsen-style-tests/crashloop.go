package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/raftstore"
)

// The crash loop (make crash-loop) proves that kill -9 loses nothing: a
// cluster with many ranges takes writes while, cycle after cycle, a random
// node is killed with SIGKILL, left down for a while and restarted. At the
// end every acknowledged write must be in the final state, no read may
// return a value nobody wrote, and every range's replicas must hold the
// same state at one applied index. It reuses the suite's pieces: Conns and
// the worker's recording (a write is acknowledged, failed or indeterminate
// exactly as in the suite), the Recorder, every history checker (Check),
// the replicas checker (replicaResult) and the crash checker.

// CheckCrashLoop is the verdict on the loop itself: every cycle killed and
// restarted its node, the cluster was ready again within the bound, the
// key space was split into the ranges asked for and writes reached them.
const CheckCrashLoop = "crash-loop"

// CrashLoopConfig is one crash loop. KvdPath and Out are required.
type CrashLoopConfig struct {
	// KvdPath is the kvd binary; Out the results folder (created): it
	// keeps harness.log, history.jsonl, summary.json and summary.txt, the
	// node logs under nodes/, and the node data when the loop fails.
	KvdPath string
	Out     string
	// Cycles of kill -9 and restart (default 100).
	Cycles int
	// Nodes in the cluster (default 3).
	Nodes int
	// Ranges is the least number of user ranges that take writes
	// (default 24, rounded up to a multiple of 3): the key space of each
	// workload (registers, lists, set) is split into Ranges/3 buckets
	// before the first kill.
	Ranges int
	// Clients is the number of concurrent writers (default 6).
	Clients int
	// A killed node stays down for a random time in [DownMin, DownMax]
	// (default 1s-4s) while the writes go on; once the cluster is ready
	// again, the next kill comes after a random time in [UpMin, UpMax]
	// (default 500ms-2s).
	DownMin, DownMax time.Duration
	UpMin, UpMax     time.Duration
	// SplitEvery: every SplitEvery-th cycle kills the leader of a range
	// while it splits that range (default 5; negative: never).
	SplitEvery int
	// MajorityEvery: every MajorityEvery-th cycle kills a majority of the
	// nodes at once instead of one (default 4; negative: never). With one
	// node down at a time, the others mask a node that lost writes it had
	// acknowledged to its leader (the leader sends them again); with a
	// majority down, every acknowledged write must come back from the
	// disks.
	MajorityEvery int
	// ReadyTimeout bounds the wait for every node's /readyz after each
	// restart (default 30s). A cluster that is not ready by then fails
	// the loop.
	ReadyTimeout time.Duration
	// Seed of every random choice: victims, down times, keys (0: 1).
	Seed uint64
	// LinearizableTimeout bounds porcupine per key (default 60s).
	LinearizableTimeout time.Duration
	// Logf receives progress lines (default: none); they also go to
	// Out/harness.log.
	Logf func(format string, args ...any)
}

func (c *CrashLoopConfig) setDefaults() error {
	if c.KvdPath == "" || c.Out == "" {
		return errors.New("jepsen: CrashLoopConfig.KvdPath and CrashLoopConfig.Out are required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Cycles == 0 {
		c.Cycles = 100
	}
	if c.Nodes == 0 {
		c.Nodes = 3
	}
	if c.Ranges == 0 {
		c.Ranges = 24
	}
	if c.Clients == 0 {
		c.Clients = 6
	}
	def(&c.DownMin, time.Second)
	def(&c.DownMax, 4*time.Second)
	def(&c.UpMin, 500*time.Millisecond)
	def(&c.UpMax, 2*time.Second)
	if c.SplitEvery == 0 {
		c.SplitEvery = 5
	}
	if c.MajorityEvery == 0 {
		c.MajorityEvery = 4
	}
	def(&c.ReadyTimeout, 30*time.Second)
	def(&c.LinearizableTimeout, 60*time.Second)
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	switch {
	case c.Cycles < 1, c.Nodes < 3, c.Ranges < 3, c.Clients < 1:
		return fmt.Errorf("jepsen: crash loop needs at least 1 cycle, 3 nodes, 3 ranges and 1 client (got %d, %d, %d, %d)", c.Cycles, c.Nodes, c.Ranges, c.Clients)
	case c.DownMin < 0 || c.DownMax < c.DownMin || c.UpMin < 0 || c.UpMax < c.UpMin:
		return fmt.Errorf("jepsen: crash loop down time [%v, %v] or up time [%v, %v] is not a range", c.DownMin, c.DownMax, c.UpMin, c.UpMax)
	}
	return nil
}

// CrashLoopReport is the outcome of a crash loop.
type CrashLoopReport struct {
	// Cycles completed; processes killed; MajorityKills: cycles that
	// killed a majority at once; KillsDuringSplit: cycles that killed a
	// range's leader while it split the range, and SplitsAcked: how many
	// of those splits the cluster acknowledged.
	Cycles, Kills, MajorityKills, KillsDuringSplit, SplitsAcked int
	// Writes by outcome (acknowledged, failed, indeterminate): puts,
	// compare-and-swaps, list appends and set adds of the writers.
	Writes Counts
	// AckedChecked is how many acknowledged writes the durability
	// checker compared with the final state.
	AckedChecked int
	// RangesWritten is how many distinct ranges acknowledged a write;
	// RangesCompared how many ranges had every replica's digest compared
	// at one applied index.
	RangesWritten, RangesCompared int
	Elapsed                       time.Duration
	Results                       []*CheckResult
	History                       *History
	Valid                         bool
	Out                           string
}

// SummaryLine is the one line the CLI prints last.
func (r *CrashLoopReport) SummaryLine() string {
	verdict := "PASS"
	var failing []string
	for _, c := range r.Results {
		if c.Failing() {
			verdict = "FAIL"
			failing = append(failing, c.Checker+"="+c.Verdict)
		}
	}
	line := fmt.Sprintf("CRASH-LOOP %s: %d cycles, %d kills (%d cycles killed a majority, %d a leader during a split), %d acknowledged writes checked (%d writes: %d failed, %d indeterminate), %d ranges written, %d ranges compared, %v",
		verdict, r.Cycles, r.Kills, r.MajorityKills, r.KillsDuringSplit, r.AckedChecked, r.Writes.Total, r.Writes.Fail, r.Writes.Info,
		r.RangesWritten, r.RangesCompared, r.Elapsed.Round(time.Second))
	if len(failing) > 0 {
		line += "; failing: " + strings.Join(failing, " ")
	}
	return line + "; results in " + r.Out
}

// crashKeys lays the writers' keys out over buckets, each bucket of each
// workload a range of its own: "r/07/0003/02" is register 2 of bucket 7
// in its 4th generation (keys move to a fresh generation every
// RegisterLifetime so that each key's history stays short for porcupine).
type crashKeys struct {
	buckets int
	wl      WorkloadConfig
}

// splitPoints are the keys the key space is split at before the loop:
// every bucket of every workload starts a range. They come highest first:
// each split then cuts the first range, whose leader is long elected,
// rather than the newest one, which would first have to elect its own.
func (k crashKeys) splitPoints() []string {
	var out []string
	for _, p := range []string{SetPrefix, RegisterPrefix, ListPrefix} {
		for b := k.buckets - 1; b >= 0; b-- {
			out = append(out, fmt.Sprintf("%s%02d/", p, b))
		}
	}
	return out
}

func (k crashKeys) register(now time.Duration, b, i int) string {
	return fmt.Sprintf("%s%02d/%04d/%02d", RegisterPrefix, b, int(now/k.wl.RegisterLifetime), i)
}

func (k crashKeys) list(now time.Duration, b, i int) string {
	return fmt.Sprintf("%s%02d/%04d/%02d", ListPrefix, b, int(now/k.wl.ListLifetime), i)
}

// crashWriter is one client of the loop: the suite's worker (its
// recording, sessions and list appends), on the bucketed keys.
type crashWriter struct {
	w    *worker
	keys crashKeys
}

// step performs one random operation through a random node and API:
// mostly writes (puts, compare-and-swaps, list appends, set adds), and a
// few reads at every level, whose checkers then also watch the restarted
// replicas.
func (cw *crashWriter) step() {
	w := cw.w
	req := Request{Node: w.rng.IntN(w.nodes), API: APIGRPC}
	if w.rng.IntN(2) == 0 {
		req.API = APIHTTP
	}
	now := time.Duration(w.rec.Now())
	b := w.rng.IntN(cw.keys.buckets)
	reg := cw.keys.register(now, b, w.rng.IntN(w.cfg.RegisterKeys))
	switch p := w.rng.IntN(100); {
	case p < 30:
		req.F, req.Key, req.Value = OpPut, reg, w.nextValue()
		if op := w.do(req, false); op.Type == OK {
			w.shared.set(reg, req.Value)
		}
	case p < 45:
		exp, _ := w.shared.get(reg)
		req.F, req.Key, req.Value, req.Expected = OpCAS, reg, w.nextValue(), exp
		if op := w.do(req, false); op.Type == OK {
			w.shared.set(reg, req.Value)
		}
	case p < 65:
		w.append(req, cw.keys.list(now, b, w.rng.IntN(w.cfg.ListKeys)))
	case p < 90:
		w.seq++
		v := fmt.Sprintf("%s%02d/c%d-%d", SetPrefix, b, w.id, w.seq)
		req.F, req.Key, req.Value = OpAdd, v, v
		w.do(req, false)
	default:
		w.read(req, reg)
	}
}

func (cw *crashWriter) run(ctx context.Context) {
	for ctx.Err() == nil {
		cw.step()
		if d := cw.w.cfg.ThinkTime; d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(cw.w.rng.Int64N(int64(2 * d)))):
			}
		}
	}
}

// crashLoop is the state of one run.
type crashLoop struct {
	cfg  CrashLoopConfig
	c    *Cluster
	cs   *Conns
	rec  *Recorder
	rng  *rand.Rand
	keys crashKeys
	logf func(string, ...any)
	loop *CheckResult // CheckCrashLoop
	rep  *CrashLoopReport
	// splitKeys holds every key a split was asked at.
	splitKeys map[string]bool
}

// CrashLoop runs a crash loop in cfg.Out and checks the outcome. An error
// means the loop could not be set up (no verdict); a cluster that stops
// recovering during the loop is a failing verdict, not an error.
func CrashLoop(ctx context.Context, cfg CrashLoopConfig) (*CrashLoopReport, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	out, err := filepath.Abs(cfg.Out)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("jepsen: results folder: %w", err)
	}
	hlog, err := os.Create(filepath.Join(out, "harness.log"))
	if err != nil {
		return nil, err
	}
	defer hlog.Close()
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		logMu.Lock()
		fmt.Fprintf(hlog, "%s %8.3fs %s\n", time.Now().UTC().Format("15:04:05.000"), time.Since(start).Seconds(), line)
		logMu.Unlock()
		cfg.Logf("%s", line)
	}
	wl := WorkloadConfig{RegisterKeys: 3, ListKeys: 2, ThinkTime: 10 * time.Millisecond}
	wl.setDefaults()
	l := &crashLoop{
		cfg: cfg, logf: logf, rng: rand.New(rand.NewPCG(cfg.Seed, 0)),
		keys: crashKeys{buckets: (cfg.Ranges + 2) / 3, wl: wl},
		loop: newResult(CheckCrashLoop), splitKeys: map[string]bool{},
		rep: &CrashLoopReport{Out: out},
	}
	logf("jepsen: crash loop: %d nodes, %d cycles, >= %d ranges, %d writers, down %v-%v, up %v-%v, a kill during a split every %d cycles, a majority killed every %d, seed %d",
		cfg.Nodes, cfg.Cycles, 3*l.keys.buckets, cfg.Clients, cfg.DownMin, cfg.DownMax, cfg.UpMin, cfg.UpMax, cfg.SplitEvery, cfg.MajorityEvery, cfg.Seed)

	nodesDir := filepath.Join(out, "nodes")
	if err := os.RemoveAll(nodesDir); err != nil {
		return nil, err
	}
	c, err := Start(ctx, Options{KvdPath: cfg.KvdPath, Dir: nodesDir, Nodes: cfg.Nodes, Logf: logf, ReadyTimeout: cfg.ReadyTimeout})
	if err != nil {
		return nil, err
	}
	l.c = c
	keepData := true // until the verdict says otherwise: the data is the evidence
	defer func() {
		if err := c.Close(); err != nil {
			logf("jepsen: closing the cluster: %v", err)
		}
		if keepData {
			logf("jepsen: node data kept under %s", nodesDir)
			return
		}
		for i := range c.N() {
			os.RemoveAll(c.DataDir(i))
		}
	}()
	if l.cs, err = DialCluster(c); err != nil {
		return nil, err
	}
	defer l.cs.Close()
	if l.rec, err = NewRecorder(filepath.Join(out, "history.jsonl")); err != nil {
		return nil, err
	}
	defer l.rec.Close()

	if err := l.splitKeySpace(ctx); err != nil {
		return nil, err
	}

	// The writers run from before the first kill until after the last
	// restart.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	sh := &shared{latest: map[string]string{}}
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		w := &worker{id: i, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)), cs: l.cs, rec: l.rec, cfg: wl, shared: sh, nodes: c.N()}
		cw := &crashWriter{w: w, keys: l.keys}
		wg.Go(func() { cw.run(wctx) })
	}
	for cycle := 1; cycle <= cfg.Cycles && ctx.Err() == nil; cycle++ {
		if !l.cycle(ctx, cycle) {
			break
		}
		l.rep.Cycles = cycle
		if cycle%10 == 0 || cycle == cfg.Cycles {
			l.progress(cycle)
		}
	}
	wcancel()
	wg.Wait()
	if l.rep.Cycles < cfg.Cycles {
		l.loop.fail("", fmt.Sprintf("the loop stopped after %d of %d cycles", l.rep.Cycles, cfg.Cycles))
	}

	// Heal, wait for the cluster, read every key, compare the replicas.
	logf("jepsen: writers stopped after %d cycles; healing", l.rep.Cycles)
	for i := range c.N() {
		if !c.Running(i) {
			if err := c.Restart(i); err != nil {
				l.loop.fail("", fmt.Sprintf("restart %s at the heal: %v", c.ID(i), err))
				continue
			}
			l.rec.Restarted(c.ID(i), "restart at heal")
		}
	}
	healed := time.Now()
	hctx, hcancel := context.WithTimeout(ctx, 60*time.Second)
	var recovery string
	if err := c.WaitReady(hctx); err != nil {
		recovery = fmt.Sprintf("not every node ready within 60s of the heal: %v", err)
		l.loop.fail("", recovery)
	} else {
		recovery = fmt.Sprintf("every node ready %v after the heal", time.Since(healed).Round(time.Millisecond))
	}
	hcancel()
	finalReads(ctx, l.cs, l.rec, c.N(), wl.OpTimeout, logf)
	replicas := replicaResult(ctx, memberReplicas{c, l.cs}, defaultReplicaWait, logf)
	if err := l.rec.Close(); err != nil {
		logf("jepsen: writing the history: %v", err)
	}
	h := l.rec.History()

	copts := CheckOptions{LinearizableTimeout: cfg.LinearizableTimeout}
	logf("jepsen: checking %d ops", len(h.Ops))
	results := Check(h, copts)
	l.checkCoverage(h)
	results = append(results, replicas, crashResult(c, copts), l.loop)
	rep := l.rep
	rep.Results, rep.History, rep.Valid = results, h, true
	for _, r := range results {
		if r.Failing() {
			rep.Valid = false
		}
		switch r.Checker {
		case CheckDurability:
			rep.AckedChecked = r.Checked
		case CheckReplicas:
			rep.RangesCompared = r.Checked
		}
	}
	for _, o := range h.ClientOps() {
		if o.Process >= 0 && o.IsWrite() {
			rep.Writes.add(o)
		}
	}
	rep.Elapsed = time.Since(start)
	keepData = !rep.Valid
	if !rep.Valid {
		l.explain(results, h)
	}
	srep := &Report{Results: results, History: h, Out: out, Valid: rep.Valid}
	srep.Summary = summarize(h, results, Config{Nodes: cfg.Nodes, Duration: rep.Elapsed.Round(time.Second), Seed: cfg.Seed, Clients: cfg.Clients}, []string{NemKill, NemSplit}, nil)
	srep.Summary.Recovery = recovery
	if err := writeArtefacts(srep, logf); err != nil {
		logf("jepsen: writing the results: %v", err)
	}
	logf("jepsen: %s", rep.SummaryLine())
	return rep, nil
}

// splitKeySpace splits the key space at every bucket boundary before the
// first kill and waits until the nodes report the ranges.
func (l *crashLoop) splitKeySpace(ctx context.Context) error {
	points := l.keys.splitPoints()
	for _, key := range points {
		if err := l.splitAt(ctx, key, 5); err != nil {
			return err
		}
		l.splitKeys[key] = true
	}
	// Every split point must start a range on some node.
	deadline := time.Now().Add(30 * time.Second)
	for {
		starts := map[string]bool{}
		for i := range l.c.N() {
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err := l.c.Status(sctx, i)
			cancel()
			if err != nil {
				continue
			}
			for _, r := range st.GetNode().GetRanges() {
				if r.GetId() != raftstore.MetaRangeID {
					starts[string(r.GetStart())] = true
				}
			}
		}
		var missing []string
		for _, k := range points {
			if !starts[k] {
				missing = append(missing, k)
			}
		}
		if len(missing) == 0 {
			l.logf("jepsen: key space split at %d points: %d user ranges", len(points), len(starts))
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("jepsen: no node reports a range starting at %q after 30s", missing)
		}
		time.Sleep(200 * time.Millisecond) // ranges appear on followers as they apply; nothing to await
	}
}

// splitAt asks the cluster to split at key, through each node in turn, at
// most attempts times. A retry of a split that did happen is refused as
// not strictly inside a range; that counts as done.
func (l *crashLoop) splitAt(ctx context.Context, key string, attempts int) error {
	var last error
	for a := range attempts {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		via := a % l.c.N()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := kvpb.NewClusterClient(l.cs.grpc[via]).SplitRange(sctx, &kvpb.SplitRangeRequest{Key: []byte(key)})
		cancel()
		if err == nil || (a > 0 && strings.Contains(err.Error(), "not strictly inside")) {
			return nil
		}
		last = fmt.Errorf("split at %q via %s: %w", key, l.c.ID(via), err)
		time.Sleep(250 * time.Millisecond) // a leader election takes about this long
	}
	return fmt.Errorf("jepsen: %w", last)
}

// cycle kills one node (a majority on every MajorityEvery-th cycle), keeps
// it down, restarts it and waits until the cluster is ready. It reports
// false when the loop cannot go on.
func (l *crashLoop) cycle(ctx context.Context, n int) bool {
	c := l.c
	victims := []int{l.rng.IntN(c.N())}
	var splitKey string
	var splitDone chan error
	if l.cfg.SplitEvery > 0 && n%l.cfg.SplitEvery == 0 {
		splitKey = l.freshSplitKey()
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		leader, err := c.LeaderOf(lctx, splitKey)
		cancel()
		if err != nil {
			l.logf("jepsen: cycle %d: no leader for %q, a plain kill instead: %v", n, splitKey, err)
			splitKey = ""
		} else {
			victims[0] = leader
			splitDone = make(chan error, 1)
			conn := l.cs.grpc[leader]
			go func() {
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_, err := kvpb.NewClusterClient(conn).SplitRange(sctx, &kvpb.SplitRangeRequest{Key: []byte(splitKey)})
				splitDone <- err
			}()
			// Not synchronisation: a random point inside the split's
			// proposal, apply and meta update.
			time.Sleep(time.Duration(l.rng.IntN(40)) * time.Millisecond)
		}
	}
	majority := l.cfg.MajorityEvery > 0 && n%l.cfg.MajorityEvery == 0
	if majority {
		for _, i := range l.rng.Perm(c.N()) {
			if len(victims) < c.N()/2+1 && !slices.Contains(victims, i) {
				victims = append(victims, i)
			}
		}
	}
	var parts []string
	for _, v := range victims {
		parts = append(parts, fmt.Sprintf("%s (pid %d)", c.ID(v), c.PID(v)))
	}
	desc := "kill -9 " + strings.Join(parts, ", ")
	if majority {
		desc += ", a majority"
	}
	if splitKey != "" {
		desc += fmt.Sprintf(", %s leading the range splitting at %q", c.ID(victims[0]), splitKey)
	}
	fault := l.rec.FaultStart(NemKill, desc)
	// The fault lasts until the cluster is ready again (ended there, or
	// here on the way out of a failed cycle).
	defer l.rec.FaultEnd(fault)
	for _, v := range victims {
		if err := c.Kill(v); err != nil {
			l.loop.fail("", fmt.Sprintf("cycle %d: %v", n, err))
			return false
		}
		l.rep.Kills++
	}
	if majority {
		l.rep.MajorityKills++
	}
	if splitKey != "" {
		l.rep.KillsDuringSplit++
	}
	down := uniformDuration(l.rng, l.cfg.DownMin, l.cfg.DownMax)
	select {
	case <-ctx.Done():
	case <-time.After(down):
	}
	for _, v := range victims {
		if err := c.Restart(v); err != nil {
			l.loop.fail("", fmt.Sprintf("cycle %d: restart %s: %v", n, c.ID(v), err))
			return false
		}
		l.rec.Restarted(c.ID(v), "restart after kill -9")
	}
	restarted := time.Now()
	rctx, cancel := context.WithTimeout(ctx, l.cfg.ReadyTimeout)
	err := c.WaitReady(rctx)
	cancel()
	if err != nil {
		why := ""
		for _, v := range victims {
			if tail, _ := c.LogTail(v, 200); strings.Contains(tail, "address already in use") {
				why = fmt.Sprintf(" (a port of %s was taken while it was down: a harness problem, not the server's)", c.ID(v))
			}
		}
		l.loop.fail("", fmt.Sprintf("cycle %d: the cluster was not ready within %v of restarting %s%s: %v", n, l.cfg.ReadyTimeout, parts, why, err))
		return false
	}
	ready := time.Since(restarted)
	l.rec.FaultEnd(fault)
	// The writers' connections to a restarted node would otherwise wait
	// out gRPC's reconnect backoff (up to seconds), sparing the node the
	// writes right after its restart.
	for _, v := range victims {
		l.cs.grpc[v].ResetConnectBackoff()
	}
	split := ""
	if splitDone != nil {
		select {
		case err := <-splitDone:
			if err == nil {
				l.rep.SplitsAcked++
				split = ", split acknowledged"
			} else {
				split = fmt.Sprintf(", split not acknowledged (%v)", truncate(err.Error(), 120))
			}
		case <-time.After(15 * time.Second):
			split = ", split unanswered after 15s"
		}
	}
	l.logf("jepsen: cycle %d/%d: %s, down %v, ready %v after the restart%s",
		n, l.cfg.Cycles, desc, down.Round(time.Millisecond), ready.Round(time.Millisecond), split)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(uniformDuration(l.rng, l.cfg.UpMin, l.cfg.UpMax)):
	}
	return true
}

// freshSplitKey is a register key of the current generation in a random
// bucket that no split was asked at yet.
func (l *crashLoop) freshSplitKey() string {
	now := time.Duration(l.rec.Now())
	for {
		k := l.keys.register(now, l.rng.IntN(l.keys.buckets), l.rng.IntN(l.keys.wl.RegisterKeys))
		if !l.splitKeys[k] {
			l.splitKeys[k] = true
			return k
		}
		now += l.keys.wl.RegisterLifetime // every key of this generation is taken: the next one
	}
}

func uniformDuration(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// progress logs the writes so far.
func (l *crashLoop) progress(cycle int) {
	var w Counts
	for _, o := range l.rec.History().Ops {
		if o.Process >= 0 && o.IsWrite() {
			w.add(&o)
		}
	}
	l.logf("jepsen: after %d cycles: %d writes, %d acknowledged, %d failed, %d indeterminate", cycle, w.Total, w.OK, w.Fail, w.Info)
}

// checkCoverage fails the loop when it did not exercise what it claims:
// acknowledged writes in at least as many ranges as asked for.
func (l *crashLoop) checkCoverage(h *History) {
	ranges := map[uint64]bool{}
	acked := 0
	for _, o := range h.Ops {
		if o.Process >= 0 && o.IsWrite() && o.Type == OK {
			acked++
			if o.RangeID != 0 {
				ranges[o.RangeID] = true
			}
		}
	}
	l.rep.RangesWritten = len(ranges)
	l.loop.Checked = l.rep.Cycles
	want := 3 * l.keys.buckets
	if len(ranges) < want {
		l.loop.fail("", fmt.Sprintf("acknowledged writes reached %d ranges, want at least %d", len(ranges), want))
	}
	if acked == 0 {
		l.loop.fail("", "no write was acknowledged")
	}
	l.loop.note("%d kills (%d cycles killed a majority, %d a leader during a split, %d of those splits acknowledged), %d acknowledged writes in %d ranges",
		l.rep.Kills, l.rep.MajorityKills, l.rep.KillsDuringSplit, l.rep.SplitsAcked, acked, len(ranges))
}

// explain logs what failed: each failing checker's first violations with
// their ops, and the tail of every node's log.
func (l *crashLoop) explain(results []*CheckResult, h *History) {
	for _, r := range results {
		if !r.Failing() {
			continue
		}
		l.logf("jepsen: FAILED %s (%s): %d violations; notes: %s", r.Checker, r.Verdict, r.ViolationCount, strings.Join(r.Notes, "; "))
		for _, v := range r.Violations[:min(10, len(r.Violations))] {
			l.logf("jepsen:   %s: %s", v.Key, v.Msg)
			for _, i := range v.Ops {
				if i >= 0 && i < len(h.Ops) {
					l.logf("jepsen:     %s", h.Ops[i].String())
				}
			}
		}
	}
	for i := range l.c.N() {
		tail, err := l.c.LogTail(i, 30)
		if err != nil {
			continue
		}
		l.logf("jepsen: --- last 30 lines of %s (%s, pids %v):\n%s", l.c.ID(i), l.c.LogPath(i), l.c.PIDs(), tail)
	}
}

// plantedHistory returns a copy of h with two planted faults, or nil
// when h has no two register keys to plant them on: an acknowledged put
// on lostKey, after every other write of the key, that its final read
// does not reflect (a lost write); and the final read of inventedKey
// changed to a value nobody wrote. The crash loop's test checks that the
// checkers report both.
func plantedHistory(h *History) (out *History, lostKey, inventedKey string) {
	out = &History{Ops: slices.Clone(h.Ops), Faults: slices.Clone(h.Faults)}
	acked := map[string]*Op{}  // key\x00value -> its acknowledged register write
	last := map[string]int64{} // key -> the end of its last client op
	for i := range out.Ops {
		o := &out.Ops[i]
		if o.Process < 0 {
			continue
		}
		last[o.Key] = max(last[o.Key], o.End)
		if (o.F == OpPut || o.F == OpCAS) && o.Type == OK {
			acked[o.Key+"\x00"+o.Value] = o
		}
	}
	var lost *Op
	for i := range out.Ops {
		fin := &out.Ops[i]
		if fin.Process != FinalProcess || fin.F != OpGet || fin.Type != OK || fin.Missing || keyKind(fin.Key) != "register" {
			continue
		}
		switch {
		case lostKey == "" && acked[fin.Key+"\x00"+fin.Value] != nil && last[fin.Key]+2 < fin.Start:
			// The value read was written by an acknowledged write, which
			// then certainly precedes the planted one.
			lostKey = fin.Key
			lost = &Op{Process: 0, Node: fin.Node, API: APIGRPC, F: OpPut, Key: fin.Key, Value: "planted-lost-write",
				Start: last[fin.Key] + 1, End: last[fin.Key] + 2, Type: OK}
		case inventedKey == "" && fin.Key != lostKey:
			inventedKey = fin.Key
			fin.Value = "planted-invented-value"
		}
	}
	if lost == nil || inventedKey == "" {
		return nil, "", ""
	}
	lost.Index = len(out.Ops)
	out.Ops = append(out.Ops, *lost)
	return out, lostKey, inventedKey
}
