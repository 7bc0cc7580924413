package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/kvpb"
	"github.com/dialkv/dialkv/harness"
)

// Config is one Jepsen-style run.
type Config struct {
	// KvdPath is the kvd binary; Out the results folder (created).
	KvdPath string
	Out     string
	// Nodes (default 5), Duration of the workload (default 10m), the
	// nemeses (default all; see ExpandNemeses) and the Seed of every
	// random choice (clients and schedule).
	Nodes    int
	Duration time.Duration
	Nemeses  []string
	Seed     uint64
	// Clients is the number of concurrent clients (default 2 per node).
	Clients int
	// Canary plants reads sent as stale but recorded as linearizable: the
	// run must then fail the linearizability checker.
	Canary bool
	// KnownIssues are server bugs to tolerate (see CheckOptions); none by
	// default.
	KnownIssues []string

	// Workloads to run (WorkloadNames; default register alone). Watch
	// and Lease shape the watch and lease workloads.
	Workloads []string
	Workload  WorkloadConfig
	Watch     WatchConfig
	Lease     LeaseConfig
	// Bank and Append shape the transaction workloads.
	Bank     BankConfig
	Append   AppendConfig
	Schedule Schedule
	// LinearizableTimeout bounds porcupine per key (default 60s).
	LinearizableTimeout time.Duration
	// HeartbeatTimeout and ElectionTimeout of the nodes (default 500ms).
	HeartbeatTimeout, ElectionTimeout time.Duration
	// Ranges, when above 1, pre-splits the key space the workload will
	// touch into this many user ranges before the workload starts (see
	// presplitPoints). RangeMaxBytes, when set, is every node's
	// --range-max-bytes, so that ranges also split as they grow.
	Ranges        int
	RangeMaxBytes int64
	// TLS runs the cluster with mutual TLS on every link and auth on: the
	// clients run as WorkloadUser, the nemesis and the final reads as
	// RootUser (see tls.go), and `all` includes auth-revoke.
	TLS bool
	// Logf receives progress lines (default: none); they also go to
	// Out/harness.log.
	Logf func(format string, args ...any)
}

func (c *Config) setDefaults() error {
	if c.KvdPath == "" || c.Out == "" {
		return errors.New("jepsen: Config.KvdPath and Config.Out are required")
	}
	if c.Nodes == 0 {
		c.Nodes = 5
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Minute
	}
	if c.Nemeses == nil {
		c.Nemeses = []string{NemAll}
	}
	if c.Clients == 0 {
		c.Clients = 2 * c.Nodes
	}
	if c.LinearizableTimeout == 0 {
		c.LinearizableTimeout = 60 * time.Second
	}
	if c.Canary && c.Workload.Canary == 0 {
		c.Workload.Canary = 0.5
	}
	c.Workload.setDefaults()
	c.Watch.setDefaults()
	c.Lease.setDefaults()
	c.Bank.setDefaults()
	c.Append.setDefaults()
	var err error
	if c.Workloads, err = ParseWorkloads(c.Workloads); err != nil {
		return err
	}
	if c.Schedule.ComposeRatio == 0 {
		c.Schedule.ComposeRatio = 0.25
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	if c.Bank.Accounts < 2 || c.Append.Lists < 1 {
		return fmt.Errorf("jepsen: Config.Bank.Accounts (%d) must be at least 2 and Config.Append.Lists (%d) at least 1", c.Bank.Accounts, c.Append.Lists)
	}
	if c.Ranges < 0 || c.RangeMaxBytes < 0 || c.Watch.RetentionBytes < 0 {
		return fmt.Errorf("jepsen: Config.Ranges (%d), Config.RangeMaxBytes (%d) and Config.Watch.RetentionBytes (%d) must not be negative", c.Ranges, c.RangeMaxBytes, c.Watch.RetentionBytes)
	}
	return nil
}

// Report is the outcome of a run.
type Report struct {
	Summary *Summary
	Results []*CheckResult
	History *History
	// Valid: every checker passed. Caught (canary runs): the planted
	// mislabelled reads were reported by the linearizability checker.
	Valid  bool
	Caught bool
	Out    string
}

// VerdictLine is the one-line verdict the CLI prints last.
func (r *Report) VerdictLine() string {
	var failing []string
	for _, c := range r.Results {
		if c.Failing() {
			failing = append(failing, c.Checker+"="+c.Verdict)
		}
	}
	switch {
	case r.Summary.Canary != nil && r.Caught:
		return fmt.Sprintf("JEPSEN CANARY CAUGHT: %d planted stale-as-linearizable reads, linearizability violated on %d keys with planted reads; results in %s",
			r.Summary.Canary.Planted, len(r.Summary.Canary.KeysCaught), r.Out)
	case r.Summary.Canary != nil:
		return fmt.Sprintf("JEPSEN CANARY MISSED: %d planted stale-as-linearizable reads went unreported (%s); results in %s",
			r.Summary.Canary.Planted, strings.Join(failing, " "), r.Out)
	case r.Valid:
		tolerated := map[string]int{}
		for _, c := range r.Results {
			for k, n := range c.Known {
				tolerated[k] += n
			}
		}
		extra := ""
		if len(tolerated) > 0 {
			var parts []string
			for _, k := range sortedKeys(tolerated) {
				parts = append(parts, fmt.Sprintf("%s x%d", k, tolerated[k]))
			}
			extra = " (known issues tolerated: " + strings.Join(parts, ", ") + ")"
		}
		return fmt.Sprintf("JEPSEN PASS: all %d checkers passed on %d operations%s; %s; results in %s", len(r.Results), r.Summary.Ops.Total, extra, r.Summary.Ranges, r.Out)
	}
	return fmt.Sprintf("JEPSEN FAIL: %s; %s; results in %s", strings.Join(failing, " "), r.Summary.Ranges, r.Out)
}

// Run starts a cluster behind proxies in cfg.Out, drives the workload and
// the nemesis schedule for cfg.Duration, heals, reads the final state,
// checks the history and writes the artefacts. An error means the run
// itself could not be carried out (no verdict).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	kinds, notes, err := expandNemeses(cfg.Nemeses, cfg.TLS)
	if err != nil {
		return nil, err
	}
	for _, k := range cfg.KnownIssues {
		if KnownIssueDocs[k] == "" {
			return nil, fmt.Errorf("jepsen: unknown known issue %q (want one of %s)", k, strings.Join(sortedKeys(KnownIssueDocs), ", "))
		}
		notes = append(notes, fmt.Sprintf("tolerating known issue %s: %s", k, KnownIssueDocs[k]))
	}
	if slices.Contains(kinds, NemKillCoord) && !hasWorkload(cfg.Workloads, WorkloadBank) && !hasWorkload(cfg.Workloads, WorkloadAppend) {
		kinds = slices.DeleteFunc(kinds, func(k string) bool { return k == NemKillCoord })
		notes = append(notes, NemKillCoord+" skipped: it cuts transactions of the bank or append workload, and neither runs")
	}
	cfg.Schedule.Kinds = kinds
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
	start := time.Now()
	logf := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		logMu.Lock()
		fmt.Fprintf(hlog, "%s %8.3fs %s\n", time.Now().UTC().Format("15:04:05.000"), time.Since(start).Seconds(), line)
		logMu.Unlock()
		cfg.Logf("%s", line)
	}
	for _, n := range notes {
		logf("jepsen: %s", n)
	}
	logf("jepsen: %d nodes, %v, workloads %v, nemeses %v, seed %d, %d clients, canary %v, %d ranges pre-split, range max bytes %d",
		cfg.Nodes, cfg.Duration, cfg.Workloads, kinds, cfg.Seed, cfg.Clients, cfg.Canary, cfg.Ranges, cfg.RangeMaxBytes)

	nodesDir := filepath.Join(out, "nodes")
	if err := os.RemoveAll(nodesDir); err != nil {
		return nil, err
	}
	nt := NewNet(cfg.Nodes, logf)
	defer nt.Close()
	var extra []string
	if cfg.RangeMaxBytes > 0 {
		extra = append(extra, "--range-max-bytes", strconv.FormatInt(cfg.RangeMaxBytes, 10))
	}
	if cfg.Watch.RetentionBytes > 0 {
		extra = append(extra, "--watch-retention-bytes", strconv.FormatInt(cfg.Watch.RetentionBytes, 10))
	}
	c, err := Start(ctx, Options{
		KvdPath: cfg.KvdPath, Dir: nodesDir, Nodes: cfg.Nodes, Logf: logf,
		HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout,
		PeerAddr: nt.PeerAddr, ExtraArgs: extra, TLS: cfg.TLS,
	})
	if err != nil {
		return nil, err
	}
	closed := false
	keepData := false // set when replicas diverged: their data is the evidence
	closeCluster := func() {
		if closed {
			return
		}
		closed = true
		// Everything must be able to stop: no frozen node.
		for i := range c.N() {
			if c.Paused(i) {
				c.Resume(i)
			}
		}
		if err := c.Close(); err != nil {
			logf("jepsen: closing the cluster: %v", err)
		}
		// Node logs stay; data does not, unless it shows a divergence.
		if keepData {
			logf("jepsen: replicas diverged; node data kept under %s for inspection", out)
			return
		}
		for i := range c.N() {
			os.RemoveAll(c.DataDir(i))
		}
	}
	defer closeCluster()
	lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
	leader, err := c.Leader(lctx)
	lcancel()
	if err != nil {
		return nil, err
	}
	logf("jepsen: cluster of %d up behind %d proxies; leader %s", c.N(), c.N()*(c.N()-1), c.ID(leader))
	cs, err := DialCluster(c)
	if err != nil {
		return nil, err
	}
	defer cs.Close()
	wcs, err := setupAuth(ctx, c, cs, logf) // the clients' connections
	if err != nil {
		return nil, err
	}
	if wcs != cs {
		defer wcs.Close()
	}
	ranges := RangeCounts{}
	if cfg.Ranges > 1 {
		points := presplitPoints(cfg.Workload, cfg.Duration, cfg.Ranges-1)
		if len(points) < cfg.Ranges-1 {
			logf("jepsen: %d ranges asked, but a run of %v has only %d workload keys to split at: pre-splitting into %d", cfg.Ranges, cfg.Duration, len(points), len(points)+1)
		}
		if err := presplit(ctx, c, cs, points, logf); err != nil {
			return nil, err
		}
	}
	// The transaction workloads' keys over ranges of their own.
	var bk *bank
	var ls *lists
	var txnPoints []string
	if hasWorkload(cfg.Workloads, WorkloadBank) {
		bk = newBank(cfg.Bank, wcs, cfg.Workload.OpTimeout, 2*cfg.Workload.ThinkTime)
		txnPoints = append(txnPoints, bk.splitPoints()...)
	}
	if hasWorkload(cfg.Workloads, WorkloadAppend) {
		ls = newLists(cfg.Append, wcs, cfg.Workload.OpTimeout, 2*cfg.Workload.ThinkTime)
		txnPoints = append(txnPoints, ls.splitPoints()...)
	}
	if len(txnPoints) > 0 {
		slices.Sort(txnPoints)
		slices.Reverse(txnPoints)
		if err := presplit(ctx, c, cs, txnPoints, logf); err != nil {
			return nil, err
		}
	}
	if ranges.AtStart, err = countUserRanges(ctx, cs); err != nil {
		return nil, err
	}
	logf("jepsen: %d user ranges at the start", ranges.AtStart)
	rec, err := NewRecorder(filepath.Join(out, "history.jsonl"))
	if err != nil {
		return nil, err
	}
	defer rec.Close()
	if bk != nil {
		bk.rec = rec
		if err := bk.setup(ctx); err != nil {
			return nil, err
		}
	}
	if ls != nil {
		ls.rec = rec
	}

	// The workload and the nemesis, for cfg.Duration.
	rctx, rcancel := context.WithTimeout(ctx, cfg.Duration)
	defer rcancel()
	sh := &shared{latest: map[string]string{}}
	var wg sync.WaitGroup
	// The watchers first, so that they see the writers from the start;
	// they run past the workload, until they caught up after the heal.
	var prefixes []string
	if hasWorkload(cfg.Workloads, WorkloadWatch) {
		for range cfg.Watch.Watchers {
			prefixes = append(prefixes, WatchPrefix)
		}
	}
	if hasWorkload(cfg.Workloads, WorkloadLease) {
		prefixes = append(prefixes, LeasePrefix)
	}
	var watchers *watchSet
	if len(prefixes) > 0 {
		watchers = startWatchers(wcs, rec, cfg.Watch, cfg.Seed, prefixes)
		defer watchers.stop()
	}
	if hasWorkload(cfg.Workloads, WorkloadRegister) {
		for i := range cfg.Clients {
			w := &worker{id: i, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)), cs: wcs, rec: rec, cfg: cfg.Workload, shared: sh, nodes: c.N()}
			wg.Go(func() { w.run(rctx) })
		}
	}
	if hasWorkload(cfg.Workloads, WorkloadWatch) {
		for i := range cfg.Watch.Writers {
			id := cfg.Clients + i // after the register clients
			w := &watchWriter{proc: id, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(id)+1)), cs: wcs, rec: rec, cfg: cfg.Watch,
				timeout: cfg.Workload.OpTimeout, think: 2 * cfg.Workload.ThinkTime, last: map[string]string{}}
			wg.Go(func() { w.run(rctx) })
		}
	}
	// The transaction clients after the register clients and the watch
	// writers.
	txnProc := cfg.Clients + cfg.Watch.Writers
	var txnSources []crossTxnSource
	if bk != nil {
		bk.start(rctx, cfg.Seed, txnProc)
		txnProc += cfg.Bank.Clients
		txnSources = append(txnSources, bk)
	}
	if ls != nil {
		ls.start(rctx, cfg.Seed, txnProc)
		txnSources = append(txnSources, ls)
	}
	var leases *leaseSet
	if hasWorkload(cfg.Workloads, WorkloadLease) {
		leases = startLeases(rctx, wcs, rec, cfg.Lease, cfg.Seed, cfg.Workload.OpTimeout)
	}
	env := &nemesisEnv{c: c, cs: cs, net: nt, rec: rec, rng: rand.New(rand.NewPCG(cfg.Seed, 0)), logf: logf, removed: map[int]bool{}, txns: txnSources}
	nemDone := make(chan struct{})
	go func() {
		defer close(nemDone)
		env.runSchedule(rctx, cfg.Schedule)
	}()
	progress := time.NewTicker(30 * time.Second)
	defer progress.Stop()
wait:
	for {
		select {
		case <-rctx.Done():
			break wait
		case <-progress.C:
			h := rec.History()
			ok := 0
			for _, o := range h.Ops {
				if o.Type == OK {
					ok++
				}
			}
			logf("jepsen: %v elapsed, %d ops (%d ok), faults now: %v", time.Since(start).Round(time.Second), len(h.Ops), ok, h.FaultsAt(rec.Now()))
		}
	}
	wg.Wait()
	if bk != nil {
		bk.wait()
	}
	if ls != nil {
		ls.wait()
	}
	<-nemDone
	logf("jepsen: workload over; healing")

	// Heal, wait for the cluster, read the final state.
	if err := env.healAll(); err != nil {
		logf("jepsen: heal: %v", err)
	}
	healed := time.Now()
	hctx, hcancel := context.WithTimeout(ctx, 60*time.Second)
	recovery := ""
	if err := c.WaitReady(hctx); err != nil {
		recovery = fmt.Sprintf("not every node ready (/readyz) within 60s of the heal: %v", err)
		logf("jepsen: %s", recovery)
	} else {
		recovery = fmt.Sprintf("every node ready %v after the heal", time.Since(healed).Round(time.Millisecond))
	}
	hcancel()
	time.Sleep(time.Second)
	finalReads(ctx, cs, rec, c.N(), cfg.Workload.OpTimeout, logf)
	// The transaction workloads: the kill-coordinator probes end, every
	// account and list must be readable within 15 s (no lock left), then
	// what stayed unknown is resolved.
	env.probes.Wait()
	if bk != nil {
		bk.final(ctx, logf)
	}
	if ls != nil {
		ls.final(ctx, logf)
	}
	if bk != nil || ls != nil {
		resolveUnknown(ctx, cs, rec, logf)
	}
	if leases != nil {
		leases.finish(ctx, logf)
	}
	if watchers != nil {
		// After the lease reads: their applied indexes are targets too.
		watchers.finish(ctx, logf)
	}
	replicas, seen := checkReplicas(ctx, clusterReplicas{memberReplicas{c, cs}}, defaultReplicaWait, logf)
	keepData = replicas.Failing()
	ranges.AtEnd, ranges.Compared = seen.userRanges, seen.userCompared
	if err := rec.Close(); err != nil {
		logf("jepsen: writing the history: %v", err)
	}
	h := rec.History()
	closeCluster()

	logf("jepsen: checking %d ops", len(h.Ops))
	copts := CheckOptions{LinearizableTimeout: cfg.LinearizableTimeout, KnownIssues: cfg.KnownIssues, LeaseExpiryBound: cfg.Lease.ExpiryBound}
	results := Check(h, copts)
	results = append(results, replicas, crashResult(c, copts))
	rep := &Report{Results: results, History: h, Out: out, Valid: true}
	for _, r := range results {
		if r.Failing() {
			rep.Valid = false
		}
	}
	rep.Summary = summarize(h, results, cfg, kinds, notes)
	rep.Summary.Recovery = recovery
	rep.Summary.Ranges = &ranges
	rep.Summary.Proxies = nt.Stats()
	if cfg.Canary {
		rep.Caught = canaryVerdict(h, results, rep.Summary)
	}
	if err := writeArtefacts(rep, logf); err != nil {
		return rep, err
	}
	logf("jepsen: %s", rep.VerdictLine())
	return rep, nil
}

// CheckCrashes is the verdict on node processes that died on their own.
const CheckCrashes = "crashes"

// crashResult turns the processes that exited without the harness asking
// into a failing result, each with the panic or fatal error its log shows.
func crashResult(c *Cluster, opts CheckOptions) *CheckResult {
	r := newResult(CheckCrashes)
	r.Took = "0s"
	r.Checked = len(c.PIDs())
	for _, cr := range c.Crashes() {
		msg := fmt.Sprintf("%s (pid %d) exited on its own at %s: %s", cr.Node, cr.PID, cr.At.UTC().Format("15:04:05.000"), cr.Err)
		p := c.PanicLine(c.Index(cr.Node), cr.PID)
		if p != "" {
			msg += ": " + p
		}
		if strings.Contains(p, "sealed segment has no index block") && opts.known(KnownRaftWALTruncation) {
			r.tolerate(KnownRaftWALTruncation, msg)
			continue
		}
		r.fail("", msg)
	}
	r.note("%d processes started", r.Checked)
	return r
}

// finalReads reads every register and list key the history touched, and
// the whole set, at the linearizable level, retrying (across nodes) for up
// to a minute in all.
func finalReads(ctx context.Context, cs *Conns, rec *Recorder, nodes int, timeout time.Duration, logf func(string, ...any)) {
	keys := map[string]bool{}
	for _, o := range rec.History().Ops {
		if o.F == OpPut || o.F == OpCAS || o.F == OpAppend || (o.F == OpGet && o.Key != "") {
			keys[o.Key] = true
		}
	}
	list := sortedKeys(keys)
	deadline := time.Now().Add(60 * time.Second)
	read := func(req Request) bool {
		for attempt := 0; time.Now().Before(deadline) && ctx.Err() == nil; attempt++ {
			req.Node = attempt % nodes
			req.Timeout = timeout
			start := rec.Now()
			op := cs.Do(req)
			op.Start, op.End, op.Process = start, rec.Now(), FinalProcess
			rec.Add(op)
			if op.Type == OK {
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return false
	}
	failed := 0
	var mu sync.Mutex
	var wg sync.WaitGroup
	jobs := make(chan string)
	for range 8 {
		wg.Go(func() {
			for k := range jobs {
				if !read(Request{API: APIGRPC, F: OpGet, Key: k, Level: Linearizable}) {
					mu.Lock()
					failed++
					mu.Unlock()
				}
			}
		})
	}
	for _, k := range list {
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	if !read(Request{API: APIGRPC, F: OpScan, Key: SetPrefix, Level: Linearizable, AllPages: true}) {
		failed++
	}
	logf("jepsen: final reads of %d keys and the set: %d never succeeded", len(list), failed)
}

// CanarySummary reports on the planted reads.
type CanarySummary struct {
	Planted int `json:"planted"`
	// KeysCaught are the keys on which porcupine found a violation and
	// which hold planted reads.
	KeysCaught []string `json:"keys_caught"`
	// CaughtOnCleanKeys counts violations on keys without planted reads
	// (a real bug, or a canary read's side effect: none expected).
	CaughtOnCleanKeys int `json:"caught_on_clean_keys"`
}

func canaryVerdict(h *History, results []*CheckResult, s *Summary) bool {
	planted := map[string]int{}
	for _, o := range h.Ops {
		if o.Planted {
			planted[o.Key]++
		}
	}
	cs := &CanarySummary{}
	for _, n := range planted {
		cs.Planted += n
	}
	for _, r := range results {
		if r.Checker != CheckLinearizable {
			continue
		}
		seen := map[string]bool{}
		for _, v := range r.Violations {
			if seen[v.Key] {
				continue
			}
			seen[v.Key] = true
			if planted[v.Key] > 0 {
				cs.KeysCaught = append(cs.KeysCaught, v.Key)
			} else {
				cs.CaughtOnCleanKeys++
			}
		}
	}
	sort.Strings(cs.KeysCaught)
	s.Canary = cs
	return len(cs.KeysCaught) > 0
}

// presplitPoints are the keys at which to split the key space so that the
// workload (see worker.step) meets many ranges: n points over the
// generations of register, list and set keys that a run of duration d
// touches. Keys move to a fresh generation every lifetime, so every
// generation starts a range of its own first; points beyond those cut
// register and list generations between their keys, spread evenly over
// the generations, so that several ranges take writes at any moment. A
// set generation is never cut inside: its scans must stay one page of one
// range. With fewer points than generations, the generations split at are
// spread evenly over the run. The points come highest first: each split
// then cuts the first range, whose leader is long elected, rather than
// the newest one, which would first have to elect its own.
func presplitPoints(wl WorkloadConfig, d time.Duration, n int) []string {
	type gen struct {
		prefix string // "r/0003/"
		keys   int    // keys a generation holds, 1 for the set (never cut inside)
	}
	var gens []gen
	for _, k := range []struct {
		prefix   string
		lifetime time.Duration
		keys     int
	}{{RegisterPrefix, wl.RegisterLifetime, wl.RegisterKeys}, {ListPrefix, wl.ListLifetime, wl.ListKeys}, {SetPrefix, wl.ListLifetime, 1}} {
		for g := range int(d/k.lifetime) + 1 {
			gens = append(gens, gen{fmt.Sprintf("%s%04d/", k.prefix, g), k.keys})
		}
	}
	var out []string
	if n <= len(gens) {
		for i := range n {
			out = append(out, gens[i*len(gens)/n].prefix)
		}
	} else {
		// One more cut per generation and pass, until n or every key of
		// every generation starts a range.
		cuts := make([]int, len(gens))
		for left := n - len(gens); left > 0; {
			added := false
			for i, g := range gens {
				if left > 0 && cuts[i] < g.keys-1 {
					cuts[i]++
					left--
					added = true
				}
			}
			if !added {
				break
			}
		}
		for i, g := range gens {
			out = append(out, g.prefix)
			for j := 1; j <= cuts[i]; j++ {
				out = append(out, fmt.Sprintf("%s%02d", g.prefix, j*g.keys/(cuts[i]+1)))
			}
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	slices.Reverse(out)
	return out
}

// presplitAttempts bounds the tries of one split; a try can meet an
// election of the range it cuts, which takes about a second here.
const presplitAttempts = 5

// presplit splits the key space at points (in order), each through the
// nodes in turn, and waits until a node reports a range starting at every
// point. A retry of a split that did happen is refused as not strictly
// inside a range; that counts as done.
func presplit(ctx context.Context, c *Cluster, cs *Conns, points []string, logf func(string, ...any)) error {
	start := time.Now()
	for _, key := range points {
		var last error
		for a := range presplitAttempts {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := kvpb.NewClusterClient(cs.grpc[a%c.N()]).SplitRange(sctx, &kvpb.SplitRangeRequest{Key: []byte(key)})
			cancel()
			if err == nil || (a > 0 && strings.Contains(err.Error(), "not strictly inside")) {
				last = nil
				break
			}
			last = fmt.Errorf("jepsen: pre-split at %q via %s: %w", key, c.ID(a%c.N()), err)
			if ctx.Err() != nil {
				break
			}
			// A split refused during an election: the next try goes
			// through another node after the election timeout.
			time.Sleep(c.opts.ElectionTimeout)
		}
		if last != nil {
			return last
		}
	}
	var missing []string
	err := harness.Poll(ctx, 30*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		starts := map[string]bool{}
		for i := range c.N() {
			st, err := c.Status(ctx, i)
			if err != nil {
				continue
			}
			for _, r := range st.GetNode().GetRanges() {
				starts[string(r.GetStart())] = true
			}
		}
		missing = missing[:0]
		for _, k := range points {
			if !starts[k] {
				missing = append(missing, k)
			}
		}
		return len(missing) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("jepsen: pre-split: no node reports a range starting at %q: %w", missing, err)
	}
	logf("jepsen: key space split at %d points in %v", len(points), time.Since(start).Round(time.Millisecond))
	return nil
}

// countUserRanges is how many user ranges the routing table lists, asking
// the nodes in turn.
func countUserRanges(ctx context.Context, cs *Conns) (int, error) {
	var last error
	for i := range cs.grpc {
		ids, err := cs.rangeIDs(ctx, i)
		if err == nil {
			return len(ids), nil
		}
		last = err
	}
	return 0, fmt.Errorf("jepsen: list the ranges: %w", last)
}

// rangeIDs are the user ranges of the routing table, as node i reads it
// (Cluster.Ranges).
func (cs *Conns) rangeIDs(ctx context.Context, i int) ([]uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := kvpb.NewClusterClient(cs.grpc[i]).Ranges(ctx, &kvpb.RangesRequest{})
	if err != nil {
		return nil, fmt.Errorf("ranges via %s: %w", cs.ids[i], err)
	}
	ids := make([]uint64, 0, len(resp.GetRanges()))
	for _, d := range resp.GetRanges() {
		ids = append(ids, d.GetId())
	}
	return ids, nil
}

// memberReplicas is the running cluster as the replicas checker sees it:
// the nodes' status, and the membership that says how many replicas each
// range must have (a memberCounter).
type memberReplicas struct {
	*Cluster
	cs *Conns
}

// replicationFactor is the --replicas the nodes were started with.
func (mr memberReplicas) replicationFactor() int { return kvdReplicas(mr.opts.ExtraArgs) }

// runningMembers asks the running nodes in turn for the membership, and
// counts its active members that run: the membership nemesis's removed
// node is not active until it has rejoined.
func (mr memberReplicas) runningMembers(ctx context.Context) (int, error) {
	var errs []error
	for i := range mr.N() {
		if !mr.Running(i) || mr.Paused(i) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second) // Members pings every member for up to 1s
		resp, err := kvpb.NewClusterClient(mr.cs.grpc[i]).Members(rctx, &kvpb.MembersRequest{})
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("members via %s: %w", mr.ID(i), err))
			continue
		}
		return countRunningMembers(resp.GetMembers(), func(id string) bool {
			j := mr.Index(id)
			return j >= 0 && mr.Running(j)
		}), nil
	}
	return 0, fmt.Errorf("no node listed the members: %w", errors.Join(errs...))
}

// clusterReplicas is memberReplicas with the routing table as the list
// of ranges that must all be compared.
type clusterReplicas struct {
	memberReplicas
}

// listRanges asks the running nodes in turn for the routing table.
func (cr clusterReplicas) listRanges(ctx context.Context) ([]uint64, error) {
	var errs []error
	for i := range cr.N() {
		if !cr.Running(i) || cr.Paused(i) {
			continue
		}
		ids, err := cr.cs.rangeIDs(ctx, i)
		if err == nil {
			return ids, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no node listed the ranges: %w", errors.Join(errs...))
}
