package jepsen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
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

	Workload WorkloadConfig
	Schedule Schedule
	// LinearizableTimeout bounds porcupine per key (default 60s).
	LinearizableTimeout time.Duration
	// HeartbeatTimeout and ElectionTimeout of the nodes (default 500ms).
	HeartbeatTimeout, ElectionTimeout time.Duration
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
	if c.Schedule.ComposeRatio == 0 {
		c.Schedule.ComposeRatio = 0.25
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
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
		return fmt.Sprintf("JEPSEN PASS: all %d checkers passed on %d operations%s; results in %s", len(r.Results), r.Summary.Ops.Total, extra, r.Out)
	}
	return fmt.Sprintf("JEPSEN FAIL: %s; results in %s", strings.Join(failing, " "), r.Out)
}

// Run starts a cluster behind proxies in cfg.Out, drives the workload and
// the nemesis schedule for cfg.Duration, heals, reads the final state,
// checks the history and writes the artefacts. An error means the run
// itself could not be carried out (no verdict).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	kinds, notes, err := ExpandNemeses(cfg.Nemeses)
	if err != nil {
		return nil, err
	}
	for _, k := range cfg.KnownIssues {
		if KnownIssueDocs[k] == "" {
			return nil, fmt.Errorf("jepsen: unknown known issue %q (want one of %s)", k, strings.Join(sortedKeys(KnownIssueDocs), ", "))
		}
		notes = append(notes, fmt.Sprintf("tolerating known issue %s: %s", k, KnownIssueDocs[k]))
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
	logf("jepsen: %d nodes, %v, nemeses %v, seed %d, %d clients, canary %v", cfg.Nodes, cfg.Duration, kinds, cfg.Seed, cfg.Clients, cfg.Canary)

	nodesDir := filepath.Join(out, "nodes")
	if err := os.RemoveAll(nodesDir); err != nil {
		return nil, err
	}
	nt := NewNet(cfg.Nodes, logf)
	defer nt.Close()
	c, err := Start(ctx, Options{
		KvdPath: cfg.KvdPath, Dir: nodesDir, Nodes: cfg.Nodes, Logf: logf,
		HeartbeatTimeout: cfg.HeartbeatTimeout, ElectionTimeout: cfg.ElectionTimeout,
		PeerAddr: nt.PeerAddr,
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
	rec, err := NewRecorder(filepath.Join(out, "history.jsonl"))
	if err != nil {
		return nil, err
	}
	defer rec.Close()

	// The workload and the nemesis, for cfg.Duration.
	rctx, rcancel := context.WithTimeout(ctx, cfg.Duration)
	defer rcancel()
	sh := &shared{latest: map[string]string{}}
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		w := &worker{id: i, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)+1)), cs: cs, rec: rec, cfg: cfg.Workload, shared: sh, nodes: c.N()}
		wg.Go(func() { w.run(rctx) })
	}
	env := &nemesisEnv{c: c, cs: cs, net: nt, rec: rec, rng: rand.New(rand.NewPCG(cfg.Seed, 0)), logf: logf, removed: map[int]bool{}}
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
	replicas := replicaResult(ctx, c, defaultReplicaWait, logf)
	keepData = replicas.Failing()
	if err := rec.Close(); err != nil {
		logf("jepsen: writing the history: %v", err)
	}
	h := rec.History()
	closeCluster()

	logf("jepsen: checking %d ops", len(h.Ops))
	copts := CheckOptions{LinearizableTimeout: cfg.LinearizableTimeout, KnownIssues: cfg.KnownIssues}
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
