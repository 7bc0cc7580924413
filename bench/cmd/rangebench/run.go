package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dialkv/dialkv/api/client"

	"github.com/dialkv/dialkv/bench/cluster"
	"github.com/dialkv/dialkv/bench/driver/dialkv"
	"github.com/dialkv/dialkv/bench/workload"
)

// Bounds of the waits and polls of one run.
const (
	pollInterval    = 250 * time.Millisecond
	requestTimeout  = 10 * time.Second
	leaderNoteEvery = 5 * time.Second
	opTimeout       = 10 * time.Second
	initialTimeout  = time.Minute
	metricsLimit    = 64 << 20
)

var errInterrupted = errors.New("interrupted")

const mib = 1 << 20

// runOne measures one range count on a cluster of its own and always stops
// that cluster before it returns. The row holds what was measured up to an
// error.
func (b *bench) runOne(parent context.Context, n int) (r *row, err error) {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	r = &row{Ranges: n}
	dir := filepath.Join(b.dir, fmt.Sprintf("ranges-%d", n))
	fmt.Fprintf(b.log, "\n== %d ranges (load average %s)\n", n, cluster.LoadAvg())

	began := time.Now()
	c, err := b.start(ctx, dir)
	if err != nil {
		return r, err
	}
	r.StartSec = time.Since(began).Seconds()
	fmt.Fprintf(b.log, "started 3 kvd nodes in %.1fs: pids %v, endpoints %s, data %s\n",
		r.StartSec, c.PIDs(), strings.Join(c.Endpoints, ","), dir)
	guard := startDiskGuard(ctx, cancel, dir, b.o.maxDiskMiB*mib, b.o.minFreeMiB*mib)
	defer func() {
		r.DiskPeakMiB = float64(guard.Stop()) / mib
		var de *diskError
		if errors.As(context.Cause(ctx), &de) {
			err = de
		}
		if err != nil {
			b.evidence(c)
		}
		b.stop(c, r)
		switch {
		case de != nil:
			// Keep the logs, never the data that filled the disk.
			b.removeData(dir)
		case err == nil && !b.o.keep:
			if rerr := os.RemoveAll(dir); rerr != nil {
				fmt.Fprintln(b.log, "remove", dir, rerr)
			}
		}
	}()

	cli, err := client.New(client.Config{Endpoints: c.Endpoints})
	if err != nil {
		return r, err
	}
	defer cli.Close()
	m := &measurer{b: b, c: c, cli: cli, dir: dir}

	// Ranges.
	rctx, cancelSetup := context.WithTimeout(ctx, b.o.setupTimeout)
	defer cancelSetup()
	if err := m.checkInitial(rctx); err != nil {
		return r, b.interrupted(ctx, err)
	}
	st, err := createRanges(rctx, cli, n, b.o.splitWorkers, b.log, func(ctx context.Context, ranges int) error {
		_, err := m.waitLeaders(ctx, ranges)
		return err
	})
	r.SplitSec, r.SplitRetries = st.Elapsed.Seconds(), st.Retries
	r.SetupSec = r.SplitSec
	if err != nil {
		err = b.interrupted(ctx, fmt.Errorf("creating %d ranges (%d splits done in %.1fs): %w", n, st.Splits, r.SplitSec, err))
		m.partial(ctx, r, err)
		return r, err
	}
	fmt.Fprintf(b.log, "%d splits in %.1fs (%.1f splits/s, %d retries)\n", st.Splits, r.SplitSec, float64(st.Splits)/max(r.SplitSec, 1e-9), st.Retries)
	led, err := m.waitLeaders(rctx, n)
	r.LeadersSec = led.Seconds()
	r.SetupSec = r.SplitSec + r.LeadersSec
	if err != nil {
		err = b.interrupted(ctx, err)
		m.partial(ctx, r, err)
		return r, err
	}
	fmt.Fprintf(b.log, "every range led %.1fs after the last split: setup %.1fs\n", r.LeadersSec, r.SetupSec)
	if err := m.checkLayout(ctx, n); err != nil {
		return r, b.interrupted(ctx, err)
	}
	if err := m.checkAlive(); err != nil {
		return r, err
	}

	// Idle.
	if err := sleep(ctx, b.o.settle); err != nil {
		return r, err
	}
	if err := m.idle(ctx, r); err != nil {
		return r, b.interrupted(ctx, err)
	}
	// Writes.
	if err := m.writes(ctx, r); err != nil {
		return r, b.interrupted(ctx, err)
	}
	for i, p := range c.Procs {
		if i < len(r.Nodes) {
			r.Nodes[i].Log = summarizeLog(p.LogPath)
		}
	}
	return r, m.checkAlive()
}

// stop stops every node by PID, in parallel (SIGTERM, SIGKILL after
// cluster.DefaultStopTimeout), and notes how long each took. A node that
// had to be killed is noted in the row, not counted as a failed run: the
// measurements are done by then.
func (b *bench) stop(c *cluster.Cluster, r *row) {
	secs := make([]float64, len(c.Procs))
	errs := make([]error, len(c.Procs))
	var wg sync.WaitGroup
	for i, p := range c.Procs {
		wg.Go(func() {
			began := time.Now()
			errs[i] = p.Stop(cluster.DefaultStopTimeout)
			secs[i] = time.Since(began).Seconds()
		})
	}
	wg.Wait()
	var notes []string
	for i := range c.Procs {
		r.StopSecMax = max(r.StopSecMax, secs[i])
		if errs[i] != nil {
			notes = append(notes, errs[i].Error())
		}
		if i < len(r.Nodes) {
			r.Nodes[i].StopSec = secs[i]
		}
	}
	r.StopNote = strings.Join(notes, "; ")
	fmt.Fprintf(b.log, "stopped pids %v in %ss\n", c.PIDs(), floats(secs))
	if r.StopNote != "" {
		fmt.Fprintf(b.log, "stopping: %s\n", r.StopNote)
	}
}

func floats(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.1f", x)
	}
	return strings.Join(s, "/")
}

// partial measures the idle cost of the ranges that exist after creating
// them failed (setupErr), so that a failed row still says what the nodes
// were paying: it counts the ranges, waits -settle and takes the idle
// measurement, whatever the state of their leaders.
func (m *measurer) partial(ctx context.Context, r *row, setupErr error) {
	if ctx.Err() != nil || errors.Is(setupErr, errInterrupted) || m.checkAlive() != nil {
		return
	}
	r.Partial = true
	r.RangesCreated = -1
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	rs, err := m.cli.Ranges(rctx)
	cancel()
	if err == nil {
		r.RangesCreated = len(rs.Ranges)
	}
	fmt.Fprintf(m.b.log, "setup failed; measuring the idle cost of the ranges there are anyway (routing table: %d, -1 if it did not answer)\n", r.RangesCreated)
	if sleep(ctx, m.b.o.settle) != nil {
		return
	}
	if err := m.idle(ctx, r); err != nil {
		fmt.Fprintf(m.b.log, "idle measurement of the partial setup: %v\n", err)
	}
}

// interrupted turns the error of a cancelled run into errInterrupted.
func (b *bench) interrupted(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		var de *diskError
		if errors.As(context.Cause(ctx), &de) {
			return de
		}
		return errInterrupted
	}
	return err
}

// removeData removes the nodes' data directories under dir, keeping their
// logs.
func (b *bench) removeData(dir string) {
	paths, _ := filepath.Glob(filepath.Join(dir, "start-*", "n*", "data"))
	for _, p := range paths {
		if err := os.RemoveAll(p); err != nil {
			fmt.Fprintln(b.log, "remove", p, err)
		}
	}
	fmt.Fprintf(b.log, "removed the nodes' data under %s (logs kept)\n", dir)
}

// start starts a fresh 3-node cluster under dir. With automatic ports
// a start can lose its port to another process; it is retried in a new
// directory.
func (b *bench) start(ctx context.Context, dir string) (*cluster.Cluster, error) {
	opts := cluster.Options{Binary: b.o.kvd, PortBase: b.o.portBase, ExtraArgs: append([]string{"--log-level", b.o.logLevel}, b.o.kvdArgs...)}
	c, _, err := cluster.StartRetrying(ctx, cluster.StartDialkv, opts, dir, b.log)
	if err != nil && ctx.Err() != nil {
		return nil, errInterrupted
	}
	return c, err
}

// evidence prints what the nodes logged, for a run that failed.
func (b *bench) evidence(c *cluster.Cluster) {
	for _, p := range c.Procs {
		if done, err := p.Exited(); done {
			fmt.Fprintf(b.log, "%s (pid %d) has exited: %v\n", p.Name, p.PID(), err)
		}
		fmt.Fprintf(b.log, "--- %s log %s: %s; last lines:\n%s\n", p.Name, p.LogPath, summarizeLog(p.LogPath), p.LogTail(15))
	}
}

// measurer takes the measurements of one run.
type measurer struct {
	b   *bench
	c   *cluster.Cluster
	cli *client.Client
	dir string // the nodes' data and logs
}

func (m *measurer) checkAlive() error {
	for _, p := range m.c.Procs {
		if done, err := p.Exited(); done {
			return fmt.Errorf("%s (pid %d) exited: %v", p.Name, p.PID(), err)
		}
	}
	return nil
}

// checkInitial waits until the routing table of the fresh cluster lists
// the single user range the splits start from (a new cluster publishes it
// shortly after it is ready).
func (m *measurer) checkInitial(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, initialTimeout)
	defer cancel()
	var why string
	for polls := 0; polls < maxPolls(ctx); polls++ {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		rs, err := m.cli.Ranges(rctx)
		cancel()
		switch {
		case err != nil:
			why = fmt.Sprintf("ranges: %v", err)
		case len(rs.Ranges) == 1 && len(rs.Ranges[0].Start) == 0 && len(rs.Ranges[0].End) == 0:
			return nil
		case len(rs.Ranges) > 1:
			return fmt.Errorf("a fresh cluster has %d user ranges, want 1 covering every key", len(rs.Ranges))
		default:
			why = fmt.Sprintf("the routing table lists %d user ranges", len(rs.Ranges))
		}
		if err := sleep(ctx, pollInterval); err != nil {
			break
		}
	}
	return fmt.Errorf("the fresh cluster's user range: %s", why)
}

// checkLayout checks that the routing table holds exactly the n planned
// ranges.
func (m *measurer) checkLayout(ctx context.Context, n int) error {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	rs, err := m.cli.Ranges(rctx)
	if err != nil {
		return fmt.Errorf("ranges: %w", err)
	}
	return checkRanges(rs.Ranges, n)
}

// waitLeaders polls until the routing table (client Ranges) lists exactly
// want user ranges, each with a leader, and every node's own status says
// every replica it hosts knows its leader. It returns how long it waited.
func (m *measurer) waitLeaders(ctx context.Context, want int) (time.Duration, error) {
	began := time.Now()
	lastNote := began
	var why string
	for polls := 0; polls < maxPolls(ctx); polls++ {
		why = m.leadersMissing(ctx, want)
		if why == "" {
			return time.Since(began), nil
		}
		if err := m.checkAlive(); err != nil {
			return time.Since(began), err
		}
		if time.Since(lastNote) >= leaderNoteEvery {
			lastNote = time.Now()
			fmt.Fprintf(m.b.log, "  waiting %.0fs for leaders: %s\n", time.Since(began).Seconds(), why)
		}
		if err := sleep(ctx, pollInterval); err != nil {
			break
		}
	}
	return time.Since(began), fmt.Errorf("after %.1fs, not every one of %d ranges has a leader: %s", time.Since(began).Seconds(), want, why)
}

// maxPolls bounds a poll loop by ctx's deadline (or an hour without one).
func maxPolls(ctx context.Context) int {
	d := time.Hour
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	return int(d/pollInterval) + 1
}

// leadersMissing returns why not every range has a leader yet, or "".
func (m *measurer) leadersMissing(ctx context.Context, want int) string {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	rs, err := m.cli.Ranges(rctx)
	if err != nil {
		return fmt.Sprintf("ranges: %v", err)
	}
	if len(rs.Ranges) != want {
		return fmt.Sprintf("routing table has %d user ranges, want %d", len(rs.Ranges), want)
	}
	noLeader := 0
	for _, r := range rs.Ranges {
		if r.Leader == "" {
			noLeader++
		}
	}
	if noLeader > 0 {
		return fmt.Sprintf("routing table: %d of %d ranges without a leader", noLeader, want)
	}
	snap, err := m.snapshot(ctx)
	if err != nil {
		return err.Error()
	}
	for i, nd := range snap.nodes {
		if nd.replicas < want {
			return fmt.Sprintf("%s hosts %d replicas, want at least %d", m.c.Procs[i].Name, nd.replicas, want)
		}
		if nd.leaderless > 0 {
			return fmt.Sprintf("%s: %d of its %d replicas know no leader", m.c.Procs[i].Name, nd.leaderless, nd.replicas)
		}
	}
	return ""
}

// raftSnapshot is the Raft state of every node, from their Status.
type raftSnapshot struct {
	nodes []nodeRaft
	// termSum is the sum over ranges of the highest term any replica
	// reports: its growth counts elections.
	termSum uint64
	// leaderless counts ranges that some awake replica sees without a
	// leader.
	leaderless int
}

// nodeRaft counts one node's replicas. A hibernating replica (kvd
// --hibernate-after) has stopped its Raft instance on purpose: it is
// counted as asleep, not as leaderless.
type nodeRaft struct {
	replicas, leaders, leaderless, asleep int
}

// hibernating is the State a node reports for a sleeping replica.
const hibernating = "Hibernating"

func (m *measurer) snapshot(ctx context.Context) (*raftSnapshot, error) {
	s := &raftSnapshot{}
	terms := map[uint64]uint64{}
	noLeader := map[uint64]bool{}
	for i, ep := range m.c.Endpoints {
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		st, err := m.cli.Status(rctx, ep)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("status of %s: %w", m.c.Procs[i].Name, err)
		}
		var nr nodeRaft
		for _, r := range st.Node.Ranges {
			nr.replicas++
			switch {
			case r.State == "Leader":
				nr.leaders++
			case r.State == hibernating:
				nr.asleep++
			}
			if r.Leader == "" && r.State != hibernating {
				nr.leaderless++
				noLeader[r.Id] = true
			}
			terms[r.Id] = max(terms[r.Id], r.Term)
		}
		s.nodes = append(s.nodes, nr)
	}
	for _, t := range terms {
		s.termSum += t
	}
	s.leaderless = len(noLeader)
	return s, nil
}

// cpuSample is every node's CPU time, the machine's and this process's.
type cpuSample struct {
	at      time.Time
	nodes   []float64
	machine cluster.MachineCPU
	self    float64
}

func (m *measurer) sampleCPU() (cpuSample, error) {
	s := cpuSample{at: time.Now()}
	for _, p := range m.c.Procs {
		v, err := cluster.ReadProcCPU(p.PID())
		if err != nil {
			return s, fmt.Errorf("%s: %w", p.Name, err)
		}
		s.nodes = append(s.nodes, v.Seconds())
	}
	var err error
	if s.machine, err = cluster.ReadMachineCPU(); err != nil {
		return s, err
	}
	self, err := cluster.ReadProcCPU(os.Getpid())
	s.self = self.Seconds()
	return s, err
}

// cpuUse is what happened between two samples, in % of one core.
type cpuUse struct {
	window       time.Duration
	nodes        []float64
	self, others float64
	machine      float64
}

func usage(a, b cpuSample) cpuUse {
	u := cpuUse{window: b.at.Sub(a.at)}
	sec := u.window.Seconds()
	var sum float64
	for i := range a.nodes {
		pct := (b.nodes[i] - a.nodes[i]) / sec * 100
		u.nodes = append(u.nodes, pct)
		sum += pct
	}
	u.self = (b.self - a.self) / sec * 100
	u.machine = b.machine.BusyCoresSince(a.machine, runtime.NumCPU()) * 100
	u.others = max(u.machine-sum-u.self, 0)
	return u
}

// idle measures the idle cluster over b.o.idle: CPU of every node, then
// memory, threads, descriptors, goroutines and elections.
func (m *measurer) idle(ctx context.Context, r *row) error {
	// The Raft snapshots only count elections; an overloaded cluster may
	// not answer them, which must not stop the CPU and memory figures.
	before, err := m.snapshot(ctx)
	if err != nil {
		fmt.Fprintf(m.b.log, "idle: %v\n", err)
	}
	r.Load1Idle = cluster.LoadAvg()
	a, err := m.sampleCPU()
	if err != nil {
		return err
	}
	if err := sleep(ctx, m.b.o.idle); err != nil {
		return err
	}
	z, err := m.sampleCPU()
	if err != nil {
		return err
	}
	u := usage(a, z)
	after, err := m.snapshot(ctx)
	if err != nil {
		fmt.Fprintf(m.b.log, "idle: %v\n", err)
	}
	used, _ := dirUsage(m.dir, 0)
	r.DiskMiB = float64(used) / mib
	r.IdleWindowSec = u.window.Seconds()
	r.IdleBenchCPU, r.IdleOtherCPU = u.self, u.others
	r.IdleElections, r.LeaderlessAfterIdle = -1, -1
	if before != nil && after != nil {
		r.IdleElections = int64(after.termSum) - int64(before.termSum)
		r.LeaderlessAfterIdle = after.leaderless
	}
	if after == nil {
		after = &raftSnapshot{nodes: make([]nodeRaft, len(m.c.Procs))}
	}
	if r.Partial && r.RangesCreated < 0 {
		// The routing table did not answer: count the replicas the
		// busiest node hosts, less the meta range.
		for _, nd := range after.nodes {
			r.RangesCreated = max(r.RangesCreated, nd.replicas-1)
		}
	}
	var cpuSum, rssSum float64
	var asleep, replicas int
	for i, p := range m.c.Procs {
		st, err := cluster.ReadProc(p.PID())
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
		nd := nodeRow{Name: p.Name, PID: p.PID(), IdleCPUPct: u.nodes[i],
			RSSMiB: float64(st.RSS) / mib, HWMMiB: float64(st.PeakRSS) / mib, Threads: st.Threads, FDs: st.FDs,
			Replicas: after.nodes[i].replicas, Leaders: after.nodes[i].leaders, Asleep: after.nodes[i].asleep}
		nd.Goroutines = m.goroutines(ctx, i)
		r.Nodes = append(r.Nodes, nd)
		cpuSum += nd.IdleCPUPct
		asleep += nd.Asleep
		replicas += nd.Replicas
		rssSum += nd.RSSMiB
		r.IdleCPUMax = max(r.IdleCPUMax, nd.IdleCPUPct)
		r.RSSMax = max(r.RSSMax, nd.RSSMiB)
		r.HWMMax = max(r.HWMMax, nd.HWMMiB)
	}
	r.IdleCPUMean = cpuSum / float64(len(m.c.Procs))
	if replicas > 0 {
		r.AsleepPct = float64(asleep) / float64(replicas) * 100
	}
	r.RSSMean = rssSum / float64(len(m.c.Procs))
	for _, nd := range r.Nodes {
		fmt.Fprintf(m.b.log, "idle %s pid %d: cpu %.1f%% of a core, rss %.1f MiB, hwm %.1f MiB, threads %d, fds %d, goroutines %d, replicas %d, leads %d, hibernating %d\n",
			nd.Name, nd.PID, nd.IdleCPUPct, nd.RSSMiB, nd.HWMMiB, nd.Threads, nd.FDs, nd.Goroutines, nd.Replicas, nd.Leaders, nd.Asleep)
	}
	fmt.Fprintf(m.b.log, "idle window %.1fs: %d elections, %d ranges without a leader at the end; this benchmark %.1f%%, other processes %.1f%% of a core; data on disk %.1f MiB; load average %s\n",
		r.IdleWindowSec, r.IdleElections, r.LeaderlessAfterIdle, u.self, u.others, r.DiskMiB, r.Load1Idle)
	return nil
}

// goroutines scrapes go_goroutines from node i's /metrics (-1 if unknown).
func (m *measurer) goroutines(ctx context.Context, i int) int {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, "http://"+m.c.HTTPAddrs[i]+"/metrics", nil)
	if err != nil {
		return -1
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	return parseGoroutines(io.LimitReader(resp.Body, metricsLimit))
}

func parseGoroutines(rd io.Reader) int {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(f)
			}
		}
	}
	return -1
}

// writes runs the put workload over every range and measures the nodes'
// CPU meanwhile.
func (m *measurer) writes(ctx context.Context, r *row) error {
	o := m.b.o
	cfg := workload.DefaultConfig()
	cfg.Workload = workload.Put
	cfg.Clients = o.clients
	cfg.Keys = rangeStep(r.Ranges) * r.Ranges
	cfg.KeyPrefix = keyPrefix
	cfg.ValueSize = o.valueSize
	cfg.Duration = o.duration
	cfg.OpTimeout = opTimeout
	drivers := make([]workload.Driver, 0, o.conns)
	defer func() {
		for _, d := range drivers {
			d.Close()
		}
	}()
	for range o.conns {
		d, err := dialkv.New(dialkv.Options{Endpoints: m.c.Endpoints})
		if err != nil {
			return err
		}
		drivers = append(drivers, d)
	}
	before, err := m.snapshot(ctx)
	if err != nil {
		return err
	}
	a, err := m.sampleCPU()
	if err != nil {
		return err
	}
	res, err := workload.Run(ctx, cfg, drivers)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return errInterrupted
	}
	z, err := m.sampleCPU()
	if err != nil {
		return err
	}
	u := usage(a, z)
	after, err := m.snapshot(ctx)
	if err != nil {
		return err
	}
	r.Put = res.Total
	r.PutsPerSec, r.P50Ms, r.P99Ms, r.PutErrors = res.Total.OpsPerSec, res.Total.P50Ms, res.Total.P99Ms, res.Total.Errors
	r.PutErrorSamples = res.ErrorSamples
	r.WriteElections = int64(after.termSum) - int64(before.termSum)
	r.WriteOtherCPU = u.others
	r.Load1Write = cluster.LoadAvg()
	var sum float64
	for i, p := range m.c.Procs {
		st, err := cluster.ReadProc(p.PID())
		if err != nil {
			return fmt.Errorf("%s: %w", p.Name, err)
		}
		if i < len(r.Nodes) {
			r.Nodes[i].WriteCPUPct = u.nodes[i]
			r.Nodes[i].RSSAfterWriteMiB = float64(st.RSS) / mib
			r.Nodes[i].HWMAfterWriteMiB = float64(st.PeakRSS) / mib
		}
		sum += u.nodes[i]
		r.WriteCPUMax = max(r.WriteCPUMax, u.nodes[i])
	}
	r.WriteCPUMean = sum / float64(len(m.c.Procs))
	fmt.Fprintf(m.b.log, "writes: %d clients, %d keys, %.1fs: %.0f puts/s, p50 %.2f ms, p99 %.2f ms, %d errors %v; node cpu %s of a core; %d elections; load average %s\n",
		cfg.Clients, cfg.Keys, res.ElapsedSec, res.Total.OpsPerSec, res.Total.P50Ms, res.Total.P99Ms, res.Total.Errors,
		res.ErrorSamples, pcts(u.nodes), r.WriteElections, r.Load1Write)
	return nil
}

func pcts(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.0f%%", x)
	}
	return strings.Join(s, "/")
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return errInterrupted
	case <-t.C:
		return nil
	}
}

// summarizeLog counts a node log's warnings and errors and the lines that
// speak of elections, as evidence for a failed run.
func summarizeLog(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var lines, warn, errs, elections int
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		t := sc.Text()
		lines++
		switch {
		case strings.Contains(t, "level=WARN"):
			warn++
		case strings.Contains(t, "level=ERROR"):
			errs++
		}
		if strings.Contains(t, "election") {
			elections++
		}
	}
	return fmt.Sprintf("%d lines, %d warnings, %d errors, %d mention elections", lines, warn, errs, elections)
}
