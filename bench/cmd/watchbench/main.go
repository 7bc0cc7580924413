package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"

	"github.com/dialkv/dialkv/harness"

	"github.com/dialkv/dialkv/bench/cluster"
	"github.com/dialkv/dialkv/bench/workload"
)

const (
	// prefix is where the writers write and the watchers watch.
	prefix = "b/"
	// readyTimeout bounds the opening of a phase's watch streams.
	readyTimeout = 30 * time.Second
	// maxStreamErrors bounds how often one keepalive goroutine reopens a
	// broken stream before it gives up.
	maxStreamErrors = 10
	// headerLen is the length of a value's header, "p01 w0001 s0000000042 ".
	headerLen = 22
	// goalRatio is issue 16's bound: watchers may cost at most 10% of the
	// write throughput.
	goalRatio = 0.9
	// maxPhases keeps a phase's number within the header's 2 digits.
	maxPhases = 99
	// maxWriters keeps a writer's number within the header's 4 digits.
	maxWriters = 9999
)

var errInterrupted = errors.New("interrupted")

type options struct {
	systems      []string
	kvd          string
	etcdnode     string
	workDir      string
	keep         bool
	portBase     int
	logLevel     string
	kvdArgs      []string
	duration     time.Duration
	warmup       time.Duration
	drainTimeout time.Duration
	opTimeout    time.Duration
	clients      int
	keys         int
	valueSize    int
	watchers     []int
	leaseTTL     int64
	cpuProfile   string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "watchbench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	stopProfile, err := cluster.StartCPUProfile(o.cpuProfile, stderr, "watchbench")
	if err != nil {
		fmt.Fprintln(stderr, "watchbench:", err)
		return 1
	}
	defer stopProfile()

	dir, err := cluster.WorkDir(o.workDir, "watchbench")
	if err != nil {
		fmt.Fprintln(stderr, "watchbench:", err)
		return 1
	}
	// runSystems stops every process it started before it returns.
	failed, err := runSystems(ctx, o, dir, stdout, stderr)
	if o.keep || failed || err != nil {
		fmt.Fprintf(stderr, "watchbench: data and logs kept in %s\n", dir)
	} else if rerr := os.RemoveAll(dir); rerr != nil {
		fmt.Fprintln(stderr, "watchbench: remove", dir, rerr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "watchbench:", err)
		return 1
	}
	if failed {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("watchbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var kvdArgs string
	watchers, systems := "1,100", sysDialkv
	fs.StringVar(&systems, "systems", systems, "systems to measure, one after the other: dialkv, etcd or dialkv,etcd (then RATIO lines compare them)")
	fs.StringVar(&o.kvd, "kvd", "", "kvd binary (default: next to this binary)")
	fs.StringVar(&o.etcdnode, "etcdnode", "", "etcdnode binary, for -systems etcd (default: next to this binary)")
	fs.StringVar(&o.workDir, "work-dir", "", "parent of the nodes' data and logs (default: a new temporary directory)")
	fs.BoolVar(&o.keep, "keep", false, "keep data and logs (always kept after a failure)")
	fs.IntVar(&o.portBase, "port-base", 0, "node i uses port-base+10i..+2 on 127.0.0.1; 0 picks a free base below 32768")
	fs.StringVar(&o.logLevel, "log-level", "warn", "kvd --log-level")
	fs.StringVar(&kvdArgs, "kvd-args", "", "more kvd serve flags, space-separated")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each write phase; each lease phase lasts half of it")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "unmeasured puts before the first phase")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "after the writes, how long the watchers may take to receive every event")
	fs.DurationVar(&o.opTimeout, "op-timeout", 10*time.Second, "bound of one put, grant or keepalive")
	fs.IntVar(&o.clients, "clients", 64, "closed-loop writers, granters and keepalive streams")
	fs.IntVar(&o.keys, "keys", 10000, "keys under "+prefix)
	fs.IntVar(&o.valueSize, "value-size", 256, "bytes per value")
	fs.StringVar(&watchers, "watchers", watchers, "comma-separated watcher counts, a write phase each (0: none, as the baseline)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of watchbench itself (the writers and the watchers) to this file")
	fs.Int64Var(&o.leaseTTL, "lease-ttl", 60, "TTL of the granted leases, in seconds")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.kvdArgs = strings.Fields(kvdArgs)
	var err error
	if o.watchers, err = parseCounts(watchers); err != nil {
		return nil, fmt.Errorf("-watchers: %w", err)
	}
	if len(o.watchers) > maxPhases-2 {
		return nil, fmt.Errorf("-watchers: %d counts; at most %d", len(o.watchers), maxPhases-2)
	}
	if o.systems, err = parseSystems(systems); err != nil {
		return nil, fmt.Errorf("-systems: %w", err)
	}
	if o.kvd, err = cluster.Binary(o.kvd, "kvd", "run `make build`, or pass -kvd"); err != nil {
		return nil, err
	}
	if slices.Contains(o.systems, sysEtcd) {
		if o.etcdnode, err = cluster.Binary(o.etcdnode, "etcdnode", "run `make bench-build`, or pass -etcdnode"); err != nil {
			return nil, err
		}
	}
	switch {
	case o.duration < time.Second || o.duration > time.Hour:
		return nil, fmt.Errorf("-duration %v: want 1s to 1h", o.duration)
	case o.warmup < 0 || o.warmup > time.Hour:
		return nil, fmt.Errorf("-warmup %v: want 0 to 1h", o.warmup)
	case o.drainTimeout < time.Second || o.drainTimeout > time.Hour:
		return nil, fmt.Errorf("-drain-timeout %v: want 1s to 1h", o.drainTimeout)
	case o.opTimeout < 10*time.Millisecond || o.opTimeout > time.Hour:
		return nil, fmt.Errorf("-op-timeout %v: want 10ms to 1h", o.opTimeout)
	case o.clients < 1 || o.clients > maxWriters:
		return nil, fmt.Errorf("-clients %d: want 1 to %d", o.clients, maxWriters)
	case o.keys < 1 || o.keys > 1<<30:
		return nil, fmt.Errorf("-keys %d: want 1 to 2^30", o.keys)
	case o.valueSize < headerLen || o.valueSize > 1<<20:
		return nil, fmt.Errorf("-value-size %d: want %d (the header that names each put) to 1048576", o.valueSize, headerLen)
	case o.leaseTTL < 1 || o.leaseTTL > 1<<31:
		return nil, fmt.Errorf("-lease-ttl %d: want 1 to 2^31 seconds", o.leaseTTL)
	case o.portBase != 0 && (o.portBase < 1024 || o.portBase+10*cluster.MaxNodes+2 > 32767):
		return nil, fmt.Errorf("-port-base %d: want 1024 to %d, so every port stays below 32768", o.portBase, 32767-10*cluster.MaxNodes-2)
	}
	return o, nil
}

// parseSystems parses "dialkv,etcd" into the systems in the order they
// run, dialkv first.
func parseSystems(s string) ([]string, error) {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		switch f = strings.TrimSpace(f); f {
		case sysDialkv, sysEtcd:
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		default:
			return nil, fmt.Errorf("%q: want dialkv, etcd or both, comma-separated", s)
		}
	}
	slices.Sort(out) // "dialkv" < "etcd"
	return out, nil
}

// parseCounts parses "1,100" into watcher counts, each 0 to 1000.
func parseCounts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n > 1000 {
			return nil, fmt.Errorf("%q: want comma-separated counts from 0 to 1000", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// bench measures one system.
type bench struct {
	o        *options
	out, log io.Writer
	system   string // sysDialkv or sysEtcd
	c        *cluster.Cluster
	sys      system
	res      sysResult
}

// sysResult is what one system measured, for the RATIO lines: ops/s and
// p99 of the writes (by watcher count) and of the lease phases, and the
// events delivered (by watcher count).
type sysResult struct {
	puts   map[int]workload.Stats
	watch  map[int]watchStats
	grant  workload.Stats
	keep   workload.Stats
	failed bool
}

// watchStats is one watcher phase's delivery.
type watchStats struct {
	eventsPerSec float64
	lagP99Ms     float64
}

// name is how the lines name a measurement: dialkv's by the name alone,
// etcd's with "etcd-" before it.
func (b *bench) name(n string) string {
	if b.system == sysDialkv {
		return n
	}
	return b.system + "-" + n
}

// server names the system's server processes on the cpu fields.
func (b *bench) server() string {
	if b.system == sysDialkv {
		return "kvd"
	}
	return b.system
}

// runSystems measures each of o.systems in turn, each on a cluster of
// its own that is stopped before the next starts, then compares them.
// failed says a check did not hold (its FAIL line is printed).
func runSystems(ctx context.Context, o *options, dir string, out, log io.Writer) (failed bool, err error) {
	results := map[string]sysResult{}
	for _, s := range o.systems {
		b := &bench{o: o, out: out, log: log, system: s,
			res: sysResult{puts: map[int]workload.Stats{}, watch: map[int]watchStats{}}}
		err := b.runBench(ctx, filepath.Join(dir, s))
		failed = failed || b.res.failed
		if err != nil {
			return failed, fmt.Errorf("%s: %w", s, err)
		}
		results[s] = b.res
	}
	if d, ok := results[sysDialkv]; ok {
		if e, ok := results[sysEtcd]; ok {
			printRatios(out, o, d, e)
		}
	}
	return failed, nil
}

// printRatios compares dialkv with etcd, as bench-compare's RATIO lines
// do: dialkv's figure over etcd's, p99s side by side.
func printRatios(out io.Writer, o *options, d, e sysResult) {
	ratio := func(a, b float64) float64 {
		if b <= 0 {
			return math.NaN()
		}
		return a / b
	}
	base := fmt.Sprintf("put-c%d", o.clients)
	ws := slices.Sorted(maps.Keys(d.puts))
	for _, n := range ws {
		ep, ok := e.puts[n]
		if !ok {
			continue
		}
		name := base
		if n > 0 {
			name = fmt.Sprintf("%s-w%d", base, n)
		}
		dp := d.puts[n]
		fmt.Fprintf(out, "RATIO %s %.3f p99 %.3f vs %.3f\n", name, ratio(dp.OpsPerSec, ep.OpsPerSec), dp.P99Ms, ep.P99Ms)
	}
	for _, n := range ws {
		dw, ok1 := d.watch[n]
		ew, ok2 := e.watch[n]
		if ok1 && ok2 {
			fmt.Fprintf(out, "RATIO watch-w%d %.3f lag p99 %.3f vs %.3f (events/s delivered)\n",
				n, ratio(dw.eventsPerSec, ew.eventsPerSec), dw.lagP99Ms, ew.lagP99Ms)
		}
	}
	fmt.Fprintf(out, "RATIO lease-grant-c%d %.3f p99 %.3f vs %.3f\n", o.clients, ratio(d.grant.OpsPerSec, e.grant.OpsPerSec), d.grant.P99Ms, e.grant.P99Ms)
	fmt.Fprintf(out, "RATIO lease-keepalive-c%d %.3f p99 %.3f vs %.3f\n", o.clients, ratio(d.keep.OpsPerSec, e.keep.OpsPerSec), d.keep.P99Ms, e.keep.P99Ms)
}

// runBench runs every phase on one system and stops its cluster before
// it returns. A check that did not hold sets b.res.failed.
func (b *bench) runBench(ctx context.Context, dir string) (err error) {
	o := b.o
	if err := b.start(ctx, dir); err != nil {
		return err
	}
	defer func() {
		if err := b.c.Stop(); err != nil {
			fmt.Fprintf(b.log, "stopping %s: %v\n", b.system, err)
		}
		fmt.Fprintf(b.log, "stopped %s pids %v\n", b.system, b.c.PIDs())
	}()
	switch b.system {
	case sysDialkv:
		b.sys, err = newDialkvSystem(b.c.Endpoints)
	case sysEtcd:
		b.sys, err = newEtcdSystem(ctx, b.c.Endpoints)
	}
	if err != nil {
		return err
	}
	defer b.sys.close()

	fmt.Fprintf(b.log, "warm-up: %v of puts\n", o.warmup)
	b.write(ctx, o.warmup, time.Now(), 0)
	if ctx.Err() != nil {
		return errInterrupted
	}
	leader, lerr := b.c.Leader(ctx)
	if lerr != nil {
		leader = "unknown (" + lerr.Error() + ")"
	}
	fmt.Fprintf(b.out, "watchbench: 3 %s nodes (leader %s), %d writers, %d keys under %s, %d-byte values, %v per write phase; load average %s\n",
		b.server(), leader, o.clients, o.keys, prefix, o.valueSize, o.duration, cluster.LoadAvg())

	base := fmt.Sprintf("put-c%d", o.clients)
	// The baseline runs first and, when watchers run, once more after
	// them, so that drift of a shared machine over the run (and the data's
	// growth) weighs on both sides of each SCALE line.
	plan := []phaseSpec{{0, base + "-before"}}
	puts := b.res.puts
	for _, n := range o.watchers {
		if _, dup := puts[n]; n > 0 && !dup {
			puts[n] = workload.Stats{}
			plan = append(plan, phaseSpec{n, fmt.Sprintf("%s-w%d", base, n)})
		}
	}
	if len(plan) > 1 {
		plan = append(plan, phaseSpec{0, base + "-after"})
	} else {
		plan[0].name = base
	}
	baseHist, baseErrs, baseTime := workload.NewHistogram(), int64(0), time.Duration(0)
	for i, ph := range plan {
		res, err := b.watchPhase(ctx, ph, i+1)
		if err != nil {
			return err
		}
		b.res.failed = b.res.failed || res.failed
		if ph.watchers > 0 {
			puts[ph.watchers] = res.run.stats()
			continue
		}
		st := res.run.stats()
		baseErrs += st.Errors
		baseTime += res.run.end - res.run.start
		for _, w := range res.run.writers {
			baseHist.Merge(w.hist)
		}
	}
	puts[0] = workload.Summarize(baseHist, baseErrs, 0, baseTime)
	if len(plan) > 1 {
		p := puts[0]
		fmt.Fprintf(b.out, "WORKLOAD %s ops/s %.0f p50 %.3f p99 %.3f errors %d (before and after merged)\n", b.name(base), p.OpsPerSec, p.P50Ms, p.P99Ms, p.Errors)
	}
	for _, ph := range plan {
		if ph.watchers == 0 {
			continue
		}
		w, p := puts[ph.watchers], puts[0]
		ratio := 0.0
		if p.OpsPerSec > 0 {
			ratio = w.OpsPerSec / p.OpsPerSec
		}
		fmt.Fprintf(b.out, "SCALE %s/%s %.3f p99 %.3f vs %.3f\n", b.name(ph.name), b.name(base), ratio, w.P99Ms, p.P99Ms)
		if ratio < goalRatio {
			fmt.Fprintf(b.out, "NOTE %s: the watchers cost more than issue 16's bound of %.0f%% of the writes\n", b.name(ph.name), 100*(1-goalRatio))
		}
	}

	if err := b.leasePhases(ctx); err != nil {
		return err
	}
	fmt.Fprintf(b.out, "watchbench: %s done; load average %s\n", b.system, cluster.LoadAvg())
	return nil
}

// start starts 3 nodes (kvd or etcdnode) under a fresh directory of dir.
// With automatic ports a start can lose a port to another process; it is
// retried.
func (b *bench) start(ctx context.Context, dir string) error {
	start, opts := cluster.StartDialkv, cluster.Options{Binary: b.o.kvd, PortBase: b.o.portBase,
		ExtraArgs: append([]string{"--log-level", b.o.logLevel}, b.o.kvdArgs...)}
	if b.system == sysEtcd {
		start, opts = cluster.StartEtcd, cluster.Options{Binary: b.o.etcdnode, PortBase: b.o.portBase}
	}
	c, d, err := cluster.StartRetrying(ctx, start, opts, dir, b.log)
	if err != nil {
		if ctx.Err() != nil {
			return errInterrupted
		}
		return err
	}
	b.c = c
	fmt.Fprintf(b.log, "started 3 %s nodes: pids %v, endpoints %s, data %s\n", b.server(), c.PIDs(), strings.Join(c.Endpoints, ","), d)
	return nil
}

// writerLog is what one writer did in one phase.
type writerLog struct {
	// acks holds, for each of the writer's puts in order, when it was
	// acknowledged (ns since the phase's zero); 0: it failed.
	acks []int64
	hist *hdrhistogram.Histogram
	errs int64
}

// writeRun is the outcome of one write phase.
type writeRun struct {
	writers []*writerLog
	start   time.Duration // since the phase's zero
	end     time.Duration
}

func (r writeRun) stats() workload.Stats {
	h := workload.NewHistogram()
	var errs int64
	for _, w := range r.writers {
		h.Merge(w.hist)
		errs += w.errs
	}
	return workload.Summarize(h, errs, 0, r.end-r.start)
}

// write runs the writers of phase for d. Times are counted from zero.
func (b *bench) write(ctx context.Context, d time.Duration, zero time.Time, phase int) writeRun {
	o := b.o
	run := writeRun{writers: make([]*writerLog, o.clients), start: time.Since(zero)}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := range o.clients {
		w := &writerLog{hist: workload.NewHistogram()}
		run.writers[i] = w
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(i)))
			var key []byte
			val := make([]byte, o.valueSize)
			// The loop ends at the deadline: each put is bounded by
			// -op-timeout.
			for seq := 0; time.Now().Before(deadline) && ctx.Err() == nil; seq++ {
				key = workload.AppendKey(key[:0], prefix, rng.IntN(o.keys))
				fillValue(val, phase, i, seq)
				opCtx, cancel := context.WithTimeout(ctx, o.opTimeout)
				began := time.Now()
				err := b.sys.put(opCtx, key, val)
				cancel()
				if err != nil {
					w.errs++
					w.acks = append(w.acks, 0)
					continue
				}
				w.acks = append(w.acks, int64(time.Since(zero)))
				// RecordValue fails only past the histogram's minute; a put
				// is bounded by -op-timeout.
				_ = w.hist.RecordValue(max(time.Since(began).Microseconds(), 1))
			}
		})
	}
	wg.Wait()
	run.end = time.Since(zero)
	return run
}

// fillValue writes put seq of writer w in phase into val: a header that
// names the put, so that its event can be matched to it, then padding.
// val holds at least headerLen bytes.
func fillValue(val []byte, phase, w, seq int) {
	h := fmt.Appendf(val[:0], "p%02d w%04d s%010d ", phase%(maxPhases+1), w, seq%10_000_000_000)
	for i := len(h); i < len(val); i++ {
		val[i] = 'v'
	}
}

// parseValue returns the phase, writer and sequence number fillValue
// wrote; ok is false for a value it did not write.
func parseValue(v []byte) (phase, w, seq int, ok bool) {
	if len(v) < headerLen || v[0] != 'p' || v[3] != ' ' || v[4] != 'w' || v[9] != ' ' || v[10] != 's' || v[21] != ' ' {
		return 0, 0, 0, false
	}
	phase, ok1 := digits(v[1:3])
	w, ok2 := digits(v[5:9])
	seq, ok3 := digits(v[11:21])
	if !ok1 || !ok2 || !ok3 {
		return 0, 0, 0, false
	}
	return phase, w, seq, true
}

// digits parses b, decimal digits only (no sign), as fillValue writes
// them.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' || n > (math.MaxInt-9)/10 {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// phaseResult is one write phase's outcome.
type phaseResult struct {
	run    writeRun
	failed bool
}

// phaseSpec is one write phase: its watcher count and its name.
type phaseSpec struct {
	watchers int
	name     string
}

// cpuSample is the CPU time used so far by the nodes (kvd or etcd) and
// by this process.
type cpuSample struct {
	at         time.Time
	kvd, bench time.Duration
}

func (b *bench) cpu() cpuSample {
	s := cpuSample{at: time.Now()}
	for _, pid := range b.c.PIDs() {
		// A node that ended counts nothing more.
		if cpu, err := cluster.ReadProcCPU(pid); err == nil {
			s.kvd += cpu
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.bench = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return s
}

// cpuSince renders the CPU used since s as % of one core.
func (b *bench) cpuSince(s cpuSample) string {
	e := b.cpu()
	wall := e.at.Sub(s.at).Seconds()
	if wall <= 0 {
		return fmt.Sprintf("cpu %s 0 bench 0", b.server())
	}
	return fmt.Sprintf("cpu %s %.0f%% bench %.0f%%", b.server(), 100*(e.kvd-s.kvd).Seconds()/wall, 100*(e.bench-s.bench).Seconds()/wall)
}

// watchPhase runs the writers with n watchers on the prefix and prints
// the phase's lines; phase numbers the puts' values.
func (b *bench) watchPhase(ctx context.Context, spec phaseSpec, phase int) (phaseResult, error) {
	o := b.o
	n, name := spec.watchers, spec.name
	zero := time.Now()
	wctx, stopWatchers := context.WithCancel(ctx)
	defer stopWatchers()
	ws, wg, err := b.openWatchers(wctx, n, phase, zero)
	defer func() {
		// Each watcher closes its connection as its goroutine ends.
		stopWatchers()
		wg.Wait()
	}()
	if err != nil {
		return phaseResult{}, err
	}
	fmt.Fprintf(b.log, "%s: %d watchers watching; writing for %v\n", name, n, o.duration)

	c0 := b.cpu()
	run := b.write(ctx, o.duration, zero, phase)
	if ctx.Err() != nil {
		return phaseResult{}, errInterrupted
	}
	res := phaseResult{run: run}
	cpu := b.cpuSince(c0)
	p := run.stats()
	fmt.Fprintf(b.out, "WORKLOAD %s ops/s %.0f p50 %.3f p99 %.3f errors %d %s load %s\n",
		b.name(name), p.OpsPerSec, p.P50Ms, p.P99Ms, p.Errors, cpu, firstLoad())
	if n == 0 {
		return res, nil
	}

	// Wait until every watcher holds every acknowledged put (or a stream
	// broke: that fails anyway); the exact check runs only once the counts
	// suffice, as it walks every put.
	acked := p.Ops
	drainErr := harness.Poll(ctx, o.drainTimeout, 100*time.Millisecond, func(context.Context) (bool, error) {
		for _, w := range ws {
			if w.failure() != nil {
				return true, nil
			}
			if w.matched() < acked {
				return false, nil
			}
		}
		for _, w := range ws {
			if w.check(run, nil).missing > 0 {
				return false, nil
			}
		}
		return true, nil
	})
	if ctx.Err() != nil {
		return res, errInterrupted
	}
	stopWatchers()
	wg.Wait()

	lag := workload.NewHistogram()
	var total, missed, lastNs, messages, earlier int64
	for i, w := range ws {
		m := w.check(run, lag)
		total += m.events
		missed += m.missing
		w.mu.Lock()
		lastNs = max(lastNs, w.last)
		messages += w.messages
		earlier += w.earlier
		w.mu.Unlock()
		if why := m.problem(w.failure()); why != "" {
			res.failed = true
			fmt.Fprintf(b.out, "FAIL %s watcher %d (on %s): %s\n", b.name(name), i, w.node, why)
		}
		if m.repeats > 0 {
			fmt.Fprintf(b.log, "%s watcher %d: %d puts seen at two indexes (committed twice: a client retry)\n", name, i, m.repeats)
		}
	}
	if drainErr != nil {
		fmt.Fprintf(b.log, "%s: the watchers did not receive every event within -drain-timeout: %v\n", name, drainErr)
	}
	span := time.Duration(lastNs) - run.start
	rate := 0.0
	if span > 0 {
		rate = float64(total) / span.Seconds()
	}
	drain := max(time.Duration(lastNs)-run.end, 0)
	l := workload.Summarize(lag, 0, 0, span)
	perMsg := 0.0
	if messages > 0 {
		perMsg = float64(total) / float64(messages)
	}
	b.res.watch[n] = watchStats{eventsPerSec: rate, lagP99Ms: l.P99Ms}
	fmt.Fprintf(b.out, "WORKLOAD %s events/s %.0f per_watcher %.0f lag p50 %.3f p99 %.3f max %.3f drain_ms %.0f events/msg %.1f missed %d earlier %d\n",
		b.name(fmt.Sprintf("watch-w%d", n)), rate, rate/float64(n), l.P50Ms, l.P99Ms, l.MaxMs, float64(drain.Microseconds())/1000, perMsg, missed, earlier)
	return res, nil
}

// watcher is one Watch stream on the prefix, on its own connection.
type watcher struct {
	node  string
	phase int

	mu sync.Mutex
	// arrivals[w][seq] is when writer w's put seq first arrived (ns since
	// the phase's zero); 0: not yet.
	arrivals [][]int64
	events   int64 // put events that name a put of this phase
	messages int64 // messages that carried events
	// earlier counts events of puts acknowledged before the watch began:
	// a watch served by a follower starts from the follower's applied
	// index, which may trail the leader's (etcd's members do the same).
	earlier    int64
	foreign    int64 // events of no put the writers made
	outOfOrder int64 // events whose index is not above their range's last
	// firstOdd describes the first foreign or out-of-order event, for the
	// FAIL line.
	firstOdd string
	// lastIndex is by event.group; a pointer, so that the update of
	// every event is no map assignment (a quarter of the checking).
	lastIndex map[uint64]*uint64
	last      int64 // arrival of the last event
	err       error // why the stream ended early
}

func (w *watcher) matched() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.events
}

func (w *watcher) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// openWatchers opens n watch streams, watcher i on node i mod 3, and
// returns once each has sent its first message, when it watches. The
// streams then receive until ctx ends; wg waits for them.
func (b *bench) openWatchers(ctx context.Context, n, phase int, zero time.Time) ([]*watcher, *sync.WaitGroup, error) {
	wg := &sync.WaitGroup{}
	ws := make([]*watcher, 0, n)
	ready := make(chan error, n)
	for i := range n {
		node := i % len(b.c.Endpoints)
		w := &watcher{node: b.c.Procs[node].Name, phase: phase, lastIndex: map[uint64]*uint64{}, arrivals: make([][]int64, b.o.clients)}
		ws = append(ws, w)
		wg.Go(func() { w.receive(ctx, b.sys, node, zero, ready) })
	}
	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	for range n {
		select {
		case err := <-ready:
			if err != nil {
				return ws, wg, fmt.Errorf("open a watch: %w", err)
			}
		case <-timer.C:
			return ws, wg, fmt.Errorf("the watches did not all open within %v", readyTimeout)
		case <-ctx.Done():
			return ws, wg, errInterrupted
		}
	}
	return ws, wg, nil
}

// receive opens the stream on node, reports on ready once its first
// message came (or it failed), then records events until ctx ends or the
// stream breaks. It closes the stream's connection before it returns.
func (w *watcher) receive(ctx context.Context, sys system, node int, zero time.Time, ready chan<- error) {
	stream, err := sys.watch(ctx, node)
	if err == nil {
		defer stream.close()
		var first []event
		if first, err = stream.recv(); err == nil {
			w.record(first, int64(time.Since(zero)))
		}
	}
	ready <- err
	if err != nil {
		return
	}
	// One iteration per message: the loop ends when the stream does, at
	// the latest when ctx ends.
	for {
		resp, err := stream.recv()
		if err != nil {
			if ctx.Err() == nil {
				w.mu.Lock()
				w.err = err
				w.mu.Unlock()
			}
			return
		}
		w.record(resp, int64(time.Since(zero)))
	}
}

// record notes the events of one message, which arrived at now.
func (w *watcher) record(events []event, now int64) {
	if len(events) == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = now
	w.messages++
	for _, ev := range events {
		last := w.lastIndex[ev.group]
		if last == nil {
			last = new(uint64)
			w.lastIndex[ev.group] = last
		}
		if ev.index <= *last {
			w.outOfOrder++
			w.noteOdd("out of order", ev)
		} else {
			*last = ev.index
		}
		phase, wr, seq, ok := parseValue(ev.value)
		if ok && ev.put && phase < w.phase {
			w.earlier++
			continue
		}
		if !ev.put || !ok || phase != w.phase || wr >= len(w.arrivals) {
			w.foreign++
			w.noteOdd("foreign", ev)
			continue
		}
		w.events++
		a := w.arrivals[wr]
		if seq >= len(a) {
			if seq >= cap(a) {
				// Doubling: growing by the one put each event adds was
				// nearly half of the checking.
				grown := make([]int64, len(a), max(2*cap(a), seq+1, 1024))
				copy(grown, a)
				a = grown
			}
			a = a[:seq+1]
			w.arrivals[wr] = a
		}
		if a[seq] == 0 {
			a[seq] = now
		}
	}
}

// noteOdd keeps the first odd event's description; w.mu is held.
func (w *watcher) noteOdd(what string, ev event) {
	if w.firstOdd != "" {
		return
	}
	v := ev.value[:min(len(ev.value), headerLen)]
	var last uint64
	if p := w.lastIndex[ev.group]; p != nil {
		last = *p
	}
	w.firstOdd = fmt.Sprintf("first odd event (%s): %s %q range %d index %d value %q; last index of that range before it %d",
		what, ev.kind(), ev.key, ev.group, ev.index, v, last)
}

// matchResult is one watcher's events checked against the phase's puts.
type matchResult struct {
	events     int64 // put events of this phase received
	missing    int64 // acknowledged puts without an event
	repeats    int64 // events beyond one per put (the same value committed twice)
	foreign    int64 // events of no put this phase's writers made
	outOfOrder int64
	firstOdd   string
}

// problem says what is wrong with the watcher; "" when nothing is. A
// repeat is no fault: a put the client retried commits twice, at two
// indexes.
func (m matchResult) problem(streamErr error) string {
	var p []string
	if streamErr != nil {
		p = append(p, fmt.Sprintf("stream ended: %v", streamErr))
	}
	if m.missing > 0 {
		p = append(p, fmt.Sprintf("missed %d acknowledged puts", m.missing))
	}
	if m.outOfOrder > 0 {
		p = append(p, fmt.Sprintf("%d events repeated or out of index order in their range", m.outOfOrder))
	}
	if m.foreign > 0 {
		p = append(p, fmt.Sprintf("%d events of no put this phase made", m.foreign))
	}
	if len(p) > 0 && m.firstOdd != "" {
		p = append(p, m.firstOdd)
	}
	return strings.Join(p, "; ")
}

// check matches the watcher's events with run's puts, and records the lag
// of each acknowledged put's event in lag (µs; 1 when the event came
// before the acknowledgement) unless lag is nil.
func (w *watcher) check(run writeRun, lag *hdrhistogram.Histogram) matchResult {
	w.mu.Lock()
	defer w.mu.Unlock()
	return match(w.arrivals, run.writers, w.events, lag, matchResult{foreign: w.foreign, outOfOrder: w.outOfOrder, firstOdd: w.firstOdd})
}

// match fills m from the arrivals of a watcher that counted events
// events, against what the writers did.
func match(arrivals [][]int64, writers []*writerLog, events int64, lag *hdrhistogram.Histogram, m matchResult) matchResult {
	m.events = events
	var distinct int64
	for i, wl := range writers {
		for seq, got := range arrivals[i] {
			if got == 0 {
				continue
			}
			distinct++
			if seq >= len(wl.acks) {
				m.foreign++ // a put the writer never made
			}
		}
		for seq, acked := range wl.acks {
			if acked == 0 {
				// The put failed for the client, yet may have committed:
				// its event, if any, is no fault.
				continue
			}
			var got int64
			if seq < len(arrivals[i]) {
				got = arrivals[i][seq]
			}
			if got == 0 {
				m.missing++
				continue
			}
			if lag != nil {
				// RecordValue fails only past the histogram's minute.
				_ = lag.RecordValue(max((got-acked)/1000, 1))
			}
		}
	}
	m.repeats = events - distinct
	return m
}

// leasePhases measures grants, then keepalives, each for half of the
// duration, with the goroutines spread over the nodes.
func (b *bench) leasePhases(ctx context.Context) error {
	o := b.o
	d := o.duration / 2

	fmt.Fprintf(b.log, "lease-grant-c%d: granting for %v\n", o.clients, d)
	c0 := b.cpu()
	st := b.timed(d, func(i int, deadline time.Time, h *hdrhistogram.Histogram) (errs int64) {
		for time.Now().Before(deadline) && ctx.Err() == nil {
			opCtx, cancel := context.WithTimeout(ctx, o.opTimeout)
			began := time.Now()
			_, err := b.sys.grant(opCtx, i, o.leaseTTL)
			cancel()
			if err != nil {
				errs++
				continue
			}
			_ = h.RecordValue(max(time.Since(began).Microseconds(), 1))
		}
		return errs
	})
	if ctx.Err() != nil {
		return errInterrupted
	}
	b.res.grant = st
	fmt.Fprintf(b.out, "WORKLOAD %s ops/s %.0f p50 %.3f p99 %.3f errors %d %s load %s\n",
		b.name(fmt.Sprintf("lease-grant-c%d", o.clients)), st.OpsPerSec, st.P50Ms, st.P99Ms, st.Errors, b.cpuSince(c0), firstLoad())

	// Each goroutine's lease is granted before the timed window.
	ids := make([]int64, o.clients)
	for i := range ids {
		opCtx, cancel := context.WithTimeout(ctx, o.opTimeout)
		id, err := b.sys.grant(opCtx, i, o.leaseTTL)
		cancel()
		if err != nil {
			return fmt.Errorf("grant a lease to keep alive: %w", err)
		}
		ids[i] = id
	}
	fmt.Fprintf(b.log, "lease-keepalive-c%d: keeping %d leases alive for %v\n", o.clients, len(ids), d)
	c0 = b.cpu()
	st = b.timed(d, func(i int, deadline time.Time, h *hdrhistogram.Histogram) (errs int64) {
		for errs < maxStreamErrors && time.Now().Before(deadline) && ctx.Err() == nil {
			if err := keepAlive(ctx, b.sys, i, ids[i], deadline, o.opTimeout, h); err != nil {
				errs++
				fmt.Fprintf(b.log, "keepalive of lease %d: %v\n", ids[i], err)
			}
		}
		return errs
	})
	if ctx.Err() != nil {
		return errInterrupted
	}
	b.res.keep = st
	fmt.Fprintf(b.out, "WORKLOAD %s ops/s %.0f p50 %.3f p99 %.3f errors %d %s load %s\n",
		b.name(fmt.Sprintf("lease-keepalive-c%d", o.clients)), st.OpsPerSec, st.P50Ms, st.P99Ms, st.Errors, b.cpuSince(c0), firstLoad())
	return nil
}

// keepAlive renews lease id on one stream to node, each request sent once
// the previous one is answered, until deadline; an error ends the stream.
func keepAlive(ctx context.Context, sys system, node int, id int64, deadline time.Time, opTimeout time.Duration, h *hdrhistogram.Histogram) error {
	sctx, cancel := context.WithDeadline(ctx, deadline.Add(opTimeout))
	defer cancel()
	stream, err := sys.keepAlive(sctx, node)
	if err != nil {
		return err
	}
	defer stream.closeSend()
	for time.Now().Before(deadline) {
		began := time.Now()
		if err := stream.send(id); err != nil {
			_, err = stream.recv() // the reason the stream broke
			return err
		}
		ttl, err := stream.recv()
		if err != nil {
			return err
		}
		if ttl <= 0 {
			return fmt.Errorf("lease %d ended", id)
		}
		_ = h.RecordValue(max(time.Since(began).Microseconds(), 1))
	}
	return nil
}

// timed runs fn on o.clients goroutines until d from now and summarises
// the latencies they record and the errors they return.
func (b *bench) timed(d time.Duration, fn func(i int, deadline time.Time, h *hdrhistogram.Histogram) int64) workload.Stats {
	hs := make([]*hdrhistogram.Histogram, b.o.clients)
	errs := make([]int64, b.o.clients)
	began := time.Now()
	deadline := began.Add(d)
	var wg sync.WaitGroup
	for i := range hs {
		hs[i] = workload.NewHistogram()
		wg.Go(func() { errs[i] = fn(i, deadline, hs[i]) })
	}
	wg.Wait()
	elapsed := time.Since(began)
	h := workload.NewHistogram()
	var e int64
	for i := range hs {
		h.Merge(hs[i])
		e += errs[i]
	}
	return workload.Summarize(h, e, 0, elapsed)
}

// firstLoad is the 1-minute load average.
func firstLoad() string {
	f := strings.Fields(cluster.LoadAvg())
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}
